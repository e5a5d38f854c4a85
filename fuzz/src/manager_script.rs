//! A manager's life as a script: its configuration, then events.
//!
//! # Byte format
//! Six setup bytes, then events until the input ends (missing bytes read as 0).
//!
//! | setup byte | meaning |
//! |---|---|
//! | 0 | storage, mod 3: `Fixed<4, 2>`, `Fixed<8, 4>`, `Growable` |
//! | 1 | flags: 1 frame timeout on, 2 reaping on, 4 only `/torch_` names, 8 only uid 1000, 16 limit connections, 32 limit names |
//! | 2, 3, 4 | shutdown timeout, reap grace, frame timeout, in units of 50 ms |
//! | 5 | bits 0-1: connection limit - 1; bits 2-4: name limit - 1 |
//!
//! Each event starts with an opcode byte. Its high bit, on the four `Send`
//! opcodes, holds the bytes back in the connection's unsent queue instead of
//! delivering them at once; the rest of the byte, mod 11, picks the event:
//!
//! | op | event | operand bytes |
//! |---|---|---|
//! | 0 | `Connect` | uid (mod 3: 1000, 0, unknown), pid |
//! | 1 | `Send` a registration | connection, name, pid |
//! | 2 | `Send` a release | connection, name, pid |
//! | 3 | `Send` a registration with one byte replaced | connection, name, offset (mod 68), value |
//! | 4 | `Send` raw bytes | connection, length, bytes |
//! | 5 | `Deliver` unsent bytes | connection, at most this many (0: all) |
//! | 6 | `Disconnect` | connection |
//! | 7 | `Tick` | clock advance: below 128, ×10 ms; else (b - 128) × 250 ms |
//! | 8 | `TickAtWakeup` | (none) |
//! | 9 | `SegmentCreated` | name |
//! | 10 | `SegmentUnlinked` | name |
//!
//! A connection byte picks, mod (accepted + 1), one of the connections accepted
//! so far, dead ones included, or one the manager never issued. A name byte
//! picks from [`crate::name_pool`].

use arbitrary::{Arbitrary, Unstructured};
use libshm_core::frame::{FRAME_LEN, Frame};
use libshm_core::name::SegmentName;

use crate::cursor::Cursor;
use crate::name_pool;

/// The uid the manager runs as, when it checks uids.
pub const OWNER_UID: u32 = 1000;

/// A decoded script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerScript {
    /// How the manager is configured.
    pub setup: Setup,
    /// What happens to it, in order.
    pub events: Vec<Event>,
}

/// Which table storage the manager uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageChoice {
    /// `Fixed<4, 2>`: fewer names than the pool has, two connections.
    Small,
    /// `Fixed<8, 4>`.
    Medium,
    /// `Growable` (heap).
    Growable,
}

/// The manager's configuration, in milliseconds and counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Table storage.
    pub storage: StorageChoice,
    /// Shutdown after this long without a connection.
    pub shutdown_after_ms: u64,
    /// Reap orphans after this long; `None` keeps them until shutdown.
    pub reap_grace_ms: Option<u64>,
    /// Close connections that leave half a frame this long.
    pub frame_timeout_ms: Option<u64>,
    /// Accept only `/torch_` names.
    pub torch_prefix_only: bool,
    /// Accept only peers of [`OWNER_UID`].
    pub owner_uid_only: bool,
    /// Connection limit, 1 to 4.
    pub max_connections: Option<usize>,
    /// Name limit, 1 to 8.
    pub max_names: Option<usize>,
}

/// The uid a connecting peer reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerUid {
    /// [`OWNER_UID`].
    Owner,
    /// Root, someone else.
    Foreign,
    /// The OS did not say.
    Unknown,
}

/// Bytes a client writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A well-formed registration.
    Register {
        /// The name.
        name: SegmentName,
        /// Sender pid.
        pid: u8,
    },
    /// A well-formed release.
    Release {
        /// The name.
        name: SegmentName,
        /// Sender pid.
        pid: u8,
    },
    /// A registration frame with the byte at `at` replaced by `value`.
    Mangled {
        /// The name.
        name: SegmentName,
        /// Byte offset, below [`FRAME_LEN`].
        at: u8,
        /// The byte put there.
        value: u8,
    },
    /// Anything.
    Raw(Vec<u8>),
}

/// One thing that happens to the manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A client connects.
    Connect {
        /// Its uid.
        uid: PeerUid,
        /// Its pid.
        pid: u8,
    },
    /// A client writes `piece`; unless `hold_back`, everything it has written
    /// so far is delivered to the manager in one read.
    Send {
        /// Connection choice.
        conn: u8,
        /// The bytes.
        piece: Piece,
        /// Keep them in the socket for a later `Deliver`.
        hold_back: bool,
    },
    /// The manager reads up to `max_bytes` (0: all) of what a client wrote.
    Deliver {
        /// Connection choice.
        conn: u8,
        /// Read size.
        max_bytes: u8,
    },
    /// A client's connection ends.
    Disconnect {
        /// Connection choice.
        conn: u8,
    },
    /// Time passes, then the manager ticks.
    Tick {
        /// Encoded advance (see the module doc).
        advance: u8,
    },
    /// The clock jumps to the manager's next wake-up, then it ticks.
    TickAtWakeup,
    /// A client created the segment.
    SegmentCreated {
        /// The name.
        name: SegmentName,
    },
    /// A client unlinked the segment.
    SegmentUnlinked {
        /// The name.
        name: SegmentName,
    },
}

const HOLD_BACK: u8 = 0x80;
const EVENT_KINDS: u8 = 11;
const DURATION_UNIT_MS: u64 = 50;

mod flag {
    pub(super) const FRAME_TIMEOUT: u8 = 1;
    pub(super) const REAPING: u8 = 2;
    pub(super) const TORCH_PREFIX: u8 = 4;
    pub(super) const OWNER_UID: u8 = 8;
    pub(super) const LIMIT_CONNECTIONS: u8 = 16;
    pub(super) const LIMIT_NAMES: u8 = 32;
}

impl Piece {
    /// The bytes on the wire.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Register { name, pid } => {
                Frame::register(i32::from(*pid), *name).encode().to_vec()
            }
            Self::Release { name, pid } => Frame::release(i32::from(*pid), *name).encode().to_vec(),
            Self::Mangled { name, at, value } => {
                let mut frame = Frame::register(1, *name).encode();
                frame[usize::from(*at) % FRAME_LEN] = *value;
                frame.to_vec()
            }
            Self::Raw(bytes) => bytes.clone(),
        }
    }
}

impl Event {
    /// How far the clock moves for a `Tick`.
    pub fn advance_ms(advance: u8) -> u64 {
        if advance < 128 {
            u64::from(advance) * 10
        } else {
            u64::from(advance - 128) * 250
        }
    }
}

impl ManagerScript {
    /// Decodes fuzz input; every input is a script.
    pub fn decode(bytes: &[u8]) -> Self {
        let mut cursor = Cursor::new(bytes);
        let setup = Setup::decode(&mut cursor);
        let mut events = Vec::new();
        while !cursor.is_empty() {
            events.push(Event::decode(&mut cursor));
        }
        Self { setup, events }
    }

    /// Encodes a script so that [`ManagerScript::decode`] gives it back.
    /// Panics on values the format cannot carry (for writing seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.setup.encode().to_vec();
        for event in &self.events {
            event.encode(&mut out);
        }
        out
    }
}

impl<'a> Arbitrary<'a> for ManagerScript {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self::decode(u.bytes(u.len())?))
    }

    fn arbitrary_take_rest(u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self::decode(u.take_rest()))
    }
}

impl Setup {
    fn decode(cursor: &mut Cursor<'_>) -> Self {
        let storage = match cursor.byte() % 3 {
            0 => StorageChoice::Small,
            1 => StorageChoice::Medium,
            _ => StorageChoice::Growable,
        };
        let flags = cursor.byte();
        let shutdown_after_ms = u64::from(cursor.byte()) * DURATION_UNIT_MS;
        let reap_grace_ms = u64::from(cursor.byte()) * DURATION_UNIT_MS;
        let frame_timeout_ms = u64::from(cursor.byte()) * DURATION_UNIT_MS;
        let limits = cursor.byte();
        let on = |bit: u8| flags & bit != 0;
        Self {
            storage,
            shutdown_after_ms,
            reap_grace_ms: on(flag::REAPING).then_some(reap_grace_ms),
            frame_timeout_ms: on(flag::FRAME_TIMEOUT).then_some(frame_timeout_ms),
            torch_prefix_only: on(flag::TORCH_PREFIX),
            owner_uid_only: on(flag::OWNER_UID),
            max_connections: on(flag::LIMIT_CONNECTIONS).then_some(usize::from(limits & 0x3) + 1),
            max_names: on(flag::LIMIT_NAMES).then_some(usize::from((limits >> 2) & 0x7) + 1),
        }
    }

    fn encode(&self) -> [u8; 6] {
        let units = |ms: u64| {
            assert!(
                ms.is_multiple_of(DURATION_UNIT_MS) && ms / DURATION_UNIT_MS <= 255,
                "{ms} ms"
            );
            (ms / DURATION_UNIT_MS) as u8
        };
        let storage = match self.storage {
            StorageChoice::Small => 0,
            StorageChoice::Medium => 1,
            StorageChoice::Growable => 2,
        };
        let mut flags = 0;
        let mut set = |bit: u8, on: bool| flags |= if on { bit } else { 0 };
        set(flag::FRAME_TIMEOUT, self.frame_timeout_ms.is_some());
        set(flag::REAPING, self.reap_grace_ms.is_some());
        set(flag::TORCH_PREFIX, self.torch_prefix_only);
        set(flag::OWNER_UID, self.owner_uid_only);
        set(flag::LIMIT_CONNECTIONS, self.max_connections.is_some());
        set(flag::LIMIT_NAMES, self.max_names.is_some());
        let connections = self.max_connections.map_or(0, |n| {
            assert!((1..=4).contains(&n), "connection limit {n}");
            n as u8 - 1
        });
        let names = self.max_names.map_or(0, |n| {
            assert!((1..=8).contains(&n), "name limit {n}");
            n as u8 - 1
        });
        [
            storage,
            flags,
            units(self.shutdown_after_ms),
            units(self.reap_grace_ms.unwrap_or(0)),
            units(self.frame_timeout_ms.unwrap_or(0)),
            connections | names << 2,
        ]
    }
}

impl Event {
    fn decode(cursor: &mut Cursor<'_>) -> Self {
        let op = cursor.byte();
        let hold_back = op & HOLD_BACK != 0;
        match (op & !HOLD_BACK) % EVENT_KINDS {
            0 => Self::Connect {
                uid: match cursor.byte() % 3 {
                    0 => PeerUid::Owner,
                    1 => PeerUid::Foreign,
                    _ => PeerUid::Unknown,
                },
                pid: cursor.byte(),
            },
            kind @ 1..=4 => {
                let conn = cursor.byte();
                let piece = match kind {
                    1 => Piece::Register {
                        name: name_pool::pick(cursor.byte()),
                        pid: cursor.byte(),
                    },
                    2 => Piece::Release {
                        name: name_pool::pick(cursor.byte()),
                        pid: cursor.byte(),
                    },
                    3 => Piece::Mangled {
                        name: name_pool::pick(cursor.byte()),
                        at: cursor.byte() % FRAME_LEN as u8,
                        value: cursor.byte(),
                    },
                    _ => {
                        let len = cursor.byte();
                        Piece::Raw(cursor.take(usize::from(len)).to_vec())
                    }
                };
                Self::Send {
                    conn,
                    piece,
                    hold_back,
                }
            }
            5 => Self::Deliver {
                conn: cursor.byte(),
                max_bytes: cursor.byte(),
            },
            6 => Self::Disconnect {
                conn: cursor.byte(),
            },
            7 => Self::Tick {
                advance: cursor.byte(),
            },
            8 => Self::TickAtWakeup,
            9 => Self::SegmentCreated {
                name: name_pool::pick(cursor.byte()),
            },
            _ => Self::SegmentUnlinked {
                name: name_pool::pick(cursor.byte()),
            },
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let name = |name: &SegmentName| name_pool::index_of(name.as_str());
        match self {
            Self::Connect { uid, pid } => {
                let uid = match uid {
                    PeerUid::Owner => 0,
                    PeerUid::Foreign => 1,
                    PeerUid::Unknown => 2,
                };
                out.extend([0, uid, *pid]);
            }
            Self::Send {
                conn,
                piece,
                hold_back,
            } => {
                let flag = if *hold_back { HOLD_BACK } else { 0 };
                match piece {
                    Piece::Register { name: n, pid } => {
                        out.extend([1 | flag, *conn, name(n), *pid])
                    }
                    Piece::Release { name: n, pid } => out.extend([2 | flag, *conn, name(n), *pid]),
                    Piece::Mangled { name: n, at, value } => {
                        assert!(usize::from(*at) < FRAME_LEN, "offset {at}");
                        out.extend([3 | flag, *conn, name(n), *at, *value]);
                    }
                    Piece::Raw(bytes) => {
                        let len =
                            u8::try_from(bytes.len()).expect("raw pieces are at most 255 bytes");
                        out.extend([4 | flag, *conn, len]);
                        out.extend_from_slice(bytes);
                    }
                }
            }
            Self::Deliver { conn, max_bytes } => out.extend([5, *conn, *max_bytes]),
            Self::Disconnect { conn } => out.extend([6, *conn]),
            Self::Tick { advance } => out.extend([7, *advance]),
            Self::TickAtWakeup => out.push(8),
            Self::SegmentCreated { name: n } => out.extend([9, name(n)]),
            Self::SegmentUnlinked { name: n } => out.extend([10, name(n)]),
        }
    }
}
