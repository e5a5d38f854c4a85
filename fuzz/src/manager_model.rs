//! Runs a [`ManagerScript`] against a real [`Manager`] and a reference model
//! of what it must do, panicking at the first difference.
//!
//! The model is deliberately simpler than the manager: it keeps every hold in
//! one map and recomputes what it needs instead of keeping counters, and it
//! does not schedule anything. It predicts each effect the manager asks of its
//! driver, in order, and after every event compares what the manager reports
//! (connections, names and each name's state) with what it expects.
//!
//! The invariants, each checked where it can first be seen:
//! - every valid registration on a live connection is answered exactly once,
//!   in order: `OK`, or `NO` exactly when a table is full;
//! - a malformed frame, a foreign name or a release of a name not held closes
//!   that connection, and nothing after it on the connection is processed;
//! - nothing is sent to, or closed on, a connection that is already closed;
//! - a name is unlinked only if it was registered and is still known (not yet
//!   unlinked or forgotten), never while a live connection holds it, as an
//!   orphan only once its grace period is over, and at shutdown only when no
//!   client is connected;
//! - a name is forgotten only after the namespace said it is gone;
//! - stalled connections and orphans are dealt with by the first tick at or
//!   after their deadline, and [`Manager::next_wakeup`] is never later than it;
//! - a tick before [`Manager::next_wakeup`] does nothing;
//! - after `tick` returns [`Status::Finished`], the manager knows no names.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use libshm_core::ack::{ACK, REFUSAL};
use libshm_core::frame::{FRAME_LEN, Frame, FrameKind};
use libshm_core::journal;
use libshm_core::manager::{
    CloseReason, ConnId, ConnectError, Effects, Manager, ManagerConfig, NameState, Peer, Status,
    UnlinkReason,
};
use libshm_core::name::{NamePrefix, SegmentName};
use libshm_core::storage::{Fixed, Growable, Storage};
use libshm_core::time::Timestamp;

use crate::manager_script::{Event, ManagerScript, OWNER_UID, PeerUid, Setup, StorageChoice};
use crate::name_pool;

/// A connection id the manager never hands out (it counts up from 0).
const NEVER_ISSUED: ConnId = ConnId(u64::MAX);

/// How much later than its grace period an orphan may be scheduled
/// (deadlines are rounded up so that nearby ones share a wake-up).
const REAP_ROUNDING_SLACK_MS: u64 = 1_000;

/// Runs `script`, panicking on the first broken invariant.
pub fn run_manager_script(script: &ManagerScript) {
    match script.setup.storage {
        StorageChoice::Small => {
            Harness::<Fixed<4, 2>>::new(&script.setup, Capacity::fixed(4, 2)).run(&script.events)
        }
        StorageChoice::Medium => {
            Harness::<Fixed<8, 4>>::new(&script.setup, Capacity::fixed(8, 4)).run(&script.events)
        }
        StorageChoice::Growable => {
            Harness::<Growable>::new(&script.setup, Capacity::UNBOUNDED).run(&script.events)
        }
    }
}

/// What the storage can hold. `Fixed<N, C>` keeps up to `N` names, `N` holds
/// and `C` connections.
#[derive(Clone, Copy, Debug)]
struct Capacity {
    names: usize,
    holds: usize,
    conns: usize,
}

impl Capacity {
    const UNBOUNDED: Self = Self {
        names: usize::MAX,
        holds: usize::MAX,
        conns: usize::MAX,
    };

    fn fixed(names: usize, conns: usize) -> Self {
        Self {
            names,
            holds: names,
            conns,
        }
    }
}

/// One thing the manager asked of its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Reply(ConnId, [u8; 2]),
    Close(ConnId, CloseReason),
    Unlink(SegmentName, UnlinkReason),
    Exists(SegmentName, bool),
}

/// The driver: records effects and plays the shared-memory namespace.
#[derive(Default)]
struct Recorder {
    log: Vec<Effect>,
    namespace: BTreeSet<SegmentName>,
}

impl Effects for Recorder {
    fn reply(&mut self, conn: ConnId, reply: [u8; 2]) {
        self.log.push(Effect::Reply(conn, reply));
    }
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        self.log.push(Effect::Close(conn, reason));
    }
    fn unlink(&mut self, name: &SegmentName, reason: UnlinkReason) {
        self.log.push(Effect::Unlink(*name, reason));
        self.namespace.remove(name);
    }
    fn exists(&mut self, name: &SegmentName) -> bool {
        let exists = self.namespace.contains(name);
        self.log.push(Effect::Exists(*name, exists));
        exists
    }
}

/// The model of one connection the manager accepted.
struct ConnModel {
    id: ConnId,
    live: bool,
    /// Written by the client, not yet read by the manager.
    unsent: Vec<u8>,
    /// Read by the manager, not yet a whole frame.
    partial: Vec<u8>,
    /// When `partial` became non-empty.
    partial_since: Option<u64>,
}

/// The model of one name the manager knows.
#[derive(Clone, Copy, Debug, Default)]
struct NameModel {
    /// A connection ended while holding it.
    died_holding: bool,
    /// When its last live holder went away, if it has none.
    orphan_since: Option<u64>,
}

/// Where a connection byte points.
enum Target {
    Conn(usize),
    NeverIssued,
}

enum Flow {
    Continue,
    Finished,
}

struct Harness<S: Storage> {
    manager: Manager<S>,
    config: ManagerConfig,
    capacity: Capacity,
    fx: Recorder,
    now: u64,
    conns: Vec<ConnModel>,
    /// Exactly the names the manager should know.
    names: BTreeMap<SegmentName, NameModel>,
    /// (index into `conns`, name) -> registrations not yet released.
    holds: BTreeMap<(usize, SegmentName), u32>,
    /// Since when no connection has been live.
    idle_since: Option<u64>,
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

impl<S: Storage> Harness<S> {
    fn new(setup: &Setup, capacity: Capacity) -> Self {
        let config = ManagerConfig {
            shutdown_after: millis(setup.shutdown_after_ms),
            reap_grace: setup.reap_grace_ms.map(millis),
            frame_timeout: setup.frame_timeout_ms.map(millis),
            name_prefix: setup.torch_prefix_only.then(NamePrefix::torch),
            owner_uid: setup.owner_uid_only.then_some(OWNER_UID),
            max_connections: setup.max_connections.unwrap_or(usize::MAX),
            max_names: setup.max_names.unwrap_or(usize::MAX),
        };
        Self {
            manager: Manager::new(config, Timestamp::ZERO),
            config,
            capacity,
            fx: Recorder::default(),
            now: 0,
            conns: Vec::new(),
            names: BTreeMap::new(),
            holds: BTreeMap::new(),
            idle_since: Some(0),
        }
    }

    fn run(mut self, events: &[Event]) {
        for event in events {
            if let Flow::Finished = self.step(event) {
                return;
            }
            self.check_state();
        }
    }

    fn step(&mut self, event: &Event) -> Flow {
        match event {
            Event::Connect { uid, pid } => self.connect(*uid, *pid),
            Event::Send {
                conn,
                piece,
                hold_back,
            } => {
                let bytes = piece.bytes();
                match self.target(*conn) {
                    Target::NeverIssued => self.receive_on_never_issued(&bytes),
                    Target::Conn(index) => {
                        self.conns[index].unsent.extend_from_slice(&bytes);
                        if !hold_back {
                            self.deliver(index, usize::MAX);
                        }
                    }
                }
            }
            Event::Deliver { conn, max_bytes } => {
                if let Target::Conn(index) = self.target(*conn) {
                    let max = if *max_bytes == 0 {
                        usize::MAX
                    } else {
                        usize::from(*max_bytes)
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
            Event::SegmentCreated { name } => {
                self.fx.namespace.insert(*name);
            }
            Event::SegmentUnlinked { name } => {
                self.fx.namespace.remove(name);
            }
        }
        Flow::Continue
    }

    fn timestamp(&self) -> Timestamp {
        Timestamp::from_millis(self.now)
    }

    fn target(&self, choice: u8) -> Target {
        let index = usize::from(choice) % (self.conns.len() + 1);
        if index < self.conns.len() {
            Target::Conn(index)
        } else {
            Target::NeverIssued
        }
    }

    fn live_count(&self) -> usize {
        self.conns.iter().filter(|c| c.live).count()
    }

    /// Live connections holding `name` (dead ones' holds are dropped).
    fn holders(&self, name: &SegmentName) -> u32 {
        self.holds.keys().filter(|(_, held)| held == name).count() as u32
    }

    fn take_log(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.fx.log)
    }

    fn connect(&mut self, uid: PeerUid, pid: u8) {
        let uid = match uid {
            PeerUid::Owner => Some(OWNER_UID),
            PeerUid::Foreign => Some(0),
            PeerUid::Unknown => None,
        };
        let peer = Peer {
            pid: Some(i32::from(pid)),
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
        } else if self.live_count() >= limit {
            assert_eq!(
                result,
                Err(ConnectError::TooManyConnections),
                "connection {} of {limit}",
                self.live_count() + 1
            );
        } else {
            let id =
                result.unwrap_or_else(|err| panic!("connection refused below the limit: {err}"));
            assert!(
                self.conns.iter().all(|c| c.id < id) && id != NEVER_ISSUED,
                "connection id {id} reused or out of order"
            );
            assert_eq!(self.manager.peer(id), Some(peer));
            self.conns.push(ConnModel {
                id,
                live: true,
                unsent: Vec::new(),
                partial: Vec::new(),
                partial_since: None,
            });
            self.idle_since = None;
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

    /// The manager reads up to `max` unsent bytes of connection `index`.
    fn deliver(&mut self, index: usize, max: usize) {
        let conn = &mut self.conns[index];
        let take = max.min(conn.unsent.len());
        let chunk: Vec<u8> = conn.unsent.drain(..take).collect();
        let id = conn.id;
        self.manager
            .receive(id, &chunk, self.timestamp(), &mut self.fx);
        let log = self.take_log();
        if !self.conns[index].live {
            assert!(
                log.is_empty(),
                "effects for closed connection {id}: {log:?}"
            );
            return;
        }

        let conn = &mut self.conns[index];
        let had_partial = !conn.partial.is_empty();
        let mut stream = std::mem::take(&mut conn.partial);
        stream.extend_from_slice(&chunk);
        let whole_frames = stream.len() / FRAME_LEN;

        let mut effects = log.into_iter();
        for frame in stream.chunks_exact(FRAME_LEN) {
            if self.expect_frame(index, frame, &mut effects) == Closed::Yes {
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

        let conn = &mut self.conns[index];
        let leftover = &stream[whole_frames * FRAME_LEN..];
        conn.partial_since = if leftover.is_empty() {
            None
        } else if whole_frames == 0 && had_partial {
            conn.partial_since
        } else {
            Some(self.now)
        };
        conn.partial = leftover.to_vec();
    }

    /// Checks the effects of one whole frame read on live connection `index`.
    fn expect_frame(
        &mut self,
        index: usize,
        bytes: &[u8],
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
            // Journal offers are declined (this driver has no journals), the
            // doorbell is answered, releases of either are ignored, and none
            // of it enters the tables.
            if frame.kind == FrameKind::Register {
                let answer = if name == journal::SETUP { REFUSAL } else { ACK };
                assert_eq!(
                    effects.next(),
                    Some(Effect::Reply(id, answer)),
                    "answer to {name} on {id}"
                );
            }
            return Closed::No;
        }
        match frame.kind {
            FrameKind::Register => {
                if let Some(prefix) = self.config.name_prefix
                    && !name.has_prefix(&prefix)
                {
                    return self.expect_close(
                        index,
                        effects.next(),
                        CloseReason::ForeignName(name),
                    );
                }
                let answer = self.predict_registration(index, &name);
                let effect = effects.next();
                assert_eq!(
                    effect,
                    Some(Effect::Reply(id, answer)),
                    "answer to registering {name} on {id}"
                );
                if answer == ACK {
                    let count = self.holds.entry((index, name)).or_insert(0);
                    *count += 1;
                    if *count == 1 {
                        self.names.entry(name).or_default().orphan_since = None;
                    }
                }
                Closed::No
            }
            FrameKind::Release => {
                let Some(count) = self.holds.get_mut(&(index, name)) else {
                    return self.expect_close(
                        index,
                        effects.next(),
                        CloseReason::UnknownRelease(name),
                    );
                };
                *count -= 1;
                if *count > 0 {
                    return Closed::No;
                }
                self.holds.remove(&(index, name));
                if self.holders(&name) > 0 {
                    return Closed::No;
                }
                // The last live holder let go. Whether the segment still
                // exists is asked later, in a tick's sweep, never here; a name
                // some holder died holding becomes an orphan now.
                let record = self
                    .names
                    .get_mut(&name)
                    .unwrap_or_else(|| panic!("{name} held but unknown"));
                if record.died_holding {
                    record.orphan_since = Some(self.now);
                }
                Closed::No
            }
        }
    }

    /// `OK`, or `NO` exactly when the name or hold table is full.
    fn predict_registration(&self, index: usize, name: &SegmentName) -> [u8; 2] {
        if self.holds.contains_key(&(index, *name)) {
            return ACK;
        }
        let names_limit = self.config.max_names.min(self.capacity.names);
        let is_new_name = !self.names.contains_key(name);
        if (is_new_name && self.names.len() >= names_limit)
            || self.holds.len() >= self.capacity.holds
        {
            return REFUSAL;
        }
        ACK
    }

    fn expect_close(
        &mut self,
        index: usize,
        effect: Option<Effect>,
        reason: CloseReason,
    ) -> Closed {
        let id = self.conns[index].id;
        assert_eq!(effect, Some(Effect::Close(id, reason)), "closing {id}");
        self.end_connection(index);
        Closed::Yes
    }

    /// Connection `index` ended (closed by the manager or by the client):
    /// what it held is orphaned.
    fn end_connection(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        conn.live = false;
        conn.partial.clear();
        conn.partial_since = None;
        let held: Vec<SegmentName> = self
            .holds
            .keys()
            .filter(|(i, _)| *i == index)
            .map(|(_, name)| *name)
            .collect();
        for name in held {
            self.holds.remove(&(index, name));
            let holders = self.holders(&name);
            let record = self
                .names
                .get_mut(&name)
                .unwrap_or_else(|| panic!("{name} held but unknown"));
            record.died_holding = true;
            if holders == 0 {
                record.orphan_since = Some(self.now);
            }
        }
        if self.live_count() == 0 {
            self.idle_since = Some(self.now);
        }
    }

    fn disconnect(&mut self, choice: u8) {
        let (id, index) = match self.target(choice) {
            Target::Conn(index) => (self.conns[index].id, Some(index)),
            Target::NeverIssued => (NEVER_ISSUED, None),
        };
        self.manager.disconnect(id, self.timestamp());
        if let Some(index) = index.filter(|&i| self.conns[i].live) {
            self.end_connection(index);
        }
    }

    fn tick(&mut self) -> Flow {
        let now = self.now;
        let wake_before = self.manager.next_wakeup();
        let status = self.manager.tick(self.timestamp(), &mut self.fx);
        let log = self.take_log();
        if wake_before.is_none_or(|wake| now < wake.as_millis()) {
            assert!(
                log.is_empty() && status == Status::Serving,
                "tick at {now} ms, before the next wake-up {wake_before:?}, did {log:?} and {status:?}"
            );
        }

        let mut stalled: BTreeSet<usize> = match self.config.frame_timeout {
            Some(timeout) => (0..self.conns.len())
                .filter(|&i| {
                    let conn = &self.conns[i];
                    conn.live
                        && conn
                            .partial_since
                            .is_some_and(|since| since + timeout.as_millis() as u64 <= now)
                })
                .collect(),
            None => BTreeSet::new(),
        };
        for effect in log {
            match effect {
                Effect::Close(id, CloseReason::StalledFrame) => {
                    let index = self.conns.iter().position(|c| c.id == id);
                    let index = index.filter(|i| stalled.remove(i)).unwrap_or_else(|| {
                        panic!("tick at {now} ms closed {id}, which has no frame stalled past the timeout")
                    });
                    self.end_connection(index);
                }
                Effect::Unlink(name, reason) => self.expect_unlink(name, reason),
                Effect::Exists(name, exists) => self.expect_probe(name, exists),
                other => panic!("tick at {now} ms did {other:?}"),
            }
        }
        assert!(
            stalled.is_empty(),
            "tick at {now} ms left stalled connections open: {stalled:?}"
        );

        let idle_over = self.idle_since.is_some_and(|since| {
            self.live_count() == 0 && since + self.config.shutdown_after.as_millis() as u64 <= now
        });
        match status {
            Status::Finished => {
                assert!(
                    idle_over,
                    "finished at {now} ms without being idle long enough"
                );
                assert!(
                    self.names.is_empty(),
                    "finished without unlinking {:?}",
                    self.names.keys()
                );
                assert_eq!(self.manager.name_count(), 0, "finished still knowing names");
                Flow::Finished
            }
            Status::Serving => {
                assert!(
                    !idle_over,
                    "still serving at {now} ms after being idle since {:?}",
                    self.idle_since
                );
                for name in self.names.keys() {
                    if let Some(NameState::Orphaned { reap_at: Some(at) }) =
                        self.manager.name_state(name)
                    {
                        assert!(
                            at.as_millis() > now,
                            "orphan {name} due at {at:?} outlived the tick at {now} ms"
                        );
                    }
                }
                Flow::Continue
            }
        }
    }

    fn expect_unlink(&mut self, name: SegmentName, reason: UnlinkReason) {
        let now = self.now;
        let Some(record) = self.names.get(&name).copied() else {
            panic!(
                "unlinked {name} ({reason:?}), which is not registered, or was already unlinked or forgotten"
            );
        };
        assert_eq!(
            self.holders(&name),
            0,
            "unlinked {name} ({reason:?}) while a live connection holds it"
        );
        match reason {
            UnlinkReason::Orphaned => {
                assert!(
                    record.died_holding,
                    "reaped {name}, which was released properly"
                );
                let grace = self
                    .config
                    .reap_grace
                    .unwrap_or_else(|| panic!("reaped {name} with reaping off"));
                let since = record
                    .orphan_since
                    .unwrap_or_else(|| panic!("reaped {name}, which is not orphaned"));
                assert!(
                    since + grace.as_millis() as u64 <= now,
                    "reaped {name} at {now} ms, orphaned at {since} ms"
                );
            }
            UnlinkReason::Shutdown => {
                assert_eq!(
                    self.live_count(),
                    0,
                    "shutdown unlink of {name} with clients connected"
                );
            }
        }
        self.names.remove(&name);
    }

    fn expect_probe(&mut self, name: SegmentName, exists: bool) {
        let Some(record) = self.names.get(&name) else {
            panic!("asked whether {name} exists, which it does not know");
        };
        assert!(
            self.holders(&name) == 0 && !record.died_holding,
            "probed {name}, which is held or orphaned, not released"
        );
        if !exists {
            self.names.remove(&name);
        }
    }

    /// After every event: the manager's connections, names and their states
    /// are the model's, and it will wake up in time for every deadline.
    fn check_state(&self) {
        assert_eq!(
            self.manager.connection_count(),
            self.live_count(),
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
            self.manager.name_count(),
            self.names.len(),
            "known names, model: {:?}",
            self.names.keys()
        );

        let now = self.now;
        let grace = self.config.reap_grace.map(|grace| grace.as_millis() as u64);
        let mut deadline: Option<u64> = None;
        let mut due = |at: u64| deadline = Some(deadline.map_or(at, |d| d.min(at)));

        for name in name_pool::all().chain(self.names.keys().copied()) {
            let state = self.manager.name_state(&name);
            let Some(record) = self.names.get(&name) else {
                assert_eq!(state, None, "{name} should be unknown");
                continue;
            };
            let holders = self.holders(&name);
            match state {
                Some(NameState::Held { holders: reported }) if holders > 0 => {
                    assert_eq!(reported, holders, "holders of {name}");
                }
                Some(NameState::Released) if holders == 0 && !record.died_holding => {}
                Some(NameState::Orphaned { reap_at }) if holders == 0 && record.died_holding => {
                    let since = record
                        .orphan_since
                        .unwrap_or_else(|| panic!("orphan {name} has no start"));
                    match (reap_at, grace) {
                        (None, None) => {}
                        (Some(at), Some(grace)) => {
                            let at = at.as_millis();
                            assert!(
                                (since + grace..=since + grace + REAP_ROUNDING_SLACK_MS)
                                    .contains(&at),
                                "orphan {name} since {since} ms with grace {grace} ms is due at {at} ms"
                            );
                            due(at);
                        }
                        other => panic!("orphan {name}: reap_at and grace disagree: {other:?}"),
                    }
                }
                other => panic!(
                    "{name} is {other:?} at {now} ms; model: {holders} holders, died holding: {}",
                    record.died_holding
                ),
            }
        }
        if let Some(timeout) = self.config.frame_timeout {
            for conn in self.conns.iter().filter(|c| c.live) {
                if let Some(since) = conn.partial_since {
                    due(since + timeout.as_millis() as u64);
                }
            }
        }
        if let Some(since) = self.idle_since.filter(|_| self.live_count() == 0) {
            due(since + self.config.shutdown_after.as_millis() as u64);
        }
        if let Some(deadline) = deadline {
            let wake = self.manager.next_wakeup();
            assert!(
                wake.is_some_and(|wake| wake.as_millis() <= deadline),
                "next wake-up {wake:?} is later than a deadline at {deadline} ms"
            );
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    Yes,
    No,
}
