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
    inbox: heapless::Deque<u8, INBOX_LEN>,
    now: Timestamp,
    namespace: heapless::index_set::FnvIndexSet<SegmentName, NAMESPACE_LEN>,
    closed_for: Option<CloseReason>,
    unlinked: usize,
    journal: Option<Journal<'static>>,
    journal_attached: bool,
    writes: usize,
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

struct Wire<'a> {
    inbox: &'a mut heapless::Deque<u8, INBOX_LEN>,
    namespace: &'a mut heapless::index_set::FnvIndexSet<SegmentName, NAMESPACE_LEN>,
    closed_for: &'a mut Option<CloseReason>,
    unlinked: &'a mut usize,
    journal_offered: bool,
    journal_attached: &'a mut bool,
    drain_requested: bool,
}

impl Effects for Wire<'_> {
    fn reply(&mut self, _conn: ConnId, reply: [u8; 2]) {
        for byte in reply {
            // A client that never reads its replies overflows this; they are
            // dropped, and it notices a missing reply.
            let _ = self.inbox.push_back(byte);
        }
    }
    fn close(&mut self, _conn: ConnId, reason: CloseReason) {
        *self.closed_for = Some(reason);
    }
    fn unlink(&mut self, name: &SegmentName, _reason: UnlinkReason) {
        if self.namespace.swap_remove(name) {
            *self.unlinked += 1;
        }
    }
    fn exists(&mut self, name: &SegmentName) -> bool {
        self.namespace.contains(name)
    }
    fn attach_journal(&mut self, _conn: ConnId) -> bool {
        *self.journal_attached = self.journal_offered;
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
            inbox: heapless::Deque::new(),
            now: Timestamp::ZERO,
            namespace: heapless::index_set::FnvIndexSet::new(),
            closed_for: conn.is_none().then_some(CloseReason::StalledFrame),
            unlinked: 0,
            journal: None,
            journal_attached: false,
            writes: 0,
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
        let (Some(journal), Some(conn), true) = (self.journal, self.conn, self.journal_attached)
        else {
            return;
        };
        let now = self.now;
        let result = journal.drain(|frame| {
            let mut wire = Wire {
                inbox: &mut self.inbox,
                namespace: &mut self.namespace,
                closed_for: &mut self.closed_for,
                unlinked: &mut self.unlinked,
                journal_offered: false,
                journal_attached: &mut self.journal_attached,
                drain_requested: false,
            };
            self.manager.receive_journaled(conn, &frame, now, &mut wire);
        });
        if result.is_err() {
            self.closed_for = Some(CloseReason::JournalMisuse);
        }
    }

    /// The manager behind the wire.
    pub fn manager(&self) -> &Manager<S> {
        &self.manager
    }

    /// Pretends a segment now exists (the client created it).
    pub fn create(&mut self, name: SegmentName) -> bool {
        self.namespace.insert(name).unwrap_or(false)
    }

    /// Pretends a segment was unlinked by a client.
    pub fn remove(&mut self, name: &SegmentName) -> bool {
        self.namespace.swap_remove(name)
    }

    /// Whether a segment exists in the simulated namespace.
    pub fn exists(&self, name: &SegmentName) -> bool {
        self.namespace.contains(name)
    }

    /// Names the manager unlinked.
    pub fn unlinked(&self) -> usize {
        self.unlinked
    }

    /// Why the manager closed the connection, if it did.
    pub fn closed_for(&self) -> Option<CloseReason> {
        self.closed_for
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
        let mut wire = Wire {
            inbox: &mut self.inbox,
            namespace: &mut self.namespace,
            closed_for: &mut self.closed_for,
            unlinked: &mut self.unlinked,
            journal_offered: false,
            journal_attached: &mut self.journal_attached,
            drain_requested: false,
        };
        self.manager.tick(now, &mut wire)
    }
}

impl<S: Storage> Transport for Loopback<S> {
    type Error = LoopbackError;

    fn send_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        let Some(conn) = self.conn.filter(|_| self.closed_for.is_none()) else {
            return Err(LoopbackError::Closed);
        };
        self.writes += 1;
        let mut wire = Wire {
            inbox: &mut self.inbox,
            namespace: &mut self.namespace,
            closed_for: &mut self.closed_for,
            unlinked: &mut self.unlinked,
            journal_offered: self.journal.is_some(),
            journal_attached: &mut self.journal_attached,
            drain_requested: false,
        };
        self.manager.receive(conn, bytes, self.now, &mut wire);
        if wire.drain_requested {
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
        if self.inbox.is_empty() {
            let closed = self.closed_for.is_some() || self.conn.is_none();
            return Ok(closed.then_some(0));
        }
        let mut n = 0;
        while n < buf.len() {
            let Some(byte) = self.inbox.pop_front() else {
                break;
            };
            buf[n] = byte;
            n += 1;
        }
        Ok(Some(n))
    }
}
