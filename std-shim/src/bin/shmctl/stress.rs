//! `shmctl stress-worker` (hidden): one of the stress test's worker processes.
//!
//! Forever, at random: create a segment and publish its name on a board (a
//! directory), open a name another worker published, or drop a segment it
//! holds. Each step is printed (`create`, `open`, `close` and the name) as it
//! happens, so the test knows what every worker held when it killed it.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::units::parse_size;
use libshm::{Error, ManagerHandle, ManagerLink, SegmentName, SharedSegment};

use crate::Outcome;

/// Arguments of `shmctl stress-worker`.
#[derive(clap::Args, Debug)]
pub(crate) struct WorkerArgs {
    #[arg(long)]
    manager: ManagerHandle,
    /// Directory where workers publish the names they create.
    #[arg(long)]
    board: PathBuf,
    #[arg(long, value_parser = parse_size, default_value = "4096")]
    size: usize,
    #[arg(long)]
    seed: u64,
}

pub(crate) fn worker(args: &WorkerArgs) -> Outcome {
    let manager = ManagerLink::connect(&args.manager)?;
    let mut rng = XorShift(args.seed | 1);
    let mut held: Vec<SharedSegment> = Vec::new();
    let mut out = std::io::stdout().lock();
    loop {
        match rng.below(10) {
            0..=3 => {
                let segment = manager.create(args.size)?;
                segment.fill(rng.below(256) as u8);
                writeln!(out, "create {}", segment.name())?;
                out.flush()?;
                std::fs::write(args.board.join(&segment.name().as_str()[1..]), b"")?;
                held.push(segment);
            }
            4..=6 => {
                let published: Vec<String> = std::fs::read_dir(&args.board)?
                    .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                    .collect();
                if published.is_empty() {
                    continue;
                }
                let name = format!("/{}", published[rng.below(published.len() as u64) as usize]);
                let name: SegmentName = name.parse()?;
                match manager.open(&name, args.size) {
                    Ok(segment) => {
                        writeln!(out, "open {name}")?;
                        out.flush()?;
                        held.push(segment);
                    }
                    // Gone already, or being torn down: a normal outcome here.
                    Err(Error::NotFound { .. } | Error::Refcount { .. } | Error::Size { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            _ if held.is_empty() => {}
            _ => {
                let segment = held.swap_remove(rng.below(held.len() as u64) as usize);
                writeln!(out, "close {}", segment.name())?;
                out.flush()?;
                drop(segment);
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(3_000)));
        if held.len() > 64 {
            held.truncate(32);
        }
    }
}

/// A small deterministic generator; quality is not the point, spread is.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}
