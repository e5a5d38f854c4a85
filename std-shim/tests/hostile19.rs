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
//!   same process's, which is the cost itself. Fixed later (2026-11-27) by
//!   a per-round budget of looks for crowded connections (see the test).
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

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::attack::{asker_that_never_reads, assert_answered_beside_writers, fill_history};
use common::measure::cpu_time;
use common::{Daemon, one_at_a_time};

/// Asks for summaries every 250 ms for `over` while `askers` connections
/// ask for history reports they never read; returns (reported, refusals,
/// the askers' asks).
fn queries_beside_never_readers(askers: usize, over: Duration) -> (usize, Vec<String>, u32) {
    let daemon = Daemon::start_with_stderr(&[], Stdio::null());
    let _bystander = daemon.bystander();
    fill_history(&daemon, "h19");
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
/// two cores. Fixed: a connection remembering 192 writers or more is
/// crowded, and its new writers' start times are looked at 16 per round
/// across all connections (`CROWDED_WRITER_LOOKS_PER_ROUND`), the others
/// not remembered (past the crowd a live writer may be forgotten anyway).
/// After it, release: p99 2.4 and 4.6 ms, the manager at 0.55 and 0.73 s
/// of CPU in 3 s (before, same machine and run: 7.8 and 6.9 ms, 1.70 s).
#[test]
fn finding_four_hundred_writers_taking_turns_on_shared_connections_keep_another_client_answered() {
    let _serial = one_at_a_time();
    assert_answered_beside_writers("h19", 400);
}
