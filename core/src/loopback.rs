//! A [`Transport`] whose far end is a [`Manager`] in the same process.
//!
//! The protocol's zero-dependency test bench: a client talks to a real manager
//! state machine with nothing in between, so client and manager logic can be
//! exercised together (under Miri, on a microcontroller) without sockets.

use core::fmt;

use crate::journal::Journal;
use crate::manager::{Chore, CloseReason, ConnId, Effects, Manager, ManagerConfig, Peer};
use crate::name::SegmentName;
use crate::namespace::{Namespace, Observed, Unlinked};
use crate::storage::Storage;
use crate::time::Timestamp;
use crate::transport::{ErrorKind, Transport, TransportError};

/// Bytes of replies the loopback buffers for its client.
pub const INBOX_LEN: usize = 512;

/// Names the simulated namespace can hold.
pub const NAMESPACE_LEN: usize = 64;

/// Chores the manager may ask for in one call; its batch is clamped to half.
const CHORES_LEN: usize = 64;

/// A client end wired straight into a manager, reading the client's journal
/// (memory that lives for `'j`) if it has one.
pub struct Loopback<'j, S: Storage> {
    manager: Manager<S>,
    conn: Option<ConnId>,
    now: Timestamp,
    journal: Option<Journal<'j>>,
    writes: usize,
    far: Far<'j>,
    names: SimulatedNames,
}

/// Loopback failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopbackError {
    /// Waiting for bytes the manager will never send (it only answers frames).
    WouldWaitForever,
    /// The manager closed this connection.
    Closed,
}

impl fmt::Display for LoopbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WouldWaitForever => f.write_str("waiting for a reply that will never come"),
            Self::Closed => f.write_str("the manager closed the loopback connection"),
        }
    }
}

impl core::error::Error for LoopbackError {}

impl TransportError for LoopbackError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::WouldWaitForever => ErrorKind::TimedOut,
            Self::Closed => ErrorKind::Closed,
        }
    }
}

/// The manager's side of the wire: what it sends and closes, and the chores
/// it asks for.
struct Far<'j> {
    inbox: heapless::Deque<u8, INBOX_LEN>,
    chores: heapless::Deque<Chore, CHORES_LEN>,
    closed_for: Option<CloseReason>,
    /// The journal an offer on this call attaches, if one can be accepted.
    journal_offered: Option<Journal<'j>>,
    journal_attached: bool,
    /// Set when the doorbell rang during this call.
    drain_requested: bool,
}

impl<'j> Effects for Far<'j> {
    fn reply(&mut self, _conn: ConnId, reply: [u8; 2]) {
        for byte in reply {
            // A client that never reads its replies overflows this; they are
            // dropped, and it notices a missing reply.
            let _ = self.inbox.push_back(byte);
        }
    }
    fn close(&mut self, _conn: ConnId, reason: CloseReason) {
        self.closed_for = Some(reason);
    }
    fn chore(&mut self, chore: Chore) {
        // Room exists: the manager's batch is clamped to half the queue, and
        // the queue is emptied after every call.
        let _ = self.chores.push_back(chore);
    }
    fn attach_journal(&mut self, _conn: ConnId) -> Option<Journal<'_>> {
        self.journal_attached = self.journal_offered.is_some();
        self.journal_offered
    }
    fn drain_journal(&mut self, _conn: ConnId) {
        self.drain_requested = true;
    }
}

/// The simulated `/dev/shm`: names with their header refcounts.
struct SimulatedNames {
    refcounts: heapless::index_map::FnvIndexMap<SegmentName, i32, NAMESPACE_LEN>,
    unlinked: usize,
}

impl Namespace for SimulatedNames {
    type Error = core::convert::Infallible;

    fn observe(&mut self, name: &SegmentName) -> Result<Observed, Self::Error> {
        Ok(match self.refcounts.get(name) {
            Some(&refcount) => Observed::Segment { refcount },
            None => Observed::Absent,
        })
    }

    fn unlink(&mut self, name: &SegmentName) -> Result<Unlinked, Self::Error> {
        Ok(match self.refcounts.swap_remove(name) {
            Some(_) => {
                self.unlinked += 1;
                Unlinked::Removed
            }
            None => Unlinked::Absent,
        })
    }
}

impl<'j, S: Storage> Loopback<'j, S> {
    /// A manager with `config` and one connected client.
    pub fn new(config: ManagerConfig) -> Self {
        let config = ManagerConfig {
            batch: config.batch.clamp(1, CHORES_LEN / 2),
            ..config
        };
        let mut manager = Manager::new(config, Timestamp::ZERO);
        let conn = manager.connect(Peer::default(), Timestamp::ZERO).ok();
        Self {
            manager,
            conn,
            now: Timestamp::ZERO,
            journal: None,
            writes: 0,
            far: Far {
                inbox: heapless::Deque::new(),
                chores: heapless::Deque::new(),
                closed_for: conn.is_none().then_some(CloseReason::StalledFrame),
                journal_offered: None,
                journal_attached: false,
                drain_requested: false,
            },
            names: SimulatedNames {
                refcounts: heapless::index_map::FnvIndexMap::new(),
                unlinked: 0,
            },
        }
    }

    /// Carries out the chores the manager asked for, as a driver does after
    /// each call.
    fn run_chores(&mut self) {
        while let Some(chore) = self.far.chores.pop_front() {
            let Ok(()) = self
                .manager
                .perform(chore, &mut self.names, self.now, &mut self.far);
        }
    }

    /// Like [`Loopback::new`], with a manager that accepts a journal offer
    /// and reads `journal` (the same memory the client writes).
    pub fn with_journal(config: ManagerConfig, journal: Journal<'j>) -> Self {
        Self {
            journal: Some(journal),
            ..Self::new(config)
        }
    }

    /// Calls to `send_all` so far: one per system call a real transport makes.
    pub fn writes(&self) -> usize {
        self.writes
    }

    /// Reads the journal into the manager, as a driver does on a doorbell,
    /// at end of file and before each tick.
    fn drain_journal(&mut self) {
        let (Some(journal), Some(conn), true) =
            (self.journal, self.conn, self.far.journal_attached)
        else {
            return;
        };
        self.far.journal_offered = None;
        let _ = self
            .manager
            .read_journal(conn, journal, u32::MAX, self.now, &mut self.far);
    }

    /// The manager behind the wire.
    pub fn manager(&self) -> &Manager<S> {
        &self.manager
    }

    /// Pretends a segment now exists with refcount 1 (the client created it).
    pub fn create(&mut self, name: SegmentName) -> bool {
        self.names.refcounts.insert(name, 1).is_ok()
    }

    /// Sets a segment's header refcount, as openers, closers and a pickled
    /// handle's extra reference do.
    pub fn set_refcount(&mut self, name: &SegmentName, refcount: i32) {
        if let Some(count) = self.names.refcounts.get_mut(name) {
            *count = refcount;
        }
    }

    /// Pretends a segment was unlinked by a client.
    pub fn remove(&mut self, name: &SegmentName) -> bool {
        self.names.refcounts.swap_remove(name).is_some()
    }

    /// Whether a segment exists in the simulated namespace.
    pub fn exists(&self, name: &SegmentName) -> bool {
        self.names.refcounts.contains_key(name)
    }

    /// Names the manager unlinked.
    pub fn unlinked(&self) -> usize {
        self.names.unlinked
    }

    /// Why the manager closed the connection, if it did.
    pub fn closed_for(&self) -> Option<CloseReason> {
        self.far.closed_for
    }

    /// Drops the client's connection, as a crash would. Frames already
    /// committed to the journal are read first, as a real driver does.
    pub fn disconnect(&mut self) {
        self.drain_journal();
        if let Some(conn) = self.conn.take() {
            self.manager.disconnect(conn, self.now, &mut self.far);
        }
    }

    /// Advances the clock and lets the manager act on it.
    pub fn advance_to(&mut self, now: Timestamp) -> crate::manager::Status {
        self.now = now;
        self.drain_journal();
        self.far.journal_offered = None;
        let status = self.manager.tick(now, &mut self.far);
        self.run_chores();
        status
    }
}

impl<S: Storage> Transport for Loopback<'_, S> {
    type Error = LoopbackError;

    fn send_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        let Some(conn) = self.conn.filter(|_| self.far.closed_for.is_none()) else {
            return Err(LoopbackError::Closed);
        };
        self.writes += 1;
        self.far.journal_offered = self.journal;
        self.far.drain_requested = false;
        self.manager.receive(conn, bytes, self.now, &mut self.far);
        if self.far.drain_requested {
            self.drain_journal();
        }
        Ok(())
    }

    fn receive(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        match self.try_receive(buf)? {
            Some(n) => Ok(n),
            None => Err(LoopbackError::WouldWaitForever),
        }
    }

    fn try_receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        if self.far.inbox.is_empty() {
            let closed = self.far.closed_for.is_some() || self.conn.is_none();
            return Ok(closed.then_some(0));
        }
        let mut n = 0;
        while n < buf.len() {
            let Some(byte) = self.far.inbox.pop_front() else {
                break;
            };
            buf[n] = byte;
            n += 1;
        }
        Ok(Some(n))
    }
}
