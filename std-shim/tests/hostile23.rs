//! A twenty-third hostile round, aimed at the changes since 0f1be94's
//! parent: the core's answer to a process given a gone sender's pid
//! (d46eb02, 350749f), the driver's per-read cache of `pid_is_gone`
//! answers (c48d082, `Driver::gone_this_read`), and the client's blocking
//! wait again (e16044e: `UnixTransport::receive` retries `EINTR` itself
//! with what is left of the socket's `SO_RCVTIMEO`, read at the first
//! `EINTR` and written back when the wait ends).
//!
//! Everything is real: sockets, threads, signals (`SIGUSR2`, a handler that
//! does nothing, `SA_RESTART`, as a profiler's or a timer's).
//!
//! Outcome (each test's doc has the figures and says how to run it):
//!
//! - Finding 1 (our client waits past its reply timeout): the write-back
//!   at the end of an interrupted wait undoes a reply timeout set meanwhile
//!   through another handle of the same socket (a `dup`, or a fork's copy:
//!   `SO_RCVTIMEO` belongs to the socket, not the descriptor). That
//!   handle's next receive, set to 200 ms, waited 2 s.
//! - Finding 2 (spurious timeouts for good): two interrupted waits on one
//!   socket; the second reads the first's shortened timeout (what was left
//!   of it) as the socket's own, times out early, and, ending last, writes
//!   it back: every later receive of every handle times out at 400 ms
//!   where 2 s was set.
//!
//!   Both fixed: after an `EINTR`, `receive` waits in `poll` for what is
//!   left of the timeout and reads with `MSG_DONTWAIT`, never writing the
//!   socket's option; both tests run in the suite.
//! - Withstood: a signal every 5 ms during a 300 ms wait (it times out at
//!   about 300 ms, and the socket keeps 300 ms), and during a wait with no
//!   timeout (the answer is returned, the socket keeps no timeout).
//!
//! Looked at without a test of their own (by reading):
//! - c48d082's cache. Its two manager calls that reach `holder_for`
//!   (`Manager::receive` in `Driver::read_from`, `Manager::read_journal` in
//!   `Driver::drain`) both clear it just before, and nothing else asks
//!   `pid_is_gone` (`Manager::holder_for` only, core/src/manager.rs:2175,
//!   2189), so no answer outlives its read or crosses to another
//!   connection, and `end_exited`/`pid_exited` never consult it. A "gone"
//!   answer applied to a frame of a process started after the look would
//!   need that frame to be read after the look: a socket read holds one
//!   writer's bytes, all written before the read (the look follows it),
//!   and `Journal::drain_up_to` fixes the committed count before the first
//!   frame's callback, so a ring batch holds only frames committed before
//!   any look. A process that started, wrote and died before the look is
//!   answered "gone" and its frames join the gone holder: it is dead.
//! - d46eb02 + 350749f beyond hostile22's findings 1-2 (known, open): not
//!   attacked again in the time given.
//!
//! Not attacked: `set_reply_timeout` between receives of one handle (it
//! takes `&self`, a receive `&mut self`: no overlap within one handle; the
//! write-back runs before `receive` returns).

mod common;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::signals::install_idle_handler;
use libshm::protocol::transport::{ErrorKind, Transport, TransportError};
use libshm_unix::UnixTransport;

/// The socket's receive timeout as the kernel has it now.
fn socket_timeout(socket: &UnixStream) -> Option<Duration> {
    socket.read_timeout().unwrap()
}

/// A handle of its own on `socket` (a `dup`: one socket, one `SO_RCVTIMEO`).
fn another_handle(socket: &UnixStream) -> UnixTransport {
    let fd: OwnedFd = socket.try_clone().unwrap().into();
    UnixTransport::from_fd(fd)
}

/// A thread waiting in `transport.receive`, which can be signalled.
struct Waiter {
    thread: std::thread::JoinHandle<(Result<usize, ErrorKind>, Duration)>,
    tid: libc::pthread_t,
}

impl Waiter {
    fn start(mut transport: UnixTransport) -> Self {
        let (tid_tx, tid_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: `pthread_self` has no preconditions.
            tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
            let began = Instant::now();
            let got = transport.receive(&mut [0u8; 2]).map_err(|e| e.kind());
            (got, began.elapsed())
        });
        let tid = tid_rx.recv().unwrap();
        Self { thread, tid }
    }

    fn signal(&self) {
        assert!(!self.thread.is_finished(), "signalled after its wait ended");
        // SAFETY: the thread lives until joined, and is not finished.
        unsafe { libc::pthread_kill(self.tid, libc::SIGUSR2) };
    }

    fn join(self) -> (Result<usize, ErrorKind>, Duration) {
        self.thread.join().unwrap()
    }
}

/// How long `transport.receive` waits on a silent peer.
fn silent_wait(transport: &mut UnixTransport) -> (Result<usize, ErrorKind>, Duration) {
    let began = Instant::now();
    let got = transport.receive(&mut [0u8; 2]).map_err(|e| e.kind());
    (got, began.elapsed())
}

/// Finding 1. A reply timeout set through one handle of a socket while
/// another handle's wait was interrupted is undone when that wait ends:
/// the write-back restores the value read at its first `EINTR`. The first
/// handle's next receive, set to 200 ms, waits 2 s for a silent manager.
/// Two handles of one socket are a `dup` or a fork's copy (the std shim's
/// fork child leaves its parent's link alone, but `UnixTransport` is public,
/// and before e16044e a handle's timeout held until it changed it again).
///
/// How: a socket pair; handle B (`dup`) is set to 2 s and waits; 50 ms in
/// it is signalled (it reads 2 s and sets what is left, 1.95 s); 100 ms in,
/// handle A sets 200 ms; 150 ms in the peer writes 2 bytes, B takes them
/// and writes 2 s back. Then A receives from the silent peer.
///
/// Figures (debug): A's receive, set to 200 ms, timed out after 2.01-2.03 s
/// (4 of 4 runs); `SO_RCVTIMEO` read 2 s right after
/// B's wait.
///
/// Root cause: `UnixTransport::receive` (transport-unix/src/socket.rs
/// :171-202) writes back, when its wait ends, the timeout it read at its
/// first `EINTR`, whatever was set on the socket since;
/// `UnixTransport::set_reply_timeout` (:88-91) keeps nothing of its own.
///
/// Suggested fix: never write the socket's option from `receive`: retry
/// `EINTR` with a wait bounded by what is left of the timeout without
/// touching `SO_RCVTIMEO`: `poll` with that as its timeout before each
/// retried `recv` (the poll costs only on the rare `EINTR` path, so the
/// single strict client keeps its blocking `recv`), or store the timeout
/// in the transport (as 1a1fc12 did) and use `SO_RCVTIMEO` only as the
/// first wait's bound. At the least, write back only if the socket still
/// holds the value `receive` set.
///
/// Fixed as suggested first: after an `EINTR`, `receive` waits in `poll`
/// for what is left and reads with `MSG_DONTWAIT`; it never writes the
/// socket's timeout.
///
/// Run: `cargo test -p libshm --test hostile23 set_meanwhile -- --nocapture`
#[test]
fn a_reply_timeout_set_meanwhile_through_another_handle_bounds_its_next_receive() {
    use std::io::Write;
    install_idle_handler();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut a = another_handle(&ours);
    let b = another_handle(&ours);
    b.set_reply_timeout(Some(Duration::from_secs(2))).unwrap();
    let waiter = Waiter::start(b);
    std::thread::sleep(Duration::from_millis(50));
    waiter.signal();
    std::thread::sleep(Duration::from_millis(50));
    a.set_reply_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    theirs.write_all(b"OK").unwrap();
    let (got, _) = waiter.join();
    assert_eq!(got, Ok(2), "B takes the answer");
    let left_on_socket = socket_timeout(&ours);
    let (got, waited) = silent_wait(&mut a);
    eprintln!(
        "after B's wait the socket's timeout is {left_on_socket:?}; A (set to 200 ms) \
         returned {got:?} after {waited:.2?}"
    );
    assert_eq!(got, Err(ErrorKind::TimedOut));
    assert!(
        waited < Duration::from_millis(600),
        "a receive set to 200 ms waited {waited:.2?}: the timeout set through this handle \
         was undone by another handle's interrupted wait (socket now {left_on_socket:?})"
    );
}

/// Finding 2. Two interrupted waits on one socket leave it a shortened
/// timeout for good: the second reads, at its first `EINTR`, what the
/// first set for what was left of its wait, takes it for the socket's
/// timeout (it times out early), and, ending after the first, writes it
/// back. Every later receive of every handle then times out at that.
///
/// How: handles A and B (`dup`) of one socket set to 2 s; A waits, and is
/// signalled 1.6 s in (it sets 400 ms); B starts waiting 1.7 s in and is
/// signalled 1.8 s in (it reads 400 ms, sets 300 ms). A times out at 2 s
/// and writes 2 s back; B times out at 2.1 s and writes 400 ms back. Then
/// A receives from the silent peer.
///
/// Figures (debug): B, set to 2 s, timed out after 0.41-0.43 s; afterwards
/// the socket held 400-404 ms and a later receive, set to 2 s, timed out
/// after 0.42 s (4 of 4 runs; A timed out at 2.01-2.02 s as set).
///
/// Root cause: as finding 1: `UnixTransport::receive`
/// (transport-unix/src/socket.rs:171-202) takes `SO_RCVTIMEO` at its first
/// `EINTR` as the handle's own timeout, though another wait may have
/// shortened it, and writes back what it read.
///
/// Suggested fix: as finding 1 (bound the retried waits without writing
/// `SO_RCVTIMEO`). Fixed with finding 1.
///
/// Run: `cargo test -p libshm --test hostile23 shortened -- --nocapture`
#[test]
fn two_interrupted_waits_on_one_socket_leave_its_timeout_as_set() {
    install_idle_handler();
    let (ours, _silent) = UnixStream::pair().unwrap();
    let a = another_handle(&ours);
    let b = another_handle(&ours);
    a.set_reply_timeout(Some(Duration::from_secs(2))).unwrap();
    let began = Instant::now();
    let sleep_until = |at: u64| {
        let at = Duration::from_millis(at);
        std::thread::sleep(at.saturating_sub(began.elapsed()));
    };
    let first = Waiter::start(a);
    sleep_until(1_600);
    first.signal();
    sleep_until(1_700);
    let second = Waiter::start(b);
    sleep_until(1_800);
    second.signal();
    let (first_got, first_waited) = first.join();
    let (second_got, second_waited) = second.join();
    let left_on_socket = socket_timeout(&ours);
    let mut a = another_handle(&ours);
    let (got, waited) = silent_wait(&mut a);
    eprintln!(
        "A: {first_got:?} after {first_waited:.2?}; B: {second_got:?} after {second_waited:.2?}; \
         the socket's timeout then {left_on_socket:?}; a later receive: {got:?} after {waited:.2?}"
    );
    assert_eq!(
        left_on_socket,
        Some(Duration::from_secs(2)),
        "the socket's timeout after two interrupted waits"
    );
    assert!(
        waited > Duration::from_millis(1_500),
        "a receive set to 2 s timed out after {waited:.2?}"
    );
}

/// Withstood. A signal every 5 ms (a signal storm) does not stretch or
/// shorten a wait, nor change the socket's timeout: with 300 ms set, the
/// wait times out at about 300 ms and the socket holds 300 ms afterwards;
/// with no timeout, the answer written 300 ms in is returned and the socket
/// still has none. Can fail: a retry with the whole timeout never times
/// out (hostile22 finding 3), a write-back skipped on the timeout path
/// leaves the last `left` (a few ms), a `left` of zero written as a
/// timeout means none, a `None` timeout treated as zero fails at once.
/// Checked by hand against e16044e: with the write-back removed from
/// `receive`, the timeout case failed (the socket held 4 ms after the
/// storm); `receive` no longer writes the socket's timeout at all. Figures
/// (debug): 301-302 ms with 59-60 signals; the answer at 300 ms.
///
/// Run: `cargo test -p libshm --test hostile23 signal_storm -- --nocapture`
#[test]
fn a_signal_storm_neither_stretches_a_wait_nor_changes_the_socket_timeout() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    install_idle_handler();
    for timeout in [Some(Duration::from_millis(300)), None] {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let transport = another_handle(&ours);
        transport.set_reply_timeout(timeout).unwrap();
        let set = socket_timeout(&ours);
        let waiter = Waiter::start(transport);
        let stop = Arc::new(AtomicBool::new(false));
        let tid = waiter.tid;
        let storm = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut sent = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                    // SAFETY: the waiter's thread is joined only after
                    // this thread stops.
                    unsafe { libc::pthread_kill(tid, libc::SIGUSR2) };
                    sent += 1;
                }
                sent
            })
        };
        if timeout.is_none() {
            std::thread::sleep(Duration::from_millis(300));
            theirs.write_all(b"OK").unwrap();
        }
        let ended = wait_until(Duration::from_secs(2), || waiter.thread.is_finished());
        stop.store(true, Ordering::Relaxed);
        let sent = storm.join().unwrap();
        let (got, waited) = waiter.join();
        let after = socket_timeout(&ours);
        eprintln!(
            "timeout {timeout:?}: {got:?} after {waited:.2?}, {sent} signals; the socket's \
             timeout {set:?} before, {after:?} after"
        );
        assert!(ended, "the wait outlived 2 s of signals");
        match timeout {
            Some(timeout) => {
                assert_eq!(got, Err(ErrorKind::TimedOut));
                assert!(waited >= timeout, "{waited:?}");
                assert!(waited < timeout * 2, "{waited:?}");
            }
            None => assert_eq!(got, Ok(2)),
        }
        assert_eq!(after, set, "the socket's timeout after the storm");
    }
}

/// Polls `done` until it holds or `within` has passed.
fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let began = Instant::now();
    while began.elapsed() < within {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}
