//! `shmctl doctor`: one screen of checks for what breaks PyTorch's shared
//! memory most often, each with what it found and the exact fix.
//!
//! Checks: `/dev/shm` size and use (and the container flag that sizes it),
//! leaked segments, `ulimit -n` against the file_descriptor strategy,
//! `TMPDIR` against the socket path limit, logind's `RemoveIPC`, which
//! manager torch will run, and live managers. Exit status 0 when healthy, 1
//! with warnings, 2 with errors; `--json` prints the same as one object.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::Outcome;
use crate::inspect::resolve_prefix;

mod container;
mod fd_limit;
mod finding;
mod leaks;
mod live_managers;
mod logind;
mod shm_space;
mod socket_dir;
mod torch_manager;

/// Arguments of `shmctl doctor`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Print one JSON object: status, exit_code, and checks (id, title,
    /// status, found, fix, details).
    #[arg(long)]
    json: bool,
    /// The python whose torch to check [default: the first python3 or python on PATH].
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Segment names to look for leaks under [default: $LIBSHM_NAME_PREFIX, else /torch_].
    #[arg(long)]
    prefix: Option<String>,
}

pub(crate) fn run(args: &Args) -> Outcome {
    let prefix = resolve_prefix(args.prefix.as_deref())?;
    // TMPDIR's verdict depends on which manager torch runs.
    let (torch, runs_ours) = torch_manager::check(args.python.as_deref());
    let findings = vec![
        shm_space::check(),
        leaks::check(&prefix),
        fd_limit::check(),
        socket_dir::check(runs_ours),
        logind::check(),
        torch,
        live_managers::check(),
    ];
    let text = if args.json {
        finding::render_json(&findings)
    } else {
        finding::render_text(&findings)
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::from(finding::overall(&findings).exit_code()))
}
