//! Hostile round 13, against 028bb66: the tie of a connection closed for
//! cause to the process that connected it (`Effects::watch_peer`,
//! core/src/manager.rs `close_for_cause`), when that process is no longer
//! the one that holds the connection.
//!
//! Each "Finding" test fails on 028bb66; its comment says what went wrong
//! and why. Both findings are fixed: the peer is known by its start time and,
//! once it has ended, the last writer the kernel named is tied instead
//! (finding 1); a peer in a nested pid namespace is watched (finding 2). The others are attacks the code
//! withstands, kept because they fail if it stops withstanding them.
//!
//! Tests that need root fail without it under `LIBSHM_REQUIRE_ROOT=1`.
//! Names carry this run's id, and everything a test puts in `/dev/shm` is
//! removed however it ends.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::handed::{
    connection_from_exited_process, half_frame_from_exited_writer, handed_connection,
    malformed_frame_from_a_live_writer, manager_lingering,
};
use common::{
    Cleanup, Daemon, NestedWorker, RawClient, SHM_MANAGER, in_private_pid_namespace, one_at_a_time,
    shm_exists, sleeper_with_pid, story, unique_name, wait_until,
};

/// A manager that lingers 3 s, where a test expects prompt reaping.
fn manager() -> Daemon {
    manager_lingering("3s")
}

/// What closes a connection for cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// A frame whose free flag is 7.
    Malformed,
    /// Half a frame, the rest never sent (`--frame-timeout 2s`).
    Stalled,
}

impl Cause {
    /// The bad bytes come from a process that ends right after, not from
    /// the test: a live process that wrote on the connection keeps its
    /// names once it is closed (the tie passes to it), and the test lives
    /// on.
    fn close(self, conn: &mut RawClient) {
        let fd = conn.stream.as_raw_fd();
        match self {
            Self::Malformed => {
                let mut writer = malformed_frame_from_a_live_writer(fd);
                assert!(
                    conn.is_closed_by_peer(Duration::from_secs(10)),
                    "{self:?}: the connection is closed for cause"
                );
                drop(writer.stdin.take());
                assert!(writer.wait().unwrap().success());
            }
            Self::Stalled => {
                half_frame_from_exited_writer(fd);
                assert!(
                    conn.is_closed_by_peer(Duration::from_secs(10)),
                    "{self:?}: the connection is closed for cause"
                );
            }
        }
    }
}

/// How the connection a nested worker shares is closed for cause after the
/// process that connected it handed it on and exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Afterwards {
    /// Nobody got the connecting process's pid.
    PidFree,
    /// A process of ours got it, and is killed once the connection is
    /// closed.
    PidReusedByAStranger,
}

/// The connection is made by a process that hands it on (`SCM_RIGHTS`) to
/// the test and exits, as a launcher that passes its connection to the
/// family it starts, or a family whose first process died before its
/// workers. A worker in a pid namespace of its own shares it; its frames'
/// pid names nobody here, so its registration is the connection's (held as
/// long as the connection). The test (the family, alive) then sends a
/// malformed frame, and `close_for_cause` ties the connection's holder to
/// the connecting process's pid as `SO_PEERCRED` gave it at connect time
/// (`Effects::watch_peer`). That process is gone: its pid is free, and the
/// holder ends at once, or a stranger of ours has it, and the holder is tied
/// to the stranger and ends when the stranger does. Either way the worker's
/// segment, mapped by a live worker or in transit, is unlinked while the
/// worker and the family that shares the connection live.
fn handed_connection_closed_for_cause(afterwards: Afterwards, cause: Cause) {
    let daemon = manager();
    let _bystander = daemon.bystander();
    let (mut family, peer) = connection_from_exited_process(&daemon.handle);
    assert!(common::process_gone(peer as u32));
    let name = unique_name("h13handed");
    let _cleanup = Cleanup(vec![name.clone()]);
    // A pid nobody has here.
    let q = 30_000;
    assert!(common::process_gone(q as u32));
    let mut worker = NestedWorker::spawn(family.stream.as_raw_fd(), q, &name);
    let mut stranger = (afterwards == Afterwards::PidReusedByAStranger).then(|| {
        let stranger = sleeper_with_pid(peer);
        assert_eq!(stranger.pid(), peer);
        stranger
    });
    cause.close(&mut family);
    std::thread::sleep(Duration::from_secs(2));
    if let Some(stranger) = stranger.as_mut() {
        stranger.kill();
    }
    // Grace (1 s), the look, and slack.
    std::thread::sleep(Duration::from_secs(3));
    let while_mapped = shm_exists(&name);
    worker.queue();
    std::thread::sleep(Duration::from_secs(3));
    let in_transit = shm_exists(&name);
    let told = story(&daemon.handle, &name);
    drop(worker);
    assert!(
        while_mapped && in_transit,
        "{afterwards:?}, {cause:?}: {name}, registered by a live worker in a pid namespace of its own on \
         its family's connection, was unlinked (while mapped: {}, in transit: {}) after the \
         connection, handed on by the process that made it (pid {peer}, since exited), was \
         closed for cause by the family. The manager's story:\n  {told}",
        !while_mapped,
        !in_transit,
    );
}

// --- Finding 1: the peer is gone, or is a stranger ------------------------------

#[test]
fn a_handed_connection_closed_for_cause_keeps_a_nested_workers_segment() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "a_handed_connection_closed_for_cause_keeps_a_nested_workers_segment",
    ) {
        return;
    }
    handed_connection_closed_for_cause(Afterwards::PidFree, Cause::Malformed);
}

#[test]
fn a_stranger_with_the_connecting_processes_pid_does_not_end_a_nested_workers_segment() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "a_stranger_with_the_connecting_processes_pid_does_not_end_a_nested_workers_segment",
    ) {
        return;
    }
    handed_connection_closed_for_cause(Afterwards::PidReusedByAStranger, Cause::Malformed);
}

#[test]
fn a_handed_connection_closed_for_a_stalled_frame_keeps_a_nested_workers_segment() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "a_handed_connection_closed_for_a_stalled_frame_keeps_a_nested_workers_segment",
    ) {
        return;
    }
    handed_connection_closed_for_cause(Afterwards::PidFree, Cause::Stalled);
}

// --- Withstood: the connecting process alive elsewhere --------------------------

/// The connecting process hands the connection on (`SCM_RIGHTS`) to a
/// process that is neither it nor its child (the test) and stays alive. A
/// nested worker registers on the connection, which the test then gets
/// closed for cause (a malformed frame, a stalled one): the worker's segment
/// is tied to the connecting process (the kernel's word, whoever wrote the
/// bad bytes) and lives as long as that process, then goes (no leak).
#[test]
fn a_handed_connection_closed_for_cause_ties_its_holds_to_the_live_connecting_process() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "a_handed_connection_closed_for_cause_ties_its_holds_to_the_live_connecting_process",
    ) {
        return;
    }
    for cause in [Cause::Malformed, Cause::Stalled] {
        let daemon = manager();
        let _bystander = daemon.bystander();
        let (mut family, mut peer) = handed_connection(&daemon.handle);
        let name = unique_name("h13alive");
        let _cleanup = Cleanup(vec![name.clone()]);
        let q = 30_000;
        assert!(common::process_gone(q as u32));
        let mut worker = NestedWorker::spawn(family.stream.as_raw_fd(), q, &name);
        cause.close(&mut family);
        worker.queue();
        // Grace (1 s), the look, and slack.
        std::thread::sleep(Duration::from_secs(4));
        let kept = shm_exists(&name);
        drop(worker);
        let _ = peer.kill();
        let _ = peer.wait();
        let told = || story(&daemon.handle, &name);
        assert!(
            kept,
            "{cause:?}: {name}, in transit from a nested worker, was unlinked while the \
             process that connected its connection lives: {}",
            told()
        );
        assert!(
            wait_until(Duration::from_secs(10), || !shm_exists(&name)),
            "{cause:?}: {name} outlived the connecting process: {}",
            told()
        );
    }
}

// --- Finding 2: a connecting process in a pid namespace of its own ----------------

/// Run in a pid namespace of its own: connects to the manager at `argv[1]`,
/// registers `argv[2]` under its own `getpid()` (which names nobody to the
/// manager), creates and maps it (refcount 1), prints `mapped`; at a line on
/// stdin sends a malformed frame, waits for the connection's end, prints
/// `closed`, and keeps the mapping until stdin closes.
const CONTAINED_CLIENT: &str = r#"
import mmap, os, socket, struct, sys
handle, name, pid = sys.argv[1], sys.argv[2], os.getpid()
def frame(free):
    b = name.encode()
    return struct.pack("=iB", pid, free) + b + b"\0" * (60 - len(b)) + b"\0" * 3
s = socket.socket(socket.AF_UNIX)
s.connect(handle)
s.sendall(frame(0))
assert s.recv(2) == b"OK"
fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.ftruncate(fd, 128)
m = mmap.mmap(fd, 128)
m[0:4] = struct.pack("=i", 1)
print("mapped", flush=True)
sys.stdin.readline()
s.sendall(frame(7))
s.settimeout(10)
assert s.recv(2) == b""
print("closed", flush=True)
sys.stdin.read()
m.close()
"#;

/// A process in a pid namespace of its own (a container's, sharing the
/// host's `/dev/shm` and the manager's socket) connects and registers a
/// segment it creates and maps; its frames' pid means nothing to the
/// manager, so the registration is held as long as the connection. Then it
/// sends a malformed frame and the connection is closed for cause, the
/// process alive and its segment mapped. `close_for_cause` ties the
/// connection's holder to the connecting process, whose pid `SO_PEERCRED`
/// gave in the manager's own namespace, through `Driver::watch`, which
/// first asks `same_pid_namespace(peer)` (a question about the frames'
/// pids, not the kernel's) and then `is_ours` (`NSpid` levels == 1): both
/// say no for a process in a nested namespace, and the holder ends at once.
/// The segment was unlinked after the grace while its creator mapped it,
/// where a process in the manager's namespace, closed for the same frame,
/// keeps its segment as long as it lives.
///
/// Fixed: `Driver::watch_peer` watches the kernel-given pid without the
/// frames' namespace question, and `PidWatches::watch_peer` trusts a
/// process of a nested namespace. Once the process is killed the segment
/// goes (no leak).
#[test]
fn a_contained_client_closed_for_cause_keeps_its_mapped_segment_while_it_lives() {
    use std::io::{BufRead, BufReader, Write};
    let _serial = one_at_a_time();
    if !common::is_root_or_skip("root, for a pid namespace") {
        return;
    }
    let daemon = manager();
    let _bystander = daemon.bystander();
    let name = unique_name("h13contained");
    let _cleanup = Cleanup(vec![name.clone()]);
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "python3", "-c", CONTAINED_CLIENT])
        .args([&daemon.handle, &name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut line = || lines.next().expect("a line").expect("a line");
    assert_eq!(line(), "mapped");
    writeln!(stdin).unwrap();
    assert_eq!(line(), "closed");
    // Grace (1 s), the look, and slack.
    std::thread::sleep(Duration::from_secs(4));
    let kept = shm_exists(&name);
    let told = story(&daemon.handle, &name);
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        kept,
        "{name}, mapped by its live creator in a pid namespace of its own, was unlinked \
         after the creator's connection was closed for cause. The manager's story:\n  {told}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !shm_exists(&name)),
        "{name} outlived its killed creator: {}",
        story(&daemon.handle, &name)
    );
}

// --- Withstood: a pipe manager told an odd client ---------------------------------

/// A pipe manager started as `ChildPipes` starts one, but with
/// `--client-pid client`: its request pipe's write end and its reply pipe's
/// read end, and the manager itself.
struct PipeManager {
    child: std::process::Child,
    requests: Option<std::fs::File>,
    replies: std::fs::File,
}

impl PipeManager {
    fn spawn(client: i32) -> Self {
        use std::io::{BufRead, BufReader};
        use std::os::unix::process::CommandExt;
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: both are fresh descriptors of ours.
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
        };
        // Above 4, so that `dup2` moves them (a `dup2` onto itself would
        // leave them close-on-exec).
        let above_4 = |fd: OwnedFd| {
            // SAFETY: duplicates a descriptor of ours; the result is ours.
            let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
            assert!(high >= 10, "F_DUPFD_CLOEXEC");
            // SAFETY: as above.
            unsafe { OwnedFd::from_raw_fd(high) }
        };
        let (request_read, request_write) = pipe();
        let (reply_read, reply_write) = pipe();
        let (request_read, reply_write) = (above_4(request_read), above_4(reply_write));
        let (into_3, into_4) = (request_read.as_raw_fd(), reply_write.as_raw_fd());
        let mut command = Command::new(SHM_MANAGER);
        command
            .args([
                "--transport",
                "pipe",
                "--pipe-fds",
                "3,4",
                "--reap-grace",
                "1s",
            ])
            .args(["--client-pid", &client.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: only `dup2`, async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(into_3, 3) < 0 || libc::dup2(into_4, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("shm-manager");
        drop((request_read, reply_write));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line,
            format!("pipe:{}\n", child.id()),
            "--client-pid {client}: the handshake"
        );
        Self {
            child,
            requests: Some(request_write.into()),
            replies: reply_read.into(),
        }
    }

    fn register_as(&mut self, pid: i32, name: &str) {
        use std::io::{Read, Write};
        self.requests
            .as_mut()
            .unwrap()
            .write_all(&common::frame_from(pid, 0, name))
            .unwrap();
        let mut reply = [0u8; 2];
        self.replies.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"OK", "registration of {name} for pid {pid}");
    }
}

impl Drop for PipeManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipe manager whose `--client-pid` names init, a thread of ours, a
/// zombie child of ours, or nobody: it serves anyway; what its client (the
/// test, whose pid is none of those) registers lasts as long as the pipe,
/// what is registered for the odd pid neither outlives the pipe nor ends
/// what the client holds; at end of file it unlinks everything and exits.
#[test]
fn a_pipe_manager_named_an_odd_client_serves_and_neither_loses_nor_leaks() {
    let _serial = one_at_a_time();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // SAFETY: `gettid` has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        let _ = end_rx.recv();
    });
    let tid = tid_rx.recv().unwrap();
    let mut zombie = Command::new("true").spawn().unwrap();
    let zombie_pid = zombie.id() as i32;
    assert!(wait_until(Duration::from_secs(10), || {
        common::process_gone(zombie_pid as u32)
    }));
    let nobody = (1..100)
        .map(|i| 4_000_000 - i)
        .find(|&pid| common::process_gone(pid as u32))
        .unwrap();
    for (what, client) in [
        ("init", 1),
        ("a thread", tid),
        ("a zombie", zombie_pid),
        ("nobody", nobody),
    ] {
        let mut manager = PipeManager::spawn(client);
        let ours = unique_name("h13pipeours");
        let odd = unique_name("h13pipeodd");
        let _cleanup = Cleanup(vec![ours.clone(), odd.clone()]);
        manager.register_as(std::process::id() as i32, &ours);
        common::create_segment(&ours, 1, 64);
        manager.register_as(client, &odd);
        common::create_segment(&odd, 1, 64);
        // Grace (1 s) and slack.
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            shm_exists(&ours),
            "--client-pid {client} ({what}): {ours}, registered by the live client on an \
             open pipe, was unlinked"
        );
        // End of file on its requests, as when the client exits.
        manager.requests = None;
        let exited = wait_until(Duration::from_secs(10), || {
            manager.child.try_wait().unwrap().is_some()
        });
        drop(manager);
        assert!(
            exited,
            "--client-pid {client} ({what}): the manager did not exit at end of file"
        );
        assert!(
            !shm_exists(&ours) && !shm_exists(&odd),
            "--client-pid {client} ({what}): left behind at exit: {ours}: {}, {odd}: {}",
            shm_exists(&ours),
            shm_exists(&odd)
        );
    }
    zombie.wait().unwrap();
    drop(end_tx);
    thread.join().unwrap();
}
