//! The manager at scale (issue 10, part 4), against a real release
//! `shm-manager`: one client holds 1 M names (`LIBSHM_SCALE_NAMES` sets
//! another count) on one connection, and
//! - memory per live name: the manager's resident set with the names, minus
//!   its idle one, per name;
//! - a short client's connect + register + disconnect beside them (criterion),
//!   against the same on the idle manager (the baseline, same run);
//! - reaping them all once their client disconnects (one name in 1,000 exists
//!   in /dev/shm, as a segment would; the rest were never created): how long
//!   until the last is unlinked and the manager goes idle, and a probe
//!   client's round trips meanwhile (the longest is the stall), three times;
//! - memory once they are gone, with another client still holding one name
//!   and with no name left, against idle.
//!
//! `cargo build --release -p libshm --bins && cargo bench -p libshm-benches --bench scale`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use libshm_benches::scale::{
    Probe, cpu_ticks, hold_many, percentile, register_frame, short_client, status_kib,
};
use libshm_benches::{our_manager, stop_manager};
use libshm_unix::Launcher;

/// The names clients register here; the manager accepts only these.
const PREFIX: &str = "/benchscale_";
/// One name in this many exists in /dev/shm.
const EXISTING_EVERY: usize = 1_000;
/// Times the names are registered and reaped.
const REAP_ROUNDS: usize = 3;

fn main() {
    let names: usize = std::env::var("LIBSHM_SCALE_NAMES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let launched = Launcher::new(our_manager())
        .args(["--name-prefix", PREFIX, "--reap-grace", "0"])
        .quiet(true)
        .launch()
        .expect("launch shm-manager");
    let handle = launched.handle.to_string();
    let pid = launched.pid;

    // A long-lived client holding one name throughout, as a trainer's main
    // process would; it also keeps the manager from shutting down.
    let mut keeper = std::os::unix::net::UnixStream::connect(&handle).expect("connect");
    register_and_wait(&mut keeper, &format!("{PREFIX}keeper"));
    std::thread::sleep(Duration::from_secs(1));
    let idle_kib = status_kib(pid, "VmRSS");

    let mut group = criterion.benchmark_group("scale/short client");
    let short = |group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
                 id: &str,
                 tag: &str| {
        let mut each = Vec::new();
        let mut next = 0u64;
        group.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    next += 1;
                    each.push(short_client(
                        &handle,
                        &format!("{PREFIX}short_{tag}_{next}"),
                    ));
                }
                start.elapsed()
            })
        });
        each
    };
    let idle_short = short(&mut group, "idle manager", "idle");

    let mut existing = Some(Existing::create(names));
    let start = Instant::now();
    let mut big = Some(hold_many(&handle, names, name_of));
    let register_time = start.elapsed();
    let full_kib = status_kib(pid, "VmRSS");
    let full_anon_kib = status_kib(pid, "RssAnon");
    let beside_short = short(&mut group, &format!("beside {names} names"), "beside");
    group.finish();

    let mut rounds = Vec::new();
    for round in 0..REAP_ROUNDS {
        if round > 0 {
            existing = Some(Existing::create(names));
            big = Some(hold_many(&handle, names, name_of));
        }
        let probe = Probe::start(
            &handle,
            &format!("{PREFIX}probe"),
            Duration::from_micros(200),
        );
        std::thread::sleep(Duration::from_millis(100));
        let gone = Instant::now();
        drop(big.take());
        if let Some(existing) = existing.take() {
            existing.wait_gone();
        }
        let last_unlink = gone.elapsed();
        let busy = busy_until_idle(pid, gone);
        let trips = probe.finish();
        rounds.push(Reaping::new(last_unlink, busy, &trips, gone));
    }
    std::thread::sleep(Duration::from_secs(2));
    let after_kib = status_kib(pid, "VmRSS");
    // The keeper lets go of its name: the manager knows no name at all.
    release(&mut keeper, &format!("{PREFIX}keeper"));
    std::thread::sleep(Duration::from_millis(2_500));
    let empty_kib = status_kib(pid, "VmRSS");
    drop(keeper);
    stop_manager(&launched);

    let per_name = (full_kib.saturating_sub(idle_kib) * 1024) as f64 / names as f64;
    let (idle_median, idle_p99) = (percentile(&idle_short, 50.0), percentile(&idle_short, 99.0));
    let (beside_median, beside_p99) = (
        percentile(&beside_short, 50.0),
        percentile(&beside_short, 99.0),
    );
    println!(
        "\nscale: {names} names held by one client, release shm-manager \
         (cargo bench -p libshm-benches --bench scale)"
    );
    println!(
        "  memory per live name {per_name:.1} B (VmRSS {idle_kib} KiB idle, {full_kib} KiB \
         with the names, RssAnon {full_anon_kib} KiB; registered in {register_time:.2?})   \
         issue 10: <= 128 B"
    );
    println!(
        "  short client: connect + register + disconnect (median, p99, ratio of medians to idle)"
    );
    println!(
        "    {:<26} {:>10.1?} {:>10.1?}",
        "idle manager (baseline)", idle_median, idle_p99
    );
    println!(
        "    {:<26} {:>10.1?} {:>10.1?} {:>6.2}   issue 10: < 1 ms",
        format!("beside {names} names"),
        beside_median,
        beside_p99,
        beside_median.as_secs_f64() / idle_median.as_secs_f64()
    );
    println!(
        "  reaping {names} orphans once their client disconnects (issue 10: no other client \
         blocked > 10 ms)"
    );
    for (round, reaping) in rounds.iter().enumerate() {
        println!("    round {}: {reaping}", round + 1);
    }
    println!(
        "  memory once they are gone: {after_kib} KiB ({:.2} x idle) while another client holds \
         one name; {empty_kib} KiB ({:.2} x idle) with no name left   issue 10: < 2 x idle",
        after_kib as f64 / idle_kib as f64,
        empty_kib as f64 / idle_kib as f64
    );
    criterion.final_summary();
}

fn name_of(i: usize) -> String {
    format!("{PREFIX}{i}")
}

fn register_and_wait(stream: &mut std::os::unix::net::UnixStream, name: &str) {
    use std::io::{Read, Write};
    stream.write_all(&register_frame(name)).expect("register");
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).expect("answer");
    assert_eq!(&reply, b"OK");
}

fn release(stream: &mut std::os::unix::net::UnixStream, name: &str) {
    use std::io::Write;
    let mut frame = register_frame(name);
    frame[4] = 1;
    stream.write_all(&frame).expect("release");
}

/// One reaping of all the names.
struct Reaping {
    last_unlink: Duration,
    busy: Duration,
    trips: usize,
    p99: Duration,
    /// The longest round trips: (began after the disconnect, took).
    worst: Vec<(Duration, Duration)>,
}

impl Reaping {
    fn new(
        last_unlink: Duration,
        busy: Duration,
        trips: &[(Instant, Duration)],
        since: Instant,
    ) -> Self {
        let durations: Vec<Duration> = trips.iter().map(|&(_, took)| took).collect();
        let mut worst: Vec<(Duration, Duration)> = trips
            .iter()
            .map(|&(at, took)| (at.saturating_duration_since(since), took))
            .collect();
        worst.sort_by_key(|&(_, took)| std::cmp::Reverse(took));
        worst.truncate(3);
        Self {
            last_unlink,
            busy,
            trips: trips.len(),
            p99: percentile(&durations, 99.0),
            worst,
        }
    }
}

impl std::fmt::Display for Reaping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "last unlink after {:.2?}, manager busy {:.2?}; probe: {} round trips, p99 {:.2?}, \
             longest {:.2?}",
            self.last_unlink,
            self.busy,
            self.trips,
            self.p99,
            self.worst
                .first()
                .map(|&(_, took)| took)
                .unwrap_or_default()
        )?;
        let at: Vec<String> = self
            .worst
            .iter()
            .map(|(at, took)| format!("{took:.1?} at {at:.2?}"))
            .collect();
        write!(f, " ({})", at.join(", "))
    }
}

/// The names that exist in /dev/shm (zero-filled, refcount 0, as a segment
/// whose holders are gone), removed on drop whatever happens.
struct Existing(Vec<PathBuf>);

impl Existing {
    fn create(names: usize) -> Self {
        let paths: Vec<PathBuf> = (0..names)
            .step_by(EXISTING_EVERY)
            .chain([names - 1])
            .map(|i| PathBuf::from(format!("/dev/shm/{}", &name_of(i)[1..])))
            .collect();
        for path in &paths {
            std::fs::write(path, [0u8; 64]).expect("create a segment in /dev/shm");
        }
        Self(paths)
    }

    fn wait_gone(&self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        for path in &self.0 {
            while path.exists() {
                assert!(Instant::now() < deadline, "{} never reaped", path.display());
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

impl Drop for Existing {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Waits until `pid` has used under 5% of a CPU over 300 ms; returns when
/// that quiet stretch began, after `since`.
fn busy_until_idle(pid: u32, since: Instant) -> Duration {
    let per_second = rustix::param::clock_ticks_per_second();
    let window = Duration::from_millis(300);
    let quiet_ticks = per_second * 15 / 1000; // 5% of the window
    let mut samples = vec![(Instant::now(), cpu_ticks(pid))];
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = (Instant::now(), cpu_ticks(pid));
        samples.push(now);
        if let Some(&(at, ticks)) = samples.iter().rev().find(|(at, _)| now.0 - *at >= window)
            && now.1 - ticks <= quiet_ticks
        {
            return at - since;
        }
        assert!(
            since.elapsed() < Duration::from_secs(300),
            "busy for 5 minutes"
        );
    }
}
