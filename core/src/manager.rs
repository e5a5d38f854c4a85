//! The manager state machine: who holds which name, and what to unlink when.
//!
//! Deterministic and IO-free. The driver (an event loop in a transport crate)
//! tells it about connections, bytes, ended processes and the time, and it
//! answers through [`Effects`]: reply to this connection, close that one,
//! watch this pid, and [`Chore`]s for the namespace (look at a name, unlink
//! it), whose outcomes the driver reports back ([`Manager::perform`] does
//! both for a [`Namespace`]).
//!
//! # Holders
//! A *holder* is one process on one connection. PyTorch's client keeps one
//! socket per manager for the whole process, so children forked after the
//! parent used the manager send on the parent's connection, each frame
//! carrying its sender's pid. Registrations therefore belong to (connection,
//! pid). A holder whose pid the driver can watch ([`Effects::watch_pid`]: alive
//! when first seen, our user, our pid namespace) ends when that process ends,
//! while the connection and its other processes go on; a holder whose pid
//! cannot be trusted stands for its connection and ends with it. When the
//! manager closes a connection for cause, its holders live on while their
//! process does: closing a connection never orphans a live process's names.
//!
//! # Life of a name
//! A name is *held* while live holders have registered it more often than
//! released it. When none does, the segment may still be in use: pickled into
//! a queue, in transit, kept alive by its refcount. So a name no live holder
//! holds is an *orphan* only when the refcount in its header is no larger than
//! the registrations of holders that ended without releasing it (`dead`):
//! PyTorch raises the refcount while a handle is pickled and the receiver
//! lowers it after opening, so a surplus means someone will still open it.
//! Such names are looked at again later, never reaped. An orphan is unlinked
//! after the grace period if it still is one then. A name that no longer
//! exists is forgotten.
//!
//! When no client has been connected for the shutdown timeout, every name
//! still known is unlinked and the manager is finished, as PyTorch's manager
//! does; except that while a name is in transit (or held by a live process
//! whose connection was closed), it lingers, up to [`ManagerConfig::linger`],
//! so that a receiver can still connect and open it.
//!
//! # What it guarantees
//! - Every valid registration on the socket is answered exactly once, in
//!   order, unless the connection is closed first.
//! - No frame PyTorch's client could send closes a connection: a release of a
//!   name its sender does not hold is charged to another process on the same
//!   connection that holds it, or ignored. Only malformed bytes, a frame left
//!   half-sent (or nothing sent) past the frame timeout, and journal misuse
//!   close a connection, and that connection alone.
//! - A name is only ever unlinked if it was registered, never while a live
//!   holder holds it, and as an orphan only if the namespace showed it to be
//!   one right before.
//! - Work per call is bounded: a disconnect, a process's end and each tick
//!   touch at most [`ManagerConfig::batch`] names; the rest waits for the next
//!   tick, which [`Manager::next_wakeup`] asks for at once.

use core::fmt;
use core::time::Duration;

use crate::ack::{ACK, REFUSAL};
use crate::frame::{FRAME_LEN, Frame, FrameError, FrameKind};
use crate::journal;
use crate::name::{NamePrefix, SegmentName};
use crate::namespace::{Namespace, Observed, Unlinked};
use crate::pressure::{Pressure, PressureAlarm, Usage};
use crate::status;
use crate::storage::{HoldTable, NO_TICK, NameIndex, Slab, Storage, Table, Timers};
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
    /// Close a connection that sends nothing this long after connecting: it
    /// holds nothing and costs a descriptor.
    pub silence_timeout: Option<Duration>,
    /// Accept only names with this prefix (or [`ManagerConfig::also_prefix`]).
    pub name_prefix: Option<NamePrefix>,
    /// A second prefix accepted beside `name_prefix` (a manager PyTorch
    /// starts in an environment naming another prefix serves both).
    pub also_prefix: Option<NamePrefix>,
    /// Accept only peers with this uid.
    pub owner_uid: Option<u32>,
    /// Refuse connections beyond this many.
    pub max_connections: usize,
    /// Refuse registrations of new names beyond this many.
    pub max_names: usize,
    /// How long to go on serving, after the last client left, while a known
    /// name is in transit or held by a live process (zero: PyTorch's behaviour).
    pub linger: Duration,
    /// Most holds converted, names looked at and names unlinked per call, so
    /// that a million orphans never stall the clients being served.
    pub batch: usize,
    /// Seed for hashing names (the driver picks a random one).
    pub hash_seed: u64,
    /// How often to look at a few held names, to notice one removed from
    /// outside (an `rm`, logind's `RemoveIPC`) while it is registered.
    pub patrol_every: Option<Duration>,
    /// Held names looked at per patrol.
    pub patrol_batch: usize,
    /// How often to measure how full the namespace is, to warn before it
    /// is full.
    pub measure_every: Option<Duration>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            shutdown_after: Duration::from_secs(2),
            reap_grace: Some(Duration::from_secs(2)),
            frame_timeout: Some(Duration::from_secs(5)),
            silence_timeout: Some(Duration::from_secs(5)),
            name_prefix: None,
            also_prefix: None,
            owner_uid: None,
            max_connections: usize::MAX,
            max_names: usize::MAX,
            linger: Duration::from_secs(60),
            batch: 128,
            hash_seed: 0,
            patrol_every: Some(Duration::from_secs(1)),
            patrol_batch: 64,
            measure_every: Some(Duration::from_secs(2)),
        }
    }
}

/// Why the manager closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The bytes were not a valid frame.
    Malformed(FrameError),
    /// Half a frame, left unfinished past the frame timeout, or nothing at
    /// all sent that long after connecting.
    StalledFrame,
    /// A journaled registration that did not fit the registry (it cannot be
    /// refused: the segment may exist already).
    RegistryFull,
    /// A journal frame the journal may not carry, or a journal whose counters
    /// are out of range.
    JournalMisuse,
    /// The client let its unread replies pile up past the driver's bound.
    NotReadingReplies,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(err) => write!(f, "malformed frame: {err}"),
            Self::StalledFrame => {
                f.write_str("half a frame (or nothing) sent within the frame timeout")
            }
            Self::RegistryFull => f.write_str("a journaled registration did not fit the registry"),
            Self::JournalMisuse => f.write_str("its registration journal is corrupt or misused"),
            Self::NotReadingReplies => f.write_str("it does not read its replies"),
        }
    }
}

/// Why the manager unlinks a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnlinkReason {
    /// Its holders ended, nothing is in transit, and no live holder
    /// registered it within the grace period.
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

/// Something the manager needs done in the namespace. The driver carries it
/// out when it likes (in bounded batches) and reports the outcome with
/// [`Manager::observed`] or [`Manager::unlinked`]; [`Manager::perform`] does
/// both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chore {
    /// Look at `name`: does it exist, is it ours, what is its refcount?
    Observe(SegmentName),
    /// Unlink `name` if it is a regular file of ours.
    Unlink(SegmentName, UnlinkReason),
    /// Measure how full the namespace is (report with [`Manager::measured`]).
    MeasureUsage,
    /// Ask whether any process maps `name` or holds a descriptor to it
    /// (report with [`Manager::mapped`]): an orphan whose holder died while
    /// its connection lived on, so that a process forked from it may have
    /// inherited the mapping without a word to the manager.
    CheckMapped(SegmentName),
}

/// Why a holder ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderEnd {
    /// Its process exited.
    Exited,
    /// Its connection reached end of file or failed.
    Disconnected,
}

/// Events worth a log line or a history entry; drivers may ignore them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// A registration was accepted.
    Registered {
        /// The connection it came on.
        conn: ConnId,
        /// The pid in the frame.
        pid: i32,
        /// The name.
        name: SegmentName,
    },
    /// A release was accepted.
    Released {
        /// The connection it came on.
        conn: ConnId,
        /// The pid in the frame.
        pid: i32,
        /// The name.
        name: SegmentName,
    },
    /// A name became an orphan: no live holder, and its refcount no larger
    /// than the registrations of holders that ended. It is unlinked after
    /// the grace period if it still is one.
    Orphaned {
        /// The name.
        name: SegmentName,
        /// Its refcount.
        refcount: i32,
        /// Registrations of ended holders.
        dead: u32,
    },
    /// An orphan by the refcount rule that a process still maps (one
    /// forked from a holder that died, say): kept, and judged again later.
    StillMapped {
        /// The name.
        name: SegmentName,
    },
    /// The manager unlinked a name.
    Unlinked {
        /// The name.
        name: SegmentName,
        /// Why.
        reason: UnlinkReason,
    },
    /// A released name turned out gone (its last user unlinked it); forgotten.
    Gone {
        /// The name.
        name: SegmentName,
    },
    /// A name live holders still hold is gone from the namespace, and no
    /// release explains it: someone removed it from outside.
    Vanished {
        /// The name.
        name: SegmentName,
        /// Live registrations of it.
        registrations: u32,
    },
    /// The namespace is filling up.
    Pressure(Pressure),
    /// A release of a name that neither its sender nor anyone else on its
    /// connection holds (a stray or double free); ignored.
    StrayRelease {
        /// The connection it came on.
        conn: ConnId,
        /// The pid in the frame.
        pid: i32,
        /// The name.
        name: SegmentName,
    },
    /// A journaled registration of a name outside the accepted prefix,
    /// skipped: the manager never touches such names, and closing the
    /// connection would lose the journaled frames behind it (on the socket
    /// the registration is answered `NO` instead). Noted once per connection.
    ForeignSkipped {
        /// The connection it came on.
        conn: ConnId,
        /// The pid in the frame.
        pid: i32,
        /// The name.
        name: SegmentName,
    },
    /// A holder ended while holding names; they now count as `dead`.
    HolderEnded {
        /// The connection it used.
        conn: ConnId,
        /// Its pid, if it was watched.
        pid: Option<i32>,
        /// Why.
        why: HolderEnd,
        /// Distinct names it held.
        holds: u32,
    },
    /// A name whose holders ended is in transit (its refcount shows more
    /// references than dead registrations); it is kept.
    InTransit {
        /// The name.
        name: SegmentName,
        /// Its refcount.
        refcount: i32,
        /// Registrations of ended holders.
        dead: u32,
    },
    /// Something that is not a regular file of ours sits under a registered
    /// name (another user's object, a FIFO, a symlink); the name is forgotten
    /// and never touched.
    Untouchable {
        /// The name.
        name: SegmentName,
    },
    /// The manager has no client but lingers for names in transit.
    Lingering {
        /// Names still waiting.
        names: usize,
    },
}

/// How much a [`Note`] matters to the person reading the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Every frame; for tracing a problem down.
    Trace,
    /// Routine decisions.
    Debug,
    /// What changed: holders ended, orphans reaped.
    Info,
    /// Something is wrong, and the message says how to fix it.
    Warn,
}

impl Note {
    /// How much it matters.
    pub fn severity(&self) -> Severity {
        match self {
            Self::Registered { .. } | Self::Released { .. } | Self::Gone { .. } => Severity::Trace,
            Self::StrayRelease { .. }
            | Self::InTransit { .. }
            | Self::Orphaned { .. }
            | Self::StillMapped { .. }
            | Self::Lingering { .. } => Severity::Debug,
            Self::Unlinked {
                reason: UnlinkReason::Shutdown,
                ..
            } => Severity::Debug,
            Self::HolderEnded { .. } | Self::Unlinked { .. } => Severity::Info,
            Self::Vanished { .. }
            | Self::Untouchable { .. }
            | Self::ForeignSkipped { .. }
            | Self::Pressure(_) => Severity::Warn,
        }
    }
}

/// The log line, with the fix where there is one. Managers started by
/// PyTorch pass their stderr through, so these reach the user of a failing
/// DataLoader.
impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Registered { conn, pid, name } => {
                write!(f, "registered {name} (pid {pid} on connection {conn})")
            }
            Self::Released { conn, pid, name } => {
                write!(f, "released {name} (pid {pid} on connection {conn})")
            }
            Self::StrayRelease { conn, pid, name } => write!(
                f,
                "ignored a release of {name} by pid {pid} on connection {conn}: nobody on that connection holds it"
            ),
            Self::ForeignSkipped { conn, pid, name } => write!(
                f,
                "pid {pid} on connection {conn} journaled {name}, which is outside the accepted prefix: not managed here, so its owner's manager (or nobody) reaps it"
            ),
            Self::HolderEnded {
                conn,
                pid,
                why,
                holds,
            } => {
                let why = match why {
                    HolderEnd::Exited => "its process exited",
                    HolderEnd::Disconnected => "its connection closed",
                };
                match pid {
                    Some(pid) => write!(
                        f,
                        "pid {pid} on connection {conn} held {holds} name(s) when {why}"
                    ),
                    None => write!(f, "connection {conn} held {holds} name(s) when {why}"),
                }
            }
            Self::InTransit {
                name,
                refcount,
                dead,
            } => write!(
                f,
                "{name} is in transit (refcount {refcount}, {dead} registration(s) of ended holders); kept"
            ),
            Self::StillMapped { name } => write!(
                f,
                "{name} has no holder left, yet a process maps it (a fork of one that died?); kept"
            ),
            Self::Orphaned {
                name,
                refcount,
                dead,
            } => write!(
                f,
                "{name} is an orphan (refcount {refcount}, {dead} registration(s) of ended holders); unlinked after the grace period unless someone registers it"
            ),
            Self::Unlinked {
                name,
                reason: UnlinkReason::Orphaned,
            } => write!(f, "reaped orphaned segment {name}"),
            Self::Unlinked {
                name,
                reason: UnlinkReason::Shutdown,
            } => write!(f, "unlinked {name} at shutdown"),
            Self::Gone { name } => write!(f, "{name} is gone; forgotten"),
            Self::Vanished {
                name,
                registrations,
            } => write!(
                f,
                "{name} was removed from /dev/shm while {registrations} registration(s) still hold it, \
                 and no release explains it. Likely causes: an `rm` in /dev/shm or `shmctl gc --force`, \
                 or systemd-logind removing the user's IPC objects when their last session ended \
                 (RemoveIPC=yes; set RemoveIPC=no in /etc/systemd/logind.conf, or keep the user's \
                 session with `loginctl enable-linger`). Processes that map it keep their data, but \
                 opening it by name now fails with 'No such file or directory'."
            ),
            Self::Untouchable { name } => write!(
                f,
                "{name} is not a regular file of ours (another user's object, a FIFO or a symlink); left alone and forgotten"
            ),
            Self::Lingering { names } => write!(
                f,
                "no client left; lingering for {names} name(s) in transit"
            ),
            Self::Pressure(Pressure { level, usage }) => {
                let consequence = match level {
                    crate::pressure::Level::Critical => {
                        "the next shared tensors will fail to allocate"
                    }
                    _ => "shared tensors will soon fail to allocate",
                };
                write!(
                    f,
                    "/dev/shm is {}% full ({} of {} MiB): {consequence} ('No space left on device', \
                     or a DataLoader worker killed by SIGBUS). Fix: give the container more shared \
                     memory (docker run --shm-size=8g; compose: shm_size: 8gb; Kubernetes: mount an \
                     emptyDir with medium: Memory at /dev/shm), or free leaked segments with `shmctl gc`.",
                    usage.percent(),
                    usage.used >> 20,
                    usage.total >> 20
                )
            }
        }
    }
}

/// What the manager asks of its driver.
pub trait Effects {
    /// Send `reply` (`OK` or `NO`) to `conn`. Replies to one connection must
    /// be delivered in the order given.
    fn reply(&mut self, conn: ConnId, reply: [u8; 2]);
    /// Close `conn`. The manager has already forgotten it.
    fn close(&mut self, conn: ConnId, reason: CloseReason);
    /// Carry out `chore` and report its outcome (see [`Chore`]).
    fn chore(&mut self, chore: Chore);
    /// Start watching `pid`, which sent a frame on `conn`, and report its end
    /// with [`Manager::pid_exited`]. Return false if it cannot be trusted to
    /// name the sender (not alive now, another user, another pid namespace)
    /// or cannot be watched; its holds then last as long as `conn`. Called
    /// again for a pid already watched (from another connection).
    fn watch_pid(&mut self, _conn: ConnId, _pid: i32) -> bool {
        false
    }
    /// `conn` is closed for cause: a live process of it to watch and tie
    /// its untrusted pids' holds to. The process that opened it (`peer`, as
    /// the kernel named it at connect time) if it still runs, else, where
    /// the driver can tell, one that wrote on it (the kernel's word too);
    /// `None` if none can be watched. Asked whoever wrote the bytes being
    /// read: the tie rests on the kernel's word, not on a frame's. Asked
    /// again, with no peer, each time the process tied to ends: another
    /// live writer to pass the tie on to.
    fn watch_peer(&mut self, conn: ConnId, peer: Option<i32>) -> Option<i32> {
        peer.filter(|&pid| self.watch_pid(conn, pid))
    }
    /// No holder depends on `pid` any more.
    fn unwatch_pid(&mut self, _pid: i32) {}
    /// Whether the process watched as `pid` has ended, though its end is not
    /// reported yet ([`Manager::pid_exited`]), as of a moment after the
    /// frame being handled was read (or so shortly before the read that no
    /// new process could have been given the pid and written the frame in
    /// between). Asked before a frame carrying `pid`
    /// joins the holder tied to that process: once it has ended, the pid may
    /// name a new process (a fork sharing the connection), and the frame may
    /// be that one's. True promises the report, as for any watched pid.
    /// Drivers that cannot tell keep the default (the end then counts from
    /// its report).
    fn pid_has_ended(&mut self, _pid: i32) -> bool {
        false
    }
    /// Whether the frame being handled may speak for `pid`, which a holder
    /// on `conn` is tied to: the bytes' writer is that process (or its
    /// parent). Asked for every frame that would join such a holder, or
    /// take or move one of its registrations, since another writer on the
    /// connection may use the same pid (a worker in a pid namespace of its
    /// own sends its pid there, which may be a sibling's here): its frame
    /// goes to the connection's holder, or it would end with the sibling,
    /// and its release is another process's. Drivers that cannot tell keep
    /// the default.
    fn speaks_for(&mut self, _conn: ConnId, _pid: i32) -> bool {
        true
    }
    /// Whether `pid`, which [`Effects::watch_pid`] just declined for `conn`,
    /// is a process of `conn`'s pid namespace that has already exited (a
    /// frame read after its sender died). True promises to report its end
    /// as for a watched pid ([`Manager::pid_exited`]), once what else it
    /// sent has been read: its holds then turn dead, and its releases among
    /// those frames still reach them. Asked again before a registration
    /// joins such a gone sender's holder: false then means a process runs
    /// under the pid now, another one. Drivers that cannot tell keep the
    /// default (its frames then count for the connection).
    fn pid_is_gone(&mut self, _conn: ConnId, _pid: i32) -> bool {
        false
    }
    /// `pid`'s watched process has ended, its end not reported yet, and a
    /// process runs under the pid now, whose frame on `conn` is being read:
    /// start watching that process apart, for [`Effects::promote_successor`].
    /// False if it cannot be trusted (as for [`Effects::watch_pid`]) or
    /// watched, or if the one watched so is not it (it ended too): its frame
    /// then counts for the connection. Drivers that cannot tell keep the
    /// default.
    fn watch_successor(&mut self, _conn: ConnId, _pid: i32) -> bool {
        false
    }
    /// As [`Effects::pid_has_ended`], for the successor watched under `pid`.
    fn successor_has_ended(&mut self, _pid: i32) -> bool {
        false
    }
    /// The end of `pid`'s old process has been reported: watch its successor
    /// as `pid` from now on, and report its end as any watched pid's (at
    /// once if it has ended already). With `keep` false (also asked when
    /// the successor has ended inside the window), or if it cannot be
    /// watched so (false), stop watching it.
    fn promote_successor(&mut self, _pid: i32, _keep: bool) -> bool {
        false
    }
    /// `conn` offers a registration journal (the memory travelled with the
    /// offer). Return a view of it if it is now attached (the manager writes
    /// its advertisement there before answering); drivers without journal
    /// support keep the default.
    fn attach_journal(&mut self, _conn: ConnId) -> Option<journal::Journal<'_>> {
        None
    }
    /// `conn` asked for the manager's status ([`status`]):
    /// after the `OK` this call queues, send the document and close `conn`.
    /// Drivers without status support keep the default (the asker then gets
    /// `OK` alone, as from PyTorch's manager).
    fn status(&mut self, _conn: ConnId, _detail: status::Detail) {}
    /// `conn` rang the doorbell: feed its journal's unread frames to
    /// [`Manager::receive_journaled`] before the `OK` this call queues is sent.
    fn drain_journal(&mut self, _conn: ConnId) {}
    /// Something worth logging happened.
    fn note(&mut self, _note: Note) {}
}

/// Whether the manager has work left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Keep serving.
    Serving,
    /// Shut down: every known name has been unlinked or forgotten.
    Finished,
}

/// Counters for logs and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Registrations answered `OK` (or taken from a journal).
    pub registrations: u64,
    /// Registrations answered `NO` (table full, name outside the prefix).
    pub refused: u64,
    /// Releases accepted.
    pub releases: u64,
    /// Releases of names nobody on the connection held, ignored.
    pub stray_releases: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections refused at connect time.
    pub rejected: u64,
    /// Connections closed for misbehaving.
    pub closed_for_cause: u64,
    /// Holders ended because their process exited.
    pub holders_exited: u64,
    /// Orphaned names unlinked (real unlinks only).
    pub reaped: u64,
    /// Names forgotten because they no longer existed or were not ours.
    pub forgotten: u64,
    /// Names unlinked at shutdown (real unlinks only).
    pub unlinked_at_shutdown: u64,
    /// Unlinks that failed and were (or, at exit, could no longer be) retried.
    pub unlink_failures: u64,
}

/// The state of one known name, for inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameState {
    /// Registered this many times by live holders.
    Held {
        /// Live registrations.
        registrations: u32,
    },
    /// No live holder; kept while it exists (in transit, or released and
    /// not yet seen gone).
    Released {
        /// Registrations of holders that ended without releasing it.
        dead: u32,
    },
    /// An orphan by the refcount rule; unlinked at `reap_at` if still one
    /// then (never, if reaping is off).
    Orphaned {
        /// When it will be unlinked.
        reap_at: Option<Timestamp>,
    },
    /// Being unlinked.
    Unlinking,
}

/// A live holder, as a status report shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HolderView {
    id: u32,
    /// The connection it registered on (closed, if it outlived it).
    pub conn: ConnId,
    /// Its watched pid; `None` when its pid could not be trusted and it
    /// stands for its connection.
    pub pid: Option<i32>,
    /// Whether its connection is still open.
    pub connected: bool,
    /// Distinct names it holds.
    pub names: u32,
}

impl HolderView {
    /// Where [`Manager::holders_from`] finds this holder again (if it is
    /// still live); the one after it is at this plus one.
    pub fn cursor(&self) -> u32 {
        self.id
    }
}

/// One process on one connection; the pid is `None` for the holder that
/// stands for a connection's untrusted pids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HolderKey {
    conn: ConnId,
    pid: Option<i32>,
}

/// What ends a holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifeline {
    /// Its (watched) process's end.
    Pid(i32),
    /// The end of a process found running under a pid whose old process's
    /// end was pending then: watched apart until that end is reported, then
    /// as the pid ([`Manager::pid_exited`]). Tied to the old process's
    /// watch, its names would be reaped while it lives; left to the
    /// connection, they would leak, or be lost to a close for cause.
    Successor(i32),
    /// Its connection's end.
    Connection,
}

impl Lifeline {
    /// The pid whose process it ends with, if a process's.
    fn pid(self) -> Option<i32> {
        match self {
            Lifeline::Pid(pid) | Lifeline::Successor(pid) => Some(pid),
            Lifeline::Connection => None,
        }
    }
}

/// A holder's bookkeeping.
#[derive(Clone, Copy, Debug)]
pub struct Holder {
    key: HolderKey,
    lifeline: Lifeline,
    /// Distinct names it holds.
    holds: u32,
    /// It ended; its holds are being turned into dead registrations.
    ending: bool,
    /// Its process has exited and the driver is reading what it sent before
    /// that: it takes no new frames (a new process with the same pid would
    /// otherwise be taken for it), only its own late releases. A holder
    /// made for a sender already gone is exiting from the start, and takes
    /// that sender's late frames on its connection until the end.
    exiting: bool,
    /// Why it ended (meaningful while `ending`).
    end: HolderEnd,
    /// Processes it did not stand for may map its names unannounced: its
    /// process ended while its connection lived on (the connection's other
    /// processes may be its forks), or it stood for a connection's untrusted
    /// pids, processes nobody knows, which may live on after it ends.
    others_may_map: bool,
    /// The next newer and the next older holder on its connection
    /// ([`NO_HOLDER`] at either end), so that finding a connection's holders
    /// costs what it has, however many it has, and unlinking one is
    /// constant time.
    newer_on_conn: u32,
    older_on_conn: u32,
    /// The same for the holders tied to its pid (while its lifeline is a
    /// pid), so that a process's end finds its holders at once.
    newer_same_pid: u32,
    older_same_pid: u32,
}

/// A watched pid: how many live holders depend on its watch, and the newest
/// holder tied to it, which links to the older ones.
#[derive(Clone, Copy, Debug)]
pub struct PidEntry {
    holders: u32,
    newest_holder: u32,
    /// Some of its holders are on connections closed for cause.
    detached: bool,
    /// Its process has ended (its holders are exiting) and the end is not
    /// reported yet: a process running under the pid now is another one,
    /// whose frames must not join this pid's holders, old or new, or they
    /// would end with the old process.
    exiting: bool,
    /// While `exiting`: the holders of the process running under the pid
    /// now ([`Lifeline::Successor`]), how many and the newest (linked as a
    /// pid's list is), and whether any is on a connection closed for cause.
    successors: u32,
    newest_successor: u32,
    successors_detached: bool,
    /// The driver watches a successor (see [`Effects::watch_successor`]).
    successor_watched: bool,
}

impl PidEntry {
    /// A pid just watched for `holders` holders, linked to none yet.
    fn watched(holders: u32) -> Self {
        Self {
            holders,
            newest_holder: NO_HOLDER,
            detached: false,
            exiting: false,
            successors: 0,
            newest_successor: NO_HOLDER,
            successors_detached: false,
            successor_watched: false,
        }
    }
}

/// Where a name without live holders stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Live holders hold it.
    Held,
    /// No live holder; looked at now and then (released, or in transit).
    Released,
    /// An orphan by the refcount rule, waiting out the grace period.
    Orphan,
    /// The grace period is over; one last look decides.
    Confirming,
    /// Unlink requested.
    Unlinking,
}

/// Per-name bookkeeping.
#[derive(Clone, Copy, Debug)]
pub struct NameRecord {
    name: SegmentName,
    /// Registrations held by live holders.
    live: u32,
    /// Registrations of holders that ended without releasing them.
    dead: u32,
    /// When to look at it next, in ticks ([`NO_TICK`]: not scheduled).
    wake: u32,
    phase: Phase,
    /// Looks or unlinks that came to nothing so far, for backing off.
    tries: u8,
    /// A chore about it is out.
    busy: bool,
    /// Found gone once (held, by a patrol; or with dead registrations);
    /// looked at again a second later to be sure.
    suspect: bool,
    /// Held, and reported gone; not reported again.
    vanished: bool,
    /// Taken on by a recovery sweep (once: a second sweep would count its
    /// creator again).
    adopted: bool,
    /// The adoption counted its unseen creator as one dead registration, a
    /// guess withdrawn once someone registers the name: a user shows the
    /// creator may have let go cleanly, its one reference a pickle's.
    creator_counted: bool,
    /// Some of its dead registrations were held for processes nobody knew
    /// (a connection's untrusted pids), whose releases may have been lost
    /// with their connection: a pickled copy may still be on its way.
    unknown_ended: bool,
    /// A walk just found nobody mapping it: the next look may unlink it.
    nobody_maps: bool,
    /// Its creator (the pid its name starts with) registered it with this
    /// manager: its reference is among the registrations counted, so an
    /// adoption need not count it again.
    creator_seen: bool,
    /// A holder of it died while its connection lived on: processes forked
    /// from that holder share the connection and may map the name without
    /// having registered it, so an orphan is unlinked only once nobody maps
    /// it ([`Chore::CheckMapped`]).
    inherited: bool,
}

/// Per-connection bookkeeping.
#[derive(Clone, Debug)]
pub struct Connection {
    partial: [u8; FRAME_LEN],
    filled: u8,
    /// When it is closed unless it completes the frame it started (or,
    /// right after connecting, sends anything).
    stall_deadline: Option<Timestamp>,
    peer: Peer,
    /// The last pid resolved to a holder, the hot path's shortcut.
    last: Option<(i32, u32)>,
    /// Untrusted pids remembered as standing for the connection's holder.
    aliases: u16,
    /// The newest of its holders (its processes, and the one that stands for
    /// its untrusted pids), which link to the older ones: a release not
    /// taken by its sender's holder searches these, not every holder.
    newest_holder: u32,
    /// A journaled name outside the prefix was logged already: one line per
    /// connection, however many it sends.
    noted_foreign: bool,
}

/// The end of a list of holders.
const NO_HOLDER: u32 = u32::MAX;

/// The shutdown in progress.
#[derive(Clone, Copy, Debug)]
struct Closing {
    /// Unlink everything, in transit or not, from then on.
    linger_until: Timestamp,
    /// The next name id the current pass looks at.
    cursor: u32,
    /// When the next pass starts, once this one is done.
    next_pass: Option<Timestamp>,
}

/// The manager.
pub struct Manager<S: Storage> {
    config: ManagerConfig,
    names: S::Names,
    index: S::Index,
    holds: S::Holds,
    holders: S::Holders,
    holder_index: S::HolderIndex,
    pids: S::Pids,
    conns: S::Conns,
    timers: S::Timers,
    next_conn: u64,
    /// The latest `now` given, for deadlines of work left over.
    clock: Timestamp,
    idle_since: Option<Timestamp>,
    /// Earliest frame-timeout deadline among connections.
    stall_wake: Option<Timestamp>,
    /// Holders whose holds are still being converted.
    ending: usize,
    /// Watched pids with holders on connections closed for cause: while
    /// none, a registration need not look for a holder to move.
    detached_pids: usize,
    closing: Option<Closing>,
    /// Where the next patrol of held names starts, and when.
    patrol_cursor: u32,
    patrol_at: Option<Timestamp>,
    /// When to measure the namespace next, and whether a measurement is out.
    measure_at: Option<Timestamp>,
    measuring: bool,
    alarm: PressureAlarm,
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

/// Ticks are tenths of a second: deadlines close together share a wake-up,
/// and a name's deadline fits in four bytes.
const TICK_MS: u64 = 100;
/// Looks at released names back off from 1 s to a minute.
const PROBE_MAX_SHIFT: u8 = 6;
/// Looks at names in transit after a holder died back off from 1 s to 2 s.
const TRANSIT_MAX_SHIFT: u8 = 1;
/// Retries of failed unlinks back off from 100 ms to about 13 s.
const RETRY_MAX_SHIFT: u8 = 7;
/// Untrusted pids remembered per connection (beyond, each costs a watch
/// attempt). Few: a connection's untrusted pids are its peers in another
/// pid namespace, and every alias is memory a hostile client chooses.
const MAX_ALIASES: u16 = 64;
/// How often a lingering shutdown looks at what it waits for.
const LINGER_PASS: Duration = Duration::from_secs(1);

/// The tick at or after `t` (never [`NO_TICK`]).
fn tick_at_or_after(t: Timestamp) -> u32 {
    let tick = t.as_millis().div_ceil(TICK_MS).saturating_add(1);
    u32::try_from(tick).unwrap_or(u32::MAX)
}

/// The latest tick that is due at `now`.
fn tick_due(now: Timestamp) -> u32 {
    let tick = (now.as_millis() / TICK_MS).saturating_add(1);
    u32::try_from(tick).unwrap_or(u32::MAX)
}

fn tick_time(tick: u32) -> Timestamp {
    Timestamp::from_millis(u64::from(tick.saturating_sub(1)) * TICK_MS)
}

impl<S: Storage> Manager<S> {
    /// A manager with no clients yet; the shutdown clock starts at `now`.
    pub fn new(config: ManagerConfig, now: Timestamp) -> Self {
        Self {
            config,
            names: Default::default(),
            index: S::Index::seeded(config.hash_seed),
            holds: Default::default(),
            holders: Default::default(),
            holder_index: Default::default(),
            pids: Default::default(),
            conns: Default::default(),
            timers: Default::default(),
            next_conn: 0,
            clock: now,
            idle_since: Some(now),
            stall_wake: None,
            ending: 0,
            detached_pids: 0,
            closing: None,
            patrol_cursor: 0,
            patrol_at: config.patrol_every.map(|every| now.after(every)),
            measure_at: config.measure_every.map(|_| now),
            measuring: false,
            alarm: PressureAlarm::default(),
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

    /// Known names (held, released, orphaned or being unlinked).
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// Live holders (processes on connections, and processes that outlived
    /// a connection closed for cause).
    pub fn holder_count(&self) -> usize {
        self.holders.len() - self.ending
    }

    /// Whether the manager is shutting down (no client, lingering or unlinking).
    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// What the manager knows about `name`.
    pub fn name_state(&self, name: &SegmentName) -> Option<NameState> {
        let record = self.names.get(self.find(name)?)?;
        Some(self.state_of(record))
    }

    /// The names the manager knows, with their states, for a status report
    /// written a piece at a time: up to `limit` of them from `cursor` (0 at
    /// first) on. Returns where the next piece starts, `None` once all were
    /// given. A name made or forgotten between pieces may be missed.
    pub fn names_from(
        &self,
        cursor: u32,
        limit: usize,
        mut each: impl FnMut(&SegmentName, NameState),
    ) -> Option<u32> {
        let bound = self.names.id_bound();
        let mut given = 0;
        let mut id = cursor;
        while id < bound {
            if given == limit {
                return Some(id);
            }
            if let Some(record) = self.names.get(id) {
                each(&record.name, self.state_of(record));
                given += 1;
            }
            id += 1;
        }
        None
    }

    fn state_of(&self, record: &NameRecord) -> NameState {
        match record.phase {
            _ if record.live > 0 => NameState::Held {
                registrations: record.live,
            },
            Phase::Orphan => NameState::Orphaned {
                reap_at: (record.wake != NO_TICK).then(|| tick_time(record.wake)),
            },
            Phase::Confirming => NameState::Orphaned {
                reap_at: Some(self.clock),
            },
            Phase::Unlinking => NameState::Unlinking,
            Phase::Held | Phase::Released => NameState::Released { dead: record.dead },
        }
    }

    /// Every live holder, for a status report.
    pub fn holders(&self) -> impl Iterator<Item = HolderView> + '_ {
        self.holders_from(0)
    }

    /// The live holders from `cursor` on ([`HolderView::cursor`]), for a
    /// status report written a piece at a time. A holder that ends between
    /// pieces is not given again; one made meanwhile may be missed.
    pub fn holders_from(&self, cursor: u32) -> impl Iterator<Item = HolderView> + '_ {
        (cursor..self.holders.id_bound()).filter_map(|id| {
            let holder = self.holders.get(id).filter(|h| !h.ending)?;
            Some(HolderView {
                id,
                conn: holder.key.conn,
                pid: holder.lifeline.pid(),
                connected: self.conns.get(&holder.key.conn).is_some(),
                names: holder.holds,
            })
        })
    }

    /// Calls `each` with the names `holder` holds (and how often), until it
    /// returns false.
    pub fn names_held_by(
        &self,
        holder: &HolderView,
        mut each: impl FnMut(&SegmentName, u32) -> bool,
    ) {
        self.holds.for_each_of(holder.id, |name, count| {
            self.names
                .get(name)
                .is_none_or(|record| each(&record.name, count))
        });
    }

    /// The peer a connection came from.
    pub fn peer(&self, conn: ConnId) -> Option<Peer> {
        self.conns.get(&conn).map(|c| c.peer)
    }

    /// When the driver must call [`Manager::tick`] at the latest, if ever.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        if self.ending > 0 {
            return Some(self.clock);
        }
        let mut wake = self.timers.next().map(tick_time);
        wake = min_opt(wake, self.stall_wake);
        if !self.names.is_empty() {
            wake = min_opt(wake, self.patrol_at);
        }
        if !self.names.is_empty() || !self.conns.is_empty() {
            wake = min_opt(wake, self.measure_at);
        }
        match self.closing {
            // More of the pass to do (or a pass whose end is not recorded
            // yet: names under its cursor went), or nothing left: at once.
            Some(closing)
                if closing.cursor < self.names.id_bound()
                    || closing.next_pass.is_none()
                    || self.names.is_empty() =>
            {
                Some(self.clock)
            }
            Some(closing) => min_opt(wake, closing.next_pass),
            None if self.conns.is_empty() => min_opt(
                wake,
                self.idle_since
                    .map(|since| since.after(self.config.shutdown_after)),
            ),
            None => wake,
        }
    }

    /// A client connected. Refused peers get an error; the driver closes them.
    pub fn connect(&mut self, peer: Peer, now: Timestamp) -> Result<ConnId, ConnectError> {
        self.clock = now;
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
        // A client that connects and never says anything is closed like one
        // that stops mid-frame: it holds nothing and costs a descriptor.
        let stall_deadline = self.config.silence_timeout.map(|t| now.after(t));
        let connection = Connection {
            partial: [0; FRAME_LEN],
            filled: 0,
            stall_deadline,
            peer,
            last: None,
            aliases: 0,
            newest_holder: NO_HOLDER,
            noted_foreign: false,
        };
        if self.conns.insert(id, connection).is_err() {
            self.stats.rejected += 1;
            return Err(ConnectError::TooManyConnections);
        }
        self.stall_wake = min_opt(self.stall_wake, stall_deadline);
        self.next_conn += 1;
        self.stats.connections += 1;
        self.idle_since = None;
        self.closing = None;
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
        self.clock = now;
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
                    if filled == 0 {
                        c.stall_deadline = self.config.frame_timeout.map(|t| now.after(t));
                        self.stall_wake = min_opt(self.stall_wake, c.stall_deadline);
                    }
                    return;
                }
                c.filled = 0;
                c.partial
            };
            c.stall_deadline = None;
            match Frame::parse(&frame) {
                Ok(frame) => self.handle(conn, frame, now, fx),
                Err(err) => self.close_for_cause(conn, CloseReason::Malformed(err), now, fx),
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
        self.clock = now;
        if self.conns.get(&conn).is_none() {
            return;
        }
        match Frame::parse(frame) {
            Ok(frame) if journal::is_reserved(&frame.name) => {
                self.close_for_cause(conn, CloseReason::JournalMisuse, now, fx);
            }
            Ok(frame) => match frame.kind {
                FrameKind::Register => {
                    self.register(conn, frame.pid, frame.name, Answer::Silent, now, fx)
                }
                FrameKind::Release => self.release(conn, frame.pid, frame.name, now, fx),
            },
            Err(err) => self.close_for_cause(conn, CloseReason::Malformed(err), now, fx),
        }
    }

    /// Reads up to `max` unread frames from `conn`'s journal, oldest first,
    /// each handled as by [`Manager::receive_journaled`]. Returns how many
    /// it read (`max`: more may be left; read again soon, after other
    /// clients had their turn).
    /// A journal whose counters are out of range closes `conn`
    /// ([`CloseReason::JournalMisuse`]) and comes back as the error.
    pub fn read_journal(
        &mut self,
        conn: ConnId,
        journal: journal::Journal<'_>,
        max: u32,
        now: Timestamp,
        fx: &mut impl Effects,
    ) -> Result<u32, journal::JournalError> {
        let read = journal.drain_up_to(max, |frame| self.receive_journaled(conn, &frame, now, fx));
        match read {
            Ok(read) => Ok(read),
            Err(err) => {
                self.close_for_cause(conn, CloseReason::JournalMisuse, now, fx);
                Err(err)
            }
        }
    }

    /// `conn` reached end of file or failed. Its holders end, whatever their
    /// lifeline: a process that closed its connection is done with it.
    pub fn disconnect(&mut self, conn: ConnId, now: Timestamp, fx: &mut impl Effects) {
        self.clock = now;
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.holder_index
            .remove_run(&HolderKey { conn, pid: None }, |key| key.conn == conn);
        let mut next = c.newest_holder;
        while let Some(holder) = self.holders.get(next) {
            let id = next;
            next = holder.older_on_conn;
            self.end_holder(id, fx);
        }
        if self.conns.is_empty() {
            self.idle_since = Some(now);
        }
    }

    /// The live connections `pid`'s holders are on: where what it sent last
    /// may still wait to be read when it exits.
    pub fn connections_of(&self, pid: i32) -> impl Iterator<Item = ConnId> + '_ {
        let newest = self.pids.get(&pid).map_or(NO_HOLDER, |e| e.newest_holder);
        core::iter::successors(self.holders.get(newest).map(|h| (newest, h)), |(_, h)| {
            let older = h.older_same_pid;
            self.holders.get(older).map(|holder| (older, holder))
        })
        .map(|(_, holder)| holder.key.conn)
        .filter(|conn| self.conns.get(conn).is_some())
    }

    /// A watched process has exited, and the driver is about to read what is
    /// left of its frames: its holders stop taking new frames, so that a new
    /// process given the same pid is not taken for it, but keep their holds
    /// (and take the late releases of their own pid) until
    /// [`Manager::pid_exited`]. A driver that reads nothing between the two
    /// may skip this call.
    pub fn pid_exiting(&mut self, pid: i32, now: Timestamp) {
        self.clock = now;
        let Some(entry) = self.pids.get_mut(&pid) else {
            return;
        };
        entry.exiting = true;
        let mut next = entry.newest_holder;
        while let Some(holder) = self.holders.get_mut(next) {
            let id = next;
            next = holder.older_same_pid;
            // A gone sender's holder is exiting from the start, and keeps
            // taking its pid's late frames on its connection.
            if holder.lifeline != Lifeline::Pid(pid) || holder.ending || holder.exiting {
                continue;
            }
            holder.exiting = true;
            self.unindex(id);
        }
    }

    /// Takes holder `id` out of the index (and its connection's shortcut):
    /// it takes no new frames, only releases of what it holds.
    fn unindex(&mut self, id: u32) {
        let Some(key) = self.holders.get(id).map(|h| h.key) else {
            return;
        };
        if self.holder_index.get(&key) == Some(&id) {
            self.holder_index.remove(&key);
        }
        if let Some(c) = self.conns.get_mut(&key.conn)
            && c.last.is_some_and(|(_, h)| h == id)
        {
            c.last = None;
        }
    }

    /// Whether `holder`, found for `pid`'s frame, was made for a sender
    /// already gone (exiting from the start, and still taking its pid's
    /// frames, which a watched process's exiting holders do not).
    fn is_gone_senders(&self, holder: u32, pid: i32) -> bool {
        self.holders
            .get(holder)
            .is_some_and(|h| h.lifeline == Lifeline::Pid(pid) && h.exiting && !h.ending)
    }

    /// A watched process ended: its holders end, on every connection, while
    /// the connections and their other processes go on.
    pub fn pid_exited(&mut self, pid: i32, now: Timestamp, fx: &mut impl Effects) {
        self.clock = now;
        let Some(entry) = self.pids.remove(&pid) else {
            return;
        };
        self.detached_pids = self
            .detached_pids
            .saturating_sub(usize::from(entry.detached));
        fx.unwatch_pid(pid);
        let mut next = entry.newest_holder;
        while let Some(holder) = self.holders.get_mut(next) {
            let id = next;
            next = holder.older_same_pid;
            if holder.lifeline != Lifeline::Pid(pid) || holder.ending {
                continue;
            }
            let key = holder.key;
            if key.pid.is_none() && self.tie_to_next_writer(id, pid, fx) {
                continue;
            }
            let Some(holder) = self.holders.get_mut(id) else {
                continue;
            };
            // A connection's holder for untrusted pids, tied to the process
            // that connected once the connection was closed for cause, stands
            // for processes nobody knows: they may live on and map its names.
            holder.others_may_map = self.conns.get(&key.conn).is_some() || key.pid.is_none();
            Self::begin_end(holder, HolderEnd::Exited, fx);
            self.ending += 1;
            self.stats.holders_exited += 1;
            // Not the successor's holder, which has the same key.
            let successors = self.holder_index.get(&key).is_some_and(|&h| {
                self.holders
                    .get(h)
                    .is_some_and(|h| h.lifeline == Lifeline::Successor(pid))
            });
            let indexed = if successors {
                None
            } else {
                self.holder_index.remove(&key)
            };
            if let Some(c) = self.conns.get_mut(&key.conn) {
                // The pid names another process from now on: a shortcut or
                // an alias to the connection's holder, taken for it while
                // this end was pending, would keep that process's frames
                // from a holder of its own, and its names from its end.
                if c.last.is_some_and(|(p, h)| h == id || p == pid) {
                    c.last = None;
                }
                if key.pid.is_some() && indexed.is_some_and(|h| h != id) {
                    c.aliases = c.aliases.saturating_sub(1);
                }
            }
            self.drop_if_finished(id);
        }
        if entry.successor_watched {
            self.promote_successors(pid, entry, fx);
        }
    }

    /// The end of `pid`'s old process (`old`'s) is reported: the holders of
    /// the process found running under the pid meanwhile are tied to the
    /// pid from now on, as any watched process's.
    fn promote_successors(&mut self, pid: i32, old: PidEntry, fx: &mut impl Effects) {
        let keep = old.successors > 0;
        if fx.promote_successor(pid, keep) && keep {
            let entry = PidEntry {
                newest_holder: old.newest_successor,
                detached: old.successors_detached,
                ..PidEntry::watched(old.successors)
            };
            if self.pids.insert(pid, entry).is_ok() {
                self.detached_pids += usize::from(old.successors_detached);
                self.retie_successors(old.newest_successor, Lifeline::Pid(pid));
                return;
            }
            fx.unwatch_pid(pid);
        }
        // Its end cannot be told: its holds last as long as its
        // connections (a leak, never an unlink while it lives).
        self.retie_successors(old.newest_successor, Lifeline::Connection);
    }

    fn retie_successors(&mut self, newest: u32, lifeline: Lifeline) {
        let mut next = newest;
        while let Some(holder) = self.holders.get_mut(next) {
            next = holder.older_same_pid;
            holder.lifeline = lifeline;
        }
    }

    /// Takes on `name`, a segment whose holder died while no manager was
    /// watching (a manager that replaced a dead one finds these), counting
    /// its creator as one more dead registration (unless the creator
    /// registered it here, and is counted already). The refcount rule judges
    /// it as any other: an orphan (unlinked after the grace period unless
    /// someone registers it first) only if nothing else references it; a
    /// surplus means it is in transit, another family's perhaps, and it is
    /// kept. A name a live holder holds is left alone. Returns whether it
    /// was taken on.
    pub fn adopt_orphan(&mut self, name: SegmentName, now: Timestamp) -> bool {
        self.clock = now;
        let id = match self.find(&name) {
            Some(id) => id,
            None => match self.insert_name(name) {
                Some(id) => id,
                None => return false,
            },
        };
        let Some(record) = self.names.get_mut(id) else {
            return false;
        };
        if record.live > 0 || record.adopted {
            return false;
        }
        record.adopted = true;
        if !record.creator_seen {
            record.dead = record.dead.saturating_add(1);
            record.creator_counted = true;
        }
        // An orphan already waiting out its grace (or being unlinked) keeps
        // its schedule; anything else is looked at again at once, since the
        // count it is judged by changed.
        let on_its_way = matches!(
            record.phase,
            Phase::Orphan | Phase::Confirming | Phase::Unlinking
        );
        if !on_its_way && !record.busy {
            self.unheld(id, true, now);
        }
        true
    }

    /// Closes `conn` for a reason the driver found (a corrupt journal, a
    /// client that does not read its replies).
    pub fn evict(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        self.close_for_cause(conn, reason, now, fx);
    }

    /// What [`Effects::chore`] asked for, looked at: `None` if the look failed
    /// (it is tried again later).
    pub fn observed(
        &mut self,
        name: &SegmentName,
        observed: Option<Observed>,
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        self.clock = now;
        let Some(id) = self.find(name) else {
            return;
        };
        let closing = self.closing;
        let grace = self.config.reap_grace;
        let linger = self.config.linger;
        let Some(record) = self.names.get_mut(id) else {
            return;
        };
        record.busy = false;
        // Only the look right after a walk that found no mapper may unlink
        // on its strength.
        let nobody_maps = core::mem::take(&mut record.nobody_maps);
        if record.live > 0 {
            return self.patrolled(id, observed, now, fx);
        }
        let linger_over = closing.is_some_and(|closing| now >= closing.linger_until);
        let refcount = match observed {
            None if linger_over => return self.unlink(id, UnlinkReason::Shutdown, fx),
            None => {
                // A shutdown pass's look at an orphan still in its grace
                // period: the retry judges it afresh (the manager may serve
                // again by then), rather than as one whose grace is over.
                if record.phase == Phase::Orphan {
                    record.phase = Phase::Released;
                }
                let backoff = backoff(record.tries, PROBE_MAX_SHIFT, 1_000);
                record.tries = record.tries.saturating_add(1);
                return self.schedule(id, now.after(backoff));
            }
            // A holder that ended without releasing it may have been judged
            // ended by a pid that never named its sender (a frame whose pid
            // is of no live process, though its sender lives): the sender
            // creates right after registering, so absence is believed only
            // when a second look a second later agrees, as for held names.
            Some(Observed::Absent) if record.dead > 0 && !record.suspect && closing.is_none() => {
                record.suspect = true;
                return self.schedule(id, now.after(Duration::from_secs(1)));
            }
            Some(Observed::Absent) => {
                self.stats.forgotten += 1;
                fx.note(Note::Gone { name: *name });
                return self.forget(id);
            }
            Some(Observed::Foreign) => {
                self.stats.forgotten += 1;
                fx.note(Note::Untouchable { name: *name });
                return self.forget(id);
            }
            Some(Observed::Segment { refcount }) => {
                record.suspect = false;
                refcount
            }
        };
        let orphan = record.dead > 0 && i64::from(refcount) <= i64::from(record.dead);
        if let Some(closing) = closing {
            if orphan || refcount <= 0 || now >= closing.linger_until {
                return self.unlink(id, UnlinkReason::Shutdown, fx);
            }
            // Lingers; the next pass looks again, or, should a client come
            // back first and the manager serve again, the timer does.
            record.phase = Phase::Released;
            let backoff = backoff(record.tries, PROBE_MAX_SHIFT, 1_000);
            record.tries = record.tries.saturating_add(1);
            return self.schedule(id, now.after(backoff).round_up(1_000));
        }
        if !orphan {
            if record.dead > 0 {
                fx.note(Note::InTransit {
                    name: *name,
                    refcount,
                    dead: record.dead,
                });
            }
            record.phase = Phase::Released;
            // In transit with dead registrations: the refcount may drop with
            // no frame to say so (a receiver that had it cached only lowers
            // it), so it is looked at often; released ones only to notice
            // they are gone.
            let max_shift = if record.dead > 0 {
                TRANSIT_MAX_SHIFT
            } else {
                PROBE_MAX_SHIFT
            };
            let backoff = backoff(record.tries, max_shift, 1_000);
            record.tries = record.tries.saturating_add(1);
            return self.schedule(id, now.after(backoff).round_up(1_000));
        }
        match (record.phase, grace) {
            (Phase::Confirming, _) if record.inherited && !nobody_maps => {
                record.busy = true;
                fx.chore(Chore::CheckMapped(*name));
            }
            (Phase::Confirming, _) => self.unlink(id, UnlinkReason::Orphaned, fx),
            (_, Some(grace)) => {
                record.phase = Phase::Orphan;
                record.tries = 0;
                fx.note(Note::Orphaned {
                    name: *name,
                    refcount,
                    dead: record.dead,
                });
                // An orphan only by the sweep's guess about its creator, or
                // by registrations of processes nobody knew (whose releases
                // may have been lost with their connection), may be a tensor
                // its producer pickled into a queue and let go of cleanly:
                // its receiver gets as long as a lingering manager would
                // give it.
                let grace = if record.creator_counted || record.unknown_ended {
                    grace.max(linger)
                } else {
                    grace
                };
                self.schedule(id, now.after(grace));
            }
            // Reaping is off: kept until shutdown, as PyTorch keeps it.
            (_, None) => {
                record.phase = Phase::Orphan;
                self.unschedule(id);
            }
        }
    }

    /// What became of an [`Chore::Unlink`]: `None` if it failed (the name is
    /// kept and the unlink tried again later).
    pub fn unlinked(
        &mut self,
        name: &SegmentName,
        reason: UnlinkReason,
        outcome: Option<Unlinked>,
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        self.clock = now;
        let Some(id) = self.find(name) else {
            return;
        };
        let linger_over = self
            .closing
            .is_some_and(|closing| now >= closing.linger_until);
        let Some(record) = self.names.get_mut(id) else {
            return;
        };
        record.busy = false;
        match outcome {
            Some(Unlinked::Removed) => {
                match reason {
                    UnlinkReason::Orphaned => self.stats.reaped += 1,
                    UnlinkReason::Shutdown => self.stats.unlinked_at_shutdown += 1,
                }
                fx.note(Note::Unlinked {
                    name: *name,
                    reason,
                });
            }
            Some(Unlinked::Absent) => self.stats.forgotten += 1,
            Some(Unlinked::Foreign) => {
                self.stats.forgotten += 1;
                fx.note(Note::Untouchable { name: *name });
            }
            None => {
                self.stats.unlink_failures += 1;
                if record.live == 0 && !linger_over {
                    // Kept: the next look decides again, and unlinks again.
                    // A shutdown's unlink is judged afresh: the manager may
                    // be serving again by then.
                    record.phase = match reason {
                        UnlinkReason::Orphaned => Phase::Orphan,
                        UnlinkReason::Shutdown => Phase::Released,
                    };
                    let backoff = backoff(record.tries, RETRY_MAX_SHIFT, TICK_MS);
                    record.tries = record.tries.saturating_add(1);
                    return self.schedule(id, now.after(backoff));
                }
            }
        }
        if record.live > 0 {
            // Registered again while being unlinked: its holders go on.
            record.phase = Phase::Held;
            return;
        }
        self.forget(id);
    }

    /// Carries out `chore` in `namespace` and takes in the outcome. A failed
    /// look or unlink is tried again later; its error is returned for the log.
    pub fn perform<N: Namespace>(
        &mut self,
        chore: Chore,
        namespace: &mut N,
        now: Timestamp,
        fx: &mut impl Effects,
    ) -> Result<(), N::Error> {
        match chore {
            Chore::Observe(name) => {
                let result = namespace.observe(&name);
                self.observed(&name, result.as_ref().ok().copied(), now, fx);
                result.map(drop)
            }
            Chore::Unlink(name, reason) => {
                let result = namespace.unlink(&name);
                self.unlinked(&name, reason, result.as_ref().ok().copied(), now, fx);
                result.map(drop)
            }
            Chore::MeasureUsage => {
                let result = namespace.usage();
                self.measured(result.as_ref().ok().copied().flatten(), now, fx);
                result.map(drop)
            }
            Chore::CheckMapped(name) => {
                let result = namespace.mapped(&name);
                self.mapped(&name, result.as_ref().ok().copied(), now, fx);
                result.map(drop)
            }
        }
    }

    /// What [`Chore::CheckMapped`] found: whether some process maps or
    /// holds `name` (`None`: it could not be told now; asked again later).
    /// A mapped orphan is kept and judged afresh later; an unmapped one is
    /// looked at once more and unlinked if it still is an orphan.
    pub fn mapped(
        &mut self,
        name: &SegmentName,
        mapped: Option<bool>,
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        self.clock = now;
        let Some(id) = self.find(name) else {
            return;
        };
        let Some(record) = self.names.get_mut(id) else {
            return;
        };
        record.busy = false;
        if record.phase != Phase::Confirming || record.live > 0 {
            return;
        }
        // Shutting down, the closing passes judge it afresh by its refcount.
        let serving = self.closing.is_none();
        if serving && mapped == Some(false) {
            // The refcount may have risen while the walk ran (a fork pickled
            // the tensor, then exited): judged again by a fresh look.
            record.nobody_maps = true;
            record.busy = true;
            fx.chore(Chore::Observe(*name));
            return;
        }
        if serving && mapped == Some(true) {
            fx.note(Note::StillMapped { name: *name });
        }
        // Judged from the start again: the refcount may have changed too.
        record.phase = Phase::Released;
        let backoff = backoff(record.tries, TRANSIT_MAX_SHIFT, 1_000);
        record.tries = record.tries.saturating_add(1);
        self.schedule(id, now.after(backoff).round_up(1_000));
    }

    /// What [`Chore::MeasureUsage`] found (`None`: nothing could be told).
    pub fn measured(&mut self, usage: Option<Usage>, now: Timestamp, fx: &mut impl Effects) {
        self.clock = now;
        self.measuring = false;
        if let Some(warning) = usage.and_then(|usage| self.alarm.update(usage, now)) {
            fx.note(Note::Pressure(warning));
        }
    }

    /// A patrol's look at a held name: gone twice in a row (a second look a
    /// second later, since a creator registers before it creates) and no
    /// release to explain it means someone removed it from outside.
    fn patrolled(
        &mut self,
        id: u32,
        observed: Option<Observed>,
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        let Some(record) = self.names.get_mut(id) else {
            return;
        };
        match observed {
            Some(Observed::Absent) if record.suspect => {
                record.suspect = false;
                record.vanished = true;
                fx.note(Note::Vanished {
                    name: record.name,
                    registrations: record.live,
                });
            }
            Some(Observed::Absent) => {
                record.suspect = true;
                self.schedule(id, now.after(Duration::from_secs(1)));
            }
            _ => record.suspect = false,
        }
    }

    /// Time passed: close stalled connections, turn ended holders' holds into
    /// dead registrations, look at names whose time came, and shut down when
    /// idle long enough. Each part does at most [`ManagerConfig::batch`] names.
    pub fn tick(&mut self, now: Timestamp, fx: &mut impl Effects) -> Status {
        self.clock = now;
        self.close_stalled(now, fx);
        let mut budget = self.config.batch.max(1);
        budget = self.convert_ending(budget, now);
        let due = tick_due(now);
        while budget > 0 {
            let Some((_, id)) = self.timers.pop_due(due) else {
                break;
            };
            budget -= 1;
            let Some(record) = self.names.get_mut(id) else {
                continue;
            };
            record.wake = NO_TICK;
            if record.busy || (record.live > 0 && !record.suspect) {
                continue;
            }
            if record.phase == Phase::Orphan {
                record.phase = Phase::Confirming;
            }
            record.busy = true;
            fx.chore(Chore::Observe(record.name));
        }
        self.patrol(now, fx);
        if let (Some(every), Some(at)) = (self.config.measure_every, self.measure_at)
            && at <= now
        {
            self.measure_at = Some(now.after(every));
            if !self.measuring {
                self.measuring = true;
                fx.chore(Chore::MeasureUsage);
            }
        }
        self.shut_down_when_idle(now, fx)
    }

    /// Looks at the next few held names, round robin, if a patrol is due.
    fn patrol(&mut self, now: Timestamp, fx: &mut impl Effects) {
        let (Some(every), Some(at)) = (self.config.patrol_every, self.patrol_at) else {
            return;
        };
        if at > now {
            return;
        }
        self.patrol_at = Some(now.after(every));
        let bound = self.names.id_bound();
        let mut looked = 0;
        // Visiting a bounded number of ids keeps a patrol O(1) however
        // sparse the held names are.
        for _ in 0..self
            .config
            .patrol_batch
            .saturating_mul(8)
            .min(bound as usize)
        {
            if looked >= self.config.patrol_batch {
                break;
            }
            if self.patrol_cursor >= bound {
                self.patrol_cursor = 0;
            }
            let id = self.patrol_cursor;
            self.patrol_cursor += 1;
            let Some(record) = self.names.get_mut(id) else {
                continue;
            };
            if record.live == 0 || record.busy || record.vanished || record.suspect {
                continue;
            }
            record.busy = true;
            looked += 1;
            fx.chore(Chore::Observe(record.name));
        }
    }

    fn shut_down_when_idle(&mut self, now: Timestamp, fx: &mut impl Effects) -> Status {
        if !self.conns.is_empty() {
            return Status::Serving;
        }
        let idle_since = *self.idle_since.get_or_insert(now);
        if self.closing.is_none() {
            if idle_since.after(self.config.shutdown_after) > now {
                return Status::Serving;
            }
            self.closing = Some(Closing {
                linger_until: now.after(self.config.linger),
                cursor: 0,
                next_pass: None,
            });
        }
        let Some(mut closing) = self.closing else {
            return Status::Serving;
        };
        if closing.cursor >= self.names.id_bound() && closing.next_pass.is_some_and(|at| at <= now)
        {
            closing.cursor = 0;
            closing.next_pass = None;
        }
        if now >= closing.linger_until && self.holder_count() > 0 {
            self.end_all_holders(fx);
        }
        let mut budget = self.config.batch.max(1);
        while budget > 0 && closing.cursor < self.names.id_bound() {
            let id = closing.cursor;
            closing.cursor += 1;
            let Some(record) = self.names.get_mut(id) else {
                continue;
            };
            budget -= 1;
            if record.busy {
                continue;
            }
            if record.live > 0 {
                // A live process whose connection was closed for cause; it
                // lets go when the linger is over (below).
                continue;
            }
            record.busy = true;
            fx.chore(Chore::Observe(record.name));
        }
        if closing.cursor >= self.names.id_bound() && closing.next_pass.is_none() {
            closing.next_pass = Some(now.after(LINGER_PASS));
            if !self.names.is_empty() {
                fx.note(Note::Lingering {
                    names: self.names.len(),
                });
            }
        }
        self.closing = Some(closing);
        if self.names.is_empty() && self.ending == 0 {
            self.holders = Default::default();
            self.holder_index = Default::default();
            return Status::Finished;
        }
        Status::Serving
    }

    /// Ends every live holder: the manager is going, and with it what the
    /// processes it could no longer hear from still held.
    fn end_all_holders(&mut self, fx: &mut impl Effects) {
        for id in 0..self.holders.id_bound() {
            self.end_holder(id, fx);
        }
    }

    /// Ends live holder `id` as its connection's end does, and drops it at
    /// once if it holds nothing.
    fn end_holder(&mut self, id: u32, fx: &mut impl Effects) {
        let Some(holder) = self.holders.get_mut(id) else {
            return;
        };
        if holder.ending {
            return;
        }
        let lifeline = holder.lifeline;
        Self::begin_end(holder, HolderEnd::Disconnected, fx);
        self.ending += 1;
        match lifeline {
            Lifeline::Pid(pid) => self.release_pid(pid, fx),
            Lifeline::Successor(pid) => {
                if let Some(entry) = self.pids.get_mut(&pid) {
                    entry.successors = entry.successors.saturating_sub(1);
                }
            }
            Lifeline::Connection => {}
        }
        self.drop_if_finished(id);
    }

    fn close_stalled(&mut self, now: Timestamp, fx: &mut impl Effects) {
        if self.stall_wake.is_none_or(|at| at > now) {
            return;
        }
        let mut stalled: heapless::Vec<ConnId, 16> = heapless::Vec::new();
        loop {
            let mut wake = None;
            self.conns.retain(|&id, c| {
                if let Some(deadline) = c.stall_deadline {
                    if deadline <= now && stalled.push(id).is_ok() {
                        return true;
                    }
                    wake = min_opt(wake, Some(deadline));
                }
                true
            });
            self.stall_wake = wake;
            if stalled.is_empty() {
                return;
            }
            for id in stalled.iter() {
                self.close_for_cause(*id, CloseReason::StalledFrame, now, fx);
            }
            stalled.clear();
        }
    }

    fn handle(&mut self, conn: ConnId, frame: Frame, now: Timestamp, fx: &mut impl Effects) {
        match journal::Control::of(&frame) {
            Some(journal::Control::Offer) => {
                // A full registry takes registrations it can refuse only.
                let journal = match self.names.len() < self.config.max_names {
                    true => fx.attach_journal(conn),
                    false => None,
                };
                let accepted =
                    journal::Accepted::by_manager(self.config.name_prefix, self.config.also_prefix);
                let reply = journal::Control::accept_offer(journal, &accepted);
                fx.reply(conn, reply);
            }
            Some(journal::Control::Doorbell) => {
                fx.drain_journal(conn);
                fx.reply(conn, journal::Control::DOORBELL_REPLY);
            }
            Some(journal::Control::TakeBack) => {}
            None => match (frame.kind, status::request(&frame.name)) {
                (FrameKind::Register, Some(detail)) => {
                    fx.reply(conn, ACK);
                    fx.status(conn, detail);
                }
                (FrameKind::Release, Some(_)) => {}
                (FrameKind::Register, None) => {
                    self.register(conn, frame.pid, frame.name, Answer::Reply, now, fx)
                }
                (FrameKind::Release, None) => self.release(conn, frame.pid, frame.name, now, fx),
            },
        }
    }

    fn register(
        &mut self,
        conn: ConnId,
        pid: i32,
        name: SegmentName,
        answer: Answer,
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        if let Some(prefix) = &self.config.name_prefix
            && !name.has_prefix(prefix)
            && !self
                .config
                .also_prefix
                .is_some_and(|also| name.has_prefix(&also))
        {
            return match answer {
                Answer::Reply => self.refuse(conn, fx),
                Answer::Silent => {
                    self.stats.refused += 1;
                    if let Some(c) = self.conns.get_mut(&conn)
                        && !core::mem::replace(&mut c.noted_foreign, true)
                    {
                        fx.note(Note::ForeignSkipped { conn, pid, name });
                    }
                }
            };
        }
        // A journaled registration cannot be refused (its segment may exist
        // already): past the limit, journals already attached may go on to
        // twice it, and only past that is the connection closed.
        let limit = match answer {
            Answer::Reply => self.config.max_names,
            Answer::Silent => self.config.max_names.saturating_mul(2),
        };
        let (id, is_new) = match self.find(&name) {
            Some(id) => (id, false),
            None if self.names.len() >= limit => {
                return self.refused(conn, answer, now, fx);
            }
            None => match self.insert_name(name) {
                Some(id) => (id, true),
                None => return self.refused(conn, answer, now, fx),
            },
        };
        let stored = self
            .holder_for(conn, pid, fx)
            .and_then(|holder| self.add_hold(holder, id));
        if stored.is_none() {
            if is_new {
                self.forget(id);
            }
            return self.refused(conn, answer, now, fx);
        }
        // The process registered it before its old connection was closed
        // for cause (a client re-registering what it holds after
        // reconnecting): that registration moves here, not counted twice.
        // Not for a writer that only uses the pid (another namespace's):
        // the process's registration would end up with the writer's.
        let moved = self
            .detached_holder_holding(pid, id)
            .filter(|_| fx.speaks_for(conn, pid))
            .is_some_and(|stale| self.take_hold(stale, id));
        let by_creator = self.creator_of(&name) == u32::try_from(pid).ok();
        if let Some(record) = self.names.get_mut(id) {
            if record.live == 0 {
                // A second look at an unheld name's absence is moot now.
                record.suspect = false;
            }
            if !moved {
                record.live += 1;
            }
            record.phase = Phase::Held;
            record.tries = 0;
            record.creator_seen |= by_creator;
            if record.creator_counted {
                // Someone uses what the sweep took for a leak: its count of
                // the unseen creator may be wrong, and a surplus it would
                // hide keeps a name in transit. The dead seen here stay.
                record.creator_counted = false;
                record.dead = record.dead.saturating_sub(1);
            }
        }
        self.unschedule(id);
        self.stats.registrations += 1;
        if answer == Answer::Reply {
            fx.reply(conn, ACK);
        }
        fx.note(Note::Registered { conn, pid, name });
    }

    /// The pid `name` says created it, under the prefix it was accepted by.
    fn creator_of(&self, name: &SegmentName) -> Option<u32> {
        [self.config.name_prefix, self.config.also_prefix]
            .iter()
            .flatten()
            .find_map(|prefix| name.creator_pid(prefix))
    }

    /// One more registration of `name` by `holder`; `None` if it cannot be
    /// stored (full table, or counts that would overflow).
    fn add_hold(&mut self, holder: u32, name: u32) -> Option<()> {
        let live = self.names.get(name)?.live;
        live.checked_add(1)?;
        if let Some(count) = self.holds.get_mut(holder, name) {
            *count = count.checked_add(1)?;
            return Some(());
        }
        self.holds.insert(holder, name, 1).ok()?;
        if let Some(h) = self.holders.get_mut(holder) {
            h.holds += 1;
        }
        Some(())
    }

    /// Takes one of `holder`'s registrations of name `id` away; false if it
    /// had none. The name's live count is the caller's.
    fn take_hold(&mut self, holder: u32, id: u32) -> bool {
        let Some(count) = self.holds.get_mut(holder, id) else {
            return false;
        };
        if *count > 1 {
            *count -= 1;
        } else {
            self.holds.remove(holder, id);
            if let Some(h) = self.holders.get_mut(holder) {
                h.holds = h.holds.saturating_sub(1);
            }
        }
        true
    }

    /// The live holder with the lowest id that `pid` has on a connection
    /// closed for cause and that holds name `id`.
    fn detached_holder_holding(&self, pid: i32, id: u32) -> Option<u32> {
        if self.detached_pids == 0 {
            return None;
        }
        let entry = self.pids.get(&pid).filter(|entry| entry.detached)?;
        let mut next = entry.newest_holder;
        let mut lowest = None;
        while let Some(holder) = self.holders.get(next) {
            let h = next;
            next = holder.older_same_pid;
            if holder.lifeline == Lifeline::Pid(pid)
                && !holder.ending
                && self.conns.get(&holder.key.conn).is_none()
                && self.holds.contains(h, id)
            {
                lowest = Some(lowest.map_or(h, |l: u32| l.min(h)));
            }
        }
        lowest
    }

    fn release(
        &mut self,
        conn: ConnId,
        pid: i32,
        name: SegmentName,
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        let holder = self.find(&name).and_then(|id| {
            let own = self
                .known_holder(conn, pid, fx)
                .filter(|&h| self.holds.contains(h, id));
            // Another process on the same connection (a forked child dropping
            // its parent's tensor): charged to the connection.
            let charged = own.or_else(|| self.holder_on_conn_holding(conn, pid, id, fx));
            // Registered before its old connection was closed for cause (not
            // by a writer that only uses the pid).
            let charged = charged.or_else(|| {
                self.detached_holder_holding(pid, id)
                    .filter(|_| fx.speaks_for(conn, pid))
            });
            charged.map(|h| (h, id))
        });
        let Some((holder, id)) = holder else {
            self.stats.stray_releases += 1;
            fx.note(Note::StrayRelease { conn, pid, name });
            return;
        };
        self.stats.releases += 1;
        fx.note(Note::Released { conn, pid, name });
        if !self.take_hold(holder, id) {
            return;
        }
        let Some(record) = self.names.get_mut(id) else {
            return;
        };
        record.live = record.live.saturating_sub(1);
        if record.live == 0 {
            self.unheld(id, false, now);
        }
    }

    /// The name lost its last live registration. With dead registrations it
    /// is looked at at once (it may be an orphan); otherwise only to notice
    /// when it is gone, on the next whole second: a look per release would
    /// contend for the shared-memory directory with the clients creating
    /// segments there.
    fn unheld(&mut self, id: u32, at_once: bool, now: Timestamp) {
        let Some(record) = self.names.get_mut(id) else {
            return;
        };
        record.phase = Phase::Released;
        record.tries = 0;
        record.suspect = false;
        record.vanished = false;
        let when = if at_once || record.dead > 0 {
            now
        } else {
            now.after(Duration::from_secs(1)).round_up(1_000)
        };
        self.schedule(id, when);
    }

    /// The holder for frames from `pid` on `conn`, created (and its pid
    /// watched) on first sight. A sender that has already exited (its frame
    /// read late) gets a holder of its own too, ended when the driver reports
    /// the exit, after reading what else it sent.
    fn holder_for(&mut self, conn: ConnId, pid: i32, fx: &mut impl Effects) -> Option<u32> {
        if let Some(holder) = self.known_holder(conn, pid, fx) {
            if !self.is_gone_senders(holder, pid) || fx.pid_is_gone(conn, pid) {
                return Some(holder);
            }
            // A gone sender's holder, and a process runs under its pid now:
            // the frame is that process's (or the gone one's last, which the
            // connection then keeps). Taken for the gone one, a name the new
            // process has in transit would be reaped while it lives.
            self.unindex(holder);
        }
        self.conns.get(&conn)?;
        let exiting = self.pids.get(&pid).is_some_and(|entry| entry.exiting);
        // Not watched while the pid's old process's end is pending: its
        // report would end the new process's holder too.
        let watched = !exiting && fx.watch_pid(conn, pid);
        let gone = !watched && fx.pid_is_gone(conn, pid);
        let successor = if exiting && !gone {
            self.successor_holder(conn, pid, fx)
        } else {
            None
        };
        let holder = if let Some(holder) = successor {
            holder
        } else if (watched || gone) && self.retain_pid(pid, fx) {
            let key = HolderKey {
                conn,
                pid: Some(pid),
            };
            let Some(holder) = self.new_holder(key, Lifeline::Pid(pid)) else {
                self.release_pid(pid, fx);
                return None;
            };
            if let Some(h) = self.holders.get_mut(holder) {
                h.exiting = gone;
            }
            if gone && let Some(entry) = self.pids.get_mut(&pid) {
                entry.exiting = true;
            }
            if self.holder_index.insert(key, holder).is_err() {
                self.remove_holder(holder);
                self.release_pid(pid, fx);
                return None;
            }
            holder
        } else {
            let holder = self.connection_holder(conn)?;
            let alias = HolderKey {
                conn,
                pid: Some(pid),
            };
            // Not over a process's own holder, whose pid this writer shares.
            let taken = self.holder_index.get(&alias).is_some();
            let c = self.conns.get_mut(&conn)?;
            if c.aliases < MAX_ALIASES && !taken && self.holder_index.insert(alias, holder).is_ok()
            {
                c.aliases += 1;
            }
            holder
        };
        // Not remembered for `pid` if the pid has another holder here (a
        // process's, whose pid this writer only shares): the shortcut
        // would send that process's frames here.
        let shared = self
            .holder_index
            .get(&HolderKey {
                conn,
                pid: Some(pid),
            })
            .is_some_and(|&h| h != holder);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.last = (!shared).then_some((pid, holder));
        }
        Some(holder)
    }

    /// A holder of its own for the process running under `pid`, whose old
    /// process's end is pending ([`Lifeline::Successor`]), if the driver can
    /// watch it.
    fn successor_holder(&mut self, conn: ConnId, pid: i32, fx: &mut impl Effects) -> Option<u32> {
        let key = HolderKey {
            conn,
            pid: Some(pid),
        };
        if self
            .pids
            .get(&pid)
            .is_some_and(|entry| entry.successor_watched)
            && fx.successor_has_ended(pid)
        {
            self.retire_successors(pid, fx);
        }
        // Taken by an alias to the connection's holder.
        if self.holder_index.get(&key).is_some() || !fx.watch_successor(conn, pid) {
            return None;
        }
        self.pids.get_mut(&pid)?.successor_watched = true;
        let holder = self.new_holder(key, Lifeline::Successor(pid))?;
        if self.holder_index.insert(key, holder).is_err() {
            self.remove_holder(holder);
            return None;
        }
        let entry = self.pids.get_mut(&pid)?;
        entry.successors += 1;
        let older = core::mem::replace(&mut entry.newest_successor, holder);
        self.link_after(holder, older);
        Some(holder)
    }

    /// `pid`'s successor has ended too: its holders join the old process's,
    /// exiting as a gone sender's do (they take only its late frames and
    /// end with the pending report), and a process running under the pid
    /// now may be watched as the next successor.
    fn retire_successors(&mut self, pid: i32, fx: &mut impl Effects) {
        let Some(entry) = self.pids.get_mut(&pid) else {
            return;
        };
        let mut next = core::mem::replace(&mut entry.newest_successor, NO_HOLDER);
        entry.successors = 0;
        entry.successor_watched = false;
        fx.promote_successor(pid, false);
        while let Some(holder) = self.holders.get_mut(next) {
            let id = next;
            next = holder.older_same_pid;
            if holder.lifeline != Lifeline::Successor(pid) {
                continue;
            }
            holder.lifeline = Lifeline::Pid(pid);
            holder.exiting = true;
            let live = !holder.ending;
            self.unindex(id);
            self.link_to_pid(id, pid);
            if live && let Some(entry) = self.pids.get_mut(&pid) {
                entry.holders += 1;
            }
        }
    }

    /// The holder standing for `conn`'s untrusted pids, created on first need.
    fn connection_holder(&mut self, conn: ConnId) -> Option<u32> {
        let key = HolderKey { conn, pid: None };
        if let Some(&holder) = self.holder_index.get(&key) {
            return Some(holder);
        }
        let holder = self.new_holder(key, Lifeline::Connection)?;
        if self.holder_index.insert(key, holder).is_err() {
            self.remove_holder(holder);
            return None;
        }
        Some(holder)
    }

    fn new_holder(&mut self, key: HolderKey, lifeline: Lifeline) -> Option<u32> {
        let id = self
            .holders
            .insert(Holder {
                key,
                lifeline,
                holds: 0,
                ending: false,
                exiting: false,
                end: HolderEnd::Disconnected,
                others_may_map: false,
                newer_on_conn: NO_HOLDER,
                older_on_conn: NO_HOLDER,
                newer_same_pid: NO_HOLDER,
                older_same_pid: NO_HOLDER,
            })
            .ok()?;
        if let Lifeline::Pid(pid) = lifeline {
            self.link_to_pid(id, pid);
        }
        if let Some(c) = self.conns.get_mut(&key.conn) {
            let older = core::mem::replace(&mut c.newest_holder, id);
            if let Some(h) = self.holders.get_mut(older) {
                h.newer_on_conn = id;
            }
            if let Some(h) = self.holders.get_mut(id) {
                h.older_on_conn = older;
            }
        }
        Some(id)
    }

    /// Removes holder `id` from the slab and from its connection's and its
    /// pid's lists.
    fn remove_holder(&mut self, id: u32) {
        let Some(holder) = self.holders.remove(id) else {
            return;
        };
        let (newer, older) = (holder.newer_on_conn, holder.older_on_conn);
        if let Some(h) = self.holders.get_mut(older) {
            h.newer_on_conn = newer;
        }
        match self.holders.get_mut(newer) {
            Some(h) => h.older_on_conn = older,
            None => {
                if let Some(c) = self.conns.get_mut(&holder.key.conn)
                    && c.newest_holder == id
                {
                    c.newest_holder = older;
                }
            }
        }
        self.unlink_from_pid(id, &holder);
    }

    /// Takes `holder` (holder `id`, or what it was) out of its pid's list,
    /// joining its neighbours.
    fn unlink_from_pid(&mut self, id: u32, holder: &Holder) {
        let (newer, older) = (holder.newer_same_pid, holder.older_same_pid);
        if let Some(h) = self.holders.get_mut(older) {
            h.newer_same_pid = newer;
        }
        match self.holders.get_mut(newer) {
            Some(h) => h.older_same_pid = older,
            None => {
                // A pid watched again after its end starts a list of its
                // own: only its head is ours to move.
                let entry = holder
                    .lifeline
                    .pid()
                    .and_then(|pid| self.pids.get_mut(&pid));
                match (holder.lifeline, entry) {
                    (Lifeline::Pid(_), Some(entry)) if entry.newest_holder == id => {
                        entry.newest_holder = older;
                    }
                    (Lifeline::Successor(_), Some(entry)) if entry.newest_successor == id => {
                        entry.newest_successor = older;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Ties holder `id` to `pid`'s list (its lifeline is now that pid, whose
    /// watch it has retained).
    fn link_to_pid(&mut self, id: u32, pid: i32) {
        let Some(entry) = self.pids.get_mut(&pid) else {
            return;
        };
        let older = core::mem::replace(&mut entry.newest_holder, id);
        self.link_after(id, older);
    }

    /// Makes holder `id` the newest of a pid's list whose newest was `older`.
    fn link_after(&mut self, id: u32, older: u32) {
        if let Some(h) = self.holders.get_mut(older) {
            h.newer_same_pid = id;
        }
        if let Some(h) = self.holders.get_mut(id) {
            h.older_same_pid = older;
            h.newer_same_pid = NO_HOLDER;
        }
    }

    /// `conn`'s holders, newest first.
    fn holders_on(&self, conn: ConnId) -> impl Iterator<Item = u32> + '_ {
        let newest = self.conns.get(&conn).map_or(NO_HOLDER, |c| c.newest_holder);
        core::iter::successors(Some(newest), |&h| {
            self.holders.get(h).map(|holder| holder.older_on_conn)
        })
        .take_while(|&h| h != NO_HOLDER)
    }

    /// The live holder already resolved for `pid` on `conn`. If it is tied
    /// to a process that has ended unreported, `pid` may name a new process
    /// by now (a frame read between the end and its report is either the
    /// ended process's last or the new one's): that holder takes no more
    /// frames ([`Manager::pid_exiting`]) and there is none.
    fn known_holder(&mut self, conn: ConnId, pid: i32, fx: &mut impl Effects) -> Option<u32> {
        let c = self.conns.get_mut(&conn)?;
        let holder = match c.last {
            Some((last_pid, holder)) if last_pid == pid => holder,
            _ => {
                let holder = *self.holder_index.get(&HolderKey {
                    conn,
                    pid: Some(pid),
                })?;
                c.last = Some((pid, holder));
                holder
            }
        };
        let (lifeline, exiting) = self
            .holders
            .get(holder)
            .map_or((Lifeline::Connection, false), |h| (h.lifeline, h.exiting));
        let tied = lifeline == Lifeline::Pid(pid);
        // A gone sender's holder: its end is known, and a look per frame
        // with a new holder each time made its late frames quadratic.
        if tied && !exiting && fx.pid_has_ended(pid) {
            self.pid_exiting(pid, self.clock);
            return None;
        }
        let successor = lifeline == Lifeline::Successor(pid);
        if successor && fx.successor_has_ended(pid) {
            // The pid may name a third process by now.
            self.retire_successors(pid, fx);
            return None;
        }
        if (tied || successor) && !fx.speaks_for(conn, pid) {
            // Another writer using the pid: its frames are the connection's.
            return self
                .holder_index
                .get(&HolderKey { conn, pid: None })
                .copied();
        }
        Some(holder)
    }

    /// The live holder on `conn` that a release of name `id` by `pid` is
    /// charged to: `pid`'s own (an exiting one's late release) if the writer
    /// speaks for `pid`, else the one with the lowest id. A writer that only
    /// uses the pid (a worker in a pid namespace of its own, dropping what
    /// it inherited) is another process here: charged to the pid's process,
    /// its release would take that process's registration, and the name
    /// could be reaped while that process maps it.
    fn holder_on_conn_holding(
        &self,
        conn: ConnId,
        pid: i32,
        id: u32,
        fx: &mut impl Effects,
    ) -> Option<u32> {
        let holding = self.holders_on(conn).filter(|&h| {
            self.holders.get(h).is_some_and(|holder| !holder.ending) && self.holds.contains(h, id)
        });
        let own = |h: &u32| {
            self.holders
                .get(*h)
                .is_some_and(|holder| holder.key.pid == Some(pid))
        };
        let (own, any) = holding.fold(
            (None, None),
            |(own_min, any_min): (Option<u32>, Option<u32>), h| {
                let lower = |min: Option<u32>| Some(min.map_or(h, |m| m.min(h)));
                (
                    if own(&h) { lower(own_min) } else { own_min },
                    lower(any_min),
                )
            },
        );
        own.filter(|_| fx.speaks_for(conn, pid)).or(any)
    }

    /// Counts one more holder depending on `pid`'s watch. False (and the
    /// watch dropped if nobody else needs it) when the pid table is full:
    /// the holder then stands for its connection instead.
    fn retain_pid(&mut self, pid: i32, fx: &mut impl Effects) -> bool {
        if let Some(entry) = self.pids.get_mut(&pid) {
            entry.holders += 1;
            return true;
        }
        let entry = PidEntry::watched(1);
        if self.pids.insert(pid, entry).is_ok() {
            return true;
        }
        fx.unwatch_pid(pid);
        false
    }

    fn release_pid(&mut self, pid: i32, fx: &mut impl Effects) {
        let Some(entry) = self.pids.get_mut(&pid) else {
            return;
        };
        entry.holders = entry.holders.saturating_sub(1);
        // An exiting pid's entry stays until its end is reported: dropped
        // now, a process given the pid meanwhile would be watched afresh
        // and then ended by that report.
        if entry.holders == 0 && !entry.exiting {
            self.detached_pids = self
                .detached_pids
                .saturating_sub(usize::from(entry.detached));
            self.pids.remove(&pid);
            fx.unwatch_pid(pid);
        }
    }

    fn begin_end(holder: &mut Holder, why: HolderEnd, fx: &mut impl Effects) {
        holder.ending = true;
        holder.end = why;
        if holder.holds > 0 {
            fx.note(Note::HolderEnded {
                conn: holder.key.conn,
                pid: holder.lifeline.pid(),
                why,
                holds: holder.holds,
            });
        }
    }

    /// Removes holder `id` if it has ended and holds nothing (any more).
    fn drop_if_finished(&mut self, id: u32) {
        if self
            .holders
            .get(id)
            .is_some_and(|holder| holder.ending && holder.holds == 0)
        {
            self.remove_holder(id);
            self.ending -= 1;
        }
    }

    /// Turns up to `budget` holds of ended holders into dead registrations;
    /// returns the budget left.
    fn convert_ending(&mut self, mut budget: usize, now: Timestamp) -> usize {
        if self.ending == 0 {
            return budget;
        }
        for holder in 0..self.holders.id_bound() {
            if budget == 0 {
                break;
            }
            if !self.holders.get(holder).is_some_and(|h| h.ending) {
                continue;
            }
            let mut unheld: heapless::Vec<u32, 64> = heapless::Vec::new();
            let inherited = self.holders.get(holder).is_some_and(|h| h.others_may_map);
            // A connection's holder for untrusted pids, ended after the
            // manager closed that connection.
            let unknown = self
                .holders
                .get(holder)
                .is_some_and(|h| h.key.pid.is_none() && h.others_may_map);
            loop {
                let room = budget.min(unheld.capacity() - unheld.len());
                if room == 0 {
                    break;
                }
                let names = &mut self.names;
                let taken = self.holds.take_of(holder, room, |name, count| {
                    if let Some(record) = names.get_mut(name) {
                        record.live = record.live.saturating_sub(count);
                        record.dead = record.dead.saturating_add(count);
                        record.inherited |= inherited;
                        record.unknown_ended |= unknown;
                        if record.live == 0 {
                            let _ = unheld.push(name);
                        }
                    }
                });
                budget -= taken;
                if let Some(h) = self.holders.get_mut(holder) {
                    h.holds = h.holds.saturating_sub(taken as u32);
                }
                for &name in unheld.iter() {
                    self.unheld(name, true, now);
                }
                unheld.clear();
                if taken < room {
                    break;
                }
            }
            if self.holders.get(holder).is_some_and(|h| h.holds == 0) {
                self.remove_holder(holder);
                self.ending -= 1;
            }
        }
        budget
    }

    /// `ended`, the process that holder `id` (a closed connection's holder
    /// for untrusted pids) was tied to, has ended: the connection's other
    /// processes may live on and still hand its names on, so the holder is
    /// tied to another live one the driver knows wrote on it, if any (see
    /// [`Effects::watch_peer`]). Otherwise which of two writers the holds
    /// outlive would hang on which one ended first.
    fn tie_to_next_writer(&mut self, id: u32, ended: i32, fx: &mut impl Effects) -> bool {
        let Some(&holder) = self.holders.get(id) else {
            return false;
        };
        let Some(next) = fx
            .watch_peer(holder.key.conn, None)
            .filter(|&pid| pid != ended && self.retain_pid(pid, fx))
        else {
            return false;
        };
        self.unlink_from_pid(id, &holder);
        if let Some(h) = self.holders.get_mut(id) {
            h.lifeline = Lifeline::Pid(next);
        }
        self.link_to_pid(id, next);
        // Its connection is closed: what `next` registers again elsewhere
        // moves there, as it would have for the process it was tied to.
        if let Some(entry) = self.pids.get_mut(&next)
            && !core::mem::replace(&mut entry.detached, true)
        {
            self.detached_pids += 1;
        }
        true
    }

    fn close_for_cause(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        now: Timestamp,
        fx: &mut impl Effects,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let peer_pid = c.peer.pid;
        // Its holders live on while their processes do. The holder standing
        // for untrusted pids is tied to the connecting process instead, if
        // that one can be watched.
        if let Some(&holder) = self.holder_index.get(&HolderKey { conn, pid: None }) {
            let watched = fx
                .watch_peer(conn, peer_pid)
                .filter(|&pid| self.retain_pid(pid, fx));
            match watched {
                Some(pid) => {
                    if let Some(h) = self.holders.get_mut(holder) {
                        h.lifeline = Lifeline::Pid(pid);
                        self.link_to_pid(holder, pid);
                    }
                }
                _ => {
                    // Its processes are unknown and may live on: its names
                    // are unlinked only once nobody maps them.
                    if let Some(h) = self.holders.get_mut(holder) {
                        h.others_may_map = true;
                    }
                    self.end_holder(holder, fx);
                }
            }
        }
        // What their processes registered again elsewhere moves there.
        let mut next = self.conns.get(&conn).map_or(NO_HOLDER, |c| c.newest_holder);
        while let Some(holder) = self.holders.get(next) {
            next = holder.older_on_conn;
            match (holder.lifeline, holder.ending) {
                (Lifeline::Pid(pid), false) => {
                    if let Some(entry) = self.pids.get_mut(&pid)
                        && !core::mem::replace(&mut entry.detached, true)
                    {
                        self.detached_pids += 1;
                    }
                }
                (Lifeline::Successor(pid), false) => {
                    if let Some(entry) = self.pids.get_mut(&pid) {
                        entry.successors_detached = true;
                    }
                }
                _ => {}
            }
        }
        fx.close(conn, reason);
        self.stats.closed_for_cause += 1;
        self.conns.remove(&conn);
        self.holder_index
            .remove_run(&HolderKey { conn, pid: None }, |key| key.conn == conn);
        if self.conns.is_empty() {
            self.idle_since = Some(now);
        }
    }

    fn refuse(&mut self, conn: ConnId, fx: &mut impl Effects) {
        self.stats.refused += 1;
        fx.reply(conn, REFUSAL);
    }

    /// A registration that cannot be stored: `NO` on the socket; a journaled
    /// one closes the connection, since its segment may exist already.
    fn refused(&mut self, conn: ConnId, answer: Answer, now: Timestamp, fx: &mut impl Effects) {
        match answer {
            Answer::Reply => self.refuse(conn, fx),
            Answer::Silent => {
                self.stats.refused += 1;
                self.close_for_cause(conn, CloseReason::RegistryFull, now, fx);
            }
        }
    }

    fn unlink(&mut self, id: u32, reason: UnlinkReason, fx: &mut impl Effects) {
        self.unschedule(id);
        if let Some(record) = self.names.get_mut(id) {
            record.phase = Phase::Unlinking;
            record.busy = true;
            fx.chore(Chore::Unlink(record.name, reason));
        }
    }

    fn find(&self, name: &SegmentName) -> Option<u32> {
        let names = &self.names;
        self.index.find(name, |id| match names.get(id) {
            Some(record) => &record.name,
            None => &NO_NAME,
        })
    }

    fn insert_name(&mut self, name: SegmentName) -> Option<u32> {
        let record = NameRecord {
            name,
            live: 0,
            dead: 0,
            wake: NO_TICK,
            phase: Phase::Held,
            tries: 0,
            busy: false,
            inherited: false,
            suspect: false,
            vanished: false,
            adopted: false,
            nobody_maps: false,
            creator_counted: false,
            unknown_ended: false,
            creator_seen: false,
        };
        let id = self.names.insert(record).ok()?;
        let names = &self.names;
        let indexed = self
            .index
            .insert(&name, id, |other| match names.get(other) {
                Some(record) => &record.name,
                None => &NO_NAME,
            });
        if indexed.is_err() {
            self.names.remove(id);
            return None;
        }
        Some(id)
    }

    fn forget(&mut self, id: u32) {
        self.unschedule(id);
        let Some(record) = self.names.get(id) else {
            return;
        };
        let name = record.name;
        let names = &self.names;
        self.index.remove(&name, |other| match names.get(other) {
            Some(record) => &record.name,
            None => &NO_NAME,
        });
        self.names.remove(id);
    }

    fn schedule(&mut self, id: u32, at: Timestamp) {
        let Some(record) = self.names.get_mut(id) else {
            return;
        };
        let tick = if at <= self.clock {
            tick_due(at)
        } else {
            tick_at_or_after(at)
        };
        if record.wake == tick {
            return;
        }
        if self.timers.reschedule(id, record.wake, tick).is_ok() {
            record.wake = tick;
        }
    }

    fn unschedule(&mut self, id: u32) {
        let Some(record) = self.names.get_mut(id) else {
            return;
        };
        if record.wake != NO_TICK {
            let _ = self.timers.reschedule(id, record.wake, NO_TICK);
            record.wake = NO_TICK;
        }
    }
}

/// What a missing slab entry resolves to while an index looks names up; it
/// never equals a stored name (names are never empty).
static NO_NAME: SegmentName = SegmentName::NONE;

/// `unit_ms << min(tries, max_shift)`.
fn backoff(tries: u8, max_shift: u8, unit_ms: u64) -> Duration {
    Duration::from_millis(unit_ms << tries.min(max_shift))
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
