//! A manager driven at scale from outside, for the scale benchmark: one
//! connection registering a great many names at full speed, short clients
//! (connect, register, disconnect), a probe timing its round trips on a
//! thread, and the manager's memory and CPU time from `/proc`.
//!
//! Clients speak PyTorch's wire on raw sockets, pipelined where speed
//! matters; the frames come from the core's encoder.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libshm_core::frame::{FRAME_LEN, Frame};
use libshm_core::name::SegmentName;

/// A registration frame for `name`, sent by this process.
pub fn register_frame(name: &str) -> [u8; FRAME_LEN] {
    frame(name, false)
}

fn frame(name: &str, release: bool) -> [u8; FRAME_LEN] {
    let pid = std::process::id() as i32;
    let name = SegmentName::new(name.as_bytes()).expect("a valid name");
    if release {
        Frame::release(pid, name).encode()
    } else {
        Frame::register(pid, name).encode()
    }
}

/// Registers `count` names (`name(0)`, `name(1)`, ...) on one new
/// connection, pipelined (a thread writes, this one reads the answers), and
/// returns the connection still open: the names stay held until it is
/// dropped. Panics if any is refused.
pub fn hold_many(
    handle: &str,
    count: usize,
    name: impl Fn(usize) -> String + Send + 'static,
) -> UnixStream {
    let stream = UnixStream::connect(handle).expect("connect");
    let mut writer = stream.try_clone().expect("clone the socket");
    let writing = std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(960 * FRAME_LEN);
        for i in 0..count {
            batch.extend_from_slice(&register_frame(&name(i)));
            if batch.len() == batch.capacity() || i + 1 == count {
                writer.write_all(&batch).expect("write registrations");
                batch.clear();
            }
        }
    });
    let mut reader = stream.try_clone().expect("clone the socket");
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = 2 * count;
    while left > 0 {
        let n = reader
            .read(&mut buf[..left.min(64 * 1024)])
            .expect("read answers");
        assert!(n > 0, "the manager closed the connection");
        assert!(
            buf[..n].iter().all(|b| b"OK".contains(b)),
            "the manager refused names"
        );
        left -= n;
    }
    writing.join().expect("the writer");
    stream
}

/// Connects, registers `name`, waits for `OK` and disconnects; the time all
/// that took.
pub fn short_client(handle: &str, name: &str) -> Duration {
    let start = Instant::now();
    let mut stream = UnixStream::connect(handle).expect("connect");
    stream.write_all(&register_frame(name)).expect("register");
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).expect("answer");
    drop(stream);
    let took = start.elapsed();
    assert_eq!(&reply, b"OK");
    took
}

/// The `p`-th percentile (0 to 100, nearest rank) of some durations.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A client registering and releasing one name over and over on its own
/// thread, timing each registration's round trip.
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Instant, Duration)>>,
}

impl Probe {
    /// Starts probing, `pause` between round trips.
    pub fn start(handle: &str, name: &str, pause: Duration) -> Self {
        let mut stream = UnixStream::connect(handle).expect("connect the probe");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set a timeout");
        let (register, release) = (frame(name, false), frame(name, true));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut trips = Vec::new();
                let mut reply = [0u8; 2];
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    stream.write_all(&register).expect("probe register");
                    stream.read_exact(&mut reply).expect("probe answer");
                    trips.push((start, start.elapsed()));
                    stream.write_all(&release).expect("probe release");
                    std::thread::sleep(pause);
                }
                trips
            })
        };
        Self { stop, thread }
    }

    /// Stops and returns each round trip: when it began, how long it took.
    pub fn finish(self) -> Vec<(Instant, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the probe")
    }
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS`, `RssAnon`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time `pid` has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    let fields: Vec<u64> = stat[close + 1..]
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.iter().sum()
}
