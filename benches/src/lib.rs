//! Support for libshm-rs's benchmarks: finding the managers to measure,
//! collecting per-sample medians, and printing ratios to a baseline measured
//! in the same run.
//!
//! The benchmarks need the release binaries (`cargo build --release -p libshm
//! --bins`); PyTorch's `torch_shm_manager` is measured too when the peer from
//! `../shared/peers/torch-peer.sh` is installed (`LIBSHM_TORCH_DIR`, or its
//! default venv).
//!
//! What it does not do: judge. The numbers are printed; the targets live in
//! the issue tracker and the closing notes.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod client;
pub mod scale;

/// Our `shm-manager`: `LIBSHM_MANAGER`, else beside the bench executable's
/// target directory. Panics with the command to run when it is missing.
pub fn our_manager() -> PathBuf {
    if let Some(path) = std::env::var_os("LIBSHM_MANAGER") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .map(|dir| dir.join("shm-manager"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("shm-manager not found: run `cargo build --release -p libshm --bins` first")
        })
}

/// PyTorch's `torch_shm_manager`, when the peer is installed.
pub fn torch_manager() -> Option<PathBuf> {
    let from_env = std::env::var_os("LIBSHM_TORCH_DIR")
        .map(|dir| Path::new(&dir).join("bin/torch_shm_manager"));
    let from_venv = || {
        let lib = Path::new(&std::env::var_os("HOME")?).join(".cache/torch-peer-venv/lib");
        std::fs::read_dir(lib).ok()?.find_map(|entry| {
            let path = entry
                .ok()?
                .path()
                .join("site-packages/torch/bin/torch_shm_manager");
            path.is_file().then_some(path)
        })
    };
    from_env.filter(|p| p.is_file()).or_else(from_venv)
}

/// Stops a launched manager at once (SIGKILL) and removes its socket and
/// directory, which a killed manager leaves behind.
pub fn stop_manager(launched: &libshm_unix::Launched) {
    if let Some(pid) = rustix::process::Pid::from_raw(launched.pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    let socket = Path::new(launched.handle.as_str());
    let _ = std::fs::remove_file(socket);
    if let Some(dir) = socket.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// The median of some durations.
pub fn median_of(values: &[Duration]) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied()
}

/// A variant measured in [`interleaved`] rounds: runs `iters` iterations
/// and returns how long they took.
pub type Measure<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// The figures the benches print: every variant runs `iters` iterations per
/// round, `rounds` times, in an order that rotates each round (so drift and
/// a noisy neighbour hit all alike, and no variant always follows the same
/// one), after one untimed warm-up round. Returns each variant's median
/// time per iteration, in the order given. Criterion's own statistics are
/// separate; these are the medians and ratios the closing notes quote.
pub fn interleaved(rounds: usize, iters: u64, variants: &mut [Measure<'_>]) -> Vec<Duration> {
    for measure in variants.iter_mut() {
        measure(iters.div_ceil(4).max(1));
    }
    let mut samples = vec![Vec::with_capacity(rounds); variants.len()];
    for round in 0..rounds {
        for k in 0..variants.len() {
            let index = (round + k) % variants.len();
            let took = variants[index](iters);
            samples[index].push(took / u32::try_from(iters.max(1)).unwrap_or(u32::MAX));
        }
    }
    samples
        .iter()
        .map(|s| median_of(s).unwrap_or_default())
        .collect()
}

/// Prints `rows` (label, median) as medians and ratios to the first row.
pub fn print_ratios(title: &str, rows: &[(String, Duration)]) {
    let Some((baseline, base)) = rows.first() else {
        return;
    };
    println!("\n{title} (medians of interleaved rounds; ratio to {baseline})");
    for (label, median) in rows {
        println!(
            "  {label:<44} {:>12} {:>7.2}",
            format!("{median:.2?}"),
            median.as_secs_f64() / base.as_secs_f64()
        );
    }
}
