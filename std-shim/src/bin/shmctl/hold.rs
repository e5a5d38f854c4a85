//! `shmctl create` and `shmctl open`: segments held by a process you control.
//!
//! With `--hold` the command keeps its segments until stdin closes, and answers
//! one line per command read from stdin: `check <byte>` (are all data bytes
//! this value?), `fill <byte>`, `refcount`, `create <size>` (one more segment,
//! reported like the first ones), `exit`. Tests and the PyTorch interop
//! scripts drive it that way; kill it with SIGKILL to play a crash.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use crate::units::parse_size;
use libshm::{ManagerHandle, ManagerLink, SegmentName, ShareHandle, SharedSegment};

use crate::Outcome;
use crate::error_chain::Chain;

/// Arguments of `shmctl create`.
#[derive(clap::Args, Debug)]
pub(crate) struct CreateArgs {
    /// Data bytes per segment (`4096`, `4KiB`, `1M`).
    #[arg(long, value_parser = parse_size, default_value = "4096")]
    size: usize,
    /// How many segments.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Fill the data with this byte.
    #[arg(long)]
    fill: Option<u8>,
    /// Register with the manager at this handle instead of starting one.
    #[arg(long)]
    manager: Option<ManagerHandle>,
    /// Print a share handle per segment (`<size> <name> <manager handle>`)
    /// instead of its description: each keeps its segment alive until
    /// `shmctl open --share` (or PyTorch, given the three fields, with
    /// `_shared_decref` after opening) opens it, even after this process
    /// has exited.
    #[arg(long, conflicts_with = "hold")]
    share: bool,
    /// Keep the segments until stdin closes, answering commands.
    #[arg(long)]
    hold: bool,
}

/// Arguments of `shmctl open`.
#[derive(clap::Args, Debug)]
pub(crate) struct OpenArgs {
    /// The manager handle the segment was shared with.
    #[arg(long, required_unless_present = "share")]
    manager: Option<ManagerHandle>,
    /// The segment name.
    #[arg(long, required_unless_present = "share")]
    name: Option<SegmentName>,
    /// Data bytes to map; the whole segment if omitted.
    #[arg(long, value_parser = parse_size)]
    size: Option<usize>,
    /// Open what a share handle (`<size> <name> <manager handle>`, as
    /// `SharedSegment::share` makes them) names, taking over the reference
    /// it kept alive in transit.
    #[arg(long, conflicts_with_all = ["manager", "name", "size"])]
    share: Option<String>,
    /// Fail unless every data byte has this value.
    #[arg(long)]
    expect: Option<u8>,
    /// Then fill the data with this byte.
    #[arg(long)]
    fill: Option<u8>,
    /// Keep the segment until stdin closes, answering commands.
    #[arg(long)]
    hold: bool,
}

pub(crate) fn create(args: &CreateArgs) -> Outcome {
    let manager = match &args.manager {
        Some(handle) => ManagerLink::connect(handle)?,
        None => ManagerLink::default_for_process()?,
    };
    let mut segments = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let segment = manager.create(args.size)?;
        if let Some(byte) = args.fill {
            segment.fill(byte);
        }
        segments.push(segment);
    }
    manager.settle()?;
    if args.share {
        let mut out = std::io::stdout().lock();
        for segment in &segments {
            writeln!(out, "{}", segment.share()?)?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    report(&segments)?;
    if args.hold {
        serve_commands(&manager, &mut segments)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn open(args: &OpenArgs) -> Outcome {
    let (manager, segment) = match (&args.share, &args.manager, &args.name) {
        (Some(share), _, _) => {
            let share: ShareHandle = share.parse()?;
            let manager = ManagerLink::connect(share.manager())?;
            (manager, share.open()?)
        }
        (None, Some(handle), Some(name)) => {
            let manager = ManagerLink::connect(handle)?;
            let segment = match args.size {
                Some(size) => manager.open(name, size)?,
                None => manager.open_whole(name)?,
            };
            (manager, segment)
        }
        _ => return Err("give --share, or --manager and --name".into()),
    };
    manager.settle()?;
    if let Some(byte) = args.expect
        && !all_bytes_are(&segment, byte)
    {
        return Err(format!("{}: data is not all {byte}", segment.name()).into());
    }
    if let Some(byte) = args.fill {
        segment.fill(byte);
    }
    let mut segments = vec![segment];
    report(&segments)?;
    if args.hold {
        serve_commands(&manager, &mut segments)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn report(segments: &[SharedSegment]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for segment in segments {
        writeln!(out, "{}", describe(segment))?;
    }
    out.flush()
}

fn describe(segment: &SharedSegment) -> String {
    format!(
        "handle={} name={} size={} refcount={}",
        segment.manager_handle(),
        segment.name(),
        segment.len(),
        segment.refcount_now()
    )
}

fn all_bytes_are(segment: &SharedSegment, byte: u8) -> bool {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut offset = 0;
    while offset < segment.len() {
        let n = chunk.len().min(segment.len() - offset);
        if segment.read_at(offset, &mut chunk[..n]).is_err()
            || chunk[..n].iter().any(|&b| b != byte)
        {
            return false;
        }
        offset += n;
    }
    true
}

fn serve_commands(manager: &ManagerLink, segments: &mut Vec<SharedSegment>) -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if let Some(size) = line.trim().strip_prefix("create ") {
            let reply = match create_one(manager, size) {
                Ok(segment) => {
                    let line = describe(&segment);
                    segments.push(segment);
                    line
                }
                Err(err) => format!("error: {}", Chain(&*err)),
            };
            writeln!(out, "{reply}")?;
            out.flush()?;
            continue;
        }
        let mut words = line.split_whitespace();
        let reply = match (words.next(), words.next().map(str::parse::<u8>)) {
            (Some("check"), Some(Ok(byte))) => {
                let ok = segments.iter().all(|s| all_bytes_are(s, byte));
                format!(
                    "{} refcount={}",
                    if ok { "ok" } else { "mismatch" },
                    refcounts(segments)
                )
            }
            (Some("fill"), Some(Ok(byte))) => {
                segments.iter().for_each(|s| s.fill(byte));
                "ok".to_owned()
            }
            (Some("refcount"), None) => format!("refcount={}", refcounts(segments)),
            (Some("exit"), None) => break,
            _ => format!("error: unknown command {line:?}"),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

/// One more segment, registered and answered before it is reported.
fn create_one(
    manager: &ManagerLink,
    size: &str,
) -> Result<SharedSegment, Box<dyn std::error::Error>> {
    let segment = manager.create(parse_size(size)?)?;
    manager.settle()?;
    Ok(segment)
}

fn refcounts(segments: &[SharedSegment]) -> String {
    let counts: Vec<String> = segments
        .iter()
        .map(|s| s.refcount_now().to_string())
        .collect();
    counts.join(",")
}
