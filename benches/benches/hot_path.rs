//! The allocation hot path: create a segment, write one byte per page, drop
//! it. Beside it, in the same run, the raw syscall floor (the same calls with
//! no manager) and the same loop through PyTorch's manager when installed.
//! Criterion reports its statistics per variant; the figures printed at the
//! end of each size (medians, ratios to the floor) come from interleaved
//! rounds in rotating order after it, warm-up excluded.

use std::time::{Duration, Instant};

use criterion::Criterion;
use libshm::{AckMode, Config, ManagerLink, NamePrefix, floor};
use libshm_benches::{Measure, interleaved, our_manager, print_ratios, torch_manager};

const SIZES: [(usize, &str); 4] = [
    (4 << 10, "4KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
    (16 << 20, "16MiB"),
];

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let prefix = NamePrefix::new(b"/benchhot_").expect("valid prefix");
    let base = Config::default().name_prefix(prefix).quiet_manager(true);
    let mut variants = vec![
        (
            "libshm pipelined",
            launch(&base, our_manager(), AckMode::default()),
        ),
        (
            "libshm strict",
            launch(&base, our_manager(), AckMode::Strict),
        ),
    ];
    if let Some(torch) = torch_manager() {
        variants.push((
            "torch_shm_manager, our client pipelined",
            launch(&base, torch.clone(), AckMode::default()),
        ));
        variants.push((
            "torch_shm_manager, our client strict",
            launch(&base, torch, AckMode::Strict),
        ));
    } else {
        eprintln!("PyTorch peer not installed: measuring our manager only");
    }

    for (size, label) in SIZES {
        let mut group = criterion.benchmark_group(format!("hot_path/{label}"));
        if size >= 1 << 20 {
            group.sample_size(10);
        }
        group.bench_function("floor", |b| {
            b.iter_custom(|iters| floor_cycles(&prefix, size, iters))
        });
        for (name, manager) in &variants {
            group.bench_function(*name, |b| {
                b.iter_custom(|iters| manager_cycles(manager, size, iters))
            });
            manager.settle().expect("settle");
        }
        group.finish();

        let iters = (2_000 * 4096 / size).max(4) as u64;
        let mut measures: Vec<Measure<'_>> =
            vec![Box::new(|iters| floor_cycles(&prefix, size, iters))];
        for (_, manager) in &variants {
            measures.push(Box::new(move |iters| manager_cycles(manager, size, iters)));
        }
        let medians = interleaved(15, iters, &mut measures);
        drop(measures);
        let labels = std::iter::once("floor").chain(variants.iter().map(|(name, _)| *name));
        let rows: Vec<(String, Duration)> = labels.map(str::to_owned).zip(medians).collect();
        print_ratios(&format!("hot path, {label}"), &rows);
        for (_, manager) in &variants {
            manager.settle().expect("settle");
        }
    }
    criterion.final_summary();
}

fn floor_cycles(prefix: &NamePrefix, size: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let name = floor::fresh_name(prefix).expect("name");
        floor::cycle(&name, size).expect("floor cycle");
    }
    start.elapsed()
}

fn manager_cycles(manager: &ManagerLink, size: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let segment = manager.create(size).expect("create");
        segment.touch();
        drop(segment);
    }
    start.elapsed()
}

fn launch(base: &Config, executable: std::path::PathBuf, mode: AckMode) -> ManagerLink {
    let config = base.clone().manager_executable(executable).ack_mode(mode);
    ManagerLink::launch(&config).expect("launch manager")
}
