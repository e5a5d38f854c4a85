//! Hostile round 12, against e228187: the watch by polling that reads a
//! zombie leader's thread count (transport-unix/src/pid_watch.rs), frames
//! whose writer does not speak for their pid (`Effects::speaks_for`,
//! core/src/manager.rs), and the pipe manager that holds its client before
//! its handshake (`ClientProcess::hold`).
//!
//! The watch by polling runs in the real manager here: [`without_pidfds`]
//! starts it under a seccomp filter that fails `pidfd_open` with `ENOSYS`,
//! as an old kernel or a sandbox would.
//!
//! Each "Finding" test failed on e228187 and says what went wrong and why
//! (both are fixed now). The others are attacks the code
//! withstands, kept because they fail if it stops withstanding them.
//!
//! Tests that need root fail without it under `LIBSHM_REQUIRE_ROOT=1`.
//! Names carry this run's id, and everything a test puts in `/dev/shm` is
//! removed however it ends.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::{
    Cleanup, Daemon, SHM_MANAGER, create_segment, frame, in_private_pid_namespace, one_at_a_time,
    shm_exists, story, unique_name, wait_until,
};

// --- Running without pidfds ----------------------------------------------------

/// Makes `command` run under a seccomp filter that fails `pidfd_open` with
/// `ENOSYS` (x86-64 only; other architectures' calls pass untouched), so
/// that the manager falls back to watching processes by polling `/proc`.
fn without_pidfds(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: only `prctl`, async-signal-safe, between fork and exec, on a
    // filter on the child's stack.
    unsafe {
        command.pre_exec(|| {
            const LOAD_WORD: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
            const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
            const RETURN: u16 = 0x06; // BPF_RET | BPF_K
            const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
            const FAIL: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO
            const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
            const PIDFD_OPEN: u32 = 434;
            let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
            let mut filter = [
                // seccomp_data.arch
                op(LOAD_WORD, 0, 0, 4),
                op(JUMP_IF_EQUAL, 1, 0, AUDIT_ARCH_X86_64),
                op(RETURN, 0, 0, ALLOW),
                // seccomp_data.nr
                op(LOAD_WORD, 0, 0, 0),
                op(JUMP_IF_EQUAL, 0, 1, PIDFD_OPEN),
                op(RETURN, 0, 0, FAIL | libc::ENOSYS as u32),
                op(RETURN, 0, 0, ALLOW),
            ];
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_mut_ptr(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const program,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A manager with `--reap-grace 1s`, under [`without_pidfds`] if `polling`,
/// its log discarded; checks first that the filter does what it says.
fn manager(polling: bool) -> Daemon {
    if polling {
        let output = without_pidfds(Command::new("python3").args([
            "-c",
            "import errno, os\ntry: os.pidfd_open(os.getpid())\n\
             except OSError as e: print(e.errno == errno.ENOSYS)",
        ]))
        .output()
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "True",
            "pidfd_open under the filter: {output:?}"
        );
    }
    let mut command = Command::new(SHM_MANAGER);
    command.args(["--reap-grace", "1s"]).stderr(Stdio::null());
    if polling {
        without_pidfds(&mut command);
    }
    Daemon::spawn(&mut command)
}

/// A Python client of ours running `script` with `args`, its stdout read
/// line by line, stdin piped; killed and reaped on drop.
struct Script {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Script {
    fn spawn(script: &str, args: &[&str]) -> Self {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn line(&mut self) -> String {
        self.lines.next().expect("a line").expect("a line")
    }

    fn tell(&mut self) {
        writeln!(self.stdin.as_mut().unwrap()).unwrap();
    }

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

/// Python's half of a client: `frame(free)` for `name` and its own pid, a
/// connection `s` to the manager at `argv[1]`, and `transit()`, which
/// registers `name` (`argv[2]`), creates it, and leaves it in transit
/// (refcount 1, mapped by nobody, as a tensor put in a queue): only its
/// registration keeps it.
const CLIENT_PRELUDE: &str = r#"
import ctypes, mmap, os, socket, struct, sys, threading, time
handle, name, pid = sys.argv[1], sys.argv[2], os.getpid()
def frame(free):
    b = name.encode()
    return struct.pack("=iB", pid, free) + b + b"\0" * (60 - len(b)) + b"\0" * 3
s = socket.socket(socket.AF_UNIX)
s.connect(handle)
def transit():
    s.sendall(frame(0))
    assert s.recv(2) == b"OK"
    fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, 128)
    m = mmap.mmap(fd, 128)
    m[0:4] = struct.pack("=i", 1)
    m.close()
    os.close(fd)
"#;

/// Leaves its segment in transit, starts a thread that sleeps, prints its
/// pid, and ends its main thread alone (`SYS_exit`, not `exit_group`): the
/// process lives on, its leader a zombie.
const ZOMBIE_LEADER: &str = r#"
transit()
threading.Thread(target=time.sleep, args=(600,)).start()
print(pid, flush=True)
ctypes.CDLL(None).syscall(60, 0)
"#;

/// Leaves its segment in transit and, from a thread other than the main
/// one, execs `sleep` with the connection kept open: the kernel kills the
/// other threads, and the exec'ing thread takes the leader's pid (and its
/// start time).
const EXEC_FROM_THREAD: &str = r#"
transit()
s.set_inheritable(True)
print(pid, flush=True)
threading.Thread(target=os.execv, args=("/bin/sleep", ["sleep", "600"])).start()
time.sleep(600)
"#;

/// Prints the id of a thread it starts, which ends at a line on stdin; then
/// prints `ended` and waits for stdin to close.
const THREAD_ID: &str = r#"
import sys, threading
def run():
    print(threading.get_native_id(), flush=True)
    sys.stdin.readline()
t = threading.Thread(target=run)
t.start()
t.join()
print("ended", flush=True)
sys.stdin.read()
"#;

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A process whose main thread exited while another runs lives: what it
/// registered is in transit (only its registration keeps it), and must
/// outlive the manager's looks at its zombie leader, by pidfd and by
/// polling alike; and go once the process is killed.
#[test]
fn a_client_whose_main_thread_exited_keeps_its_segment_with_or_without_pidfds() {
    let _serial = one_at_a_time();
    for polling in [false, true] {
        let daemon = manager(polling);
        let _bystander = daemon.bystander();
        let name = unique_name("h12zombie");
        let _cleanup = Cleanup(vec![name.clone()]);
        let mut client = Script::spawn(
            &format!("{CLIENT_PRELUDE}{ZOMBIE_LEADER}"),
            &[&daemon.handle, &name],
        );
        let pid: i32 = client.line().parse().unwrap();
        assert_eq!(pid, client.pid());
        assert!(
            wait_until(Duration::from_secs(10), || common::process_gone(pid as u32)),
            "the main thread did not exit"
        );
        // Polled every 250 ms; grace 1 s; slack.
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            shm_exists(&name),
            "polling={polling}: {name}, in transit from a live process whose main thread \
             exited, was unlinked. The manager's story:\n  {}",
            story(&daemon.handle, &name)
        );
        client.kill();
        assert!(
            wait_until(Duration::from_secs(10), || !shm_exists(&name)),
            "polling={polling}: {name} outlived its killed registrant: {}",
            story(&daemon.handle, &name)
        );
    }
}

/// A client that execs from a thread other than its main one keeps its pid
/// and start time (the kernel hands the leader's to the exec'ing thread):
/// not taken for ended by either watch, and still watched after.
#[test]
fn a_client_that_execs_from_a_thread_keeps_its_holds_with_or_without_pidfds() {
    let _serial = one_at_a_time();
    for polling in [false, true] {
        let daemon = manager(polling);
        let _bystander = daemon.bystander();
        let name = unique_name("h12exec");
        let _cleanup = Cleanup(vec![name.clone()]);
        let mut client = Script::spawn(
            &format!("{CLIENT_PRELUDE}{EXEC_FROM_THREAD}"),
            &[&daemon.handle, &name],
        );
        let pid: i32 = client.line().parse().unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || comm(pid) == "sleep"),
            "the thread did not exec"
        );
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            shm_exists(&name),
            "polling={polling}: {name}, in transit from a live process that exec'd from a \
             thread, was unlinked. The manager's story:\n  {}",
            story(&daemon.handle, &name)
        );
        client.kill();
        assert!(
            wait_until(Duration::from_secs(10), || !shm_exists(&name)),
            "polling={polling}: {name} outlived its killed registrant: {}",
            story(&daemon.handle, &name)
        );
    }
}

// --- Finding 1: a thread's id taken for a process's pid by polling -------------

/// A frame's pid is the id of a thread (not a process's leader) in a child
/// of the writer. With pidfds, `pidfd_open` refuses a thread's id and the
/// pid is not trusted: its holds last as long as the connection. Polling,
/// `PidWatches::watch` (transport-unix/src/pid_watch.rs:82) trusts any id
/// with a `/proc/<id>` entry, and a thread's has one (hidden from listings,
/// not from lookups); `writer_speaks_for` agrees, for the thread's "parent"
/// is its process's. The registration is tied to the thread, and when the
/// thread ends (its process running on) the watch takes it for an exit: the
/// segment in transit is unlinked while the connection that registered it
/// is open. The two watches disagree on the same frames.
///
/// No PyTorch client sends a thread's id (it sends `getpid()`), so this
/// needs a client that does; but a thread's id is no process's pid, and
/// only the polling watch said otherwise.
///
/// Fixed: `is_ours` trusts only an id whose `/proc` entry's `Tgid` is the
/// id itself (a process's leader), for both watches.
#[test]
fn a_threads_id_is_not_taken_for_a_process_with_or_without_pidfds() {
    let _serial = one_at_a_time();
    for polling in [false, true] {
        let daemon = manager(polling);
        let _bystander = daemon.bystander();
        let name = unique_name("h12tid");
        let _cleanup = Cleanup(vec![name.clone()]);
        let mut child = Script::spawn(THREAD_ID, &[]);
        let tid: i32 = child.line().parse().unwrap();
        assert_ne!(tid, child.pid());
        let mut family = daemon.connect();
        family.register_as(tid, &name);
        create_segment(&name, 1, 64);
        child.tell();
        assert_eq!(child.line(), "ended");
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            shm_exists(&name),
            "polling={polling}: {name}, registered for thread {tid} of a live child on a \
             connection still open, was unlinked when the thread ended. The manager's \
             story:\n  {}",
            story(&daemon.handle, &name)
        );
        drop(family);
        assert!(
            wait_until(Duration::from_secs(10), || !shm_exists(&name)),
            "polling={polling}: {name} outlived the connection: {}",
            story(&daemon.handle, &name)
        );
    }
}

// --- Finding 2: a connection closed for cause by a member's frame --------------

/// A forked process that writes `bytes` as they are on `conn` and exits;
/// reaped before this returns.
fn write_from_child(conn: RawFd, bytes: [u8; 68]) {
    // SAFETY: the child only `write`s its own copy and `_exit`s.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        // SAFETY: as above.
        unsafe {
            libc::write(conn, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(child, &raw mut status, 0) };
}

/// A frame whose free flag is neither 0 nor 1: malformed, the connection is
/// closed for cause.
fn malformed(name: &str) -> [u8; 68] {
    let mut bytes = frame(0, name);
    bytes[4] = 7;
    bytes
}

/// The family's connection (the test's) is shared by a worker in a pid
/// namespace of its own, whose frames' pid names nobody here: its
/// registration is the connection's. The connection is then closed for
/// cause by a malformed frame, and the connection's holder is tied to the
/// connecting process if `watch_pid` may watch it (core/src/manager.rs
/// `close_for_cause`), or ended at once if not. `watch_pid` asks whether the
/// current read's writer speaks for the pid. When the test itself wrote the
/// malformed frame it does, and the worker's segment lives as long as the
/// test. When a forked member of the family wrote it, the writer (the
/// member) does not speak for its parent, the connection's holder ends at
/// once, and the worker's segment, put in a queue (refcount 1, unmapped), is
/// unlinked while the family lives and before any receiver could open it.
/// Which member of a family happened to send the bad frame decides whether a
/// live worker's tensor is lost.
///
/// The connecting process's pid is the kernel's (`SO_PEERCRED`), not a
/// frame's: no writer need speak for it. Fixed by 4179ad0: the connection's
/// holder is tied to the peer without the writer check (`Effects::watch_peer`).
#[test]
fn a_bad_frame_from_a_forked_member_does_not_cost_a_nested_worker_its_segment() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "a_bad_frame_from_a_forked_member_does_not_cost_a_nested_worker_its_segment",
    ) {
        return;
    }
    bad_frame_beside_nested_worker(true);
}

/// The same, with the malformed frame written by the connecting process:
/// the worker's segment lives as long as that process.
#[test]
fn a_bad_frame_from_the_connecting_process_does_not_cost_a_nested_worker_its_segment() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "a_bad_frame_from_the_connecting_process_does_not_cost_a_nested_worker_its_segment",
    ) {
        return;
    }
    bad_frame_beside_nested_worker(false);
}

fn bad_frame_beside_nested_worker(from_member: bool) {
    let daemon = manager(false);
    let _bystander = daemon.bystander();
    let mut family = daemon.connect();
    let name = unique_name("h12cause");
    let _cleanup = Cleanup(vec![name.clone()]);
    // A pid nobody has here.
    let q = 30_000;
    assert!(common::process_gone(q as u32));
    let mut worker = common::NestedWorker::spawn(family.stream.as_raw_fd(), q, &name);
    let bad = malformed(&unique_name("h12bad"));
    if from_member {
        write_from_child(family.stream.as_raw_fd(), bad);
    } else {
        family.send(&bad);
    }
    assert!(
        family.is_closed_by_peer(Duration::from_secs(5)),
        "the malformed frame closes the connection"
    );
    std::thread::sleep(Duration::from_secs(2));
    let while_mapped = shm_exists(&name);
    worker.queue();
    // Grace (1 s), the look, and slack.
    std::thread::sleep(Duration::from_secs(4));
    let in_transit = shm_exists(&name);
    let told = story(&daemon.handle, &name);
    drop(worker);
    assert!(
        while_mapped && in_transit,
        "{name}, registered by a live worker in a pid namespace of its own on its family's \
         connection, was unlinked (while mapped: {}, in transit: {}) after the connection \
         was closed for a bad frame from {}, the family's first process alive. The \
         manager's story:\n  {told}",
        !while_mapped,
        !in_transit,
        if from_member {
            "a forked member"
        } else {
            "the connecting process"
        },
    );
}
