//! A second hostile round: each test reproduces one way to make `shm-manager`
//! unlink a segment someone still uses (maps, or waits for, pickled in a
//! queue), with real processes, real sockets and the real `/dev/shm`. They
//! fail on the code they were written against; each says what went wrong and
//! why.
//!
//! Tests that need root (private pid namespaces, another user) skip without
//! it and fail under `LIBSHM_REQUIRE_ROOT=1`. Everything a test puts in
//! `/dev/shm` is removed however it ends (most run in a private `/dev/shm`).

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    Cleanup, Daemon, RawClient, Sleeper, SleepersSegment, bystander_under, frame_from,
    in_private_pid_namespace, run_id, shm_exists, story, wait_until,
};

// --- 1. The recovery sweep and a tensor its exited producer pickled ----------

/// The everyday `torch.multiprocessing` hand-off: a producer process creates
/// a tensor, puts it in a queue (pickling raises the header refcount to 2),
/// drops its own reference (refcount 1, and its release reaches the manager)
/// and exits; the consumer will `get()` it later. Meanwhile the family's
/// manager is SIGKILLed (OOM killer) and a client revives it with `--adopt`.
/// The recovery sweep finds the name: creator dead, nobody maps it. It
/// counts the creator as one dead registration, the refcount (1, the
/// pickle's) is no larger, so it is an orphan and is unlinked two seconds
/// later: the consumer's `get()` fails with "No such file or directory".
///
/// Why: `adopt_orphan` (core/src/manager.rs:1147-1150) assumes a dead
/// creator still holds its reference, so that a pickle shows as a surplus
/// ("its creator's reference and the pickle's", README "Choices"). PyTorch's
/// producers do not: the queue's feeder thread pickles and the producer's
/// tensor is freed right after `put`, so a tensor waiting in a queue whose
/// producer exited has refcount 1 exactly, indistinguishable from a leak by
/// the header alone. The old manager kept it (released, `dead` 0); the
/// revived one reaps it.
#[test]
fn recovery_spares_a_tensor_its_exited_producer_left_in_a_queue() {
    if !in_private_pid_namespace("recovery_spares_a_tensor_its_exited_producer_left_in_a_queue") {
        return;
    }
    let prefix = format!("/hostile2Q{}_", run_id());
    let mut old = Daemon::quiet_under(&prefix);
    // The consumer: alive, connected, not yet holding the tensor.
    let _consumer = bystander_under(&old, &prefix);
    // Created (1), pickled into the queue (2), the producer's tensor freed (1).
    let mut producer = SleepersSegment::create(&old, &prefix, 1);
    let pickled = producer.name.clone();
    producer
        .connection
        .send(&frame_from(producer.creator.pid(), 1, &pickled));
    drop(producer.connection);
    producer.creator.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        shm_exists(&pickled),
        "the old manager kept the pickled tensor"
    );

    // The manager dies; a client of the family revives it at the same handle.
    old.kill();
    let revived = old.revive(&prefix, &prefix);
    let _consumer_again = bystander_under(&revived, &prefix);
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        shm_exists(&pickled),
        "the revived manager unlinked {pickled}, a tensor waiting in a queue (refcount 1, the \
         pickle's) for a consumer that has not opened it yet. Its story:\n  {}",
        story(&revived.handle, &pickled)
    );
}

// --- 2. The /proc map check and a process whose main thread has exited -------

/// `pid`'s state letter in `/proc/<pid>/stat`.
fn state_of(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .next()?
            .to_owned(),
    )
}

/// Whether some thread of `pid` maps `name` (`/proc/<pid>/task/*/maps`).
fn some_thread_maps(pid: i32, name: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("maps"))
            .is_ok_and(|maps| maps.contains(name.trim_start_matches('/')))
    })
}

extern "C" fn park(_: *mut libc::c_void) -> *mut libc::c_void {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// Forks the "parent" of a PyTorch family: it registers `name` on `conn`
/// with its own pid, creates and maps the segment (refcount 1), and forks a
/// worker that inherits the mapping and the connection and runs `work` on the
/// mapped refcount, then exits. Returns (parent pid, worker pid); the parent
/// waits to be killed.
///
/// # Safety
/// `work` runs in a forked child of a multi-threaded process: it may only
/// make system calls on memory prepared before the fork and on its stack.
unsafe fn fork_family(
    conn: &UnixStream,
    name: &str,
    work: impl FnOnce(&std::sync::atomic::AtomicI32),
) -> (i32, i32) {
    let path = std::ffi::CString::new(format!("/dev/shm{name}")).unwrap();
    let mut report = [0i32; 2];
    // SAFETY: `report` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(report.as_mut_ptr()) }, 0);
    let fd = conn.as_raw_fd();
    // SAFETY: the child only makes system calls on memory prepared above and
    // on its stack (and runs `work`, which the caller promises does the
    // same), and never returns.
    let parent = unsafe { libc::fork() };
    assert!(parent >= 0, "fork");
    if parent == 0 {
        // SAFETY: the forked child makes system calls on memory prepared before
        // the fork and on its stack only, and never returns.
        unsafe {
            let (shm, map) = register_create_and_map(fd, name.as_bytes(), &path);
            let refcount = &*(map as *const std::sync::atomic::AtomicI32);
            refcount.store(1, std::sync::atomic::Ordering::SeqCst);
            libc::close(shm);
            let worker = libc::fork();
            if worker == 0 {
                work(refcount);
                libc::_exit(0);
            }
            libc::write(report[1], (&raw const worker).cast(), 4);
            loop {
                libc::pause();
            }
        }
    }
    let mut worker = 0i32;
    // SAFETY: closing our copy of the write end; reading four bytes into an i32.
    unsafe {
        libc::close(report[1]);
        assert_eq!(libc::read(report[0], (&raw mut worker).cast(), 4), 4);
        libc::close(report[0]);
    }
    (parent, worker)
}

/// A family from [`fork_family`] whose worker lives on. With
/// `end_main_thread`, the worker starts a thread and ends its main thread
/// (`SYS_exit`, the thread alone), as a program whose main thread returns
/// through `pthread_exit` does, then lives on in that thread. Returns
/// (parent pid, worker pid).
fn fork_parent_and_worker(conn: &UnixStream, name: &str, end_main_thread: bool) -> (i32, i32) {
    // SAFETY: the worker makes system calls only, on its stack, and never
    // returns.
    unsafe {
        fork_family(conn, name, |_| {
            if end_main_thread {
                let mut thread: libc::pthread_t = 0;
                libc::pthread_create(&mut thread, std::ptr::null(), park, std::ptr::null_mut());
                libc::syscall(libc::SYS_exit, 0);
            }
            loop {
                libc::pause();
            }
        })
    }
}

/// A fork worker that inherited its parent's tensor (and connection) runs on
/// after the parent is SIGKILLed, as `a_fork_worker_that_outlives_its_parent`
/// in hostile.rs, except that the worker's main thread has ended and its
/// other threads carry on (a program whose `main` returns with
/// `pthread_exit`, or a runtime that parks work on threads and ends the
/// first). The name is an orphan by the refcount rule, and since its holder
/// died while its connection lived on, the manager asks a `/proc` walk
/// whether anyone maps it before unlinking. The walk reads only
/// `/proc/<tgid>/maps` and `/proc/<tgid>/fd`, which are empty once the
/// thread-group leader has exited (the leader's `mm` and files are gone, and
/// its stat says `Z`), so nobody "maps" it and the manager unlinks it while
/// the worker's live thread maps it (`/proc/<tgid>/task/<tid>/maps` shows it).
///
/// Why: std-shim/src/inspect/users.rs:77-101 walks thread-group leaders only
/// and `can_hold_memory` (users.rs:111) takes a zombie leader for a process
/// that holds nothing; its live threads are never looked at.
#[test]
fn the_map_check_sees_a_worker_whose_main_thread_has_exited() {
    if !in_private_pid_namespace("the_map_check_sees_a_worker_whose_main_thread_has_exited") {
        return;
    }
    let name = format!("/torch_hostile2_leader_{}", run_id());
    let _cleanup = Cleanup(vec![name.clone()]);
    let daemon = Daemon::start_with_stderr(&[], Stdio::null());
    let conn = daemon.connect();
    let (parent, worker) = fork_parent_and_worker(&conn.stream, &name, true);
    let _reap = Reap(vec![parent, worker]);
    // The test's own copy of the connection goes: only the worker keeps it.
    drop(conn);
    assert!(
        wait_until(Duration::from_secs(5), || state_of(worker).as_deref()
            == Some("Z")
            && some_thread_maps(worker, &name)),
        "the worker's main thread ended while another maps {name}"
    );
    kill(parent);
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        some_thread_maps(worker, &name),
        "the worker's live thread still maps {name}"
    );
    assert!(
        shm_exists(&name),
        "the manager unlinked {name}, which a live thread of worker {worker} maps (inherited \
         from its SIGKILLed parent {parent}): the /proc walk saw only the worker's exited main \
         thread. Its story:\n  {}",
        story(&daemon.handle, &name)
    );
}

/// In a forked child: registers `name` on the connection `fd` under the
/// child's pid, waits for `OK`, then creates the segment at `path` and maps
/// it (data 4096 bytes). Returns its descriptor and mapping.
///
/// # Safety
/// Only system calls on memory prepared before the fork and on the stack,
/// so it is sound in the child of a multi-threaded process.
unsafe fn register_create_and_map(
    fd: i32,
    name: &[u8],
    path: &std::ffi::CStr,
) -> (i32, *mut libc::c_void) {
    // SAFETY: the caller promises a forked child; every pointer below is to
    // a local buffer or to `path`, which outlives the calls.
    unsafe {
        let mut bytes = [0u8; 68];
        bytes[..4].copy_from_slice(&libc::getpid().to_ne_bytes());
        bytes[5..5 + name.len()].copy_from_slice(name);
        libc::write(fd, bytes.as_ptr().cast(), 68);
        let mut ok = [0u8; 2];
        libc::read(fd, ok.as_mut_ptr().cast(), 2);
        let shm = libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            0o600,
        );
        libc::ftruncate(shm, 64 + 4096);
        let map = libc::mmap(
            std::ptr::null_mut(),
            64 + 4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            shm,
            0,
        );
        (shm, map)
    }
}

/// SIGKILLs `pid` and reaps it.
fn kill(pid: i32) {
    // SAFETY: plain system calls on a child of ours.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Kills (and reaps, where they are ours) processes however the test ends.
struct Reap(Vec<i32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: plain system calls; a pid not ours is simply not reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
    }
}

// --- 3. The /proc map check and a refcount raised while the walk runs --------

/// Forks a process holding `count` descriptors (dups of `/dev/null`) and
/// waits until it holds them: a `file_descriptor`-strategy job, or any
/// program with a raised `ulimit -n`, that makes a `/proc` walk slow.
fn fork_descriptor_hoarder(count: u64) -> i32 {
    let mut pipe = [0i32; 2];
    // SAFETY: `pipe` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child makes system calls only, and never returns.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: the forked child makes system calls on memory prepared before
        // the fork and on its stack only, and never returns.
        unsafe {
            let limit = libc::rlimit {
                rlim_cur: count + 64,
                rlim_max: count + 64,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            for _ in 0..count {
                if libc::dup(null) < 0 {
                    break;
                }
            }
            libc::write(pipe[1], [1u8].as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: closing our write end; reading one byte.
    unsafe {
        libc::close(pipe[1]);
        let mut byte = 0u8;
        assert_eq!(libc::read(pipe[0], (&raw mut byte).cast(), 1), 1);
        libc::close(pipe[0]);
    }
    pid
}

/// Forks a family with [`fork_family`] whose worker waits for a byte on a
/// pipe, then pickles the inherited tensor into a queue (raises the header
/// refcount by one, as `_shared_incref` does) and exits (its queue flushed,
/// the consumer not yet reading). Returns (parent, worker, the pipe's write
/// end). With `double_fork`, the worker instead forks a grandchild that
/// inherits the mapping and lives on, and exits (a daemonizing double fork,
/// or a worker handing over to a process of its own).
fn fork_parent_and_pickling_worker(
    conn: &UnixStream,
    name: &str,
    double_fork: bool,
) -> (i32, i32, i32) {
    let mut go = [0i32; 2];
    // SAFETY: `go` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    let read_end = go[0];
    // SAFETY: the worker (and its grandchild) make system calls only, on
    // their stacks and the mapped refcount, and never return.
    let (parent, worker) = unsafe {
        fork_family(conn, name, |refcount| {
            let mut byte = 0u8;
            libc::read(read_end, (&raw mut byte).cast(), 1);
            if double_fork {
                if libc::fork() == 0 {
                    loop {
                        libc::pause();
                    }
                }
            } else {
                refcount.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    // SAFETY: closing the read end, which only the worker uses.
    unsafe { libc::close(read_end) };
    (parent, worker, go[1])
}

/// Whether a thread of `manager` is walking `/proc/<pid>/fd` right now (it
/// holds that directory open).
fn walking(manager: u32, pid: i32) -> bool {
    let wanted = std::path::PathBuf::from(format!("/proc/{pid}/fd"));
    std::fs::read_dir(format!("/proc/{manager}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == wanted))
    })
}

/// Reads the refcount in `name`'s header.
fn refcount_of(name: &str) -> Option<i32> {
    let bytes = std::fs::read(format!("/dev/shm{name}")).ok()?;
    Some(i32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// A family caught by the slow `/proc` walk: a descriptor hoarder (forked
/// first, so that the walk, in pid order, visits it before the worker), a
/// manager with a consumer connected, and a parent SIGKILLed after its
/// worker inherited the tensor (see `fork_parent_and_pickling_worker`). Once
/// started, the orphan's grace (2 s) has ended and the walk is busy with the
/// hoarder; the worker waits for [`WalkRace::let_the_worker_go`].
struct WalkRace {
    _consumer: RawClient,
    daemon: Daemon,
    _cleanup: Cleanup,
    reap: Reap,
    name: String,
    hoarder: i32,
    worker: i32,
    /// The write end of the worker's pipe; -1 once closed.
    go: i32,
}

impl WalkRace {
    /// The segment is `/torch_hostile2_<tag>_<run>`; `double_fork` as for
    /// `fork_parent_and_pickling_worker`.
    fn start(tag: &str, double_fork: bool) -> Self {
        let hoarder = fork_descriptor_hoarder(150_000);
        let mut reap = Reap(vec![hoarder]);
        let name = format!("/torch_hostile2_{tag}_{}", run_id());
        let cleanup = Cleanup(vec![name.clone()]);
        let daemon = Daemon::start_with_stderr(&[], Stdio::null());
        // The consumer, connected, that will open the tensor.
        let consumer = daemon.bystander();
        let conn = daemon.connect();
        let (parent, worker, go) =
            fork_parent_and_pickling_worker(&conn.stream, &name, double_fork);
        reap.0.extend([parent, worker]);
        drop(conn);
        kill(parent);
        // The orphan's grace (2 s) ends and the walk starts.
        let manager = daemon.child.id();
        assert!(
            wait_until(Duration::from_secs(8), || walking(manager, hoarder)),
            "the manager never walked the hoarder's descriptors"
        );
        Self {
            _consumer: consumer,
            daemon,
            _cleanup: cleanup,
            reap,
            name,
            hoarder,
            worker,
            go,
        }
    }

    /// Sends the worker its byte and waits until it has done its part and
    /// exited.
    fn let_the_worker_go(&mut self) {
        let go = std::mem::replace(&mut self.go, -1);
        assert!(go >= 0, "the worker was let go once already");
        // SAFETY: one byte to the worker on our own pipe's write end, closed
        // once, then reaping the worker (our child here: the namespace's init
        // adopted it).
        unsafe {
            libc::write(go, [1u8].as_ptr().cast(), 1);
            libc::close(go);
            libc::waitpid(self.worker, std::ptr::null_mut(), 0);
        }
    }
}

/// A fork worker inherited its parent's tensor; the parent is SIGKILLed, so
/// the name is an orphan by the refcount rule (refcount 1, one dead
/// registration) that the manager unlinks only once a `/proc` walk finds
/// nobody mapping it. While that walk runs (slow here, beside a process
/// holding 150,000 descriptors: any `file_descriptor`-strategy job with a
/// raised `ulimit -n`), the worker pickles the tensor into a queue (refcount
/// 2: in transit) and exits. The walk reaches the worker's pid after it has
/// gone, reports "not mapped", and the manager unlinks the name at once,
/// though its refcount now says a receiver will open it.
///
/// Why: `Manager::mapped` (core/src/manager.rs:1457-1459) unlinks on
/// `mapped == Some(false)` without looking at the refcount again; the
/// refcount it judged by was read before the walk began (`observed`, the
/// `Confirming` look, manager.rs:1305-1309), and the walk
/// (std-shim/src/inspect/users.rs:60) takes as long as the machine's
/// descriptors and mappings make it.
#[test]
fn a_tensor_pickled_while_the_map_check_walks_is_not_unlinked() {
    if !in_private_pid_namespace("a_tensor_pickled_while_the_map_check_walks_is_not_unlinked") {
        return;
    }
    let mut race = WalkRace::start("walk", false);
    race.let_the_worker_go();
    let name = &race.name;
    assert_eq!(refcount_of(name), Some(2), "the worker pickled the tensor");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        shm_exists(name),
        "the manager unlinked {name} though its refcount (2, one dead registration) showed it \
         in transit: the worker pickled it while the /proc walk ran, and the walk's \"nobody \
         maps it\" was taken as the last word. Its story:\n  {}",
        story(&race.daemon.handle, name)
    );
}

// --- 4. The /proc map check and a worker it may not inspect ------------------

/// The unprivileged user the other-user tests act as.
const NOBODY: u32 = 65534;

/// The parent of a family, in Python: it registers `argv[2]` with the
/// manager at `argv[1]` under its own pid, creates and maps the segment
/// (refcount 1), and forks a worker that inherits the mapping and the
/// connection; the worker makes itself non-dumpable (`PR_SET_DUMPABLE` 0, as
/// sandboxes, key agents and hardened runtimes do) unless `argv[3]` is
/// `dumpable`, and waits. The parent prints the worker's pid and waits.
const PARENT_WITH_WORKER: &str = r#"
import ctypes, mmap, os, socket, struct, sys, time
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
name = sys.argv[2].encode()
sock.sendall(struct.pack("=iB60s3x", os.getpid(), 0, name))
assert sock.recv(2) == b"OK"
fd = os.open("/dev/shm" + sys.argv[2], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.ftruncate(fd, 64 + 4096)
m = mmap.mmap(fd, 64 + 4096)
m[:4] = struct.pack("=i", 1)
os.close(fd)
worker = os.fork()
if worker == 0:
    if sys.argv[3] != "dumpable":
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
    while True:
        time.sleep(60)
print(worker, flush=True)
while True:
    time.sleep(60)
"#;

/// Starts [`PARENT_WITH_WORKER`] as uid `NOBODY`; returns it and its worker's pid.
fn parent_and_worker_as_nobody(socket: &str, name: &str, dumpable: bool) -> (Child, i32) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut parent = Command::new("/usr/bin/python3")
        .args(["-c", PARENT_WITH_WORKER, socket, name])
        .arg(if dumpable { "dumpable" } else { "undumpable" })
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut line = String::new();
    std::io::BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let worker = line.trim().parse().expect("the worker's pid");
    (parent, worker)
}

/// Whether uid `NOBODY` may read `/proc/<pid>/maps`.
fn nobody_may_read_maps(pid: i32) -> bool {
    use std::os::unix::process::CommandExt;
    Command::new("cat")
        .arg(format!("/proc/{pid}/maps"))
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A manager of an ordinary user (uid 65534 here, as any non-root PyTorch
/// job runs) serves a family whose parent is SIGKILLed while its fork worker
/// still maps the inherited tensor and keeps the connection. The worker
/// made itself non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`), so the manager
/// may not read its `/proc/<pid>/maps` or `fd`. The walk that decides
/// whether anyone maps the orphan counts a process it may not inspect as
/// not mapping it, and the manager unlinks the name while the worker, of
/// the manager's own uid, maps it.
///
/// It did: `inspect::mapped_in` dropped `users.uninspected`, on the
/// README's reason ("a process of another uid cannot open our mode-0600
/// segments anyway"), which does not hold for a non-dumpable process of the
/// manager's own uid, exactly who inherits a mapping by fork. Counting every
/// uninspectable process as a user would keep every name where pid 1 is
/// non-dumpable; so one of our uid counts if it started after the segment
/// was made, as a fork that inherited it must have. (The same run with a
/// dumpable worker passes either way: the walk sees its mapping.)
#[test]
fn the_map_check_does_not_take_an_uninspectable_worker_of_our_uid_for_none() {
    if !in_private_pid_namespace(
        "the_map_check_does_not_take_an_uninspectable_worker_of_our_uid_for_none",
    ) {
        return;
    }
    let name = format!("/torch_hostile2_undumpable_{}", run_id());
    let _cleanup = Cleanup(vec![name.clone()]);
    let daemon = nobody_manager();
    // With a dumpable worker (`true` here) the name is kept: the walk sees it.
    let dumpable = false;
    let (mut parent, worker) = parent_and_worker_as_nobody(&daemon.handle, &name, dumpable);
    let _reap = Reap(vec![worker]);
    assert!(
        wait_until(Duration::from_secs(5), || shm_exists(&name)
            && some_thread_maps(worker, &name)
            && nobody_may_read_maps(worker) == dumpable),
        "the worker (uid {NOBODY}) made itself non-dumpable and maps {name}: exists {}, \
         readable {}, parent {:?}",
        shm_exists(&name),
        nobody_may_read_maps(worker),
        parent.try_wait().ok()
    );
    parent.kill().unwrap();
    parent.wait().unwrap();
    let parent = parent.id();
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        some_thread_maps(worker, &name),
        "the worker still maps {name}"
    );
    assert!(
        shm_exists(&name),
        "the manager (uid {NOBODY}) unlinked {name}, which its own uid's worker {worker} maps \
         (inherited from SIGKILLed parent {parent}): a process it may not inspect counted as \
         not mapping it."
    );
}

/// A manager run as [`NOBODY`], as an ordinary user's PyTorch job runs it.
fn nobody_manager() -> Daemon {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(common::SHM_MANAGER);
    command
        .uid(NOBODY)
        .gid(NOBODY)
        .env("TMPDIR", "/tmp")
        .stderr(Stdio::null());
    Daemon::spawn(&mut command)
}

/// The other side of the rule above: a process of the manager's uid that it
/// may not inspect but that started before the segment was made (a daemon
/// made non-dumpable, as pid 1 often is) cannot have inherited its mapping,
/// and does not keep an orphan nobody maps.
#[test]
fn an_uninspectable_process_older_than_the_segment_does_not_keep_it() {
    if !in_private_pid_namespace("an_uninspectable_process_older_than_the_segment_does_not_keep_it")
    {
        return;
    }
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut old = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import ctypes, time; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); print(flush=True); \
             time.sleep(600)",
        ])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    std::io::BufReader::new(old.stdout.take().unwrap())
        .read_line(&mut String::new())
        .unwrap();
    let old = Sleeper(old);
    assert!(!nobody_may_read_maps(old.pid()), "made non-dumpable");
    // Older than the segment by more than start times can be told apart.
    std::thread::sleep(Duration::from_secs(3));
    let name = format!("/torch_hostile2_older_{}", run_id());
    let _cleanup = Cleanup(vec![name.clone()]);
    let daemon = nobody_manager();
    let (mut parent, worker) = parent_and_worker_as_nobody(&daemon.handle, &name, true);
    let _reap_worker = Reap(vec![worker]);
    assert!(
        wait_until(Duration::from_secs(5), || shm_exists(&name)
            && some_thread_maps(worker, &name)),
        "the family made {name}"
    );
    parent.kill().unwrap();
    parent.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    kill(worker);
    assert!(
        wait_until(Duration::from_secs(10), || !shm_exists(&name)),
        "{name} outlived its family: the uninspectable process {} of the manager's uid is older \
         than the segment and cannot map it. Its story:\n  {}",
        old.pid(),
        story(&daemon.handle, &name)
    );
}

// --- 5. Stray releases on a connection with many processes -------------------

/// The first round's stray-release flood (hostile.rs, test 4) was fixed by
/// searching the connection's own list of holders before the whole holder
/// table. That list had a fixed length (8, then 64): a connection with more
/// processes on it (a DataLoader parent's socket carries every forked
/// worker's frames) fell back to scanning every holder of every connection
/// for each release nobody on the connection holds (a stray, which
/// PyTorch's client sends). 160 connections with 64 processes each (10,240
/// holders) and one client writing strays as fast as it can held the loop
/// for a long time per round, and another client's round trip stalled.
/// A connection's holders are now linked through the holders themselves,
/// however many there are.
#[test]
fn strays_on_a_connection_with_many_processes_do_not_stall_another_client() {
    use common::measure::{FLOOD_P99_BOUND, probe_beside_strays};
    let daemon = Daemon::start_with_stderr(&[], Stdio::null());
    let sleepers: Vec<Sleeper> = (0..64).map(|_| Sleeper::spawn()).collect();
    let mut connections: Vec<RawClient> = (0..160).map(|_| daemon.connect()).collect();
    for (c, conn) in connections.iter_mut().enumerate() {
        let batch: Vec<u8> = sleepers
            .iter()
            .enumerate()
            .flat_map(|(s, sleeper)| {
                frame_from(
                    sleeper.pid(),
                    0,
                    &format!("/torch_h2stray_{}_{c}_{s}", run_id()),
                )
            })
            .collect();
        conn.send(&batch);
        for _ in &sleepers {
            assert_eq!(conn.reply(), Some(*b"OK"));
        }
    }
    // A name another connection holds: on the flooder's connection, a stray.
    let held = format!("/torch_h2stray_{}_0_0", run_id());
    let (baseline, during, flooded) =
        probe_beside_strays(&daemon.handle, 300, &held, || connections.pop().unwrap());
    let bound = FLOOD_P99_BOUND + baseline.percentile(99.0);
    assert!(
        during.percentile(99.0) < bound,
        "beside a client sending stray releases on a connection with 64 processes ({flooded} in \
         about 2.3 s; 10,240 holders in all), another client's p99 round trip was {:.3?} (bound \
         {bound:.3?}); during: {during}; idle: {baseline}",
        during.percentile(99.0)
    );
}

// --- 6. The /proc map check and a fork behind the walk -----------------------

/// The pids whose maps show `name`.
fn who_maps(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| some_thread_maps(pid, name))
        .collect()
}

/// Makes the next process forked in this (private) pid namespace get a pid
/// just above `pid`, as happens anyway once pids wrap around (`pid_max` is
/// 32,768 on many machines).
fn next_pid_after(pid: i32) {
    std::fs::write("/proc/sys/kernel/ns_last_pid", pid.to_string())
        .expect("write ns_last_pid (root, in our own pid namespace)");
}

/// As `a_tensor_pickled_while_the_map_check_walks_is_not_unlinked`, but the
/// refcount never changes: while the walk that decides whether anyone maps
/// the orphan is busy with a slow process, the worker (mapping the tensor it
/// inherited from its SIGKILLed parent) forks a process of its own, which
/// inherits the mapping, and exits. Pids have wrapped, so the new process's
/// pid is one the walk has already passed; the worker's pid, when the walk
/// reaches it, is gone. Nobody is seen mapping the name and it is unlinked,
/// while the new process maps it.
///
/// Why: `inspect::users::scan` (std-shim/src/inspect/users.rs:62) reads
/// `/proc` once, in pid order, and is no snapshot: a mapping that moves from
/// a pid not yet visited to one already visited is missed, and
/// `Manager::mapped` (core/src/manager.rs:1457) unlinks on one such walk.
/// Re-reading the refcount would not help here (it stays 1, dead 1).
#[test]
fn a_mapping_handed_to_a_fork_behind_the_walk_is_not_unlinked() {
    if !in_private_pid_namespace("a_mapping_handed_to_a_fork_behind_the_walk_is_not_unlinked") {
        return;
    }
    // The slow process sits high, everything else above it.
    next_pid_after(5000);
    let mut race = WalkRace::start("behind", true);
    // Below the hoarder: a pid the walk has passed.
    next_pid_after(100);
    race.let_the_worker_go();
    let name = &race.name;
    let heirs = who_maps(name);
    race.reap.0.extend(heirs.iter().copied());
    assert!(
        heirs.iter().any(|&pid| pid > 100 && pid < race.hoarder),
        "the worker's fork maps {name} under a pid the walk has passed: {heirs:?}"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !who_maps(name).is_empty(),
        "the worker's fork still maps {name}"
    );
    assert!(
        shm_exists(name),
        "the manager unlinked {name}, which process(es) {heirs:?} map (a fork of the worker \
         that inherited it, made while the /proc walk ran, under a pid the walk had passed). \
         Its story:\n  {}",
        story(&race.daemon.handle, name)
    );
}
