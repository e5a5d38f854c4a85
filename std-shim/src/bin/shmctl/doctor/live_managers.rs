//! The doctor's look at managers: the live ones (see [`crate::managers`])
//! with their clients, and the directories of dead ones to remove.

use std::path::PathBuf;

use libshm::status::Detail;

use crate::json::Json;
use crate::managers::{self, LiveManager, coarse};

use super::finding::{Finding, Severity};

/// A manager's clients by pid, from what it reports about itself; `None`
/// when it does not say (PyTorch's manager).
fn clients_of(manager: &LiveManager) -> Option<Vec<u32>> {
    let report = manager.status(Detail::Summary).ok()?;
    let mut pids: Vec<u32> = report
        .holders
        .iter()
        .filter_map(|h| h.pid.and_then(|pid| u32::try_from(pid).ok()))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Some(pids)
}

pub(crate) fn check() -> Finding {
    let live = managers::live();
    let stale = managers::stale_dirs(&live);

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
    let connections = format!(
        ", {} connection{}",
        manager.connections,
        if manager.connections == 1 { "" } else { "s" }
    );
    let clients = match clients_of(manager) {
        Some(pids) if !pids.is_empty() => format!(
            ", clients {}",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        _ => String::new(),
    };
    format!(
        "  {pid}, {runs}{uptime}{connections}{clients}: {}",
        manager.handle
    )
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
