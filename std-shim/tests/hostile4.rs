//! A fourth hostile round, aimed at what round 3 changed: registrations read
//! after their sender died (`Sender::Gone`), holds that outlive a connection
//! closed for cause and move to the process's next connection, and the
//! per-round reading budgets (one 64 KiB read per client, 1,024 journal
//! frames per client).
//!
//! Each test drives a real `shm-manager`. Where the race under attack is a
//! frame committed while its sender lived but read after it died, the
//! manager is stopped (`SIGSTOP`) while the frames are committed and the
//! sender is killed, then continued: the manager then sees exactly what it
//! would see had it been slow (a loaded machine), with nothing left to
//! timing.
//!
//! The first four tests reproduced findings (all fixed since) and say why
//! they happened; the others are attacks the manager withstands, kept
//! because they fail if it stops withstanding them.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::journal_client::JournalClient;
use common::{
    Cleanup, Daemon, Sleeper, create_segment, run_id, shm_exists, story, unique_name, wait_until,
};

/// A name of PyTorch's shape for a segment created by `pid`.
fn name_of(tag: &str, pid: i32) -> String {
    format!("/torch_test_h4{tag}_{}_{pid}", run_id())
}

// --- Findings ---------------------------------------------------------------

/// A short-lived producer using our client with its journal (the default)
/// creates a segment, shares it (the pickle raises the refcount to 2), drops
/// its own reference (refcount 1, the pickle's) and exits, all within the
/// 100 ms between two reads of its ring: the manager reads the registration
/// and the release only after the producer has died.
///
/// The registration's sender is a process of the connection's pid namespace
/// that has exited, so it counts as a dead registration at once
/// (`Sender::Gone`, core/src/manager.rs `register`: `record.dead += 1`),
/// but no holder keeps it: the release that follows it in the same ring
/// finds no holder of its pid on the connection (`Manager::release`:
/// `known_holder`, `holder_on_conn_holding`, `detached_holder_holding` all
/// miss) and is ignored as a stray release. `dead` stays 1 although the
/// producer let go cleanly; refcount 1 ≤ dead 1 makes the tensor waiting in
/// the queue an orphan, unlinked after the grace period. The consumer's open
/// then fails with "No such file or directory". Read while the producer
/// lived (the control), the same two frames leave `dead` 0 and the segment
/// is kept.
///
/// Fixed: a gone sender gets a holder like a watched pid's, which its later
/// releases reach; the driver reports its exit once what it left is read.
#[test]
fn a_producer_that_released_before_the_manager_read_its_ring_does_not_orphan_its_pickle() {
    let mut daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let mut connection = JournalClient::attach(&daemon.handle, 64);

    // The control: register and release are read while the producer lives.
    let mut lived = Sleeper::spawn();
    let control = name_of("pickle_control", lived.pid());
    let _cleanup_control = Cleanup(vec![control.clone()]);
    connection.register(lived.pid(), &control);
    create_segment(&control, 1, 64);
    connection.release(lived.pid(), &control);
    assert_eq!(connection.ring(), Some(*b"OK"));
    lived.kill();

    // The same steps, read by a manager that was slow to look.
    let mut producer = Sleeper::spawn();
    let pid = producer.pid();
    let name = name_of("pickle", pid);
    let _cleanup = Cleanup(vec![name.clone()]);
    daemon.while_stopped(|| {
        connection.register(pid, &name);
        // Created (1), pickled into a queue (2), dropped by its producer (1).
        create_segment(&name, 1, 64);
        connection.release(pid, &name);
        producer.kill();
    });
    assert_eq!(connection.ring(), Some(*b"OK"));

    // Grace 1 s: an orphan would be gone well within 3 s.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        shm_exists(&control),
        "control: {control}, released while its producer lived, is kept in transit:\n  {}",
        story(&daemon.handle, &control)
    );
    let history = story(&daemon.handle, &name);
    assert!(
        shm_exists(&name),
        "{name}, created, pickled (refcount 2) and released (refcount 1) by pid {pid} before \
         it exited, was unlinked while its pickle waits in the queue:\n  {history}"
    );
    assert!(daemon.is_running());
}

/// A process whose connection outlives it (a fork that inherited the socket
/// and its journal keeps it open, as in round 3) commits more than a round's
/// worth of frames to its ring (1,024, `JOURNAL_FRAMES_PER_ROUND`) and dies:
/// a burst of releases, its last one the release of a tensor it had pickled
/// into a queue (refcount 1, the pickle's).
///
/// When the manager learns of the death (the pidfd) it calls `pid_exiting`,
/// reads one round's worth of every ring (`drain_all`,
/// transport-unix/src/event_loop.rs, the `!driver.exited.is_empty()` block)
/// and then calls `pid_exited`, which ends the process's holder with what it
/// holds *so far*: the tensor's registration, whose release is still unread
/// in the ring, turns into a dead registration. Read in the next round, the
/// release finds only an ended holder and is ignored as stray. `dead` 1,
/// refcount 1: the pickled tensor is an orphan, and, as its holder's
/// connection lived on, a map check finds nobody mapping it (it is in a
/// queue) and it is unlinked after the grace period. The control, a process
/// whose short ring is read whole before its end is acted on, keeps its
/// tensor.
///
/// Fixed: before `pid_exited` the driver reads, on every connection the pid
/// has holders on, all that is committed to the journal and queued on the
/// socket at that moment (`Manager::connections_of`, `read_queued`).
#[test]
fn a_release_beyond_one_rounds_budget_is_read_before_its_senders_holds_turn_dead() {
    let mut daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    // The connections that outlive their processes (their forks' copies).
    let mut long = JournalClient::attach(&daemon.handle, 8192);
    let mut short = JournalClient::attach(&daemon.handle, 64);
    let mut busy = Sleeper::spawn();
    let mut quiet = Sleeper::spawn();
    let name = name_of("burst", busy.pid());
    let control = name_of("burst_control", quiet.pid());
    let _cleanup = Cleanup(vec![name.clone(), control.clone()]);
    // Registered (and read) while their producers live; pickled and dropped:
    // refcount 1, the pickle's.
    long.register(busy.pid(), &name);
    assert_eq!(long.ring(), Some(*b"OK"));
    short.register(quiet.pid(), &control);
    assert_eq!(short.ring(), Some(*b"OK"));
    create_segment(&name, 1, 64);
    create_segment(&control, 1, 64);

    let junk = unique_name("h4junk");
    daemon.while_stopped(|| {
        // Three rounds' worth of releases of something it never held (a
        // double free; any frames do), then the tensor's release.
        for _ in 0..3_500 {
            long.release(busy.pid(), &junk);
        }
        long.release(busy.pid(), &name);
        short.release(quiet.pid(), &control);
        busy.kill();
        quiet.kill();
    });
    assert_eq!(long.ring(), Some(*b"OK"), "the whole ring is read");
    assert_eq!(short.ring(), Some(*b"OK"));

    std::thread::sleep(Duration::from_secs(3));
    assert!(
        shm_exists(&control),
        "control: {control}, released in a short ring, is kept in transit:\n  {}",
        story(&daemon.handle, &control)
    );
    let history = story(&daemon.handle, &name);
    assert!(
        shm_exists(&name),
        "{name}, released by its producer behind 3,500 other frames before it died, was \
         unlinked while its pickle waits in the queue:\n  {history}"
    );
    assert!(daemon.is_running());
}

/// The same on the socket, with PyTorch's shared connection: a DataLoader
/// worker forked after its parent used the manager sends on the parent's
/// connection, each frame carrying its own pid. Releases are not answered,
/// so a worker's last releases may still sit in the socket when it has
/// exited; the manager reads one 64 KiB buffer (about 960 frames) per
/// client per round (`READS_PER_ROUND`, transport-unix/src/event_loop.rs),
/// and calls `pid_exited` at the end of the round in which the worker's
/// pidfd turned readable. A connection busy with more than a buffer's worth
/// of frames (the parent and its other workers releasing a batch) leaves
/// the worker's release of a tensor it pickled unread at that point: its
/// registration turns dead, the release that follows is ignored as stray,
/// and the pickle in the queue (refcount 1, `dead` 1) is reaped.
///
/// Fixed with the test above (the socket's queued bytes, `FIONREAD`).
#[test]
fn a_workers_release_behind_a_full_buffer_on_a_shared_connection_is_read_before_its_end() {
    use std::io::Write;
    let mut daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    // The parent's connection, which the worker shares.
    let mut shared = daemon.connect();
    let mut worker = Sleeper::spawn();
    let pid = worker.pid();
    let name = name_of("shared_burst", pid);
    let _cleanup = Cleanup(vec![name.clone()]);
    shared.register_as(pid, &name);
    // Created (1), pickled to the parent (2), dropped by the worker (1).
    create_segment(&name, 1, 64);

    let junk = unique_name("h4junk");
    let mut bytes = Vec::new();
    for _ in 0..1_500 {
        bytes.extend_from_slice(&common::frame_from(pid, 1, &junk));
    }
    bytes.extend_from_slice(&common::frame_from(pid, 1, &name));
    daemon.while_stopped(|| {
        shared.stream.set_nonblocking(true).unwrap();
        shared
            .stream
            .write_all(&bytes)
            .expect("the socket buffers 100 KB");
        shared.stream.set_nonblocking(false).unwrap();
        worker.kill();
    });
    // The connection lives on and is answered.
    assert!(shared.answers_registration(&unique_name("h4after")));

    std::thread::sleep(Duration::from_secs(3));
    let history = story(&daemon.handle, &name);
    assert!(
        shm_exists(&name),
        "{name}, released by its worker behind 1,500 other frames on the shared connection \
         before it exited, was unlinked while its pickle waits in the queue:\n  {history}"
    );
    assert!(daemon.is_running());
}

/// One frame whose pid is negative kills the manager (a debug build, as the
/// tests and `cargo build` make it): `register` asks `Effects::pid_is_gone`
/// about a pid `watch_pid` declined, and `pid_watch::is_gone`
/// (transport-unix/src/pid_watch.rs:144) calls `Pid::from_raw(pid)` before
/// its `.filter(|_| pid > 0)`; rustix's `Pid::from_raw` has
/// `debug_assert!(raw >= 0)`, so the event loop's thread panics and the
/// manager exits, every client's names left unlinked by nobody. Any client
/// of our uid can send it, on the socket or through a journal; PyTorch's
/// never does, but the style rule is "no panics on anything from outside the
/// process". Release builds only skip the assertion.
///
/// Fixed: `is_gone` returns false for a pid of 0 or less before building a
/// `Pid`.
#[test]
fn a_frame_with_a_negative_pid_does_not_kill_the_manager() {
    let mut daemon = Daemon::start_with_stderr(&[], Stdio::null());
    let mut client = daemon.connect();
    let name = unique_name("h4negative");
    let _cleanup = Cleanup(vec![name.clone()]);
    client.send(&common::frame_from(-1, 0, &name));
    let reply = client.reply();
    assert!(
        daemon.wait_exit(Duration::from_millis(500)).is_none(),
        "the manager died on a registration by pid -1 (reply {reply:?})"
    );
    assert_eq!(reply, Some(*b"OK"));
    assert!(
        daemon
            .bystander()
            .answers_registration(&unique_name("h4neg_after"))
    );
}

// --- Withstood --------------------------------------------------------------

/// The id of the calling thread (not the process's pid: tests run on
/// threads of their own).
fn thread_id() -> i32 {
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    let tid = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
    assert_ne!(
        tid,
        std::process::id() as i32,
        "tests run on their own threads"
    );
    tid
}

/// Registrations whose pid names no process but is not the pid of one that
/// exited (0: a group) or names a live thread rather than a process must not count as a gone sender's dead
/// registration (`Effects::pid_is_gone`): each stands for its connection,
/// which lives, so none of the segments is reaped; once the connection
/// closes they are (so the test sees a reap when one happens).
#[test]
fn registrations_by_odd_pids_of_a_live_connection_are_not_taken_for_the_dead() {
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let mut connection = JournalClient::attach(&daemon.handle, 64);
    let pids = [0, thread_id()];
    let names: Vec<String> = pids
        .iter()
        .map(|pid| name_of(&format!("odd{}", pid.unsigned_abs()), *pid))
        .collect();
    let _cleanup = Cleanup(names.clone());
    for (pid, name) in pids.iter().zip(&names) {
        connection.register(*pid, name);
        create_segment(name, 1, 64);
    }
    assert_eq!(connection.ring(), Some(*b"OK"));
    std::thread::sleep(Duration::from_secs(3));
    for (pid, name) in pids.iter().zip(&names) {
        assert!(
            shm_exists(name),
            "{name}, registered by pid {pid} on a live connection, was reaped:\n  {}",
            story(&daemon.handle, name)
        );
    }
    drop(connection);
    // Something else keeps the manager serving while they are reaped.
    let _bystander = daemon.bystander();
    for name in &names {
        assert!(
            wait_until(Duration::from_secs(6), || !shm_exists(name)),
            "{name} is reaped once its connection closed"
        );
    }
}
