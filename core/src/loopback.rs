//! A [`Transport`] whose far end is a [`Manager`] in the same process.
//!
//! The protocol's zero-dependency test bench: a client talks to a real manager
//! state machine with nothing in between, so client and manager logic can be
//! exercised together (under Miri, on a microcontroller) without sockets.

use core::fmt;

use crate::journal::Journal;
use crate::manager::{CloseReason, ConnId, Effects, Manager, ManagerConfig, Peer, UnlinkReason};
use crate::name::SegmentName;
use crate::storage::Storage;
use crate::time::Timestamp;
use crate::transport::{ErrorKind, Transport, TransportError};

/// Bytes of replies the loopback buffers for its client.
pub const INBOX_LEN: usize = 512;

/// Names the simulated namespace can hold.
pub const NAMESPACE_LEN: usize = 64;

/// A client end wired straight into a manager.
pub struct Loopback<S: Storage> {
    manager: Manager<S>,
    conn: Option<ConnId>,
    now: Timestamp,
    journal: Option<Journal<'static>>,
    writes: usize,
    far: Far,
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

impl TransportError for LoopbackError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::WouldWaitForever => ErrorKind::TimedOut,
            Self::Closed => ErrorKind::Closed,
        }
    }
}

/// The manager's side of the wire: what it sends, closes and unlinks, and
/// the simulated namespace it asks about.
struct Far {
    inbox: heapless::Deque<u8, INBOX_LEN>,
    namespace: heapless::index_set::FnvIndexSet<SegmentName, NAMESPACE_LEN>,
    closed_for: Option<CloseReason>,
    unlinked: usize,
    /// Whether a journal offer on this call can be accepted.
    journal_offered: bool,
    journal_attached: bool,
    /// Set when the doorbell rang during this call.
    drain_requested: bool,
}

impl Effects for Far {
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
    fn unlink(&mut self, name: &SegmentName, _reason: UnlinkReason) {
        if self.namespace.swap_remove(name) {
            self.unlinked += 1;
        }
    }
    fn exists(&mut self, name: &SegmentName) -> bool {
        self.namespace.contains(name)
    }
    fn attach_journal(&mut self, _conn: ConnId) -> bool {
        self.journal_attached = self.journal_offered;
        self.journal_offered
    }
    fn drain_journal(&mut self, _conn: ConnId) {
        self.drain_requested = true;
    }
}

impl<S: Storage> Loopback<S> {
    /// A manager with `config` and one connected client.
    pub fn new(config: ManagerConfig) -> Self {
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
                namespace: heapless::index_set::FnvIndexSet::new(),
                closed_for: conn.is_none().then_some(CloseReason::StalledFrame),
                unlinked: 0,
                journal_offered: false,
                journal_attached: false,
                drain_requested: false,
            },
        }
    }

    /// Like [`Loopback::new`], with a manager that accepts a journal offer
    /// and reads `journal` (the same memory the client writes).
    pub fn with_journal(config: ManagerConfig, journal: Journal<'static>) -> Self {
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
        let now = self.now;
        self.far.journal_offered = false;
        let result = journal.drain(|frame| {
            self.manager
                .receive_journaled(conn, &frame, now, &mut self.far);
        });
        if result.is_err() {
            self.far.closed_for = Some(CloseReason::JournalMisuse);
        }
    }

    /// The manager behind the wire.
    pub fn manager(&self) -> &Manager<S> {
        &self.manager
    }

    /// Pretends a segment now exists (the client created it).
    pub fn create(&mut self, name: SegmentName) -> bool {
        self.far.namespace.insert(name).unwrap_or(false)
    }

    /// Pretends a segment was unlinked by a client.
    pub fn remove(&mut self, name: &SegmentName) -> bool {
        self.far.namespace.swap_remove(name)
    }

    /// Whether a segment exists in the simulated namespace.
    pub fn exists(&self, name: &SegmentName) -> bool {
        self.far.namespace.contains(name)
    }

    /// Names the manager unlinked.
    pub fn unlinked(&self) -> usize {
        self.far.unlinked
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
            self.manager.disconnect(conn, self.now);
        }
    }

    /// Advances the clock and lets the manager act on it.
    pub fn advance_to(&mut self, now: Timestamp) -> crate::manager::Status {
        self.now = now;
        self.drain_journal();
        self.far.journal_offered = false;
        self.manager.tick(now, &mut self.far)
    }
}

impl<S: Storage> Transport for Loopback<S> {
    type Error = LoopbackError;

    fn send_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        let Some(conn) = self.conn.filter(|_| self.far.closed_for.is_none()) else {
            return Err(LoopbackError::Closed);
        };
        self.writes += 1;
        self.far.journal_offered = self.journal.is_some();
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
