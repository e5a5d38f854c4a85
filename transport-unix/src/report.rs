//! What the manager tells people: log lines for what it noted (with the fix
//! where there is one), a bounded history of recent events, and the status
//! document it sends when asked ([`libshm_core::status`]).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Instant;

use libshm_core::manager::{Manager, NameState, Note, Severity, UnlinkReason};
use libshm_core::namespace::Namespace;
use libshm_core::pressure::Pressure;
use libshm_core::status::{self, Detail, write_line};
use libshm_core::storage::Growable;
use libshm_core::time::Timestamp;

/// Events kept for `shmctl why`; about 100 bytes each.
const HISTORY_LEN: usize = 8_192;
/// A status report adds up the sizes of at most this many names per holder,
/// and of this many in all, so that building it never stalls the loop for
/// long (a size is one `statat`).
const MEASURED_PER_HOLDER: usize = 1_024;
const MEASURED_IN_ALL: usize = 4_096;

/// The recent events, oldest first, at most [`HISTORY_LEN`].
#[derive(Default)]
pub(crate) struct History {
    events: VecDeque<(Timestamp, Note)>,
}

impl History {
    pub(crate) fn record(&mut self, now: Timestamp, note: Note) {
        if self.events.len() == HISTORY_LEN {
            self.events.pop_front();
        }
        self.events.push_back((now, note));
    }
}

/// Who is reporting: what the `manager` line says besides the counters.
pub(crate) struct Identity {
    pub(crate) handle: String,
    pub(crate) started: Instant,
}

/// The status document for `detail`.
pub(crate) fn document<N: Namespace>(
    detail: Detail,
    manager: &Manager<Growable>,
    namespace: &mut N,
    identity: &Identity,
    history: &History,
) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_document(&mut out, detail, manager, namespace, identity, history);
    out
}

fn write_document<N: Namespace>(
    out: &mut String,
    detail: Detail,
    manager: &Manager<Growable>,
    namespace: &mut N,
    identity: &Identity,
    history: &History,
) -> std::fmt::Result {
    writeln!(out, "{}", status::HEADER)?;
    write_line(
        out,
        "manager",
        &[
            ("pid", &std::process::id()),
            ("handle", &identity.handle),
            ("uptime_ms", &identity.started.elapsed().as_millis()),
            ("version", &env!("CARGO_PKG_VERSION")),
            ("names", &manager.name_count()),
            // Not counting the asker's own connection.
            ("connections", &manager.connection_count().saturating_sub(1)),
            ("holders", &manager.holder_count()),
            ("closing", &manager.is_closing()),
        ],
    )?;
    let s = manager.stats();
    write_line(
        out,
        "stats",
        &[
            ("registrations", &s.registrations),
            ("refused", &s.refused),
            ("releases", &s.releases),
            ("stray_releases", &s.stray_releases),
            ("connections", &s.connections),
            ("rejected", &s.rejected),
            ("closed_for_cause", &s.closed_for_cause),
            ("holders_exited", &s.holders_exited),
            ("reaped", &s.reaped),
            ("forgotten", &s.forgotten),
            ("unlinked_at_shutdown", &s.unlinked_at_shutdown),
            ("unlink_failures", &s.unlink_failures),
        ],
    )?;
    let mut budget = MEASURED_IN_ALL;
    for holder in manager.holders() {
        let (mut bytes, mut measured) = (0u64, 0usize);
        let allowed = budget.min(MEASURED_PER_HOLDER);
        if allowed > 0 {
            manager.names_held_by(&holder, |name, _| {
                if let Ok(Some(size)) = namespace.size(name) {
                    bytes += size;
                }
                measured += 1;
                measured < allowed
            });
        }
        budget -= measured;
        let pid = holder
            .pid
            .map_or_else(|| "-".to_owned(), |pid| pid.to_string());
        write_line(
            out,
            "holder",
            &[
                ("conn", &holder.conn.0),
                ("pid", &pid),
                ("connected", &holder.connected),
                ("names", &holder.names),
                ("bytes", &bytes),
                ("measured", &measured),
            ],
        )?;
    }
    if detail == Detail::History {
        for (at, note) in &history.events {
            write_event(out, *at, note)?;
        }
    }
    if detail == Detail::Names {
        // The names follow in pieces, then the end (see `names_piece`).
        return Ok(());
    }
    writeln!(out, "{}", status::END)
}

/// Names a names report writes per round of the event loop: a report of
/// many is written between other clients' rounds, never built whole in one.
const NAMES_PER_ROUND: usize = 2048;

/// Appends to `out` the next piece of a names report from `cursor` (0 first);
/// returns where the next starts, `None` once the report is complete (its
/// end line written).
pub(crate) fn names_piece(
    manager: &Manager<Growable>,
    cursor: u32,
    out: &mut Vec<u8>,
) -> Option<u32> {
    let mut text = String::new();
    let next = manager.names_from(cursor, NAMES_PER_ROUND, |name, state| {
        let state = match state {
            NameState::Held { .. } => "held",
            NameState::Released { .. } => "released",
            NameState::Orphaned { .. } => "orphaned",
            NameState::Unlinking => "unlinking",
        };
        // Writing into a String cannot fail.
        let _ = write_line(&mut text, "name", &[("name", name), ("state", &state)]);
    });
    if next.is_none() {
        let _ = writeln!(text, "{}", status::END);
    }
    out.extend_from_slice(text.as_bytes());
    next
}

fn write_event(out: &mut String, at: Timestamp, note: &Note) -> std::fmt::Result {
    let t = at.as_millis();
    let line = |out: &mut String, what: &str, rest: &[(&str, &dyn std::fmt::Display)]| {
        let mut fields: Vec<(&str, &dyn std::fmt::Display)> = vec![("t_ms", &t), ("what", &what)];
        fields.extend_from_slice(rest);
        write_line(out, "event", &fields)
    };
    match note {
        Note::Registered { conn, pid, name } => line(
            out,
            "registered",
            &[("name", name), ("conn", &conn.0), ("pid", pid)],
        ),
        Note::Released { conn, pid, name } => line(
            out,
            "released",
            &[("name", name), ("conn", &conn.0), ("pid", pid)],
        ),
        Note::StrayRelease { conn, pid, name } => line(
            out,
            "stray_release",
            &[("name", name), ("conn", &conn.0), ("pid", pid)],
        ),
        Note::ForeignSkipped { conn, pid, name } => line(
            out,
            "foreign_skipped",
            &[("name", name), ("conn", &conn.0), ("pid", pid)],
        ),
        Note::HolderEnded {
            conn,
            pid,
            why,
            holds,
        } => {
            let pid = pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string());
            let why = format!("{why:?}").to_lowercase();
            line(
                out,
                "holder_ended",
                &[
                    ("conn", &conn.0),
                    ("pid", &pid),
                    ("reason", &why),
                    ("names", holds),
                ],
            )
        }
        Note::InTransit {
            name,
            refcount,
            dead,
        } => line(
            out,
            "in_transit",
            &[("name", name), ("refcount", refcount), ("dead", dead)],
        ),
        Note::Orphaned {
            name,
            refcount,
            dead,
        } => line(
            out,
            "orphaned",
            &[("name", name), ("refcount", refcount), ("dead", dead)],
        ),
        Note::StillMapped { name } => line(out, "still_mapped", &[("name", name)]),
        Note::Unlinked { name, reason } => {
            let reason = match reason {
                UnlinkReason::Orphaned => "orphaned",
                UnlinkReason::Shutdown => "shutdown",
            };
            line(out, "unlinked", &[("name", name), ("reason", &reason)])
        }
        Note::Gone { name } => line(out, "gone", &[("name", name)]),
        Note::Vanished {
            name,
            registrations,
        } => line(
            out,
            "vanished",
            &[("name", name), ("registrations", registrations)],
        ),
        Note::Untouchable { name } => line(out, "untouchable", &[("name", name)]),
        Note::Lingering { names } => line(out, "lingering", &[("names", names)]),
        Note::Pressure(Pressure { level, usage }) => {
            let level = format!("{level:?}").to_lowercase();
            line(
                out,
                "pressure",
                &[("percent", &usage.percent()), ("reason", &level)],
            )
        }
    }
}

/// Logs what the manager noted, at the level its severity says.
pub(crate) fn log_note(note: &Note) {
    match note.severity() {
        Severity::Trace => tracing::trace!("{note}"),
        Severity::Debug => tracing::debug!("{note}"),
        Severity::Info => tracing::info!("{note}"),
        Severity::Warn => tracing::warn!("{note}"),
    }
}
