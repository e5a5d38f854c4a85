//! A client session's life as a script, run against a model of its queue and
//! reply window.
//!
//! # Byte format
//! One mode byte (0: strict; otherwise pipelined with a window of the byte
//! minus one, so 0 and windows above the session's capacity are tried), then
//! events until the input ends. Each event is an opcode byte, mod 7:
//!
//! | op | event | operand bytes |
//! |---|---|---|
//! | 0 | `Register` (skipped while the window is full) | name |
//! | 1 | `Release` | name, deferrable (low bit) |
//! | 2 | `Replies`: a batch of well-formed replies | count - 1 (mod 8), refusal bit mask |
//! | 3 | `RawReply`: any bytes from the manager | length, bytes |
//! | 4 | `ManagerClosed` | (none) |
//! | 5 | `TakeRefusal` | (none) |
//! | 6 | `Flush` | (none) |
//!
//! The driver plays by the session's rules, as [`libshm_core::client::Client`]
//! does: it never registers while it must wait, calls `written` after every
//! write, and stops at the first fault.

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use libshm_core::ack::{ACK, BadReply, JOURNAL_READY, REFUSAL};
use libshm_core::client::{AckMode, ClientFault, ClientSession};
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

/// What the session should hold.
#[derive(Default)]
struct SessionModel {
    /// Frames queued, not yet written.
    queued: Vec<Frame>,
    /// Registrations written, not yet answered.
    awaiting: VecDeque<SegmentName>,
    /// The first refusal since the application last asked.
    refused: Option<SegmentName>,
    /// First byte of a reply whose second byte has not arrived.
    half: Option<u8>,
}

impl SessionModel {
    fn queued_bytes(&self) -> Vec<u8> {
        self.queued.iter().flat_map(Frame::encode).collect()
    }

    /// What `on_bytes` must return, updating the model as the session must.
    fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientFault> {
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
                return Err(ClientFault::BadReply(BadReply(reply)));
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
        fault.map_or(Ok(()), Err)
    }
}

/// Runs `script`, panicking if the session's answers or counters differ from
/// the model's. Faults must come back as [`ClientFault`] values, never panics.
pub fn run_client_script(script: &ClientScript) {
    let mut session = ClientSession::<SESSION_CAPACITY>::new(script.mode);
    let mut model = SessionModel::default();
    let window = match script.mode {
        AckMode::Strict => 1,
        AckMode::Pipelined { max_in_flight } => {
            usize::from(max_in_flight).clamp(1, SESSION_CAPACITY)
        }
    };
    for event in &script.events {
        match event {
            ClientEvent::Register(name) => {
                if session.must_wait_before_register() {
                    assert!(
                        model.awaiting.len() >= window,
                        "waits with the window not full"
                    );
                    continue;
                }
                assert!(model.awaiting.len() < window, "window of {window} overrun");
                let frame = Frame::register(PID, *name);
                model.queued.push(frame);
                let expected = model.queued_bytes();
                assert_eq!(
                    session.register(frame),
                    &expected[..],
                    "bytes written for registering {name}"
                );
                session.written();
                model.queued.clear();
                model.awaiting.push_back(*name);
                assert_eq!(
                    session.must_wait_after_register(),
                    script.mode == AckMode::Strict,
                    "waiting after a registration"
                );
            }
            ClientEvent::Release { name, deferrable } => {
                model.queued.push(Frame::release(PID, *name));
                let write_now = !deferrable || model.queued.len() + 1 >= SESSION_CAPACITY;
                let expected = write_now.then(|| model.queued_bytes());
                assert_eq!(
                    session.release(Frame::release(PID, *name), *deferrable),
                    expected.as_deref(),
                    "release of {name}"
                );
                if write_now {
                    session.written();
                    model.queued.clear();
                }
            }
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
                let expected = model.on_bytes(&bytes);
                assert_eq!(session.on_bytes(&bytes), expected, "replies {bytes:?}");
                if expected.is_err() {
                    return;
                }
            }
            ClientEvent::RawReply(bytes) => {
                let expected = model.on_bytes(bytes);
                assert_eq!(session.on_bytes(bytes), expected, "reply bytes {bytes:?}");
                if expected.is_err() {
                    return;
                }
            }
            ClientEvent::ManagerClosed => {
                assert_eq!(
                    session.on_closed(),
                    ClientFault::ManagerClosed {
                        unanswered: model.awaiting.len()
                    }
                );
                return;
            }
            ClientEvent::TakeRefusal => assert_eq!(session.take_refusal(), model.refused.take()),
            ClientEvent::Flush => {
                let expected = (!model.queued.is_empty()).then(|| model.queued_bytes());
                assert_eq!(session.pending(), expected.as_deref(), "flush");
                session.written();
                model.queued.clear();
            }
        }
        assert_eq!(
            session.awaiting(),
            model.awaiting.len(),
            "registrations awaiting a reply"
        );
        assert_eq!(session.queued(), model.queued.len(), "frames queued");
        let owed = (model.awaiting.len() * 2).saturating_sub(usize::from(model.half.is_some()));
        assert_eq!(session.bytes_owed(), owed, "reply bytes owed");
        assert_eq!(
            session.must_wait_before_register(),
            model.awaiting.len() >= window
        );
        assert_eq!(
            session.should_collect(),
            !model.awaiting.is_empty() && model.awaiting.len() * 2 >= window
        );
    }
}
