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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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

/// Per-iteration times of each benchmark, as criterion's samples saw them.
static SAMPLES: Mutex<BTreeMap<String, Vec<Duration>>> = Mutex::new(BTreeMap::new());

/// Records one criterion sample (`total` for `iters` iterations) under `id`.
pub fn record(id: &str, total: Duration, iters: u64) {
    let per_iter = total / u32::try_from(iters.max(1)).unwrap_or(u32::MAX);
    let mut samples = SAMPLES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    samples.entry(id.to_owned()).or_default().push(per_iter);
}

/// The median per-iteration time recorded under `id`.
pub fn median(id: &str) -> Option<Duration> {
    let samples = SAMPLES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    median_of(samples.get(id)?)
}

/// The median of some durations.
pub fn median_of(values: &[Duration]) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied()
}

/// Prints `rows` (ids) as medians and ratios to `baseline`, under `title`.
pub fn print_ratios(title: &str, baseline: &str, rows: &[&str]) {
    let Some(base) = median(baseline) else { return };
    println!("\n{title} (medians; ratio to {baseline})");
    for id in rows {
        if let Some(m) = median(id) {
            println!(
                "  {id:<44} {:>12} {:>7.2}",
                format!("{m:.2?}"),
                m.as_secs_f64() / base.as_secs_f64()
            );
        }
    }
}
