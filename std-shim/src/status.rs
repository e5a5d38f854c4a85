//! Asking a live manager what it is doing, without disturbing it: its
//! holders (processes, with how many names and bytes each), its counters and
//! its recent history. The library behind `shmctl ls --managers` and
//! `shmctl why`.
//!
//! The request is a reserved name registered on a connection of its own
//! (see `libshm_core::status`), so a manager busy serving clients answers it
//! like any other registration and its clients never notice. PyTorch's
//! manager answers only `OK`: [`StatusError::NotOurs`].
//!
//! # Example
//! ```no_run
//! use libshm::status::{self, Detail};
//!
//! let report = status::query("/tmp/torch-shm-dir-abc123/manager.sock", Detail::Summary)?;
//! for holder in &report.holders {
//!     println!("pid {:?}: {} names, {} bytes", holder.pid, holder.names, holder.bytes);
//! }
//! # Ok::<(), libshm::status::StatusError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use libshm_core::frame::Frame;
use libshm_core::handshake::ManagerHandle;
use libshm_core::status::{self as protocol, parse_line};
use libshm_core::transport::Transport;
use libshm_unix::{SocketError, UnixTransport};

pub use libshm_core::status::Detail;

/// How long a manager has to answer. Ours answers at once; PyTorch's never
/// sends more than `OK`, which this bounds.
const ANSWER_WITHIN: Duration = Duration::from_millis(500);
/// How long ours has to send the rest of a report once its head has come:
/// a report may wait in line for others to end, and the manager drops it
/// at its own deadline (5 s from the ask).
const REPORT_WITHIN: Duration = Duration::from_secs(6);

/// What a manager reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The manager itself.
    pub manager: ManagerInfo,
    /// Its counters, by name (`registrations`, `reaped`, ...).
    pub stats: BTreeMap<String, u64>,
    /// Its live holders.
    pub holders: Vec<HolderReport>,
    /// Recent events, oldest first ([`Detail::History`] only).
    pub events: Vec<Event>,
    /// Every name it knows ([`Detail::Names`] only).
    pub names: Vec<KnownName>,
}

/// A name a manager knows: it still answers for the segment (holds it for
/// a live process, keeps it in transit, or is about to reap it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownName {
    /// The segment's name.
    pub name: String,
    /// `held`, `released` (in transit, or not yet seen gone), `orphaned`
    /// or `unlinking`.
    pub state: String,
}

/// The manager's own line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManagerInfo {
    /// Its pid.
    pub pid: u32,
    /// Its handle.
    pub handle: String,
    /// How long it has run.
    pub uptime: Duration,
    /// Its version.
    pub version: String,
    /// Names it knows.
    pub names: u64,
    /// Open connections.
    pub connections: u64,
    /// Live holders.
    pub holders: u64,
    /// Whether it has no client left and is shutting down (lingering for
    /// names in transit, or unlinking).
    pub closing: bool,
}

/// One holder: a process on a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HolderReport {
    /// The connection's number.
    pub conn: u64,
    /// The process, when its pid could be trusted; `None` for the holder
    /// standing for a connection's untrusted pids.
    pub pid: Option<i32>,
    /// Whether its connection is open (a process may outlive a connection
    /// the manager closed).
    pub connected: bool,
    /// Distinct names it holds.
    pub names: u64,
    /// Their bytes, over the first `measured` names.
    pub bytes: u64,
    /// How many names `bytes` covers (all of them, up to a few thousand).
    pub measured: u64,
}

/// One event from the manager's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When, since the manager started.
    pub at: Duration,
    /// What: `registered`, `released`, `stray_release`, `holder_ended`,
    /// `in_transit`, `orphaned`, `unlinked`, `gone`, `vanished`,
    /// `untouchable`, `lingering`, `pressure`.
    pub what: String,
    /// The rest: `name`, `conn`, `pid`, `refcount`, `dead`, `reason`, ...
    pub fields: BTreeMap<String, String>,
}

impl Event {
    /// The segment it is about, if any.
    pub fn name(&self) -> Option<&str> {
        self.fields.get("name").map(String::as_str)
    }
}

/// Why a manager could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No manager answers at that handle.
    #[error("cannot reach a manager at {handle}")]
    Connect {
        /// The handle.
        handle: String,
        /// What failed.
        #[source]
        source: SocketError,
    },
    /// It is not a handle.
    #[error("{handle:?} is not a manager handle")]
    BadHandle {
        /// What was given.
        handle: String,
    },
    /// The manager answered `OK` and nothing more: PyTorch's, or an old one
    /// of ours.
    #[error(
        "the manager at {handle} does not report its status (PyTorch's manager, or an older libshm-rs)"
    )]
    NotOurs {
        /// The handle.
        handle: String,
    },
    /// The answer was not a status document.
    #[error("the manager at {handle} sent something that is not a status report: {why}")]
    Malformed {
        /// The handle.
        handle: String,
        /// What was wrong.
        why: String,
    },
}

/// Asks the manager at `handle` for its status.
pub fn query(handle: &str, detail: Detail) -> Result<Report, StatusError> {
    let parsed = ManagerHandle::new(handle.as_bytes()).map_err(|_| StatusError::BadHandle {
        handle: handle.to_owned(),
    })?;
    let connect_error = |source| StatusError::Connect {
        handle: handle.to_owned(),
        source,
    };
    let mut socket = UnixTransport::connect(&parsed, Some(ANSWER_WITHIN)).map_err(connect_error)?;
    let name = match detail {
        Detail::Summary => protocol::SUMMARY,
        Detail::History => protocol::HISTORY,
        Detail::Names => protocol::NAMES,
    };
    let pid = std::process::id() as i32;
    socket
        .send_all(&Frame::register(pid, name).encode())
        .map_err(connect_error)?;
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut report_until = None;
    loop {
        match socket.receive(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                // More than the `OK`: a manager of ours, reporting; the rest
                // may come after reports asked for before this one.
                if report_until.is_none() && answer.len() > 2 {
                    report_until = Some(Instant::now() + REPORT_WITHIN);
                    socket
                        .set_reply_timeout(Some(REPORT_WITHIN))
                        .map_err(connect_error)?;
                }
                if report_until.is_some_and(|until| Instant::now() >= until) {
                    break;
                }
            }
            // Still open with nothing more: a manager that took the request
            // for a registration.
            Err(_) if answer.len() <= 2 => {
                return Err(StatusError::NotOurs {
                    handle: handle.to_owned(),
                });
            }
            Err(_) => break,
        }
    }
    parse(&answer).map_err(|why| StatusError::Malformed {
        handle: handle.to_owned(),
        why,
    })
}

/// Reads a status answer: `OK`, then the document.
fn parse(answer: &[u8]) -> Result<Report, String> {
    let document = answer
        .strip_prefix(b"OK")
        .ok_or_else(|| "no OK before the report".to_owned())?;
    let text = std::str::from_utf8(document).map_err(|_| "not UTF-8".to_owned())?;
    let mut lines = text.lines();
    if lines.next() != Some(protocol::HEADER) {
        return Err("no status header".to_owned());
    }
    let mut report = Report::default();
    let mut ended = false;
    for line in lines {
        if line == protocol::END {
            ended = true;
            break;
        }
        let (kind, fields) = parse_line(line);
        let fields: BTreeMap<String, String> =
            fields.map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let number = |key: &str| {
            fields
                .get(key)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match kind {
            "manager" => {
                report.manager = ManagerInfo {
                    pid: number("pid") as u32,
                    handle: fields.get("handle").cloned().unwrap_or_default(),
                    uptime: Duration::from_millis(number("uptime_ms")),
                    version: fields.get("version").cloned().unwrap_or_default(),
                    names: number("names"),
                    connections: number("connections"),
                    holders: number("holders"),
                    closing: fields.get("closing").is_some_and(|v| v == "true"),
                }
            }
            "stats" => {
                report.stats = fields
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.parse().ok()?)))
                    .collect();
            }
            "holder" => report.holders.push(HolderReport {
                conn: number("conn"),
                pid: fields.get("pid").and_then(|v| v.parse().ok()),
                connected: fields.get("connected").is_some_and(|v| v == "true"),
                names: number("names"),
                bytes: number("bytes"),
                measured: number("measured"),
            }),
            "event" => {
                let at = Duration::from_millis(number("t_ms"));
                let what = fields.get("what").cloned().unwrap_or_default();
                let mut rest = fields;
                rest.remove("t_ms");
                rest.remove("what");
                report.events.push(Event {
                    at,
                    what,
                    fields: rest,
                });
            }
            "name" => report.names.push(KnownName {
                name: fields.get("name").cloned().unwrap_or_default(),
                state: fields.get("state").cloned().unwrap_or_default(),
            }),
            // Lines of later versions are skipped.
            _ => {}
        }
    }
    if !ended {
        return Err("the report was cut short".to_owned());
    }
    Ok(report)
}

impl fmt::Display for HolderReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}")?,
            None => write!(f, "connection {}", self.conn)?,
        }
        write!(f, ": {} name(s), {} bytes", self.names, self.bytes)?;
        if self.measured < self.names {
            write!(f, " (over the first {})", self.measured)?;
        }
        if !self.connected {
            f.write_str(", connection closed")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_parses_and_a_cut_one_does_not() {
        let text = "OKlibshm-status v=1\n\
            manager pid=7 handle=/tmp/x/manager.sock uptime_ms=1500 version=0.1.0 names=2 connections=1 holders=1 closing=false\n\
            stats registrations=3 reaped=1\n\
            holder conn=0 pid=42 connected=true names=2 bytes=8320 measured=2\n\
            event t_ms=10 what=registered name=/torch_1_2_3 conn=0 pid=42\n\
            name name=/torch_1_2_3 state=released\n\
            future kind=ignored\n\
            end\n";
        let report = parse(text.as_bytes()).unwrap();
        assert_eq!(report.manager.pid, 7);
        assert_eq!(report.manager.uptime, Duration::from_millis(1500));
        assert_eq!(report.stats["registrations"], 3);
        assert_eq!(report.holders[0].pid, Some(42));
        assert_eq!(
            report.holders[0].to_string(),
            "pid 42: 2 name(s), 8320 bytes"
        );
        assert_eq!(report.events[0].name(), Some("/torch_1_2_3"));
        assert_eq!(report.events[0].fields["pid"], "42");
        assert_eq!(report.names[0].name, "/torch_1_2_3");
        assert_eq!(report.names[0].state, "released");
        assert!(parse(&text.as_bytes()[..text.len() - 4]).is_err());
        assert!(parse(b"NO").is_err());
    }
}
