//! A client session's life as a script: the application's calls and the
//! manager's bytes, run against a model of its queue, reply window and faults.
//!
//! # Byte format
//! One mode byte (0: strict; otherwise pipelined with a window of the byte
//! minus one, so 0 and windows above the session's capacity are tried), then
//! events until the input ends. Each event is an opcode byte, mod 7:
//!
//! | op | event | operand bytes |
//! |---|---|---|
//! | 0 | `Register` | name |
//! | 1 | `Release` | name, deferrable (low bit) |
//! | 2 | `Replies`: a batch of well-formed replies | count - 1 (mod 8), refusal bit mask |
//! | 3 | `RawReply`: any bytes from the manager | length, bytes |
//! | 4 | `ManagerClosed` | (none) |
//! | 5 | `TakeRefusal`: the application polls (collects replies already there, takes a refusal) | (none) |
//! | 6 | `Flush` | (none) |
//!
//! The harness is the session's driver and the manager's side of the stream:
//! the manager's bytes queue up in the stream until the session reads them,
//! and its close is end of file once they are read. The application's calls
//! start operations; while one waits for bytes the stream does not have yet,
//! the application is blocked and its further calls are skipped, and the
//! next bytes or the close let it go on. When the script ends the
//! application settles, then polls, unless it is blocked.

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use libshm_core::ack::{ACK, BadReply, JOURNAL_READY, REFUSAL};
use libshm_core::client::{AckMode, Broken, ClientFault, ClientSession, READ_MAX, Step};
use libshm_core::frame::Frame;
use libshm_core::journal;
use libshm_core::name::SegmentName;

use crate::cursor::Cursor;
use crate::name_pool;

/// Frames and unanswered registrations the fuzzed session holds: small, so
/// that the full-queue and full-window paths are reached.
pub const SESSION_CAPACITY: usize = 4;

const PID: i32 = 7;
const EVENT_KINDS: u8 = 7;

/// A decoded script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientScript {
    /// How the session treats replies.
    pub mode: AckMode,
    /// What happens to it, in order.
    pub events: Vec<ClientEvent>,
}

/// One thing that happens to a client session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The application registers a name.
    Register(SegmentName),
    /// The application releases a name.
    Release {
        /// The name.
        name: SegmentName,
        /// The application unlinked it itself, so the release may wait.
        deferrable: bool,
    },
    /// `count` well-formed replies; bit `i` of `refusals` makes the `i`-th a `NO`.
    Replies {
        /// 1 to 8.
        count: u8,
        /// Which ones are refusals.
        refusals: u8,
    },
    /// Any bytes from the manager.
    RawReply(Vec<u8>),
    /// The manager closed the connection.
    ManagerClosed,
    /// The application asks for a refusal seen since it last asked.
    TakeRefusal,
    /// The application writes deferred releases now.
    Flush,
}

impl ClientScript {
    /// Decodes fuzz input; every input is a script.
    pub fn decode(bytes: &[u8]) -> Self {
        let mut cursor = Cursor::new(bytes);
        let mode = match cursor.byte() {
            0 => AckMode::Strict,
            window => AckMode::Pipelined {
                max_in_flight: u16::from(window - 1),
            },
        };
        let mut events = Vec::new();
        while !cursor.is_empty() {
            events.push(match cursor.byte() % EVENT_KINDS {
                0 => ClientEvent::Register(name_pool::pick(cursor.byte())),
                1 => ClientEvent::Release {
                    name: name_pool::pick(cursor.byte()),
                    deferrable: cursor.byte() & 1 != 0,
                },
                2 => ClientEvent::Replies {
                    count: cursor.byte() % 8 + 1,
                    refusals: cursor.byte(),
                },
                3 => {
                    let len = cursor.byte();
                    ClientEvent::RawReply(cursor.take(usize::from(len)).to_vec())
                }
                4 => ClientEvent::ManagerClosed,
                5 => ClientEvent::TakeRefusal,
                _ => ClientEvent::Flush,
            });
        }
        Self { mode, events }
    }

    /// Encodes a script so that [`ClientScript::decode`] gives it back.
    /// Panics on values the format cannot carry (for writing seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![match self.mode {
            AckMode::Strict => 0,
            AckMode::Pipelined { max_in_flight } => {
                u8::try_from(max_in_flight + 1).expect("windows up to 254 fit the mode byte")
            }
        }];
        let name = |name: &SegmentName| name_pool::index_of(name.as_str());
        for event in &self.events {
            match event {
                ClientEvent::Register(n) => out.extend([0, name(n)]),
                ClientEvent::Release {
                    name: n,
                    deferrable,
                } => out.extend([1, name(n), u8::from(*deferrable)]),
                ClientEvent::Replies { count, refusals } => {
                    assert!((1..=8).contains(count), "batches hold 1 to 8 replies");
                    out.extend([2, count - 1, *refusals]);
                }
                ClientEvent::RawReply(bytes) => {
                    out.extend([
                        3,
                        u8::try_from(bytes.len()).expect("raw replies are at most 255 bytes"),
                    ]);
                    out.extend_from_slice(bytes);
                }
                ClientEvent::ManagerClosed => out.push(4),
                ClientEvent::TakeRefusal => out.push(5),
                ClientEvent::Flush => out.push(6),
            }
        }
        out
    }
}

impl<'a> Arbitrary<'a> for ClientScript {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self::decode(u.bytes(u.len())?))
    }

    fn arbitrary_take_rest(u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self::decode(u.take_rest()))
    }
}

/// An operation the application started, as the model tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    /// A registration; whether replies were to be collected first.
    Register { frame: Frame, collect_first: bool },
    /// A release that is written now.
    WrittenRelease,
    /// A flush of a non-empty queue.
    Flush,
    /// A poll.
    Poll,
    /// The settle at the end of the script.
    Settle,
    /// Done at once: a deferred release, an empty flush.
    Nothing,
}

/// The operation in progress.
#[derive(Clone, Copy, Debug)]
struct Running {
    call: Call,
    /// It has written.
    written: bool,
    /// It has read what was ready.
    collected: bool,
}

/// What the session should hold and do.
struct SessionModel {
    window: usize,
    strict: bool,
    /// Frames queued, not yet written.
    queued: Vec<Frame>,
    /// Registrations written, not yet answered.
    awaiting: VecDeque<SegmentName>,
    /// The first refusal not yet reported.
    refused: Option<SegmentName>,
    /// First byte of a reply whose second byte has not arrived.
    half: Option<u8>,
    /// The operation in progress.
    call: Option<Running>,
    /// The first fault the operation in progress ran into.
    fault: Option<ClientFault>,
    broken: bool,
}

impl SessionModel {
    fn new(mode: AckMode) -> Self {
        Self {
            window: match mode {
                AckMode::Strict => 1,
                AckMode::Pipelined { max_in_flight } => {
                    usize::from(max_in_flight).clamp(1, SESSION_CAPACITY)
                }
            },
            strict: mode == AckMode::Strict,
            queued: Vec::new(),
            awaiting: VecDeque::new(),
            refused: None,
            half: None,
            call: None,
            fault: None,
            broken: false,
        }
    }

    fn queued_bytes(&self) -> Vec<u8> {
        self.queued.iter().flat_map(Frame::encode).collect()
    }

    fn bytes_owed(&self) -> usize {
        (self.awaiting.len() * 2).saturating_sub(usize::from(self.half.is_some()))
    }

    /// The application starts `event`'s operation.
    fn begin(&mut self, event: &ClientEvent) -> Call {
        let call = match event {
            ClientEvent::Register(name) => Call::Register {
                frame: Frame::register(PID, *name),
                collect_first: !self.awaiting.is_empty() && self.awaiting.len() * 2 >= self.window,
            },
            ClientEvent::Release { name, deferrable } => {
                self.queued.push(Frame::release(PID, *name));
                // Written now unless deferrable with a slot left for the
                // registration that will carry the queue.
                if !deferrable || self.queued.len() + 1 >= SESSION_CAPACITY {
                    Call::WrittenRelease
                } else {
                    Call::Nothing
                }
            }
            ClientEvent::Flush if self.queued.is_empty() => Call::Nothing,
            ClientEvent::Flush => Call::Flush,
            _ => Call::Poll,
        };
        self.start(call);
        call
    }

    fn start(&mut self, call: Call) {
        self.call = Some(Running {
            call,
            written: false,
            collected: false,
        });
        self.fault = None;
    }

    /// The session reads what is ready, without waiting.
    fn on_collect(&mut self) {
        let Some(running) = self.call.as_mut() else {
            panic!("a read with no operation in progress");
        };
        let collecting = match running.call {
            Call::Register { collect_first, .. } => collect_first && !running.written,
            Call::Poll => true,
            _ => false,
        };
        assert!(collecting, "collects in {running:?}");
        running.collected = true;
    }

    /// The session asks to write `bytes`.
    fn on_send(&mut self, bytes: &[u8]) {
        let Some(running) = self.call.as_mut() else {
            panic!("a write with no operation in progress");
        };
        assert!(!running.written, "{running:?} writes once");
        running.written = true;
        let call = running.call;
        if let Call::Register {
            frame,
            collect_first,
        } = call
        {
            assert!(
                running.collected || !collect_first,
                "half the window was in flight: replies are collected first"
            );
            assert!(
                self.awaiting.len() < self.window,
                "window of {} overrun",
                self.window
            );
            self.queued.push(frame);
        }
        assert!(
            matches!(
                call,
                Call::Register { .. } | Call::WrittenRelease | Call::Flush | Call::Settle
            ),
            "{call:?} writes nothing"
        );
        assert_eq!(
            bytes,
            &self.queued_bytes()[..],
            "bytes written for {call:?}"
        );
        self.queued.clear();
        if let Call::Register { frame, .. } = call {
            self.awaiting.push_back(frame.name);
        }
    }

    /// The manager's `bytes` reach the session.
    fn on_bytes(&mut self, bytes: &[u8]) {
        // The first fault in reply order; decoding stops only at bytes that
        // are no reply at all.
        let mut fault = None;
        for &byte in bytes {
            let Some(first) = self.half.take() else {
                self.half = Some(byte);
                continue;
            };
            let reply = [first, byte];
            if ![ACK, REFUSAL, JOURNAL_READY].contains(&reply) {
                fault = Some(ClientFault::BadReply(BadReply(reply)));
                break;
            }
            match self.awaiting.pop_front() {
                None => fault = fault.or(Some(ClientFault::UnsolicitedReply)),
                // Any answer to the journal offer is the offer's answer, not a refusal.
                Some(name) if name == journal::SETUP => {}
                Some(_) if reply == JOURNAL_READY => {
                    fault = fault.or(Some(ClientFault::BadReply(BadReply(JOURNAL_READY))));
                }
                Some(name) if reply == REFUSAL => self.refused = self.refused.or(Some(name)),
                Some(_) => {}
            }
        }
        self.fault = self.fault.or(fault);
    }

    /// The session reads end of file.
    fn on_closed(&mut self) {
        let unanswered = self.awaiting.len();
        self.fault = self
            .fault
            .or(Some(ClientFault::ManagerClosed { unanswered }));
    }

    /// What the operation in progress must end with; it ends.
    fn finish(&mut self) -> Result<(), ClientFault> {
        let Some(Running {
            call,
            written,
            collected,
        }) = self.call.take()
        else {
            panic!("an end with no operation in progress");
        };
        assert!(collected || call != Call::Poll, "a poll reads");
        if let Some(fault) = self.fault.take() {
            self.broken = true;
            return Err(fault);
        }
        if matches!(
            call,
            Call::Register { .. } | Call::WrittenRelease | Call::Flush
        ) {
            assert!(written, "{call:?} ended without writing");
        }
        if matches!(call, Call::Settle) || (self.strict && matches!(call, Call::Register { .. })) {
            assert!(self.awaiting.is_empty(), "{call:?} ended with answers owed");
        }
        match call {
            Call::Register { .. } | Call::Poll | Call::Settle => self
                .refused
                .take()
                .map_or(Ok(()), |name| Err(ClientFault::Refused(name))),
            Call::WrittenRelease | Call::Flush | Call::Nothing => Ok(()),
        }
    }
}

/// The manager's side of the stream, and the session's driver.
struct Harness {
    session: ClientSession<SESSION_CAPACITY>,
    model: SessionModel,
    /// Bytes the manager sent that the session has not read.
    stream: VecDeque<u8>,
    /// The manager closed the stream (after `stream`).
    closed: bool,
    /// An operation is waiting for bytes the stream does not have yet.
    blocked: bool,
}

impl Harness {
    /// Starts `event`'s operation, unless the application is blocked.
    fn call(&mut self, event: &ClientEvent) {
        if self.blocked {
            return;
        }
        let started = match event {
            ClientEvent::Register(name) => self.session.register(PID, *name),
            ClientEvent::Release { name, deferrable } => {
                self.session.release(PID, *name, *deferrable)
            }
            ClientEvent::Flush => self.session.flush(),
            _ => self.session.poll(),
        };
        if self.model.broken {
            assert_eq!(started, Err(Broken), "a broken session starts nothing");
            return;
        }
        assert_eq!(started, Ok(()));
        self.model.begin(event);
        self.drive();
    }

    /// Runs the operation in progress until it ends or waits for bytes.
    fn drive(&mut self) {
        self.blocked = false;
        loop {
            match self.session.step() {
                Step::Send(bytes) => {
                    self.model.on_send(bytes);
                    self.session.sent();
                }
                Step::Offer { .. } => panic!("no journal was offered"),
                Step::Receive { max } => {
                    let owed = self.model.bytes_owed();
                    assert!(owed > 0, "waits for replies nobody owes");
                    assert_eq!(max, owed.clamp(1, READ_MAX), "reads no more than is owed");
                    if !self.read(max) {
                        self.blocked = true;
                        return;
                    }
                }
                Step::TryReceive { max } => {
                    assert_eq!(max, READ_MAX);
                    self.model.on_collect();
                    if !self.read(max) {
                        self.session.nothing_ready();
                    }
                }
                Step::Done(result) => {
                    assert_eq!(result, self.model.finish());
                    return;
                }
            }
        }
    }

    /// Hands the session up to `max` bytes of the stream, or its end. False
    /// if there is nothing to read yet.
    fn read(&mut self, max: usize) -> bool {
        if self.stream.is_empty() {
            if self.closed {
                self.model.on_closed();
                self.session.received(&[]);
            }
            return self.closed;
        }
        let n = max.min(self.stream.len());
        let chunk: Vec<u8> = self.stream.drain(..n).collect();
        self.model.on_bytes(&chunk);
        self.session.received(&chunk);
        true
    }

    /// The manager sends `bytes`.
    fn manager_sends(&mut self, bytes: &[u8]) {
        if !self.closed {
            self.stream.extend(bytes);
        }
        if self.blocked {
            self.drive();
        }
    }

    fn check(&self) {
        assert_eq!(
            self.session.awaiting(),
            self.model.awaiting.len(),
            "registrations awaiting a reply"
        );
        assert_eq!(
            self.session.queued(),
            self.model.queued.len(),
            "frames queued"
        );
        assert_eq!(self.session.is_broken(), self.model.broken, "broken");
    }
}

/// Runs `script`, panicking if the session's writes, reads, results or
/// counters differ from the model's. Faults must come back as
/// [`ClientFault`] values, never panics.
pub fn run_client_script(script: &ClientScript) {
    let mut harness = Harness {
        session: ClientSession::new(script.mode),
        model: SessionModel::new(script.mode),
        stream: VecDeque::new(),
        closed: false,
        blocked: false,
    };
    for event in &script.events {
        match event {
            ClientEvent::Replies { count, refusals } => {
                let bytes: Vec<u8> = (0..*count)
                    .flat_map(|i| {
                        if refusals & (1 << i) != 0 {
                            REFUSAL
                        } else {
                            ACK
                        }
                    })
                    .collect();
                harness.manager_sends(&bytes);
            }
            ClientEvent::RawReply(bytes) => harness.manager_sends(bytes),
            ClientEvent::ManagerClosed => {
                harness.closed = true;
                harness.manager_sends(&[]);
            }
            call => harness.call(call),
        }
        harness.check();
    }
    if harness.blocked || harness.model.broken {
        return;
    }
    assert_eq!(harness.session.settle(), Ok(()));
    harness.model.start(Call::Settle);
    harness.drive();
    harness.check();
    harness.call(&ClientEvent::TakeRefusal);
    harness.check();
}
