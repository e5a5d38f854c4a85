//! `shmctl bench`: the allocation hot path on this machine, as a ratio to the
//! raw syscall floor measured in the same run.
//!
//! Each variant runs the same loop (create a segment, write one byte per page,
//! drop it). Variants take turns in short rounds, so a noisy neighbour hits
//! them alike; the report is the median of the per-round averages.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::units::{format_duration, format_size, parse_size};
use libshm::{AckMode, Config, ManagerLink, NamePrefix, floor};

use crate::Outcome;

/// Arguments of `shmctl bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Data bytes per segment; repeat for several sizes.
    #[arg(long, value_parser = parse_size, default_values = ["4KiB", "64KiB", "1MiB", "16MiB"])]
    size: Vec<usize>,
    /// Create/drop cycles per variant and size.
    #[arg(long, default_value_t = 6000)]
    iters: usize,
    /// Rounds the iterations are split into (the median is over rounds).
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Manager executable to measure against [default: our shm-manager].
    #[arg(long)]
    manager: Option<PathBuf>,
    /// Run only these variants (the floor always runs: it is the baseline).
    #[arg(long, value_enum)]
    variant: Vec<Kind>,
}

/// A variant to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// Our client, not waiting for replies (through a journal where the
    /// manager takes one).
    Pipelined,
    /// Our client, not waiting for replies, writing every frame to the socket.
    Socket,
    /// Our client, waiting for OK after every registration (PyTorch's way).
    Strict,
}

struct Variant {
    label: String,
    manager: Option<ManagerLink>,
    samples: Vec<Duration>,
}

pub(crate) fn run(args: &Args) -> Outcome {
    let rounds = args.rounds.max(1);
    let prefix = NamePrefix::new(b"/shmbench_")?;
    let mut base = Config::from_env()?.name_prefix(prefix).quiet_manager(true);
    if let Some(path) = &args.manager {
        base = base.manager_executable(path);
    }
    let target = base.launcher()?.executable().display().to_string();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "shmctl bench: create + touch + drop, {} iterations per variant in {rounds} rounds",
        args.iters
    )?;
    writeln!(out, "manager: {target}")?;

    for &size in &args.size {
        // Larger segments cost milliseconds each: scale the count down so
        // every size takes about as long.
        let iters = (args.iters * 4096 / size.max(4096)).max(rounds * 4);
        let per_round = iters.div_ceil(rounds);
        let wanted = |kind| args.variant.is_empty() || args.variant.contains(&kind);
        let mut variants = vec![Variant {
            label: "floor (raw syscalls, no manager)".into(),
            manager: None,
            samples: Vec::new(),
        }];
        if wanted(Kind::Pipelined) {
            variants.push(Variant {
                label: "libshm, pipelined".into(),
                manager: Some(ManagerLink::launch(
                    &base.clone().ack_mode(AckMode::default()),
                )?),
                samples: Vec::new(),
            });
        }
        if wanted(Kind::Socket) {
            variants.push(Variant {
                label: "libshm, pipelined, socket frames".into(),
                manager: Some(ManagerLink::launch(
                    &base.clone().ack_mode(AckMode::default()).journal(false),
                )?),
                samples: Vec::new(),
            });
        }
        if wanted(Kind::Strict) {
            variants.push(Variant {
                label: "libshm, strict (waits for OK)".into(),
                manager: Some(ManagerLink::launch(
                    &base.clone().ack_mode(AckMode::Strict),
                )?),
                samples: Vec::new(),
            });
        }
        for variant in &mut variants {
            run_cycles(variant, size, per_round.min(200), &prefix)?; // warm up
        }
        for round in 0..rounds {
            // Rotate who goes first, so no variant always follows the same one.
            for k in 0..variants.len() {
                let index = (round + k) % variants.len();
                let variant = &mut variants[index];
                let start = Instant::now();
                run_cycles(variant, size, per_round, &prefix)?;
                let per_op = start.elapsed() / u32::try_from(per_round).unwrap_or(u32::MAX);
                variant.samples.push(per_op);
            }
        }
        for variant in &variants {
            if let Some(manager) = &variant.manager {
                manager.settle()?;
            }
        }

        let floor_median = median(&variants[0].samples);
        writeln!(out)?;
        writeln!(
            out,
            "size {} ({iters} cycles per variant)",
            format_size(size as u64)
        )?;
        writeln!(
            out,
            "  {:<34} {:>12} {:>12} {:>8}",
            "variant", "median/op", "spread", "vs floor"
        )?;
        for variant in &variants {
            let m = median(&variant.samples);
            let (lo, hi) = spread(&variant.samples);
            writeln!(
                out,
                "  {:<34} {:>12} {:>12} {:>8.2}",
                variant.label,
                format_duration(m),
                format!("±{}", format_duration((hi - lo) / 2)),
                m.as_secs_f64() / floor_median.as_secs_f64()
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn run_cycles(
    variant: &Variant,
    size: usize,
    count: usize,
    prefix: &NamePrefix,
) -> Result<(), libshm::Error> {
    match &variant.manager {
        None => {
            for _ in 0..count {
                floor::cycle(&floor::fresh_name(prefix)?, size)?;
            }
        }
        Some(manager) => {
            for _ in 0..count {
                let segment = manager.create(size)?;
                segment.touch();
                drop(segment);
            }
        }
    }
    Ok(())
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// The interquartile range's ends.
fn spread(samples: &[Duration]) -> (Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: usize| {
        sorted
            .get(sorted.len() * q / 4)
            .copied()
            .unwrap_or_default()
    };
    (at(1), at(3))
}
