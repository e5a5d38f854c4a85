//! Hostile round 19, against e8fbdf6: status report askers waiting in line
//! (40d93c6: `Asker`, `Driver::status_waiting`, `REPORT_STALL`,
//! `next_status_due`, `settle`/`settle_dirty`), and closed ties and the
//! writer list (8a4719f: `closed_ties`, `Client::note_writer_started`).
//!
//! Tried, and what came of it (figures from this 2-core machine, debug
//! manager):
//! - A full line (finding 1): the line holds 64, and it drains only as
//!   reports in flight end. An in-flight asker that reads nothing is
//!   dropped after `REPORT_STALL` (1 s) while others wait, so the line
//!   moves four places a second; a waiting asker is still closed at its
//!   own 5 s deadline, counted from its ask. Anyone behind about 20
//!   never-readers therefore never reaches a report, and past 64 is
//!   refused outright. Connections that ask for a history report, never
//!   read, and ask again at each hang-up, keep every other status query
//!   from its report: 68 such connections (4 in flight, 64 in line) had
//!   all 32 `status::query` calls over 8 s refused (0 answered; 152 asks
//!   by the attacker), 72 the same; 30 only slowed queries (2 answered in
//!   8 s, none refused). This is hostile18's finding 3 again, for 68
//!   connections instead of 4. The manager stays idle meanwhile (120 ms
//!   of CPU in 8 s): no spin, no timer storm. Fixed: an asker that has not
//!   read its report's head 200 ms after asking is closed when its turn
//!   comes, and a full line makes room by closing the first such one, so
//!   a reader always gets a place (9 of 9 queries answered, none refused,
//!   the attackers asking about 28,000 times in 8 s, as a flood of
//!   connects would).
//! - Writers taking turns past the 256 a connection remembers (finding 2,
//!   release only): 400 processes writing stray releases in turn on 300
//!   shared connections, ~30,000 frames a second, so that every read is
//!   from a writer no longer remembered: one `/proc` read each, and a
//!   `kill(0)` weeding of 256 every 64 new writers (amortised 4 per read:
//!   never O(n) per frame). Release: another client's p99 6.9 to 9.2 ms
//!   (bound 5 ms), the manager at 1.6 to 1.85 s of CPU in 3 s (3 runs);
//!   hostile18's 200 writers (all remembered) in the same build: p99 3.2
//!   to 4.7 ms, 0.6 s of CPU. Debug: p99 15 to 19 ms (bound 100 ms, so it
//!   passes), 2.5 s of CPU. The 400 attacking processes take the two cores
//!   as well, so part of the difference is theirs. This is the cost
//!   8a4719f documents ("past 256 live ones taking turns, each read from a
//!   new writer costs one `/proc` read"), measured past the bound. Open:
//!   a start time cached across connections would have to be proved the
//!   same process's, which is the cost itself.
//! - Closed ties' memory, read, not run: an entry keeps the closed
//!   connection's writers after the first live one, up to 255 `(i32, u64)`
//!   (16 bytes each, about 4 KB), and 16,384 entries are kept (256 per
//!   process tied at close, so 64 live processes reach the bound). About
//!   64 MB at most, bounded, for about 4 million frames (16,384
//!   connections, each with names in transit and 256 writers) and 64
//!   processes kept alive; nothing grows past it.
//! - Run by hand, not kept (withstood): behind four never-readers in
//!   flight, 20 askers of history reports each sent two more asks on the
//!   same connection, 200 stray releases and half a frame; 5 of them then
//!   closed while in line. The other 15 each got a whole report (`end`
//!   line; `OKOK` before the header, the extra asks' answers, as hostile18
//!   noted) within 0.55 s, the manager at 0.23 s of CPU meanwhile, and
//!   answered a further history report whole after.
//! - Read, not run (time box): the loop's wake-up (`next_status_due`) and
//!   `settle` run every round, so a deadline or stall that is due is acted
//!   on in the round it wakes for: no timer storm was found by reading; a
//!   second ask on the same connection is skipped (`asker.is_none()`); a
//!   waiting asker that closes is removed by `retain` on the next ask or
//!   `let_waiting_reports_in`, which also skips gone connections, so no
//!   place in line or in flight leaks.
//!
//! Each "finding" test fails on e8fbdf6 (finding 2 only under `cargo test
//! --release`, whose bound is 5 ms); its comment says what goes wrong and
//! why.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::measure::{FLOOD_P99_BOUND, Probe, RoundTrips, cpu_time};
use common::{Daemon, frame, one_at_a_time, unique_name, wait_until};

/// Fills the manager's history (8,192 events, its bound) with registrations
/// and releases of names nobody creates: a history report is then about
/// 800 KB, more than an asker's socket holds unread.
fn fill_history(daemon: &Daemon) {
    let mut client = daemon.connect();
    let bytes: Vec<u8> = (0..4_096)
        .map(|i| format!("/torch_h19hist_{}_{i}", common::run_id()))
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
fn hung_up(stream: &UnixStream, within: Duration) -> bool {
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
/// as soon as the manager hangs up, until `stop`.
fn asker_that_never_reads(handle: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
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

/// Asks for summaries every 250 ms for `over` while `askers` connections
/// ask for history reports they never read; returns (reported, refusals,
/// the askers' asks).
fn queries_beside_never_readers(askers: usize, over: Duration) -> (usize, Vec<String>, u32) {
    let daemon = Daemon::start_with_stderr(&[], Stdio::null());
    let _bystander = daemon.bystander();
    fill_history(&daemon);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..askers)
        .map(|_| asker_that_never_reads(daemon.handle.clone(), Arc::clone(&stop)))
        .collect();
    std::thread::sleep(Duration::from_millis(1_500));
    let cpu_before = cpu_time(daemon.child.id());
    let started = Instant::now();
    let (mut reported, mut refused) = (0, Vec::new());
    while started.elapsed() < over {
        match libshm::status::query(&daemon.handle, libshm::status::Detail::Summary) {
            Ok(_) => reported += 1,
            Err(err) => refused.push(err.to_string()),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let cpu = cpu_time(daemon.child.id()).saturating_sub(cpu_before);
    eprintln!("manager CPU {cpu:.2?} in {:.1?}", started.elapsed());
    stop.store(true, Ordering::Relaxed);
    let asked: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    (reported, refused, asked)
}

/// 68 connections ask for history reports (about 800 KB each: more than a
/// socket holds unread), never read them, and ask again the moment the
/// manager hangs up: four are in flight and 64 wait in line (the bound),
/// and a place freed goes back to the attacker within a poll. An in-flight one is dropped after 1 s
/// without a piece sent, so the line moves four places a second, while a
/// waiting asker is closed at its own 5 s deadline: the line holds 64 and
/// only about 20 of them can ever reach the front. Meanwhile
/// `libshm::status::query` asks every 250 ms: when the line is full it is
/// refused at once (`OK` alone); when it gets a place it is far behind and
/// is closed at its deadline with the head alone. The attacker needs 68
/// connections, about 19 asks a second and no reading (hostile18's finding
/// 3 needed 4). Failed on e8fbdf6: 0 of 32 queries answered over 8 s, all
/// refused with `OK` alone ("no status header"), the askers asking 152
/// times; with 72 askers the same (0 of 32). Fewer askers only slow the
/// query: with 30, 2 answered and none refused in 8 s, each query waiting
/// seconds in line; with 16, 3 answered. Fixed so: an asker that has not
/// read its head 200 ms after asking is closed at its turn
/// (`HEAD_READ_WITHIN`), and a full line closes the first such one to make
/// room (`Driver::close_a_waiting_asker_that_does_not_read`).
#[test]
fn finding_a_line_full_of_askers_that_never_read_leaves_others_a_report() {
    let _serial = one_at_a_time();
    let (reported, mut refused, asked) = queries_beside_never_readers(68, Duration::from_secs(8));
    let refusals = refused.len();
    refused.dedup();
    eprintln!(
        "{reported} reported, {refusals} refused; the askers asked {asked} times: {refused:?}"
    );
    assert!(
        refusals == 0,
        "while 68 connections asked for history reports and never read them ({asked} asks), \
         {refusals} of {} status queries over 8 s were refused ({reported} answered): {refused:?}",
        reported + refusals
    );
}

// --- Writers taking turns past the writer list ------------------------------

/// A process of ours running a Python attack script, killed (with what it
/// forked, once its stdin closes) however the test ends.
struct Attack {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Attack {
    /// Runs `script` with `args`; its stdin stays open until this drops.
    fn start(script: &str, args: &[String]) -> Self {
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
    fn line(&mut self) -> String {
        self.lines
            .next()
            .expect("the attack printed nothing")
            .expect("a line")
    }

    /// Closes its stdin (it ends what it forked) and waits for it.
    fn stop(mut self) {
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
fn probe_beside(
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
/// `conns` connections, `frames_per_second` stray releases in all.
fn probe_beside_writers_taking_turns(
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
                    unique_name("h19turns"),
                ],
            );
            assert_eq!(attack.line(), "ready");
            attack
        },
        Duration::from_millis(1500),
        Duration::from_secs(3),
    )
}

fn assert_answered_beside_writers(writers: usize) {
    let env = |key: &str, default: f64| {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let conns = env("H19_TURNS_CONNS", 300.0) as usize;
    let rate = env("H19_TURNS_RATE", 30_000.0);
    let (idle, during, cpu) = probe_beside_writers_taking_turns(writers, conns, rate);
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

/// 400 processes take turns writing on 300 connections they share, more
/// than the 256 writers a connection remembers: every read is from a writer
/// that was forgotten, and costs a `/proc/<pid>/stat` read (its start
/// time, `pid_watch::start_time`) plus, every 64 new writers, a `kill(0)`
/// of each of 256 remembered. The same 400 processes are looked up again
/// on each of the 300 connections, as the list is per connection. Fails
/// on e8fbdf6 in release only: another client's p99 6.9 to 9.2 ms (bound
/// 5 ms), the manager at 1.6 to 1.85 s of CPU in 3 s, where 200 writers
/// (all remembered) give 3.2 to 4.7 ms and 0.6 s; in debug 15 to 19 ms,
/// within its 100 ms bound. Part of it is the 400 attackers' share of the
/// two cores.
#[test]
#[ignore = "open finding (release only): each read from a writer not remembered costs a /proc read"]
fn finding_four_hundred_writers_taking_turns_on_shared_connections_keep_another_client_answered() {
    let _serial = one_at_a_time();
    assert_answered_beside_writers(400);
}
