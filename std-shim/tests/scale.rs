//! A manager holding a great many names (issue 10, part 4): one client
//! registers them all on one connection (pipelined raw frames), beside it
//! short clients connect, register and disconnect, then the big client goes
//! and its names are reaped while a probe client keeps doing round trips.
//!
//! Targets, for 1 M names: at most 128 B of manager memory per live name
//! (resident set minus the idle one); a short client's connect + register +
//! disconnect under 1 ms (median) beside them; no probe round trip over 10 ms
//! while they are reaped; memory back under twice the idle figure after.
//!
//! The default run checks them at 229,000 names, in under ten seconds; the
//! memory per name there is close to that at 1 M (110.7 B against 115.4 B
//! when measured), but work that grows with the tables (a rehash, say) only
//! shows at full size: `cargo test --release -p libshm --test scale --
//! --ignored` runs the million (about 20 s, 120 MB). Timing bounds are the
//! targets for an optimised manager (`--release`); an unoptimised one is held
//! to ten times them (it does each step about ten times slower); memory bounds
//! are the same for both. The figures are printed (`--nocapture`);
//! `benches/benches/scale.rs` measures the same with criterion.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::measure::{LogFile, Probe, RoundTrips, cpu_time, status_kib};
use common::{Daemon, SHM_MANAGER, create_object, frame, run_id, shm_exists};

/// Issue 10's bound on memory per live name.
const BYTES_PER_NAME: f64 = 128.0;
/// Issue 10's bound on a short client's connect + register + disconnect.
const SHORT_CLIENT: Duration = Duration::from_millis(1);
/// Issue 10's bound on any other client's round trip while orphans are reaped.
const REAP_STALL: Duration = Duration::from_millis(10);
/// How much slower an unoptimised manager is allowed to be.
const SLOWDOWN: u32 = if cfg!(debug_assertions) { 10 } else { 1 };
/// Short clients timed per phase.
const SHORT_CLIENTS: usize = 300;
/// One name in this many exists in /dev/shm, as a real segment would.
const EXISTING_EVERY: usize = 1_000;

/// What one run measured.
#[derive(Debug)]
struct Figures {
    names: usize,
    idle_rss_kib: u64,
    full_rss_kib: u64,
    /// Once they are gone, another client still holding one name.
    after_rss_kib: u64,
    /// Once that one is released too.
    empty_rss_kib: u64,
    register_time: Duration,
    short_idle: RoundTrips,
    /// The probe on the idle manager: the machine's own noise.
    probe_idle: RoundTrips,
    short_beside: RoundTrips,
    probe_during_reap: RoundTrips,
    /// From the big client's disconnect to the last existing name unlinked.
    last_unlinked_after: Duration,
    /// From the disconnect until the manager's CPU went idle.
    busy_for: Duration,
    /// The probe's longest round trips while reaping: (began after the
    /// disconnect, took).
    worst_stalls: Vec<(Duration, Duration)>,
    reaped: Option<u64>,
    forgotten: Option<u64>,
}

impl Figures {
    fn bytes_per_name(&self) -> f64 {
        (self.full_rss_kib.saturating_sub(self.idle_rss_kib) * 1024) as f64 / self.names as f64
    }

    fn print(&self) {
        eprintln!(
            "scale, {} names held by one client (manager {}):\n  \
             memory: idle {} KiB, with the names {} KiB ({:.1} B per name), after they are gone {} KiB ({:.2} x idle; \
             another client still holds one name), with no name left {} KiB ({:.2} x idle)\n  \
             registering them took {:.2?} ({:.0}/s)\n  \
             short client (connect + register + disconnect), idle manager: median {:.3?}, p99 {:.3?}\n  \
             short client beside the names:                                 median {:.3?}, p99 {:.3?}\n  \
             reaping them: last existing name unlinked after {:.2?}, manager busy for {:.2?}; \
             reaped {:?}, forgotten {:?}\n  \
             probe on the idle manager: {}\n  \
             probe while reaping: {}; longest (began after the disconnect, took): {:.3?}",
            self.names,
            if cfg!(debug_assertions) {
                "unoptimised"
            } else {
                "release"
            },
            self.idle_rss_kib,
            self.full_rss_kib,
            self.bytes_per_name(),
            self.after_rss_kib,
            self.after_rss_kib as f64 / self.idle_rss_kib as f64,
            self.empty_rss_kib,
            self.empty_rss_kib as f64 / self.idle_rss_kib as f64,
            self.register_time,
            self.names as f64 / self.register_time.as_secs_f64(),
            self.short_idle.percentile(50.0),
            self.short_idle.percentile(99.0),
            self.short_beside.percentile(50.0),
            self.short_beside.percentile(99.0),
            self.last_unlinked_after,
            self.busy_for,
            self.reaped,
            self.forgotten,
            self.probe_idle,
            self.probe_during_reap,
            self.worst_stalls,
        );
    }

    fn assert_targets(&self) {
        let mut failed = Vec::new();
        if self.bytes_per_name() > BYTES_PER_NAME {
            failed.push(format!(
                "{:.1} B per live name (target {BYTES_PER_NAME})",
                self.bytes_per_name()
            ));
        }
        let short = self.short_beside.percentile(50.0);
        if short >= SHORT_CLIENT * SLOWDOWN {
            failed.push(format!(
                "a short client took {short:.3?} (median) beside the names (bound {:?})",
                SHORT_CLIENT * SLOWDOWN
            ));
        }
        // The machine's own noise (the probe's longest round trip on the
        // idle manager) is not the manager's doing.
        let stall = self.probe_during_reap.max();
        let bound = REAP_STALL * SLOWDOWN + self.probe_idle.max();
        if stall > bound {
            failed.push(format!(
                "a round trip took {stall:.3?} while orphans were reaped (bound {bound:.3?}: \
                 {:?} plus the longest on the idle manager)",
                REAP_STALL * SLOWDOWN
            ));
        }
        if self.after_rss_kib >= 2 * self.idle_rss_kib {
            failed.push(format!(
                "{} KiB resident after the names were gone (another client holding one name), \
                 idle was {} KiB",
                self.after_rss_kib, self.idle_rss_kib
            ));
        }
        if self.empty_rss_kib >= 2 * self.idle_rss_kib {
            failed.push(format!(
                "{} KiB resident with no name left, idle was {} KiB",
                self.empty_rss_kib, self.idle_rss_kib
            ));
        }
        assert!(failed.is_empty(), "{}", failed.join("\n"));
    }
}

/// Removes the names that exist from `/dev/shm` however the test ends.
struct Existing(Vec<PathBuf>);

impl Drop for Existing {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn scale_name(i: usize) -> String {
    format!("/torch_scale_{}_{i}", run_id())
}

/// One connection registering `count` names pipelined: a thread writes the
/// frames, this one reads the answers. Returns the connection, still open.
fn register_many(handle: &str, count: usize) -> UnixStream {
    let stream = UnixStream::connect(handle).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(960 * 68);
        for i in 0..count {
            batch.extend_from_slice(&frame(0, &scale_name(i)));
            if batch.len() == batch.capacity() || i + 1 == count {
                writer.write_all(&batch).unwrap();
                batch.clear();
            }
        }
    });
    let mut reader = stream.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = 2 * count;
    while left > 0 {
        let n = reader.read(&mut buf[..left.min(64 * 1024)]).unwrap();
        assert!(n > 0, "the manager closed the big client");
        assert!(
            buf[..n].iter().all(|b| b"OK".contains(b)),
            "the manager refused some of the names"
        );
        left -= n;
    }
    writing.join().unwrap();
    stream
}

/// Connect, register one name, disconnect: the whole life of a short client.
fn short_clients(handle: &str, tag: &str, count: usize) -> RoundTrips {
    let mut times = RoundTrips::default();
    for i in 0..count {
        let name = format!("/torch_scale_{}_{tag}_{i}", run_id());
        let start = Instant::now();
        let mut stream = UnixStream::connect(handle).unwrap();
        stream.write_all(&frame(0, &name)).unwrap();
        let mut reply = [0u8; 2];
        stream.read_exact(&mut reply).unwrap();
        drop(stream);
        times.push(start);
        assert_eq!(&reply, b"OK");
    }
    times
}

/// Waits until `pid` has used under 5% of a CPU over 300 ms; returns when
/// that quiet stretch began, measured from `since`.
fn busy_until_idle(pid: u32, since: Instant, limit: Duration) -> Duration {
    let window = Duration::from_millis(300);
    let mut samples: Vec<(Instant, Duration)> = vec![(Instant::now(), cpu_time(pid))];
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = (Instant::now(), cpu_time(pid));
        samples.push(now);
        if let Some(&(at, cpu)) = samples.iter().rev().find(|(at, _)| now.0 - *at >= window)
            && now.1 - cpu < window / 20
        {
            return at - since;
        }
        assert!(
            since.elapsed() < limit,
            "the manager was still busy after {limit:?}"
        );
    }
}

/// Runs take the machine one at a time: they measure time and memory.
fn exclusive() -> MutexGuard<'static, ()> {
    static MACHINE: Mutex<()> = Mutex::new(());
    MACHINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn measure(names: usize) -> Figures {
    let _machine = exclusive();
    let existing = Existing(
        (0..names)
            .step_by(EXISTING_EVERY)
            .chain([names - 1])
            .map(|i| {
                let name = scale_name(i);
                create_object(&name);
                PathBuf::from(format!("/dev/shm/{}", name.trim_start_matches('/')))
            })
            .collect(),
    );
    let log = LogFile::new("scale");
    let mut command = std::process::Command::new(SHM_MANAGER);
    command
        .args(["--reap-grace", "0", "--shutdown-timeout", "1s", "-v"])
        .stderr(log.stdio());
    let mut daemon = Daemon::spawn(&mut command);
    let pid = daemon.child.id();
    // A long-lived client holding a name throughout, as a trainer's main
    // process would.
    let mut keeper = daemon.connect();
    let keeper_name = scale_name(usize::MAX);
    keeper.register(&keeper_name);
    let short_idle = short_clients(&daemon.handle, "idle", SHORT_CLIENTS);
    let probe_idle = Probe::connect(&daemon.handle).sample(1_000, Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(1_500));
    let idle_rss_kib = status_kib(pid, "VmRSS");

    let start = Instant::now();
    let big = register_many(&daemon.handle, names);
    let register_time = start.elapsed();
    let full_rss_kib = status_kib(pid, "VmRSS");
    let short_beside = short_clients(&daemon.handle, "beside", SHORT_CLIENTS);

    let probe = Probe::connect(&daemon.handle).spawn(Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(200));
    let gone = Instant::now();
    drop(big);
    let limit = Duration::from_secs(120);
    for path in &existing.0 {
        while path.exists() {
            assert!(
                gone.elapsed() < limit,
                "{} was not reaped within {limit:?}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let last_unlinked_after = gone.elapsed();
    let busy_for = busy_until_idle(pid, gone, limit);
    let probe_during_reap = probe.finish();
    std::thread::sleep(Duration::from_secs(2));
    let after_rss_kib = status_kib(pid, "VmRSS");
    assert!(existing.0.iter().all(|p| !p.exists()));
    // The keeper lets go of its name too: the manager knows no name at all.
    keeper.release(&keeper_name);
    std::thread::sleep(Duration::from_millis(2_500));
    let empty_rss_kib = status_kib(pid, "VmRSS");

    keeper.register(&scale_name(usize::MAX - 1));
    drop(keeper);
    assert!(daemon.wait_exit(Duration::from_secs(20)).is_some());
    Figures {
        names,
        idle_rss_kib,
        full_rss_kib,
        after_rss_kib,
        empty_rss_kib,
        register_time,
        short_idle,
        probe_idle,
        short_beside,
        last_unlinked_after,
        busy_for,
        worst_stalls: probe_during_reap.worst(3, gone),
        probe_during_reap,
        reaped: log.final_stat("reaped"),
        forgotten: log.final_stat("forgotten"),
    }
}

#[test]
fn many_names_cost_little_memory_and_never_stall_other_clients() {
    let names = std::env::var("LIBSHM_SCALE_NAMES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(229_000);
    let figures = measure(names);
    figures.print();
    assert!(!shm_exists(&scale_name(names - 1)));
    figures.assert_targets();
}

#[test]
#[ignore = "a million names: cargo test --release -p libshm --test scale -- --ignored"]
fn a_million_names_cost_little_memory_and_never_stall_other_clients() {
    let figures = measure(1_000_000);
    figures.print();
    figures.assert_targets();
}
