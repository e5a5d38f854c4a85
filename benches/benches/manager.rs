//! Manager throughput: registrations (each followed by its release) per
//! second through one manager, from 1, 4 and 16 client processes, ours beside
//! PyTorch's in the same run. Clients are real processes with their own
//! connections; they are started before the clock starts.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use libshm_benches::client::{BenchClient, PREFIX, run_if_client};
use libshm_benches::{median_of, our_manager, torch_manager};
use libshm_core::client::AckMode;
use libshm_unix::Launcher;

fn main() {
    run_if_client();
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut managers = vec![("shm-manager", our_manager())];
    if let Some(torch) = torch_manager() {
        managers.push(("torch_shm_manager", torch));
    }
    let mut table = Vec::new();
    for (mode_name, mode) in [
        ("strict", AckMode::Strict),
        ("pipelined", AckMode::Pipelined { max_in_flight: 32 }),
    ] {
        let mut group = criterion.benchmark_group(format!("manager/{mode_name}"));
        for clients in [1u64, 4, 16] {
            group.throughput(Throughput::Elements(1));
            for (name, executable) in &managers {
                let launched = Launcher::new(executable)
                    .args(["--name-prefix", PREFIX])
                    .quiet(true)
                    .launch()
                    .expect("launch manager");
                let mut per_registration = Vec::new();
                group.bench_with_input(
                    BenchmarkId::new(*name, format!("{clients} clients")),
                    &clients,
                    |b, &clients| {
                        b.iter_custom(|iters| {
                            let each = iters.div_ceil(clients).max(1);
                            let mut started: Vec<BenchClient> = (0..clients)
                                .map(|_| {
                                    BenchClient::spawn(&launched.handle, each, mode)
                                        .expect("spawn client")
                                })
                                .collect();
                            let start = Instant::now();
                            for client in &mut started {
                                client.go().expect("go");
                            }
                            for client in started {
                                client.finish().expect("client");
                            }
                            let took = start.elapsed();
                            per_registration
                                .push(took / u32::try_from(each * clients).unwrap_or(u32::MAX));
                            took.mul_f64(iters as f64 / (each * clients) as f64)
                        })
                    },
                );
                if let Some(median) = median_of(&per_registration) {
                    table.push((mode_name, clients, *name, 1.0 / median.as_secs_f64()));
                }
            }
        }
        group.finish();
    }
    println!(
        "\nmanager throughput (median registrations per second; each followed by its release)"
    );
    for (mode, clients, name, rate) in &table {
        println!("  {mode:<10} {clients:>2} clients  {name:<18} {rate:>12.0}/s");
    }
    criterion.final_summary();
}
