//! Managers alive on this machine, found by their listening sockets
//! (`.../torch-shm-dir-XXXXXX/manager.sock` in `/proc/net/unix`), and the
//! directories of managers that died without removing them (PyTorch's
//! leaves its directory when killed), under `$TMPDIR`, `/tmp` and `/dev/shm`.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use libshm_unix::{DIR_PREFIX, FALLBACK_BASES, RunDir, SOCKET_NAME};

use crate::json::Json;
use crate::torch::{Identity, identify};

use super::finding::{Finding, Severity};
use super::unix_sockets;

/// A directory younger than this may belong to a manager still starting.
const SETTLE: Duration = Duration::from_secs(10);

/// One live manager.
#[derive(Debug)]
struct LiveManager {
    handle: String,
    pid: Option<u32>,
    runs: Option<Identity>,
    uptime: Option<Duration>,
    /// Accepted connections (each client process, or forked family sharing
    /// one, holds one).
    connections: usize,
}

/// HOOK (issue 11, part 5): a manager's clients by pid, read from the
/// manager without disturbing it (`shmctl ls --managers`). Until managers
/// expose them, only the number of connections is known.
fn clients_of(_manager: &LiveManager) -> Option<Vec<u32>> {
    None
}

pub(crate) fn check() -> Finding {
    let sockets = unix_sockets::bound();
    let listening: Vec<&unix_sockets::Entry> = sockets
        .iter()
        .filter(|e| e.listening && is_manager_socket(Path::new(&e.path)))
        .collect();
    let inodes: BTreeSet<u64> = listening.iter().map(|e| e.inode).collect();
    let holders = unix_sockets::holders(&inodes);
    let live: Vec<LiveManager> = listening
        .iter()
        .map(|entry| {
            let pid = holders.get(&entry.inode).copied();
            LiveManager {
                handle: entry.path.clone(),
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
    let handles: BTreeSet<&str> = live.iter().map(|m| m.handle.as_str()).collect();
    let stale: Vec<PathBuf> = bases()
        .iter()
        .flat_map(|base| manager_dirs(base))
        .filter(|dir| !handles.contains(dir.join(SOCKET_NAME).to_string_lossy().as_ref()))
        .collect();

    let mut lines = Vec::new();
    lines.push(match live.len() {
        0 => "no live managers".to_owned(),
        1 => "1 live manager:".to_owned(),
        n => format!("{n} live managers:"),
    });
    for manager in &live {
        lines.push(describe(manager));
    }
    let details = |finding: Finding| {
        finding
            .detail(
                "live",
                Json::Array(
                    live.iter()
                        .map(|m| {
                            Json::Object(vec![
                                ("handle", m.handle.as_str().into()),
                                ("pid", m.pid.into()),
                                ("runs", m.runs.as_ref().map(ToString::to_string).into()),
                                ("uptime_seconds", m.uptime.map(|u| u.as_secs()).into()),
                                ("connections", m.connections.into()),
                                ("clients", clients_of(m).into()),
                            ])
                        })
                        .collect(),
                ),
            )
            .detail(
                "stale_dirs",
                stale
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>(),
            )
    };
    if stale.is_empty() {
        return details(Finding::new(
            "managers",
            "managers",
            Severity::Ok,
            lines.join("\n"),
        ));
    }
    lines.push(format!(
        "{} director{} of managers that died: {}",
        stale.len(),
        if stale.len() == 1 { "y" } else { "ies" },
        shortlist(&stale)
    ));
    let fix = format!(
        "remove them: rm -r {}",
        stale
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    details(Finding::new("managers", "managers", Severity::Warning, lines.join("\n")).fix(fix))
}

fn describe(manager: &LiveManager) -> String {
    let pid = manager.pid.map_or_else(
        || "pid unknown (another user's?)".to_owned(),
        |p| format!("pid {p}"),
    );
    let runs = manager
        .runs
        .as_ref()
        .map_or_else(|| "binary unknown".to_owned(), ToString::to_string);
    let uptime = manager
        .uptime
        .map_or_else(String::new, |u| format!(", up {}", coarse(u)));
    let clients = match clients_of(manager) {
        Some(pids) => format!(
            ", clients {}",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        None => format!(
            ", {} connection{}",
            manager.connections,
            if manager.connections == 1 { "" } else { "s" }
        ),
    };
    format!("  {pid}, {runs}{uptime}{clients}: {}", manager.handle)
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

/// `torch-shm-dir-*` directories under `base` older than [`SETTLE`].
fn manager_dirs(base: &Path) -> Vec<PathBuf> {
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
                meta.is_dir() && now.duration_since(changed).is_ok_and(|age| age >= SETTLE)
            })
        })
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// How long process `pid` has run, from `/proc/<pid>/stat` and `/proc/uptime`.
fn uptime_of(pid: u32) -> Option<Duration> {
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

fn coarse(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The first few, then how many more.
fn shortlist(dirs: &[PathBuf]) -> String {
    const SHOWN: usize = 3;
    let mut text = dirs
        .iter()
        .take(SHOWN)
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if dirs.len() > SHOWN {
        text.push_str(&format!(" and {} more", dirs.len() - SHOWN));
    }
    text
}
