//! The manager's driver as the fuzz harness plays it: it records what the
//! manager asks for, holds the chores until the script says to carry them
//! out, watches the pids it can, remembers who wrote on each connection (to
//! tie a closed one's untrusted holds to, as `transport-unix`'s driver does),
//! and keeps a simulated shared-memory namespace with header refcounts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU32;

use libshm_core::journal::{Journal, journal_len};
use libshm_core::manager::{Chore, CloseReason, ConnId, Effects, Note};
use libshm_core::name::SegmentName;
use libshm_core::namespace::{Namespace, Observed, Unlinked};

use crate::manager_script::NsChange;

/// One thing the manager asked of its driver that the model checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Effect {
    Reply(ConnId, [u8; 2]),
    Close(ConnId, CloseReason),
    Chore(Chore),
    /// A frame the manager ignored, as noted: a stray release
    /// ([`Note::StrayRelease`]) or a journaled name outside the prefix
    /// ([`Note::ForeignSkipped`]).
    Ignored(Note),
    Untouchable(SegmentName),
    InTransit {
        name: SegmentName,
        refcount: i32,
        dead: u32,
    },
    /// A held name a patrol found gone twice.
    Vanished(SegmentName),
    /// An orphan some process still maps, kept.
    StillMapped(SegmentName),
}

/// A process: a pid, and how many processes had it before (the real driver
/// tells them apart by start time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Process {
    pid: i32,
    generation: u32,
}

/// What the kernel named for a live connection: who connected, and who wrote
/// on it.
#[derive(Clone, Debug, Default)]
pub(super) struct Client {
    peer: Option<Process>,
    /// The process that wrote last.
    last_writer: Option<Process>,
    /// Every process that wrote, in the order each first wrote.
    writers: Vec<Process>,
}

impl Client {
    /// The processes to tie the connection's untrusted holds to, the next
    /// first: the one that connected, then the last writer, then the
    /// others, the latest to start writing first (`Client::ties_in_order`
    /// in `transport-unix`).
    fn ties_in_order(&self, peer: Option<i32>) -> Vec<Process> {
        let connecting = self.peer.filter(|p| Some(p.pid) == peer);
        let mut writers: Vec<Process> = self
            .writers
            .iter()
            .rev()
            .copied()
            .filter(|p| Some(p.pid) != peer)
            .collect();
        writers.sort_by_key(|&p| Some(p) != self.last_writer);
        connecting.into_iter().chain(writers).collect()
    }
}

/// One `watch_peer` question and the driver's answer, for the model to
/// judge the manager by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tie {
    pub(super) conn: ConnId,
    pub(super) peer: Option<i32>,
    pub(super) tied: Option<i32>,
}

/// Records effects, holds chores, and answers `watch_pid`, `watch_peer` and
/// `speaks_for`.
#[derive(Default)]
pub(super) struct Driver {
    /// Effects since the harness last looked, in order.
    pub(super) log: Vec<Effect>,
    /// Chores asked for and not carried out yet, oldest first.
    pub(super) held: Vec<Chore>,
    /// Bit `pid % 8`: the driver can watch that pid while it lives.
    pub(super) watchable: u8,
    /// Pids whose process died (and was not reborn).
    pub(super) dead: BTreeSet<i32>,
    /// Pids the manager asked to watch and has not unwatched.
    pub(super) watched: BTreeSet<i32>,
    /// Whether journal offers are taken.
    pub(super) journals: bool,
    /// Pids `pid_is_gone` said had exited, whose end is reported after the
    /// reading in progress.
    pub(super) gone_reported: Vec<i32>,
    /// The memory of the journal an offer attaches (one, shared by every
    /// connection: the model reads only the manager's advertisement in it).
    pub(super) journal: Vec<AtomicU32>,
    /// Pids the writer of the bytes read from sockets uses without speaking
    /// for them.
    pub(super) foreign: BTreeSet<i32>,
    /// The manager is reading bytes from a socket (as opposed to a journal,
    /// a tick or an eviction, which have no writer to ask about).
    pub(super) reading: bool,
    /// Per pid, how many processes had it before the one that has it now.
    pub(super) generations: BTreeMap<i32, u32>,
    /// Live connections' processes, as the kernel named them.
    pub(super) clients: BTreeMap<ConnId, Client>,
    /// For connections closed for cause whose untrusted holds are tied to a
    /// process: the processes to pass the tie on to when it ends, the next
    /// first.
    pub(super) next_ties: BTreeMap<ConnId, Vec<Process>>,
    /// `watch_peer` questions since the model last looked, in order.
    pub(super) ties: Vec<Tie>,
}

impl Driver {
    /// What `watch_pid` answers for `pid`: a live process the driver can
    /// watch (its own user, its own pid namespace).
    pub(super) fn can_watch(&self, pid: i32) -> bool {
        self.watchable >> pid.rem_euclid(8) & 1 == 1 && !self.dead.contains(&pid)
    }

    /// What `pid_is_gone` answers: a process of the driver's own user and
    /// namespace that died.
    pub(super) fn is_gone(&self, pid: i32) -> bool {
        self.watchable >> pid.rem_euclid(8) & 1 == 1 && self.dead.contains(&pid)
    }

    /// What `speaks_for` answers for `pid`: false while reading a socket
    /// whose writer uses `pid` without speaking for it. As in the real
    /// driver, `watch_pid` and `pid_is_gone` decline such a pid too.
    pub(super) fn speaks(&self, pid: i32) -> bool {
        !(self.reading && self.foreign.contains(&pid))
    }

    /// What `watch_pid` answers for `pid` now.
    pub(super) fn would_watch(&self, pid: i32) -> bool {
        self.can_watch(pid) && self.speaks(pid)
    }

    /// What `pid_is_gone` answers for `pid` now.
    pub(super) fn would_report_gone(&self, pid: i32) -> bool {
        self.is_gone(pid) && self.speaks(pid)
    }

    /// The process that has `pid` now.
    fn process(&self, pid: i32) -> Process {
        let generation = self.generations.get(&pid).copied().unwrap_or(0);
        Process { pid, generation }
    }

    /// Whether `process` still runs and can be watched: not a later process
    /// given its pid.
    fn runs(&self, process: Process) -> bool {
        self.process(process.pid) == process && self.can_watch(process.pid)
    }

    /// A new process has `pid`, which a dead one had.
    pub(super) fn pid_reused(&mut self, pid: i32) {
        if self.dead.remove(&pid) {
            *self.generations.entry(pid).or_default() += 1;
        }
    }

    /// `conn` was accepted from `peer` (the kernel's word).
    pub(super) fn connected(&mut self, conn: ConnId, peer: Option<i32>) {
        let peer = peer.map(|pid| self.process(pid));
        let client = Client {
            peer,
            ..Client::default()
        };
        self.clients.insert(conn, client);
    }

    /// The kernel names `pid`'s process as the writer of bytes on `conn`.
    pub(super) fn wrote(&mut self, conn: ConnId, pid: i32) {
        let writer = self.process(pid);
        if let Some(client) = self.clients.get_mut(&conn) {
            client.last_writer = Some(writer);
            if !client.writers.contains(&writer) {
                client.writers.push(writer);
            }
        }
    }

    /// The client hung up: nothing to tie to it any more.
    pub(super) fn disconnected(&mut self, conn: ConnId) {
        self.clients.remove(&conn);
    }

    /// Memory for the journal offers take.
    pub(super) fn journal_memory() -> Vec<AtomicU32> {
        (0..journal_len(1) / 4).map(|_| AtomicU32::new(0)).collect()
    }
}

impl Effects for Driver {
    fn reply(&mut self, conn: ConnId, reply: [u8; 2]) {
        self.log.push(Effect::Reply(conn, reply));
    }
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        self.log.push(Effect::Close(conn, reason));
        self.clients.remove(&conn);
    }
    fn chore(&mut self, chore: Chore) {
        self.log.push(Effect::Chore(chore));
        self.held.push(chore);
    }
    fn watch_pid(&mut self, _conn: ConnId, pid: i32) -> bool {
        let watch = self.would_watch(pid);
        if watch {
            self.watched.insert(pid);
        }
        watch
    }
    /// The kernel's word for who connected, whoever writes now, else for
    /// who wrote on it: the first of them that still runs, the rest kept
    /// for its end (asked again then, with no peer).
    fn watch_peer(&mut self, conn: ConnId, peer: Option<i32>) -> Option<i32> {
        if let Some(client) = self.clients.get(&conn) {
            let ties = client.ties_in_order(peer);
            self.next_ties.insert(conn, ties);
        }
        let mut rest = self.next_ties.remove(&conn).unwrap_or_default().into_iter();
        let tied = rest.by_ref().find(|&process| self.runs(process));
        let rest: Vec<Process> = rest.collect();
        if tied.is_some() && !rest.is_empty() {
            self.next_ties.insert(conn, rest);
        }
        let tied = tied.map(|process| process.pid);
        if let Some(pid) = tied {
            self.watched.insert(pid);
        }
        self.ties.push(Tie { conn, peer, tied });
        tied
    }
    fn speaks_for(&mut self, _conn: ConnId, pid: i32) -> bool {
        self.speaks(pid)
    }
    fn pid_is_gone(&mut self, _conn: ConnId, pid: i32) -> bool {
        let gone = self.would_report_gone(pid);
        if gone {
            self.watched.insert(pid);
            if !self.gone_reported.contains(&pid) {
                self.gone_reported.push(pid);
            }
        }
        gone
    }
    fn unwatch_pid(&mut self, pid: i32) {
        assert!(
            self.watched.remove(&pid),
            "the manager unwatched pid {pid}, which it was not watching"
        );
    }
    fn attach_journal(&mut self, _conn: ConnId) -> Option<Journal<'_>> {
        if !self.journals {
            return None;
        }
        let journal = Journal::from_words(&self.journal).ok()?;
        journal.initialize();
        Some(journal)
    }
    fn note(&mut self, note: Note) {
        let effect = match note {
            Note::StrayRelease { .. } | Note::ForeignSkipped { .. } => Effect::Ignored(note),
            Note::Untouchable { name } => Effect::Untouchable(name),
            Note::InTransit {
                name,
                refcount,
                dead,
            } => Effect::InTransit {
                name,
                refcount,
                dead,
            },
            Note::Vanished { name, .. } => Effect::Vanished(name),
            Note::StillMapped { name } => Effect::StillMapped(name),
            // Log lines and history only; what they report is checked
            // through state.
            Note::HolderEnded { .. }
            | Note::Lingering { .. }
            | Note::Registered { .. }
            | Note::Released { .. }
            | Note::Orphaned { .. }
            | Note::Unlinked { .. }
            | Note::Gone { .. }
            | Note::Pressure(_) => return,
        };
        self.log.push(effect);
    }
}

/// What sits under a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Object {
    /// A segment of ours with this header refcount.
    Segment(i32),
    /// A FIFO, a symlink, another user's file.
    Foreign,
}

/// `/dev/shm` as the manager's namespace sees it.
#[derive(Default)]
pub(super) struct SimNamespace {
    pub(super) objects: BTreeMap<SegmentName, Object>,
    /// Unlinks still to fail, per name.
    pub(super) failing: BTreeMap<SegmentName, u8>,
    /// Names some process maps.
    pub(super) mapped: BTreeSet<SegmentName>,
}

impl SimNamespace {
    pub(super) fn apply(&mut self, name: SegmentName, change: NsChange) {
        let refcount = match self.objects.get(&name) {
            Some(Object::Segment(refcount)) => Some(*refcount),
            _ => None,
        };
        // Some(None): nothing there any more; None: unchanged.
        let next = match (change, refcount) {
            (NsChange::Create, _) => Some(Some(Object::Segment(1))),
            (NsChange::Incref, Some(rc)) => Some(Some(Object::Segment(rc.saturating_add(1)))),
            (NsChange::Decref, Some(rc)) => Some(Some(Object::Segment(rc.saturating_sub(1)))),
            (NsChange::LastClose, Some(rc)) if rc <= 1 => Some(None),
            (NsChange::LastClose, Some(rc)) => Some(Some(Object::Segment(rc - 1))),
            (NsChange::Incref | NsChange::Decref | NsChange::LastClose, None) => None,
            (NsChange::Remove, _) => Some(None),
            (NsChange::Foreign, _) => Some(Some(Object::Foreign)),
            (NsChange::SetRefcount(value), _) => Some(Some(Object::Segment(i32::from(value)))),
            (NsChange::FailUnlinks(count), _) => {
                self.failing.insert(name, count);
                None
            }
            (NsChange::Mapped(true), _) => {
                self.mapped.insert(name);
                None
            }
            (NsChange::Mapped(false), _) => {
                self.mapped.remove(&name);
                None
            }
        };
        match next {
            Some(Some(object)) => {
                self.objects.insert(name, object);
            }
            Some(None) => {
                self.objects.remove(&name);
            }
            None => {}
        }
    }

    /// What a look at `name` finds.
    pub(super) fn look(&self, name: &SegmentName) -> Observed {
        match self.objects.get(name) {
            None => Observed::Absent,
            Some(Object::Segment(refcount)) => Observed::Segment {
                refcount: *refcount,
            },
            Some(Object::Foreign) => Observed::Foreign,
        }
    }

    /// What an unlink of `name` would do now: `None` if it fails.
    pub(super) fn would_unlink(&self, name: &SegmentName) -> Option<Unlinked> {
        match self.objects.get(name) {
            Some(Object::Foreign) => Some(Unlinked::Foreign),
            _ if self.failing.get(name).is_some_and(|&n| n > 0) => None,
            Some(Object::Segment(_)) => Some(Unlinked::Removed),
            None => Some(Unlinked::Absent),
        }
    }
}

impl Namespace for SimNamespace {
    type Error = &'static str;

    fn observe(&mut self, name: &SegmentName) -> Result<Observed, Self::Error> {
        Ok(self.look(name))
    }

    fn mapped(&mut self, name: &SegmentName) -> Result<bool, Self::Error> {
        Ok(self.mapped.contains(name))
    }

    fn unlink(&mut self, name: &SegmentName) -> Result<Unlinked, Self::Error> {
        let outcome = self.would_unlink(name);
        match outcome {
            None => {
                if let Some(n) = self.failing.get_mut(name) {
                    *n -= 1;
                }
                Err("EMFILE")
            }
            Some(Unlinked::Removed) => {
                self.objects.remove(name);
                Ok(Unlinked::Removed)
            }
            Some(other) => Ok(other),
        }
    }
}
