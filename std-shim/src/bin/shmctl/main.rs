//! `shmctl`: the libshm-rs command line.
//!
//! - `demo`: the end-to-end tour (manager, segments, workers, a SIGKILL, the cleanup).
//! - `create` / `open`: make or open segments and hold them, for debugging,
//!   scripting and interop with PyTorch.
//! - `ls` / `gc`: what is in `/dev/shm` and who uses it; removing what was leaked.
//!   `ls --managers`: live managers and their clients; `why`: one segment's story.
//! - `torch install | restore | status`: making PyTorch run our manager.
//! - `doctor`: the usual causes of shared-memory failures, each with its fix.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod doctor;
#[path = "../../error_chain.rs"]
mod error_chain;
mod hold;
mod inspect;
mod json;
#[path = "../shared/logging.rs"]
mod logging;
#[allow(
    dead_code,
    reason = "shared with shm-manager, which writes what this binary reads"
)]
#[path = "../shared/manager_identity.rs"]
mod manager_identity;
mod managers;
mod stress;
mod torch;
#[allow(dead_code, reason = "shared with shm-manager, which uses the rest")]
#[path = "../shared/units.rs"]
mod units;
mod unix_sockets;
mod why;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Shared-memory segments and managers, PyTorch-compatible"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// More logging on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the demo: a manager, shared segments, worker processes, one of
    /// them killed mid-work, and proof that nothing is left behind.
    Demo(demo::Args),
    /// Measure the allocation hot path against the raw syscall floor.
    Bench(bench::Args),
    /// Create segments and print `handle=… name=… size=… refcount=…` per segment.
    Create(hold::CreateArgs),
    /// Open a segment another process shared and print what it holds.
    Open(hold::OpenArgs),
    /// List segments in /dev/shm with their refcount, creator, users and
    /// status (in use, orphaned, leaked, unknown).
    Ls(inspect::LsArgs),
    /// Remove leaked segments (creator dead, nobody maps or holds them) that
    /// you own. Lists what it would remove unless given --yes.
    Gc(inspect::GcArgs),
    /// Check what breaks shared memory most often: /dev/shm, leaks, ulimit -n,
    /// TMPDIR, RemoveIPC, torch's manager, live managers. Exit status 0
    /// healthy, 1 warnings, 2 errors.
    Doctor(doctor::Args),
    /// Make PyTorch run our manager (install), put its own back (restore),
    /// or see which one it runs (status).
    Torch(torch::Args),
    /// Tell a segment's story: what /dev/shm shows of it, and what live
    /// managers remember (who registered and released it, whose death left
    /// it, whether it waited in transit, who reaped it and why).
    Why(why::Args),
    /// One of the demo's worker processes.
    #[command(hide = true)]
    DemoWorker(demo::WorkerArgs),
    /// One of the stress test's worker processes.
    #[command(hide = true)]
    StressWorker(stress::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    logging::to_stderr(level);
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Create(args) => hold::create(&args),
        Command::Open(args) => hold::open(&args),
        Command::Ls(args) => inspect::ls(&args),
        Command::Why(args) => why::run(&args),
        Command::Gc(args) => inspect::gc(&args),
        Command::Torch(args) => torch::run(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::DemoWorker(args) => demo::worker(&args),
        Command::StressWorker(args) => stress::worker(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("shmctl: {err}");
            let mut source = std::error::Error::source(err.as_ref());
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// What a subcommand returns.
type Outcome = Result<ExitCode, Box<dyn std::error::Error>>;
