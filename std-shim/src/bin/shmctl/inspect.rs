//! `shmctl ls` and `shmctl gc`: what is in `/dev/shm`, and removing what was
//! leaked. The judging is `libshm::inspect`'s; this module only prints.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use crate::units::{format_size, parse_duration};
use libshm::inspect::{self, Collected, GcPolicy, SegmentReport, Spared, Status};
use libshm::status::{Detail, StatusError};
use libshm::{ENV_PREFIX, NamePrefix};

use crate::Outcome;
use crate::error_chain::Chain;
use crate::managers::coarse;

/// Arguments of `shmctl ls`.
#[derive(clap::Args, Debug)]
pub(crate) struct LsArgs {
    /// Only names starting with this [default: $LIBSHM_NAME_PREFIX, else /torch_].
    #[arg(long)]
    prefix: Option<String>,
    /// Print one JSON array (keys: name, size, refcount, creator_pid,
    /// creator_alive, users, status, owner_uid, age_seconds).
    #[arg(long)]
    json: bool,
    /// List live managers instead: handle, pid, uptime, and each client's
    /// pid with its live names and bytes, as the managers report them.
    #[arg(long)]
    managers: bool,
}

/// Arguments of `shmctl gc`.
#[derive(clap::Args, Debug)]
pub(crate) struct GcArgs {
    /// Only names starting with this [default: $LIBSHM_NAME_PREFIX, else /torch_].
    #[arg(long)]
    prefix: Option<String>,
    /// Only segments unchanged for this long (`30s`, `10m`, `0`). A freshly
    /// leaked-looking segment may be in transit between processes.
    #[arg(long, value_parser = parse_duration, default_value = "1m")]
    older_than: Duration,
    /// Unlink them. Without it, only list what would be removed.
    #[arg(long)]
    yes: bool,
    /// Remove leaked segments even while some processes could not be
    /// inspected (another user's, non-dumpable ones): one of them may still
    /// use a segment that looks leaked. Without it, gc removes nothing then.
    #[arg(long)]
    force: bool,
}

pub(crate) fn ls(args: &LsArgs) -> Outcome {
    if args.managers {
        return crate::managers::print(args.json);
    }
    let prefix = resolve_prefix(args.prefix.as_deref())?;
    let scan = inspect::scan(&prefix)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        out.write_all(json(&scan.segments).as_bytes())?;
        out.flush()?;
        if let Some(doubt) = scan.doubt() {
            eprintln!("shmctl: {doubt}; {UNSEEN_USERS}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if scan.segments.is_empty() {
        writeln!(out, "no segments starting with {prefix} in /dev/shm")?;
    } else {
        out.write_all(table(&scan.segments).as_bytes())?;
        writeln!(out)?;
        writeln!(out, "{}", summary(&scan.segments))?;
        let leaked: Vec<&SegmentReport> = with_status(&scan.segments, Status::Leaked).collect();
        if !leaked.is_empty() {
            writeln!(
                out,
                "{} {} ({}): `shmctl gc --prefix {prefix}` lists what it would remove",
                leaked.len(),
                if scan.doubt().is_some() {
                    "look leaked, unsure"
                } else {
                    "leaked"
                },
                format_size(leaked.iter().map(|s| s.size).sum())
            )?;
        }
    }
    if let Some(doubt) = scan.doubt() {
        writeln!(out, "note: {doubt}; {UNSEEN_USERS}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn gc(args: &GcArgs) -> Outcome {
    let prefix = resolve_prefix(args.prefix.as_deref())?;
    let policy = GcPolicy {
        force: args.force,
        ..GcPolicy::for_current_user(args.older_than)
    };
    let scan = inspect::scan(&prefix)?;
    let (candidates, spared): (Vec<&SegmentReport>, Vec<&SegmentReport>) =
        with_status(&scan.segments, Status::Leaked).partition(|s| s.spared_by(&policy).is_none());
    // A live manager of ours that still knows a name answers for it: a
    // segment in transit (its handle in a queue, its creator gone) maps
    // nothing and looks leaked, yet its receiver will open it.
    let tracked = if candidates.is_empty() {
        Tracked::default()
    } else {
        tracked_names(&prefix)
    };
    let (tracked_candidates, candidates): (Vec<&SegmentReport>, Vec<&SegmentReport>) = candidates
        .into_iter()
        .partition(|s| tracked.names.contains_key(s.name.as_str()));
    // PyTorch's managers cannot be asked. What one of them may have
    // registered (made since it started) it unlinks itself when it exits; a
    // tensor in a queue must not be lost to us before that.
    let (unasked_candidates, candidates): (Vec<&SegmentReport>, Vec<&SegmentReport>) = candidates
        .into_iter()
        .partition(|s| !args.force && tracked.unaskable.iter().any(|m| m.may_have_registered(s)));
    // Under doubt, a segment that looks leaked may be used by a process we
    // cannot see, or kept in transit by a manager of ours that did not say
    // so: nothing goes unless the caller says so.
    let mut doubts = Vec::new();
    if let Some(doubt) = scan.doubt() {
        doubts.push(doubt.to_string());
    }
    doubts.extend(tracked.silent.iter().map(ToString::to_string));
    let held_back = (!doubts.is_empty() && !args.force).then(|| doubts.join("; "));
    let mut out = std::io::stdout().lock();
    if held_back.is_some() {
        if let Some(doubt) = scan.doubt() {
            writeln!(out, "note: {doubt}; {UNSEEN_USERS}")?;
        }
        for silent in &tracked.silent {
            writeln!(out, "note: {silent}; {UNTOLD_NAMES}")?;
        }
    }
    for segment in &tracked_candidates {
        if let Some(why) = tracked.names.get(segment.name.as_str()) {
            writeln!(out, "kept    {}: {why}", segment.name)?;
        }
    }
    for segment in &unasked_candidates {
        if let Some(manager) = tracked
            .unaskable
            .iter()
            .find(|m| m.may_have_registered(segment))
        {
            writeln!(
                out,
                "kept    {}: made while {manager} runs, which cannot be asked whether it \
                 waits in a queue and unlinks it itself when it exits (--force removes it)",
                segment.name
            )?;
        }
    }
    let mut freed = 0u64;
    let mut removed = 0usize;
    let mut failed = 0usize;
    for segment in &candidates {
        if !args.yes || held_back.is_some() {
            writeln!(
                out,
                "{} {}  {}  (creator {} dead, unchanged for {})",
                if held_back.is_some() {
                    "would keep  "
                } else {
                    "would remove"
                },
                segment.name,
                format_size(segment.size),
                segment
                    .creator_pid
                    .map_or_else(|| "-".into(), |p| p.to_string()),
                coarse(segment.age)
            )?;
            freed += segment.size;
            removed += 1;
            continue;
        }
        match inspect::collect(&segment.name, &prefix, &policy) {
            Ok(Collected::Removed { bytes }) => {
                writeln!(out, "removed {}  {}", segment.name, format_size(bytes))?;
                freed += bytes;
                removed += 1;
            }
            Ok(Collected::Spared(why)) => writeln!(out, "kept    {}: {why}", segment.name)?,
            Ok(Collected::Gone) => writeln!(out, "gone    {}: already unlinked", segment.name)?,
            Err(err) => {
                writeln!(out, "failed  {}: {}", segment.name, Chain(&err))?;
                failed += 1;
            }
        }
        out.flush()?;
    }
    if let Some(doubt) = held_back.as_ref().filter(|_| removed > 0) {
        let uninspected = scan.doubt().is_some_and(|d| !d.pids.is_empty());
        writeln!(
            out,
            "{}: {doubt}, so {removed} segment{} that look{} \
             leaked ({}) may still be in use. {}--force removes them anyway",
            if args.yes {
                "removed nothing"
            } else {
                "would remove nothing"
            },
            plural(removed),
            if removed == 1 { "s" } else { "" },
            format_size(freed),
            if uninspected && !rustix::process::geteuid().is_root() {
                "Root may inspect them; "
            } else {
                ""
            }
        )?;
    } else if args.yes && held_back.is_none() {
        writeln!(
            out,
            "removed {removed} segment{}, freed {}",
            plural(removed),
            format_size(freed)
        )?;
    } else if removed == 0 {
        writeln!(out, "nothing to remove")?;
    } else {
        writeln!(
            out,
            "would remove {removed} segment{}, freeing {}; run again with --yes to remove them",
            plural(removed),
            format_size(freed)
        )?;
    }
    if let Some(kept) = spared_summary(&spared, &policy) {
        writeln!(out, "kept: {kept}")?;
    }
    if args.force {
        for doubt in &doubts {
            writeln!(out, "note: {doubt}; not held back (--force)")?;
        }
        for manager in &tracked.unaskable {
            writeln!(
                out,
                "note: {manager} cannot be asked what it keeps in transit; not held back (--force)"
            )?;
        }
    }
    out.flush()?;
    if failed > 0 {
        return Err(format!("{failed} segment{} could not be removed", plural(failed)).into());
    }
    Ok(ExitCode::SUCCESS)
}

/// What the live managers said about the names they answer for.
#[derive(Default)]
struct Tracked {
    /// Each name a manager of ours still answers for, with who and how.
    names: BTreeMap<String, String>,
    /// Managers of ours that did not tell: stopped, starved, or cut short.
    silent: Vec<Silent>,
    /// Other managers (PyTorch's), which cannot be asked.
    unaskable: Vec<Unaskable>,
}

/// A live manager that is not ours: it answers `OK` to anything and keeps
/// every name registered with it until it exits.
struct Unaskable {
    handle: String,
    pid: Option<u32>,
    uptime: Option<Duration>,
}

impl Unaskable {
    /// Whether `segment` may be registered with it: made since it started
    /// (start times are good to about a second). One whose process we cannot
    /// see (another pid namespace) is judged by gc's age rule alone, as
    /// before: counting it would let any hidden manager stop every gc.
    fn may_have_registered(&self, segment: &SegmentReport) -> bool {
        const START_TIME_SLACK: Duration = Duration::from_secs(2);
        self.uptime
            .is_some_and(|uptime| segment.age <= uptime.saturating_add(START_TIME_SLACK))
    }
}

impl fmt::Display for Unaskable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the manager {}", self.handle)?;
        if let Some(pid) = self.pid {
            write!(f, " (pid {pid})")?;
        }
        Ok(())
    }
}

/// A live manager of ours that did not report its names.
struct Silent {
    handle: String,
    pid: Option<u32>,
    why: StatusError,
}

impl fmt::Display for Silent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the live manager {}", self.handle)?;
        if let Some(pid) = self.pid {
            write!(f, " (pid {pid})")?;
        }
        write!(
            f,
            " did not report the names it answers for ({})",
            Chain(&self.why)
        )
    }
}

/// The names live managers of ours still answer for, each with who and how.
/// PyTorch's managers cannot be asked: they are listed as such. One of
/// ours that does not answer (stopped, swapped out, its backlog full) may
/// keep a segment in transit that only it knows: it is listed as silent,
/// never taken to know nothing, unless it takes no name under `prefix`.
fn tracked_names(prefix: &NamePrefix) -> Tracked {
    let mut tracked = Tracked::default();
    for manager in crate::managers::live() {
        let report = match manager.status(Detail::Names) {
            Ok(report) => report,
            Err(_) if !serves_our_user(&manager) => continue,
            Err(why) => {
                if !manager.is_ours() {
                    tracked.unaskable.push(Unaskable {
                        handle: manager.handle.clone(),
                        pid: manager.pid,
                        uptime: manager.uptime,
                    });
                } else if manager.may_know(prefix.as_str()) {
                    tracked.silent.push(Silent {
                        handle: manager.handle.clone(),
                        pid: manager.pid,
                        why,
                    });
                }
                continue;
            }
        };
        for known in report.names {
            let why = format!(
                "live manager {} (pid {}) still answers for it ({})",
                report.manager.handle, report.manager.pid, known.state
            );
            tracked.names.entry(known.name).or_insert(why);
        }
    }
    tracked
}

/// Whether `manager` may have been told of segments gc may remove (ours:
/// the effective user's). A manager's directory is its owner's alone (mode
/// 0700), so only its owner's processes reach it, and another user's
/// manager knows only segments gc leaves alone. One whose owner cannot be
/// read is counted.
fn serves_our_user(manager: &crate::managers::LiveManager) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let me = rustix::process::geteuid().as_raw();
    std::path::Path::new(&manager.handle)
        .parent()
        .and_then(|dir| std::fs::metadata(dir).ok())
        .is_none_or(|dir| dir.uid() == me)
}

/// `--prefix`, else `$LIBSHM_NAME_PREFIX` (what the client would use), else `/torch_`.
pub(crate) fn resolve_prefix(arg: Option<&str>) -> Result<NamePrefix, String> {
    let (text, source) = match arg {
        Some(text) => (text.to_owned(), "--prefix"),
        None => match std::env::var(ENV_PREFIX) {
            Ok(text) if !text.is_empty() => (text, ENV_PREFIX),
            _ => return Ok(NamePrefix::torch()),
        },
    };
    NamePrefix::new(text.as_bytes()).map_err(|err| format!("{source} {text:?}: {err}"))
}

fn with_status(segments: &[SegmentReport], status: Status) -> impl Iterator<Item = &SegmentReport> {
    segments.iter().filter(move |s| s.status == status)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// What a scan that missed processes means for its verdicts.
const UNSEEN_USERS: &str = "a segment only they use is shown as unused";

/// What a manager that did not answer means for the verdicts.
const UNTOLD_NAMES: &str = "a segment it keeps in transit is shown as leaked";

/// `3 segments, 12.2 KiB: 1 in use, 2 leaked`.
fn summary(segments: &[SegmentReport]) -> String {
    let total: u64 = segments.iter().map(|s| s.size).sum();
    let counts: Vec<String> = [
        Status::InUse,
        Status::Orphaned,
        Status::Leaked,
        Status::Unknown,
    ]
    .into_iter()
    .filter_map(|status| {
        let n = with_status(segments, status).count();
        (n > 0).then(|| format!("{n} {status}"))
    })
    .collect();
    format!(
        "{} segment{}, {}: {}",
        segments.len(),
        plural(segments.len()),
        format_size(total),
        counts.join(", ")
    )
}

/// Why leaked segments were not candidates, counted by reason.
fn spared_summary(spared: &[&SegmentReport], policy: &GcPolicy) -> Option<String> {
    let (mut young, mut foreign) = (0usize, 0usize);
    for segment in spared {
        match segment.spared_by(policy) {
            Some(Spared::TooYoung { .. }) => young += 1,
            Some(Spared::NotOwned { .. }) => foreign += 1,
            _ => {}
        }
    }
    let mut parts = Vec::new();
    if young > 0 {
        parts.push(format!(
            "{young} leaked segment{} changed less than {} ago (see --older-than)",
            plural(young),
            coarse(policy.min_age)
        ));
    }
    if foreign > 0 {
        parts.push(format!(
            "{foreign} leaked segment{} of other users",
            plural(foreign)
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `12, 34, 56 +2`: a few users, then how many more.
fn format_users(users: &[u32]) -> String {
    const SHOWN: usize = 3;
    if users.is_empty() {
        return "-".into();
    }
    let mut text = users
        .iter()
        .take(SHOWN)
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if users.len() > SHOWN {
        let _ = write!(text, " +{}", users.len() - SHOWN);
    }
    text
}

/// The aligned table `ls` prints, header first.
fn table(segments: &[SegmentReport]) -> String {
    const HEADER: [&str; 7] = [
        "NAME", "SIZE", "REFCOUNT", "CREATOR", "USERS", "AGE", "STATUS",
    ];
    // Numbers read best right-aligned.
    const RIGHT: [bool; 7] = [false, true, true, false, false, true, false];
    let rows: Vec<[String; 7]> = segments
        .iter()
        .map(|s| {
            [
                s.name.to_string(),
                format_size(s.size),
                s.refcount.map_or_else(|| "-".into(), |r| r.to_string()),
                match (s.creator_pid, s.creator_alive) {
                    (Some(pid), Some(true)) => format!("{pid} alive"),
                    (Some(pid), _) => format!("{pid} dead"),
                    (None, _) => "-".into(),
                },
                format_users(&s.users),
                coarse(s.age),
                s.status.to_string(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let width = widths[i];
            let _ = if RIGHT[i] {
                write!(line, "{cell:>width$}  ")
            } else {
                write!(line, "{cell:<width$}  ")
            };
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// The `--json` output: one array, one object per segment (one per line),
/// keys in a fixed order, `null` for what is unknown.
fn json(segments: &[SegmentReport]) -> String {
    if segments.is_empty() {
        return "[]\n".into();
    }
    let mut text = String::from("[\n");
    for (i, s) in segments.iter().enumerate() {
        let users: Vec<String> = s.users.iter().map(u32::to_string).collect();
        let _ = write!(
            text,
            "  {{\"name\":{},\"size\":{},\"refcount\":{},\"creator_pid\":{},\"creator_alive\":{},\
             \"users\":[{}],\"status\":{},\"owner_uid\":{},\"age_seconds\":{}}}",
            json_string(s.name.as_str()),
            s.size,
            json_or_null(s.refcount),
            json_or_null(s.creator_pid),
            json_or_null(s.creator_alive),
            users.join(","),
            json_string(s.status.as_str()),
            s.owner_uid,
            s.age.as_secs()
        );
        text.push_str(if i + 1 < segments.len() { ",\n" } else { "\n" });
    }
    text.push_str("]\n");
    text
}

fn json_or_null(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "null".into(), |v| v.to_string())
}

/// A JSON string literal. Names are validated visible ASCII, but the encoder
/// does not rely on it.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use libshm::SegmentName;

    fn report(name: &str, status: Status) -> SegmentReport {
        SegmentReport {
            name: SegmentName::new(name.as_bytes()).unwrap(),
            size: 4160,
            refcount: Some(1),
            creator_pid: Some(42),
            creator_alive: Some(false),
            users: Vec::new(),
            status,
            owner_uid: 1000,
            age: Duration::from_secs(90),
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("/torch_1_2_3"), "\"/torch_1_2_3\"");
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn json_has_stable_keys_and_nulls() {
        let mut unknown = report("/odd", Status::Unknown);
        unknown.refcount = None;
        unknown.creator_pid = None;
        unknown.creator_alive = None;
        let mut used = report("/torch_42_1_0", Status::Orphaned);
        used.users = vec![7, 8];
        assert_eq!(
            json(&[unknown, used]),
            "[\n  {\"name\":\"/odd\",\"size\":4160,\"refcount\":null,\"creator_pid\":null,\
             \"creator_alive\":null,\"users\":[],\"status\":\"unknown\",\"owner_uid\":1000,\
             \"age_seconds\":90},\n  {\"name\":\"/torch_42_1_0\",\"size\":4160,\"refcount\":1,\
             \"creator_pid\":42,\"creator_alive\":false,\"users\":[7,8],\"status\":\"orphaned\",\
             \"owner_uid\":1000,\"age_seconds\":90}\n]\n"
        );
        assert_eq!(json(&[]), "[]\n");
    }

    #[test]
    fn table_is_aligned_under_its_header() {
        let mut long = report("/torch_42_1234567890_17", Status::InUse);
        long.creator_alive = Some(true);
        long.users = vec![1, 2, 3, 4, 5];
        let text = table(&[report("/torch_42_1_0", Status::Leaked), long]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let status_column = lines[0].find("STATUS").unwrap();
        assert_eq!(lines[1].find("leaked"), Some(status_column));
        assert_eq!(lines[2].find("in use"), Some(status_column));
        assert!(lines[2].contains("1,2,3 +2"));
        assert!(lines[1].contains("42 dead"));
        assert!(lines[2].contains("42 alive"));
    }

    #[test]
    fn ages_and_prefixes() {
        assert_eq!(coarse(Duration::from_secs(59)), "59s");
        assert_eq!(coarse(Duration::from_secs(61)), "1m");
        assert_eq!(coarse(Duration::from_secs(7_200)), "2h");
        assert_eq!(coarse(Duration::from_secs(172_800)), "2d");
        assert_eq!(resolve_prefix(Some("/x_")).unwrap().as_str(), "/x_");
        assert!(resolve_prefix(Some("x_")).is_err());
    }
}
