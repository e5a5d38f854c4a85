//! The client side: when to write frames and when to wait for replies.
//!
//! [`ClientSession`] is the whole client protocol, and does no IO. The
//! caller starts an operation ([`register`](ClientSession::register),
//! [`release`](ClientSession::release), [`flush`](ClientSession::flush),
//! [`settle`](ClientSession::settle), [`poll`](ClientSession::poll),
//! [`offer_journal`](ClientSession::offer_journal)); then
//! [`step`](ClientSession::step) says what its driver must do, as a [`Step`]:
//! write these bytes, wait for replies, read the replies already there, or
//! nothing more (with the operation's result). The driver does it and reports
//! back ([`sent`](ClientSession::sent), [`received`](ClientSession::received),
//! [`nothing_ready`](ClientSession::nothing_ready),
//! [`failed`](ClientSession::failed)). The `libshm` crate's `Client` is the
//! blocking driver over a [`Transport`](crate::transport::Transport); a
//! `no_std` runtime writes its own, in a dozen lines (see the crate example).
//!
//! Two modes:
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
//! shared-memory [journal](crate::journal) ([`ClientSession::offer_journal`]):
//! no system call and no wake-up per frame, the same crash safety, and the
//! socket carries only a doorbell now and then. PyTorch's manager declines the
//! offer and the socket path goes on as before.
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
use crate::journal::{Answer, Appended, Journal, JournalMemory, NoJournal, Route};
use crate::name::SegmentName;

/// The most bytes a [`Step`] asks its driver to read at once: the size of
/// the driver's reply buffer.
pub const READ_MAX: usize = 128;

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
    /// The manager refused this registration (its registry is full, or the
    /// name is outside its prefix).
    Refused(SegmentName),
    /// The journal's counters say the manager read more than was written.
    JournalCorrupt,
}

impl ClientFault {
    /// Whether the connection is still usable after it (only a refusal
    /// leaves it so).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
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

/// An operation could not start: an earlier fault, a failed transport or an
/// operation abandoned midway left the connection unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Broken;

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("manager connection is unusable after an earlier error")
    }
}

impl core::error::Error for Broken {}

/// Why a driver's call failed.
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

impl<E> From<ClientFault> for ClientError<E> {
    fn from(fault: ClientFault) -> Self {
        Self::Fault(fault)
    }
}

impl<E> From<Broken> for ClientError<E> {
    fn from(_: Broken) -> Self {
        Self::Poisoned
    }
}

/// What the session needs its driver to do next.
#[derive(Debug)]
pub enum Step<'a, M> {
    /// Write all of `bytes`, then call [`ClientSession::sent`]. A write that
    /// fails part way leaves the stream broken: call
    /// [`ClientSession::failed`].
    Send(&'a [u8]),
    /// The journal offer: write all of `bytes` with `memory` attached (its
    /// file descriptor, over a Unix socket), then call
    /// [`ClientSession::sent`]. A transport that cannot attach memory writes
    /// the bytes alone; the manager then declines.
    Offer {
        /// The offer frame.
        bytes: &'a [u8],
        /// The journal's memory.
        memory: &'a M,
    },
    /// Wait for at least one byte from the manager and read at most `max`
    /// (so that a stray reply shows up on the next read instead of being
    /// swallowed), then call [`ClientSession::received`].
    Receive {
        /// At most this many bytes (1 to [`READ_MAX`]).
        max: usize,
    },
    /// Read at most `max` bytes the manager has already sent, without
    /// waiting, then call [`ClientSession::received`], or
    /// [`ClientSession::nothing_ready`] if there were none.
    TryReceive {
        /// At most this many bytes ([`READ_MAX`]).
        max: usize,
    },
    /// No operation is in progress; the last one ended with this result.
    Done(Result<(), ClientFault>),
}

/// Steps are equal when they ask for the same thing (offers: of the same memory).
impl<M> PartialEq for Step<'_, M> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Send(a), Self::Send(b)) => a == b,
            (
                Self::Offer { bytes, memory },
                Self::Offer {
                    bytes: other_bytes,
                    memory: other_memory,
                },
            ) => bytes == other_bytes && core::ptr::eq(*memory, *other_memory),
            (Self::Receive { max: a }, Self::Receive { max: b })
            | (Self::TryReceive { max: a }, Self::TryReceive { max: b }) => a == b,
            (Self::Done(a), Self::Done(b)) => a == b,
            _ => false,
        }
    }
}

impl<M> Eq for Step<'_, M> {}

/// The client protocol state for one manager connection, with room for `N`
/// queued frames and `N` unanswered registrations. `M` is the memory of the
/// journal it may offer; the session owns it once offered.
#[derive(Debug)]
pub struct ClientSession<const N: usize, M = NoJournal> {
    mode: AckMode,
    /// Frames to write with the next write, oldest first.
    outbox: heapless::Vec<AllocInfo, N>,
    /// Frames written whose answer has not arrived, oldest first.
    awaiting: heapless::Deque<SegmentName, N>,
    /// The first refusal not yet reported.
    refused: Option<SegmentName>,
    replies: ReplyReader,
    route: Route<M>,
    state: State,
}

/// Whether the session is in an operation, and whether it can start one.
#[derive(Clone, Copy, Debug)]
enum State {
    /// Ready for an operation; the last one's result.
    Ready(Result<(), ClientFault>),
    /// In an operation.
    Busy(Op),
    /// Unusable; the last operation's result as the session saw it.
    Broken(Result<(), ClientFault>),
}

/// An operation in progress, and how far it got.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// A registration through the socket.
    Register { frame: Frame, stage: Registering },
    /// A registration or release through the journal.
    Journal { frame: Frame, stage: Journaling },
    /// A release or a flush: the queued frames are being written.
    Write,
    /// Waiting until every frame has been answered (and read from the journal).
    Settle(Settling),
    /// Offering a journal: settle first, then offer, then take a decline back.
    Offer { pid: i32, stage: Offering },
    /// Collecting replies already there, then reporting a refusal.
    Poll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Registering {
    /// Deciding whether to collect replies first.
    Start,
    /// Reading replies already there (half the window is in flight).
    Collect,
    /// Waiting for room in the window.
    Window,
    /// The queue, ending with this registration, is being written.
    Write,
    /// Strict mode: waiting for the answer.
    Answer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Journaling {
    /// Reading replies already there: the one system call per registration,
    /// which notices a dead manager before anything is created.
    Collect,
    /// Committing the frame.
    Append,
    /// The ring was full; the doorbell is being written.
    RingFull,
    /// Waiting for an answer (the doorbell's) until fewer than `below`
    /// frames await one, then appending again.
    Room { below: usize },
    /// The frame is committed and the ring half full; the doorbell is being written.
    RingHalf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settling {
    /// Writing what is queued.
    Flush,
    /// Waiting for every answer.
    Answers,
    /// With a journal: the doorbell is being written.
    Ring,
    /// With a journal: waiting for the doorbell's answer.
    Doorbell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Offering {
    /// Settling everything before the offer.
    Settle(Settling),
    /// The offer is being written.
    Write,
    /// Waiting for its answer.
    Answer,
    /// Declined: the release taking it back is being written.
    TakeBack,
}

/// What a stage needs now.
enum Advance {
    /// This IO.
    Io(Io),
    /// Nothing: go on to this operation state.
    To(Op),
    /// The operation is over.
    Finish(Result<(), ClientFault>),
}

#[derive(Clone, Copy)]
enum Io {
    Send,
    Offer,
    Receive,
    TryReceive,
}

/// How a settle ends: done, or on to the offer.
#[derive(Clone, Copy)]
enum AfterSettle {
    Done,
    Offer(i32),
}

impl<const N: usize, M: JournalMemory> ClientSession<N, M> {
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
            route: Route::socket(),
            state: State::Ready(Ok(())),
        }
    }

    /// The mode.
    pub fn mode(&self) -> AckMode {
        self.mode
    }

    /// Frames written and not yet answered.
    pub fn awaiting(&self) -> usize {
        self.awaiting.len()
    }

    /// Frames queued but not yet written (deferred releases).
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Whether frames go through a journal the manager accepted.
    pub fn is_journaled(&self) -> bool {
        self.route.is_journal()
    }

    /// The journal frames go through, once the manager accepted it. The
    /// manager reads what is committed there before it acts on the
    /// connection's end, so frames committed here directly (bypassing the
    /// session) still count: a driver giving up on the connection hands its
    /// holds back this way.
    pub fn journal(&self) -> Option<Journal<'_>> {
        self.route.journal()
    }

    /// Whether an earlier error made the connection unusable.
    pub fn is_broken(&self) -> bool {
        matches!(self.state, State::Broken(_))
    }

    /// Registers `name` before the caller creates or opens it. Done in strict
    /// mode once the manager said `OK`; pipelined, once the frame is written
    /// (or committed to the journal). Refusals seen in earlier replies are
    /// reported here too. With a journal, names the manager did not
    /// advertise taking go through the socket, where a refusal is answered.
    pub fn register(&mut self, pid: i32, name: SegmentName) -> Result<(), Broken> {
        let frame = Frame::register(pid, name);
        self.begin(if self.route.journals(&name) {
            Op::Journal {
                frame,
                stage: Journaling::Collect,
            }
        } else {
            Op::Register {
                frame,
                stage: Registering::Start,
            }
        })
    }

    /// Tells the manager the caller no longer uses `name`. `deferrable` says
    /// the caller unlinked it itself, so the release may ride along with the
    /// next write. It takes the route its registration took.
    pub fn release(&mut self, pid: i32, name: SegmentName, deferrable: bool) -> Result<(), Broken> {
        let frame = Frame::release(pid, name);
        if self.route.journals(&name) {
            return self.begin(Op::Journal {
                frame,
                stage: Journaling::Append,
            });
        }
        self.begin(Op::Write)?;
        let _ = self.outbox.push(frame.to_raw());
        // Keep a slot free for the registration that will carry the queue.
        if deferrable && self.outbox.len() + 1 < N {
            self.state = State::Ready(Ok(()));
        }
        Ok(())
    }

    /// Writes deferred releases now.
    pub fn flush(&mut self) -> Result<(), Broken> {
        self.begin(Op::Write)?;
        if self.outbox.is_empty() {
            self.state = State::Ready(Ok(()));
        }
        Ok(())
    }

    /// Flushes and waits until every registration has been answered (with a
    /// journal: until the manager has read every frame in it).
    pub fn settle(&mut self) -> Result<(), Broken> {
        self.begin(Op::Settle(Settling::Flush))
    }

    /// Collects replies that have already arrived, without waiting, and
    /// reports any fault in them.
    pub fn poll(&mut self) -> Result<(), Broken> {
        self.begin(Op::Poll)
    }

    /// Offers the journal in `memory` to the manager, after settling. Once
    /// done, [`ClientSession::is_journaled`] says whether frames now go
    /// through it. A manager that does not know journals answers `OK`; the
    /// offer is then taken back with a release so its table forgets the
    /// reserved name. A session that already has a journal keeps it.
    pub fn offer_journal(&mut self, pid: i32, memory: M) -> Result<(), Broken> {
        self.begin(Op::Offer {
            pid,
            stage: Offering::Settle(Settling::Flush),
        })?;
        if self.route.offer(memory).is_err() {
            self.state = State::Ready(Ok(()));
        }
        Ok(())
    }

    fn begin(&mut self, op: Op) -> Result<(), Broken> {
        match self.state {
            State::Ready(_) => {
                self.state = State::Busy(op);
                Ok(())
            }
            State::Broken(_) => Err(Broken),
            State::Busy(_) => {
                // The operation in progress was abandoned: what it wrote or
                // read is unknown, so the stream cannot be trusted.
                self.state = State::Broken(Ok(()));
                Err(Broken)
            }
        }
    }

    /// What the driver must do now.
    pub fn step(&mut self) -> Step<'_, M> {
        let io = loop {
            let op = match self.state {
                State::Busy(op) => op,
                State::Ready(result) | State::Broken(result) => return Step::Done(result),
            };
            match self.advance(op) {
                Advance::Io(io) => break io,
                Advance::To(op) => self.state = State::Busy(op),
                Advance::Finish(result) => self.finish(result),
            }
        };
        let bytes = bytemuck::cast_slice(&self.outbox);
        match io {
            Io::Send => Step::Send(bytes),
            Io::Offer => match self.route.offered() {
                Some(memory) => Step::Offer { bytes, memory },
                None => Step::Send(bytes),
            },
            Io::Receive => Step::Receive {
                max: self.bytes_owed().clamp(1, READ_MAX),
            },
            Io::TryReceive => Step::TryReceive { max: READ_MAX },
        }
    }

    /// The bytes of the last [`Step::Send`] or [`Step::Offer`] were written.
    pub fn sent(&mut self) {
        let State::Busy(op) = self.state else {
            return;
        };
        let next = match op {
            Op::Register {
                frame,
                stage: Registering::Write,
            } => Op::Register {
                frame,
                stage: Registering::Answer,
            },
            Op::Journal {
                frame,
                stage: Journaling::RingFull,
            } => Op::Journal {
                frame,
                // Wait for one more answer than is owed now: the doorbell's,
                // or an earlier one if it is still on its way.
                stage: Journaling::Room {
                    below: self.awaiting.len(),
                },
            },
            Op::Settle(settling) => match Self::settle_sent(settling) {
                Some(settling) => Op::Settle(settling),
                None => return,
            },
            Op::Offer {
                pid,
                stage: Offering::Settle(settling),
            } => match Self::settle_sent(settling) {
                Some(settling) => Op::Offer {
                    pid,
                    stage: Offering::Settle(settling),
                },
                None => return,
            },
            Op::Offer {
                pid,
                stage: Offering::Write,
            } => Op::Offer {
                pid,
                stage: Offering::Answer,
            },
            Op::Journal {
                stage: Journaling::RingHalf,
                ..
            }
            | Op::Write
            | Op::Offer {
                stage: Offering::TakeBack,
                ..
            } => {
                self.outbox.clear();
                return self.finish(Ok(()));
            }
            // Nothing was being written.
            _ => return,
        };
        self.outbox.clear();
        self.state = State::Busy(next);
    }

    fn settle_sent(settling: Settling) -> Option<Settling> {
        match settling {
            Settling::Flush => Some(Settling::Answers),
            Settling::Ring => Some(Settling::Doorbell),
            Settling::Answers | Settling::Doorbell => None,
        }
    }

    /// Bytes arrived from the manager. Empty `bytes` is end of file, as a
    /// read returns it: the manager closed the connection.
    pub fn received(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            let unanswered = self.awaiting.len();
            return self.finish(Err(ClientFault::ManagerClosed { unanswered }));
        }
        if let Err(fault) = self.on_bytes(bytes) {
            return self.finish(Err(fault));
        }
        // A full read may have left more behind.
        if bytes.len() < READ_MAX {
            self.collected();
        }
    }

    /// A [`Step::TryReceive`] found nothing to read.
    pub fn nothing_ready(&mut self) {
        self.collected();
    }

    /// The driver could not carry out the last step (its transport failed).
    /// The stream's state is unknown: the session is unusable.
    pub fn failed(&mut self) {
        self.route.withdraw();
        self.state = State::Broken(match self.state {
            State::Ready(result) | State::Broken(result) => result,
            State::Busy(_) => Ok(()),
        });
    }

    /// Collecting the replies that were ready is over.
    fn collected(&mut self) {
        let State::Busy(op) = self.state else {
            return;
        };
        self.state = State::Busy(match op {
            Op::Register {
                frame,
                stage: Registering::Collect,
            } => Op::Register {
                frame,
                stage: Registering::Window,
            },
            Op::Journal {
                frame,
                stage: Journaling::Collect,
            } => Op::Journal {
                frame,
                stage: Journaling::Append,
            },
            Op::Poll => {
                let result = self.check_refusal();
                return self.finish(result);
            }
            other => other,
        });
    }

    fn finish(&mut self, result: Result<(), ClientFault>) {
        if result.is_err() {
            self.route.withdraw();
        }
        self.state = match (self.state, result) {
            (State::Broken(_), _) => State::Broken(result),
            (_, Err(fault)) if fault.is_fatal() => State::Broken(result),
            _ => State::Ready(result),
        };
    }

    /// Moves `op` on by what it needs now.
    fn advance(&mut self, op: Op) -> Advance {
        match op {
            Op::Register { frame, stage } => self.advance_register(frame, stage),
            Op::Journal { frame, stage } => self.advance_journal(frame, stage),
            Op::Write => Advance::Io(Io::Send),
            Op::Settle(settling) => match self.advance_settle(settling, AfterSettle::Done) {
                Ok(settling) => Advance::To(Op::Settle(settling)),
                Err(advance) => advance,
            },
            Op::Offer {
                pid,
                stage: Offering::Settle(settling),
            } => match self.advance_settle(settling, AfterSettle::Offer(pid)) {
                Ok(settling) => Advance::To(Op::Offer {
                    pid,
                    stage: Offering::Settle(settling),
                }),
                Err(advance) => advance,
            },
            Op::Offer {
                stage: Offering::Write,
                ..
            } => Advance::Io(Io::Offer),
            Op::Offer {
                pid,
                stage: Offering::Answer,
            } => {
                if self.route.offered().is_some() {
                    Advance::Io(Io::Receive)
                } else if self.route.is_journal() {
                    Advance::Finish(Ok(()))
                } else {
                    self.queue(Route::<M>::take_back(pid), false);
                    Advance::To(Op::Offer {
                        pid,
                        stage: Offering::TakeBack,
                    })
                }
            }
            Op::Offer {
                stage: Offering::TakeBack,
                ..
            } => Advance::Io(Io::Send),
            Op::Poll => Advance::Io(Io::TryReceive),
        }
    }

    fn advance_register(&mut self, frame: Frame, stage: Registering) -> Advance {
        let to = |stage| Advance::To(Op::Register { frame, stage });
        match stage {
            Registering::Start if self.should_collect() => to(Registering::Collect),
            Registering::Start => to(Registering::Window),
            Registering::Collect => Advance::Io(Io::TryReceive),
            Registering::Window if self.awaiting.len() >= self.in_flight_limit() => {
                Advance::Io(Io::Receive)
            }
            Registering::Window => {
                if self.outbox.is_full() {
                    // Cannot happen: the outbox is written whenever it is
                    // one short of full. Dropping the oldest deferred release
                    // would be harmless (the manager forgets gone names).
                    self.outbox.remove(0);
                }
                self.queue(frame, true);
                to(Registering::Write)
            }
            Registering::Write => Advance::Io(Io::Send),
            Registering::Answer if self.mode == AckMode::Strict && !self.awaiting.is_empty() => {
                Advance::Io(Io::Receive)
            }
            Registering::Answer => Advance::Finish(self.check_refusal()),
        }
    }

    fn advance_journal(&mut self, frame: Frame, stage: Journaling) -> Advance {
        let to = |stage| Advance::To(Op::Journal { frame, stage });
        match stage {
            Journaling::Collect => Advance::Io(Io::TryReceive),
            Journaling::Append => match self.route.append(&frame) {
                Err(_) => Advance::Finish(Err(ClientFault::JournalCorrupt)),
                Ok(Appended::Committed) => Advance::Finish(Ok(())),
                Ok(Appended::HalfFull) if self.ring(frame.pid) => to(Journaling::RingHalf),
                Ok(Appended::HalfFull) => Advance::Finish(Ok(())),
                Ok(Appended::Full) if self.ring(frame.pid) => to(Journaling::RingFull),
                Ok(Appended::Full) => to(Journaling::Room {
                    below: self.awaiting.len(),
                }),
            },
            Journaling::RingFull | Journaling::RingHalf => Advance::Io(Io::Send),
            // A ring with nothing awaited cannot happen (a rung doorbell
            // awaits its answer); appending again keeps it from waiting for ever.
            Journaling::Room { below } if below > 0 && self.awaiting.len() >= below => {
                Advance::Io(Io::Receive)
            }
            Journaling::Room { .. } => to(Journaling::Append),
        }
    }

    /// Moves a settle on: `Ok` with its next stage, or `Err` with what the
    /// operation needs (IO, or its end).
    fn advance_settle(
        &mut self,
        settling: Settling,
        then: AfterSettle,
    ) -> Result<Settling, Advance> {
        match settling {
            Settling::Flush if self.outbox.is_empty() => Ok(Settling::Answers),
            Settling::Flush | Settling::Ring => Err(Advance::Io(Io::Send)),
            Settling::Answers | Settling::Doorbell if !self.awaiting.is_empty() => {
                Err(Advance::Io(Io::Receive))
            }
            Settling::Answers if self.route.is_journal() && self.ring(0) => Ok(Settling::Ring),
            Settling::Answers | Settling::Doorbell => match (self.check_refusal(), then) {
                (Ok(()), AfterSettle::Offer(pid)) => {
                    self.queue(Route::<M>::offer_frame(pid), true);
                    Err(Advance::To(Op::Offer {
                        pid,
                        stage: Offering::Write,
                    }))
                }
                (result, _) => Err(Advance::Finish(result)),
            },
        }
    }

    /// Puts `frame` in the outbox, and among those awaiting an answer if
    /// `answered`.
    fn queue(&mut self, frame: Frame, answered: bool) {
        let _ = self.outbox.push(frame.to_raw());
        if answered {
            let _ = self.awaiting.push_back(frame.name);
        }
    }

    /// Queues the doorbell unless one is already awaiting its answer (or no
    /// answer could be awaited). Returns whether it was queued.
    fn ring(&mut self, pid: i32) -> bool {
        if self.awaiting.is_full() {
            return false;
        }
        match self.route.ring(pid) {
            Some(frame) => {
                self.queue(frame, true);
                true
            }
            None => false,
        }
    }

    fn in_flight_limit(&self) -> usize {
        match self.mode {
            AckMode::Strict => 1,
            AckMode::Pipelined { max_in_flight } => usize::from(max_in_flight).clamp(1, N),
        }
    }

    /// Whether to collect replies that are ready before registering: half
    /// the window is in flight, so one read gets many.
    fn should_collect(&self) -> bool {
        !self.awaiting.is_empty() && self.awaiting.len() * 2 >= self.in_flight_limit()
    }

    /// Reply bytes still owed by the manager.
    fn bytes_owed(&self) -> usize {
        (self.awaiting.len() * 2).saturating_sub(usize::from(self.replies.is_mid_reply()))
    }

    fn check_refusal(&mut self) -> Result<(), ClientFault> {
        match self.refused.take() {
            Some(name) => Err(ClientFault::Refused(name)),
            None => Ok(()),
        }
    }

    fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientFault> {
        let mut fault = None;
        let awaiting = &mut self.awaiting;
        let refused = &mut self.refused;
        let route = &mut self.route;
        self.replies
            .push(bytes, |reply| match awaiting.pop_front() {
                None => fault = fault.or(Some(ClientFault::UnsolicitedReply)),
                Some(name) => match route.answer(&name, reply) {
                    Answer::Taken => {}
                    Answer::Misplaced => {
                        fault = fault.or(Some(ClientFault::BadReply(BadReply(JOURNAL_READY))));
                    }
                    Answer::Ordinary if reply == Reply::Refused => {
                        *refused = refused.or(Some(name));
                    }
                    Answer::Ordinary => {}
                },
            })
            .map_err(ClientFault::BadReply)?;
        fault.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests;
