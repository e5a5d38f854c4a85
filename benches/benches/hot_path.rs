//! The allocation hot path: create a segment, write one byte per page, drop
//! it. Beside it, in the same run, the raw syscall floor (the same calls with
//! no manager) and the same loop through PyTorch's manager when installed.
//! Prints medians and ratios to the floor at the end of each size.

use std::time::{Duration, Instant};

use criterion::Criterion;
use libshm::{AckMode, Config, ManagerLink, NamePrefix, floor};
use libshm_benches::{our_manager, print_ratios, record, torch_manager};

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
        let floor_id = format!("{label}/floor");
        group.bench_function("floor", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let name = floor::fresh_name(&prefix).expect("name");
                    floor::cycle(&name, size).expect("floor cycle");
                }
                let took = start.elapsed();
                record(&floor_id, took, iters);
                took
            })
        });
        for (name, manager) in &variants {
            let id = format!("{label}/{name}");
            group.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let segment = manager.create(size).expect("create");
                        segment.touch();
                        drop(segment);
                    }
                    let took = start.elapsed();
                    record(&id, took, iters);
                    took
                })
            });
            manager.settle().expect("settle");
        }
        group.finish();
        let rows: Vec<String> = variants
            .iter()
            .map(|(name, _)| format!("{label}/{name}"))
            .collect();
        let rows: Vec<&str> = std::iter::once(floor_id.as_str())
            .chain(rows.iter().map(String::as_str))
            .collect();
        print_ratios(&format!("hot path, {label}"), &floor_id, &rows);
    }
    criterion.final_summary();
}

fn launch(base: &Config, executable: std::path::PathBuf, mode: AckMode) -> ManagerLink {
    let config = base.clone().manager_executable(executable).ack_mode(mode);
    ManagerLink::launch(&config).expect("launch manager")
}
