//! Attacks that more than one hostile round runs: a Python attack process,
//! another client's round trips beside it, writers taking turns on shared
//! connections, families whose connections were closed for cause beside a
//! flood of closes, and report askers that never read. Kept in one place so
//! that a round that runs an earlier round's attack again (past a new bound,
//! or spread another way) runs the same attack and measures it the same way.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::handed::{connection_from_exited_process, malformed_frame_from_a_live_writer};
use super::measure::{FLOOD_P99_BOUND, Probe, RoundTrips, cpu_time};
use super::{
    Cleanup, Daemon, NestedWorker, frame, process_gone, run_id, shm_exists, story, unique_name,
    wait_until,
};

/// A process of ours running a Python attack script, killed (with what it
/// forked, once its stdin closes) however the test ends.
pub struct Attack {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Attack {
    /// Runs `script` with `args`; its stdin stays open until this drops.
    pub fn start(script: &str, args: &[String]) -> Self {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    /// The next line it prints.
    pub fn line(&mut self) -> String {
        self.lines
            .next()
            .expect("the attack printed nothing")
            .expect("a line")
    }

    /// Writes an empty line to its stdin: a script's cue to go on.
    pub fn cue(&mut self) {
        writeln!(self.child.stdin.as_mut().unwrap()).unwrap();
    }

    /// Closes its stdin (it ends what it forked) and waits for it.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let exited = wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The probe's round trips on the quiet manager, then while `attack` runs
/// (once it has run `settle`), for `measure`.
pub fn probe_beside(
    daemon: &Daemon,
    attack: impl FnOnce() -> Attack,
    settle: Duration,
    measure: Duration,
) -> (RoundTrips, RoundTrips, Duration) {
    let manager = daemon.child.id();
    let mut probe = Probe::connect(&daemon.handle);
    let idle = probe.sample(300, Duration::from_millis(1));
    let attack = attack();
    std::thread::sleep(settle);
    let cpu_before = cpu_time(manager);
    let running = probe.spawn(Duration::from_millis(1));
    std::thread::sleep(measure);
    let cpu = cpu_time(manager).saturating_sub(cpu_before);
    attack.stop();
    (idle, running.finish(), cpu)
}

// --- Writers taking turns on many connections (hostile18, hostile19) --------

/// Run by a process of ours: connects `argv[2]` times to the manager at
/// `argv[1]`, then forks `argv[3]` writers that share those connections, as
/// a pool's workers share their parent's. Each writer writes a stray
/// release (a name nobody holds, under its own pid: a frame PyTorch's
/// client sends) on every connection, then sleeps `argv[4]` seconds, over
/// and over; their starts are spread over one such sleep. Prints `ready`
/// once they run, and ends them when its stdin closes.
const WRITERS_TAKING_TURNS: &str = r#"
import os, socket, struct, sys, time
handle, conns, writers, pause, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
socks = []
for i in range(conns):
    s = socket.socket(socket.AF_UNIX)
    s.connect(handle)
    socks.append(s)
fds = [s.fileno() for s in socks]
kids = []
for w in range(writers):
    pid = os.fork()
    if pid == 0:
        try:
            b = ("%s_%d" % (tag, w)).encode()
            f = struct.pack("=iB", os.getpid(), 1) + b + b"\0" * (63 - len(b))
            time.sleep(pause * w / writers)
            while True:
                for fd in fds:
                    os.write(fd, f)
                time.sleep(pause)
        finally:
            os._exit(0)
    kids.append(pid)
print("ready", flush=True)
sys.stdin.read()
for pid in kids:
    os.kill(pid, 9)
for pid in kids:
    os.waitpid(pid, 0)
"#;

/// Another client's round trips beside `writers` writers taking turns on
/// `conns` connections, `frames_per_second` stray releases in all; their
/// names are tagged `<round>turns`.
fn probe_beside_writers_taking_turns(
    round: &str,
    writers: usize,
    conns: usize,
    frames_per_second: f64,
) -> (RoundTrips, RoundTrips, Duration) {
    let daemon = Daemon::start_with_stderr(&[], Stdio::null());
    let pause = (writers * conns) as f64 / frames_per_second;
    probe_beside(
        &daemon,
        || {
            let mut attack = Attack::start(
                WRITERS_TAKING_TURNS,
                &[
                    daemon.handle.clone(),
                    conns.to_string(),
                    writers.to_string(),
                    pause.to_string(),
                    unique_name(&format!("{round}turns")),
                ],
            );
            assert_eq!(attack.line(), "ready");
            attack
        },
        Duration::from_millis(1500),
        Duration::from_secs(3),
    )
}

/// Asserts another client is answered within [`FLOOD_P99_BOUND`] at p99
/// beside `writers` writers taking turns on 300 connections, 30,000 stray
/// releases a second in all. `round` (`h18`) tags the names, and
/// `<ROUND>_TURNS_CONNS` and `<ROUND>_TURNS_RATE` (`H18_TURNS_CONNS`) set
/// other figures for a run by hand.
pub fn assert_answered_beside_writers(round: &str, writers: usize) {
    let env = |key: &str, default: f64| {
        std::env::var(format!("{}_{key}", round.to_uppercase()))
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let conns = env("TURNS_CONNS", 300.0) as usize;
    let rate = env("TURNS_RATE", 30_000.0);
    let (idle, during, cpu) = probe_beside_writers_taking_turns(round, writers, conns, rate);
    eprintln!(
        "{writers} writers taking turns on {conns} connections, ~{rate} frames/s: manager CPU \
         {cpu:.2?} in 3 s\n  probe idle:   {idle}\n  probe during: {during}"
    );
    assert!(
        during.percentile(99.0) < FLOOD_P99_BOUND,
        "beside {writers} processes taking turns writing stray releases on {conns} shared \
         connections (~{rate} frames/s in all), another client's registration took {:.1?} at \
         p99 (bound {FLOOD_P99_BOUND:?}, as beside a flood of frames); the manager used \
         {cpu:.2?} of CPU in 3 s; during: {during}; idle: {idle}",
        during.percentile(99.0)
    );
}

// --- Families whose next ties a flood of closes may forget (hostile17, 18) ---

/// One family per entry: hostile14's (its connecting process gone, a nested
/// worker W that registered, created and maps a name on it), its connection
/// closed for cause by a malformed frame from a live writer X, so that its
/// untrusted holds are tied to X and W is remembered as the next tie
/// (`Driver::next_ties`). Needs a private pid namespace (W's pid is fixed).
/// Their names are removed from `/dev/shm` when this drops, however the
/// test ends.
pub struct FamiliesTiedToLiveWriters {
    families: Vec<(NestedWorker, Child, String)>,
    _cleanup: Cleanup,
}

impl FamiliesTiedToLiveWriters {
    /// `count` such families on the manager `daemon`, their names tagged
    /// `tag`, their workers' pids 30,000 on.
    pub fn close_for_cause(daemon: &Daemon, count: i32, tag: &str) -> Self {
        let mut cleanup = Cleanup::default();
        let mut families = Vec::new();
        for i in 0..count {
            let (mut family, peer) = connection_from_exited_process(&daemon.handle);
            assert!(process_gone(peer as u32));
            let name = unique_name(tag);
            cleanup.0.push(name.clone());
            let q = 30_000 + i;
            assert!(process_gone(q as u32));
            let worker = NestedWorker::spawn(family.stream.as_raw_fd(), q, &name);
            let writer = malformed_frame_from_a_live_writer(family.stream.as_raw_fd());
            assert!(
                family.is_closed_by_peer(Duration::from_secs(10)),
                "the malformed frame closes the connection for cause"
            );
            families.push((worker, writer, name));
        }
        Self {
            families,
            _cleanup: cleanup,
        }
    }

    /// Each family's tied writer X ends and its worker W queues its name
    /// (refcount 1, in transit); then, once the linger (3 s), the grace and
    /// a look have passed: the names lost while their workers lived (each
    /// with the manager's story of it), and whether all were gone within
    /// 15 s once the workers ended. The families are spent after it.
    pub fn after_the_tied_writers_end(&mut self, daemon: &Daemon) -> (Vec<String>, bool) {
        let mut families = std::mem::take(&mut self.families);
        for (worker, writer, _) in &mut families {
            drop(writer.stdin.take());
            assert!(writer.wait().unwrap().success());
            worker.queue();
        }
        // The linger (3 s), the grace, the look, and slack.
        std::thread::sleep(Duration::from_secs(8));
        let lost: Vec<String> = families
            .iter()
            .filter(|(_, _, name)| !shm_exists(name))
            .map(|(_, _, name)| format!("{name}: {}", story(&daemon.handle, name)))
            .collect();
        let names: Vec<String> = families.iter().map(|(_, _, name)| name.clone()).collect();
        drop(families);
        let gone = wait_until(Duration::from_secs(15), || {
            names.iter().all(|name| !shm_exists(name))
        });
        (lost, gone)
    }
}

// --- Report askers that never read (hostile18, hostile19) -------------------

/// Fills the manager's history (8,192 events, its bound) with registrations
/// and releases of names nobody creates (tagged `<round>hist`): a history
/// report is then about 800 KB, more than an asker's socket holds unread.
pub fn fill_history(daemon: &Daemon, round: &str) {
    let mut client = daemon.connect();
    let bytes: Vec<u8> = (0..4_096)
        .map(|i| format!("/torch_{round}hist_{}_{i}", run_id()))
        .flat_map(|name| frame(0, &name).into_iter().chain(frame(1, &name)))
        .collect();
    let mut reader = client.stream.try_clone().unwrap();
    // Read while writing: the answers would fill the socket.
    let replies = std::thread::spawn(move || {
        let mut replies = vec![0u8; 2 * 4_096];
        reader.read_exact(&mut replies).map(|()| replies)
    });
    client.send(&bytes);
    replies.join().unwrap().expect("replies");
}

/// Whether the manager hung up on `stream` within `within`, without
/// reading what it sent.
pub fn hung_up(stream: &UnixStream, within: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    let timeout = i32::try_from(within.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one pollfd of ours, for the length given.
    let ready = unsafe { libc::poll(&raw mut fds, 1, timeout) };
    ready > 0 && fds.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
}

/// An asker that asks for a history report, never reads it, and asks again
/// as soon as the manager hangs up (its report's deadline, or its drop),
/// until `stop`. Returns how many times it asked.
pub fn asker_that_never_reads(handle: String, stop: Arc<AtomicBool>) -> JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut asked = 0;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut asker) = UnixStream::connect(&handle) else {
                continue;
            };
            if asker.write_all(&frame(0, "/libshm_history_v1")).is_err() {
                continue;
            }
            asked += 1;
            while !stop.load(Ordering::Relaxed) && !hung_up(&asker, Duration::from_millis(50)) {}
        }
        asked
    })
}
