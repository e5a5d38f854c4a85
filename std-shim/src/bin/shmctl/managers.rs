//! Managers alive on this machine, found by their listening sockets
//! (`.../torch-shm-dir-XXXXXX/manager.sock` in `/proc/net/unix`), with what
//! each reports about itself when asked ([`libshm::status`]), and the
//! directories of managers that died without removing them (PyTorch's
//! leaves its directory when killed), under `$TMPDIR`, `/tmp` and `/dev/shm`.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use libshm::status::{self, Detail, Report, StatusError};
use libshm_unix::{DIR_PREFIX, FALLBACK_BASES, RunDir, SOCKET_NAME};

use crate::error_chain::Chain;
use crate::torch::{Identity, identify};
use crate::unix_sockets;

/// A directory younger than this may belong to a manager still starting.
const SETTLE: Duration = Duration::from_secs(10);

/// One live manager.
#[derive(Debug)]
pub(crate) struct LiveManager {
    pub(crate) handle: String,
    pub(crate) pid: Option<u32>,
    pub(crate) runs: Option<Identity>,
    pub(crate) uptime: Option<Duration>,
    /// Accepted connections (each client process, or forked family sharing
    /// one, holds one).
    pub(crate) connections: usize,
}

impl LiveManager {
    /// What it says about itself: its holders, counters and (with
    /// [`Detail::History`]) recent events.
    pub(crate) fn status(&self, detail: Detail) -> Result<Report, StatusError> {
        status::query(&self.handle, detail)
    }

    /// Whether it may answer for names starting with `prefix`: it accepts
    /// (or, adopting a dead one's handle, sweeps) names under a prefix that
    /// starts with `prefix` or that `prefix` starts with. Read from its
    /// command line and environment as `shm-manager` reads them; `true` when
    /// they cannot be read.
    pub(crate) fn may_know(&self, prefix: &str) -> bool {
        let Some(prefixes) = self.pid.and_then(prefixes_of) else {
            return true;
        };
        prefixes
            .iter()
            .any(|p| p.starts_with(prefix) || prefix.starts_with(p.as_str()))
    }

    /// Whether it is a manager of ours, whatever it answers: its executable
    /// says so, or it holds its directory's lock (as only ours do). One of
    /// ours that is stopped or starved answers nothing, as PyTorch's does.
    pub(crate) fn is_ours(&self) -> bool {
        self.runs.as_ref().is_some_and(Identity::is_ours)
            || Path::new(&self.handle)
                .parent()
                .is_some_and(RunDir::is_served)
    }
}

/// The managers listening now: those whose sockets listen in a network
/// namespace we see a process of (reached through the process's root when
/// it has a filesystem of its own), and those of ours that hold their
/// directory's lock though they listen where we see nobody (a container
/// sharing `/tmp`), reachable by path.
pub(crate) fn live() -> Vec<LiveManager> {
    let sockets = unix_sockets::bound();
    let listening: Vec<&unix_sockets::Entry> = sockets
        .iter()
        .filter(|e| e.listening && is_manager_socket(Path::new(&e.path)))
        .collect();
    let inodes: BTreeSet<u64> = listening.iter().map(|e| e.inode).collect();
    let holders = unix_sockets::holders(&inodes);
    let mut live: Vec<LiveManager> = listening
        .iter()
        .map(|entry| {
            let pid = holders.get(&entry.inode).copied();
            LiveManager {
                handle: reachable_path(&entry.path, pid),
                pid,
                runs: pid
                    .and_then(|pid| identify(Path::new(&format!("/proc/{pid}/exe")), None).ok()),
                uptime: pid.and_then(uptime_of),
                connections: sockets
                    .iter()
                    .filter(|e| !e.listening && e.path == entry.path)
                    .count(),
            }
        })
        .collect();
    let elsewhere: Vec<LiveManager> = bases()
        .iter()
        .flat_map(|base| manager_dirs(base, Duration::ZERO))
        .map(|dir| dir.join(SOCKET_NAME).to_string_lossy().into_owned())
        .filter(|handle| !live.iter().any(|m| m.handle == *handle))
        .filter(|handle| Path::new(handle).parent().is_some_and(RunDir::is_served))
        .map(|handle| LiveManager {
            handle,
            pid: None,
            runs: None,
            uptime: None,
            connections: 0,
        })
        .collect();
    live.extend(elsewhere);
    live
}

/// The name prefixes `shm-manager` process `pid` accepts or sweeps, from
/// its arguments and environment (see its `name_prefix`): `--name-prefix`,
/// else `$LIBSHM_NAME_PREFIX` and `/torch_`; with `--adopt`, its
/// `--sweep-prefix` (`/torch_` by default) too.
fn prefixes_of(pid: u32) -> Option<Vec<String>> {
    const TORCH: &str = "/torch_";
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .skip(1)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let option = |name: &str| {
        let flag = format!("--{name}");
        args.iter().enumerate().find_map(|(i, arg)| {
            if *arg == flag {
                args.get(i + 1).cloned()
            } else {
                arg.strip_prefix(&format!("{flag}=")).map(str::to_owned)
            }
        })
    };
    let mut prefixes = Vec::new();
    match option("name-prefix") {
        Some(prefix) => prefixes.push(prefix),
        None => {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let from_env = environ
                .split(|&b| b == 0)
                .find_map(|var| var.strip_prefix(format!("{}=", libshm::ENV_PREFIX).as_bytes()))
                .filter(|value| !value.is_empty());
            if let Some(value) = from_env {
                prefixes.push(String::from_utf8_lossy(value).into_owned());
            }
            prefixes.push(TORCH.to_owned());
        }
    }
    if args
        .iter()
        .any(|arg| arg == "--adopt" || arg.starts_with("--adopt="))
    {
        prefixes.push(option("sweep-prefix").unwrap_or_else(|| TORCH.to_owned()));
    }
    Some(prefixes)
}

/// Where we reach a socket bound at `path` by process `pid`: the path
/// itself, or, when the process sees another filesystem (a service with a
/// private `/tmp`, a container), the path under its root.
fn reachable_path(path: &str, pid: Option<u32>) -> String {
    match pid {
        Some(pid) if unix_sockets::shares_our_mounts(pid) == Some(false) => {
            format!("/proc/{pid}/root{path}")
        }
        _ => path.to_owned(),
    }
}

/// Directories of managers that died, given the live ones.
pub(crate) fn stale_dirs(live: &[LiveManager]) -> Vec<PathBuf> {
    let handles: BTreeSet<&str> = live.iter().map(|m| m.handle.as_str()).collect();
    bases()
        .iter()
        .flat_map(|base| manager_dirs(base, SETTLE))
        .filter(|dir| !handles.contains(dir.join(SOCKET_NAME).to_string_lossy().as_ref()))
        .collect()
}

fn is_manager_socket(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == SOCKET_NAME)
        && path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n.to_string_lossy().starts_with(DIR_PREFIX))
}

/// Where managers make their directories: the temporary directory PyTorch
/// uses, and our fallbacks.
fn bases() -> Vec<PathBuf> {
    let mut bases = vec![RunDir::default_base()];
    for base in FALLBACK_BASES {
        if !bases.iter().any(|b| b == Path::new(base)) {
            bases.push(PathBuf::from(base));
        }
    }
    bases
}

/// `torch-shm-dir-*` directories under `base` at least `min_age` old.
fn manager_dirs(base: &Path, min_age: Duration) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(DIR_PREFIX))
        .filter(|e| {
            e.metadata().is_ok_and(|meta| {
                let changed =
                    SystemTime::UNIX_EPOCH + Duration::from_secs(meta.mtime().max(0) as u64);
                meta.is_dir() && now.duration_since(changed).is_ok_and(|age| age >= min_age)
            })
        })
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// How long process `pid` has run, from `/proc/<pid>/stat` and `/proc/uptime`.
pub(crate) fn uptime_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the parenthesised name (field 2) ends.
    let started_ticks: u64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let since_boot: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    let started = started_ticks as f64 / ticks as f64;
    Some(Duration::from_secs_f64((since_boot - started).max(0.0)))
}

/// Coarse ages for a table: `42s`, `5m`, `3h`, `2d`.
pub(crate) fn coarse(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// `shmctl ls --managers`: every live manager, its clients by pid, and their
/// live names and bytes.
pub(crate) fn print(json: bool) -> crate::Outcome {
    use std::io::Write as _;

    use crate::units::format_size;

    use crate::json::Json;

    let live = live();
    let reports: Vec<Result<Report, StatusError>> =
        live.iter().map(|m| m.status(Detail::Summary)).collect();
    let mut out = std::io::stdout().lock();
    if json {
        let managers = live
            .iter()
            .zip(&reports)
            .map(|(manager, report)| {
                let holders = report.as_ref().ok().map(|report| {
                    Json::Array(
                        report
                            .holders
                            .iter()
                            .map(|h| {
                                Json::Object(vec![
                                    ("pid", h.pid.into()),
                                    ("conn", h.conn.into()),
                                    ("connected", h.connected.into()),
                                    ("names", h.names.into()),
                                    ("bytes", h.bytes.into()),
                                    ("bytes_over_names", h.measured.into()),
                                ])
                            })
                            .collect(),
                    )
                });
                Json::Object(vec![
                    ("handle", manager.handle.as_str().into()),
                    ("pid", manager.pid.into()),
                    ("uptime_seconds", manager.uptime.map(|u| u.as_secs()).into()),
                    ("connections", manager.connections.into()),
                    ("reports_status", report.is_ok().into()),
                    (
                        "names",
                        report.as_ref().ok().map(|r| r.manager.names).into(),
                    ),
                    ("clients", holders.unwrap_or(Json::Null)),
                ])
            })
            .collect();
        writeln!(out, "{}", Json::Array(managers))?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if live.is_empty() {
        writeln!(out, "no live managers")?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    for (manager, report) in live.iter().zip(&reports) {
        let pid = manager
            .pid
            .map_or_else(|| "pid ?".to_owned(), |p| format!("pid {p}"));
        let uptime = manager
            .uptime
            .map_or_else(String::new, |u| format!(", up {}", coarse(u)));
        writeln!(out, "{} ({pid}{uptime})", manager.handle)?;
        match report {
            Ok(report) => {
                let state = if report.manager.closing {
                    ", no client left: lingering for names in transit"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "  {} name(s), {} connection(s), {} reaped so far{state}",
                    report.manager.names,
                    report.manager.connections,
                    report.stats.get("reaped").copied().unwrap_or(0)
                )?;
                for holder in &report.holders {
                    let who = holder.pid.map_or_else(
                        || format!("connection {}", holder.conn),
                        |p| format!("pid {p}"),
                    );
                    let partial = if holder.measured < holder.names {
                        format!(" (bytes of the first {})", holder.measured)
                    } else {
                        String::new()
                    };
                    let closed = if holder.connected {
                        ""
                    } else {
                        ", its connection closed"
                    };
                    writeln!(
                        out,
                        "  {who}: {} name(s), {}{partial}{closed}",
                        holder.names,
                        format_size(holder.bytes)
                    )?;
                }
            }
            Err(err) => writeln!(
                out,
                "  {} connection(s); {}",
                manager.connections,
                Chain(&err)
            )?,
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
