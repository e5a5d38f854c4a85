//! The manager state machine: who registered which name, and what to unlink when.
//!
//! Deterministic and IO-free. The driver (an event loop in a transport crate)
//! tells it about connections, bytes and the time, and it answers through
//! [`Effects`]: reply to this connection, close that one, unlink this name, and
//! one question, whether a name still exists.
//!
//! # What it guarantees
//! - Every valid registration is answered exactly once, in order, unless the
//!   connection is closed first.
//! - A malformed frame, a release of a name that connection does not hold, a
//!   name outside the configured prefix or a frame left half-sent for too long
//!   closes that connection only. Each connection has its own reassembly buffer,
//!   so half a frame stalls nobody.
//! - A name is only ever unlinked if it was registered.
//!
//! # Life of a name
//! A name is *held* while a live connection has registered it more often than
//! released it. When its last holder releases it, it is *released*: possibly in
//! transit to another process (a pickled handle in a queue), kept alive by the
//! segment's refcount alone. Released names are never reaped; the manager
//! checks now and then whether they still exist and forgets them once they do
//! not. When a connection ends while holding names, their refcounts can never
//! drop to zero, so once no live connection holds such a name it is *orphaned*
//! and unlinked after a grace period (unless someone registers it again first).
//! When no client has been connected for the shutdown timeout, every name still
//! known is unlinked and the manager is finished, as PyTorch's manager does.

use core::fmt;
use core::time::Duration;

use crate::ack::{ACK, JOURNAL_READY, REFUSAL};
use crate::frame::{FRAME_LEN, Frame, FrameError, FrameKind};
use crate::journal;
use crate::name::{NamePrefix, SegmentName};
use crate::storage::{Storage, Table};
use crate::time::Timestamp;

/// A connection, numbered by the manager in accept order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What the OS says about a connecting peer (`SO_PEERCRED`), where it says anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// The peer's pid.
    pub pid: Option<i32>,
    /// The peer's effective uid.
    pub uid: Option<u32>,
}

/// Tunables. [`ManagerConfig::default`] behaves like PyTorch's manager plus
/// orphan reaping.
#[derive(Clone, Copy, Debug)]
pub struct ManagerConfig {
    /// Finish after this long without any connection (PyTorch: 2 s).
    pub shutdown_after: Duration,
    /// Unlink orphaned names after this long; `None` keeps them until
    /// shutdown, as PyTorch does.
    pub reap_grace: Option<Duration>,
    /// Close a connection that leaves half a frame unfinished this long.
    pub frame_timeout: Option<Duration>,
    /// Accept only names with this prefix.
    pub name_prefix: Option<NamePrefix>,
    /// Accept only peers with this uid.
    pub owner_uid: Option<u32>,
    /// Refuse connections beyond this many.
    pub max_connections: usize,
    /// Refuse registrations of new names beyond this many.
    pub max_names: usize,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            shutdown_after: Duration::from_secs(2),
            reap_grace: Some(Duration::from_secs(2)),
            frame_timeout: Some(Duration::from_secs(5)),
            name_prefix: None,
            owner_uid: None,
            max_connections: usize::MAX,
            max_names: usize::MAX,
        }
    }
}

/// Why the manager closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The bytes were not a valid frame.
    Malformed(FrameError),
    /// A release of a name this connection does not hold.
    UnknownRelease(SegmentName),
    /// A name outside the configured prefix.
    ForeignName(SegmentName),
    /// Half a frame, left unfinished past the frame timeout.
    StalledFrame,
    /// One name registered over four billion times on one connection.
    HoldOverflow,
    /// A journaled registration that did not fit the registry (it cannot be
    /// refused: the segment may exist already).
    RegistryFull,
    /// A journal frame the journal may not carry, or a journal whose counters
    /// are out of range.
    JournalMisuse,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(err) => write!(f, "malformed frame: {err}"),
            Self::UnknownRelease(name) => write!(f, "release of {name}, which it does not hold"),
            Self::ForeignName(name) => write!(f, "{name} is outside the accepted prefix"),
            Self::StalledFrame => {
                f.write_str("half a frame left unfinished past the frame timeout")
            }
            Self::HoldOverflow => f.write_str("registration count overflow"),
            Self::RegistryFull => f.write_str("a journaled registration did not fit the registry"),
            Self::JournalMisuse => f.write_str("its registration journal is corrupt or misused"),
        }
    }
}

/// Why the manager unlinks a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnlinkReason {
    /// Its holders died and no live connection registered it within the grace period.
    Orphaned,
    /// The manager is shutting down with the name still known.
    Shutdown,
}

/// Why a connection is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The peer runs as another user (or the OS did not say which).
    ForeignUid {
        /// The peer's uid, if known.
        uid: Option<u32>,
    },
    /// The connection table is full.
    TooManyConnections,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ForeignUid { uid: Some(uid) } => write!(f, "peer runs as uid {uid}"),
            Self::ForeignUid { uid: None } => f.write_str("peer credentials are unknown"),
            Self::TooManyConnections => f.write_str("too many connections"),
        }
    }
}

impl core::error::Error for ConnectError {}

/// What the manager asks of its driver.
pub trait Effects {
    /// Send `reply` (`OK` or `NO`) to `conn`. Replies to one connection must
    /// be delivered in the order given.
    fn reply(&mut self, conn: ConnId, reply: [u8; 2]);
    /// Close `conn`. The manager has already forgotten it.
    fn close(&mut self, conn: ConnId, reason: CloseReason);
    /// Unlink `name` if it still exists and belongs to the manager's user.
    fn unlink(&mut self, name: &SegmentName, reason: UnlinkReason);
    /// Whether `name` exists right now. When unsure, say `true`: the name is
    /// then kept and asked about again later.
    fn exists(&mut self, name: &SegmentName) -> bool;
    /// `conn` offers a registration journal (the memory travelled with the
    /// offer). Return whether it is now attached; drivers without journal
    /// support keep the default.
    fn attach_journal(&mut self, _conn: ConnId) -> bool {
        false
    }
    /// `conn` rang the doorbell: feed its journal's unread frames to
    /// [`Manager::receive_journaled`] before the `OK` this call queues is sent.
    fn drain_journal(&mut self, _conn: ConnId) {}
}

/// Whether the manager has work left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Keep serving.
    Serving,
    /// Shut down: every known name has been unlinked.
    Finished,
}

/// Counters for logs and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Registrations answered `OK`.
    pub registrations: u64,
    /// Registrations answered `NO` (storage full).
    pub refused: u64,
    /// Releases accepted.
    pub releases: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections refused at connect time.
    pub rejected: u64,
    /// Connections closed for misbehaving.
    pub closed_for_cause: u64,
    /// Orphaned names unlinked.
    pub reaped: u64,
    /// Names forgotten because they no longer existed.
    pub forgotten: u64,
    /// Names unlinked at shutdown.
    pub unlinked_at_shutdown: u64,
}

/// The state of one known name, for inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameState {
    /// Registered by this many live connections.
    Held {
        /// Distinct live connections holding it.
        holders: u32,
    },
    /// Released by every holder; kept until it disappears or shutdown.
    Released,
    /// Its holders died; unlinked at `reap_at` (never, if reaping is off).
    Orphaned {
        /// When it will be unlinked.
        reap_at: Option<Timestamp>,
    },
}

/// One connection holding one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hold {
    conn: ConnId,
    name: SegmentName,
}

/// Per-name bookkeeping.
#[derive(Clone, Copy, Debug, Default)]
pub struct NameRecord {
    /// Live connections holding the name.
    live: u32,
    /// A connection ended while holding it, so its refcount can never reach zero.
    died_holding: bool,
    /// Reap deadline (orphaned) or next existence check (released).
    wake: Option<Timestamp>,
    /// Existence checks so far, for backing off.
    probes: u8,
}

/// Per-connection bookkeeping.
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    partial: [u8; FRAME_LEN],
    filled: u8,
    partial_since: Option<Timestamp>,
    held: u32,
    peer: Peer,
}

/// The manager.
pub struct Manager<S: Storage> {
    config: ManagerConfig,
    names: S::Names,
    holds: S::Holds,
    conns: S::Conns,
    next_conn: u64,
    idle_since: Option<Timestamp>,
    wake: Option<Timestamp>,
    stats: Stats,
}

/// Whether a registration is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// It came on the socket: the client waits for (or collects) a reply.
    Reply,
    /// It came through the journal: nobody waits.
    Silent,
}

/// Orphan deadlines are rounded to this many ms so close deadlines share a wake-up.
const REAP_GRANULARITY_MS: u64 = 100;
/// Existence checks of released names happen on whole seconds, backing off to a minute.
const PROBE_GRANULARITY_MS: u64 = 1_000;
const PROBE_MAX_SHIFT: u8 = 6;

impl<S: Storage> Manager<S> {
    /// A manager with no clients yet; the shutdown clock starts at `now`.
    pub fn new(config: ManagerConfig, now: Timestamp) -> Self {
        Self {
            config,
            names: Default::default(),
            holds: Default::default(),
            conns: Default::default(),
            next_conn: 0,
            idle_since: Some(now),
            wake: None,
            stats: Stats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Known names (held, released or orphaned).
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// What the manager knows about `name`.
    pub fn name_state(&self, name: &SegmentName) -> Option<NameState> {
        let record = self.names.get(name)?;
        Some(match (record.live, record.died_holding) {
            (0, true) => NameState::Orphaned {
                reap_at: record.wake,
            },
            (0, false) => NameState::Released,
            (holders, _) => NameState::Held { holders },
        })
    }

    /// The peer a connection came from.
    pub fn peer(&self, conn: ConnId) -> Option<Peer> {
        self.conns.get(&conn).map(|c| c.peer)
    }

    /// When the driver must call [`Manager::tick`] at the latest, if ever.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        let idle_deadline = if self.conns.is_empty() {
            self.idle_since.map(|t| t.after(self.config.shutdown_after))
        } else {
            None
        };
        min_opt(self.wake, idle_deadline)
    }

    /// A client connected. Refused peers get an error; the driver closes them.
    pub fn connect(&mut self, peer: Peer, _now: Timestamp) -> Result<ConnId, ConnectError> {
        if let Some(owner) = self.config.owner_uid
            && peer.uid != Some(owner)
        {
            self.stats.rejected += 1;
            return Err(ConnectError::ForeignUid { uid: peer.uid });
        }
        if self.conns.len() >= self.config.max_connections {
            self.stats.rejected += 1;
            return Err(ConnectError::TooManyConnections);
        }
        let id = ConnId(self.next_conn);
        let connection = Connection {
            partial: [0; FRAME_LEN],
            filled: 0,
            partial_since: None,
            held: 0,
            peer,
        };
        if self.conns.insert(id, connection).is_err() {
            self.stats.rejected += 1;
            return Err(ConnectError::TooManyConnections);
        }
        self.next_conn += 1;
        self.stats.connections += 1;
        self.idle_since = None;
        Ok(id)
    }

    /// Bytes arrived on `conn`. Any number of frames, or part of one.
    pub fn receive(
        &mut self,
        conn: ConnId,
        mut bytes: &[u8],
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        while !bytes.is_empty() {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let filled = usize::from(c.filled);
            let frame: [u8; FRAME_LEN] = if filled == 0 && bytes.len() >= FRAME_LEN {
                let (head, rest) = bytes.split_at(FRAME_LEN);
                bytes = rest;
                let mut frame = [0; FRAME_LEN];
                frame.copy_from_slice(head);
                frame
            } else {
                let take = (FRAME_LEN - filled).min(bytes.len());
                c.partial[filled..filled + take].copy_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if filled + take < FRAME_LEN {
                    c.filled = (filled + take) as u8;
                    if c.partial_since.is_none() {
                        c.partial_since = Some(now);
                        if let Some(timeout) = self.config.frame_timeout {
                            self.schedule(now.after(timeout));
                        }
                    }
                    return;
                }
                c.filled = 0;
                c.partial_since = None;
                c.partial
            };
            match Frame::parse(&frame) {
                Ok(frame) => self.handle(conn, frame, now, fx),
                Err(err) => self.close(conn, CloseReason::Malformed(err), now, fx),
            }
        }
    }

    /// A frame read from `conn`'s journal. Processed like a frame from the
    /// socket, except that nothing is answered: nobody waits for it.
    pub fn receive_journaled(
        &mut self,
        conn: ConnId,
        frame: &[u8; FRAME_LEN],
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        if self.conns.get(&conn).is_none() {
            return;
        }
        match Frame::parse(frame) {
            Ok(frame) if journal::is_reserved(&frame.name) => {
                self.close(conn, CloseReason::JournalMisuse, now, fx);
            }
            Ok(frame) => match frame.kind {
                FrameKind::Register => self.register(conn, frame.name, Answer::Silent, now, fx),
                FrameKind::Release => self.release(conn, frame.name, now, fx),
            },
            Err(err) => self.close(conn, CloseReason::Malformed(err), now, fx),
        }
    }

    /// Takes on `name` as an orphan: a segment whose holder died while no
    /// manager was watching (a manager that replaced a dead one finds these).
    /// It is unlinked after the grace period unless someone registers it
    /// first. A name a live connection holds is left alone; a released one is
    /// taken on too, since after a manager's death "released" may only mean
    /// that its other holders died unseen. Returns whether it was taken on.
    pub fn adopt_orphan(&mut self, name: SegmentName, now: Timestamp) -> bool {
        let wake = self
            .config
            .reap_grace
            .map(|grace| now.after(grace).round_up(REAP_GRANULARITY_MS));
        if let Some(record) = self.names.get_mut(&name) {
            if record.live > 0 || record.died_holding {
                return false;
            }
            record.died_holding = true;
            record.wake = wake;
        } else {
            if self.names.len() >= self.config.max_names {
                return false;
            }
            let record = NameRecord {
                live: 0,
                died_holding: true,
                wake,
                probes: 0,
            };
            if self.names.insert(name, record).is_err() {
                return false;
            }
        }
        self.wake = min_opt(self.wake, wake);
        true
    }

    /// Closes `conn` for a reason the driver found (a corrupt journal, say).
    pub fn evict(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        self.close(conn, reason, now, fx);
    }

    /// `conn` reached end of file or failed. What it still held is orphaned.
    pub fn disconnect(&mut self, conn: ConnId, now: Timestamp) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if c.held > 0 {
            let wake = orphan_holds::<S>(&mut self.holds, &mut self.names, conn, now, &self.config);
            self.wake = min_opt(self.wake, wake);
        }
        if self.conns.is_empty() {
            self.idle_since = Some(now);
        }
    }

    /// Time passed: close stalled connections, reap orphans whose grace ran out,
    /// re-check released names, and shut down when idle long enough.
    pub fn tick(&mut self, now: Timestamp, fx: &mut impl Effects) -> Status {
        let mut wake = None;
        let Self {
            config,
            names,
            holds,
            conns,
            stats,
            ..
        } = self;

        if let Some(timeout) = config.frame_timeout {
            conns.retain(|&id, c| {
                let Some(since) = c.partial_since else {
                    return true;
                };
                let deadline = since.after(timeout);
                if deadline > now {
                    wake = min_opt(wake, Some(deadline));
                    return true;
                }
                fx.close(id, CloseReason::StalledFrame);
                stats.closed_for_cause += 1;
                if c.held > 0 {
                    let orphan_wake = orphan_holds::<S>(holds, names, id, now, config);
                    wake = min_opt(wake, orphan_wake);
                }
                false
            });
        }

        names.retain(|name, record| {
            if record.wake.is_some_and(|at| at <= now) {
                if record.live > 0 {
                    record.wake = None;
                } else if record.died_holding {
                    fx.unlink(name, UnlinkReason::Orphaned);
                    stats.reaped += 1;
                    return false;
                } else if fx.exists(name) {
                    record.probes = record.probes.saturating_add(1);
                    record.wake = Some(next_probe(now, record.probes));
                } else {
                    stats.forgotten += 1;
                    return false;
                }
            }
            wake = min_opt(wake, record.wake);
            true
        });
        self.wake = wake;

        if self.conns.is_empty() {
            if self.idle_since.is_none() {
                self.idle_since = Some(now);
            }
            let idle_for_long = self
                .idle_since
                .is_some_and(|since| since.after(self.config.shutdown_after) <= now);
            if idle_for_long {
                let stats = &mut self.stats;
                self.names.retain(|name, _| {
                    fx.unlink(name, UnlinkReason::Shutdown);
                    stats.unlinked_at_shutdown += 1;
                    false
                });
                self.holds.retain(|_, _| false);
                return Status::Finished;
            }
        }
        Status::Serving
    }

    fn handle(&mut self, conn: ConnId, frame: Frame, now: Timestamp, fx: &mut impl Effects) {
        let reserved = journal::is_reserved(&frame.name);
        match (frame.kind, reserved) {
            (FrameKind::Register, false) => self.register(conn, frame.name, Answer::Reply, now, fx),
            (FrameKind::Release, false) => self.release(conn, frame.name, now, fx),
            (FrameKind::Register, true) if frame.name.as_str() == journal::SETUP_NAME => {
                let reply = if fx.attach_journal(conn) {
                    JOURNAL_READY
                } else {
                    REFUSAL
                };
                fx.reply(conn, reply);
            }
            (FrameKind::Register, true) => {
                fx.drain_journal(conn);
                fx.reply(conn, ACK);
            }
            // A client that got `OK` for its journal offer from a manager that
            // does not know journals takes it back; nothing to do here.
            (FrameKind::Release, true) => {}
        }
    }

    fn register(
        &mut self,
        conn: ConnId,
        name: SegmentName,
        answer: Answer,
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        if let Some(prefix) = &self.config.name_prefix
            && !name.has_prefix(prefix)
        {
            return self.close(conn, CloseReason::ForeignName(name), now, fx);
        }
        let hold = Hold { conn, name };
        if let Some(count) = self.holds.get_mut(&hold) {
            let Some(next) = count.checked_add(1) else {
                return self.close(conn, CloseReason::HoldOverflow, now, fx);
            };
            *count = next;
            self.stats.registrations += 1;
            return self.answer(conn, answer, ACK, now, fx);
        }
        let is_new_name = self.names.get(&name).is_none();
        if is_new_name
            && (self.names.len() >= self.config.max_names
                || self.names.insert(name, NameRecord::default()).is_err())
        {
            self.stats.refused += 1;
            return self.answer(conn, answer, REFUSAL, now, fx);
        }
        if self.holds.insert(hold, 1).is_err() {
            if is_new_name {
                self.names.remove(&name);
            }
            self.stats.refused += 1;
            return self.answer(conn, answer, REFUSAL, now, fx);
        }
        if let Some(record) = self.names.get_mut(&name) {
            record.live += 1;
            record.wake = None;
            record.probes = 0;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.held += 1;
        }
        self.stats.registrations += 1;
        self.answer(conn, answer, ACK, now, fx);
    }

    /// Replies to a registration from the socket. A journaled one gets no
    /// reply, and a journaled one that cannot be stored closes the connection,
    /// since its segment may exist already and cannot be refused.
    fn answer(
        &mut self,
        conn: ConnId,
        answer: Answer,
        reply: [u8; 2],
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        match (answer, reply) {
            (Answer::Reply, reply) => fx.reply(conn, reply),
            (Answer::Silent, REFUSAL) => self.close(conn, CloseReason::RegistryFull, now, fx),
            (Answer::Silent, _) => {}
        }
    }

    fn release(&mut self, conn: ConnId, name: SegmentName, now: Timestamp, fx: &mut impl Effects) {
        let hold = Hold { conn, name };
        let Some(count) = self.holds.get_mut(&hold) else {
            return self.close(conn, CloseReason::UnknownRelease(name), now, fx);
        };
        self.stats.releases += 1;
        if *count > 1 {
            *count -= 1;
            return;
        }
        self.holds.remove(&hold);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.held = c.held.saturating_sub(1);
        }
        let Some(record) = self.names.get_mut(&name) else {
            return;
        };
        record.live = record.live.saturating_sub(1);
        if record.live > 0 {
            return;
        }
        // Its last holder let go. Whether the name still exists is asked later,
        // in the once-a-second sweep: asking now would cost a lookup in the
        // shared-memory directory per release, contending with the very
        // clients that are creating segments there.
        let wake = if record.died_holding {
            self.config
                .reap_grace
                .map(|grace| now.after(grace).round_up(REAP_GRANULARITY_MS))
        } else {
            record.probes = 0;
            Some(next_probe(now, 0))
        };
        record.wake = wake;
        self.wake = min_opt(self.wake, wake);
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason, now: Timestamp, fx: &mut impl Effects) {
        if self.conns.get(&conn).is_none() {
            return;
        }
        fx.close(conn, reason);
        self.stats.closed_for_cause += 1;
        self.disconnect(conn, now);
    }

    fn schedule(&mut self, at: Timestamp) {
        self.wake = min_opt(self.wake, Some(at));
    }
}

/// Drops every hold of `conn`; names left without a live holder become orphans.
/// Returns the earliest reap deadline it set.
fn orphan_holds<S: Storage>(
    holds: &mut S::Holds,
    names: &mut S::Names,
    conn: ConnId,
    now: Timestamp,
    config: &ManagerConfig,
) -> Option<Timestamp> {
    let reap_at = config
        .reap_grace
        .map(|grace| now.after(grace).round_up(REAP_GRANULARITY_MS));
    let mut earliest = None;
    holds.retain(|hold, _| {
        if hold.conn != conn {
            return true;
        }
        if let Some(record) = names.get_mut(&hold.name) {
            record.live = record.live.saturating_sub(1);
            record.died_holding = true;
            if record.live == 0 {
                record.wake = reap_at;
                earliest = reap_at;
            }
        }
        false
    });
    earliest
}

fn next_probe(now: Timestamp, probes: u8) -> Timestamp {
    let shift = probes.min(PROBE_MAX_SHIFT);
    now.after(Duration::from_secs(1 << shift))
        .round_up(PROBE_GRANULARITY_MS)
}

fn min_opt(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests;
