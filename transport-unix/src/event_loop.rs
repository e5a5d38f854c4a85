//! The manager daemon's event loop: one thread, `epoll`, every socket non-blocking.
//!
//! It owns the file descriptors and nothing else; every decision is the core
//! [`Manager`]'s. Each connection has its own reassembly buffer (in the
//! manager) and reply backlog (here), so a client that sends half a frame or
//! stops reading its replies delays nobody else. Work per round is bounded:
//! a few reads per client, a fixed number of journal frames per client, the
//! manager's batch of names per tick, a budget of status report lines shared
//! by every report in flight (`report::Report`); whatever is left waits for
//! the next round, after every other client has been served. A client
//! that hangs up on a full journal has it read over rounds before its
//! connection ends.
//!
//! The processes that send frames are watched (pidfds, see `pid_watch`), so
//! that a process's end ends its holds even when its connection lives on in
//! its parent or siblings.
//!
//! Clients that hand over a [registration journal](libshm_core::journal) have
//! it read here: when they ring the doorbell, before their end of file is
//! acted on, before every tick, and at least every 100 ms.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libshm_core::journal::{Journal, JournalMemory};
use libshm_core::manager::{
    Chore, CloseReason, ConnId, Effects, Manager, ManagerConfig, Note, Peer, Stats, Status,
};
use libshm_core::name::{NamePrefix, SegmentName};
use libshm_core::namespace::{Namespace, Observed};
use libshm_core::status::Detail;
use libshm_core::storage::Growable;
use libshm_core::time::Timestamp;
use rustix::event::Timespec;
use rustix::io::Errno;
use rustix::net::SendFlags;

use crate::background::{self, Background, Job};
use crate::closed_ties::ClosedTies;
use crate::heap::HeapTrimmer;
use crate::listener::Listener;
use crate::pid_watch::{self, POLLED_INTERVAL, PeerFacts, PidWatches};
use crate::readiness::{EVENTS_PER_WAIT, Readiness, Source};
use crate::report::{self, Budget, History, Identity, Report};
use crate::sender;
use crate::shared_journal::SharedJournal;
use crate::socket;
use crate::spin::Spinner;

/// Reply bytes queued for a client that does not read them, before it is
/// cut off (checked as each reply is queued).
const MAX_REPLY_BACKLOG: usize = 1 << 20;
/// Reads per client per round (one read of the 64 KiB buffer is about 960
/// frames), so one busy client cannot starve the rest: a frame can cost
/// microseconds (a stray release searches its connection's holders), and
/// everyone else waits for a round.
const READS_PER_ROUND: usize = 1;
/// Journal frames read per client per round, for the same reason.
const JOURNAL_FRAMES_PER_ROUND: u32 = 1_024;
/// Accepts per round.
const ACCEPTS_PER_ROUND: usize = 64;
/// Looks queued at once that make a listing of the namespace worth trying
/// in their place (see `Driver::answer_absent_by_listing`).
const LOOKS_WORTH_A_LISTING: usize = 8;
/// How often journals are read when nothing else makes the manager look: a
/// release committed to a journal counts from when it is read, so this bounds
/// how late an orphan's grace period can start.
const JOURNAL_READ_INTERVAL: Duration = Duration::from_millis(100);
/// A manager that took over from a dead one sweeps once a second for this
/// many seconds.
const RECOVERY_SWEEPS: u64 = 10;
/// Status reports being sent at once; more askers wait in line.
const MAX_STATUS_IN_FLIGHT: usize = 4;
/// Askers waiting in line for a report in flight to end; more are closed.
const MAX_STATUS_WAITING: usize = 64;
/// A status report not read within this long is dropped with its asker,
/// whether it waited in line or not.
const STATUS_DEADLINE: Duration = Duration::from_secs(5);
/// A report in flight that has not moved for this long (nothing of it sent:
/// its asker read nothing) while others wait in line is dropped with its
/// asker: one that never reads gives its place to the next in line long
/// before its deadline.
const REPORT_STALL: Duration = Duration::from_secs(1);
/// An asker in line that has not read its report's head this long after it
/// asked is closed when its turn comes: a reader takes the head at once.
const HEAD_READ_WITHIN: Duration = Duration::from_millis(200);
/// Writers per connection whose start times are remembered: those that
/// ended are forgotten first, so a live one goes only behind 192 live ones
/// (a DataLoader's or a Pool's workers share their parent's connection).
/// Past that many taking turns, each read from a writer not remembered
/// would cost a read of its `/proc` entry: see [`CROWDED_WRITER_LOOKS_PER_ROUND`].
const WRITERS_REMEMBERED: usize = 256;
/// Writers remembered past which a connection is crowded: what it keeps
/// when it forgets its oldest.
const WRITERS_KEPT: usize = WRITERS_REMEMBERED - WRITERS_REMEMBERED / 4;
/// Looks at new writers' start times per round, across all connections,
/// for crowded connections (a live writer may be forgotten there anyway):
/// hundreds of writers taking turns on hundreds of connections would
/// otherwise cost a `/proc` read per read (hostile19 finding 2). Families
/// below the crowd are looked at whole.
const CROWDED_WRITER_LOOKS_PER_ROUND: u32 = 16;
/// The longest spin after an answer, by default: PyTorch's Python client sends
/// its next frame 50 to 70 us after an `OK` here (it maps, copies and unmaps
/// in between), so a shorter window (50 us was tried) never catches it.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(200);
/// Out of descriptors, accepting pauses until one frees, or this long.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How the loop trades CPU for latency.
#[derive(Clone)]
pub struct Tuning {
    /// After a round that answered a client, poll without sleeping for up to
    /// this long (yielding the CPU in between), adapting the window to
    /// whether frames come in time and resting while the CPUs are busy (see
    /// `spin`). A client that waits for each `OK` (PyTorch's) is then
    /// answered without waking the manager. Zero always sleeps.
    pub spin: Duration,
    /// Set when this manager took over from a dead one: how to find the
    /// segments whose holders died while no manager was watching. They are
    /// looked for at once and then every second for ten seconds (clients
    /// notice the death, and let go of what they re-registered, at their own
    /// pace), on a thread of their own (a look walks every process's maps),
    /// and taken on as orphans.
    pub recovery: Option<Recovery>,
    /// Tells which orphans some process still maps, on a thread of its own
    /// (see [`Chore::CheckMapped`]). Without it the namespace is asked, on
    /// the loop.
    pub mapped: Option<MapFinder>,
}

/// Finds leaked segments: walks `/dev/shm` and `/proc` off the event loop.
pub type LeakFinder = Arc<dyn Fn() -> Result<Vec<SegmentName>, String> + Send + Sync>;

/// Tells which of the names some process maps or holds: walks `/proc` off
/// the event loop.
pub type MapFinder = Arc<dyn Fn(&[SegmentName]) -> Result<Vec<SegmentName>, String> + Send + Sync>;

/// A manager's recovery after taking over from a dead one.
#[derive(Clone)]
pub struct Recovery {
    /// The prefix the sweep looks under, for the log.
    pub prefix: NamePrefix,
    /// Finds the leaked segments under it.
    pub find: LeakFinder,
}

impl std::fmt::Debug for Tuning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tuning")
            .field("spin", &self.spin)
            .field("recovery", &self.recovery)
            .field("mapped", &self.mapped.is_some())
            .finish()
    }
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            spin: DEFAULT_SPIN,
            recovery: None,
            mapped: None,
        }
    }
}

/// What the loop did, for the exit log.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// The manager's counters at exit.
    pub stats: Stats,
}

/// Runs a manager on `listener` until it has had no client for the shutdown
/// timeout (and nothing it knows is in transit, up to the linger). Then
/// every name it still knows has been unlinked, and the socket and its
/// directory are removed.
pub fn serve<N: Namespace>(
    listener: Listener,
    config: ManagerConfig,
    namespace: &mut N,
) -> Summary {
    serve_tuned(listener, config, namespace, Tuning::default())
}

/// [`serve`] with explicit [`Tuning`].
pub fn serve_tuned<N: Namespace>(
    listener: Listener,
    config: ManagerConfig,
    namespace: &mut N,
    tuning: Tuning,
) -> Summary {
    // Timestamps count from here.
    let clock = Instant::now();
    let config = ManagerConfig {
        hash_seed: match config.hash_seed {
            0 => random_seed(),
            seed => seed,
        },
        ..config
    };
    let mut manager: Manager<Growable> =
        Manager::new(config, Timestamp::from_duration(clock.elapsed()));
    let readiness = match Readiness::new().and_then(|readiness| {
        readiness
            .add(&listener, Source::Listener)
            .map(|()| readiness)
    }) {
        Ok(readiness) => readiness,
        Err(errno) => {
            // Nothing is registered yet: there is nothing to unlink.
            tracing::error!("could not set up epoll: {errno}; shutting down");
            return Summary {
                stats: manager.stats(),
            };
        }
    };
    let mut driver = Driver {
        clients: HashMap::new(),
        readiness,
        journaled: Vec::new(),
        map_checks: Vec::new(),
        checks_maps_off_loop: tuning.mapped.is_some(),
        pids: PidWatches::new(rustix::process::geteuid().as_raw()),
        closing: Vec::new(),
        dirty: Vec::new(),
        doorbells: Vec::new(),
        chores: VecDeque::new(),
        evict: Vec::new(),
        exited: Vec::new(),
        gone: HashSet::new(),
        running_since_read: HashSet::new(),
        speaks_this_read: HashMap::new(),
        gone_this_read: HashMap::new(),
        closed_ties: ClosedTies::default(),
        writer: None,
        crowded_writer_looks: CROWDED_WRITER_LOOKS_PER_ROUND,
        journals_behind: false,
        replied: false,
        freed_descriptor: false,
        history: History::default(),
        identity: Identity {
            handle: listener.handle().to_string(),
            started: Instant::now(),
        },
        status_requests: Vec::new(),
        status_clients: Vec::new(),
        status_waiting: VecDeque::new(),
        report_work: Budget::per_round(),
        clock: Timestamp::ZERO,
    };
    let mut ready = Vec::new();
    let mut listener_armed = true;
    let mut buf = vec![0u8; 64 * 1024];
    let mut accept_paused_until: Option<Instant> = None;
    let mut spinner = Spinner::new(tuning.spin);
    let mut trimmer = HeapTrimmer::default();
    // Due times, latest first, so the next one is popped from the end.
    let mut sweeps: Vec<Instant> = match tuning.recovery {
        Some(_) => (0..=RECOVERY_SWEEPS)
            .rev()
            .map(|s| Instant::now() + Duration::from_secs(s))
            .collect(),
        None => Vec::new(),
    };
    let mut journals_read_at = Instant::now();
    let mut sweep = Background::new("recovery-sweep");
    let mut map_check: Background<Result<Vec<SegmentName>, String>> = Background::new("map-check");
    // The names the running map check was asked about.
    let mut checking: Vec<SegmentName> = Vec::new();

    loop {
        if driver.journals_behind || journals_read_at.elapsed() >= JOURNAL_READ_INTERVAL {
            driver.drain_all(&mut manager, Timestamp::from_duration(clock.elapsed()));
            journals_read_at = Instant::now();
        }
        if let (Some(recovery), Some(due)) = (&tuning.recovery, sweeps.last())
            && *due <= Instant::now()
            && !sweep.is_running()
        {
            sweeps.pop();
            let find = Arc::clone(&recovery.find);
            if let Err(err) = sweep.start(move || find()) {
                tracing::warn!("could not look for leaked segments: {err}");
            }
        }
        if let Job::Done(found) = sweep.poll() {
            // What clients committed meanwhile is read first.
            driver.drain_all(&mut manager, Timestamp::from_duration(clock.elapsed()));
            take_on_leaked(
                found,
                &mut manager,
                Timestamp::from_duration(clock.elapsed()),
            );
        }
        match map_check.poll() {
            Job::Idle | Job::Running => {}
            outcome => {
                let now = Timestamp::from_duration(clock.elapsed());
                driver.drain_all(&mut manager, now);
                let mapped = match outcome {
                    Job::Done(Ok(mapped)) => Some(mapped.into_iter().collect::<HashSet<_>>()),
                    Job::Done(Err(err)) => {
                        tracing::warn!("could not tell who maps orphans: {err}; will retry");
                        None
                    }
                    _ => None,
                };
                for name in checking.drain(..) {
                    let is_mapped = mapped.as_ref().map(|mapped| mapped.contains(&name));
                    manager.mapped(&name, is_mapped, now, &mut driver);
                }
                driver.work(&mut manager, namespace, now);
            }
        }
        if let Some(find) = &tuning.mapped
            && !map_check.is_running()
            && !driver.map_checks.is_empty()
        {
            checking = std::mem::take(&mut driver.map_checks);
            let names = checking.clone();
            let find = Arc::clone(find);
            if let Err(err) = map_check.start(move || find(&names)) {
                tracing::warn!("could not tell who maps orphans: {err}; will retry");
                let now = Timestamp::from_duration(clock.elapsed());
                for name in checking.drain(..) {
                    manager.mapped(&name, None, now, &mut driver);
                }
            }
        }
        let now = Timestamp::from_duration(clock.elapsed());
        driver.clock = now;
        if manager.next_wakeup().is_some_and(|at| at <= now) {
            driver.drain_all(&mut manager, now);
            let status = manager.tick(now, &mut driver);
            driver.work(&mut manager, namespace, now);
            if status == Status::Finished {
                break;
            }
            trimmer.observe(manager.name_count());
        }

        if accept_paused_until.is_some_and(|until| Instant::now() >= until)
            || std::mem::take(&mut driver.freed_descriptor)
        {
            accept_paused_until = None;
        }
        let mut timeout = manager.next_wakeup().map(|at| now.until(at));
        let mut wake_within = |until: Duration| {
            timeout = Some(timeout.map_or(until, |t: Duration| t.min(until)));
        };
        if let Some(due) = sweeps.last() {
            wake_within(due.saturating_duration_since(Instant::now()));
        }
        if sweep.is_running() || map_check.is_running() {
            wake_within(background::CHECK_INTERVAL);
        } else if !driver.map_checks.is_empty() {
            // A tick just asked: start the walk now, not at the next tick.
            wake_within(Duration::ZERO);
        }
        if !driver.journaled.is_empty() {
            wake_within(JOURNAL_READ_INTERVAL.saturating_sub(journals_read_at.elapsed()));
        }
        if driver.journals_behind || !driver.exited.is_empty() {
            wake_within(Duration::ZERO);
        }
        if driver.pids.has_polled() {
            wake_within(POLLED_INTERVAL);
        }
        if let Some(due) = driver.next_status_due() {
            wake_within(due.saturating_duration_since(Instant::now()));
        }
        if let Some(until) = accept_paused_until {
            wake_within(until.saturating_duration_since(Instant::now()));
        }
        if spinner.spin_now(Instant::now()) {
            rustix::thread::sched_yield();
            timeout = Some(Duration::ZERO);
        }

        if listener_armed != accept_paused_until.is_none() {
            listener_armed = accept_paused_until.is_none();
            if let Err(errno) =
                driver
                    .readiness
                    .set(&listener, Source::Listener, listener_armed, false)
            {
                tracing::error!("could not change what the listener waits for: {errno}");
            }
        }
        let timespec = timeout.map(|t| {
            Timespec::try_from(t).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        ready.clear();
        driver.pids.wait_begins();
        match driver.readiness.wait(timespec.as_ref()) {
            Ok(events) => ready.extend(events),
            Err(errno) => {
                tracing::error!("epoll_wait failed: {errno}; shutting down");
                break;
            }
        }
        driver.pids.wait_returned(
            ready.iter().filter_map(|event| match event.source {
                Source::Pid(pid) => Some(pid),
                _ => None,
            }),
            ready.len() < EVENTS_PER_WAIT,
        );
        let now = Timestamp::from_duration(clock.elapsed());
        driver.clock = now;
        driver.report_work = Budget::per_round();
        driver.crowded_writer_looks = CROWDED_WRITER_LOOKS_PER_ROUND;

        let mut accepting = false;
        for event in &ready {
            match event.source {
                Source::Listener => accepting = true,
                Source::Pid(pid) => driver.exited.push(pid),
                Source::Client(_) => {}
            }
        }
        if accepting && listener_armed {
            accept_paused_until = accept(&listener, &mut manager, &mut driver, now);
        }
        driver.pids.check_polled(&mut driver.exited);
        // Before reading: frames from an exited pid, read below, are either
        // its last ones or a new process's that got the pid.
        for &pid in &driver.exited {
            manager.pid_exiting(pid, now);
        }
        for event in &ready {
            let Source::Client(id) = event.source else {
                continue;
            };
            if event.readable {
                let budget = READS_PER_ROUND * buf.len();
                driver.read_from(id, &mut manager, &mut buf, budget, now);
            }
            if event.writable {
                driver.dirty.push(id);
            }
        }
        if !driver.exited.is_empty() {
            driver.drain_all(&mut manager, now);
            driver.end_exited(&mut manager, &mut buf, now);
        }
        driver.work(&mut manager, namespace, now);
        // Only an answer predicts a quick next frame (a strict client's);
        // partial frames and releases do not, and must not keep the manager
        // spinning (one byte every 150 us had held it at 80 % of a CPU).
        if std::mem::take(&mut driver.replied) {
            spinner.events(Instant::now());
        }
    }

    for (id, client) in &driver.clients {
        tracing::debug!(conn = %id, pid = ?client.peer.pid, "closing at shutdown");
    }
    let stats = manager.stats();
    tracing::info!(?stats, "manager finished");
    tracing::debug!(spinning = ?spinner.stats, "how spinning went");
    drop(listener);
    Summary { stats }
}

/// `pids` with each pid once, in the order first seen. A pid can be found
/// ended twice in a round (its pidfd, and a late frame of it on another
/// connection found gone); reported twice, the second report would end the
/// holders of the process promoted to the pid by the first.
fn each_once(mut pids: Vec<i32>) -> Vec<i32> {
    let mut seen = HashSet::new();
    pids.retain(|&pid| seen.insert(pid));
    pids
}

/// Accepts up to a round's worth of connections. Returns until when
/// accepting pauses, if the descriptors ran out.
fn accept(
    listener: &Listener,
    manager: &mut Manager<Growable>,
    driver: &mut Driver,
    now: Timestamp,
) -> Option<Instant> {
    for _ in 0..ACCEPTS_PER_ROUND {
        match listener.accept() {
            Ok(Some(accepted)) => match manager.connect(accepted.peer, now) {
                Ok(id) => {
                    tracing::debug!(conn = %id, pid = ?accepted.peer.pid, "client connected");
                    if let Err(errno) = driver.readiness.add(&accepted.fd, Source::Client(id)) {
                        // Out of epoll watches (`max_user_watches`): it could
                        // never be read.
                        tracing::warn!(pid = ?accepted.peer.pid, "refused a connection: {errno}");
                        manager.disconnect(id, now, driver);
                        continue;
                    }
                    let facts = PeerFacts::read(accepted.peer.pid, &accepted.peer_pidfd);
                    driver
                        .clients
                        .insert(id, Client::new(accepted.fd, accepted.peer, facts));
                }
                Err(err) => {
                    tracing::warn!(pid = ?accepted.peer.pid, "refused a connection: {err}");
                }
            },
            Ok(None) => break,
            Err(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => {
                tracing::warn!(
                    "out of file descriptors; not accepting until one frees (existing clients are still served)"
                );
                return Some(Instant::now() + ACCEPT_BACKOFF);
            }
            Err(errno) => {
                tracing::warn!("accept failed: {errno}");
                break;
            }
        }
    }
    None
}

/// Takes on, as orphans, the leaked segments a sweep found that the manager
/// does not know.
fn take_on_leaked(
    found: Result<Vec<SegmentName>, String>,
    manager: &mut Manager<Growable>,
    now: Timestamp,
) {
    let found = match found {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!("could not look for leaked segments: {err}");
            return;
        }
    };
    let adopted = found
        .into_iter()
        .filter(|name| manager.adopt_orphan(*name, now))
        .count();
    if adopted > 0 {
        tracing::info!(
            "took on {adopted} segment(s) whose holders died while no manager was watching"
        );
    }
}

/// A seed nobody outside can guess, so clients cannot aim names at one hash
/// bucket; a fixed one if the kernel has no randomness to give.
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::NONBLOCK) {
        Ok(8) => u64::from_ne_bytes(bytes).max(1),
        _ => u64::from(std::process::id()) << 32 | 0x5eed,
    }
}

struct Client {
    fd: OwnedFd,
    peer: Peer,
    backlog: Vec<u8>,
    /// A descriptor that arrived with the client's bytes: its journal offer.
    offered: Option<OwnedFd>,
    journal: Option<SharedJournal>,
    /// Whether epoll reports it writable: while replies wait for room.
    waits_to_write: bool,
    /// Whether the next read may carry a descriptor. A client offers its
    /// journal with its very first frame, so only the first read needs the
    /// costlier `recvmsg`.
    first_read: bool,
    /// Whether pids in its frames name processes in our pid namespace: the
    /// connecting process's, read at accept while its pidfd pinned it (read
    /// later, the pid could name a process of ours given it since).
    frames_name_our_pids: bool,
    /// When the process that connected started, read at accept: its pid may
    /// name another process by the time the connection is closed for cause.
    peer_started: Option<u64>,
    /// The last writer the kernel named for bytes read from it: a process
    /// sharing the connection, to tie its untrusted holds to once the one
    /// that connected has ended.
    last_writer: Option<i32>,
    /// When its writers started, read when each first wrote (at most
    /// [`WRITERS_REMEMBERED`], those that ended dropped first): the processes to tie its untrusted holds to
    /// after the last writer, and a pid may name another process by the
    /// time the connection is closed for cause. Read once per writer, not per
    /// change of writer, since forked workers take turns on a family's
    /// connection.
    writers_started: Vec<(i32, Option<u64>)>,
    /// Its reply backlog overflowed; it is being cut off.
    evicted: bool,
    /// It asked for a status report: closed once the report is sent, or at
    /// its deadline.
    asker: Option<Asker>,
    /// The status report it asked for, while it is being written (in
    /// flight): the next piece goes once the backlog is sent.
    report: Option<Report>,
    /// It rang the doorbell and waits for the `OK`: the reply stays queued
    /// until what it had committed by then is read, and is dropped if the
    /// connection is closed first.
    held_doorbell: Option<HeldDoorbell>,
    /// Frames read from its journal since it connected.
    journal_read: u64,
    /// Its peer closed while replies were owed: read to its end of file,
    /// never written again.
    peer_gone: bool,
    /// It hung up with more committed to its journal than a round reads:
    /// disconnected once its journal is read to here, a round's worth per
    /// round; neither read nor written meanwhile.
    hung_up_at: Option<u64>,
}

/// What the loop keeps about a status report's asker.
#[derive(Clone, Copy, Debug)]
struct Asker {
    /// It is closed at this deadline, its report sent or not.
    until: Instant,
    /// Its report waits in line (`Driver::status_waiting`), its head sent,
    /// for one in flight to end.
    waiting: bool,
    /// When its report last moved: a piece sent (its asker had read the
    /// last), or the report let in.
    moved: Instant,
}

impl Asker {
    /// Whether its report, in flight, has stopped: nothing of it has gone
    /// for [`REPORT_STALL`]. The socket takes a few pieces (a piece is at
    /// most a round's work, about 10 KB) and has room again once its asker
    /// has read one, so an asker that reads moves its report many times a
    /// second; one that reads nothing, or holds its report back behind its
    /// own doorbell, stops it.
    fn stalled(&self, at: Instant) -> bool {
        !self.waiting && at >= self.moved + REPORT_STALL
    }
}

/// A doorbell's `OK`, held back.
#[derive(Clone, Copy, Debug)]
struct HeldDoorbell {
    /// Where the held `OK` starts in the backlog; nothing from here on is sent.
    at: usize,
    /// Frames still to read before it goes.
    owed: u32,
}

impl Client {
    fn new(fd: OwnedFd, peer: Peer, facts: PeerFacts) -> Self {
        Self {
            fd,
            peer,
            backlog: Vec::new(),
            offered: None,
            journal: None,
            waits_to_write: false,
            first_read: true,
            frames_name_our_pids: facts.in_our_namespace,
            peer_started: facts.started,
            last_writer: None,
            writers_started: Vec::new(),
            evicted: false,
            asker: None,
            report: None,
            held_doorbell: None,
            journal_read: 0,
            peer_gone: false,
            hung_up_at: None,
        }
    }

    /// Backlog bytes that may be sent now: all, or those before a held
    /// doorbell's `OK`.
    fn sendable(&self) -> usize {
        self.held_doorbell
            .map_or(self.backlog.len(), |held| held.at)
    }

    /// Sends what it can of the sendable backlog, until the socket is full.
    /// Returns how many bytes went.
    fn send_backlog(&mut self) -> Result<usize, Errno> {
        let mut sent = 0;
        loop {
            let sendable = self.sendable();
            if sendable == 0 {
                return Ok(sent);
            }
            let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
            match rustix::net::send(&self.fd, &self.backlog[..sendable], flags) {
                Ok(n) => {
                    sent += n;
                    self.backlog.drain(..n);
                    if let Some(held) = &mut self.held_doorbell {
                        held.at -= n;
                    }
                }
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(sent),
                Err(errno) => return Err(errno),
            }
        }
    }

    /// Remembers when `writer` started, unless already known, or unless
    /// the connection is crowded and this round's `crowded_looks` are spent.
    fn note_writer_started(&mut self, writer: i32, crowded_looks: &mut u32) {
        if self.writers_started.iter().any(|&(pid, _)| pid == writer) {
            return;
        }
        if self.writers_started.len() >= WRITERS_KEPT {
            if *crowded_looks == 0 {
                return;
            }
            *crowded_looks -= 1;
        }
        let started = if self.peer.pid == Some(writer) {
            self.peer_started
        } else {
            pid_watch::start_time(writer)
        };
        if self.writers_started.len() == WRITERS_REMEMBERED {
            // Those surely gone first: a live writer may hold names in
            // transit however many came and went after it. Then the oldest,
            // down to a quarter free, so that writers taking turns past the
            // bound cost a few looks each, not a look at every one.
            self.writers_started
                .retain(|&(pid, started)| started.is_some() && pid_watch::pid_exists(pid));
            let excess = self.writers_started.len().saturating_sub(WRITERS_KEPT);
            self.writers_started.drain(..excess);
        }
        self.writers_started.push((writer, started));
    }

    /// The processes to tie its untrusted holds to once it is closed for
    /// cause, each with its start time: the one that connected (`peer`) if
    /// known, then the last writer, then the others, the latest to start
    /// writing first (a family whose last writer died goes on in its other
    /// members).
    fn ties_in_order(&self, peer: Option<i32>) -> Vec<(i32, u64)> {
        let connecting = peer.zip(self.peer_started);
        let mut writers: Vec<(i32, u64)> = self
            .writers_started
            .iter()
            .rev()
            .filter_map(|&(pid, started)| Some((pid, started?)))
            .filter(|&(pid, _)| Some(pid) != peer)
            .collect();
        writers.sort_by_key(|&(pid, _)| Some(pid) != self.last_writer);
        connecting.into_iter().chain(writers).collect()
    }

    /// Reads what is there, and who wrote it. On the first read, descriptors
    /// sent along are collected too (the last one is kept as the offer); any
    /// others, and any sent later, are closed.
    fn read(
        &mut self,
        buf: &mut [u8],
        crowded_looks: &mut u32,
    ) -> Result<(usize, Option<i32>), Errno> {
        let received = sender::receive(self.fd.as_fd(), buf)?;
        if self.first_read {
            if let Some(fd) = received.fds.into_iter().last() {
                self.offered = Some(fd);
            }
            // Descriptors travel with the first byte of what they were sent with.
            self.first_read = received.bytes == 0;
        }
        if let Some(writer) = received.writer
            && self.last_writer != Some(writer)
        {
            self.last_writer = Some(writer);
            self.note_writer_started(writer, crowded_looks);
        }
        Ok((received.bytes, received.writer))
    }
}

/// Carries out the manager's effects on real sockets, processes and the
/// real namespace.
struct Driver {
    clients: HashMap<ConnId, Client>,
    readiness: Readiness,
    /// Connections with a journal, to read them without a walk over all.
    journaled: Vec<ConnId>,
    /// Orphans to ask about, in the next map check off the loop.
    map_checks: Vec<SegmentName>,
    /// Whether map checks run off the loop.
    checks_maps_off_loop: bool,
    pids: PidWatches,
    closing: Vec<ConnId>,
    dirty: Vec<ConnId>,
    /// Connections whose doorbell rang during the current manager call.
    doorbells: Vec<ConnId>,
    /// Looks and unlinks the manager asked for.
    chores: VecDeque<Chore>,
    /// Connections to cut off for not reading their replies.
    evict: Vec<ConnId>,
    /// Watched processes that ended.
    exited: Vec<i32>,
    /// Senders found gone since their ends were last acted on.
    gone: HashSet<i32>,
    /// Who wrote the bytes the manager is reading now, if a socket's and the
    /// kernel said (see `sender`); `None` for a journal's.
    writer: Option<i32>,
    /// Watched pids found running since the last read: one look serves all
    /// the frames of a read, which were all sent before it.
    running_since_read: HashSet<i32>,
    /// Whether this read's writer speaks for a pid not its own (its child's):
    /// one look at `/proc` per pid per read.
    speaks_this_read: HashMap<i32, bool>,
    /// Whether a pid was gone, as looked at after this read: it answers for
    /// every frame of the read (all sent before it), so a flood of frames
    /// under a gone pid costs one look per read, not one per frame.
    gone_this_read: HashMap<i32, bool>,
    /// For connections closed for cause whose untrusted holds are tied to
    /// a process: who to pass the tie on to when that one ends.
    closed_ties: ClosedTies,
    /// What is left of this round's looks at crowded connections' new
    /// writers.
    crowded_writer_looks: u32,
    /// Some journal had more frames than one round reads.
    journals_behind: bool,
    /// A reply was queued this round.
    replied: bool,
    /// A descriptor was closed since accepting paused.
    freed_descriptor: bool,
    /// Recent events, for status reports.
    history: History,
    identity: Identity,
    /// Connections that asked for a status report during a manager call.
    status_requests: Vec<(ConnId, Detail)>,
    /// Connections a status report is being sent to (in flight), at most
    /// [`MAX_STATUS_IN_FLIGHT`].
    status_clients: Vec<ConnId>,
    /// Askers waiting in line for a report in flight to end, first come
    /// first served, with their reports (heads sent); at most
    /// [`MAX_STATUS_WAITING`].
    status_waiting: VecDeque<(ConnId, Report)>,
    /// What is left of this round's work for status reports.
    report_work: Budget,
    /// The time of the manager call in progress, for the history.
    clock: Timestamp,
}

impl Driver {
    /// Whether a frame's `pid` may stand for the bytes being read: it is
    /// their writer's, or a child's of the writer (a process may speak for
    /// the children it forked), or the kernel did not say who wrote them.
    /// A pid that names another process (a worker in a pid namespace of its
    /// own sends its namespace's pid, which names some unrelated process in
    /// ours) must not tie holds to that process's life.
    fn writer_speaks_for(&self, pid: i32) -> bool {
        match self.writer {
            None => true,
            Some(writer) => writer == pid || pid_watch::parent_of(pid) == Some(writer),
        }
    }

    /// Reads what `id` sent, up to `budget` bytes, and hands it to the
    /// manager. Stops early at a short read: the socket is drained, or the
    /// bytes after it are another writer's (the kernel returns one writer's
    /// at a time). Returns how many bytes it handed over.
    fn read_from(
        &mut self,
        id: ConnId,
        manager: &mut Manager<Growable>,
        buf: &mut [u8],
        budget: usize,
        now: Timestamp,
    ) -> usize {
        let mut left = budget;
        while left > 0 {
            let Some(client) = self.clients.get_mut(&id) else {
                break;
            };
            let want = left.min(buf.len());
            match client.read(&mut buf[..want], &mut self.crowded_writer_looks) {
                Ok((0, _)) => {
                    tracing::debug!(conn = %id, "client disconnected");
                    self.hang_up(id, manager, now);
                    break;
                }
                Ok((n, writer)) => {
                    left -= n;
                    self.running_since_read.clear();
                    self.speaks_this_read.clear();
                    self.gone_this_read.clear();
                    self.writer = writer;
                    manager.receive(id, &buf[..n], now, self);
                    self.writer = None;
                    // Read at the top of the next round, a round's worth per
                    // client however often it rang, its OK held back until
                    // then (see `held_doorbell`).
                    if !self.doorbells.is_empty() {
                        self.doorbells.clear();
                        self.journals_behind = true;
                    }
                    if n < want || self.closing.contains(&id) {
                        break;
                    }
                }
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(errno) => {
                    tracing::debug!(conn = %id, "client connection failed: {errno}");
                    self.hang_up(id, manager, now);
                    break;
                }
            }
        }
        budget - left
    }

    /// Hands up to a round's worth of `id`'s unread journal frames to the
    /// manager, oldest first. Returns how many it read, and whether the
    /// round's budget ran out before the journal did.
    fn drain(
        &mut self,
        id: ConnId,
        manager: &mut Manager<Growable>,
        now: Timestamp,
    ) -> (u32, bool) {
        let Some(client) = self.clients.get_mut(&id) else {
            return (0, false);
        };
        // Not past what was committed when it hung up: a fork of it may
        // still write the memory, and its frames would end with the
        // connection the moment they are read.
        let most = client.hung_up_at.map_or(JOURNAL_FRAMES_PER_ROUND, |at| {
            let owed = at.saturating_sub(client.journal_read);
            u32::try_from(owed).map_or(JOURNAL_FRAMES_PER_ROUND, |owed| {
                owed.min(JOURNAL_FRAMES_PER_ROUND)
            })
        });
        // Out of its client while the manager reads it, as the manager's
        // effects come back to this driver.
        let Some(journal) = client.journal.take() else {
            return (0, false);
        };
        // The frames are read (committed) before any look at their senders.
        self.running_since_read.clear();
        self.gone_this_read.clear();
        let read = manager.read_journal(id, journal.journal(), most, now, self);
        let read = read.unwrap_or_else(|err| {
            tracing::warn!(conn = %id, "closed the connection: {err}");
            0
        });
        let Some(client) = self.clients.get_mut(&id) else {
            return (read, false);
        };
        client.journal = Some(journal);
        client.journal_read += u64::from(read);
        if client
            .hung_up_at
            .is_some_and(|at| read == 0 || client.journal_read >= at)
        {
            manager.disconnect(id, now, self);
            self.closing.push(id);
            return (read, false);
        }
        if let Some(held) = &mut client.held_doorbell {
            held.owed = held.owed.saturating_sub(read);
            if held.owed == 0 {
                // Every frame committed before the ring is read: the
                // doorbell's OK (and what queued behind it) may go.
                client.held_doorbell = None;
                if !client.backlog.is_empty() {
                    self.dirty.push(id);
                }
            }
        }
        (read, read == JOURNAL_FRAMES_PER_ROUND)
    }

    /// `id`'s peer closed its end while replies were owed: nothing more is
    /// written, and what it sent before is still read, to its end of file
    /// (its last releases may wait behind what has been read so far).
    fn stop_writing(&mut self, id: ConnId, manager: &mut Manager<Growable>, now: Timestamp) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        client.peer_gone = true;
        client.backlog.clear();
        client.held_doorbell = None;
        client.waits_to_write = false;
        if let Err(errno) = self
            .readiness
            .set(&client.fd, Source::Client(id), true, false)
        {
            tracing::debug!(conn = %id, "could not stop waiting to reply: {errno}");
            self.hang_up(id, manager, now);
        }
    }

    /// `id` hung up (or its socket failed). What it committed to its
    /// journal before is still its word, and no more is read (the memory may
    /// still be written by a forked copy of it): up to a round's worth now,
    /// and if more, the rest a round's worth per round before the
    /// connection ends, so a client hanging up on a full ring (65,536
    /// frames) does not hold everyone else up while it is read.
    fn hang_up(&mut self, id: ConnId, manager: &mut Manager<Growable>, now: Timestamp) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        if client.hung_up_at.is_some() {
            return;
        }
        let owed = client
            .journal
            .as_ref()
            .map_or(0, |journal| journal.journal().unread().unwrap_or(0));
        if owed == 0 {
            manager.disconnect(id, now, self);
            self.closing.push(id);
            return;
        }
        client.hung_up_at = Some(client.journal_read + u64::from(owed));
        client.backlog.clear();
        client.held_doorbell = None;
        self.readiness.remove(&client.fd);
        self.drain(id, manager, now);
        if self
            .clients
            .get(&id)
            .is_some_and(|c| c.hung_up_at.is_some())
            && !self.closing.contains(&id)
        {
            self.journals_behind = true;
        }
    }

    /// Reads what `id` committed before its end of file, and no more: the
    /// memory may still be written by a forked copy of it.
    fn drain_at_end(&mut self, id: ConnId, manager: &mut Manager<Growable>, now: Timestamp) {
        let Some(journal) = self.clients.get(&id).and_then(|c| c.journal.as_ref()) else {
            return;
        };
        let mut owed = journal.journal().unread().unwrap_or(0);
        while owed > 0 {
            let (read, _) = self.drain(id, manager, now);
            if read == 0 {
                return;
            }
            owed = owed.saturating_sub(read);
        }
    }

    /// Acts on the ends of the processes in `exited`, each once, after
    /// reading what is queued on their connections (each connection once:
    /// its socket's bytes and its journal's commits at that moment, however
    /// much; their last releases count). Senders found gone during those
    /// reads are handled the same way in the same call, before a new process
    /// could be given their pid and taken for them.
    fn end_exited(&mut self, manager: &mut Manager<Growable>, buf: &mut [u8], now: Timestamp) {
        let mut read = HashSet::new();
        while !self.exited.is_empty() {
            let pids = each_once(std::mem::take(&mut self.exited));
            for &pid in &pids {
                manager.pid_exiting(pid, now);
            }
            let conns: Vec<ConnId> = pids
                .iter()
                .flat_map(|&pid| manager.connections_of(pid))
                .filter(|&id| read.insert(id))
                .collect();
            for id in conns {
                self.read_queued(id, manager, buf, now);
            }
            for pid in pids {
                tracing::debug!(pid, "watched process exited");
                self.stop_watching(pid);
                manager.pid_exited(pid, now, self);
                // Found gone again in a later pass (a frame of it read since,
                // which made it an exiting entry anew): reported again.
                self.gone.remove(&pid);
            }
        }
        self.gone.clear();
    }

    /// Reads everything queued on `id` now, on its socket and in its journal.
    fn read_queued(
        &mut self,
        id: ConnId,
        manager: &mut Manager<Growable>,
        buf: &mut [u8],
        now: Timestamp,
    ) {
        let queued = self
            .clients
            .get(&id)
            .and_then(|client| rustix::io::ioctl_fionread(&client.fd).ok())
            .unwrap_or(0);
        // One read returns one writer's bytes: what an exited member wrote
        // last may wait behind other members' runs, and must be read before
        // its holders end, or its releases come too late.
        let mut left = usize::try_from(queued).unwrap_or(usize::MAX);
        while left > 0 && !self.closing.contains(&id) {
            match self.read_from(id, manager, buf, left, now) {
                0 => break,
                read => left = left.saturating_sub(read),
            }
        }
        self.drain_at_end(id, manager, now);
    }

    /// Reads a round's worth of every journal, so the manager's view is
    /// current before it decides.
    fn drain_all(&mut self, manager: &mut Manager<Growable>, now: Timestamp) {
        let mut behind = false;
        for id in self.journaled.clone() {
            behind |= self.drain(id, manager, now).1;
        }
        self.journals_behind = behind;
    }

    /// Carries out what the manager asked for until nothing is left: chores,
    /// evictions, replies, closes.
    fn work<N: Namespace>(
        &mut self,
        manager: &mut Manager<Growable>,
        namespace: &mut N,
        now: Timestamp,
    ) {
        loop {
            self.answer_absent_by_listing(manager, namespace, now);
            // An outcome may queue another chore (an unlink after a look).
            while let Some(chore) = self.chores.pop_front() {
                if let Chore::CheckMapped(name) = chore
                    && self.checks_maps_off_loop
                {
                    self.map_checks.push(name);
                    continue;
                }
                if let Err(err) = manager.perform(chore, namespace, now, self) {
                    tracing::warn!("{chore:?} failed: {err}; will retry");
                }
            }
            for id in std::mem::take(&mut self.evict) {
                tracing::warn!(conn = %id, "client does not read its replies; closing it");
                manager.evict(id, CloseReason::NotReadingReplies, now, self);
            }
            for (id, detail) in std::mem::take(&mut self.status_requests) {
                self.status_clients
                    .retain(|id| self.clients.contains_key(id));
                self.status_waiting
                    .retain(|(id, _)| self.clients.contains_key(id));
                let in_flight = self.status_clients.len() < MAX_STATUS_IN_FLIGHT;
                if !in_flight && self.status_waiting.len() >= MAX_STATUS_WAITING {
                    self.close_a_waiting_asker_that_does_not_read();
                }
                if !in_flight && self.status_waiting.len() >= MAX_STATUS_WAITING {
                    // Reports nobody reads would pin memory: the asker gets
                    // OK alone, which it takes for a manager that does not
                    // report.
                    tracing::debug!(conn = %id, "too many status reports asked for; closing the asker");
                    manager.disconnect(id, now, self);
                    self.closing.push(id);
                    continue;
                }
                // A connection's report ends it: a second ask on it is
                // answered by the first's.
                let Some(client) = self.clients.get_mut(&id).filter(|c| c.asker.is_none()) else {
                    continue;
                };
                // Not a reply: the backlog's cap does not apply; the
                // report's deadline does. Its head now, even in line (the
                // asker knows at once that the manager reports, and waits
                // for the rest), the rest in pieces once in flight (see
                // `settle`).
                if client.backlog.is_empty() {
                    self.dirty.push(id);
                }
                let report = Report::begin(
                    detail,
                    manager,
                    &self.identity,
                    &self.history,
                    &mut client.backlog,
                );
                let asked = Instant::now();
                client.asker = Some(Asker {
                    until: asked + STATUS_DEADLINE,
                    waiting: !in_flight,
                    moved: asked,
                });
                if in_flight {
                    client.report = Some(report);
                    self.status_clients.push(id);
                } else {
                    tracing::debug!(conn = %id, "status reports in flight; the asker waits in line");
                    self.status_waiting.push_back((id, report));
                }
            }
            self.settle(manager, namespace, now);
            if self.chores.is_empty() && self.evict.is_empty() {
                return;
            }
        }
    }

    /// Answers the queued looks at names that have no entry by one listing
    /// of the namespace, where that costs less than a look at each: a tick
    /// looks at a batch of released names, nearly all gone by then (a look
    /// was about a tenth of the manager's time per segment here).
    fn answer_absent_by_listing<N: Namespace>(
        &mut self,
        manager: &mut Manager<Growable>,
        namespace: &mut N,
        now: Timestamp,
    ) {
        // Called every pass of the work loop: most have few chores.
        if self.chores.len() < LOOKS_WORTH_A_LISTING {
            return;
        }
        let looks: Vec<SegmentName> = self
            .chores
            .iter()
            .filter_map(|chore| match chore {
                Chore::Observe(name) => Some(*name),
                _ => None,
            })
            .collect();
        if looks.len() < LOOKS_WORTH_A_LISTING {
            return;
        }
        let mut absent = vec![false; looks.len()];
        match namespace.absent_among(&looks, &mut absent) {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                tracing::debug!("could not list the namespace: {err}; looking at each name");
                return;
            }
        }
        let mut gone = HashSet::new();
        let gone: Vec<SegmentName> = looks
            .into_iter()
            .zip(absent)
            .filter(|&(name, absent)| absent && gone.insert(name))
            .map(|(name, _)| name)
            .collect();
        if gone.is_empty() {
            return;
        }
        let answered: HashSet<&SegmentName> = gone.iter().collect();
        self.chores
            .retain(|chore| !matches!(chore, Chore::Observe(name) if answered.contains(name)));
        for name in &gone {
            manager.observed(name, Some(Observed::Absent), now, self);
        }
    }

    /// Writes queued replies and the next pieces of status reports, and
    /// closes what the manager (or an error) closed; a report that ended
    /// lets the next in line in, and its first piece goes at once.
    fn settle<N: Namespace>(
        &mut self,
        manager: &mut Manager<Growable>,
        namespace: &mut N,
        now: Timestamp,
    ) {
        loop {
            self.settle_dirty(manager, namespace, now);
            if !self.let_waiting_reports_in() {
                return;
            }
        }
    }

    /// Lets askers waiting in line into the places of reports that ended,
    /// first come first; marks them dirty. Returns whether any came in.
    /// Makes room in a full line: the first asker in it that has not read
    /// its report's head within [`HEAD_READ_WITHIN`] of asking is closed
    /// (swept with the deadlines), so askers that never read, asking again
    /// at each hang-up, cannot keep a reader out of the line.
    fn close_a_waiting_asker_that_does_not_read(&mut self) {
        let now = Instant::now();
        // Or one that has hung up already (asking and closing at once, it
        // would hold its place until its end of file is read, a round later,
        // and a flood of such askers keeps the line full).
        let idle = self.status_waiting.iter().position(|(id, _)| {
            self.clients.get(id).is_some_and(|client| {
                client.asker.is_some_and(|asker| {
                    now >= asker.until - STATUS_DEADLINE + HEAD_READ_WITHIN
                        && socket::unread_by_peer(client.fd.as_fd()) > 0
                }) || client.peer_gone
                    || socket::peer_hung_up(client.fd.as_fd())
            })
        });
        let Some((id, _)) = idle.and_then(|at| self.status_waiting.remove(at)) else {
            return;
        };
        tracing::debug!(conn = %id, "status asker in line never read its report's head; closing it");
        if let Some(asker) = self.clients.get_mut(&id).and_then(|c| c.asker.as_mut()) {
            asker.until = now;
            // Swept with the reports in flight.
            asker.waiting = false;
        }
        self.status_clients.push(id);
    }

    fn let_waiting_reports_in(&mut self) -> bool {
        self.status_clients
            .retain(|id| self.clients.contains_key(id));
        let mut let_in = false;
        while self.status_clients.len() < MAX_STATUS_IN_FLIGHT {
            let Some((id, report)) = self.status_waiting.pop_front() else {
                break;
            };
            let Some(client) = self.clients.get_mut(&id) else {
                continue;
            };
            let Some(asker) = &mut client.asker else {
                continue;
            };
            let now = Instant::now();
            asker.waiting = false;
            asker.moved = now;
            // One that has not read its report's head, sent when it asked,
            // would not read the rest: it is closed now (its deadline
            // swept next), not after holding a place for a second.
            let asked = asker.until - STATUS_DEADLINE;
            if now >= asked + HEAD_READ_WITHIN && socket::unread_by_peer(client.fd.as_fd()) > 0 {
                tracing::debug!(conn = %id, "status asker never read its report's head; closing it");
                asker.until = now;
            } else {
                client.report = Some(report);
                self.dirty.push(id);
            }
            self.status_clients.push(id);
            let_in = true;
        }
        let_in
    }

    /// When the loop must look at status askers next: the nearest deadline,
    /// or the moment a report in flight has not moved for [`REPORT_STALL`].
    fn next_status_due(&self) -> Option<Instant> {
        let others_wait = !self.status_waiting.is_empty();
        let in_flight = self.status_clients.iter().filter_map(|id| {
            let asker = self.clients.get(id)?.asker?;
            let stalls = asker.moved + REPORT_STALL;
            Some(if others_wait {
                asker.until.min(stalls)
            } else {
                asker.until
            })
        });
        let waiting = self
            .status_waiting
            .iter()
            .filter_map(|(id, _)| Some(self.clients.get(id)?.asker?.until));
        in_flight.chain(waiting).min()
    }

    /// [`Self::settle`]'s one pass over the dirty clients and the askers.
    fn settle_dirty<N: Namespace>(
        &mut self,
        manager: &mut Manager<Growable>,
        namespace: &mut N,
        now: Timestamp,
    ) {
        let mut failed = Vec::new();
        let mut peer_gone = Vec::new();
        let mut sent = Vec::new();
        let mut dirty = std::mem::take(&mut self.dirty);
        // Replies before reports: an answer waits for no piece of a report.
        if !self.status_clients.is_empty() {
            dirty.sort_by_key(|id| self.clients.get(id).is_some_and(|c| c.report.is_some()));
        }
        for id in dirty {
            let Some(client) = self
                .clients
                .get_mut(&id)
                .filter(|c| c.hung_up_at.is_none() && !c.peer_gone)
            else {
                continue;
            };
            let mut moved = false;
            loop {
                match client.send_backlog() {
                    Ok(sent) => moved |= sent > 0,
                    Err(errno @ (Errno::PIPE | Errno::CONNRESET)) => {
                        tracing::debug!(conn = %id, "reply failed: {errno}");
                        peer_gone.push(id);
                        break;
                    }
                    Err(errno) => {
                        tracing::debug!(conn = %id, "reply failed: {errno}");
                        failed.push(id);
                        break;
                    }
                }
                // A report's next piece once the last is sent, as far as
                // this round's work for reports goes; the rest when the
                // socket has room again, a round later at the soonest.
                let Some(report) = client.report.as_mut() else {
                    break;
                };
                if !client.backlog.is_empty() || self.report_work.is_spent() {
                    break;
                }
                if report.piece(
                    &mut self.report_work,
                    manager,
                    namespace,
                    &self.history,
                    &mut client.backlog,
                ) {
                    client.report = None;
                }
                if client.backlog.is_empty() {
                    break;
                }
            }
            // Its tail too, once the last piece is written.
            if (moved || client.backlog.is_empty())
                && let Some(asker) = &mut client.asker
            {
                asker.moved = Instant::now();
            }
            // Room to write is waited for while something can be sent: the
            // backlog before a held doorbell's `OK`, or once the backlog is
            // out, a report's next piece (epoll says so at once, and the
            // next round writes it). Not for a report behind a held `OK`:
            // the socket has room, so every wait would return at once with
            // nothing to send; the doorbell's release (`drain`) marks the
            // client dirty.
            let next_piece_due = client.report.is_some() && client.backlog.is_empty();
            let waits_to_write = client.sendable() > 0 || next_piece_due;
            if waits_to_write != client.waits_to_write {
                client.waits_to_write = waits_to_write;
                let source = Source::Client(id);
                if let Err(errno) = self.readiness.set(&client.fd, source, true, waits_to_write) {
                    tracing::debug!(conn = %id, "could not wait for room to reply: {errno}");
                    failed.push(id);
                }
            }
            let sent_whole = client.backlog.is_empty() && client.report.is_none();
            if client.asker.is_some_and(|asker| {
                (sent_whole && !asker.waiting) || Instant::now() >= asker.until
            }) {
                sent.push(id);
            }
        }
        // Reports not read by their deadline go with their askers, in line
        // or not, and so do those in flight that stopped moving while
        // others wait (alone, a slow or descheduled reader keeps its own).
        let at = Instant::now();
        let others_wait = !self.status_waiting.is_empty();
        let waiting = self.status_waiting.iter().map(|&(id, _)| id);
        for id in self.status_clients.iter().copied().chain(waiting) {
            let Some(asker) = self.clients.get(&id).and_then(|c| c.asker) else {
                continue;
            };
            if (at >= asker.until || (others_wait && asker.stalled(at))) && !sent.contains(&id) {
                tracing::debug!(conn = %id, "status report not read in time; closing the asker");
                sent.push(id);
            }
        }
        for id in sent {
            manager.disconnect(id, now, self);
            self.closing.push(id);
        }
        for id in peer_gone {
            self.stop_writing(id, manager, now);
        }
        for id in failed {
            self.hang_up(id, manager, now);
        }
        for id in self.closing.drain(..) {
            if let Some(client) = self.clients.remove(&id) {
                self.readiness.remove(&client.fd);
                self.journaled.retain(|&journaled| journaled != id);
                self.freed_descriptor = true;
            }
        }
    }

    /// Watches `pid`, a frame's, for `conn`'s holds, if it is a process of
    /// `conn`'s pid namespace that can be watched.
    fn watch(&mut self, conn: ConnId, pid: i32) -> bool {
        self.frames_name_our_pids(conn) && self.pids.watch(pid) && self.add_pidfd(pid)
    }

    /// Whether the pids in `conn`'s frames name processes of our pid
    /// namespace (as read at accept).
    fn frames_name_our_pids(&self, conn: ConnId) -> bool {
        self.clients
            .get(&conn)
            .is_some_and(|client| client.frames_name_our_pids)
    }

    /// Puts `pid`'s descriptor, if it is watched through one, in the epoll
    /// set; false (and unwatched) if that fails.
    fn add_pidfd(&mut self, pid: i32) -> bool {
        let Some(fd) = self.pids.pidfd(pid) else {
            // Watched by polling instead.
            return true;
        };
        if let Err(errno) = self.readiness.add(fd, Source::Pid(pid)) {
            // Its end would go unnoticed: not watched, then.
            tracing::warn!(pid, "cannot watch process: {errno}");
            self.pids.unwatch(pid);
            return false;
        }
        true
    }

    /// Watches `pid` if the process it names started at `started`: the one
    /// the kernel named for `conn`, not a later one given its pid. Wherever
    /// it runs: unlike a frame's pid, a process the kernel named is watched
    /// in a nested pid namespace too.
    fn watch_if_started(&mut self, conn: ConnId, pid: i32, started: u64) -> bool {
        // The same start time, read again once the watch holds it (a pidfd
        // pins the pid to its process).
        let is_peer = || pid_watch::start_time(pid) == Some(started);
        if !is_peer() {
            tracing::debug!(conn = %conn, pid, "the process the kernel named has ended");
            return false;
        }
        let was_watched = self.pids.pidfd(pid).is_some() || self.pids.has_polled_pid(pid);
        if !(self.pids.watch_peer(pid) && self.add_pidfd(pid)) {
            return false;
        }
        if !is_peer() {
            if !was_watched {
                self.stop_watching(pid);
            }
            return false;
        }
        true
    }

    /// Stops watching `pid`, its descriptor first out of epoll.
    fn stop_watching(&mut self, pid: i32) {
        if let Some(fd) = self.pids.pidfd(pid) {
            self.readiness.remove(fd);
        }
        self.pids.unwatch(pid);
        self.freed_descriptor = true;
    }
}

impl Effects for Driver {
    fn reply(&mut self, conn: ConnId, reply: [u8; 2]) {
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        if client.evicted || client.peer_gone || client.hung_up_at.is_some() {
            return;
        }
        if client.backlog.len() + reply.len() > MAX_REPLY_BACKLOG {
            client.evicted = true;
            self.evict.push(conn);
            return;
        }
        if client.backlog.is_empty() {
            self.dirty.push(conn);
        }
        client.backlog.extend_from_slice(&reply);
        self.replied = true;
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        tracing::warn!(conn = %conn, pid = ?client.peer.pid, "closing connection: {reason}");
        // A held doorbell covers frames the manager has not all accepted (the
        // close may come from one of them, and those behind it are dropped):
        // its `OK`, and anything queued after it, is never sent, so the
        // client sees end of file instead of a settle that succeeded.
        if let Some(held) = client.held_doorbell.take() {
            client.backlog.truncate(held.at);
        }
        self.closing.push(conn);
    }

    fn chore(&mut self, chore: Chore) {
        self.chores.push_back(chore);
    }

    fn watch_pid(&mut self, conn: ConnId, pid: i32) -> bool {
        if !self.writer_speaks_for(pid) {
            tracing::debug!(conn = %conn, pid, writer = ?self.writer,
                "a frame's pid names neither its writer nor the writer's child: its holds last as long as the connection");
            return false;
        }
        self.watch(conn, pid)
    }

    /// Pids the kernel named for us (`SO_PEERCRED`, `SCM_CREDENTIALS`),
    /// wherever their processes run.
    fn watch_peer(&mut self, conn: ConnId, peer: Option<i32>) -> Option<i32> {
        let (ties, tied_at_close) = match self.clients.get(&conn) {
            Some(client) => (client.ties_in_order(peer), None),
            None => {
                let (tied_at_close, writers) = self.closed_ties.take(conn)?;
                (writers, Some(tied_at_close))
            }
        };
        // The first of them that still runs; those after it are kept for
        // its end, and looked at then (a look at each now would make a
        // burst of closes cost a look at every writer of each).
        let mut ties = ties.into_iter();
        let (tied, _) = ties.by_ref().find(|&(pid, started)| {
            tracing::debug!(conn = %conn, pid, "tying a closed connection's untrusted holds");
            self.watch_if_started(conn, pid, started)
        })?;
        let writers: Vec<_> = ties.collect();
        if !writers.is_empty() {
            self.closed_ties
                .remember(conn, tied_at_close.unwrap_or(tied), writers);
        }
        Some(tied)
    }

    fn unwatch_pid(&mut self, pid: i32) {
        self.stop_watching(pid);
    }

    fn watch_successor(&mut self, conn: ConnId, pid: i32) -> bool {
        self.writer_speaks_for(pid)
            && self.frames_name_our_pids(conn)
            && self.pids.watch_successor(pid)
    }

    fn successor_has_ended(&mut self, pid: i32) -> bool {
        self.pids.successor_has_ended(pid)
    }

    fn promote_successor(&mut self, pid: i32, keep: bool) -> bool {
        self.pids.promote_successor(pid, keep) && self.add_pidfd(pid)
    }

    fn speaks_for(&mut self, _conn: ConnId, pid: i32) -> bool {
        if self.writer.is_none_or(|writer| writer == pid) {
            return true;
        }
        if let Some(&speaks) = self.speaks_this_read.get(&pid) {
            return speaks;
        }
        let speaks = self.writer_speaks_for(pid);
        self.speaks_this_read.insert(pid, speaks);
        speaks
    }

    fn pid_has_ended(&mut self, pid: i32) -> bool {
        if self.running_since_read.contains(&pid) {
            return false;
        }
        let ended = self.pids.has_ended(pid);
        if !ended {
            self.running_since_read.insert(pid);
        }
        ended
    }

    fn pid_is_gone(&mut self, conn: ConnId, pid: i32) -> bool {
        if let Some(&gone) = self.gone_this_read.get(&pid) {
            return gone;
        }
        let gone = self.speaks_for(conn, pid)
            && self.frames_name_our_pids(conn)
            && pid_watch::is_gone(pid);
        self.gone_this_read.insert(pid, gone);
        // Its end is reported this round, after the reads.
        if gone && self.gone.insert(pid) {
            self.exited.push(pid);
        }
        gone
    }

    fn attach_journal(&mut self, conn: ConnId) -> Option<Journal<'_>> {
        let client = self.clients.get_mut(&conn)?;
        let pid = client.peer.pid;
        let Some(fd) = client.offered.take() else {
            tracing::debug!(conn = %conn, "journal offer without memory attached");
            return None;
        };
        let journal = match SharedJournal::adopt(fd) {
            Ok(journal) => journal,
            Err(err) => {
                tracing::warn!(conn = %conn, ?pid, "refused a journal: {err}");
                return None;
            }
        };
        // Another connection's ring (any process of the user can open it
        // again through /proc): whichever end read it first would take the
        // other's frames, and end them with its own connection.
        let taken = self.journaled.iter().any(|other| {
            self.clients
                .get(other)
                .and_then(|c| c.journal.as_ref())
                .is_some_and(|other| other.is_same_file(&journal))
        });
        if taken {
            tracing::warn!(conn = %conn, ?pid, "refused a journal: another connection's journal memory");
            return None;
        }
        tracing::debug!(conn = %conn, capacity = journal.journal().capacity(), "journal attached");
        self.journaled.push(conn);
        let client = self.clients.get_mut(&conn)?;
        Some(client.journal.insert(journal).journal())
    }

    fn drain_journal(&mut self, conn: ConnId) {
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        let owed = client
            .journal
            .as_ref()
            .map_or(0, |journal| journal.journal().unread().unwrap_or(0));
        if owed > 0 {
            // The manager queues the OK right after this call.
            let at = client
                .held_doorbell
                .map_or(client.backlog.len(), |held| held.at);
            client.held_doorbell = Some(HeldDoorbell { at, owed });
        }
        self.doorbells.push(conn);
    }

    fn status(&mut self, conn: ConnId, detail: Detail) {
        self.status_requests.push((conn, detail));
    }

    fn note(&mut self, note: Note) {
        report::log_note(&note);
        self.history.record(self.clock, note);
    }
}

#[cfg(test)]
mod tests {
    use super::each_once;

    #[test]
    fn a_pid_found_ended_twice_is_reported_once_in_the_order_first_seen() {
        assert_eq!(each_once(vec![7, 3, 7, 9, 3]), vec![7, 3, 9]);
        assert_eq!(each_once(Vec::new()), Vec::<i32>::new());
    }
}
