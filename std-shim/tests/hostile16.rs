//! Hostile round 16, against 028424b: the fresh wait that stands for a look
//! at a pidfd (`PidWatches::has_ended`, transport-unix/src/pid_watch.rs), the
//! tie of a connection closed for cause to another live writer
//! (`Driver::watch_peer`, transport-unix/src/event_loop.rs), and leftovers.
//!
//! Tried, and what came of it:
//! - The fresh wait's clock (finding 1): `wait_returned` read the clock
//!   after the wait returned, but the kernel looks at the ready list at some
//!   moment inside the call, and a manager stopped or preempted between that
//!   look and the clock read came back to a wait it took for one a few
//!   microseconds old. Held there by `ptrace` while the pid of a watched
//!   child was reused, the manager let the new child's registration join the
//!   old one's holder, and unlinked the new child's segment after the grace
//!   (with an optimized manager, 4 of 4 tries; hostile10's first finding
//!   fails again the same way). A `SIGSTOP` of the sleeping manager does the
//!   same without `ptrace` (its wait returns `EINTR` and no events at
//!   `SIGCONT`), through a journal read at the loop's top, had the manager's
//!   way there been shorter than 10 us (17 us here). Built without
//!   optimizations the manager never took the shortcut after a stop (15 to
//!   45 us to the look): a unit test in pid_watch.rs shows the flaw in any
//!   build. Fixed: a wait is timed from before the call.
//! - Events past the 1,024 a wait takes (`complete`), pidfds made during a
//!   round (`made_after`), pids reported by the wait (`ended`), the loop
//!   top's journal reads and the map check's and sweep's `drain_all`: all
//!   judged by the same wait, so they stood or fell with its clock; nothing
//!   else let a look be skipped. The window itself (10 us for an end, a
//!   reaping, a clone and a write, from the wait's start) was not raced
//!   without a stop. Slots of a journal rewritten after their commit are
//!   read under a look made for the frames before them (`running_since_read`);
//!   only the family that owns the ring can do that, to itself.
//! - The tie to another live writer (e9914d5): it goes to one writer, the
//!   last first. A last writer alive at the close that ends a moment later
//!   took the connection's untrusted holds with it, and a live member's
//!   name in transit went after the linger (finding 2, fixed: the tie
//!   passes on to the next live writer). A stranger
//!   given a dead writer's pid before the manager reads the writer's bytes
//!   has its start time remembered for the writer's, and keeps the
//!   connection's names as long as it lives (finding 3, open: the start time
//!   is read at the read, not when the bytes were written; the peer's, read
//!   at accept, has the same race; the kernel's `SCM_PIDFD` and
//!   `SO_PEERPIDFD` would pin the process). A writer whose pid is reused by
//!   a later writer keeps its first start time (`note_writer_started` looks
//!   once per pid): the later one is not tied, which errs towards the map
//!   check. Otherwise, being remembered as a writer takes a copy of the
//!   connection, which a process of the same user can always get
//!   (`pidfd_getfd`); it then keeps the names while it lives, as a member
//!   would, and the manager still unlinks them when it exits.
//! - Status reports asked over and over by askers that read them (finding 4):
//!   eight askers of history reports held another client's registration to
//!   24 ms (median) and about 50 ms (p99) with an optimized manager, up to
//!   68 and 138 ms without (16 to 21 us idle); summary reports about as long
//!   (the 4,096 sizes each report looks up cost most). Each report was built
//!   whole on the loop, four to a round. Fixed: a report is written a piece
//!   at a time as its asker's socket has room, and all the reports in flight
//!   share one budget of lines and sizes per round (`report::Report`,
//!   transport-unix/src/report.rs), as the names report already was.
//! - A recovery sweep over 50,000 leaked segments: the walk runs off the
//!   loop; taking them all on, in one go on the loop, held another client up
//!   3.3 ms at most with an optimized manager, 75 ms without (withstood,
//!   kept with a bound for each).
//! - Not run this round: `shmctl gc` and inspection against FIFOs and
//!   symlinks (the namespace round and rounds 1, 7 and 9 cover them);
//!   pidfds as a way to run the manager out of descriptors (each costs the
//!   attacker a live process, and running out pauses accepting as a flood
//!   of connections does, exhaustion.rs); a million names (scale.rs).
//!
//! Each "Finding" test failed on 028424b (finding 1 with an optimized
//! manager, and is fixed); its comment says what went wrong and why.
//! Finding 4's tests, fixed too, lost the prefix and say what they
//! withstand. Open
//! findings are ignored (a private pid namespace's inner run includes
//! them). The others are attacks the code withstands, kept because they
//! fail if it stops withstanding them.
//!
//! Tests that need root fail without it under `LIBSHM_REQUIRE_ROOT=1`.
//! Names carry this run's id, and everything a test puts in `/dev/shm` is
//! removed however it ends.

mod common;

use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::handed::{
    assert_names_outlive_the_tied_writer, connection_from_exited_process,
    half_frame_from_exited_writer, manager_lingering,
};
use common::hold::{self, EPOLL_WAITS};
use common::journal_client::JournalClient;
use common::measure::{FLOOD_P99_BOUND, Probe, RoundTrips};
use common::{
    Cleanup, Daemon, NestedWorker, Sleeper, create_segment, frame, frame_from,
    in_private_pid_namespace, one_at_a_time, shm_exists, sleeper_with_pid, story, unique_name,
    wait_until,
};

/// Whether process `pid` sleeps in a wait for events (`/proc/<pid>/syscall`
/// names the call it is blocked in).
fn waits_for_events(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<i64>().ok())
        .is_some_and(|nr| EPOLL_WAITS.contains(&nr))
}

/// After the grace, the map check and slack: the segments of `news`, each
/// registered by a live process B that got a dead A's pid, that were
/// unlinked, with the manager's story of each.
fn lost_after_the_grace(daemon: &Daemon, news: &mut [(Sleeper, String)]) -> Vec<String> {
    std::thread::sleep(Duration::from_secs(4));
    let mut lost = Vec::new();
    for (b, name) in news {
        assert!(b.is_alive());
        if !shm_exists(name) {
            lost.push(format!(
                "{name} (B, pid {}): {}",
                b.pid(),
                story(&daemon.handle, name)
            ));
        }
    }
    lost
}

// --- Finding 1: a held wait taken for a fresh one --------------------------------

/// The same flaw reached through a journal and a plain stop, which needs
/// no `ptrace`. A family's journal holds a registration by A (pid P,
/// watched). The manager sleeps in its wait for events (it wakes every
/// 100 ms to read the ring) when it is stopped (`SIGSTOP`, standing in for a
/// scheduler that takes the CPU from it after the kernel's look at the ready
/// list). Meanwhile A dies and is reaped, a new member B gets pid P, its
/// registration is committed to the ring and its segment created. At
/// `SIGCONT` the wait returns `EINTR` with no events, and on 028424b
/// `wait_returned` recorded it as a complete wait that returned *now* and
/// reported no end; the ring is read at the loop's top (past its 100 ms
/// interval), and `has_ended(P)` believed that wait if the read came within
/// `FRESH_WAIT` (10 us) of the clock read. It did not here: that way (the
/// round's `work`, the loop's top, the ring) takes about 17 us with an
/// optimized manager on this machine, so this test passed on 028424b too;
/// on a faster one B's registration would have joined A's holder and B's
/// segment been unlinked after the grace while B lived. Kept as a guard:
/// the wait is timed from before the call now, and a stop anywhere after
/// that is measured.
#[test]
fn a_reused_pids_journaled_frame_read_after_a_stopped_wait_is_not_charged_to_its_old_owner() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "a_reused_pids_journaled_frame_read_after_a_stopped_wait_is_not_charged_to_its_old_owner",
    ) {
        return;
    }
    // Each try lands unless the manager runs more than 10 us from its clock
    // read to the look: a few tries make a miss unlikely.
    const TRIES: usize = 4;
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let manager = daemon.child.id();
    let _bystander = daemon.bystander();
    let mut family = JournalClient::attach(&daemon.handle, 256);
    let mut cleanup = Cleanup::default();
    let mut olds: Vec<(Sleeper, String)> = (0..TRIES)
        .map(|_| {
            let a = Sleeper::spawn();
            let name = unique_name("h16stop_a");
            cleanup.0.push(name.clone());
            family.register(a.pid(), &name);
            create_segment(&name, 1, 64);
            (a, name)
        })
        .collect();
    assert_eq!(family.ring(), Some(*b"OK"));

    let mut news: Vec<(Sleeper, String)> = Vec::new();
    for (a, _) in &mut olds {
        let pid = a.pid();
        let b_name = unique_name("h16stop_b");
        cleanup.0.push(b_name.clone());
        assert!(
            wait_until(Duration::from_secs(5), || {
                std::thread::sleep(Duration::from_millis(20));
                waits_for_events(manager)
            }),
            "the manager never slept in its wait"
        );
        let mut b = None;
        daemon.while_stopped(|| {
            a.kill();
            b = Some(sleeper_with_pid(pid));
            family.register(pid, &b_name);
            create_segment(&b_name, 1, 64);
            // Past the ring's read interval: the round after the wait reads it.
            std::thread::sleep(Duration::from_millis(150));
        });
        assert_eq!(family.ring(), Some(*b"OK"));
        news.push((b.unwrap(), b_name));
    }

    let lost = lost_after_the_grace(&daemon, &mut news);
    assert!(
        lost.is_empty(),
        "{} of {TRIES} segments registered by a live process B on the family's journal were \
         unlinked: B got the pid of A, which ended while the manager was stopped in its wait, \
         and the wait that returned at SIGCONT was taken for a fresh look at A's pidfd. \
         Their stories:\n  {}",
        lost.len(),
        lost.join("\n  ")
    );
    for (_, a_name) in &olds {
        assert!(
            wait_until(Duration::from_secs(5), || !shm_exists(a_name)),
            "{a_name}, A's, is reaped after A's end"
        );
    }
}

/// A family's parent writes the first 30 bytes of a registration on behalf
/// of its child A (pid P, watched), and the manager is held (`ptrace`) on
/// its way back from the wait that reported the connection readable, after
/// the kernel looked at the ready list and before the manager read its
/// clock (a scheduler may take the CPU there as well). Meanwhile A dies, a
/// new child B gets pid P, and the parent writes the frame's other 38
/// bytes: B's registration. At the resume the manager reads the whole frame
/// in one read and asks `has_ended(P)` within microseconds of the clock
/// read that `wait_returned` (event_loop.rs, after `readiness.wait`) took
/// for the wait's return: `FRESH_WAIT` (10 us) had not passed, so A's pidfd,
/// readable since A's end, was not looked at (pid_watch.rs `has_ended`), and
/// B's registration joined A's holder. One round later A's pidfd ended that
/// holder with B's hold, and B's segment (refcount 1, nobody maps it: B has
/// put it in a queue) was unlinked after the grace while B lived. hostile10's
/// `a_reused_pids_frame_read_before_its_old_owners_end_is_not_charged_to_it`
/// (a stray release, then B's whole frame) failed the same way on 028424b.
///
/// Both fail on 028424b only with an optimized manager (`cargo test
/// --release`; 4 of 4 tries here, 6 to 10 us from the clock read to the
/// look). Built without optimizations, the manager takes 15 to 45 us on that
/// way here and looks at the pidfd anyway: they pass there.
/// `PidWatches`'s unit test `a_wait_that_began_long_ago_stands_for_no_look`
/// shows the flaw in any build. Fixed: the wait is timed from before the
/// call (`wait_begins`), so a stop or a preemption anywhere after it counts.
#[test]
fn finding_a_reused_pids_frame_read_after_a_held_wait_is_not_charged_to_its_old_owner() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "finding_a_reused_pids_frame_read_after_a_held_wait_is_not_charged_to_its_old_owner",
    ) {
        return;
    }
    const TRIES: usize = 4;
    let daemon = Daemon::start_with_stderr(&["--reap-grace", "1s"], Stdio::null());
    let _bystander = daemon.bystander();
    let mut family = daemon.connect();
    let mut cleanup = Cleanup::default();
    let mut olds = Vec::new();
    for _ in 0..TRIES {
        let a = Sleeper::spawn();
        let a_name = unique_name("h16held_a");
        cleanup.0.push(a_name.clone());
        family.register_as(a.pid(), &a_name);
        create_segment(&a_name, 1, 64);
        olds.push((a, a_name));
    }
    let mut news = Vec::new();
    for (a, _) in &mut olds {
        let pid = a.pid();
        let b_name = unique_name("h16held_b");
        cleanup.0.push(b_name.clone());
        let registration = frame_from(pid, 0, &b_name);
        let mut held = hold::Held::seize(daemon.child.id());
        held.until_waiting();
        family.send(&registration[..30]);
        held.until_events_in_hand();
        a.kill();
        let b = sleeper_with_pid(pid);
        family.send(&registration[30..]);
        create_segment(&b_name, 1, 64);
        held.resume();
        assert_eq!(family.reply(), Some(*b"OK"), "B's registration");
        news.push((b, b_name));
    }

    let lost = lost_after_the_grace(&daemon, &mut news);
    assert!(
        lost.is_empty(),
        "{} of {TRIES} segments registered for a live process B on the family's connection \
         were unlinked: B got the pid of A, which ended while the manager was held after a \
         wait, and that wait was taken for a fresh look at A's pidfd. Their stories:\n  {}",
        lost.len(),
        lost.join("\n  ")
    );
}

// --- Finding 2: the tie goes to a writer that ends next --------------------------

/// hostile14's family (its connecting process gone, a nested worker that
/// registered, created and maps a name on it), but the writer whose frame
/// closes the connection for cause is alive at the close and ends a moment
/// later, as a worker that finished its task does. `Driver::watch_peer`
/// ties the connection's untrusted holds to that last writer (it runs).
/// Finding 2 was that it tied them to it alone: once it ended, the holds
/// ended, and after the linger (3 s) and the map check the worker's name,
/// in transit then (queued, unmapped), was unlinked while the worker, a
/// live writer of the connection that may still hand it on, lived. Had the
/// writer died a moment before the close, the tie would have gone to the
/// worker and the name kept (hostile14's
/// `a_connection_closed_for_cause_keeps_its_names_while_an_earlier_writer_lives`):
/// the outcome hung on which of two writers died first, by a moment.
/// Fixed: the tie passes on to the next live writer the driver remembers
/// (`Manager::tie_to_next_writer`, transport-unix's `closed_ties`).
#[test]
fn finding_a_connection_closed_for_cause_keeps_its_names_after_its_tied_writer_ends() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "finding_a_connection_closed_for_cause_keeps_its_names_after_its_tied_writer_ends",
    ) {
        return;
    }
    assert_names_outlive_the_tied_writer(0);
}

// --- Finding 3: a stranger given a writer's pid before its bytes are read ------

/// hostile14's finding 1 one step earlier. The family's connection (its
/// connecting process gone, a nested worker that registered and maps a
/// name) gets half a frame from a writer W that exits at once; before the
/// manager reads those bytes (it is stopped here, standing in for a manager
/// busy elsewhere), W is reaped and a stranger S of ours gets its pid. The
/// kernel names the bytes' writer by pid number, W's, now S's; `Client::read`
/// reads the writer's start time then (`note_writer_started`), S's, and
/// remembers it as W's. The stalled frame closes the connection for cause:
/// `watch_peer` finds the last writer "still running" by that start time
/// and ties the connection's holds to S. The worker then dies and nobody
/// maps the name, yet it is kept as long as S, a process that never wrote
/// on the connection, lives. The start time read at accept
/// (`peer_started`) has the same race with the process that connected.
#[test]
#[ignore = "open finding: a writer's start time is read after its bytes, not when it wrote them"]
fn finding_a_stranger_given_a_writers_pid_before_its_bytes_are_read_keeps_nothing() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "finding_a_stranger_given_a_writers_pid_before_its_bytes_are_read_keeps_nothing",
    ) {
        return;
    }
    let daemon = manager_lingering("3s");
    let manager = daemon.child.id();
    let _bystander = daemon.bystander();
    let (mut family, peer) = connection_from_exited_process(&daemon.handle);
    assert!(common::process_gone(peer as u32));
    let name = unique_name("h16stranger");
    let _cleanup = Cleanup(vec![name.clone()]);
    let q = 30_000;
    assert!(common::process_gone(q as u32));
    let worker = NestedWorker::spawn(family.stream.as_raw_fd(), q, &name);
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::thread::sleep(Duration::from_millis(20));
            waits_for_events(manager)
        }),
        "the manager never slept in its wait"
    );
    let mut writer = 0;
    let mut stranger = None;
    daemon.while_stopped(|| {
        writer = half_frame_from_exited_writer(family.stream.as_raw_fd());
        stranger = Some(sleeper_with_pid(writer));
    });
    let mut stranger = stranger.unwrap();
    assert!(
        family.is_closed_by_peer(Duration::from_secs(10)),
        "the stalled frame closes the connection for cause"
    );
    // The worker dies: nobody maps the name, nobody will.
    drop(worker);
    let gone = wait_until(Duration::from_secs(15), || !shm_exists(&name));
    let alive = stranger.is_alive();
    let told = story(&daemon.handle, &name);
    stranger.kill();
    assert!(
        gone,
        "{name}, registered by a killed worker on a connection closed for cause after its \
         last writer (pid {writer}) died mid-frame, was kept while a stranger that got that \
         pid before the manager read the writer's bytes lives (alive: {alive}). The \
         manager's story:\n  {told}"
    );
}

// --- Finding 4: status reports asked over and over, and read -------------------

/// Times another client's registrations while eight askers ask for reports
/// by registering `request` (a reserved name), read them whole and ask again
/// at once, beside a manager whose history is full (8,192 events) and that
/// holds 8,192 names for 512 connections. Returns the round trips idle and
/// during, and how many reports came whole in how long.
fn probe_beside_askers(request: &'static str) -> (RoundTrips, RoundTrips, u64, Duration) {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let daemon = Daemon::start_with_stderr(&[], Stdio::null());
    let tag = format!("/torch_h16report_with_a_long_name_{}", common::run_id());
    let _holders = daemon.holders(&tag, 512, 16);
    let mut probe = Probe::connect(&daemon.handle);
    let idle = probe.sample(300, Duration::from_millis(1));

    let stop = Arc::new(AtomicBool::new(false));
    let reports = Arc::new(AtomicU64::new(0));
    let askers: Vec<_> = (0..8)
        .map(|_| {
            let (stop, reports) = (Arc::clone(&stop), Arc::clone(&reports));
            let handle = daemon.handle.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut asker) = std::os::unix::net::UnixStream::connect(&handle) else {
                        continue;
                    };
                    let _ = asker.set_read_timeout(Some(Duration::from_secs(10)));
                    if asker.write_all(&frame(0, request)).is_err() {
                        continue;
                    }
                    let mut text = Vec::new();
                    let _ = asker.read_to_end(&mut text);
                    if text.ends_with(b"\nend\n") {
                        reports.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let running = probe.spawn(Duration::from_millis(1));
    std::thread::sleep(Duration::from_secs(2));
    let during = running.finish();
    let asked = reports.load(Ordering::Relaxed);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for asker in askers {
        asker.join().unwrap();
    }
    (idle, during, asked, took)
}

/// Asserts that `what`, asked over and over, kept another client's
/// registrations as quick at p99 as a flood of frames does.
fn assert_answered_beside_askers(what: &str, request: &'static str) {
    let (idle, during, asked, took) = probe_beside_askers(request);
    eprintln!("{asked} {what} in {took:.1?}\n  probe idle:   {idle}\n  probe during: {during}");
    assert!(asked > 0, "no {what} came whole");
    assert!(
        during.percentile(99.0) < FLOOD_P99_BOUND,
        "while askers took {asked} {what} in {took:.1?}, another client's registration \
         took {:.1?} at p99 (bound {FLOOD_P99_BOUND:.0?}, as beside a flood of frames); \
         during: {during}; idle: {idle}",
        during.percentile(99.0)
    );
}

/// Eight askers that read their history reports and ask again at once.
/// Each history report is about 800 KB: a line per holder, up to 4,096
/// sizes looked up with a `statat` each, 8,192 event lines. On 028424b each
/// was built whole on the loop (`report::document`), up to four in a round
/// (`MAX_STATUS_IN_FLIGHT` bounds the reports being sent, not what a round
/// builds), and another client's registration waited for them: idle, a
/// round trip took 16 to 21 us (median); beside the askers, 24 ms (median)
/// and about 50 ms (p99) with an optimized manager, 45 to 68 ms and 98 to
/// 138 ms without, where a flood of frames keeps p99 under 5 ms and 100 ms
/// (`FLOOD_P99_BOUND`): it failed every time optimized, about two runs in
/// three without. Fixed: a report is written a piece at a time
/// (`report::Report`), as its asker's socket has room, and every report in
/// flight shares one budget of lines and sizes per round
/// (`report::WORK_PER_ROUND`), so a round does a small slice of report work
/// at most, after every other client's reads.
#[test]
fn history_reports_asked_over_and_over_keep_another_client_answered() {
    let _serial = one_at_a_time();
    assert_answered_beside_askers("history reports", "/libshm_history_v1");
}

/// The same with summary reports (no history): on 028424b they did about
/// as much harm (with 128 connections: 25 ms median, 41 ms p99, optimized),
/// the 4,096 sizes each looked up costing most; they share the same budget
/// now, a size costing a few lines.
#[test]
fn summary_reports_asked_over_and_over_keep_another_client_answered() {
    let _serial = one_at_a_time();
    assert_answered_beside_askers("summary reports", "/libshm_status_v1");
}

// --- The recovery sweep over a full /dev/shm -------------------------------------

/// A manager that takes over from a dead one sweeps for leaked segments
/// (the walk runs off the loop) and takes on, on the loop and in one go,
/// every one it found (`take_on_leaked`); each later sweep finds them again.
/// Here 50,000 leaked segments of a dead creator wait under the swept
/// prefix, in a `/dev/shm` of the test's own, while a probe client registers
/// and releases a name every millisecond through the first three sweeps.
/// Measured here: another client waits at most 3.3 ms with an optimized
/// manager (over the eleven sweeps), 75 ms without (the first take-on;
/// 15 ms for each later sweep). They are orphans by the sweep's guess, kept
/// for the linger (60 s) before they are reaped.
#[test]
fn a_recovery_sweep_over_fifty_thousand_leaked_segments_keeps_another_client_answered() {
    let _serial = one_at_a_time();
    if !in_private_pid_namespace(
        "a_recovery_sweep_over_fifty_thousand_leaked_segments_keeps_another_client_answered",
    ) {
        return;
    }
    const LEAKED: usize = 50_000;
    let prefix = format!("/torch_h16sweep{}_", common::run_id());
    let creator = 30_000;
    assert!(common::process_gone(creator as u32));
    let _cleanup = common::PrefixCleanup(prefix.clone());
    let mut dead = Daemon::quiet_under(&prefix);
    dead.kill();
    let mut header = [0u8; 64];
    header[..4].copy_from_slice(&1i32.to_ne_bytes());
    for i in 0..LEAKED {
        std::fs::write(
            format!("/dev/shm/{}{creator}_{i}_0", prefix.trim_start_matches('/')),
            header,
        )
        .unwrap();
    }
    // It accepts every name (the probe's are not under the prefix) and
    // sweeps only this test's prefix.
    let revived = dead.revive("/", &prefix);
    let mut probe = Probe::connect(&revived.handle);
    let mut trips = common::measure::RoundTrips::default();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        probe.round_trip_into(&mut trips);
        std::thread::sleep(Duration::from_millis(1));
    }
    let bound = if cfg!(debug_assertions) {
        Duration::from_millis(250)
    } else {
        Duration::from_millis(50)
    };
    assert!(
        trips.max() < bound,
        "while a recovery sweep took on {LEAKED} leaked segments, another client waited up \
         to {:.0?} (bound {bound:?}); {trips}; worst (since start, took): {:?}",
        trips.max(),
        trips.worst(5, started)
    );
}
