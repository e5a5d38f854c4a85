//! A manager's life as a script: its configuration and its driver's habits,
//! then events.
//!
//! # Byte format
//! Ten setup bytes, then events until the input ends (missing bytes read as 0).
//!
//! | setup byte | meaning |
//! |---|---|
//! | 0 | storage, mod 3: `Fixed<4, 2>`, `Fixed<8, 4>`, `Growable` |
//! | 1 | flags: 1 frame timeout on, 2 reaping on, 4 only `/torch_` names, 8 only uid 1000, 16 limit connections, 32 limit names, 64 silence timeout on, 128 the driver takes journals |
//! | 2, 3, 4 | shutdown timeout, reap grace, frame timeout, in units of 50 ms |
//! | 5 | bits 0-1: connection limit - 1; bits 2-4: name limit - 1 |
//! | 6 | silence timeout, in units of 50 ms |
//! | 7 | linger, in units of 250 ms |
//! | 8 | batch (most names per tick; 0 acts as 1) |
//! | 9 | which pids the driver can watch: bit `pid % 8` set (while the pid lives) |
//!
//! Each event starts with an opcode byte. Its high bit, on the four `Send`
//! opcodes, holds the bytes back in the connection's unsent queue instead of
//! delivering them at once; the rest of the byte, mod 19, picks the event:
//!
//! | op | event | operand bytes |
//! |---|---|---|
//! | 0 | `Connect` | uid (mod 3: 1000, 0, unknown), pid (0: unknown) |
//! | 1 | `Send` a registration | connection, name, pid |
//! | 2 | `Send` a release | connection, name, pid |
//! | 3 | `Send` a registration with one byte replaced | connection, name, offset (mod 68), value |
//! | 4 | `Send` raw bytes | connection, length, bytes |
//! | 5 | `Deliver` unsent bytes | connection, at most this many (0: all) |
//! | 6 | `Disconnect` | connection |
//! | 7 | `Tick` | clock advance: below 128, ×10 ms; else (b - 128) × 250 ms |
//! | 8 | `TickAtWakeup` | (none) |
//! | 9 | `Namespace`: something happens under a name | name, change (see [`NsChange`]) |
//! | 10 | `PidExited`: the process dies, the driver reports it | pid |
//! | 11 | `PidReused`: a new process gets the dead pid | pid |
//! | 12 | `Perform` one chore the driver holds | bits 0-6: which (mod held), bit 7: it fails |
//! | 13 | `PerformAll` the chores the driver holds | (none) |
//! | 14 | `DeferChores`: hold chores (bit 0 set) or carry them out after every event | flag |
//! | 15 | `Adopt` a name as an orphan (a recovery sweep) | name |
//! | 16 | `Journaled`: a frame read from the connection's journal | connection, kind (mod 3: register, release, mangled), then as ops 1-3 |
//! | 17 | `Evict`: the driver closes a client that does not read its replies | connection |
//! | 18 | `ForeignWriter`: from now on the bytes read from sockets are (or no longer are) written by a process that uses this pid without speaking for it | pid |
//!
//! A connection byte picks, mod (accepted + 1), one of the connections accepted
//! so far, dead ones included, or one the manager never issued. A name byte
//! picks from [`crate::name_pool`]. Pids are the byte's value. The pid of a
//! registration or release sent on a connection names a process that wrote
//! on it (unless a `ForeignWriter` uses that pid): the driver ties a closed
//! connection's untrusted holds to those (see [`crate::manager_model`]).

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
    /// How the manager and its driver are set up.
    pub setup: Setup,
    /// What happens to it, in order.
    pub events: Vec<Event>,
}

/// Which table storage the manager uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageChoice {
    /// `Fixed<4, 2>`: fewer names than the pool has, two connections and
    /// two holders.
    Small,
    /// `Fixed<8, 4>`.
    Medium,
    /// `Growable` (heap).
    Growable,
}

/// The manager's configuration, in milliseconds and counts, and what its
/// driver can do.
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
    /// Close connections that send nothing this long after connecting.
    pub silence_timeout_ms: Option<u64>,
    /// Accept only `/torch_` names.
    pub torch_prefix_only: bool,
    /// Accept only peers of [`OWNER_UID`].
    pub owner_uid_only: bool,
    /// Connection limit, 1 to 4.
    pub max_connections: Option<usize>,
    /// Name limit, 1 to 8.
    pub max_names: Option<usize>,
    /// How long to go on after the last client while names are in transit,
    /// a multiple of 250 ms.
    pub linger_ms: u64,
    /// Most names per tick.
    pub batch: u8,
    /// The driver can watch a live pid when bit `pid % 8` is set.
    pub watchable: u8,
    /// The driver accepts journal offers.
    pub journals: bool,
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
    /// A registration frame (pid 1) with the byte at `at` replaced by `value`.
    Mangled {
        /// The name.
        name: SegmentName,
        /// Byte offset, below [`FRAME_LEN`].
        at: u8,
        /// The byte put there.
        value: u8,
    },
    /// Anything (not allowed in a journal).
    Raw(Vec<u8>),
}

/// Something that happens under a name in the shared-memory namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsChange {
    /// A creator made the segment: refcount 1 (replacing whatever was there).
    Create,
    /// An opener, or a pickled handle: refcount + 1.
    Incref,
    /// A closer, or an unpickled handle: refcount - 1.
    Decref,
    /// A closer that brought the refcount to 0 or below unlinks; otherwise
    /// like `Decref`.
    LastClose,
    /// Someone unlinked it.
    Remove,
    /// Something that is not ours sits there now (a FIFO, another user's file).
    Foreign,
    /// The header says this (a segment not yet sized reads 0).
    SetRefcount(i8),
    /// The next this many unlinks of it fail (out of descriptors, say).
    FailUnlinks(u8),
    /// Some process maps it now (`true`: a fork of a holder that died,
    /// unannounced), or nobody does any more.
    Mapped(bool),
}

/// One thing that happens to the manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A client connects.
    Connect {
        /// Its uid.
        uid: PeerUid,
        /// Its pid; 0 when the OS does not say.
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
    /// Something happens under `name` in the namespace.
    Namespace {
        /// The name.
        name: SegmentName,
        /// What.
        change: NsChange,
    },
    /// A process dies; the driver tells the manager.
    PidExited {
        /// Its pid.
        pid: u8,
    },
    /// A new process is born with a dead process's pid.
    PidReused {
        /// The pid.
        pid: u8,
    },
    /// The driver carries out one of the chores it holds, or fails to.
    Perform {
        /// Which, mod how many it holds (0 to 127).
        pick: u8,
        /// The look or unlink fails (reported as `None`).
        fail: bool,
    },
    /// The driver carries out every chore it holds, and those that follow.
    PerformAll,
    /// From now on the driver holds chores until told to carry them out
    /// (`true`), or carries them out after every event (`false`, the start).
    DeferChores {
        /// Hold them.
        on: bool,
    },
    /// A recovery sweep takes `name` on as an orphan.
    Adopt {
        /// The name.
        name: SegmentName,
    },
    /// The driver reads a frame from the connection's registration journal
    /// (only if it took the connection's journal offer).
    Journaled {
        /// Connection choice.
        conn: u8,
        /// The frame: a registration, a release or a mangled registration.
        piece: Piece,
    },
    /// The driver closes a client whose unread replies pile up.
    Evict {
        /// Connection choice.
        conn: u8,
    },
    /// Toggles whether the bytes read from sockets from now on are written
    /// by a process that puts `pid` in its frames without speaking for it
    /// (a worker in a pid namespace of its own, whose pid there is another
    /// process's here): the driver then answers `speaks_for` for `pid` with
    /// false, and declines to watch it. A journal has no writer to ask about.
    ForeignWriter {
        /// The pid it uses.
        pid: u8,
    },
}

const HOLD_BACK: u8 = 0x80;
const FAILS: u8 = 0x80;
const EVENT_KINDS: u8 = 19;
const DURATION_UNIT_MS: u64 = 50;
const LINGER_UNIT_MS: u64 = 250;

mod flag {
    pub(super) const FRAME_TIMEOUT: u8 = 1;
    pub(super) const REAPING: u8 = 2;
    pub(super) const TORCH_PREFIX: u8 = 4;
    pub(super) const OWNER_UID: u8 = 8;
    pub(super) const LIMIT_CONNECTIONS: u8 = 16;
    pub(super) const LIMIT_NAMES: u8 = 32;
    pub(super) const SILENCE_TIMEOUT: u8 = 64;
    pub(super) const JOURNALS: u8 = 128;
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

    fn decode(kind: u8, cursor: &mut Cursor<'_>) -> Self {
        match kind {
            0 => Self::Register {
                name: name_pool::pick(cursor.byte()),
                pid: cursor.byte(),
            },
            1 => Self::Release {
                name: name_pool::pick(cursor.byte()),
                pid: cursor.byte(),
            },
            2 => Self::Mangled {
                name: name_pool::pick(cursor.byte()),
                at: cursor.byte() % FRAME_LEN as u8,
                value: cursor.byte(),
            },
            _ => {
                let len = cursor.byte();
                Self::Raw(cursor.take(usize::from(len)).to_vec())
            }
        }
    }

    /// The kind (0 to 3), then the operands.
    fn encode(&self) -> (u8, Vec<u8>) {
        let name = |name: &SegmentName| name_pool::index_of(name.as_str());
        match self {
            Self::Register { name: n, pid } => (0, vec![name(n), *pid]),
            Self::Release { name: n, pid } => (1, vec![name(n), *pid]),
            Self::Mangled { name: n, at, value } => {
                assert!(usize::from(*at) < FRAME_LEN, "offset {at}");
                (2, vec![name(n), *at, *value])
            }
            Self::Raw(bytes) => {
                let len = u8::try_from(bytes.len()).expect("raw pieces are at most 255 bytes");
                let mut out = vec![len];
                out.extend_from_slice(bytes);
                (3, out)
            }
        }
    }
}

impl NsChange {
    fn decode(byte: u8) -> Self {
        let arg = byte >> 3;
        match byte & 7 {
            0 => Self::Create,
            1 => Self::Incref,
            2 => Self::Decref,
            3 => Self::LastClose,
            4 => Self::Remove,
            5 => Self::Foreign,
            // -8 to 23: negative, zero and refcounts above any dead count.
            6 => Self::SetRefcount(arg as i8 - 8),
            _ if arg < 16 => Self::FailUnlinks(arg),
            _ => Self::Mapped(arg & 1 == 1),
        }
    }

    fn encode(self) -> u8 {
        match self {
            Self::Create => 0,
            Self::Incref => 1,
            Self::Decref => 2,
            Self::LastClose => 3,
            Self::Remove => 4,
            Self::Foreign => 5,
            Self::SetRefcount(value) => {
                assert!((-8..=23).contains(&value), "refcount {value}");
                6 | ((value + 8) as u8) << 3
            }
            Self::FailUnlinks(count) => {
                assert!(count < 16, "{count} failing unlinks");
                7 | count << 3
            }
            Self::Mapped(mapped) => 7 | (16 + u8::from(mapped)) << 3,
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
        let silence_timeout_ms = u64::from(cursor.byte()) * DURATION_UNIT_MS;
        let linger_ms = u64::from(cursor.byte()) * LINGER_UNIT_MS;
        let batch = cursor.byte();
        let watchable = cursor.byte();
        let on = |bit: u8| flags & bit != 0;
        Self {
            storage,
            shutdown_after_ms,
            reap_grace_ms: on(flag::REAPING).then_some(reap_grace_ms),
            frame_timeout_ms: on(flag::FRAME_TIMEOUT).then_some(frame_timeout_ms),
            silence_timeout_ms: on(flag::SILENCE_TIMEOUT).then_some(silence_timeout_ms),
            torch_prefix_only: on(flag::TORCH_PREFIX),
            owner_uid_only: on(flag::OWNER_UID),
            max_connections: on(flag::LIMIT_CONNECTIONS).then_some(usize::from(limits & 0x3) + 1),
            max_names: on(flag::LIMIT_NAMES).then_some(usize::from((limits >> 2) & 0x7) + 1),
            linger_ms,
            batch,
            watchable,
            journals: on(flag::JOURNALS),
        }
    }

    fn encode(&self) -> [u8; 10] {
        let units = |ms: u64, unit: u64| {
            assert!(ms.is_multiple_of(unit) && ms / unit <= 255, "{ms} ms");
            (ms / unit) as u8
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
        set(flag::SILENCE_TIMEOUT, self.silence_timeout_ms.is_some());
        set(flag::JOURNALS, self.journals);
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
            units(self.shutdown_after_ms, DURATION_UNIT_MS),
            units(self.reap_grace_ms.unwrap_or(0), DURATION_UNIT_MS),
            units(self.frame_timeout_ms.unwrap_or(0), DURATION_UNIT_MS),
            connections | names << 2,
            units(self.silence_timeout_ms.unwrap_or(0), DURATION_UNIT_MS),
            units(self.linger_ms, LINGER_UNIT_MS),
            self.batch,
            self.watchable,
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
                Self::Send {
                    conn,
                    piece: Piece::decode(kind - 1, cursor),
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
            9 => Self::Namespace {
                name: name_pool::pick(cursor.byte()),
                change: NsChange::decode(cursor.byte()),
            },
            10 => Self::PidExited { pid: cursor.byte() },
            11 => Self::PidReused { pid: cursor.byte() },
            12 => {
                let byte = cursor.byte();
                Self::Perform {
                    pick: byte & !FAILS,
                    fail: byte & FAILS != 0,
                }
            }
            13 => Self::PerformAll,
            14 => Self::DeferChores {
                on: cursor.byte() & 1 != 0,
            },
            15 => Self::Adopt {
                name: name_pool::pick(cursor.byte()),
            },
            16 => {
                let conn = cursor.byte();
                let kind = cursor.byte() % 3;
                Self::Journaled {
                    conn,
                    piece: Piece::decode(kind, cursor),
                }
            }
            17 => Self::Evict {
                conn: cursor.byte(),
            },
            _ => Self::ForeignWriter { pid: cursor.byte() },
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
                let (kind, operands) = piece.encode();
                out.extend([(kind + 1) | flag, *conn]);
                out.extend(operands);
            }
            Self::Deliver { conn, max_bytes } => out.extend([5, *conn, *max_bytes]),
            Self::Disconnect { conn } => out.extend([6, *conn]),
            Self::Tick { advance } => out.extend([7, *advance]),
            Self::TickAtWakeup => out.push(8),
            Self::Namespace { name: n, change } => out.extend([9, name(n), change.encode()]),
            Self::PidExited { pid } => out.extend([10, *pid]),
            Self::PidReused { pid } => out.extend([11, *pid]),
            Self::Perform { pick, fail } => {
                assert!(*pick < FAILS, "pick {pick}");
                out.extend([12, pick | if *fail { FAILS } else { 0 }]);
            }
            Self::PerformAll => out.push(13),
            Self::DeferChores { on } => out.extend([14, u8::from(*on)]),
            Self::Adopt { name: n } => out.extend([15, name(n)]),
            Self::Journaled { conn, piece } => {
                let (kind, operands) = piece.encode();
                assert!(kind < 3, "raw bytes do not fit a journal slot");
                out.extend([16, *conn, kind]);
                out.extend(operands);
            }
            Self::Evict { conn } => out.extend([17, *conn]),
            Self::ForeignWriter { pid } => out.extend([18, *pid]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_round_trips() {
        let a = name_pool::pick(0);
        let setup = Setup {
            storage: StorageChoice::Medium,
            shutdown_after_ms: 2_000,
            reap_grace_ms: Some(1_000),
            frame_timeout_ms: None,
            silence_timeout_ms: Some(5_000),
            torch_prefix_only: true,
            owner_uid_only: false,
            max_connections: Some(3),
            max_names: None,
            linger_ms: 10_000,
            batch: 2,
            watchable: 0b1010_0101,
            journals: true,
        };
        let events = vec![
            Event::Connect {
                uid: PeerUid::Unknown,
                pid: 0,
            },
            Event::Send {
                conn: 0,
                piece: Piece::Raw(vec![1, 2, 3]),
                hold_back: true,
            },
            Event::Send {
                conn: 0,
                piece: Piece::Mangled {
                    name: a,
                    at: 67,
                    value: 9,
                },
                hold_back: false,
            },
            Event::Deliver {
                conn: 1,
                max_bytes: 0,
            },
            Event::Namespace {
                name: a,
                change: NsChange::SetRefcount(-8),
            },
            Event::Namespace {
                name: a,
                change: NsChange::FailUnlinks(15),
            },
            Event::Namespace {
                name: a,
                change: NsChange::Mapped(true),
            },
            Event::Namespace {
                name: a,
                change: NsChange::LastClose,
            },
            Event::PidExited { pid: 7 },
            Event::PidReused { pid: 7 },
            Event::Perform {
                pick: 127,
                fail: true,
            },
            Event::PerformAll,
            Event::DeferChores { on: true },
            Event::Adopt { name: a },
            Event::Journaled {
                conn: 2,
                piece: Piece::Release { name: a, pid: 4 },
            },
            Event::Evict { conn: 3 },
            Event::ForeignWriter { pid: 7 },
            Event::TickAtWakeup,
            Event::Tick { advance: 200 },
            Event::Disconnect { conn: 0 },
        ];
        let script = ManagerScript { setup, events };
        assert_eq!(ManagerScript::decode(&script.encode()), script);
    }
}
