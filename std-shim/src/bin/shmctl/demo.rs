//! `shmctl demo`: the whole system in one run, with its own numbers.
//!
//! A manager is started; the parent creates segments and fills them; worker
//! processes open them by handle and compute on them in place; one worker is
//! SIGKILLed while it holds segments (some it opened, some it created). The
//! parent checks the results, drops everything, and waits for the manager to
//! reclaim what the dead worker pinned. The table at the end counts segments
//! created, freed by their last user, reclaimed after the crash, and left over.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::units::{format_duration, format_size, parse_size};
use libshm::{Config, ManagerHandle, ManagerLink, NamePrefix, SegmentName, SharedSegment};

use crate::Outcome;

/// Names the demo creates start with this, so it can count exactly its own.
const DEMO_PREFIX: &str = "/shmdemo_";

/// Arguments of `shmctl demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Segments the parent creates.
    #[arg(long, default_value_t = 12)]
    segments: usize,
    /// Data bytes per segment.
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    size: usize,
    /// Worker processes (one of them is killed).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Segments the doomed worker creates before it dies.
    #[arg(long, default_value_t = 2)]
    scratch: usize,
}

/// Arguments of the hidden `shmctl demo-worker`.
#[derive(clap::Args, Debug)]
pub(crate) struct WorkerArgs {
    #[arg(long)]
    manager: ManagerHandle,
    #[arg(long, value_parser = parse_size)]
    size: usize,
    #[arg(long, value_delimiter = ',')]
    names: Vec<SegmentName>,
    /// Open everything, create this many segments, report, and wait to be killed.
    #[arg(long)]
    doomed_with_scratch: Option<usize>,
}

struct Phases(Vec<(&'static str, Duration)>);

impl Phases {
    fn time<T>(&mut self, name: &'static str, work: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = work();
        self.0.push((name, start.elapsed()));
        out
    }
}

pub(crate) fn run(args: &Args) -> Outcome {
    if args.workers < 2 || args.segments < args.workers || args.size < 4 {
        return Err(
            "the demo needs at least 2 workers, a segment per worker and 4-byte segments".into(),
        );
    }
    let prefix = NamePrefix::new(DEMO_PREFIX.as_bytes())?;
    let config = Config::from_env()?.name_prefix(prefix);
    config.clone().install();
    let exe = std::env::current_exe()?;
    let parent_pid = std::process::id();
    let mut phases = Phases(Vec::new());

    let manager = phases.time("start the manager", || ManagerLink::launch(&config))?;
    let handle = manager.handle();

    let segments = phases.time(
        "create and fill segments",
        || -> Result<Vec<SharedSegment>, libshm::Error> {
            (0..args.segments)
                .map(|i| {
                    let segment = manager.create(args.size)?;
                    fill_sequence(&segment, i as u32);
                    Ok(segment)
                })
                .collect()
        },
    )?;

    // Segment i goes to worker i % workers; the last worker is the doomed one.
    let doomed = args.workers - 1;
    let share = |w: usize| -> Vec<String> {
        (0..args.segments)
            .filter(|i| i % args.workers == w)
            .map(|i| segments[i].name().to_string())
            .collect()
    };
    let spawn = |names: Vec<String>, scratch: Option<usize>| -> std::io::Result<Child> {
        let mut command = Command::new(&exe);
        command
            .arg("demo-worker")
            .args([
                "--manager",
                handle.as_str(),
                "--size",
                &args.size.to_string(),
            ])
            .arg(format!("--names={}", names.join(",")))
            .env(libshm::ENV_PREFIX, DEMO_PREFIX)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some(count) = scratch {
            command.arg(format!("--doomed-with-scratch={count}"));
        }
        command.spawn()
    };

    let results = phases.time(
        "workers compute in place",
        || -> Result<Vec<(String, u64)>, Box<dyn std::error::Error>> {
            let mut children = (0..doomed)
                .map(|w| spawn(share(w), None))
                .collect::<std::io::Result<Vec<_>>>()?;
            let mut results = Vec::new();
            for child in &mut children {
                for line in lines(child.stdout.take())? {
                    if let Some((name, sum)) =
                        line.strip_prefix("done ").and_then(|l| l.split_once(' '))
                    {
                        results.push((name.to_owned(), sum.parse()?));
                    }
                }
                if !child.wait()?.success() {
                    return Err("a worker failed".into());
                }
            }
            Ok(results)
        },
    )?;

    let (victim_pid, scratch_names) = phases.time(
        "a worker is SIGKILLed holding segments",
        || -> Result<(u32, Vec<String>), Box<dyn std::error::Error>> {
            let mut victim = spawn(share(doomed), Some(args.scratch))?;
            let mut out = BufReader::new(victim.stdout.take().ok_or("no worker stdout")?);
            let mut line = String::new();
            out.read_line(&mut line)?;
            let scratch: Vec<String> = line
                .trim()
                .strip_prefix("holding")
                .ok_or_else(|| format!("doomed worker said {line:?}"))?
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            victim.kill()?;
            victim.wait()?;
            Ok((victim.id(), scratch))
        },
    )?;

    let verified = verify(&segments, &results, doomed, args.workers);
    let computed = args.segments - share(doomed).len();
    let ours = |name: &SegmentName| {
        let pid = name.creator_pid(&NamePrefix::new(DEMO_PREFIX.as_bytes()).unwrap_or_default());
        pid == Some(parent_pid) || pid == Some(victim_pid)
    };

    let freed = phases.time("the parent drops its segments", || {
        segments
            .into_iter()
            .map(SharedSegment::close)
            .filter(|c| c.unlinked)
            .count()
    });
    let pinned = demo_names(ours)?;

    let left = phases.time(
        "the manager reclaims what the dead worker pinned",
        || -> std::io::Result<BTreeSet<SegmentName>> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left = demo_names(ours)?;
                if left.is_empty() || Instant::now() >= deadline {
                    return Ok(left);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        },
    )?;

    let created = args.segments + scratch_names.len();
    let reclaimed = pinned.len() - left.len();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "libshm-rs demo: {} segments of {}, {} workers, manager {handle}",
        args.segments,
        format_size(args.size as u64),
        args.workers
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "  segments created            {created:>5}   ({} by the parent, {} by the worker that was killed)",
        args.segments,
        scratch_names.len()
    )?;
    writeln!(out, "  freed by their last user    {freed:>5}")?;
    writeln!(
        out,
        "  reclaimed after the crash   {reclaimed:>5}   (pinned by the killed worker; unlinked by the manager)"
    )?;
    writeln!(out, "  left over in /dev/shm       {:>5}", left.len())?;
    writeln!(
        out,
        "  results verified            {:>5}   of {} computed by workers",
        verified.as_ref().map_or(0, |n| *n),
        computed
    )?;
    writeln!(out)?;
    writeln!(out, "  {:<50} {:>10}", "phase", "time")?;
    for (name, took) in &phases.0 {
        writeln!(out, "  {name:<50} {:>10}", format_duration(*took))?;
    }
    out.flush()?;

    if let Err(problem) = verified {
        return Err(problem.into());
    }
    if !left.is_empty() || freed + reclaimed != created {
        let names: Vec<&str> = left.iter().map(SegmentName::as_str).collect();
        return Err(format!("segments left behind: {names:?}").into());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn worker(args: &WorkerArgs) -> Outcome {
    let manager = ManagerLink::connect(&args.manager)?;
    let mut stdout = std::io::stdout().lock();
    if let Some(scratch) = args.doomed_with_scratch {
        let mut held = Vec::new();
        for name in &args.names {
            held.push(manager.open(name, args.size)?);
        }
        for _ in 0..scratch {
            held.push(manager.create(args.size)?);
        }
        let created: Vec<String> = held[args.names.len()..]
            .iter()
            .map(|s| s.name().to_string())
            .collect();
        manager.settle()?;
        writeln!(stdout, "holding {}", created.join(" "))?;
        stdout.flush()?;
        loop {
            // Mid-work, as far as anyone can tell, until SIGKILL arrives.
            std::thread::park();
        }
    }
    for name in &args.names {
        let segment = manager.open(name, args.size)?;
        let sum = transform(&segment);
        writeln!(stdout, "done {name} {sum}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `seed * 1_000_003 + k` into every little-endian u32 slot.
fn fill_sequence(segment: &SharedSegment, seed: u32) {
    let base = seed.wrapping_mul(1_000_003);
    let words: Vec<u8> = (0..segment.len() / 4)
        .flat_map(|k| base.wrapping_add(k as u32).to_le_bytes())
        .collect();
    let _ = segment.write_at(0, &words);
}

/// The workers' computation: every u32 `v` becomes `2v + 1`; returns the sum
/// of the new values.
fn transform(segment: &SharedSegment) -> u64 {
    let mut bytes = vec![0u8; segment.len() / 4 * 4];
    let _ = segment.read_at(0, &mut bytes);
    let mut sum = 0u64;
    for word in bytes.chunks_exact_mut(4) {
        let v = u32::from_le_bytes([word[0], word[1], word[2], word[3]])
            .wrapping_mul(2)
            .wrapping_add(1);
        sum += u64::from(v);
        word.copy_from_slice(&v.to_le_bytes());
    }
    let _ = segment.write_at(0, &bytes);
    sum
}

/// Checks each computed segment holds `2v + 1` of its original sequence and
/// that the worker's sum matches; the doomed worker's segments must be untouched.
fn verify(
    segments: &[SharedSegment],
    results: &[(String, u64)],
    doomed: usize,
    workers: usize,
) -> Result<usize, String> {
    let mut verified = 0;
    for (i, segment) in segments.iter().enumerate() {
        let base = (i as u32).wrapping_mul(1_000_003);
        let mut bytes = vec![0u8; segment.len() / 4 * 4];
        segment.read_at(0, &mut bytes).map_err(|e| e.to_string())?;
        let words = bytes
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        if i % workers == doomed {
            if !words
                .enumerate()
                .all(|(k, v)| v == base.wrapping_add(k as u32))
            {
                return Err(format!(
                    "{} was changed by a worker that never computed",
                    segment.name()
                ));
            }
            continue;
        }
        let mut sum = 0u64;
        for (k, v) in words.enumerate() {
            let expected = base.wrapping_add(k as u32).wrapping_mul(2).wrapping_add(1);
            if v != expected {
                return Err(format!(
                    "{} holds {v} at word {k}, expected {expected}",
                    segment.name()
                ));
            }
            sum += u64::from(v);
        }
        let reported = results
            .iter()
            .find(|(name, _)| name == segment.name().as_str())
            .map(|(_, s)| *s);
        if reported != Some(sum) {
            return Err(format!(
                "{}: worker reported {reported:?}, data sums to {sum}",
                segment.name()
            ));
        }
        verified += 1;
    }
    Ok(verified)
}

fn lines(stdout: Option<ChildStdout>) -> std::io::Result<Vec<String>> {
    let stdout = stdout.ok_or_else(|| std::io::Error::other("no worker stdout"))?;
    BufReader::new(stdout).lines().collect()
}

/// Demo segments in /dev/shm whose creator matches `ours`.
fn demo_names(ours: impl Fn(&SegmentName) -> bool) -> std::io::Result<BTreeSet<SegmentName>> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir("/dev/shm")? {
        let file_name = entry?.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if let Ok(name) = SegmentName::new(format!("/{file_name}").as_bytes())
            && name.as_str().starts_with(DEMO_PREFIX)
            && ours(&name)
        {
            names.insert(name);
        }
    }
    Ok(names)
}
