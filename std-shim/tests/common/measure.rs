//! A running manager measured from outside: its CPU time and memory from
//! `/proc`, its log in a file, and a probe client that times its round trips.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{RawClient, frame, run_id, unique_name};

/// User plus system CPU time `pid` has used so far (clock-tick resolution,
/// 10 ms on most kernels).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields 14 and 15 (utime, stime), counted after the parenthesised name.
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = rustix::param::clock_ticks_per_second();
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS`, `RssAnon`, ...).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Descriptors `pid` has open.
pub fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// A manager's log, in a file removed when the test ends.
pub struct LogFile {
    pub path: PathBuf,
}

impl LogFile {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "libshm-test-{tag}-{}-{}.log",
            run_id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        File::create(&path).expect("create a log file");
        Self { path }
    }

    /// Where a manager writes its log.
    pub fn stdio(&self) -> Stdio {
        File::options()
            .append(true)
            .open(&self.path)
            .expect("open the log file")
            .into()
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }

    /// A counter from the `manager finished stats=Stats { .. }` line the
    /// manager logs at exit (with `-v`).
    pub fn final_stat(&self, counter: &str) -> Option<u64> {
        let text = self.text();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains("manager finished"))?;
        let after = line.split_once(&format!(" {counter}: "))?.1;
        after
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Round-trip times, for percentiles, and when each began.
#[derive(Clone, Debug, Default)]
pub struct RoundTrips(pub Vec<Duration>, pub Vec<Instant>);

impl RoundTrips {
    /// Records one round trip that began at `start` and ends now.
    pub fn push(&mut self, start: Instant) {
        self.0.push(start.elapsed());
        self.1.push(start);
    }

    /// The `count` longest, as (began this long after `since`, took).
    pub fn worst(&self, count: usize, since: Instant) -> Vec<(Duration, Duration)> {
        let mut all: Vec<_> = self
            .1
            .iter()
            .zip(&self.0)
            .map(|(&at, &took)| (at.saturating_duration_since(since), took))
            .collect();
        all.sort_by_key(|&(_, took)| std::cmp::Reverse(took));
        all.truncate(count);
        all
    }

    /// The `p`-th percentile (0 to 100), nearest rank.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    pub fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }

    /// How many took longer than `limit`.
    pub fn over(&self, limit: Duration) -> usize {
        self.0.iter().filter(|&&t| t > limit).count()
    }
}

impl fmt::Display for RoundTrips {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} round trips: median {:.3?}, p99 {:.3?}, max {:.3?}",
            self.0.len(),
            self.percentile(50.0),
            self.percentile(99.0),
            self.max()
        )
    }
}

/// A PyTorch-style client that registers one name, waits for `OK` and
/// releases it again, timing each registration's round trip.
pub struct Probe {
    client: RawClient,
    name: String,
}

impl Probe {
    pub fn connect(handle: &str) -> Self {
        let client = RawClient::connect(handle);
        client
            .stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            client,
            name: unique_name("probe"),
        }
    }

    /// One registration's round trip (the release after it has no answer),
    /// recorded in `trips`.
    pub fn round_trip_into(&mut self, trips: &mut RoundTrips) {
        let start = Instant::now();
        self.round_trip();
        trips.push(start);
    }

    /// One registration's round trip (the release after it has no answer).
    pub fn round_trip(&mut self) -> Duration {
        let start = Instant::now();
        self.client.send(&frame(0, &self.name));
        let mut reply = [0u8; 2];
        if let Err(err) = self.client.stream.read_exact(&mut reply) {
            panic!(
                "the probe got no answer after {:.3?}: {err}",
                start.elapsed()
            );
        }
        let took = start.elapsed();
        assert_eq!(&reply, b"OK", "the probe's registration");
        self.client.send(&frame(1, &self.name));
        took
    }

    /// `count` round trips, `pause` apart.
    pub fn sample(&mut self, count: usize, pause: Duration) -> RoundTrips {
        let mut trips = RoundTrips::default();
        for _ in 0..count {
            self.round_trip_into(&mut trips);
            std::thread::sleep(pause);
        }
        trips
    }

    /// Round trips, `pause` apart, on a thread of their own until stopped.
    pub fn spawn(mut self, pause: Duration) -> RunningProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut trips = RoundTrips::default();
                while !stop.load(Ordering::Relaxed) {
                    self.round_trip_into(&mut trips);
                    std::thread::sleep(pause);
                }
                trips
            })
        };
        RunningProbe { stop, thread }
    }
}

/// A probe on its own thread.
pub struct RunningProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<RoundTrips>,
}

impl RunningProbe {
    /// Stops it and returns what it measured.
    pub fn finish(self) -> RoundTrips {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the probe thread")
    }
}

/// Fails unless a probe client's round trips to the manager at `handle`
/// stay within 50 ms plus their idle maximum while `work` runs three times:
/// a report that walks every name (hostile rounds 1 and 7) must not hold the
/// other clients up. `what` names the work, and `beside` what the manager
/// holds, for the failure message.
#[allow(dead_code)]
pub fn assert_no_stall_while(handle: &str, what: &str, beside: &str, mut work: impl FnMut()) {
    let mut probe = Probe::connect(handle);
    let baseline = probe.sample(300, Duration::from_millis(1));
    let running = probe.spawn(Duration::from_millis(1));
    let started = Instant::now();
    for _ in 0..3 {
        work();
    }
    let took = started.elapsed() / 3;
    let during = running.finish();
    let bound = Duration::from_millis(50) + baseline.max();
    assert!(
        during.max() < bound,
        "while three {what} were made (each took {took:.0?}) beside {beside}, another \
         client waited up to {:.0?} for an answer (bound {bound:.0?}); during: {during}; \
         idle: {baseline}",
        during.max()
    );
}

/// Issue 10's bound on another client's round trip during a flood, at p99,
/// for the release manager; 20 times it for the unoptimised one a plain
/// `cargo test` builds (as in `flood.rs`).
pub const FLOOD_P99_BOUND: Duration = if cfg!(debug_assertions) {
    Duration::from_millis(100)
} else {
    Duration::from_millis(5)
};

/// Times a probe's round trips to the manager at `handle` beside a flood of
/// stray releases of `held` (a name another connection holds; PyTorch's
/// client sends strays): first `idle` round trips 1 ms apart on the quiet
/// manager, then the client `flooder` returns writes the strays as fast as it
/// can, 1,000 frames a write, and once it has run 300 ms the probe runs for
/// 2 s. Returns (idle, during, frames flooded).
pub fn probe_beside_strays(
    handle: &str,
    idle: usize,
    held: &str,
    flooder: impl FnOnce() -> RawClient,
) -> (RoundTrips, RoundTrips, u64) {
    let mut probe = Probe::connect(handle);
    let baseline = probe.sample(idle, Duration::from_millis(1));

    let stop_flood = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop_flood, flooded) = (Arc::clone(&stop_flood), Arc::clone(&flooded));
        let mut flooder = flooder();
        let burst: Vec<u8> = std::iter::repeat_n(frame(1, held), 1000)
            .flatten()
            .collect();
        flooder
            .stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        std::thread::spawn(move || {
            while !stop_flood.load(Ordering::Relaxed) {
                if flooder.stream.write_all(&burst).is_ok() {
                    flooded.fetch_add(1000, Ordering::Relaxed);
                }
            }
            flooder
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let running = probe.spawn(Duration::from_millis(1));
    std::thread::sleep(Duration::from_secs(2));
    stop_flood.store(true, Ordering::Relaxed);
    // The flooder stays connected until the probe has finished.
    let _flooder = flood.join().unwrap();
    let during = running.finish();
    (baseline, during, flooded.load(Ordering::Relaxed))
}
