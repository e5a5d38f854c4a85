//! `shmctl why NAME`: a segment's story, from what `/dev/shm` shows of it now
//! and from the recent history of every live manager of ours: who
//! registered and released it, whose end left it behind, whether it waited
//! in transit, and who reaped it and why, or that it vanished from outside.

use std::io::Write as _;
use std::process::ExitCode;

use crate::units::{format_duration, format_size};
use libshm::SegmentName;
use libshm::inspect;
use libshm::status::{Detail, Event};

use crate::Outcome;
use crate::managers;

/// What stands under `name` when it is not a segment (a FIFO, a symlink,
/// a directory someone put there), without opening or following it.
fn not_a_segment(name: &SegmentName) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt as _;
    let path = std::path::Path::new("/dev/shm").join(name.as_str().trim_start_matches('/'));
    let kind = std::fs::symlink_metadata(path).ok()?.file_type();
    Some(if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_symlink() {
        "a symlink"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device node"
    } else {
        "a file that cannot be read as a segment"
    })
}

/// Arguments of `shmctl why`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The segment's name, as in /dev/shm with a leading slash
    /// (`/torch_123_456_0`) or without.
    name: String,
}

pub(crate) fn run(args: &Args) -> Outcome {
    let text = if args.name.starts_with('/') {
        args.name.clone()
    } else {
        format!("/{}", args.name)
    };
    let name = SegmentName::new(text.as_bytes())?;
    let mut out = std::io::stdout().lock();

    let prefix = crate::inspect::resolve_prefix(None)?;
    match inspect::inspect_one(&name, &prefix)?.segments.first() {
        Some(segment) => writeln!(
            out,
            "{name}: in /dev/shm now, {}, refcount {}, {}",
            format_size(segment.size),
            segment
                .refcount
                .map_or_else(|| "unknown".to_owned(), |r| r.to_string()),
            segment.status
        )?,
        None => match not_a_segment(&name) {
            Some(kind) => writeln!(
                out,
                "{name}: in /dev/shm now, but {kind}, not a segment: no manager of ours \
                 opens, follows or unlinks it"
            )?,
            None => writeln!(out, "{name}: not in /dev/shm now")?,
        },
    }

    let mut told = false;
    for manager in managers::live() {
        let Ok(report) = manager.status(Detail::History) else {
            continue;
        };
        let story = story(&report.events, name.as_str());
        if story.is_empty() {
            continue;
        }
        told = true;
        writeln!(
            out,
            "manager {} (pid {}):",
            report.manager.handle, report.manager.pid
        )?;
        for event in story {
            let ago = report.manager.uptime.saturating_sub(event.at);
            writeln!(
                out,
                "  {:>9} ago  {}",
                format_duration(ago),
                describe(event)
            )?;
        }
    }
    if !told {
        writeln!(
            out,
            "no live manager of ours remembers it (each keeps its last 8192 events; \
             PyTorch's manager keeps none)"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The events about `name`, and the ends of the holders that registered it.
fn story<'e>(events: &'e [Event], name: &str) -> Vec<&'e Event> {
    let mut registrants: Vec<(&str, &str)> = Vec::new();
    let mut story = Vec::new();
    for event in events {
        if event.name() == Some(name) {
            if event.what == "registered"
                && let (Some(conn), Some(pid)) = (event.fields.get("conn"), event.fields.get("pid"))
            {
                registrants.push((conn, pid));
            }
            story.push(event);
        } else if event.what == "holder_ended" {
            let conn = event.fields.get("conn").map(String::as_str);
            let pid = event.fields.get("pid").map(String::as_str);
            let mine = registrants
                .iter()
                .any(|&(c, p)| Some(c) == conn && (Some(p) == pid || pid == Some("-")));
            if mine {
                story.push(event);
            }
        }
    }
    story
}

fn describe(event: &Event) -> String {
    let field = |key: &str| event.fields.get(key).map_or("?", String::as_str);
    match event.what.as_str() {
        "registered" => format!(
            "registered by pid {} (connection {})",
            field("pid"),
            field("conn")
        ),
        "released" => format!(
            "released by pid {} (connection {})",
            field("pid"),
            field("conn")
        ),
        "stray_release" => format!(
            "a release by pid {} that nobody on connection {} matched (ignored)",
            field("pid"),
            field("conn")
        ),
        "holder_ended" => format!(
            "pid {} on connection {} ended ({}) holding {} name(s)",
            field("pid"),
            field("conn"),
            field("reason"),
            field("names")
        ),
        "in_transit" => format!(
            "in transit: refcount {} > {} registration(s) of ended holders; kept",
            field("refcount"),
            field("dead")
        ),
        "orphaned" => format!(
            "orphaned: refcount {} <= {} registration(s) of ended holders",
            field("refcount"),
            field("dead")
        ),
        "still_mapped" => {
            "no holder left, yet a process maps it (a fork of one that died?); kept".to_owned()
        }
        "unlinked" if field("reason") == "orphaned" => "reaped (orphaned)".to_owned(),
        "unlinked" => "unlinked when the manager shut down".to_owned(),
        "gone" => "released and unlinked by its last user; forgotten".to_owned(),
        "vanished" => format!(
            "removed from outside while {} registration(s) held it (rm, gc --force, or logind's RemoveIPC)",
            field("registrations")
        ),
        "untouchable" => {
            "replaced by something not ours (another user's file, a FIFO, a symlink); left alone"
                .to_owned()
        }
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn event(what: &str, fields: &[(&str, &str)]) -> Event {
        Event {
            at: Duration::ZERO,
            what: what.to_owned(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn a_story_has_the_names_events_and_the_ends_of_its_registrants() {
        let events = [
            event("registered", &[("name", "/a"), ("conn", "0"), ("pid", "7")]),
            event("registered", &[("name", "/b"), ("conn", "1"), ("pid", "8")]),
            event("holder_ended", &[("conn", "1"), ("pid", "8")]),
            event("holder_ended", &[("conn", "0"), ("pid", "7")]),
            event("unlinked", &[("name", "/a"), ("reason", "orphaned")]),
        ];
        let story: Vec<&str> = story(&events, "/a")
            .iter()
            .map(|e| e.what.as_str())
            .collect();
        assert_eq!(story, ["registered", "holder_ended", "unlinked"]);
        assert_eq!(describe(&events[4]), "reaped (orphaned)");
    }
}
