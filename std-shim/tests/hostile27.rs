//! A twenty-seventh hostile round, aimed at 38c9a9e: a connection's pid
//! namespace and its peer's start time are read at accept
//! (`PeerFacts::read`), and kept only if the peer's own pidfd
//! (`SO_PEERPIDFD`) says it still ran after the reads.
//!
//! Everything is real: processes, nested pid namespaces (`unshare`),
//! sockets, journals, `/dev/shm`. A connect that the manager has not yet
//! accepted is set up while it is stopped (`SIGSTOP`).
//!
//! Outcome (each test's doc has the figures and says how to run it):
//!
//! - Finding 1 (worst: unlinked in use; on kernels 6.5-6.15, emulated
//!   here): a peer already reaped when the manager accepts its connection
//!   gives no pidfd there (`SO_PEERPIDFD` fails with `EINVAL`: the kernel
//!   hands out pidfds of reaped peers only from 6.16), and `PeerFacts::read`
//!   then takes what `/proc` says under the peer's pid, as for a kernel
//!   without pidfds: hostile26's finding 1 again, one step earlier. A
//!   launcher of another pid namespace, gone before accept, its pid given
//!   to a process of ours: a live process of the other namespace has its
//!   name in transit unlinked about a second later, 3 of 3 runs. Fixed:
//!   only "no such option" falls back to /proc; the test runs in the suite.
//! - Finding 2 (unlinked in use; older than 38c9a9e): a connection's
//!   namespace is its connector's, but a journal carries no writer: a
//!   connection opened by a live process of ours and used (journal offered
//!   and written) by a process of another pid namespace, as a launcher
//!   handing its connection into a container does, has that process's
//!   pids read as ours. Its name in transit, registered under its own
//!   namespace's pid (free in ours), is unlinked about a second later
//!   while it lives, 3 of 3 runs. Open: the test's journal is offered and
//!   written by a process of ours on the other's behalf, which the manager
//!   cannot tell from that process writing for itself; a check of the
//!   offering writer's namespace (tried) cannot catch it, and made the
//!   connections untrusted at accept trusted again. What a connection
//!   carries is trusted as its connector's: it must not cross pid
//!   namespaces (README).
//! - Withstood: the same reaped-before-accept launcher on this kernel
//!   (6.18: a stale pidfd, which reads as exited): the connection is
//!   untrusted and the name kept (checked by hand against finding 1's
//!   emulation, which is the mutation).
//!
//! Looked at by reading, not driven:
//! - A zombie leader with live threads (`pthread_exit`): its pidfd polls
//!   readable only when the whole thread group has exited, `NSpid` and the
//!   start time are still readable (the leader's `struct pid` stays
//!   attached until the last thread is reaped), and `proc_stat` counts
//!   threads; so it is taken as alive and of its namespace, as it is.
//! - A peer that execs between connect and accept keeps its pid (a
//!   non-leader thread's exec takes the leader's pid and start time in
//!   `de_thread`), so the facts stay its own.
//! - `EMFILE` at `SO_PEERPIDFD`: accept took the last slot, so the `/proc`
//!   reads that follow fail too (`read_to_string` needs a descriptor) and
//!   the connection is untrusted (a leak for its life, never an unlink);
//!   nothing closes a descriptor between the two. The pidfd is dropped at
//!   the end of the accept arm, so a storm does not hold one per
//!   connection.
//!
//! Measured, no finding: the cost of an accept (now `SO_PEERPIDFD`, a
//! `poll` and two `/proc` reads, where 349f2af read one) against 349f2af,
//! each built in debug in its own target dir, a Python client making
//! connections one after another and the manager's CPU time read from
//! `/proc/<pid>/stat` (fields 14 and 15) over the storm, until it
//! settles. Connect-and-close from a live peer, 5,000: 64-68 us of
//! manager CPU per connection against 30-32 us (3 runs each), wall time
//! 0.92-1.01 s against 0.75-0.83 s (the client is the bottleneck).
//! Connect-and-exit from forked children, 1,000: 130-140 us against
//! 110-140 us, wall 1.85-2.22 s against 2.00-2.74 s (the forks dominate).
//! About 35 us more per accept in debug: a storm of 10,000 connections a
//! second would cost a third of a core more. Another client's latency
//! during the storm was not measured.
//!
//! Not attacked (time): a close for cause on a connection with
//! `peer_started` None; a peer that forks and exits after accept (its
//! family keeps the trust, which finding 2's root cause says is only as
//! good as who writes); a connection handed over from another user.

mod common;

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::foreign_ns::{Launcher, NestedSleeper, offer_journal};
use common::{Cleanup, Daemon, create_segment, run_id, shm_exists, story};

/// A name of PyTorch's shape, short enough for a frame.
fn name_of(tag: &str) -> String {
    format!("/torch_h27{tag}_{}", run_id())
}

/// A manager that reaps orphans a second after they are found; with
/// `old_kernel`, `SO_PEERPIDFD` fails as on Linux 6.5-6.15 for a reaped
/// peer.
fn manager(old_kernel: bool) -> Daemon {
    let mut command = Command::new(common::SHM_MANAGER);
    command.args(["--reap-grace", "1s"]).stderr(Stdio::null());
    if old_kernel {
        // SAFETY: `prctl` only, async-signal-safe, on a filter built on
        // the stack between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if refuse_peer_pidfd() {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    Daemon::spawn(&mut command)
}

/// Installs a seccomp filter under which `getsockopt(SO_PEERPIDFD)` fails
/// with `EINVAL`, what `pidfd_prepare` answered for a peer with no task
/// (reaped) before Linux 6.16 ("net, pidfs: enable handing out pidfds for
/// reaped sk->sk_peer_pid"). Everything else is allowed.
///
/// # Safety
///
/// Async-signal-safe: fine between fork and exec.
unsafe fn refuse_peer_pidfd() -> bool {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const ALLOW: u32 = 0x7fff_0000;
    const ERRNO: u32 = 0x0005_0000;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut filter = [
        op(LD_W_ABS, 0, 0, 4), // arch
        op(JEQ_K, 0, 5, AUDIT_ARCH_X86_64),
        op(LD_W_ABS, 0, 0, 0), // nr
        op(JEQ_K, 0, 3, libc::SYS_getsockopt as u32),
        op(LD_W_ABS, 0, 0, 32), // args[2], the option (low half)
        op(JEQ_K, 0, 1, libc::SO_PEERPIDFD as u32),
        op(RET_K, 0, 0, ERRNO | libc::EINVAL as u32),
        op(RET_K, 0, 0, ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `program` points at `filter`, alive for the call; the kernel
    // copies it.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const program,
            ) == 0
    }
}

/// Whether `name` is still there after `for_`, looked at all along.
fn kept_for(name: &str, for_: Duration) -> bool {
    !common::wait_until(for_, || !shm_exists(name))
}

/// A pid free in ours from 3000 on, for a process of another namespace to
/// be given there.
fn free_pid() -> i32 {
    (3_000..3_500)
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .expect("a free pid")
}

// --- Findings ---------------------------------------------------------------

/// Finding 1. On kernels 6.5-6.15, a connection whose launcher, of another
/// pid namespace, was reaped before the manager accepted it is read as
/// whatever process of ours has the launcher's pid by then: `SO_PEERPIDFD`
/// gives no pidfd for a reaped peer there (`EINVAL`), and
/// `PeerFacts::read` treats a missing pidfd as a kernel without pidfds,
/// taking `/proc` at its word. A live process of the other namespace
/// registering through the connection under its own pid (free in ours) is
/// then a gone sender, and its name in transit is unlinked while it lives.
///
/// How (root, a private pid namespace): the manager runs under a seccomp
/// filter that fails `getsockopt(SO_PEERPIDFD)` with `EINVAL`, what those
/// kernels answer for a reaped peer (6.5-6.15 `pidfd_prepare`: no task, no
/// pidfd; this machine runs 6.18, which hands out a stale one). While the
/// manager is stopped, a launcher in a pid namespace of its own (`unshare
/// --pid --fork python3`) connects (into the backlog), hands the
/// connection to the test, exits and is reaped, and a `sleep` of ours is
/// given its pid; then the manager is continued and accepts. H, a `sleep`
/// in another new pid namespace, is given there a pid `k` free in ours. On
/// the handed connection the test offers a journal and commits, for H, a
/// registration of N under `k`, and rings; N is created with refcount 1,
/// mapped by nobody (in transit).
///
/// Figures (debug): N unlinked 1.1 s after the ring was answered, H alive,
/// 3 of 3 runs. Control, the same without the filter (the withstood test
/// below): N kept 3 s, 3 of 3.
///
/// Root cause: `PeerFacts::read` (transport-unix/src/pid_watch.rs:296-308)
/// keeps the `/proc` reads when `pidfd` is `None`, and
/// `listener::peer_pidfd` (transport-unix/src/listener.rs:130-151) returns
/// `None` for every failure alike: `ENOPROTOOPT` (a kernel before 6.5,
/// where nothing better is known) and `EINVAL`/`ESRCH` (the peer is
/// reaped: the reads are surely not its own).
///
/// Suggested fix: have `peer_pidfd` tell "the kernel has no such option"
/// from "the peer has no task", and read nothing (`PeerFacts::default`,
/// a leak at worst) in the second case; better, without a pidfd, pin the
/// reads with `pidfd_open(peer)` taken before them and checked after
/// (`open_trusted_pidfd`'s order), which also covers the kernels with
/// pidfds but without `SO_PEERPIDFD` (5.3-6.4) as far as `/proc` can.
///
/// Run: `LIBSHM_REQUIRE_ROOT=1 cargo test -p libshm --test hostile27 older_kernel`
///
/// Fixed the first way: `listener::peer_pidfd` tells `ENOPROTOOPT` (no such
/// option: /proc at accept, as before 6.5) from any other failure
/// (`PeerPidfd::Refused`: nothing is read, the connection untrusted).
/// Fails without (checked: N unlinked).
#[test]
fn on_an_older_kernel_a_launcher_reaped_before_accept_leaves_its_connection_untrusted() {
    if !common::in_private_pid_namespace(
        "on_an_older_kernel_a_launcher_reaped_before_accept_leaves_its_connection_untrusted",
    ) {
        return;
    }
    reaped_before_accept_keeps_a_live_senders_name(true);
}

/// Finding 1's scenario: returns after asserting N was kept.
fn reaped_before_accept_keeps_a_live_senders_name(old_kernel: bool) {
    let daemon = manager(old_kernel);
    let kept = name_of(if old_kernel { "oldk" } else { "newk" });
    let _cleanup = Cleanup(vec![kept.clone()]);
    create_segment(&kept, 1, 64);
    let mut handed = None;
    let mut ours = None;
    let mut launcher_pid = 0;
    daemon.while_stopped(|| {
        let mut launcher = Launcher::hand_over(&daemon.handle, true);
        launcher.exit();
        launcher_pid = launcher.pid;
        ours = Some(common::sleeper_with_pid(launcher.pid));
        handed = launcher.connection.take();
    });
    let k = free_pid();
    let mut h = NestedSleeper::start(k);
    let mut ring = offer_journal(handed.unwrap());
    ring.register(k, &kept);
    assert_eq!(ring.ring(), Some(*b"OK"));
    let registered = std::time::Instant::now();
    let kept_ok = kept_for(&kept, Duration::from_secs(3));
    let gone_after = registered.elapsed();
    assert!(h.is_alive(), "H lives");
    assert!(
        kept_ok,
        "{kept}, in transit from H (pid {k} of its own pid namespace, alive), on a connection \
         whose launcher {launcher_pid} of another pid namespace was reaped before accept (its \
         pid since given to a process of ours), was unlinked after {gone_after:?}:\n  {}",
        story(&daemon.handle, &kept)
    );
    h.kill();
    drop((ring, ours));
}

/// Finding 2. A connection opened by a live process of ours is trusted to
/// carry pids of ours for its life, whoever writes its journal: a journal
/// frame carries no writer (`Driver::speaks_for`, event_loop.rs:1638-1648,
/// is true when `writer` is None), so a process of another pid namespace
/// using the connection (a launcher of ours handing its connection into a
/// container, whose client offers the journal and registers under its own
/// `getpid()`) has its pids read as ours. Where its pid names nobody in ours, it is a gone sender's and
/// its name in transit is unlinked about a second later while it lives.
///
/// How (root, a private pid namespace): the test connects (the launcher of
/// ours, alive throughout) and plays the other namespace's client on the
/// connection: it offers a journal and commits, for H (a `sleep` in a new
/// pid namespace, given there a pid `k` free in ours), a registration of
/// N under `k`, and rings; N is created with refcount 1, mapped by nobody
/// (in transit). The bytes are those H's client would write (a journal
/// carries no writer, so who wrote them is not seen either way).
///
/// Figures (debug): N unlinked 1.1 s after the ring was answered, H alive,
/// 3 of 3 runs (the story: registered, the sender's end, `orphaned`).
///
/// Root cause: `Client::frames_name_our_pids`
/// (transport-unix/src/event_loop.rs:576, read in `PeerFacts::read`)
/// is a fact about the connector, and `Driver::pid_is_gone`
/// (event_loop.rs:1661-1674) applies it to every frame of the connection,
/// journal frames included, whose writer nothing names. Before 38c9a9e the
/// same (the lookup was the connector's on first need).
///
/// Suggested fix: tie trust to the journal's offerer, not the connector:
/// receive the SETUP frame's sender with `SO_PASSPIDFD` (`SCM_PIDFD`, 6.5+)
/// and read its namespace pinned by that pidfd as `PeerFacts::read` does,
/// trusting the journal's pids only if it is ours; or check each ring's
/// kernel-named writer likewise. Short of that, document that a
/// connection must not cross pid namespaces.
///
/// Run: `LIBSHM_REQUIRE_ROOT=1 cargo test -p libshm --test hostile27 -- --ignored handed_into`
#[test]
#[ignore = "finding 2: a connection of ours used by another pid namespace has its journal's pids read as ours"]
fn a_connection_of_ours_handed_into_another_namespace_keeps_its_names() {
    if !common::in_private_pid_namespace(
        "a_connection_of_ours_handed_into_another_namespace_keeps_its_names",
    ) {
        return;
    }
    let daemon = manager(false);
    let kept = name_of("handed");
    let _cleanup = Cleanup(vec![kept.clone()]);
    create_segment(&kept, 1, 64);
    let k = free_pid();
    let mut h = NestedSleeper::start(k);
    let mut ring = offer_journal(UnixStream::connect(&daemon.handle).unwrap());
    ring.register(k, &kept);
    assert_eq!(ring.ring(), Some(*b"OK"));
    let registered = std::time::Instant::now();
    let kept_ok = kept_for(&kept, Duration::from_secs(3));
    let gone_after = registered.elapsed();
    assert!(h.is_alive(), "H lives");
    assert!(
        kept_ok,
        "{kept}, in transit from H (pid {k} of its own pid namespace, alive), on a connection \
         opened by a live process of ours, was unlinked after {gone_after:?}:\n  {}",
        story(&daemon.handle, &kept)
    );
    h.kill();
    drop(ring);
}

// --- Withstood --------------------------------------------------------------

/// Finding 1's scenario on this kernel (6.16 on): `SO_PEERPIDFD` hands out
/// a pidfd of the reaped launcher, which polls readable (exited), so
/// `PeerFacts::read` drops the `/proc` reads (our `sleep`'s) and the
/// connection's pids are never trusted: N is kept (a leak for the
/// connection's life at worst, which hostile26 accepted).
///
/// How it can fail: were the pidfd ignored, or missing (finding 1's
/// filter is exactly that mutation), N would be unlinked about a second in.
/// Checked by hand: with the filter (the ignored test above), N unlinked
/// in 3 of 3 runs; as here, kept in 3 of 3.
///
/// Run: `LIBSHM_REQUIRE_ROOT=1 cargo test -p libshm --test hostile27 reaped_before_accept`
#[test]
fn a_launcher_reaped_before_accept_leaves_its_connection_untrusted() {
    if !common::in_private_pid_namespace(
        "a_launcher_reaped_before_accept_leaves_its_connection_untrusted",
    ) {
        return;
    }
    reaped_before_accept_keeps_a_live_senders_name(false);
}

// --- Helpers (as hostile26's) -----------------------------------------------
