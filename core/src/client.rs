//! The client side: when to write frames and when to wait for replies.
//!
//! [`ClientSession`] is the pure state machine; [`Client`] drives it over a
//! [`Transport`]. Two modes:
//!
//! - [`AckMode::Strict`] waits for the manager's `OK` after every registration,
//!   exactly like PyTorch's client. Use it with peers that need it.
//! - [`AckMode::Pipelined`] writes the registration and goes on. Crash safety
//!   does not need the round trip: bytes written into a stream socket are
//!   delivered to the manager even if the writer dies right after. Replies are
//!   collected later, in batches, and checked just as strictly; at most
//!   `max_in_flight` may be outstanding.
//!
//! Against our manager a client can go further and hand its frames over in a
//! shared-memory [journal] ([`Client::attach_journal`]): no
//! system call and no wake-up per frame, the same crash safety, and the socket
//! carries only a doorbell now and then. PyTorch's manager declines the offer
//! and the socket path goes on as before.
//!
//! Releases of names the caller has already unlinked itself are *deferrable*:
//! they ride along with the next registration's write instead of costing a
//! write of their own. Nothing depends on them arriving promptly, because the
//! manager forgets a name that no longer exists. Releases of names that still
//! exist (someone else holds the segment, or it is in transit) are written at
//! once, and a registration is never delayed.

use core::fmt;

use crate::ack::{BadReply, JOURNAL_READY, Reply, ReplyReader};
use crate::frame::{AllocInfo, Frame};
use crate::journal::{self, Journal};
use crate::name::SegmentName;
use crate::transport::{ErrorKind, Transport, TransportError};

/// How a client treats the manager's replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// Wait for `OK` after each registration (PyTorch's behaviour).
    Strict,
    /// Do not wait; allow this many unanswered registrations.
    Pipelined {
        /// Upper bound on unanswered registrations (clamped to the session's capacity).
        max_in_flight: u16,
    },
}

impl Default for AckMode {
    fn default() -> Self {
        Self::Pipelined { max_in_flight: 32 }
    }
}

/// A protocol violation by the manager, or a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFault {
    /// Two bytes that are neither `OK` nor `NO`.
    BadReply(BadReply),
    /// A reply with no registration waiting for one.
    UnsolicitedReply,
    /// The manager closed the stream with registrations unanswered.
    ManagerClosed {
        /// Registrations that never got a reply.
        unanswered: usize,
    },
    /// The manager refused this registration (its registry is full).
    Refused(SegmentName),
    /// The journal's counters say the manager read more than was written.
    JournalCorrupt,
}

impl fmt::Display for ClientFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadReply(err) => err.fmt(f),
            Self::UnsolicitedReply => f.write_str("manager sent a reply nobody asked for"),
            Self::ManagerClosed { unanswered: 0 } => f.write_str("manager closed the connection"),
            Self::ManagerClosed { unanswered } => write!(
                f,
                "manager closed the connection with {unanswered} registration(s) unanswered"
            ),
            Self::Refused(name) => write!(f, "manager refused to register {name}"),
            Self::JournalCorrupt => f.write_str("the registration journal's counters are corrupt"),
        }
    }
}

impl core::error::Error for ClientFault {}

/// The client protocol state for one manager connection, with room for `N`
/// queued frames and `N` unanswered registrations.
#[derive(Debug)]
pub struct ClientSession<const N: usize> {
    mode: AckMode,
    outbox: heapless::Vec<AllocInfo, N>,
    awaiting: heapless::Deque<SegmentName, N>,
    refused: Option<SegmentName>,
    replies: ReplyReader,
    journal: Option<Journal<'static>>,
    doorbell_in_flight: bool,
    /// The answer to a journal offer: accepted, declined, or not yet known.
    offer: Option<bool>,
}

impl<const N: usize> ClientSession<N> {
    /// A session in `mode`. `N` must be at least 2: one deferred release and
    /// the registration that carries it.
    pub fn new(mode: AckMode) -> Self {
        const {
            assert!(
                N >= 2,
                "a client session needs room for at least two frames"
            )
        };
        Self {
            mode,
            outbox: heapless::Vec::new(),
            awaiting: heapless::Deque::new(),
            refused: None,
            replies: ReplyReader::default(),
            journal: None,
            doorbell_in_flight: false,
            offer: None,
        }
    }

    /// The journal frames go through, once the manager accepted it.
    pub fn journal(&self) -> Option<Journal<'static>> {
        self.journal
    }

    /// The mode.
    pub fn mode(&self) -> AckMode {
        self.mode
    }

    /// Registrations written and not yet answered.
    pub fn awaiting(&self) -> usize {
        self.awaiting.len()
    }

    /// Reply bytes still owed by the manager.
    pub fn bytes_owed(&self) -> usize {
        (self.awaiting.len() * 2).saturating_sub(usize::from(self.replies.is_mid_reply()))
    }

    /// Frames queued but not yet written (deferred releases).
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    fn in_flight_limit(&self) -> usize {
        match self.mode {
            AckMode::Strict => 1,
            AckMode::Pipelined { max_in_flight } => usize::from(max_in_flight).clamp(1, N),
        }
    }

    /// Whether a reply must arrive before another registration may be written.
    pub fn must_wait_before_register(&self) -> bool {
        self.awaiting.len() >= self.in_flight_limit()
    }

    /// Whether the caller should collect replies that are ready, without
    /// waiting: half the window is in flight, so one read gets many.
    pub fn should_collect(&self) -> bool {
        !self.awaiting.is_empty() && self.awaiting.len() * 2 >= self.in_flight_limit()
    }

    /// Whether the caller must wait for replies now (strict mode after a write).
    pub fn must_wait_after_register(&self) -> bool {
        self.mode == AckMode::Strict && !self.awaiting.is_empty()
    }

    /// Queues a registration behind any deferred releases and returns all the
    /// bytes to write now, in one piece. Call [`ClientSession::written`] once
    /// they are written. Precondition: `!must_wait_before_register()`.
    pub fn register(&mut self, frame: Frame) -> &[u8] {
        if self.outbox.is_full() {
            // Cannot happen when written() is called after every write: the
            // outbox is flushed whenever it fills. Dropping the oldest deferred
            // release is harmless if it ever did (the manager forgets gone names).
            self.outbox.remove(0);
        }
        let _ = self.outbox.push(frame.to_raw());
        let _ = self.awaiting.push_back(frame.name);
        bytemuck::cast_slice(&self.outbox)
    }

    /// Queues a release. Returns the bytes to write now, if any: a release
    /// that is not deferrable, or a full queue, goes out at once.
    pub fn release(&mut self, frame: Frame, deferrable: bool) -> Option<&[u8]> {
        let _ = self.outbox.push(frame.to_raw());
        // Keep a slot free for the registration that will carry the queue.
        if !deferrable || self.outbox.len() + 1 >= N {
            return Some(bytemuck::cast_slice(&self.outbox));
        }
        None
    }

    /// Everything queued, to be written now (for an explicit flush).
    pub fn pending(&self) -> Option<&[u8]> {
        (!self.outbox.is_empty()).then(|| bytemuck::cast_slice(&self.outbox))
    }

    /// The bytes last returned were written.
    pub fn written(&mut self) {
        self.outbox.clear();
    }

    /// Bytes arrived from the manager.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientFault> {
        let mut fault = None;
        let awaiting = &mut self.awaiting;
        let refused = &mut self.refused;
        let doorbell_in_flight = &mut self.doorbell_in_flight;
        let offer = &mut self.offer;
        self.replies
            .push(bytes, |reply| match (awaiting.pop_front(), reply) {
                (None, _) => fault = fault.or(Some(ClientFault::UnsolicitedReply)),
                (Some(name), Reply::JournalReady) if name == journal::SETUP => *offer = Some(true),
                (Some(_), Reply::JournalReady) => {
                    fault = fault.or(Some(ClientFault::BadReply(BadReply(JOURNAL_READY))));
                }
                (Some(name), _) if name == journal::SETUP => *offer = Some(false),
                (Some(name), Reply::Accepted) if name == journal::DOORBELL => {
                    *doorbell_in_flight = false;
                }
                (Some(_), Reply::Accepted) => {}
                (Some(name), Reply::Refused) => *refused = refused.or(Some(name)),
            })
            .map_err(ClientFault::BadReply)?;
        fault.map_or(Ok(()), Err)
    }

    /// The manager closed the stream.
    pub fn on_closed(&mut self) -> ClientFault {
        ClientFault::ManagerClosed {
            unanswered: self.awaiting.len(),
        }
    }

    /// A refusal seen since the last call, if any.
    pub fn take_refusal(&mut self) -> Option<SegmentName> {
        self.refused.take()
    }
}

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError<E> {
    /// The transport failed.
    Transport(E),
    /// The manager broke the protocol, closed, or refused.
    Fault(ClientFault),
    /// An earlier error left this connection unusable.
    Poisoned,
}

impl<E> ClientError<E> {
    /// Whether the connection is still usable (only a refusal leaves it so).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::Fault(ClientFault::Refused(_)))
    }
}

impl<E: fmt::Display> fmt::Display for ClientError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(err) => write!(f, "manager connection failed: {err}"),
            Self::Fault(fault) => fault.fmt(f),
            Self::Poisoned => f.write_str("manager connection is unusable after an earlier error"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for ClientError<E> {}

/// A [`ClientSession`] driven over a [`Transport`].
pub struct Client<T: Transport, const N: usize = 64> {
    transport: T,
    session: ClientSession<N>,
    poisoned: bool,
}

impl<T: Transport, const N: usize> Client<T, N> {
    /// A client over `transport`.
    pub fn new(transport: T, mode: AckMode) -> Self {
        Self {
            transport,
            session: ClientSession::new(mode),
            poisoned: false,
        }
    }

    /// The session state.
    pub fn session(&self) -> &ClientSession<N> {
        &self.session
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably (to drive a loopback manager's clock, say).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Whether an earlier error made the connection unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Registers `name` before the caller creates or opens it. In strict mode
    /// this returns once the manager said `OK`; pipelined, once the frame is
    /// written. Errors seen in earlier replies are reported here too.
    pub fn register(&mut self, pid: i32, name: SegmentName) -> Result<(), ClientError<T::Error>> {
        self.guard(|this| {
            if let Some(journal) = this.session.journal {
                // The one system call per registration: a non-blocking read
                // that notices a dead manager before we create anything.
                this.collect_ready()?;
                return this.append(journal, Frame::register(pid, name));
            }
            if this.session.should_collect() {
                this.collect_ready()?;
            }
            while this.session.must_wait_before_register() {
                this.wait_for_reply()?;
            }
            let bytes = this.session.register(Frame::register(pid, name));
            this.transport
                .send_all(bytes)
                .map_err(ClientError::Transport)?;
            this.session.written();
            while this.session.must_wait_after_register() {
                this.wait_for_reply()?;
            }
            this.check_refusal()
        })
    }

    /// Tells the manager the caller no longer uses `name`. `deferrable` says
    /// the caller unlinked it itself, so the release may ride along with the
    /// next write.
    pub fn release(
        &mut self,
        pid: i32,
        name: SegmentName,
        deferrable: bool,
    ) -> Result<(), ClientError<T::Error>> {
        self.guard(|this| {
            if let Some(journal) = this.session.journal {
                return this.append(journal, Frame::release(pid, name));
            }
            if let Some(bytes) = this.session.release(Frame::release(pid, name), deferrable) {
                this.transport
                    .send_all(bytes)
                    .map_err(ClientError::Transport)?;
                this.session.written();
            }
            Ok(())
        })
    }

    /// Writes deferred releases now.
    pub fn flush(&mut self) -> Result<(), ClientError<T::Error>> {
        self.guard(|this| {
            if let Some(bytes) = this.session.pending() {
                this.transport
                    .send_all(bytes)
                    .map_err(ClientError::Transport)?;
                this.session.written();
            }
            Ok(())
        })
    }

    /// Flushes and waits until every registration has been answered (with a
    /// journal: until the manager has read every frame in it).
    pub fn settle(&mut self) -> Result<(), ClientError<T::Error>> {
        self.flush()?;
        self.guard(|this| {
            if this.session.journal.is_some() {
                while this.session.awaiting() > 0 {
                    this.wait_for_reply()?;
                }
                this.ring_doorbell(0)?;
            }
            while this.session.awaiting() > 0 {
                this.wait_for_reply()?;
            }
            this.check_refusal()
        })
    }

    /// Offers `journal` to the manager; `offer` writes the given frame with
    /// the journal's memory attached (a file descriptor, for the Unix
    /// transport). Returns whether frames now go through the journal. A
    /// manager that does not know journals answers `OK`; the offer is then
    /// taken back with a release so its table forgets the reserved name.
    pub fn attach_journal(
        &mut self,
        pid: i32,
        journal: Journal<'static>,
        offer: impl FnOnce(&mut T, &[u8]) -> Result<(), T::Error>,
    ) -> Result<bool, ClientError<T::Error>> {
        self.settle()?;
        journal.initialize();
        self.guard(|this| {
            this.session.offer = None;
            offer(
                &mut this.transport,
                &Frame::register(pid, journal::SETUP).encode(),
            )
            .map_err(ClientError::Transport)?;
            let _ = this.session.awaiting.push_back(journal::SETUP);
            while this.session.offer.is_none() {
                this.wait_for_reply()?;
            }
            if this.session.offer == Some(true) {
                this.session.journal = Some(journal);
            } else {
                let take_back = Frame::release(pid, journal::SETUP).encode();
                this.transport
                    .send_all(&take_back)
                    .map_err(ClientError::Transport)?;
            }
            Ok(())
        })?;
        Ok(self.session.journal.is_some())
    }

    /// Collects replies that have already arrived, without waiting, and
    /// reports any fault in them.
    pub fn poll(&mut self) -> Result<(), ClientError<T::Error>> {
        self.guard(|this| {
            this.collect_ready()?;
            this.check_refusal()
        })
    }

    fn guard(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<(), ClientError<T::Error>>,
    ) -> Result<(), ClientError<T::Error>> {
        if self.poisoned {
            return Err(ClientError::Poisoned);
        }
        let result = op(self);
        if let Err(err) = &result {
            self.poisoned |= err.is_fatal();
        }
        result
    }

    /// Commits a frame to the journal, making room by ringing the doorbell
    /// and waiting when it is full, and ringing ahead when it is half full.
    fn append(
        &mut self,
        journal: Journal<'static>,
        frame: Frame,
    ) -> Result<(), ClientError<T::Error>> {
        let raw = frame.to_raw();
        while journal.append(&raw).is_err() {
            self.ring_doorbell(frame.pid)?;
            self.wait_for_reply()?;
        }
        let unread = journal
            .unread()
            .map_err(|_| ClientError::Fault(ClientFault::JournalCorrupt))?;
        if unread * 2 >= journal.capacity() {
            self.ring_doorbell(frame.pid)?;
        }
        Ok(())
    }

    /// Asks the manager to read the journal now, unless it is being asked already.
    fn ring_doorbell(&mut self, pid: i32) -> Result<(), ClientError<T::Error>> {
        if self.session.doorbell_in_flight {
            return Ok(());
        }
        self.transport
            .send_all(&Frame::register(pid, journal::DOORBELL).encode())
            .map_err(ClientError::Transport)?;
        let _ = self.session.awaiting.push_back(journal::DOORBELL);
        self.session.doorbell_in_flight = true;
        Ok(())
    }

    fn check_refusal(&mut self) -> Result<(), ClientError<T::Error>> {
        match self.session.take_refusal() {
            Some(name) => Err(ClientError::Fault(ClientFault::Refused(name))),
            None => Ok(()),
        }
    }

    fn collect_ready(&mut self) -> Result<(), ClientError<T::Error>> {
        let mut buf = [0u8; 128];
        loop {
            match self.transport.try_receive(&mut buf) {
                Ok(None) => return Ok(()),
                Ok(Some(0)) => return Err(ClientError::Fault(self.session.on_closed())),
                Ok(Some(n)) => {
                    self.session
                        .on_bytes(&buf[..n])
                        .map_err(ClientError::Fault)?;
                    if n < buf.len() {
                        return Ok(());
                    }
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Err(ClientError::Transport(err)),
            }
        }
    }

    fn wait_for_reply(&mut self) -> Result<(), ClientError<T::Error>> {
        let mut buf = [0u8; 128];
        let before = self.session.awaiting();
        while self.session.awaiting() >= before {
            // Read no more than the replies owed, so a stray extra reply shows
            // up as unsolicited on the next read instead of being swallowed.
            let owed = self.session.bytes_owed().clamp(1, buf.len());
            match self.transport.receive(&mut buf[..owed]) {
                Ok(0) => return Err(ClientError::Fault(self.session.on_closed())),
                Ok(n) => self
                    .session
                    .on_bytes(&buf[..n])
                    .map_err(ClientError::Fault)?,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Err(ClientError::Transport(err)),
            }
        }
        Ok(())
    }
}

impl<T: Transport + fmt::Debug, const N: usize> fmt::Debug for Client<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.transport)
            .field("session", &self.session)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl<E: TransportError> From<ClientFault> for ClientError<E> {
    fn from(fault: ClientFault) -> Self {
        Self::Fault(fault)
    }
}

#[cfg(test)]
mod tests;
