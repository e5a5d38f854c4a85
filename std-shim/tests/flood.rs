//! One client cannot stall everyone: beside a hostile client, another
//! client's round trip stays short. The hostile clients here are real
//! connections to a real `shm-manager`: one refills a 65,536-slot
//! registration journal as fast as it can and rings the doorbell after each
//! refill, one floods its socket with frames, one never reads its replies.
//! A probe (PyTorch's strict client, on a raw socket) times its
//! registrations before (the baseline, same run) and during each flood.
//!
//! The target is issue 10's: p99 under 5 ms during the flood, for the
//! optimised manager: `cargo test --release -p libshm --test flood`, plus
//! the probe's p99 on the idle manager (the machine's own noise). A plain
//! `cargo test` runs the unoptimised manager, which handles a frame about 13
//! times slower (0.6 M against 8 M frames/s here) while the work per poll
//! round is bounded in frames, so there the bound is 20 times wider: it
//! still catches a client starved for good. The figures are printed
//! (`--nocapture`). These tests measure latency, so they take the machine
//! one at a time (a lock) and run for a few seconds each.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::journal_client::JournalClient;
use common::measure::{LogFile, Probe, RoundTrips};
use common::{Cleanup, Daemon, Sleeper, create_object, shm_exists, unique_name, wait_until};
use libshm::SegmentName;
use libshm::protocol::frame::{FRAME_LEN, Frame};
use libshm::protocol::journal::{self, JournalMemory};

/// Issue 10's bound on another client's round trip during a flood, at p99.
const P99_TARGET: Duration = Duration::from_millis(5);
/// The bound this build is held to: the target, or for an unoptimised
/// manager 20 times the target (see the module doc).
const P99_BOUND: Duration = if cfg!(debug_assertions) {
    Duration::from_millis(100)
} else {
    P99_TARGET
};
/// How long each flood is probed.
const FLOOD_FOR: Duration = Duration::from_secs(2);
/// Between two probe round trips.
const PROBE_PAUSE: Duration = Duration::from_millis(1);

/// Latency tests take the machine one at a time.
fn exclusive() -> MutexGuard<'static, ()> {
    static MACHINE: Mutex<()> = Mutex::new(());
    MACHINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Distinct names the flooders cycle through, so the manager's tables stay
/// small and only the frame rate counts.
fn flood_names(tag: &str, count: usize) -> Vec<SegmentName> {
    (0..count)
        .map(|_| SegmentName::new(unique_name(tag).as_bytes()).unwrap())
        .collect()
}

/// Register and release frames for `names`, alternating, from `pid`.
fn frame_cycle(pid: i32, names: &[SegmentName]) -> Vec<Frame> {
    names
        .iter()
        .flat_map(|&name| [Frame::register(pid, name), Frame::release(pid, name)])
        .collect()
}

/// A flooding client on its own thread, stopped on drop.
struct Flood {
    stop: Arc<AtomicBool>,
    frames: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    fn spawn(run: impl FnOnce(&AtomicBool, &AtomicU64) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, frames) = (Arc::clone(&stop), Arc::clone(&frames));
            std::thread::spawn(move || run(&stop, &frames))
        };
        Self {
            stop,
            frames,
            thread: Some(thread),
        }
    }

    /// Stops it; returns the frames it sent.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the flooding thread");
        }
        self.frames.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How a journal flooder treats the doorbell's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doorbell {
    /// Refill as soon as there is room; answers are read without waiting
    /// (so it is never cut off for not reading them). Hostile.
    Ignore,
    /// Wait for the answer before refilling, as our client does when its
    /// ring is full. Merely busy.
    Wait,
}

/// Fills a journal of the largest size a manager accepts, rings the
/// doorbell, and fills it again, forever.
fn journal_flood(handle: &str, doorbell_answer: Doorbell) -> Flood {
    let JournalClient { mut stream, memory } = JournalClient::attach(handle, journal::MAX_CAPACITY);
    let pid = std::process::id() as i32;
    let frames: Vec<_> = frame_cycle(pid, &flood_names("jflood", 4096))
        .iter()
        .map(Frame::to_raw)
        .collect();
    let doorbell = Frame::register(pid, journal::DOORBELL).encode();
    Flood::spawn(move |stop, sent| {
        let journal = memory.journal();
        let mut next = 0usize;
        let mut sink = [0u8; 4096];
        let mut fill = || {
            let mut appended = 0;
            while journal.append(&frames[next % frames.len()]).is_ok() {
                next += 1;
                appended += 1;
            }
            sent.fetch_add(appended, Ordering::Relaxed);
            appended > 0
        };
        if doorbell_answer == Doorbell::Wait {
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let _ = fill();
                stream.write_all(&doorbell).expect("ringing the doorbell");
                let mut answer = [0u8; 2];
                stream
                    .read_exact(&mut answer)
                    .expect("the doorbell's answer");
                assert_eq!(&answer, b"OK");
            }
            return;
        }
        stream.set_nonblocking(true).unwrap();
        while !stop.load(Ordering::Relaxed) {
            if fill() {
                write_all_or_wait(&mut stream, &doorbell, stop);
            }
            loop {
                match stream.read(&mut sink) {
                    Ok(0) => panic!("the manager closed the journal flooder"),
                    Ok(_) => continue,
                    Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                    Err(err) => panic!("journal flooder: {err}"),
                }
            }
            std::thread::yield_now();
        }
    })
}

/// Writes all of `bytes` to a non-blocking stream, waiting while it is full.
fn write_all_or_wait(stream: &mut UnixStream, mut bytes: &[u8], stop: &AtomicBool) {
    while !bytes.is_empty() && !stop.load(Ordering::Relaxed) {
        match stream.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(err) => panic!("flooder: {err}"),
        }
    }
}

/// Writes register and release frames on its socket as fast as the manager
/// takes them, reading the answers on a second thread.
fn socket_flood(handle: &str) -> Flood {
    let stream = UnixStream::connect(handle).unwrap();
    let mut replies = stream.try_clone().unwrap();
    let pid = std::process::id() as i32;
    let batch: Vec<u8> = frame_cycle(pid, &flood_names("sflood", 480))
        .iter()
        .flat_map(Frame::encode)
        .collect();
    assert_eq!(batch.len(), 960 * FRAME_LEN);
    let reader = std::thread::spawn(move || {
        let mut sink = [0u8; 4096];
        let mut got = 0u64;
        loop {
            match replies.read(&mut sink) {
                Ok(0) | Err(_) => return got,
                Ok(n) => {
                    assert!(
                        sink[..n].iter().all(|b| b"OK".contains(b)),
                        "the socket flooder was refused"
                    );
                    got += n as u64;
                }
            }
        }
    });
    Flood::spawn(move |stop, sent| {
        let mut stream = stream;
        while !stop.load(Ordering::Relaxed) {
            stream.write_all(&batch).expect("socket flooder");
            sent.fetch_add(960, Ordering::Relaxed);
        }
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = reader.join();
    })
}

/// The probe's baseline on the idle manager, then its round trips during
/// the flood `start` begins. Returns (baseline, during, frames flooded).
fn probe_beside(daemon: &Daemon, start: impl FnOnce() -> Flood) -> (RoundTrips, RoundTrips, u64) {
    let mut probe = Probe::connect(&daemon.handle);
    let baseline = probe.sample(500, PROBE_PAUSE);
    let flood = start();
    // Let the flood reach its pace before measuring.
    std::thread::sleep(Duration::from_millis(300));
    let running = probe.spawn(PROBE_PAUSE);
    std::thread::sleep(FLOOD_FOR);
    // The flood stops first: a round trip stuck behind it then ends, and
    // counts with all the time it waited.
    let frames = flood.finish();
    let during = running.finish();
    (baseline, during, frames)
}

fn assert_unstalled(what: &str, baseline: &RoundTrips, during: &RoundTrips, frames: u64) {
    let rate = frames as f64 / (FLOOD_FOR.as_secs_f64() + 0.3);
    eprintln!(
        "{what}: {frames} frames flooded (~{rate:.0}/s)\n  probe idle:   {baseline}\n  probe during: {during}"
    );
    // Fewer than this, and the probe's p99 is its longest round trip.
    assert!(
        during.0.len() > 10,
        "{what}: the probe completed only {} round trips in {FLOOD_FOR:?}; {during}",
        during.0.len()
    );
    let bound = allowed_p99(baseline);
    assert!(
        during.percentile(99.0) < bound,
        "{what}: the probe's p99 was {:.3?} (bound {bound:.3?}, target {P99_TARGET:?}); \
         {during}; idle: {baseline}",
        during.percentile(99.0)
    );
}

/// The bound on the probe's p99 during a flood: this build's bound plus the
/// probe's own p99 on the idle manager, which is the machine's noise (other
/// processes taking the CPU), not the manager's doing. On a quiet machine
/// that is some tens of microseconds.
fn allowed_p99(baseline: &RoundTrips) -> Duration {
    P99_BOUND + baseline.percentile(99.0)
}

#[test]
fn a_journal_refilled_without_waiting_does_not_stall_another_client() {
    let _machine = exclusive();
    let daemon = Daemon::start(&[]);
    let handle = daemon.handle.clone();
    let (baseline, during, frames) =
        probe_beside(&daemon, || journal_flood(&handle, Doorbell::Ignore));
    assert_unstalled("journal flood", &baseline, &during, frames);
}

#[test]
fn a_journal_refilled_after_each_doorbell_does_not_stall_another_client() {
    let _machine = exclusive();
    let daemon = Daemon::start(&[]);
    let handle = daemon.handle.clone();
    let (baseline, during, frames) =
        probe_beside(&daemon, || journal_flood(&handle, Doorbell::Wait));
    assert_unstalled(
        "journal flood, waiting for each doorbell",
        &baseline,
        &during,
        frames,
    );
}

#[test]
fn a_socket_flood_does_not_stall_another_client() {
    let _machine = exclusive();
    let daemon = Daemon::start(&[]);
    let handle = daemon.handle.clone();
    let (baseline, during, frames) = probe_beside(&daemon, || socket_flood(&handle));
    assert_unstalled("socket flood", &baseline, &during, frames);
}

#[test]
fn a_client_that_never_reads_is_cut_off_and_its_live_process_keeps_its_names() {
    let _machine = exclusive();
    let log = LogFile::new("never-reads");
    let mut command = std::process::Command::new(common::SHM_MANAGER);
    command
        .args(["--reap-grace", "200ms", "--shutdown-timeout", "1s", "-v"])
        .stderr(log.stdio());
    let mut daemon = Daemon::spawn(&mut command);
    let mut keeper = daemon.connect();
    keeper.register(&unique_name("keeper"));

    // Registrations are sent for another live process of ours (as a forked
    // child's are, on its parent's connection), and two of the names exist
    // with refcount 0: orphans the moment that process is gone.
    let mut sleeper = Sleeper::spawn();
    let held: Vec<String> = (0..2).map(|_| unique_name("unread-held")).collect();
    let _cleanup = Cleanup(held.clone());
    for name in &held {
        create_object(name);
    }
    let mut names: Vec<SegmentName> = held
        .iter()
        .map(|n| SegmentName::new(n.as_bytes()).unwrap())
        .collect();
    names.extend(flood_names("unread", 62));
    let batch: Vec<u8> = names
        .iter()
        .cycle()
        .take(960)
        .flat_map(|&name| Frame::register(sleeper.pid(), name).encode())
        .collect();

    let mut probe = Probe::connect(&daemon.handle);
    let baseline = probe.sample(500, PROBE_PAUSE);
    let running = probe.spawn(PROBE_PAUSE);
    // Several in a row, so the probe has a few seconds' worth to measure.
    let mut cut_offs = Vec::new();
    for _ in 0..NEVER_READERS {
        let mut stream = UnixStream::connect(&daemon.handle).unwrap();
        let started = Instant::now();
        let mut sent = 0u64;
        let cut_off = loop {
            match stream.write_all(&batch) {
                Ok(()) => sent += 960,
                Err(err) => break err,
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "after {sent} registrations in {:?} the client that never reads is still served",
                started.elapsed()
            );
        };
        assert!(
            matches!(
                cut_off.kind(),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
            ),
            "the manager closed it: {cut_off}"
        );
        cut_offs.push((sent, started.elapsed()));
    }
    let during = running.finish();
    eprintln!(
        "clients that never read were cut off after (registrations, time) {cut_offs:.2?}\n  \
         probe idle:   {baseline}\n  probe during: {during}"
    );
    assert_eq!(
        log.text()
            .matches("client does not read its replies; closing it")
            .count(),
        NEVER_READERS,
        "{}",
        log.text()
    );
    let bound = allowed_p99(&baseline);
    assert!(
        during.percentile(99.0) < bound,
        "the probe's p99 beside clients that never read was {:.3?} (bound {bound:.3?}, \
         target {P99_TARGET:?}); {during}; idle: {baseline}",
        during.percentile(99.0)
    );

    // Closed for cause, its process's names stay while that process lives,
    // well past the grace period...
    std::thread::sleep(Duration::from_secs(2));
    for name in &held {
        assert!(
            shm_exists(name),
            "{name} was reaped although the process that registered it lives"
        );
    }
    // ...and go once it ends.
    sleeper.kill();
    for name in &held {
        assert!(
            wait_until(Duration::from_secs(10), || !shm_exists(name)),
            "{name} outlived its only holder"
        );
    }
    keeper.register(&unique_name("keeper-again"));
    drop(keeper);
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
}

/// Clients that never read their replies, one after another.
const NEVER_READERS: usize = 4;
