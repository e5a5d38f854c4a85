//! Runs a [`ManagerScript`] against a real [`Manager`] and a reference model
//! of what it must do, panicking at the first difference.
//!
//! # The model
//! It keeps every registration in one map, `(name, holder) -> count`, and
//! recomputes what it needs from it (live registrations, dead ones, hold
//! entries) instead of keeping counters. A holder is a process on a
//! connection; the model resolves frames to holders as the manager's rules
//! say (a pid the driver can watch gets its own holder, others share the
//! connection's, and so do frames whose writer uses a pid without speaking
//! for it), ends them on a disconnect, a pid's death or a close for
//! cause, and knows which names the manager knows. It predicts every reply
//! and close exactly, and checks the chores (looks and unlinks) the manager
//! asks for against safety rules rather than predicting when they come: the
//! manager's schedule is its own business, the rules are not.
//!
//! A connection closed for cause keeps its holders for pids the driver
//! watches; its holder for the others is tied to a live process the driver
//! names (`watch_peer`: the one that connected, else one that wrote on it),
//! and each time that process ends, to the next one the driver names, as
//! `transport-unix`'s driver does: the fake driver takes the pids of the
//! registrations and releases the script sent on the connection as its
//! writers, the last writer first, then the latest to start writing. The
//! holder ends once nobody is left, or when the manager cannot count the
//! named pid (its pid table is full; the ended pid has left it by then).
//! The model reads whom the driver named from the driver, and checks that
//! the manager asked exactly when it should, about the connection it
//! should. A re-registration by the pid such a holder is tied to, on
//! another connection, takes over that holder's registration.
//!
//! The spec leaves a few choices to the manager that decide later outcomes:
//! which holder a release from another process on the same connection is
//! charged to, and whose holds are turned into dead registrations first when
//! a tick's batch cannot do them all. The manager makes both by holder id, so
//! the model mirrors the ids its holder table hands out (`SlabIds`). It also
//! remembers the last pid resolved on each connection, as the manager does: a
//! pid whose entry did not fit a full holder index resolves through that
//! alone. When a pid ends, the manager passes its holders' ties on the
//! last tied first, which decides who gets the pid table's last room; the
//! model keeps that order (`HolderModel::tied_at`). Which of one holder's names a partial batch converts first it does
//! not mirror; it accepts any split in between.
//!
//! # The invariants, each checked where it can first be seen
//! - Every valid registration on a live connection is answered exactly once,
//!   in order: `OK`, or `NO` exactly when a table is full, the name cap is
//!   reached or the name is outside the prefix. A journaled one is silent,
//!   and closes the connection when it cannot be stored.
//! - Only malformed bytes, a half frame or silence past its timeout, journal
//!   misuse (and the driver's eviction) close a connection; nothing is sent
//!   to a closed one. A release that no holder on its connection can take is
//!   a stray: noted, and nothing else.
//! - Holders, watched pids, connections and known names are the model's.
//! - No `Unlink` is asked for while a live holder holds the name, nor while
//!   the namespace's refcount exceeds the registrations of holders that ended
//!   without releasing it (an adopted name's creator counting as one more
//!   unless it registered the name here, until someone registers the name),
//!   unless the manager is shutting down past its linger. An orphan once
//!   held by a process that died while its connection lived on is unlinked
//!   while serving only after a look finds nobody mapping it. `Orphaned`
//!   unlinks come only while serving, with reaping on, and no earlier than
//!   the grace period after the name became an orphan (a retry of a failed
//!   orphan unlink excepted); `Shutdown` ones only while closing. Nothing that is not a
//!   segment of ours is ever unlinked.
//! - Looks and unlinks are judged as the refcount rule says; a failed unlink
//!   keeps the name known and scheduled; at most one chore per name is out.
//! - A tick asks for at most `batch` chores, plus a shutdown pass's `batch`;
//!   nothing else asks for any but a look's outcome (one unlink, of it).
//! - [`Manager::next_wakeup`] is never later than a stalled connection, the
//!   shutdown, an orphan's reaping or holds left to convert, and a tick before
//!   it does nothing; a lingering manager looks again within a second.
//! - `Finished` comes exactly when the manager is closing and knows no names.
//!
//! After the script, a wind-down checks liveness: with the driver carrying
//! out every chore, a manager kept serving for ten minutes has forgotten every
//! unheld name that is gone or not ours and reaped every orphan; and once every
//! client has gone, it finishes within its shutdown timeout and linger.

mod driver;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use libshm_core::ack::{ACK, JOURNAL_READY, REFUSAL};
use libshm_core::frame::{FRAME_LEN, Frame, FrameKind};
use libshm_core::journal;
use libshm_core::manager::{
    Chore, CloseReason, ConnId, ConnectError, Manager, ManagerConfig, NameState, Note, Peer,
    Status, UnlinkReason,
};
use libshm_core::name::{NamePrefix, SegmentName};
use libshm_core::namespace::{Observed, Unlinked};
use libshm_core::storage::{Fixed, Growable, Storage};
use libshm_core::time::Timestamp;

use crate::manager_script::{
    Event, ManagerScript, OWNER_UID, PeerUid, Piece, Setup, StorageChoice,
};
use crate::name_pool;
use driver::{Driver, Effect, Object, SimNamespace};

/// A connection id the manager never hands out (it counts up from 0).
const NEVER_ISSUED: ConnId = ConnId(u64::MAX);

/// The manager keeps deadlines in ticks of this length, and reports one
/// that fell due already as the start of its tick.
const TICK_MS: u64 = 100;

/// A lingering manager looks at what it waits for at least this often.
const LINGER_LOOK_MS: u64 = 1_000;

/// How long the wind-down keeps a manager serving before judging what it
/// still knows: longer than any look's back-off, grace period or retry.
const SETTLE_MS: u64 = 600_000;

/// How long after its linger a manager without clients may take to finish:
/// one lingering look, and the unlinks it leads to.
const FINISH_SLACK_MS: u64 = 2_000;

/// Ticks the wind-down allows before calling the manager stuck.
const MAX_WIND_DOWN_TICKS: usize = 20_000;

/// Runs `script`, panicking on the first broken invariant.
pub fn run_manager_script(script: &ManagerScript) {
    let setup = &script.setup;
    match setup.storage {
        StorageChoice::Small => {
            Harness::<Fixed<4, 2>>::new(setup, Capacity::fixed(4, 2)).run(&script.events)
        }
        StorageChoice::Medium => {
            Harness::<Fixed<8, 4>>::new(setup, Capacity::fixed(8, 4)).run(&script.events)
        }
        StorageChoice::Growable => {
            Harness::<Growable>::new(setup, Capacity::GROWABLE).run(&script.events)
        }
    }
}

/// What the storage can hold. `Fixed<N, C>` keeps up to `N` names and hold
/// entries, and `C` connections, holders, holder index entries and watched
/// pids.
#[derive(Clone, Copy, Debug)]
struct Capacity {
    names: usize,
    conns: usize,
    slab: SlabKind,
}

impl Capacity {
    const GROWABLE: Self = Self {
        names: usize::MAX,
        conns: usize::MAX,
        slab: SlabKind::Growable,
    };

    fn fixed(names: usize, conns: usize) -> Self {
        Self {
            names,
            conns,
            slab: SlabKind::Fixed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlabKind {
    /// `FixedSlab`: a freed id goes on a stack, and is handed out first.
    Fixed,
    /// `VecSlab`: the same, except that freeing the highest id shrinks the
    /// slab instead, and freeing the last one starts afresh.
    Growable,
}

/// The ids the manager's holder slab hands out, mirrored (see the module doc).
#[derive(Debug)]
struct SlabIds {
    kind: SlabKind,
    capacity: usize,
    used: Vec<bool>,
    free: Vec<u32>,
    len: usize,
}

impl SlabIds {
    fn new(capacity: Capacity) -> Self {
        Self {
            kind: capacity.slab,
            capacity: capacity.conns,
            used: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    fn insert(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            self.used[id as usize] = true;
            self.len += 1;
            return Some(id);
        }
        if self.used.len() >= self.capacity {
            return None;
        }
        self.used.push(true);
        self.len += 1;
        Some(self.used.len() as u32 - 1)
    }

    fn remove(&mut self, id: u32) {
        assert!(self.used[id as usize], "slab id {id} freed twice");
        self.used[id as usize] = false;
        self.len -= 1;
        match self.kind {
            SlabKind::Fixed => self.free.push(id),
            SlabKind::Growable if self.len == 0 => {
                self.used.clear();
                self.free.clear();
            }
            SlabKind::Growable if id as usize + 1 == self.used.len() => {
                self.used.pop();
            }
            SlabKind::Growable => self.free.push(id),
        }
    }
}

/// The model of one connection the manager accepted.
struct ConnModel {
    id: ConnId,
    peer_pid: Option<i32>,
    live: bool,
    /// Written by the client, not yet read by the manager.
    unsent: Vec<u8>,
    /// Read by the manager, not yet a whole frame.
    partial: Vec<u8>,
    /// When it is closed unless it sends (or finishes) a frame.
    deadline: Option<u64>,
    /// The driver took its journal offer.
    journal: bool,
    /// A journaled foreign name was noted (once per connection).
    noted_foreign: bool,
    /// The pid last resolved to a holder, and that holder: the manager
    /// resolves that pid the same way again without asking its index.
    last: Option<(i32, usize)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HolderState {
    Live,
    /// Ended; this many of its names are still counted as live registrations
    /// by the manager, to be converted to dead ones by ticks.
    Ending {
        names: usize,
    },
    /// Ended, converted and out of the manager's holder table.
    Gone,
}

#[derive(Clone, Copy, Debug)]
struct HolderModel {
    /// Index into `conns`.
    conn: usize,
    /// The pid in its index key; `None` for the holder that stands for the
    /// connection's pids the driver cannot watch.
    key_pid: Option<i32>,
    /// The watched pid whose end ends it; `None`: its connection's end.
    watching: Option<i32>,
    /// When it was tied to `watching`, counted by `Harness::next_tie`: the manager
    /// goes through a pid's holders the last tied first.
    tied_at: u64,
    state: HolderState,
    /// Its id in the manager's holder slab.
    id: u32,
}

/// What the model knows of a name beyond its registrations.
#[derive(Clone, Copy, Debug, Default)]
struct NameModel {
    /// Taken on by a sweep (only once).
    adopted: bool,
    /// The adoption counts its unseen creator as one dead registration,
    /// until someone registers the name.
    creator_counted: bool,
    /// Registered by the pid its name says created it: an adoption then
    /// counts no unseen creator.
    creator_seen: bool,
    /// Held by a process that died while its connection lived on (forks of
    /// it may map it unannounced).
    inherited: bool,
    /// A walk found nobody mapping it; the look it asked for may unlink.
    nobody_maps: bool,
    /// When the manager first showed it as an orphan (since then).
    orphan_since: Option<u64>,
    /// An unlink of it as an orphan failed and will be retried (its grace
    /// period is over).
    retrying: bool,
    /// Unheld with dead registrations and found absent once: the next
    /// absent look forgets it.
    absent_once: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    Yes,
    No,
}

/// Whether a registration is answered (socket) or not (journal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Reply,
    Silent,
}

struct Harness<S: Storage> {
    manager: Manager<S>,
    config: ManagerConfig,
    capacity: Capacity,
    fx: Driver,
    ns: SimNamespace,
    now: u64,
    conns: Vec<ConnModel>,
    holders: Vec<HolderModel>,
    slab: SlabIds,
    /// The manager's holder index: (connection, pid) -> holder, including the
    /// pids that stand for their connection's holder.
    index: BTreeMap<(usize, Option<i32>), usize>,
    /// Exactly the names the manager should know.
    names: BTreeMap<SegmentName, NameModel>,
    /// (name, holder) -> registrations not released, for live and ended
    /// holders, while the manager knows the name.
    regs: BTreeMap<(SegmentName, usize), u32>,
    /// Since when no connection has been live.
    idle_since: Option<u64>,
    /// When the manager started closing (no client for the shutdown timeout).
    closing_since: Option<u64>,
    /// The driver holds chores until told to carry them out.
    defer: bool,
    /// Times a holder was tied to a pid so far.
    tied_so_far: u64,
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn chore_name(chore: &Chore) -> SegmentName {
    match chore {
        Chore::Observe(name) | Chore::Unlink(name, _) | Chore::CheckMapped(name) => *name,
        // Measuring is off in these scripts (the pressure alarm has its own
        // tests); a stray one would fail the name checks loudly.
        Chore::MeasureUsage => panic!("the manager measured usage with measuring off"),
    }
}

/// Held names a patrol looks at per round in these scripts: small, so
/// patrols and the rest of a tick's batch mix.
const PATROL_BATCH: usize = 2;

impl<S: Storage> Harness<S> {
    fn new(setup: &Setup, capacity: Capacity) -> Self {
        let config = ManagerConfig {
            shutdown_after: millis(setup.shutdown_after_ms),
            reap_grace: setup.reap_grace_ms.map(millis),
            frame_timeout: setup.frame_timeout_ms.map(millis),
            silence_timeout: setup.silence_timeout_ms.map(millis),
            name_prefix: setup.torch_prefix_only.then(NamePrefix::torch),
            also_prefix: None,
            owner_uid: setup.owner_uid_only.then_some(OWNER_UID),
            max_connections: setup.max_connections.unwrap_or(usize::MAX),
            max_names: setup.max_names.unwrap_or(usize::MAX),
            linger: millis(setup.linger_ms),
            batch: usize::from(setup.batch),
            hash_seed: 0x5eed,
            patrol_every: Some(Duration::from_secs(1)),
            patrol_batch: PATROL_BATCH,
            measure_every: None,
        };
        Self {
            manager: Manager::new(config, Timestamp::ZERO),
            config,
            capacity,
            fx: Driver {
                watchable: setup.watchable,
                journals: setup.journals,
                journal: Driver::journal_memory(),
                ..Driver::default()
            },
            ns: SimNamespace::default(),
            now: 0,
            conns: Vec::new(),
            holders: Vec::new(),
            slab: SlabIds::new(capacity),
            index: BTreeMap::new(),
            names: BTreeMap::new(),
            regs: BTreeMap::new(),
            idle_since: Some(0),
            closing_since: None,
            defer: false,
            tied_so_far: 0,
        }
    }

    fn run(mut self, events: &[Event]) {
        for event in events {
            if self.step(event) == Flow::Finished {
                return;
            }
            if !self.defer {
                self.perform_all();
            }
            self.check_state();
        }
        self.wind_down();
    }

    fn step(&mut self, event: &Event) -> Flow {
        match event {
            Event::Connect { uid, pid } => {
                self.connect(*uid, *pid);
            }
            Event::Send {
                conn,
                piece,
                hold_back,
            } => {
                let bytes = piece.bytes();
                match self.target(*conn) {
                    None => self.receive_on_never_issued(&bytes),
                    Some(index) => {
                        self.wrote(index, piece);
                        self.conns[index].unsent.extend_from_slice(&bytes);
                        if !hold_back {
                            self.deliver(index, usize::MAX);
                        }
                    }
                }
            }
            Event::Deliver { conn, max_bytes } => {
                if let Some(index) = self.target(*conn) {
                    let max = match max_bytes {
                        0 => usize::MAX,
                        n => usize::from(*n),
                    };
                    self.deliver(index, max);
                }
            }
            Event::Disconnect { conn } => self.disconnect(*conn),
            Event::Tick { advance } => {
                self.now += Event::advance_ms(*advance);
                return self.tick();
            }
            Event::TickAtWakeup => {
                if let Some(wake) = self.manager.next_wakeup() {
                    self.now = self.now.max(wake.as_millis());
                }
                return self.tick();
            }
            Event::Namespace { name, change } => self.ns.apply(*name, *change),
            Event::PidExited { pid } => self.pid_exited(i32::from(*pid)),
            Event::PidReused { pid } => self.fx.pid_reused(i32::from(*pid)),
            Event::Perform { pick, fail } => {
                if !self.fx.held.is_empty() {
                    let index = usize::from(*pick) % self.fx.held.len();
                    self.perform(index, *fail);
                }
            }
            Event::PerformAll => self.perform_all(),
            Event::DeferChores { on } => self.defer = *on,
            Event::Adopt { name } => self.adopt(*name),
            Event::Journaled { conn, piece } => self.journaled(*conn, piece),
            Event::Evict { conn } => self.evict(*conn),
            Event::ForeignWriter { pid } => {
                let pid = i32::from(*pid);
                if !self.fx.foreign.remove(&pid) {
                    self.fx.foreign.insert(pid);
                }
            }
        }
        // Senders found gone while frames were read: the driver reports
        // their end once the reading is over.
        for pid in std::mem::take(&mut self.fx.gone_reported) {
            self.pid_exited(pid);
        }
        Flow::Continue
    }

    fn timestamp(&self) -> Timestamp {
        Timestamp::from_millis(self.now)
    }

    /// The connection a choice byte picks; `None` for the one never issued.
    fn target(&self, choice: u8) -> Option<usize> {
        let index = usize::from(choice) % (self.conns.len() + 1);
        (index < self.conns.len()).then_some(index)
    }

    fn take_log(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.fx.log)
    }

    fn batch(&self) -> usize {
        self.config.batch.max(1)
    }

    fn closing(&self) -> bool {
        self.closing_since.is_some()
    }

    /// Shutting down and past the linger: everything goes.
    fn linger_over(&self) -> bool {
        self.closing_since
            .is_some_and(|since| since + self.config.linger.as_millis() as u64 <= self.now)
    }

    fn live_conns(&self) -> usize {
        self.conns.iter().filter(|c| c.live).count()
    }

    fn live_holders(&self) -> usize {
        self.holders
            .iter()
            .filter(|h| h.state == HolderState::Live)
            .count()
    }

    /// Pids the manager depends on watching: those of live holders.
    fn watching(&self) -> BTreeSet<i32> {
        self.holders
            .iter()
            .filter(|h| h.state == HolderState::Live)
            .filter_map(|h| h.watching)
            .collect()
    }

    fn regs_of(&self, name: &SegmentName) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.regs
            .range((*name, 0)..=(*name, usize::MAX))
            .map(|(&(_, holder), &count)| (holder, count))
    }

    /// Registrations of `name` by live holders.
    fn live_regs(&self, name: &SegmentName) -> u32 {
        self.regs_of(name)
            .filter(|&(h, _)| self.holders[h].state == HolderState::Live)
            .map(|(_, count)| count)
            .sum()
    }

    /// Whether an ended holder whose holds are not all converted yet held
    /// `name`: the manager may still count it as held.
    fn ending_regs(&self, name: &SegmentName) -> bool {
        self.regs_of(name)
            .any(|(h, _)| matches!(self.holders[h].state, HolderState::Ending { .. }))
    }

    /// Registrations of `name` by holders that ended without releasing it.
    fn dead_regs(&self, name: &SegmentName) -> u32 {
        self.regs_of(name)
            .filter(|&(h, _)| self.holders[h].state != HolderState::Live)
            .map(|(_, count)| count)
            .sum()
    }

    /// The dead registrations the refcount rule weighs for `name`: an
    /// adopted name's creator counts as one more, unless it registered here.
    fn judged_dead(&self, name: &SegmentName) -> u32 {
        let dead = self.dead_regs(name);
        match self.names.get(name) {
            Some(record) if record.creator_counted => dead.saturating_add(1),
            _ => dead,
        }
    }

    /// Entries in the manager's hold table: live holders' names, and ended
    /// holders' names not converted yet.
    fn hold_entries(&self) -> usize {
        let live = self
            .regs
            .keys()
            .filter(|&&(_, h)| self.holders[h].state == HolderState::Live)
            .count();
        let ending: usize = self
            .holders
            .iter()
            .map(|h| match h.state {
                HolderState::Ending { names } => names,
                _ => 0,
            })
            .sum();
        live + ending
    }

    /// Whether a tick has ended holders' holds left to convert.
    fn converting(&self) -> bool {
        self.holders
            .iter()
            .any(|h| matches!(h.state, HolderState::Ending { names } if names > 0))
    }

    fn connect(&mut self, uid: PeerUid, pid: u8) -> Option<usize> {
        let uid = match uid {
            PeerUid::Owner => Some(OWNER_UID),
            PeerUid::Foreign => Some(0),
            PeerUid::Unknown => None,
        };
        let peer = Peer {
            pid: (pid != 0).then_some(i32::from(pid)),
            uid,
        };
        let result = self.manager.connect(peer, self.timestamp());

        let limit = self.config.max_connections.min(self.capacity.conns);
        if let Some(owner) = self.config.owner_uid
            && uid != Some(owner)
        {
            assert_eq!(
                result,
                Err(ConnectError::ForeignUid { uid }),
                "peer of uid {uid:?}"
            );
            return None;
        }
        if self.live_conns() >= limit {
            assert_eq!(
                result,
                Err(ConnectError::TooManyConnections),
                "connection {} of {limit}",
                self.live_conns() + 1
            );
            return None;
        }
        let id = result.unwrap_or_else(|err| panic!("connection refused below the limit: {err}"));
        assert!(
            self.conns.iter().all(|c| c.id < id) && id != NEVER_ISSUED,
            "connection id {id} reused or out of order"
        );
        assert_eq!(self.manager.peer(id), Some(peer));
        self.fx.connected(id, peer.pid);
        self.conns.push(ConnModel {
            id,
            peer_pid: peer.pid,
            live: true,
            unsent: Vec::new(),
            partial: Vec::new(),
            deadline: self
                .config
                .silence_timeout
                .map(|t| self.now + t.as_millis() as u64),
            journal: false,
            noted_foreign: false,
            last: None,
        });
        self.idle_since = None;
        self.closing_since = None;
        Some(self.conns.len() - 1)
    }

    /// The client writes `piece` on connection `index`: a frame's pid is its
    /// writer's, as the kernel names it, unless the writer uses the pid
    /// without speaking for it (its own is not modelled). What a mangled
    /// frame or raw bytes say is no pid.
    fn wrote(&mut self, index: usize, piece: &Piece) {
        let (Piece::Register { pid, .. } | Piece::Release { pid, .. }) = piece else {
            return;
        };
        let pid = i32::from(*pid);
        if self.conns[index].live && !self.fx.foreign.contains(&pid) {
            self.fx.wrote(self.conns[index].id, pid);
        }
    }

    fn receive_on_never_issued(&mut self, bytes: &[u8]) {
        self.manager
            .receive(NEVER_ISSUED, bytes, self.timestamp(), &mut self.fx);
        let log = self.take_log();
        assert!(
            log.is_empty(),
            "effects for a connection never issued: {log:?}"
        );
    }

    /// The manager reads up to `max` unsent bytes of connection `index`,
    /// written by the script's writer: the driver answers for it while the
    /// model judges what the read did.
    fn deliver(&mut self, index: usize, max: usize) {
        self.fx.reading = true;
        self.read(index, max);
        self.fx.reading = false;
    }

    fn read(&mut self, index: usize, max: usize) {
        let conn = &mut self.conns[index];
        let take = max.min(conn.unsent.len());
        let chunk: Vec<u8> = conn.unsent.drain(..take).collect();
        let id = conn.id;
        self.manager
            .receive(id, &chunk, self.timestamp(), &mut self.fx);
        let log = self.take_log();
        if !self.conns[index].live || chunk.is_empty() {
            assert!(log.is_empty(), "effects for {id} reading nothing: {log:?}");
            return;
        }

        let conn = &mut self.conns[index];
        let had_partial = !conn.partial.is_empty();
        let mut stream = std::mem::take(&mut conn.partial);
        stream.extend_from_slice(&chunk);
        let whole_frames = stream.len() / FRAME_LEN;

        let mut effects = log.into_iter();
        for frame in stream.chunks_exact(FRAME_LEN) {
            self.conns[index].deadline = None;
            if self.expect_frame(index, frame, Answer::Reply, &mut effects) == Closed::Yes {
                let rest: Vec<Effect> = effects.collect();
                assert!(rest.is_empty(), "effects after {id} was closed: {rest:?}");
                return;
            }
        }
        let rest: Vec<Effect> = effects.collect();
        assert!(
            rest.is_empty(),
            "effects no frame on {id} asked for: {rest:?}"
        );

        let leftover = &stream[whole_frames * FRAME_LEN..];
        let frame_timeout = self.config.frame_timeout;
        let now = self.now;
        let conn = &mut self.conns[index];
        if !leftover.is_empty() && (whole_frames > 0 || !had_partial) {
            // A half frame starts its own clock, replacing the silence one.
            conn.deadline = frame_timeout.map(|t| now + t.as_millis() as u64);
        }
        conn.partial = leftover.to_vec();
    }

    /// Checks the effects of one whole frame read on live connection `index`.
    fn expect_frame(
        &mut self,
        index: usize,
        bytes: &[u8],
        answer: Answer,
        effects: &mut impl Iterator<Item = Effect>,
    ) -> Closed {
        let id = self.conns[index].id;
        let frame = match Frame::parse(bytes) {
            Ok(frame) => frame,
            Err(err) => {
                return self.expect_close(index, effects.next(), CloseReason::Malformed(err));
            }
        };
        let name = frame.name;
        if journal::is_reserved(&name) {
            if answer == Answer::Silent {
                return self.expect_close(index, effects.next(), CloseReason::JournalMisuse);
            }
            // The journal offer is taken if the driver takes journals, the
            // doorbell is answered, releases of either are ignored, and none
            // of it enters the tables.
            if frame.kind == FrameKind::Register {
                let reply = match name == journal::SETUP {
                    true if self.fx.journals && self.names.len() < self.config.max_names => {
                        self.conns[index].journal = true;
                        JOURNAL_READY
                    }
                    true => REFUSAL,
                    false => ACK,
                };
                assert_eq!(
                    effects.next(),
                    Some(Effect::Reply(id, reply)),
                    "answer to {name} on {id}"
                );
                if reply == JOURNAL_READY {
                    let advertised = journal::Journal::from_words(&self.fx.journal)
                        .map_err(drop)
                        .and_then(|journal| journal.advertised().map_err(drop));
                    assert_eq!(
                        advertised,
                        Ok(journal::Accepted::by_manager(
                            self.config.name_prefix,
                            self.config.also_prefix
                        )),
                        "the manager says which names it takes before it answers {name} on {id}"
                    );
                }
            }
            return Closed::No;
        }
        match frame.kind {
            FrameKind::Register => self.expect_register(index, frame.pid, name, answer, effects),
            FrameKind::Release => {
                self.expect_release(index, frame.pid, name, effects);
                Closed::No
            }
        }
    }

    fn expect_register(
        &mut self,
        index: usize,
        pid: i32,
        name: SegmentName,
        answer: Answer,
        effects: &mut impl Iterator<Item = Effect>,
    ) -> Closed {
        let id = self.conns[index].id;
        let outside = self
            .config
            .name_prefix
            .is_some_and(|prefix| !name.has_prefix(&prefix));
        let stored = !outside && self.store_registration(index, pid, name, answer);
        match answer {
            Answer::Reply => {
                let reply = if stored { ACK } else { REFUSAL };
                assert_eq!(
                    effects.next(),
                    Some(Effect::Reply(id, reply)),
                    "answer to registering {name} from pid {pid} on {id}"
                );
                Closed::No
            }
            Answer::Silent if outside => {
                if !std::mem::replace(&mut self.conns[index].noted_foreign, true) {
                    assert_eq!(
                        effects.next(),
                        Some(Effect::Ignored(Note::ForeignSkipped {
                            conn: id,
                            pid,
                            name
                        })),
                        "journaled {name} from pid {pid} on {id}, outside the prefix"
                    );
                }
                Closed::No
            }
            Answer::Silent if !stored => {
                self.expect_close(index, effects.next(), CloseReason::RegistryFull)
            }
            Answer::Silent => Closed::No,
        }
    }

    /// Stores a registration as the manager must, if it fits: the name, the
    /// holder (which may be created even if the hold then does not fit),
    /// the hold.
    fn store_registration(
        &mut self,
        index: usize,
        pid: i32,
        name: SegmentName,
        answer: Answer,
    ) -> bool {
        let known = self.names.contains_key(&name);
        // Journaled registrations may go on to twice the limit.
        let limit = match answer {
            Answer::Reply => self.config.max_names,
            Answer::Silent => self.config.max_names.saturating_mul(2),
        };
        let names_limit = limit.min(self.capacity.names);
        if !known && self.names.len() >= names_limit {
            return false;
        }
        let Some(holder) = self.resolve_holder(index, pid) else {
            return false;
        };
        let has_entry = self.regs.contains_key(&(name, holder));
        if !has_entry && self.hold_entries() >= self.capacity.names {
            return false;
        }
        let was_unheld = self.live_regs(&name) == 0;
        *self.regs.entry((name, holder)).or_insert(0) += 1;
        // The pid's registration from before its old connection was closed
        // for cause moves here, if the writer speaks for the pid.
        if let Some(stale) = self.detached_holder_holding(pid, name) {
            self.take_reg(name, stale);
        }
        let creator = [self.config.name_prefix, self.config.also_prefix]
            .iter()
            .flatten()
            .find_map(|prefix| name.creator_pid(prefix));
        let record = self.names.entry(name).or_default();
        record.creator_seen |= creator == u32::try_from(pid).ok();
        // A user of an adopted name: the guess that its creator leaked
        // its reference is withdrawn.
        record.creator_counted = false;
        record.orphan_since = None;
        record.retrying = false;
        if was_unheld {
            record.absent_once = false;
        }
        true
    }

    /// The live holder with the lowest id that `pid` has on a connection
    /// closed for cause and that holds `name`; none for a writer that does
    /// not speak for `pid`.
    fn detached_holder_holding(&self, pid: i32, name: SegmentName) -> Option<usize> {
        if !self.fx.speaks(pid) {
            return None;
        }
        self.regs_of(&name)
            .map(|(h, _)| h)
            .filter(|&h| {
                let holder = &self.holders[h];
                holder.watching == Some(pid)
                    && holder.state == HolderState::Live
                    && !self.conns[holder.conn].live
            })
            .min_by_key(|&h| self.holders[h].id)
    }

    /// One registration of `name` by `holder` fewer.
    fn take_reg(&mut self, name: SegmentName, holder: usize) {
        let count = self
            .regs
            .get_mut(&(name, holder))
            .unwrap_or_else(|| panic!("{name} not held by holder {holder}"));
        *count -= 1;
        if *count == 0 {
            self.regs.remove(&(name, holder));
        }
    }

    /// The holder frames from `pid` on connection `index` belong to, created
    /// on first sight: its own if the driver can watch the pid (and the
    /// manager can count it), else the connection's, which the pid is then
    /// remembered to stand for if the index has room.
    fn resolve_holder(&mut self, index: usize, pid: i32) -> Option<usize> {
        if let Some(holder) = self.known_holder(index, pid) {
            return Some(holder);
        }
        let capacity = self.capacity.conns;
        let full = |len: usize| len >= capacity;
        let watching = self.watching();
        let countable = watching.contains(&pid) || !full(watching.len());
        // A pid found gone is watched as if it had just exited: the driver
        // reports its end. Neither is asked of a pid the writer does not
        // speak for.
        let ends_reported = self.fx.would_watch(pid) || self.fx.would_report_gone(pid);
        let holder = if ends_reported && countable {
            let holder = self.new_holder(index, Some(pid), Some(pid))?;
            if full(self.index.len()) {
                self.discard_holder(holder);
                return None;
            }
            self.index.insert((index, Some(pid)), holder);
            holder
        } else {
            let holder = match self.index.get(&(index, None)) {
                Some(&holder) => holder,
                None => {
                    let holder = self.new_holder(index, None, None)?;
                    if full(self.index.len()) {
                        self.discard_holder(holder);
                        return None;
                    }
                    self.index.insert((index, None), holder);
                    holder
                }
            };
            // Not over the holder of a process whose pid this writer uses.
            let taken = self.index.contains_key(&(index, Some(pid)));
            if !taken && !full(self.index.len()) {
                self.index.insert((index, Some(pid)), holder);
            }
            holder
        };
        // Not remembered if the pid has a process's holder here: the
        // shortcut would send that process's frames to this one.
        let shared = self
            .index
            .get(&(index, Some(pid)))
            .is_some_and(|&h| h != holder);
        self.conns[index].last = (!shared).then_some((pid, holder));
        Some(holder)
    }

    /// The live holder already resolved for `pid` on connection `index`;
    /// for a writer that does not speak for the process a holder is tied
    /// to, the connection's holder (if there is one) instead.
    fn known_holder(&mut self, index: usize, pid: i32) -> Option<usize> {
        let holder = match self.conns[index].last {
            Some((last, holder)) if last == pid => holder,
            _ => {
                let holder = *self.index.get(&(index, Some(pid)))?;
                self.conns[index].last = Some((pid, holder));
                holder
            }
        };
        if self.holders[holder].watching == Some(pid) && !self.fx.speaks(pid) {
            return self.index.get(&(index, None)).copied();
        }
        Some(holder)
    }

    fn new_holder(
        &mut self,
        conn: usize,
        key_pid: Option<i32>,
        watching: Option<i32>,
    ) -> Option<usize> {
        let id = self.slab.insert()?;
        let tied_at = self.next_tie();
        self.holders.push(HolderModel {
            conn,
            key_pid,
            watching,
            tied_at,
            state: HolderState::Live,
            id,
        });
        Some(self.holders.len() - 1)
    }

    /// The place of a holder tied to a pid now among those tied before.
    fn next_tie(&mut self) -> u64 {
        self.tied_so_far += 1;
        self.tied_so_far
    }

    fn discard_holder(&mut self, holder: usize) {
        self.slab.remove(self.holders[holder].id);
        self.holders[holder].state = HolderState::Gone;
    }

    /// A release is taken by the sender's own holder if that holds the name
    /// (for a writer that does not speak for the pid, the connection's
    /// holder is its own), else by the live holder on the connection that
    /// holds it with the lowest id, else by one the pid has on a connection
    /// closed for cause (not for such a writer); with none, it is a stray.
    fn expect_release(
        &mut self,
        index: usize,
        pid: i32,
        name: SegmentName,
        effects: &mut impl Iterator<Item = Effect>,
    ) {
        let id = self.conns[index].id;
        let taker = if self.names.contains_key(&name) {
            let own = self.known_holder(index, pid);
            let own = own.filter(|&h| self.regs.contains_key(&(name, h)));
            own.or_else(|| {
                self.regs_of(&name)
                    .map(|(h, _)| h)
                    .filter(|&h| {
                        let holder = &self.holders[h];
                        holder.conn == index && holder.state == HolderState::Live
                    })
                    .min_by_key(|&h| self.holders[h].id)
            })
            .or_else(|| self.detached_holder_holding(pid, name))
        } else {
            None
        };
        let Some(holder) = taker else {
            assert_eq!(
                effects.next(),
                Some(Effect::Ignored(Note::StrayRelease {
                    conn: id,
                    pid,
                    name
                })),
                "a release of {name} from pid {pid} on {id}, which nobody there holds"
            );
            return;
        };
        self.take_reg(name, holder);
    }

    fn expect_close(
        &mut self,
        index: usize,
        effect: Option<Effect>,
        reason: CloseReason,
    ) -> Closed {
        let id = self.conns[index].id;
        assert_eq!(effect, Some(Effect::Close(id, reason)), "closing {id}");
        self.close_for_cause(index);
        Closed::Yes
    }

    /// The manager closed connection `index`. Its holders live on while their
    /// processes do; the one standing for its unwatchable pids is tied to a
    /// process the driver names instead (the connecting one, else one that
    /// wrote on it), if there is one and the manager can count its pid, or
    /// ends.
    fn close_for_cause(&mut self, index: usize) {
        let mut ended = Vec::new();
        if let Some(&holder) = self.index.get(&(index, None)) {
            let watching = self.watching();
            let (id, peer) = (self.conns[index].id, self.conns[index].peer_pid);
            let tied = self
                .driver_tie(id, peer)
                .filter(|pid| watching.contains(pid) || watching.len() < self.capacity.conns);
            match tied {
                Some(pid) => {
                    self.holders[holder].watching = Some(pid);
                    self.holders[holder].tied_at = self.next_tie();
                }
                None => {
                    // Its unknown processes may live on and map its names.
                    self.mark_inherited(holder);
                    ended.push(holder);
                }
            }
        }
        self.conn_gone(index);
        self.end_holders(&ended);
        if self.live_conns() == 0 {
            self.idle_since = Some(self.now);
        }
    }

    /// `holder`'s names may be mapped by processes it stood for that live
    /// on: an orphan among them is unlinked only once nobody maps it.
    fn mark_inherited(&mut self, holder: usize) {
        let held: Vec<SegmentName> = self
            .regs
            .keys()
            .filter(|&&(_, h)| h == holder)
            .map(|&(name, _)| name)
            .collect();
        for name in held {
            if let Some(record) = self.names.get_mut(&name) {
                record.inherited = true;
            }
        }
    }

    /// The process the driver named when the manager asked it whom to tie
    /// `conn`'s untrusted holds to, which it must have asked next, and with
    /// `peer` (the connecting pid at a close, none when passing the tie on).
    fn driver_tie(&mut self, conn: ConnId, peer: Option<i32>) -> Option<i32> {
        assert!(
            !self.fx.ties.is_empty(),
            "the manager did not ask whom to tie {conn}'s untrusted holds to"
        );
        let tie = self.fx.ties.remove(0);
        assert_eq!(
            (tie.conn, tie.peer),
            (conn, peer),
            "whom to tie untrusted holds to: asked about {tie:?}"
        );
        tie.tied
    }

    fn conn_gone(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        conn.live = false;
        conn.partial.clear();
        conn.deadline = None;
        conn.last = None;
        self.index.retain(|&(c, _), _| c != index);
    }

    /// Holders end: what they hold becomes dead registrations as ticks
    /// convert it; those holding nothing leave the table at once.
    fn end_holders(&mut self, ended: &[usize]) {
        for &holder in ended {
            let names = self.regs.keys().filter(|&&(_, h)| h == holder).count();
            self.holders[holder].state = HolderState::Ending { names };
        }
        let mut done: Vec<usize> = (0..self.holders.len())
            .filter(|&h| self.holders[h].state == HolderState::Ending { names: 0 })
            .collect();
        done.sort_by_key(|&h| self.holders[h].id);
        for holder in done {
            self.discard_holder(holder);
        }
    }

    fn disconnect(&mut self, choice: u8) {
        let index = self.target(choice);
        let id = index.map_or(NEVER_ISSUED, |i| self.conns[i].id);
        self.manager.disconnect(id, self.timestamp(), &mut self.fx);
        let log = self.take_log();
        assert!(log.is_empty(), "disconnecting {id} did {log:?}");
        if let Some(index) = index.filter(|&i| self.conns[i].live) {
            self.client_gone(index);
        }
    }

    /// The client closed connection `index`: every holder on it ends.
    fn client_gone(&mut self, index: usize) {
        self.fx.disconnected(self.conns[index].id);
        let ended: Vec<usize> = (0..self.holders.len())
            .filter(|&h| {
                let holder = &self.holders[h];
                holder.conn == index && holder.state == HolderState::Live
            })
            .collect();
        self.conn_gone(index);
        self.end_holders(&ended);
        if self.live_conns() == 0 {
            self.idle_since = Some(self.now);
        }
    }

    fn evict(&mut self, choice: u8) {
        let index = self.target(choice);
        let id = index.map_or(NEVER_ISSUED, |i| self.conns[i].id);
        let reason = CloseReason::NotReadingReplies;
        self.manager
            .evict(id, reason, self.timestamp(), &mut self.fx);
        let log = self.take_log();
        match index.filter(|&i| self.conns[i].live) {
            Some(index) => {
                assert_eq!(log.len(), 1, "evicting {id} did {log:?}");
                self.expect_close(index, log.first().copied(), reason);
            }
            None => assert!(log.is_empty(), "evicting gone {id} did {log:?}"),
        }
    }

    fn journaled(&mut self, choice: u8, piece: &Piece) {
        let index = self.target(choice);
        if index.is_some_and(|i| self.conns[i].live && !self.conns[i].journal) {
            // The driver reads only the journals it took.
            return;
        }
        let Ok(frame) = <[u8; FRAME_LEN]>::try_from(piece.bytes()) else {
            return;
        };
        let id = index.map_or(NEVER_ISSUED, |i| self.conns[i].id);
        self.manager
            .receive_journaled(id, &frame, self.timestamp(), &mut self.fx);
        let log = self.take_log();
        let Some(index) = index.filter(|&i| self.conns[i].live) else {
            assert!(log.is_empty(), "effects for gone {id}'s journal: {log:?}");
            return;
        };
        let mut effects = log.into_iter();
        self.expect_frame(index, &frame, Answer::Silent, &mut effects);
        let rest: Vec<Effect> = effects.collect();
        assert!(rest.is_empty(), "journaled frame on {id} also did {rest:?}");
    }

    /// A watched process ended: its holders end, except a closed
    /// connection's holder for untrusted pids, which the manager ties to
    /// the next process the driver names for its connection, if there is
    /// one and the manager can count its pid (it has forgotten `pid`
    /// already). The manager goes through them the last tied first.
    fn pid_exited(&mut self, pid: i32) {
        self.fx.dead.insert(pid);
        self.manager.pid_exited(pid, self.timestamp(), &mut self.fx);
        let log = self.take_log();
        assert!(log.is_empty(), "pid {pid} exiting did {log:?}");
        let mut tied: Vec<usize> = (0..self.holders.len())
            .filter(|&h| {
                let holder = &self.holders[h];
                holder.state == HolderState::Live && holder.watching == Some(pid)
            })
            .collect();
        tied.sort_by_key(|&h| std::cmp::Reverse(self.holders[h].tied_at));
        let mut watching = self.watching();
        watching.remove(&pid);
        let mut ended = Vec::new();
        for holder in tied {
            let HolderModel { conn, key_pid, .. } = self.holders[holder];
            if key_pid.is_none() {
                let next = self.driver_tie(self.conns[conn].id, None).filter(|&next| {
                    next != pid
                        && (watching.contains(&next) || watching.len() < self.capacity.conns)
                });
                if let Some(next) = next {
                    watching.insert(next);
                    self.holders[holder].watching = Some(next);
                    self.holders[holder].tied_at = self.next_tie();
                    continue;
                }
            }
            ended.push(holder);
        }
        for &holder in &ended {
            let HolderModel { conn, key_pid, .. } = self.holders[holder];
            self.index.remove(&(conn, key_pid));
            if self.conns[conn].last.is_some_and(|(_, h)| h == holder) {
                self.conns[conn].last = None;
            }
            if self.conns[conn].live || key_pid.is_none() {
                self.mark_inherited(holder);
            }
        }
        self.end_holders(&ended);
    }

    fn adopt(&mut self, name: SegmentName) {
        if journal::is_reserved(&name) {
            // A sweep finds segments; the reserved names never are.
            return;
        }
        let state = self.manager.name_state(&name);
        let held = matches!(state, Some(NameState::Held { .. }));
        // Judged afresh at once unless on its way out or a chore about it
        // is out: then a look found absent before counts no more.
        let judged_afresh = !matches!(
            state,
            Some(NameState::Orphaned { .. } | NameState::Unlinking)
        ) && !self.fx.held.iter().any(|chore| chore_name(chore) == name);
        let expected = match self.names.get(&name) {
            Some(record) => !held && !record.adopted,
            None => self.names.len() < self.capacity.names,
        };
        let adopted = self.manager.adopt_orphan(name, self.timestamp());
        assert_eq!(adopted, expected, "adopting {name}");
        let log = self.take_log();
        assert!(log.is_empty(), "adopting {name} did {log:?}");
        if adopted {
            let record = self.names.entry(name).or_default();
            record.adopted = true;
            record.creator_counted = !record.creator_seen;
            if judged_afresh {
                record.absent_once = false;
            }
        }
    }

    fn tick(&mut self) -> Flow {
        let now = self.now;
        let wake_before = self.manager.next_wakeup();
        let status = self.manager.tick(self.timestamp(), &mut self.fx);
        let log = self.take_log();
        if wake_before.is_none_or(|wake| now < wake.as_millis()) {
            assert!(
                status == Status::Serving
                    && log.iter().all(|e| matches!(
                        e,
                        Effect::Ignored(_) | Effect::Untouchable(_) | Effect::InTransit { .. }
                    )),
                "tick at {now} ms, before the next wake-up {wake_before:?}, did {log:?} and {status:?}"
            );
        }

        // Stalled connections are closed first, then ended holders' holds
        // converted, then names looked at.
        let mut stalled: BTreeSet<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].live && self.conns[i].deadline.is_some_and(|d| d <= now))
            .collect();
        let mut effects = log.into_iter().peekable();
        while let Some(&Effect::Close(id, reason)) = effects.peek() {
            effects.next();
            let index = self.conns.iter().position(|c| c.id == id);
            let index = index
                .filter(|i| reason == CloseReason::StalledFrame && stalled.remove(i))
                .unwrap_or_else(|| {
                    panic!(
                        "tick at {now} ms closed {id} ({reason:?}), which has no deadline passed"
                    )
                });
            self.close_for_cause(index);
        }
        assert!(
            stalled.is_empty(),
            "tick at {now} ms left connections open past their deadline: {stalled:?}"
        );
        self.convert();

        let (mut chores, mut held_looks) = (0, 0);
        for effect in effects {
            let Effect::Chore(Chore::Observe(name)) = effect else {
                panic!("tick at {now} ms did {effect:?}");
            };
            assert!(
                self.names.contains_key(&name),
                "tick at {now} ms looks at {name}, which it does not know"
            );
            // A held name is looked at only by a patrol (or its second
            // look at one it found gone), never to be judged.
            if self.live_regs(&name) > 0 || self.ending_regs(&name) {
                held_looks += 1;
            } else {
                chores += 1;
            }
        }
        assert!(
            chores <= 2 * self.batch(),
            "tick at {now} ms asked for {chores} looks with a batch of {}",
            self.batch()
        );
        assert!(
            held_looks <= PATROL_BATCH + self.batch(),
            "tick at {now} ms looked at {held_looks} held names"
        );

        if self.live_conns() == 0 && self.closing_since.is_none() {
            let idle_since = self.idle_since.expect("idle without a start");
            if idle_since + self.config.shutdown_after.as_millis() as u64 <= now {
                self.closing_since = Some(now);
            }
        }
        if self.linger_over() {
            // The manager goes, and with it what processes it could no longer
            // hear from still held.
            let live: Vec<usize> = (0..self.holders.len())
                .filter(|&h| self.holders[h].state == HolderState::Live)
                .collect();
            self.end_holders(&live);
        }

        let finished = self.closing() && self.names.is_empty();
        match status {
            Status::Finished => {
                assert!(
                    finished,
                    "finished at {now} ms (closing since {:?}) knowing {:?}",
                    self.closing_since,
                    self.names.keys()
                );
                assert_eq!(self.manager.name_count(), 0, "finished still knowing names");
                Flow::Finished
            }
            Status::Serving => {
                assert!(
                    !finished,
                    "still serving at {now} ms, closing since {:?} with no names",
                    self.closing_since
                );
                Flow::Continue
            }
        }
    }

    /// One tick's conversion of ended holders' holds: `batch` names at most,
    /// holder by holder in id order.
    fn convert(&mut self) {
        let mut budget = self.batch();
        let mut ending: Vec<usize> = (0..self.holders.len())
            .filter(
                |&h| matches!(self.holders[h].state, HolderState::Ending { names } if names > 0),
            )
            .collect();
        ending.sort_by_key(|&h| self.holders[h].id);
        for holder in ending {
            if budget == 0 {
                break;
            }
            let HolderState::Ending { names } = self.holders[holder].state else {
                unreachable!("filtered above");
            };
            let taken = names.min(budget);
            budget -= taken;
            if taken == names {
                self.discard_holder(holder);
            } else {
                self.holders[holder].state = HolderState::Ending {
                    names: names - taken,
                };
            }
        }
    }

    fn perform_all(&mut self) {
        while !self.fx.held.is_empty() {
            self.perform(0, false);
        }
    }

    /// The driver carries out held chore `index`, or fails to.
    fn perform(&mut self, index: usize, fail: bool) {
        let chore = self.fx.held.remove(index);
        let name = chore_name(&chore);
        assert!(
            self.names.contains_key(&name),
            "{chore:?} was out while the manager forgot {name}"
        );
        let held = matches!(self.manager.name_state(&name), Some(NameState::Held { .. }));
        let now = self.timestamp();
        match chore {
            Chore::Observe(_) => {
                let look = (!fail).then(|| self.ns.look(&name));
                if fail {
                    self.manager.observed(&name, None, now, &mut self.fx);
                } else {
                    let _ = self.manager.perform(chore, &mut self.ns, now, &mut self.fx);
                }
                let log = self.take_log();
                self.expect_look(name, look, held, log);
            }
            Chore::MeasureUsage => unreachable!("chore_name refused it"),
            Chore::CheckMapped(_) => {
                let mapped = (!fail).then(|| self.ns.mapped.contains(&name));
                if fail {
                    self.manager.mapped(&name, None, now, &mut self.fx);
                } else {
                    let _ = self.manager.perform(chore, &mut self.ns, now, &mut self.fx);
                }
                let log = self.take_log();
                self.expect_mapped(name, mapped, held, log);
            }
            Chore::Unlink(_, reason) => {
                let outcome = if fail {
                    self.manager
                        .unlinked(&name, reason, None, now, &mut self.fx);
                    None
                } else {
                    let outcome = self.ns.would_unlink(&name);
                    let _ = self.manager.perform(chore, &mut self.ns, now, &mut self.fx);
                    outcome
                };
                let log = self.take_log();
                self.expect_unlinked(name, reason, outcome, held, log);
            }
        }
        let state = self.manager.name_state(&name);
        if let Some(record) = self.names.get_mut(&name) {
            match state {
                Some(NameState::Orphaned { .. }) => {
                    record.orphan_since.get_or_insert(self.now);
                }
                Some(NameState::Held { .. } | NameState::Released { .. }) => {
                    record.orphan_since = None;
                    record.retrying = false;
                }
                _ => {}
            }
        }
    }

    /// What a look at `name` must lead to.
    fn expect_look(
        &mut self,
        name: SegmentName,
        look: Option<Observed>,
        held: bool,
        log: Vec<Effect>,
    ) {
        // Only the look a walk asked for may unlink on its strength; the
        // record keeps the flag for `check_unlink` until the look is judged.
        let nobody_maps = self
            .names
            .get(&name)
            .is_some_and(|record| record.nobody_maps);
        self.expect_look_outcome(name, look, held, log);
        if let Some(record) = self.names.get_mut(&name)
            && nobody_maps
        {
            record.nobody_maps = false;
        }
    }

    fn expect_look_outcome(
        &mut self,
        name: SegmentName,
        look: Option<Observed>,
        held: bool,
        log: Vec<Effect>,
    ) {
        let expected = match look {
            // A held name found gone: reported, the second time in a row.
            Some(Observed::Absent) if held && log == [Effect::Vanished(name)] => {
                return;
            }
            // Registered again (or still counting ended holders' holds as
            // live): nothing to decide yet.
            _ if held => Vec::new(),
            // Past the linger, what cannot be looked at goes: its unlink
            // spares whatever is not a segment of ours.
            None if self.linger_over() => {
                let live = self.live_regs(&name);
                assert_eq!(live, 0, "unlink of {name} past the linger while held");
                vec![Effect::Chore(Chore::Unlink(name, UnlinkReason::Shutdown))]
            }
            None => Vec::new(),
            // Gone with dead registrations: believed on the second look a
            // second later (its sender may not have created it yet).
            Some(Observed::Absent)
                if self.judged_dead(&name) > 0
                    && !self.closing()
                    && self.names.get_mut(&name).is_some_and(|record| {
                        !std::mem::replace(&mut record.absent_once, true)
                    }) =>
            {
                Vec::new()
            }
            Some(Observed::Absent) => {
                self.forget(name);
                Vec::new()
            }
            Some(Observed::Foreign) => {
                self.forget(name);
                vec![Effect::Untouchable(name)]
            }
            Some(Observed::Segment { refcount }) => {
                if let Some(record) = self.names.get_mut(&name) {
                    record.absent_once = false;
                }
                return self.expect_judgement(name, refcount, log);
            }
        };
        assert_eq!(log, expected, "after looking at {name}: {look:?}");
    }

    /// What asking who maps `name` (`None`: the driver could not tell) must
    /// lead to: an unlink only if nobody does, a note if someone does, and
    /// nothing once it is held again or while shutting down.
    fn expect_mapped(
        &mut self,
        name: SegmentName,
        mapped: Option<bool>,
        held: bool,
        log: Vec<Effect>,
    ) {
        let allowed: &[Effect] = match mapped {
            _ if held || self.closing() => &[],
            // Looked at again: the refcount may have risen during the walk.
            Some(false) => &[Effect::Chore(Chore::Observe(name))],
            Some(true) => &[Effect::StillMapped(name)],
            None => &[],
        };
        assert!(
            log.is_empty() || log == allowed,
            "after asking who maps {name} ({mapped:?}, held: {held}): {log:?}"
        );
        if let (Some(record), [Effect::Chore(Chore::Observe(_))]) =
            (self.names.get_mut(&name), log.as_slice())
        {
            record.nobody_maps = true;
        }
    }

    /// A look found `name`'s segment with `refcount`: the refcount rule.
    fn expect_judgement(&mut self, name: SegmentName, refcount: i32, log: Vec<Effect>) {
        let record = self.names[&name];
        let dead = self.judged_dead(&name);
        let orphan = dead > 0 && i64::from(refcount) <= i64::from(dead);
        let unlink = |reason| Effect::Chore(Chore::Unlink(name, reason));
        let context = || format!("{name} looked at: refcount {refcount}, dead {dead}");
        if self.closing() {
            let expected = if orphan || refcount <= 0 || self.linger_over() {
                vec![unlink(UnlinkReason::Shutdown)]
            } else {
                Vec::new()
            };
            assert_eq!(log, expected, "{} while closing", context());
        } else if !orphan {
            let expected = if dead > 0 {
                vec![Effect::InTransit {
                    name,
                    refcount,
                    dead,
                }]
            } else {
                Vec::new()
            };
            assert_eq!(log, expected, "{}", context());
        } else {
            // An orphan: unlinked if its grace period is over (the manager
            // looked to confirm it), after asking who maps it if a fork may
            // have inherited it; else its grace period starts.
            let confirm = if record.inherited && !record.nobody_maps {
                Effect::Chore(Chore::CheckMapped(name))
            } else {
                unlink(UnlinkReason::Orphaned)
            };
            assert!(
                log.is_empty() || log == [confirm],
                "{} (inherited: {}): {log:?}",
                context(),
                record.inherited
            );
        }
        for effect in log {
            if let Effect::Chore(Chore::Unlink(name, reason)) = effect {
                self.check_unlink(name, reason);
            }
        }
    }

    /// The manager asked to unlink `name`: may it?
    fn check_unlink(&self, name: SegmentName, reason: UnlinkReason) {
        let now = self.now;
        let record = self.names[&name];
        let live = self.live_regs(&name);
        let holders: Vec<&HolderModel> = self
            .regs_of(&name)
            .map(|(h, _)| &self.holders[h])
            .filter(|h| h.state == HolderState::Live)
            .collect();
        assert_eq!(
            live, 0,
            "unlink of {name} ({reason:?}) at {now} ms while live holders hold it: {holders:?}"
        );
        let dead = self.judged_dead(&name);
        match self.ns.objects.get(&name) {
            Some(&Object::Segment(refcount)) => assert!(
                self.linger_over() || i64::from(refcount) <= i64::from(dead),
                "unlink of {name} ({reason:?}) at {now} ms in transit: refcount {refcount}, \
                 {dead} registrations of ended holders (adopted: {})",
                record.adopted
            ),
            other => panic!("unlink of {name} ({reason:?}), which is {other:?}"),
        }
        match reason {
            UnlinkReason::Orphaned => {
                assert!(
                    !self.closing(),
                    "unlink of {name} as an orphan while closing"
                );
                let grace = self
                    .config
                    .reap_grace
                    .unwrap_or_else(|| panic!("reaped {name} at {now} ms with reaping off"));
                assert!(dead > 0, "reaped {name}, which no ended holder held");
                assert!(
                    !record.inherited || record.nobody_maps,
                    "reaped {name} at {now} ms without a walk finding nobody mapping it"
                );
                assert!(
                    record.retrying
                        || record
                            .orphan_since
                            .is_some_and(|since| since + grace.as_millis() as u64 <= now),
                    "reaped {name} at {now} ms, an orphan since {:?} ms with a grace of {grace:?}",
                    record.orphan_since
                );
            }
            UnlinkReason::Shutdown => assert!(
                self.closing(),
                "shutdown unlink of {name} at {now} ms while serving"
            ),
        }
    }

    /// What an unlink's outcome must lead to.
    fn expect_unlinked(
        &mut self,
        name: SegmentName,
        reason: UnlinkReason,
        outcome: Option<Unlinked>,
        held: bool,
        log: Vec<Effect>,
    ) {
        let expected = match outcome {
            Some(Unlinked::Foreign) => vec![Effect::Untouchable(name)],
            _ => Vec::new(),
        };
        assert_eq!(log, expected, "after unlinking {name}: {outcome:?}");
        if held {
            // Registered again while the unlink was out: its holders go on.
            return;
        }
        match outcome {
            Some(_) => self.forget(name),
            None if self.linger_over() => self.forget(name),
            None => {
                // Tried again (as an orphan), or judged afresh.
                let state = self.manager.name_state(&name);
                assert!(
                    matches!(
                        state,
                        Some(NameState::Orphaned { reap_at: Some(_) } | NameState::Released { .. })
                    ),
                    "{name} after a failed unlink: {state:?}, not scheduled for another try"
                );
                // An orphan's grace is over: its retry may come at once.
                if let Some(record) = self.names.get_mut(&name) {
                    record.retrying = reason == UnlinkReason::Orphaned;
                }
            }
        }
    }

    fn forget(&mut self, name: SegmentName) {
        assert_eq!(
            self.live_regs(&name),
            0,
            "{name} forgotten while live holders hold it"
        );
        self.names.remove(&name);
        self.regs.retain(|&(n, _), _| n != name);
    }

    /// After every event: the manager's connections, holders, watched pids,
    /// names and their states are the model's, and it will wake up in time.
    fn check_state(&self) {
        let now = self.now;
        assert_eq!(
            self.manager.connection_count(),
            self.live_conns(),
            "live connections"
        );
        for conn in &self.conns {
            assert_eq!(
                self.manager.peer(conn.id).is_some(),
                conn.live,
                "is {} live",
                conn.id
            );
        }
        assert_eq!(
            self.manager.holder_count(),
            self.live_holders(),
            "live holders at {now} ms"
        );
        assert_eq!(self.manager.is_closing(), self.closing(), "closing");
        assert_eq!(self.fx.watched, self.watching(), "watched pids");
        assert!(
            self.fx.ties.is_empty(),
            "the manager asked whom to tie untrusted holds to unasked for: {:?}",
            self.fx.ties
        );
        assert_eq!(
            self.manager.name_count(),
            self.names.len(),
            "known names, model: {:?}",
            self.names.keys()
        );
        let mut out = BTreeSet::new();
        for chore in &self.fx.held {
            let name = chore_name(chore);
            assert!(
                self.names.contains_key(&name),
                "{chore:?} for an unknown name"
            );
            assert!(out.insert(name), "two chores about {name} out at once");
        }

        let grace = self.config.reap_grace.map(|g| g.as_millis() as u64);
        let converting = self.converting();
        let mut deadline: Option<u64> = None;
        let mut due = |at: u64| deadline = Some(deadline.map_or(at, |d| d.min(at)));
        if converting {
            due(now);
        }
        let mut waits = false;
        let reserved = [journal::SETUP, journal::DOORBELL];
        for name in name_pool::all()
            .chain(reserved)
            .chain(self.names.keys().copied())
        {
            let state = self.manager.name_state(&name);
            let Some(record) = self.names.get(&name) else {
                assert_eq!(state, None, "{name} should be unknown");
                continue;
            };
            let live = self.live_regs(&name);
            let dead = self.dead_regs(&name);
            let context = || format!("{name} at {now} ms: {live} live, {dead} dead, {record:?}");
            match state {
                Some(NameState::Held { registrations }) => {
                    assert!(
                        live <= registrations && registrations <= live + dead,
                        "{}: held with {registrations} registrations",
                        context()
                    );
                    assert!(
                        registrations == live || converting,
                        "{}: ended holders' registrations count as live, with nothing left to convert",
                        context()
                    );
                }
                Some(NameState::Released { dead: reported }) => {
                    assert_eq!(live, 0, "{}: released", context());
                    let dead = self.judged_dead(&name);
                    assert_eq!(reported, dead, "{}: dead registrations", context());
                    waits |= !out.contains(&name);
                }
                Some(NameState::Orphaned { reap_at }) => {
                    assert_eq!(live, 0, "{}: orphaned", context());
                    let since = record
                        .orphan_since
                        .unwrap_or_else(|| panic!("{}: an orphan since when?", context()));
                    match (reap_at, grace) {
                        // A look at it is out; its outcome decides.
                        _ if out.contains(&name) => {}
                        (None, None) => {}
                        (None, Some(_)) => panic!("{}: an orphan never reaped", context()),
                        (Some(at), _) => {
                            let at = at.as_millis();
                            if !record.retrying {
                                let grace = grace.unwrap_or_else(|| {
                                    panic!("{}: reaped at {at} ms with reaping off", context())
                                });
                                assert!(
                                    at + TICK_MS > since + grace,
                                    "{}: due at {at} ms, before its grace of {grace} ms",
                                    context()
                                );
                            }
                            // Being confirmed reports the clock: nothing
                            // to wake for.
                            if at != now {
                                due(at);
                            }
                        }
                    }
                }
                Some(NameState::Unlinking) => {
                    assert_eq!(live, 0, "{}: being unlinked", context());
                    assert!(
                        self.fx
                            .held
                            .iter()
                            .any(|c| matches!(c, Chore::Unlink(n, _) if *n == name)),
                        "{}: being unlinked with no unlink out",
                        context()
                    );
                }
                None => panic!("{}: unknown to the manager", context()),
            }
        }
        for conn in self.conns.iter().filter(|c| c.live) {
            if let Some(at) = conn.deadline {
                due(at);
            }
        }
        if self.live_conns() == 0 && !self.closing() {
            let since = self.idle_since.expect("idle without a start");
            due(since + self.config.shutdown_after.as_millis() as u64);
        }
        if self.closing() {
            due(now + LINGER_LOOK_MS);
        }
        let wake = self.manager.next_wakeup().map(Timestamp::as_millis);
        if let Some(deadline) = deadline {
            // What fell due already is met by waking at once.
            assert!(
                wake.is_some_and(|wake| wake <= deadline.max(now)),
                "next wake-up {wake:?} is later than a deadline at {deadline} ms (now {now} ms)"
            );
        }
        assert!(
            !waits || wake.is_some(),
            "released names wait for a look, and the manager asks for no wake-up"
        );
    }

    /// After the script: the driver catches up, a manager kept serving
    /// settles, and one left alone finishes in time.
    fn wind_down(&mut self) {
        self.defer = false;
        self.ns.failing.clear();
        // The forks that mapped orphans exit: every orphan can go.
        self.ns.mapped.clear();
        self.perform_all();
        self.check_state();
        if self.keeper_connected() {
            let until = self.now + SETTLE_MS;
            if self.tick_until(Some(until)) == Flow::Finished {
                return;
            }
            self.check_settled();
        }
        for index in 0..self.conns.len() {
            if self.conns[index].live {
                self.manager
                    .disconnect(self.conns[index].id, self.timestamp(), &mut self.fx);
                let log = self.take_log();
                assert!(log.is_empty(), "disconnecting did {log:?}");
                self.client_gone(index);
            }
        }
        self.check_state();
        let idle_since = self.idle_since.expect("idle without a start");
        let start = self
            .closing_since
            .unwrap_or(idle_since + self.config.shutdown_after.as_millis() as u64);
        let deadline = start + self.config.linger.as_millis() as u64 + FINISH_SLACK_MS;
        assert_eq!(self.tick_until(None), Flow::Finished);
        assert!(
            self.now <= deadline,
            "finished at {} ms, later than {deadline} ms (closing from {start} ms)",
            self.now
        );
    }

    /// A client that stays connected (and said something, so it is not
    /// closed for silence), so that the manager keeps serving.
    fn keeper_connected(&mut self) -> bool {
        let Some(index) = self.connect(PeerUid::Owner, 0) else {
            return false;
        };
        let doorbell = Frame::register(0, journal::DOORBELL).encode();
        self.conns[index].unsent.extend_from_slice(&doorbell);
        self.deliver(index, usize::MAX);
        self.check_state();
        true
    }

    /// Ticks whenever the manager asks until `until` (or, with `None`, until
    /// it finishes), carrying out every chore at once.
    fn tick_until(&mut self, until: Option<u64>) -> Flow {
        for _ in 0..MAX_WIND_DOWN_TICKS {
            let wake = self.manager.next_wakeup().map(Timestamp::as_millis);
            let last = match (wake, until) {
                (Some(wake), Some(until)) if wake > until => {
                    self.now = self.now.max(until);
                    true
                }
                (None, Some(until)) => {
                    self.now = self.now.max(until);
                    true
                }
                (None, None) => panic!(
                    "a manager without clients asks for no wake-up at {} ms, so it never finishes",
                    self.now
                ),
                (Some(wake), _) => {
                    self.now = self.now.max(wake);
                    false
                }
            };
            if self.tick() == Flow::Finished {
                return Flow::Finished;
            }
            self.perform_all();
            self.check_state();
            if last {
                return Flow::Continue;
            }
        }
        panic!(
            "the manager asked for {MAX_WIND_DOWN_TICKS} ticks by {} ms without settling",
            self.now
        );
    }

    /// After ten minutes of serving: every name no live holder holds is a
    /// segment that still exists and is not an orphan, or (reaping off) an
    /// orphan kept for shutdown.
    fn check_settled(&self) {
        for name in self.names.keys() {
            if self.live_regs(name) > 0 {
                continue;
            }
            let orphaned = matches!(
                self.manager.name_state(name),
                Some(NameState::Orphaned { .. })
            );
            if orphaned && self.config.reap_grace.is_none() {
                // Kept, without looking, until shutdown.
                continue;
            }
            let dead = self.judged_dead(name);
            match self.ns.objects.get(name) {
                None => panic!(
                    "{name} is gone, and the manager still knows it after {SETTLE_MS} ms: {:?}",
                    self.manager.name_state(name)
                ),
                Some(Object::Foreign) => panic!(
                    "{name} is not ours, and the manager still knows it after {SETTLE_MS} ms"
                ),
                Some(&Object::Segment(refcount)) => {
                    let orphan = dead > 0 && i64::from(refcount) <= i64::from(dead);
                    assert!(
                        !orphan || self.config.reap_grace.is_none(),
                        "orphan {name} (refcount {refcount}, {dead} dead registrations) outlived \
                         {SETTLE_MS} ms: {:?}",
                        self.manager.name_state(name)
                    );
                }
            }
        }
    }
}
