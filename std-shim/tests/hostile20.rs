//! A twentieth hostile round, aimed at fb3163f: a process's end now waits
//! for its connections to be read as far as their queues reached when the
//! end was noticed, a round's worth per round (`ends::PendingEnds`), and a
//! client that hangs up on a full journal stays half-alive (`hung_up_at`)
//! while its ring is read over rounds. Until an end is acted on its pid's
//! old descriptor stays watched and a new process given the pid is refused
//! a watch (`Driver::watch`). So what used to last one round now lasts as
//! long as a queue takes to read, and a queue is as long as its writers
//! (and root's `SO_SNDBUFFORCE`) make it.
//!
//! Pids are reused on purpose (`ns_last_pid`, root, in a private pid
//! namespace where nobody else forks), queues are built while the manager
//! is stopped (`SIGSTOP`), and everything is real: processes, sockets,
//! `/dev/shm`.
//!
//! Outcome (2026-11-27): the deferral of ends was reverted (findings 1 to
//! 3 need a pid whose end waits, and a wait that long needs ends watched
//! by process rather than pid), findings 5 to 7 were fixed, and finding 4
//! stays open as the one-round stall it was before fb3163f.
//!
//! Findings (ignored tests, each doc says how to run it): a new process
//! given a pid whose end is pending loses its names in transit when its
//! connection is closed for cause (1, 2) or is never watched (3); ends on
//! connections of writers taking turns make every round long (4); a failed
//! send closes a connection with its queue unread (5); and two older ones
//! the change kept: frames committed after a hang-up are read (6), and the
//! frames of an ended watched process cost quadratic time (7). Withstood:
//! a new process given a gone sender's pending pid keeps its names in
//! transit, and a hang-up on a full ring keeps the last release of a
//! process that ended with it, the manager idling and exiting after.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::handed::manager_lingering;
use common::journal_client::JournalClient;
use common::measure::{Probe, RoundTrips, cpu_time};
use common::pid_reuse::{force_send_buffer, unread_by_manager};
use common::{
    Cleanup, Daemon, RawClient, Sleeper, frame, run_id, segment_name, shm_exists, story,
    unique_name, wait_until,
};
use libshm::protocol::frame::Frame;
use libshm::protocol::journal::JournalMemory;

/// A name of ours, short enough for a frame.
fn name_of(tag: &str) -> String {
    format!("/torch_h20{tag}_{}", run_id())
}

/// Writes `frames` stray releases (a name nobody holds, by the test's own
/// pid: frames PyTorch's client sends) on `conn` without blocking; the
/// manager must be stopped, and the send buffer wide enough.
fn queue_strays(conn: &mut RawClient, frames: usize) {
    let junk = unique_name("h20junk");
    let chunk: Vec<u8> = (0..1_000).flat_map(|_| frame(1, &junk)).collect();
    conn.stream.set_nonblocking(true).unwrap();
    for _ in 0..frames / 1_000 {
        conn.stream
            .write_all(&chunk)
            .expect("the widened socket takes the whole queue");
    }
    conn.stream.set_nonblocking(false).unwrap();
}

/// Run by a process of ours: connects to the manager at `argv[1]` itself
/// (so the kernel names it as the peer), registers `argv[2]` under its own
/// pid, creates the segment and leaves it in transit (refcount 1, mapped by
/// nobody: pickled into a queue, its own reference dropped), and prints its
/// pid. At a line on stdin it writes a malformed frame (free flag 7), which
/// closes its connection for cause before its release could go, prints
/// `closed` once the manager hung up, and lives until stdin closes.
const REGISTERS_THEN_CLOSED_FOR_CAUSE: &str = r#"
import os, socket, struct, sys
handle, name = sys.argv[1], sys.argv[2]
pid = os.getpid()
def frame(free):
    b = name.encode()
    return struct.pack("=iB", pid, free) + b + b"\0" * (63 - len(b))
s = socket.socket(socket.AF_UNIX)
s.connect(handle)
s.sendall(frame(0))
reply = b""
while len(reply) < 2:
    chunk = s.recv(2 - len(reply))
    if not chunk:
        break
    reply += chunk
assert reply == b"OK", reply
fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.ftruncate(fd, 128)
os.pwrite(fd, struct.pack("=i", 1), 0)
os.close(fd)
print(pid, flush=True)
sys.stdin.readline()
s.sendall(frame(7))
try:
    closed = s.recv(1) == b""
except ConnectionResetError:
    closed = True
print("closed" if closed else "open", flush=True)
sys.stdin.read()
"#;

/// Run by a process of ours sharing a family's connection as descriptor 3,
/// as a forked worker shares its parent's: registers `argv[1]` under its
/// own pid, creates the segment with refcount 1 (its own reference: it
/// maps it), prints its pid and lives until killed, never releasing it.
const WORKER_ON_FAMILY_CONNECTION: &str = r#"
import os, struct, sys
name, pid = sys.argv[1], os.getpid()
b = name.encode()
os.write(3, struct.pack("=iB", pid, 0) + b + b"\0" * (63 - len(b)))
fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.ftruncate(fd, 128)
os.pwrite(fd, struct.pack("=i", 1), 0)
os.close(fd)
print(pid, flush=True)
sys.stdin.read()
"#;

/// A Python process of ours, killed however the test ends.
struct Script {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Script {
    /// Runs `script` with `args`, with pid `pid` if given (`ns_last_pid`;
    /// in a private pid namespace the first try gets it), sharing `fd3` as
    /// its descriptor 3 if given; returns once it printed its pid.
    fn start(script: &str, args: &[&str], pid: Option<i32>, fd3: Option<RawFd>) -> Self {
        for _ in 0..50 {
            if let Some(pid) = pid {
                std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
                    .expect("write ns_last_pid (root, in our own pid namespace)");
            }
            let mut command = Command::new("/usr/bin/python3");
            command
                .arg("-c")
                .arg(script)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped());
            if let Some(fd) = fd3 {
                common::share_as_fd3(&mut command, fd);
            }
            let mut child = command.spawn().expect("python3");
            if pid.is_some_and(|pid| pid != child.id() as i32) {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            let lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut process = Self { child, lines };
            let said: i32 = process.line().trim().parse().expect("its pid");
            assert_eq!(said, process.child.id() as i32);
            return process;
        }
        panic!("could not start a process with pid {pid:?}");
    }

    /// [`REGISTERS_THEN_CLOSED_FOR_CAUSE`] on `name`.
    fn closed_for_cause(handle: &str, name: &str, pid: Option<i32>) -> Self {
        Self::start(REGISTERS_THEN_CLOSED_FOR_CAUSE, &[handle, name], pid, None)
    }

    /// [`WORKER_ON_FAMILY_CONNECTION`] on `name`, its registration answered
    /// (the answer read from `family`) before this returns.
    fn worker(family: &mut RawClient, name: &str, pid: Option<i32>) -> Self {
        // A copy, never descriptor 3 itself (`dup2` onto itself would
        // leave it close-on-exec).
        let copy = family.stream.try_clone().unwrap();
        let worker = Self::start(
            WORKER_ON_FAMILY_CONNECTION,
            &[name],
            pid,
            Some(copy.as_raw_fd()),
        );
        assert_eq!(family.reply(), Some(*b"OK"), "the worker's registration");
        worker
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn line(&mut self) -> String {
        self.lines.next().expect("a line").expect("a line")
    }

    /// Has a [`REGISTERS_THEN_CLOSED_FOR_CAUSE`] process write its malformed
    /// frame; true once the manager hung up.
    fn close_for_cause(&mut self) -> bool {
        writeln!(self.child.stdin.as_mut().unwrap()).unwrap();
        self.line() == "closed"
    }

    fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL, reaped: a crash, its pid free again.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A process with a holder on a connection whose queue is long when it
/// ends (`frames` stray releases, queued while the manager is stopped, then
/// the process killed and reaped): its end, noticed at once, waits for the
/// whole queue to be read. Returns the connection (kept open: its queue is
/// measured with [`unread_by_manager`]) and the pid, free for reuse.
fn end_pending_behind_a_long_queue(daemon: &Daemon, frames: usize) -> (RawClient, i32) {
    let mut old = Sleeper::spawn();
    let pid = old.pid();
    let mut shared = daemon.connect();
    shared.register_as(pid, &unique_name("h20old"));
    force_send_buffer(&shared.stream, 1 << 28);
    daemon.while_stopped(|| {
        queue_strays(&mut shared, frames);
        old.kill();
    });
    (shared, pid)
}

/// A new process given `pid` (whose end is pending behind `shared`'s long
/// queue) registers `name`, leaves it in transit and is closed for cause
/// while the queue is read. Returns it, alive, once the queue is read and
/// the linger (3 s), the grace (1 s), a look and slack have passed, and
/// the bytes that were queued.
fn reuser_closed_for_cause_behind_the_queue(
    daemon: &Daemon,
    shared: &RawClient,
    pid: i32,
    name: &str,
) -> (Script, usize) {
    let queued = unread_by_manager(&shared.stream);
    let began = Instant::now();
    let mut reuser = Script::closed_for_cause(&daemon.handle, name, Some(pid));
    let pending_before = unread_by_manager(&shared.stream);
    assert!(reuser.close_for_cause(), "the malformed frame closes it");
    let pending_after = unread_by_manager(&shared.stream);
    let closed_after = began.elapsed();
    assert!(
        wait_until(Duration::from_secs(30), || unread_by_manager(
            &shared.stream
        ) == 0),
        "the queue is read"
    );
    let read_in = began.elapsed();
    // Ends are acted on in the round they are noticed since the deferral
    // was reverted: the new process is served after the old end (nothing
    // left unread then), and what follows must hold either way.
    eprintln!(
        "queue of {queued} bytes read in {read_in:.2?}; the reuser (pid {pid}) was closed for \
         cause {closed_after:.2?} in, {pending_before} then {pending_after} bytes still unread"
    );
    std::thread::sleep(Duration::from_secs(7));
    assert!(reuser.is_alive());
    (reuser, queued)
}

// --- Findings ----------------------------------------------------------------

/// Finding 1. A process given the pid of one whose end is pending loses
/// its name in transit, while it lives, when its connection is closed for
/// cause: the close cannot tie the connection's holds to it, so they end as
/// held by unknown processes and the name is reaped.
///
/// What happened: a watched process P, with a holder on a connection whose
/// queue held 42 MB (600,000 stray releases, queued while the manager was
/// stopped), was killed; its end waited for that queue (read in 0.69-1.17 s
/// here, debug). 32-84 ms in, with ~40 MB still unread, a new process given
/// P's pid connected, registered a name, created it and left it in transit
/// (refcount 1, unmapped: pickled, its own reference dropped), and wrote a
/// malformed frame. The manager closed it for cause and unlinked its name
/// at ~3.2 s (`reason=orphaned`: the 3 s linger, a look that found nobody
/// mapping it) while the process lived. The control in the same run (the
/// same process, with a pid of its own) kept its name past the linger, the
/// grace and a look, as the manager's contract says ("closing a connection
/// never orphans a live process's names"). Before fb3163f the window did
/// not exist: the new process was answered only after the whole queue had
/// been read in one round (a 689 ms stall), P's end acted on in that round.
///
/// Root cause: `Driver::notice_exits` (transport-unix/src/event_loop.rs:985)
/// keeps an ended pid's pidfd in `PidWatches` until `act_on_end` (:1052),
/// which now waits for the pid's connections to be read to their marks; all
/// that time `PidWatches::watch_in` (transport-unix/src/pid_watch.rs:84-85)
/// refuses any watch of the pid (`!has_exited(old pidfd)`), including
/// `Driver::watch_if_started` (event_loop.rs:1450) for the new process that
/// the kernel named as the connection's peer and whose start time matches.
/// `Effects::watch_peer` returns `None`, and `Manager::close_for_cause`
/// (core/src/manager.rs:2547-2553) ends the connection's holder as held by
/// unknown processes: a dead registration, an orphan by the refcount rule
/// (refcount 1, dead 1), nobody maps it, unlinked.
///
/// Suggested fix: watch processes by generation, not by pid: key
/// `PidWatches` and the manager's pid table by (pid, start time) or by a
/// watch id, so a new process given a pending pid gets a watch of its own
/// at once and the old end's `pid_exited` ends only the old generation's
/// holders (this fixes findings 2 and 3 too). Short of that: when the peer
/// is alive with the start time seen at accept but its pid's end is
/// pending, defer the tie (keep the holder live, tie it right after
/// `act_on_end(pid)`, re-checking the start time) instead of ending it.
///
/// Run: `LIBSHM_REQUIRE_ROOT=1 cargo test -p libshm --test hostile20 --
/// --include-ignored a_process_given_a_pending_pid_keeps`
///
/// Fixed by reverting the deferral: ends are acted on in the round they are
/// noticed, before a new process given the pid is served.
#[test]
fn a_process_given_a_pending_pid_keeps_its_names_when_its_connection_is_closed_for_cause() {
    if !common::in_private_pid_namespace(
        "a_process_given_a_pending_pid_keeps_its_names_when_its_connection_is_closed_for_cause",
    ) {
        return;
    }
    const QUEUED_FRAMES: usize = 600_000;
    let daemon = manager_lingering("3s");
    let _bystander = daemon.bystander();

    // Control: a process closed for cause with no end pending on its pid
    // keeps its name in transit while it lives (tied to it at the close).
    let control_name = name_of("control");
    let reused_name = name_of("reused");
    let _cleanup = Cleanup(vec![control_name.clone(), reused_name.clone()]);
    let mut control = Script::closed_for_cause(&daemon.handle, &control_name, None);
    assert!(control.close_for_cause(), "the malformed frame closes it");

    // A process with a holder on a connection whose queue is long when it
    // ends: its end waits for the whole queue to be read.
    let (shared, pid) = end_pending_behind_a_long_queue(&daemon, QUEUED_FRAMES);

    // A new process given the pid while that end is pending.
    let (_reuser, queued) =
        reuser_closed_for_cause_behind_the_queue(&daemon, &shared, pid, &reused_name);
    assert!(control.is_alive());
    let control_kept = shm_exists(&control_name);
    let reused_kept = shm_exists(&reused_name);
    assert!(
        control_kept,
        "control: {control_name}, in transit from live pid {} closed for cause, was unlinked:\n  {}",
        control.pid(),
        story(&daemon.handle, &control_name)
    );
    assert!(
        reused_kept,
        "{reused_name}, in transit from live pid {pid} (given the pid of a process whose end \
         waited on a queue of {queued} bytes), was unlinked while it lives after its \
         connection was closed for cause; the same from a pid with no end pending was kept:\n  {}",
        story(&daemon.handle, &reused_name)
    );
}

/// Finding 2. The same as finding 1 with a gone sender's pid (a process
/// that wrote a frame and exited before it was read, never watched by a
/// pidfd): here the close does tie the new process's holds to the pid, and
/// the gone sender's end, acted on once the queue is read, ends them.
///
/// What happened: a forked child's registration was queued ahead of 42 MB
/// of stray releases on its family's connection and the child exited
/// (reaped) while the manager was stopped. Its frame, read first, made it a
/// gone sender whose end waited for the 42 MB behind it (read in 0.91-1.14
/// s). 57-86 ms in (~40 MB unread) a new process given its pid registered a
/// name, left it in transit and was closed for cause; the name was found an
/// orphan at t=918-1152 ms, exactly when the queue had been read and the
/// gone sender's end was acted on, and unlinked at ~4.0-4.3 s while the new
/// process lived. Before fb3163f: no window (answered after a 726 ms stall).
///
/// Root cause: `Driver::watch_if_started` (transport-unix/src/event_loop.rs:
/// 1450) does not refuse a pid whose end is pending or that is in `gone`, as
/// `Driver::watch` does (:1418). The gone sender never had a pidfd (ESRCH),
/// so `PidWatches::watch_peer` opens one on the new process, and
/// `Manager::close_for_cause` (core/src/manager.rs:2537-2545) links the new
/// process's holder into the gone pid's holder list (`retain_pid` finds the
/// gone sender's entry). `act_on_end` (event_loop.rs:1052) then drops the
/// new process's pidfd (`stop_watching`) and `Manager::pid_exited`
/// (core/src/manager.rs:1282) ends every holder on the list, the new
/// process's included (it has no next writer to pass to).
///
/// Suggested fix: as finding 1 (watches by generation). Refusing in
/// `watch_if_started` alone would turn this into finding 1; it needs the
/// deferred tie as well.
///
/// Run: `LIBSHM_REQUIRE_ROOT=1 cargo test -p libshm --test hostile20 --
/// --include-ignored a_process_given_a_gone_senders_pending_pid`
///
/// Fixed the same way as finding 1.
#[test]
fn a_process_given_a_gone_senders_pending_pid_keeps_its_names_when_closed_for_cause() {
    if !common::in_private_pid_namespace(
        "a_process_given_a_gone_senders_pending_pid_keeps_its_names_when_closed_for_cause",
    ) {
        return;
    }
    const QUEUED_FRAMES: usize = 600_000;
    let daemon = manager_lingering("3s");
    let _bystander = daemon.bystander();
    let reused_name = name_of("gonereused");
    let _cleanup = Cleanup(vec![reused_name.clone()]);

    // A forked child's registration, read after it is gone (a holder of its
    // own, its pid reported gone), with a long queue behind it: its end
    // waits for the whole queue to be read.
    let mut shared = daemon.connect();
    force_send_buffer(&shared.stream, 1 << 28);
    let mut pid = 0;
    daemon.while_stopped(|| {
        pid = shared.register_from_exited_child(&[&unique_name("h20gone")]);
        queue_strays(&mut shared, QUEUED_FRAMES);
    });
    assert_eq!(
        shared.reply(),
        Some(*b"OK"),
        "the gone sender's registration"
    );
    let (_reuser, queued) =
        reuser_closed_for_cause_behind_the_queue(&daemon, &shared, pid, &reused_name);
    assert!(
        shm_exists(&reused_name),
        "{reused_name}, in transit from live pid {pid} (given the pid of a gone sender whose \
         end waited on a queue of {queued} bytes), was unlinked while it lives after its \
         connection was closed for cause:\n  {}",
        story(&daemon.handle, &reused_name)
    );
}

/// Finding 3. A worker forked onto its family's connection and given a pid
/// whose end is pending is never watched: when it crashes, the segment it
/// created and registered is not reaped; it leaks for as long as the
/// family's connection lives (the rest of a training run).
///
/// What happened: with a watched process's end waiting on a 42 MB queue (as
/// in finding 1), a worker sharing its family's connection was given the
/// pid, registered a name (answered 16 ms in, ~41 MB still unread), created
/// the segment (refcount 1) and was killed. 9 s later, long after the queue
/// was read (0.72 s) and the old end acted on, the segment was still there
/// while the family's connection lived; it went only after the connection
/// closed. The control in the same run, a worker with a pid of its own
/// killed the same way, had its segment reaped within the grace. Before
/// fb3163f: no window (the worker was answered after a 773 ms stall).
///
/// Root cause: `Driver::watch` (transport-unix/src/event_loop.rs:1418)
/// refuses to watch a pid whose end is pending, so `Manager::holder_for`
/// (core/src/manager.rs:2132, :2154-2165) charges the registration to the
/// connection's holder for untrusted pids and records the alias
/// (conn, pid) -> that holder. The alias outlives the pending end: every
/// later frame of the worker finds it (`known_holder`), so the worker is
/// never watched, and its holds end only with the connection.
///
/// Suggested fix: as finding 1 (watches by generation), so the worker is
/// watched from its first frame. Short of that: do not keep an alias made
/// because the pid's end was pending, and at `act_on_end(pid)` move the
/// holds charged meanwhile by a writer that is the new process (its start
/// time is known from the frame's credentials) to a watched holder.
///
/// Run: `LIBSHM_REQUIRE_ROOT=1 cargo test -p libshm --test hostile20 --
/// --include-ignored a_worker_given_a_pending_pid`
///
/// Fixed the same way as finding 1.
#[test]
fn a_worker_given_a_pending_pid_is_watched_and_its_names_reaped_when_it_dies() {
    if !common::in_private_pid_namespace(
        "a_worker_given_a_pending_pid_is_watched_and_its_names_reaped_when_it_dies",
    ) {
        return;
    }
    const QUEUED_FRAMES: usize = 600_000;
    let daemon = manager_lingering("3s");
    let control_name = name_of("wcontrol");
    let reused_name = name_of("wreused");
    let _cleanup = Cleanup(vec![control_name.clone(), reused_name.clone()]);
    // The family's connection; it has spoken, and lives to the end.
    let mut family = daemon.connect();
    assert!(family.answers_registration(&unique_name("h20family")));

    // Control: a worker that crashes with its segment registered and mapped
    // (refcount 1) has it reaped once it is gone.
    let mut control = Script::worker(&mut family, &control_name, None);
    control.kill();

    let (shared, pid) = end_pending_behind_a_long_queue(&daemon, QUEUED_FRAMES);
    let began = Instant::now();
    let mut reuser = Script::worker(&mut family, &reused_name, Some(pid));
    let pending_after = unread_by_manager(&shared.stream);
    let registered_after = began.elapsed();
    reuser.kill();
    assert!(
        wait_until(Duration::from_secs(30), || unread_by_manager(
            &shared.stream
        ) == 0),
        "the queue is read"
    );
    let read_in = began.elapsed();
    eprintln!(
        "queue read in {read_in:.2?}; the worker given pid {pid} was answered \
         {registered_after:.2?} in, {pending_after} bytes still unread, and killed"
    );
    // Ends are acted on in the round they are noticed since the deferral
    // was reverted: the new process is served after the old end (nothing
    // left unread then), and what follows must hold either way.
    let _ = pending_after;
    let control_reaped = wait_until(Duration::from_secs(8), || !shm_exists(&control_name));
    assert!(
        control_reaped,
        "control: {control_name}, left by a crashed worker, was not reaped:\n  {}",
        story(&daemon.handle, &control_name)
    );
    let reaped = wait_until(Duration::from_secs(8), || !shm_exists(&reused_name));
    let waited = began.elapsed();
    assert!(family.answers_registration(&unique_name("h20family_alive")));
    let told = story(&daemon.handle, &reused_name);
    drop(family);
    let reaped_once_closed = wait_until(Duration::from_secs(10), || !shm_exists(&reused_name));
    assert!(
        reaped,
        "{reused_name}, left by a crashed worker (pid {pid}, given while the old process's end \
         waited on its queue) on its family's live connection, was not reaped {waited:.1?} \
         after it died (once the connection closed: reaped {reaped_once_closed}); the same \
         from a worker with a pid of its own was:\n  {told}"
    );
}

/// Run by a process of ours: connects to the manager at `argv[1]` with a
/// 1 MiB send buffer, registers `argv[2]` (answered), creates it and leaves
/// it in transit (refcount 1, unmapped), prints its pid; at a line on stdin
/// writes `argv[4]` registrations of names under `argv[3]` (a pipelined
/// client's, their answers never read) and then its release of `argv[2]`
/// in one write, and exits at once.
const PIPELINED_THEN_EXITS: &str = r#"
import os, socket, struct, sys
handle, name, junk, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pid = os.getpid()
def frame(free, n):
    b = n.encode()
    return struct.pack("=iB", pid, free) + b + b"\0" * (63 - len(b))
s = socket.socket(socket.AF_UNIX)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
s.connect(handle)
s.sendall(frame(0, name))
assert s.recv(2) == b"OK"
fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.ftruncate(fd, 128)
os.pwrite(fd, struct.pack("=i", 1), 0)
os.close(fd)
print(pid, flush=True)
sys.stdin.readline()
s.sendall(b"".join(frame(0, "%s_%d" % (junk, i)) for i in range(count)) + frame(1, name))
os._exit(0)
"#;

/// Finding 5. A client that exits with answers owed and more than a
/// round's worth queued on its socket loses the tail of its queue, its last
/// releases among it: a name it had put in transit is unlinked.
///
/// What happened: a client registered a name (answered), created it and
/// left it in transit (refcount 1, unmapped), then wrote 4,000
/// registrations (a pipelined client's, answers not read) and its release
/// of the name in one write, and exited, while the manager was stopped.
/// Once continued, the manager read a round's worth (two 64 KiB reads: the
/// exit's `catch_up` and the ready socket's), queued the answers, and its
/// send failed (`reply failed: Broken pipe` in its debug log); the
/// connection was closed with ~140 KB unread, the client's end then acted
/// on: the name was an orphan (refcount 1, dead 1) 0.4 s later and
/// unlinked at 1.4 s. The control in the same run, 100 registrations
/// ahead of the release (one round's worth), kept its name. Before
/// fb3163f both were kept: the exit read everything queued on the
/// connection before anything was sent (`read_queued`).
///
/// Root cause: `Driver::settle_dirty` hands a connection whose send failed
/// to `Driver::hang_up` (transport-unix/src/event_loop.rs:1400-1401), which
/// treats it as an end of file: it stops reading the socket
/// (`readiness.remove`, and `is_read` is false) and, with no journal owed,
/// disconnects at once (:963-966), however many bytes are still queued on
/// it; a failed send (`EPIPE`: the peer is gone) says nothing about what it
/// wrote before it went. The end waiting on that connection is then acted
/// on as if it had been read (`PendingEnds::read_to(conn, None)`), now
/// that `catch_up` reads only a round's worth per round.
///
/// Suggested fix: on a failed send, drop the backlog and stop sending, but
/// keep reading: mark the socket's queue end (`read.socket` + `FIONREAD`)
/// as `hang_up` marks the journal's, read it a round's worth per round
/// (`is_read` true until then), and disconnect at that mark or at end of
/// file, whichever comes first.
///
/// Run: `LIBSHM_REQUIRE_ROOT=1 cargo test -p libshm --test hostile20 --
/// --include-ignored a_client_that_exits_with_answers_owed`
///
/// Fixed: a reply that fails because the peer closed stops the writing only
/// (`Driver::stop_writing`); the socket is read to its end of file.
#[test]
fn a_client_that_exits_with_answers_owed_and_a_long_queue_has_its_last_release_read() {
    let daemon = manager_lingering("3s");
    let _bystander = daemon.bystander();
    let mut report = String::new();
    let mut lost = Vec::new();
    for count in [100, 4_000] {
        let name = unique_name("h20pipelined");
        let _cleanup = Cleanup(vec![name.clone()]);
        let junk = unique_name("h20pjunk");
        let mut client = Script::start(
            PIPELINED_THEN_EXITS,
            &[&daemon.handle, &name, &junk, &count.to_string()],
            None,
            None,
        );
        daemon.while_stopped(|| {
            writeln!(client.child.stdin.as_mut().unwrap()).unwrap();
            assert!(
                client.child.wait().unwrap().success(),
                "the client's last write"
            );
        });
        // The grace, a look, and slack.
        std::thread::sleep(Duration::from_secs(4));
        let kept = shm_exists(&name);
        report.push_str(&format!(
            "  {count} registrations ahead of the release: kept {kept}\n"
        ));
        if !kept {
            lost.push(format!("{name}: {}", story(&daemon.handle, &name)));
        }
    }
    eprintln!("{report}");
    assert!(
        lost.is_empty(),
        "names in transit whose release was the last frame of a client that exited with \
         answers owed were unlinked:\n{report}  {}",
        lost.join("\n  ")
    );
}

/// Finding 6 (older than fb3163f, which kept it). Frames committed to a
/// ring after its connection hung up are read, up to 1,023 of them, though
/// `Driver::hang_up` says no more is read ("the memory may still be written
/// by a forked copy of it"); the holds they make end with the connection
/// at once, and a live process's mapped segment is unlinked.
///
/// What happened: a journal client committed 64,513 frames (63 rounds'
/// worth and one) and hung up while the manager was stopped; 30 ms after
/// it was continued, a process that kept the ring's memory (a fork of the
/// client, here the test) committed registrations of a segment a live
/// process maps (refcount 1). The manager read 1,023 of them in the batch
/// that read the last frame owed, charged them to the live process on the
/// connection, and ended them when it disconnected it a moment later: an
/// orphan (refcount 1, dead 1,023) at ~0.4 s, unlinked at 1.4-1.5 s while
/// its process maps it. Frames left unread would have left the name
/// unknown to the manager, never unlinked by it. The manager before fb3163f
/// did the same (its `drain_at_end` overshot the same way), but read the
/// ring in one round, so a fork had less time to commit behind the mark.
///
/// Root cause: `Driver::drain` (transport-unix/src/event_loop.rs:914) reads
/// `JOURNAL_FRAMES_PER_ROUND` frames whatever `hung_up_at` says, and only
/// then compares (:924-926): the batch that reaches the mark reads up to
/// 1,023 frames past it.
///
/// Suggested fix: for a hung-up client, read at most `hung_up_at -
/// read.journal` frames (`min` with the round's worth) in `drain`.
///
/// Run: `LIBSHM_REQUIRE_ROOT=1 cargo test -p libshm --test hostile20 --
/// --include-ignored frames_committed_to_a_ring_after`
///
/// Fixed: `Driver::drain` reads a hung-up client's ring no further than
/// `hung_up_at`.
#[test]
fn frames_committed_to_a_ring_after_its_connection_hung_up_are_not_taken() {
    let daemon = manager_lingering("3s");
    let _bystander = daemon.bystander();
    // A live process of ours mapping its segment (refcount 1), whose frames
    // a fork that kept the ring's memory commits after the hang-up.
    let writer = Sleeper::spawn();
    let name = unique_name("h20afterhangup");
    let _cleanup = Cleanup(vec![name.clone()]);
    common::create_segment(&name, 1, 64);
    let JournalClient { stream, memory } = JournalClient::attach(&daemon.handle, 1 << 16);
    let journal = memory.journal();
    let junk = segment_name(&unique_name("h20hjunk"));
    // Committed before the hang-up: the round's worth the manager reads
    // before it sees the end of file (its journals are due: it was stopped
    // past their interval), then 62 rounds' worth and one frame.
    const BEFORE: u32 = 63 * 1_024 + 1;
    daemon.while_stopped(|| {
        for _ in 0..BEFORE {
            journal
                .append(&Frame::release(writer.pid(), junk).to_raw())
                .expect("room");
        }
        drop(stream);
        std::thread::sleep(Duration::from_millis(150));
    });
    std::thread::sleep(Duration::from_millis(30));
    let frame = Frame::register(writer.pid(), segment_name(&name)).to_raw();
    let start = Instant::now();
    let mut after: u32 = 0;
    while after < 4_096 && start.elapsed() < Duration::from_secs(3) {
        if journal.append(&frame).is_ok() {
            after += 1;
        } else {
            std::thread::yield_now();
        }
    }
    let appended_in = start.elapsed();
    // The grace, a look, and slack.
    std::thread::sleep(Duration::from_secs(4));
    // Consumed, not all taken: a batch read after the disconnect is skipped.
    let taken = after.saturating_sub(journal.unread().unwrap_or(0));
    eprintln!(
        "{after} registrations committed after the hang-up (in {appended_in:.2?}), {taken} of \
         them consumed"
    );
    assert!(
        shm_exists(&name),
        "{name}, mapped by live pid {} (refcount 1), was unlinked: registrations of it \
         committed to the ring after its connection hung up ({after}, {taken} consumed) were \
         read and ended with the connection:\n  {}",
        writer.pid(),
        story(&daemon.handle, &name)
            .lines()
            .filter(|l| !l.contains("registered"))
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

// --- Withstood -----------------------------------------------------------------

/// A process given a gone sender's pid while that sender's end is pending
/// (its frame read ahead of a 42 MB queue), registering a name on a
/// connection of its own and leaving it in transit, keeps it after the gone
/// sender's end is acted on: it is refused a watch while the end is
/// pending (`Driver::watch`, transport-unix/src/event_loop.rs:1418), so its
/// holds stand for its connection, not for the pid. Without that refusal
/// the gone sender has no pidfd to stand in the way: the new process would
/// be watched under the pid, its holder linked into the gone sender's list,
/// and the gone sender's end (`Manager::pid_exited`) would end it, its name
/// reaped while it lives (as hostile5's first attack did with an end
/// reported a round late). Checked by hand: with that refusal taken out
/// the name was an orphan at t=786 ms, the moment the queue was read, and
/// unlinked at 1.85 s while its process lived.
#[test]
fn a_process_given_a_gone_senders_pending_pid_keeps_its_names_in_transit() {
    if !common::in_private_pid_namespace(
        "a_process_given_a_gone_senders_pending_pid_keeps_its_names_in_transit",
    ) {
        return;
    }
    const QUEUED_FRAMES: usize = 600_000;
    let daemon = manager_lingering("3s");
    let _bystander = daemon.bystander();
    let reused_name = name_of("intransit");
    let _cleanup = Cleanup(vec![reused_name.clone()]);
    let mut shared = daemon.connect();
    force_send_buffer(&shared.stream, 1 << 28);
    let mut pid = 0;
    daemon.while_stopped(|| {
        pid = shared.register_from_exited_child(&[&unique_name("h20gone")]);
        queue_strays(&mut shared, QUEUED_FRAMES);
    });
    let began = Instant::now();
    assert_eq!(
        shared.reply(),
        Some(*b"OK"),
        "the gone sender's registration"
    );
    // It registers, creates, and leaves its name in transit; never closed.
    let mut reuser = Script::closed_for_cause(&daemon.handle, &reused_name, Some(pid));
    let pending_after = unread_by_manager(&shared.stream);
    let registered_after = began.elapsed();
    assert!(
        wait_until(Duration::from_secs(30), || unread_by_manager(
            &shared.stream
        ) == 0),
        "the queue is read"
    );
    let read_in = began.elapsed();
    eprintln!(
        "queue read in {read_in:.2?}; the process given pid {pid} registered {registered_after:.2?} \
         in, {pending_after} bytes still unread"
    );
    // Ends are acted on in the round they are noticed since the deferral
    // was reverted: the new process is served after the old end (nothing
    // left unread then), and what follows must hold either way.
    let _ = pending_after;
    // The linger, the grace, a look, and slack.
    std::thread::sleep(Duration::from_secs(6));
    assert!(reuser.is_alive());
    assert!(
        shm_exists(&reused_name),
        "{reused_name}, in transit from live pid {pid} (given the pid of a gone sender whose \
         end was pending), was unlinked while it lives:\n  {}",
        story(&daemon.handle, &reused_name)
    );
}

/// A journal client hangs up on a full ring whose last committed frames
/// are a watched process's release of a name in transit and, in one case,
/// corrupt frames after it, and that process ends at the same moment: both
/// the hang-up and the end wait for the ring to be read over rounds. The
/// release still counts (the end is acted on only once the ring is read
/// past it): the name, refcount 1 and unmapped, is kept. Had the end been
/// acted on before the ring was read to its mark, the process's hold would
/// have turned dead (1) against the refcount (1): an orphan, unlinked after
/// the 1 s grace, as it was before round 4 fixed the exit reads. The
/// corrupt tail closes the connection for cause once reached (what is
/// before it still counts), and the manager answers a registration on
/// another connection at the end, then idles (an end that never came due
/// would keep it polling without sleeping, a CPU's worth) and exits once
/// its last client leaves. Checked by hand: with ends acted on as
/// soon as they are noticed (`PendingEnds::begin` bypassed), the release
/// came as a stray at t=202 ms and the name was unlinked at 1.15 s.
#[test]
fn a_hang_up_on_a_full_ring_with_the_last_release_of_an_ended_process_keeps_its_name() {
    for corrupt_tail in [false, true] {
        let mut daemon = manager_lingering("3s");
        let mut bystander = daemon.bystander();
        let name = unique_name("h20lastrelease");
        let _cleanup = Cleanup(vec![name.clone()]);
        let mut owner = Sleeper::spawn();
        let mut client = JournalClient::attach(&daemon.handle, 1 << 16);
        client.register(owner.pid(), &name);
        assert_eq!(client.ring(), Some(*b"OK"), "the registration is read");
        common::create_segment(&name, 1, 64);
        let junk = unique_name("h20ringjunk");
        let tail = if corrupt_tail { 20_000 } else { 0 };
        daemon.while_stopped(|| {
            for _ in 0..(65_535 - tail) {
                client.append(Frame::release(owner.pid(), segment_name(&junk)));
            }
            client.append(Frame::release(owner.pid(), segment_name(&name)));
            for _ in 0..tail {
                let mut bad = Frame::release(owner.pid(), segment_name(&junk)).to_raw();
                bad.free = 7;
                client.memory.journal().append(&bad).expect("room");
            }
            owner.kill();
            drop(client);
        });
        // The grace, a look, and slack.
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            shm_exists(&name),
            "{name}, released by its owner at the end of a full ring (corrupt tail: \
             {corrupt_tail}) left by a hang-up as the owner ended, was unlinked:\n  {}",
            story(&daemon.handle, &name)
        );
        assert!(bystander.answers_registration(&unique_name("h20after")));
        // Nothing left waiting: the manager idles, and once its last client
        // leaves it exits (after the 2 s shutdown timeout and, the name being
        // in transit, the 3 s linger).
        let manager = daemon.child.id();
        let cpu_before = cpu_time(manager);
        std::thread::sleep(Duration::from_secs(1));
        let idle_cpu = cpu_time(manager).saturating_sub(cpu_before);
        assert!(
            idle_cpu < Duration::from_millis(200),
            "the manager used {idle_cpu:.2?} of CPU in 1 s once the ring was read"
        );
        drop(bystander);
        assert!(
            daemon.wait_exit(Duration::from_secs(10)).is_some(),
            "the manager did not exit within 10 s of its last client leaving"
        );
    }
}

// --- Stalls -------------------------------------------------------------------

/// Run by a process of ours: connects `argv[2]` times to the manager at
/// `argv[1]`, each connection's send buffer widened to 64 MiB (root's
/// `SO_SNDBUFFORCE`: a one-frame write costs its buffer about 800 bytes);
/// forks `argv[5]` children that only
/// sleep, and registers a name for each on every connection (it speaks for
/// its children: they are watched, with a holder on every connection),
/// printing their pids on one line; then forks `argv[3]` writers sharing
/// the connections, as a pool's workers share their parent's. Each writer
/// writes a stray release (a name nobody holds, under its own pid) on
/// every connection in turn, one frame a write, then sleeps `argv[4]`
/// seconds, over and over: a writer's run of bytes is one frame. Prints
/// `ready`, and ends them all when its stdin closes.
const WRITERS_AND_MEMBERS_THAT_END: &str = r#"
import os, socket, struct, sys, time
handle, conns, writers, pause, members, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
def frame(pid, free, name):
    b = name.encode()
    return struct.pack("=iB", pid, free) + b + b"\0" * (63 - len(b))
socks = []
for i in range(conns):
    s = socket.socket(socket.AF_UNIX)
    s.setsockopt(socket.SOL_SOCKET, 32, 1 << 26)  # SO_SNDBUFFORCE (root)
    s.connect(handle)
    socks.append(s)
kids = []
for m in range(members):
    pid = os.fork()
    if pid == 0:
        while True:
            time.sleep(60)
    kids.append(pid)
    for i, s in enumerate(socks):
        s.sendall(frame(pid, 0, "%s_m%d_%d" % (tag, m, i)))
        assert s.recv(2) == b"OK"
print(" ".join(str(k) for k in kids), flush=True)
fds = [s.fileno() for s in socks]
for w in range(writers):
    pid = os.fork()
    if pid == 0:
        try:
            f = frame(os.getpid(), 1, "%s_w%d" % (tag, w))
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
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
for pid in kids:
    os.waitpid(pid, 0)
"#;

/// The probe's round trips, 2 ms apart, for `how_long`.
fn probe_for(probe: &mut Probe, how_long: Duration) -> RoundTrips {
    let start = Instant::now();
    let mut trips = RoundTrips::default();
    while start.elapsed() < how_long {
        probe.round_trip_into(&mut trips);
        std::thread::sleep(Duration::from_millis(2));
    }
    trips
}

/// Finding 4. Ends on connections shared by writers taking turns (a frame
/// a run, as a pool's workers write) make every round cost about 17 times
/// what a round costs beside the same frames from one live writer, for as
/// long as the ends wait (seconds): another client waits a round for each
/// answer.
///
/// What happened: 4 connections (send buffers widened to 64 MiB), shared by
/// 300 writers writing stray releases one frame a write, each connection
/// with a holder of 2 sleeping processes; the manager was stopped 2 s
/// (queues fill) and one of the processes killed. After it was continued,
/// a probe's registrations took a median of 100-103 ms (13-15 answered in
/// 1.5 s, max 127-313 ms); beside the writers alone (same stop, no end) a
/// median of 0.29 ms, max 7 ms; beside the same kind of frames queued by
/// one live writer per connection (75,000 each) a median of 0.06 ms, max
/// 11.5 ms. With 200 writers (fewer than `WRITERS_REMEMBERED`) the median
/// was 39-47 ms; with 12 connections 320-335 ms. (Before fb3163f the same
/// end read every queue in one round: 9.5-9.9 s with nobody answered, so
/// this is far better; it is still a stall of every client.)
///
/// Root cause: `Driver::catch_up` (transport-unix/src/event_loop.rs:1063)
/// reads up to a round's worth of bytes of each connection with a mark
/// (64 KiB), calling `read_from` again after each short read; a read ends at
/// each change of writer (`sender::receive`), so with one-frame runs that
/// is ~960 reads per connection per round, where the round's other path
/// (`read_from` with `READS_PER_ROUND`, :856-894) stops at the first short
/// read. Each read costs a `recvmsg` with credentials and the writer's
/// bookkeeping (`Client::note_writer_started`: with more than 256 writers
/// taking turns, a `/proc/<pid>/stat` read for nearly every run), ~25 us
/// here against ~1.5 us a frame in a 64 KiB read of one writer.
///
/// Suggested fix: budget `catch_up` in reads as well as bytes (say 16 reads
/// per connection and a few hundred in all per round), so an end on
/// connections of one-frame runs waits more rounds rather than making each
/// round long; and make a run cheaper (writers remembered in a map, the
/// start time read once per writer per round). Note that a longer wait
/// widens the window of findings 1 to 3 until they are fixed.
///
/// Still open after the deferral was reverted (ends are read in the round
/// they are noticed again, for findings 1 to 3): the stall is one round
/// again, 1.9 and 3.3 s for two ends here, which the median missed, so the
/// test bounds the longest wait too.
///
/// Run: `LIBSHM_REQUIRE_ROOT=1 cargo test -p libshm --test hostile20 --
/// --include-ignored ends_on_connections_shared` (`H20_TURNS_CONNS`,
/// `H20_TURNS_WRITERS` set other figures).
#[ignore = "finding 4: ends on connections of writers taking turns make every round ~17x longer while they wait"]
#[test]
fn ends_on_connections_shared_by_writers_taking_turns_do_not_stall_other_clients() {
    let figure = |key: &str, default: usize| {
        std::env::var(format!("H20_TURNS_{key}"))
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let conns = figure("CONNS", 4);
    let writers = figure("WRITERS", 300);
    const MEMBERS: usize = 2;
    const STOPPED: Duration = Duration::from_millis(2_000);
    const MEASURED: Duration = Duration::from_millis(1_500);

    // The same frames from one live writer per connection, as queued.
    let control_daemon = Daemon::start_with_stderr(&[], Stdio::null());
    let mut floods: Vec<RawClient> = (0..conns).map(|_| control_daemon.connect()).collect();
    for flood in &floods {
        force_send_buffer(&flood.stream, 1 << 23);
    }
    let mut probe = Probe::connect(&control_daemon.handle);
    probe.round_trip();
    control_daemon.while_stopped(|| {
        for flood in &mut floods {
            queue_strays(flood, 75_000);
        }
    });
    let control = probe_for(&mut probe, MEASURED);
    drop((floods, probe, control_daemon));

    let mut daemon = Daemon::start_with_stderr(&[], Stdio::null());
    let manager = daemon.child.id();
    let mut attack = common::attack::Attack::start(
        WRITERS_AND_MEMBERS_THAT_END,
        &[
            daemon.handle.clone(),
            conns.to_string(),
            writers.to_string(),
            "0.01".to_owned(),
            MEMBERS.to_string(),
            unique_name("h20turns"),
        ],
    );
    let members: Vec<i32> = attack
        .line()
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect();
    assert_eq!(attack.line(), "ready");
    std::thread::sleep(Duration::from_millis(1_000));
    let mut probe = Probe::connect(&daemon.handle);
    let mut report = String::new();
    let mut quiet = RoundTrips::default();
    let mut ends = RoundTrips::default();
    let phases = std::iter::once(None).chain(members.iter().copied().map(Some));
    for member in phases {
        let cpu_before = cpu_time(manager);
        daemon.while_stopped(|| {
            std::thread::sleep(STOPPED);
            if let Some(member) = member {
                // SAFETY: a plain signal to a process of ours.
                assert_eq!(unsafe { libc::kill(member, libc::SIGKILL) }, 0);
            }
        });
        let trips = probe_for(&mut probe, MEASURED);
        let cpu = cpu_time(manager).saturating_sub(cpu_before);
        report.push_str(&format!(
            "  member ended: {member:?}: manager cpu {cpu:.2?}; {trips}\n"
        ));
        let into = if member.is_some() {
            &mut ends
        } else {
            &mut quiet
        };
        into.0.extend(trips.0);
        into.1.extend(trips.1);
    }
    attack.stop();
    assert!(daemon.is_running(), "the manager lives");
    eprintln!(
        "same frames, one live writer per connection: {control}\nwriters taking turns:\n\
         {report}quiet: {quiet}\nends:  {ends}"
    );
    // A round per answer at most a few times what the same frames from
    // one live writer cost at worst (p99): the median for ends read over
    // rounds, the longest wait for ends read in one round.
    let limit = Duration::from_millis(25).max(control.percentile(99.0) * 4);
    assert!(
        ends.percentile(50.0) <= limit && ends.max() <= limit * 8,
        "a client waited a median of {:.2?}, at most {:.2?} (limits {limit:.2?}, {:.2?}) while \
         ends waited on {conns} connections shared by {writers} writers taking turns; beside \
         the same frames from one live writer per connection: {control}; beside the writers \
         alone: {quiet}\n{report}",
        ends.percentile(50.0),
        ends.max(),
        limit * 8,
    );
}

/// Finding 7 (older than fb3163f, which does not bound it). A watched
/// process that ends with frames in its ring costs the manager time
/// quadratic in them: every frame read makes a new holder and walks all the
/// ones made before it, and everyone else waits.
///
/// What happened: a journal client committed registrations by a watched
/// process (one name, never created), and the process was killed, while
/// the manager was stopped. Reading the ring took 3.4 s for 4,000 frames,
/// 4.9 s for 8,000, 22.4 s for 16,000 (quadratic; the manager at a CPU
/// meanwhile), another client's registration waiting up to 2.6 s, 2.6 s
/// and 7.6 s; 60,000 frames (a ring nearly full, as a worker killed while
/// it registers leaves it) were not read in 120 s and the other client got
/// no answer in 10 s. The same rings by the process alive: read in 65-160
/// ms, the other client waiting at most 8-51 ms. Before fb3163f: the same
/// (2.59 s for 4,000 frames, in one round).
///
/// Root cause: `Manager::known_holder` (core/src/manager.rs:2322-2324)
/// finds the frame's pid ended (`pid_has_ended`, the pidfd says so) and
/// calls `pid_exiting`, which walks every holder tied to the pid
/// (core/src/manager.rs:1260-1277) and takes the last one out of the index;
/// `holder_for` (:2137) then makes a new holder for the frame (the watch is
/// refused, the pid is gone) and remembers it as the connection's last
/// (:2179). The next frame finds that holder, the pid ended, and walks
/// again: k holders after k frames, k steps for the next. `PendingEnds`
/// spreads the frames over rounds, 1,024 a round, but a round late in the
/// ring still costs 1,024 walks of up to 65,536 holders. (The pid's end,
/// acted on once, then ends 4,000 to 65,536 holders, a note and a log line
/// each.)
///
/// Suggested fix: while a pid's end is pending, keep one holder for its
/// late frames per connection (made once, outside the index, found by
/// `holder_for` through the pid's entry), and make `pid_exiting` run once
/// per end (a flag on `PidEntry`), marking holders tied to the pid later
/// as they are linked.
///
/// Run: `LIBSHM_REQUIRE_ROOT=1 cargo test -p libshm --test hostile20 --
/// --include-ignored a_ring_of_an_ended_watched_process` (`H20_FRAMES` sets
/// the frames, 8,000 by default).
///
/// Fixed: a holder made for a sender already gone is exiting from the start
/// and takes its later frames (`Manager::holder_for`, `known_holder`):
/// 8,000 frames read in 18 ms, another client's longest wait 19 ms.
#[test]
fn a_ring_of_an_ended_watched_process_is_read_without_stalling_others() {
    let frames: usize = std::env::var("H20_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8_000);
    let mut measured = Vec::new();
    for ends in [false, true] {
        let daemon = Daemon::start_with_stderr(&[], Stdio::null());
        let manager = daemon.child.id();
        let mut owner = Sleeper::spawn();
        let mut client = JournalClient::attach(&daemon.handle, 1 << 16);
        client
            .stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let name = unique_name("h20ended");
        client.register(owner.pid(), &name);
        assert_eq!(client.ring(), Some(*b"OK"), "the owner is watched");
        let mut probe = Probe::connect(&daemon.handle);
        probe.round_trip();
        daemon.while_stopped(|| {
            for _ in 0..frames {
                client.register(owner.pid(), &name);
            }
            if ends {
                owner.kill();
            }
        });
        let cpu_before = cpu_time(manager);
        let running = probe.spawn(Duration::from_millis(5));
        let start = Instant::now();
        assert_eq!(client.ring(), Some(*b"OK"), "the ring is read");
        let took = start.elapsed();
        std::thread::sleep(Duration::from_millis(300));
        let cpu = cpu_time(manager).saturating_sub(cpu_before);
        measured.push((took, cpu, running.finish()));
    }
    let [
        (alive_took, alive_cpu, alive),
        (ended_took, ended_cpu, ended),
    ] = &measured[..]
    else {
        unreachable!()
    };
    let report = format!(
        "{frames} frames by the process alive: read in {alive_took:.2?} (manager cpu \
         {alive_cpu:.2?}), probe {alive}\n{frames} frames by the process ended: read in \
         {ended_took:.2?} (manager cpu {ended_cpu:.2?}), probe {ended}"
    );
    eprintln!("{report}");
    let limit = Duration::from_millis(500).max(alive.max() * 8);
    assert!(
        ended.max() <= limit,
        "another client waited {:.2?} (limit {limit:.2?}) while a ring of {frames} frames by a \
         watched process that ended was read\n{report}",
        ended.max()
    );
}
