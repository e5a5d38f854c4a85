//! Manager throughput: registrations (each followed by its release) per
//! second through one manager, from 1, 4 and 16 client processes, ours beside
//! PyTorch's in the same run. Clients are real processes with their own
//! connections; they are started before the clock starts.
//!
//! Criterion reports its statistics per manager; the table printed at the
//! end comes from interleaved rounds (the managers taking turns, the order
//! rotating), warm-up excluded. The table also has the ceiling:
//! `answer-only-manager`, which answers and keeps nothing, blocking and
//! spinning 200 us after each answer, so it shows how much of a gap is left
//! on the manager's side.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use libshm_benches::client::{BenchClient, PREFIX, run_if_client};
use libshm_benches::{Measure, interleaved, our_manager, torch_manager};
use libshm_core::client::AckMode;
use libshm_core::frame::Frame;
use libshm_core::handshake::ManagerHandle;
use libshm_core::name::SegmentName;
use libshm_unix::Launcher;

/// Registrations (each with its release) per interleaved round, in all: with
/// 4,000, sixteen clients made 250 each (about 40 ms), and a round measured
/// mostly how unevenly two CPUs started and finished them.
const PER_ROUND: u64 = 32_000;
const ROUNDS: usize = 7;

/// Runs `total` registrations spread over `clients` client processes and
/// returns how long they took: clients are connected before the clock starts
/// and exit after it stops, so it times registrations, not processes.
fn run(handle: &ManagerHandle, clients: u64, total: u64, mode: AckMode) -> Duration {
    let each = total.div_ceil(clients).max(1);
    let mut started: Vec<BenchClient> = (0..clients)
        .map(|_| BenchClient::spawn(handle, each, mode).expect("spawn client"))
        .collect();
    let start = Instant::now();
    for client in &mut started {
        client.go().expect("go");
    }
    for client in &mut started {
        client.done().expect("done");
    }
    let took = start.elapsed();
    for client in started {
        client.finish().expect("client");
    }
    took.mul_f64(total as f64 / (each * clients) as f64)
}

/// A connection that registered a name and stays open, so the manager never
/// runs out of clients (nor closes it for silence).
fn keep_alive(handle: &ManagerHandle) -> std::os::unix::net::UnixStream {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(handle.as_str()).expect("connect");
    let name = format!("{PREFIX}keeper_{}", std::process::id());
    let frame = Frame::register(
        std::process::id() as i32,
        name.parse::<SegmentName>().expect("keeper name"),
    );
    stream.write_all(&frame.encode()).expect("register");
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).expect("OK");
    stream
}

fn main() {
    run_if_client();
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let ceiling = Path::new(env!("CARGO_BIN_EXE_answer-only-manager"));
    let mut managers = vec![("shm-manager", our_manager(), vec![])];
    if let Some(torch) = torch_manager() {
        managers.push(("torch_shm_manager", torch, vec![]));
    }
    managers.push(("answer-only", ceiling.to_path_buf(), vec![]));
    managers.push((
        "answer-only spin",
        ceiling.to_path_buf(),
        vec!["--spin", "200"],
    ));
    let mut table = Vec::new();
    for (mode_name, mode) in [
        ("strict", AckMode::Strict),
        ("pipelined", AckMode::Pipelined { max_in_flight: 32 }),
    ] {
        let mut group = criterion.benchmark_group(format!("manager/{mode_name}"));
        for clients in [1u64, 4, 16] {
            group.throughput(Throughput::Elements(1));
            let launched: Vec<_> = managers
                .iter()
                .map(|(name, executable, args)| {
                    let launched = Launcher::new(executable)
                        .args(["--name-prefix", PREFIX])
                        .args(args)
                        .quiet(true)
                        .launch()
                        .expect("launch manager");
                    (*name, launched)
                })
                .collect();
            // Each manager serves the whole group: one is measured while the
            // other waits, longer than PyTorch's two idle seconds.
            let _keepers: Vec<_> = launched
                .iter()
                .map(|(_, launched)| keep_alive(&launched.handle))
                .collect();
            // Criterion's statistics for ours and PyTorch's; the ceilings are
            // in the table only.
            for (name, launched) in launched
                .iter()
                .filter(|(name, _)| !name.starts_with("answer"))
            {
                group.bench_with_input(
                    BenchmarkId::new(*name, format!("{clients} clients")),
                    &clients,
                    |b, &clients| {
                        b.iter_custom(|iters| run(&launched.handle, clients, iters, mode))
                    },
                );
            }
            let mut measures: Vec<Measure<'_>> = launched
                .iter()
                .map(|(_, launched)| {
                    let handle = launched.handle;
                    Box::new(move |iters| run(&handle, clients, iters, mode)) as Measure<'_>
                })
                .collect();
            let medians = interleaved(ROUNDS, PER_ROUND, &mut measures);
            for ((name, _), median) in launched.iter().zip(medians) {
                table.push((mode_name, clients, *name, 1.0 / median.as_secs_f64()));
            }
        }
        group.finish();
    }
    println!(
        "\nmanager throughput (medians of interleaved rounds; registrations per second, each followed by its release)"
    );
    for (mode, clients, name, rate) in &table {
        let ours = table
            .iter()
            .find(|(m, c, n, _)| m == mode && c == clients && *n == "shm-manager")
            .map_or(f64::NAN, |row| row.3);
        println!(
            "  {mode:<10} {clients:>2} clients  {name:<18} {rate:>12.0}/s  (ours {:.2}x this)",
            ours / rate
        );
    }
    criterion.final_summary();
}
