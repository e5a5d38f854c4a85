//! Hostile round 11: the manager now asks the kernel who wrote each read
//! (`SO_PASSCRED`, transport-unix/src/sender.rs) and ties a frame's pid to
//! that process's life only if the pid is the writer's or a child's of the
//! writer (`Driver::writer_speaks_for`, transport-unix/src/event_loop.rs).
//!
//! Each "Finding" test failed on the code it was written against (876c3e0)
//! and says what went wrong and why (file:line references are to that
//! code). A fixed one guards its fix; an open one is ignored with its cause
//! and the fix proposed. The others are attacks the code withstands, kept
//! because they fail if it stops withstanding them.
//!
//! Tests that need root fail without it under `LIBSHM_REQUIRE_ROOT=1`.
//! Names carry this run's id, and everything a test puts in `/dev/shm` is
//! removed however it ends.

mod common;

use std::os::fd::{AsRawFd, RawFd};
use std::process::Stdio;
use std::time::Duration;

use common::{
    Cleanup, Daemon, Sleeper, create_segment, frame, frame_from, in_private_pid_namespace,
    one_at_a_time, shm_exists, story, unique_name, wait_until,
};

/// A forked member of a family sharing one connection, as PyTorch's workers
/// inherit their parent's: it writes `first` at once, and `then` when told
/// ([`Member::go`]), then exits. Each frame carries its own pid, and the
/// kernel names it as their writer.
struct Member {
    pid: i32,
    go: Option<std::os::fd::OwnedFd>,
    reaped: bool,
}

impl Member {
    fn fork(conn: RawFd, first: Option<[u8; 68]>, then: Option<[u8; 68]>) -> Self {
        use std::os::fd::FromRawFd;
        let mut pipe = [0; 2];
        // SAFETY: `pipe` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: the child only calls `getpid`, `write`, `read` and `_exit`
        // on its own copies of the frames (no allocation): async-signal-safe,
        // as a fork of a threaded process requires.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            // SAFETY: as above.
            unsafe {
                let pid = libc::getpid().to_ne_bytes();
                if let Some(mut bytes) = first {
                    bytes[..4].copy_from_slice(&pid);
                    libc::write(conn, bytes.as_ptr().cast(), bytes.len());
                }
                if let Some(mut bytes) = then {
                    let mut byte = 0u8;
                    libc::read(pipe[0], (&raw mut byte).cast(), 1);
                    bytes[..4].copy_from_slice(&pid);
                    libc::write(conn, bytes.as_ptr().cast(), bytes.len());
                }
                libc::_exit(0);
            }
        }
        // SAFETY: both ends are ours; the read end is the child's alone now.
        unsafe { libc::close(pipe[0]) };
        Self {
            pid: child,
            // SAFETY: the write end was just made and nothing else owns it.
            go: Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(pipe[1]) }),
            reaped: false,
        }
    }

    /// Lets it write its second frame and exit.
    fn go(&mut self) {
        if let Some(go) = self.go.take() {
            // SAFETY: writes one byte from our stack to our pipe.
            unsafe { libc::write(go.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
    }

    /// Waits for it to exit (it is reaped: its pid is free).
    fn reap(&mut self) {
        if std::mem::replace(&mut self.reaped, true) {
            return;
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(self.pid, &raw mut status, 0) };
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: signals and reaps our own child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.reap();
        }
    }
}

// --- Finding 1: an exiting member's release behind two other writers ---------

/// A family's members share one connection. Member P registered a segment
/// (tied to P), put it in a queue (refcount 1: the pickle's) and released
/// it, and exited; before P's release, two other members wrote a frame each.
/// The manager sees P's end and the connection readable in one round. The
/// round's read returns the first writer's frame only: with `SO_PASSCRED`
/// the kernel never returns two writers' bytes from one read. Then
/// `end_exited` reads "everything queued" on P's connection before ending
/// P's holders (`read_queued`, transport-unix/src/event_loop.rs:774), but
/// `read_from` stops at the first short read (`n < want`, :712), which is now
/// the end of one writer's run, not of what is queued: the second writer's
/// frame is read, P's release is not. P's holder ends holding the segment
/// (one dead registration, refcount 1): an orphan nobody maps, unlinked
/// before its receiver opens it; P's release, read a round later, is a
/// stray.
///
/// Fixed: `read_queued` reads until it has read what was queued when it
/// began (or the socket is drained), across writers' runs.
#[test]
fn an_exiting_members_release_behind_two_other_writers_is_read_before_its_end() {
    let _serial = one_at_a_time();
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let _bystander = daemon.bystander();
    let mut family = daemon.connect();
    let conn = family.stream.as_raw_fd();
    let name = unique_name("h11behind");
    let _cleanup = Cleanup(vec![name.clone()]);
    let mut p = Member::fork(
        conn,
        Some(frame_from(0, 0, &name)),
        Some(frame_from(0, 1, &name)),
    );
    assert_eq!(family.reply(), Some(*b"OK"), "P's registration");
    // P created it and put it in a queue: the pickle's reference is left.
    create_segment(&name, 1, 64);
    std::thread::sleep(Duration::from_millis(300));

    daemon.while_stopped(|| {
        family.send(&frame(1, &unique_name("h11nothing")));
        let mut other = Member::fork(conn, Some(frame_from(0, 1, &unique_name("h11no"))), None);
        other.reap();
        p.go();
        p.reap();
    });
    // Grace (1 s), the map check, and slack.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        shm_exists(&name),
        "{name}, released by its creator P before P exited and waiting in a queue for its \
         receiver, was unlinked: P's release was queued behind two other members' frames \
         and read after P's holder had ended. The manager's story:\n  {}",
        story(&daemon.handle, &name)
    );
}

// --- Finding 2: a pid equal to a live sibling's joins the sibling's holder ----

/// A family's connection is shared by a sibling X (pid Q, its holder tied to
/// X) and by a worker in a pid namespace of its own, whose own pid there is
/// Q as well (in a container, pids are small and such collisions are
/// likely: the worker is its namespace's first processes, X one of the
/// container's first). The worker's frames carry Q. The writer is checked
/// only when a pid gets its holder (`Manager::holder_for`,
/// core/src/manager.rs:2067): `known_holder` (:2221) finds X's holder for
/// (connection, Q) and the worker's registration joins it. X ends: the
/// worker's registration turns dead; the worker puts its segment in a
/// queue and releases it (a stray now), and the segment in transit
/// (refcount 1, one dead registration) is unlinked before its receiver
/// opens it. This is README's "known limit", and it loses a segment, not
/// only holds one too long.
///
/// Fixed: for every frame whose pid resolves to a holder tied to that pid,
/// the manager asks the driver whether the read's writer speaks for it
/// (`Effects::speaks_for`: the writer, or its parent, one `/proc` look per
/// pid per read); if not, the frame goes to the connection's holder, and
/// that writer's pid is neither aliased over the process's holder nor
/// remembered as the connection's shortcut to it.
#[test]
fn a_nested_workers_pid_equal_to_a_live_siblings_does_not_tie_its_tensor_to_the_sibling() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "a_nested_workers_pid_equal_to_a_live_siblings_does_not_tie_its_tensor_to_the_sibling",
    ) {
        return;
    }
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let _bystander = daemon.bystander();
    let mut family = daemon.connect();
    let sibling_name = unique_name("h11sibling");
    let name = unique_name("h11nested");
    let _cleanup = Cleanup(vec![sibling_name.clone(), name.clone()]);
    // X, a live sibling whose holder is tied to it (its parent speaks for it).
    let mut x = Sleeper::spawn();
    let q = x.pid();
    family.register_as(q, &sibling_name);
    create_segment(&sibling_name, 1, 64);
    let mut worker = common::NestedWorker::spawn(family.stream.as_raw_fd(), q, &name);

    x.kill();
    std::thread::sleep(Duration::from_millis(200));
    worker.queue_and_release();
    // Grace (1 s), the map check, and slack.
    std::thread::sleep(Duration::from_secs(4));
    let kept = shm_exists(&name);
    drop(worker);
    assert!(
        kept,
        "{name}, put in a queue by a live worker in a pid namespace of its own whose pid there \
         equals its sibling X's, was unlinked before its receiver opened it: its registration \
         joined X's holder and ended with X. The manager's story:\n  {}",
        story(&daemon.handle, &name)
    );
    assert!(
        wait_until(Duration::from_secs(3), || !shm_exists(&sibling_name)),
        "{sibling_name}, X's, is reaped after X's end: its holder is still tied to X. {}",
        story(&daemon.handle, &sibling_name)
    );
}

// --- Withstood ----------------------------------------------------------------

/// Two writers' frames queued back to back on one connection while the
/// manager is stopped: the test's own (a release of nothing) and then a
/// forked member's, which registers a name for X, the test's child (not the
/// member's). Were the two glued in one read named after the test, X's
/// parent, the member's registration would be tied to X and end with it.
/// The kernel keeps them apart: it lasts as long as the connection (X's end
/// does not unlink it), and goes with it (no leak past it).
#[test]
fn two_writers_frames_are_never_read_as_one_writers() {
    let _serial = one_at_a_time();
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let _bystander = daemon.bystander();
    let mut family = daemon.connect();
    let conn = family.stream.as_raw_fd();
    let name = unique_name("h11glued");
    let _cleanup = Cleanup(vec![name.clone()]);
    let mut x = Sleeper::spawn();
    daemon.while_stopped(|| {
        family.send(&frame(1, &unique_name("h11nothing")));
        let mut writer = ClaimWriter::fork(conn, frame_from(x.pid(), 0, &name));
        writer.reap();
    });
    assert_eq!(family.reply(), Some(*b"OK"), "the member's registration");
    create_segment(&name, 1, 64);
    x.kill();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        shm_exists(&name),
        "{name}, registered by a member for X (not its child), was unlinked when X ended: \
         its frame was taken for X's parent's. The manager's story:\n  {}",
        story(&daemon.handle, &name)
    );
    drop(family);
    assert!(
        wait_until(Duration::from_secs(5), || !shm_exists(&name)),
        "{name} outlived the connection its holds last as long as: {}",
        story(&daemon.handle, &name)
    );
}

/// A forked process that writes `bytes` as they are (a pid not its own) on
/// `conn` and exits.
struct ClaimWriter;

impl ClaimWriter {
    fn fork(conn: RawFd, bytes: [u8; 68]) -> Member {
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
        Member {
            pid: child,
            go: None,
            reaped: false,
        }
    }
}
