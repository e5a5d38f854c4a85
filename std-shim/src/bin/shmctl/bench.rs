//! `shmctl bench`: the allocation hot path on this machine, as a ratio to the
//! raw syscall floor measured in the same run.
//!
//! Each variant runs the same loop (create a segment, write one byte per page,
//! drop it). Variants take turns in short rounds, so a noisy neighbour hits
//! them alike; the report is the median of the per-round averages, and the
//! CPU time the process spent per segment (every thread: a pool's filler too).
//!
//! `--pool` adds our client with a segment pool: its creates are timed from
//! a full shelf, in batches of the shelf's depth, and the refill between
//! batches counts in its CPU. `--busy` keeps one core busy with another
//! process throughout. `--torch-client` measures PyTorch's own client
//! (THManagedMapAllocator, through torch in Python) through PyTorch's
//! manager and ours instead.

mod torch_client;

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
    /// Add our client with a segment pool of each size (depth 64).
    #[arg(long)]
    pool: bool,
    /// Keep one core busy with another process while measuring.
    #[arg(long)]
    busy: bool,
    /// Measure PyTorch's own client through PyTorch's manager and ours
    /// (needs torch: --python, else the first python3 on PATH that has it).
    #[arg(long)]
    torch_client: bool,
    /// With --torch-client: the Python that imports torch.
    #[arg(long, requires = "torch_client")]
    python: Option<PathBuf>,
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
    /// Segments per timed batch from a full pool shelf; `None` unpooled.
    pool_depth: Option<usize>,
    samples: Vec<Duration>,
    cpu: Duration,
    cycles: usize,
}

impl Variant {
    fn new(label: impl Into<String>, manager: Option<ManagerLink>) -> Self {
        Self {
            label: label.into(),
            manager,
            pool_depth: None,
            samples: Vec::new(),
            cpu: Duration::ZERO,
            cycles: 0,
        }
    }
}

/// Depth of the pool shelves `--pool` measures.
const POOL_DEPTH: usize = 64;

/// CPU time of this whole process (every thread) so far.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Another process spinning on one core for as long as it lives.
struct Hog(std::process::Child);

impl Hog {
    fn start() -> std::io::Result<Self> {
        std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .map(Self)
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn run(args: &Args) -> Outcome {
    let _hog = if args.busy { Some(Hog::start()?) } else { None };
    if args.torch_client {
        return torch_client::run(args.python.as_deref(), args.rounds.max(1), args.busy);
    }
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
        let mut variants = vec![Variant::new("floor (raw syscalls, no manager)", None)];
        if wanted(Kind::Pipelined) {
            variants.push(Variant::new(
                "libshm, pipelined",
                Some(ManagerLink::launch(
                    &base.clone().ack_mode(AckMode::default()),
                )?),
            ));
        }
        if wanted(Kind::Socket) {
            variants.push(Variant::new(
                "libshm, pipelined, socket frames",
                Some(ManagerLink::launch(
                    &base.clone().ack_mode(AckMode::default()).journal(false),
                )?),
            ));
        }
        if wanted(Kind::Strict) {
            variants.push(Variant::new(
                "libshm, strict (waits for OK)",
                Some(ManagerLink::launch(
                    &base.clone().ack_mode(AckMode::Strict),
                )?),
            ));
        }
        if args.pool {
            let pooled = base
                .clone()
                .ack_mode(AckMode::default())
                .pool(Some(libshm::PoolSizes::Fixed(vec![(size, POOL_DEPTH)])));
            let mut variant = Variant::new(
                "libshm, pipelined, from a pool",
                Some(ManagerLink::launch(&pooled)?),
            );
            variant.pool_depth = Some(POOL_DEPTH);
            variants.push(variant);
        }
        for variant in &mut variants {
            run_cycles(variant, size, per_round.min(200), &prefix)?; // warm up
        }
        for round in 0..rounds {
            // Rotate who goes first, so no variant always follows the same one.
            for k in 0..variants.len() {
                let index = (round + k) % variants.len();
                let variant = &mut variants[index];
                let cpu = process_cpu();
                let took = run_cycles(variant, size, per_round, &prefix)?;
                variant.cpu += process_cpu().saturating_sub(cpu);
                variant.cycles += per_round;
                let per_op = took / u32::try_from(per_round).unwrap_or(u32::MAX);
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
            "  {:<34} {:>12} {:>12} {:>8} {:>12}",
            "variant", "median/op", "spread", "vs floor", "cpu/segment"
        )?;
        for variant in &variants {
            let m = median(&variant.samples);
            let (lo, hi) = spread(&variant.samples);
            let cpu = variant.cpu / u32::try_from(variant.cycles.max(1)).unwrap_or(u32::MAX);
            writeln!(
                out,
                "  {:<34} {:>12} {:>12} {:>8.2} {:>12}",
                variant.label,
                format_duration(m),
                format!("±{}", format_duration((hi - lo) / 2)),
                m.as_secs_f64() / floor_median.as_secs_f64(),
                format_duration(cpu)
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `count` create/touch/drop cycles; returns the time they took
/// (for a pooled variant: only the cycles, each batch from a full shelf).
fn run_cycles(
    variant: &Variant,
    size: usize,
    count: usize,
    prefix: &NamePrefix,
) -> Result<Duration, libshm::Error> {
    let cycle = |manager: &ManagerLink| -> Result<(), libshm::Error> {
        let segment = manager.create(size)?;
        segment.touch();
        drop(segment);
        Ok(())
    };
    let start = Instant::now();
    match (&variant.manager, variant.pool_depth) {
        (None, _) => {
            for _ in 0..count {
                floor::cycle(&floor::fresh_name(prefix)?, size)?;
            }
        }
        (Some(manager), None) => {
            for _ in 0..count {
                cycle(manager)?;
            }
        }
        (Some(manager), Some(depth)) => {
            // Untimed, but on this variant's CPU bill: the shelf is refilled
            // before each batch and after the last one.
            let refilled = || {
                let deadline = Instant::now() + Duration::from_secs(10);
                while manager.pooled(size) < depth && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(200));
                }
            };
            let mut timed = Duration::ZERO;
            let mut done = 0;
            while done < count {
                refilled();
                let batch = depth.min(count - done);
                let start = Instant::now();
                for _ in 0..batch {
                    cycle(manager)?;
                }
                timed += start.elapsed();
                done += batch;
            }
            refilled();
            return Ok(timed);
        }
    }
    Ok(start.elapsed())
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
