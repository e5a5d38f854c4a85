//! The manager under pid reuse while ends are pending, checked for the one
//! failure that matters most: unlinking a name someone still uses.
//!
//! [`manager_model`](crate::manager_model) predicts every outcome, but its
//! driver reports each end as soon as it happens, so a pid never names a new
//! process while its old one's end is pending (`Manager::pid_exiting` to
//! `Manager::pid_exited`), and the successor holders of that window never
//! run. Here a simulated driver keeps the real one's order within a round:
//! notice ends (`pid_exiting`), read some clients, read what the ended pids'
//! connections hold and report the ends (`end_exited`, senders found gone
//! included), then do the chores. Between rounds, processes are born under
//! reused pids, write frames (a registration opens the segment: its header
//! refcount rises), pickle names (a reference in transit), release, die,
//! hang up or send garbage.
//!
//! Watches behave as pidfds do: a watch is of one process, and says when
//! that process has ended, whoever has the pid now.
//!
//! The check is on the truth, not on a model: no unlink while a live
//! process holds the name (its registration made, its release not) or a
//! reference to it is in transit. A registration whose frames a close for
//! cause would discard is never made (a process does not write after a
//! writer sharing its connection sent garbage), so every loss the check
//! finds is the manager's.
//!
//! A connection may carry its frames in a journal, as our client's do: the
//! driver names no writer for them, and lets them speak for any pid.
//!
//! One loss it found is open, and kept out of the runs (see
//! `Sim::close_would_lose_a_tie`): a process given the pid of one that
//! ended in the same round, before the manager noticed, is charged to its
//! connection; closed for cause before the old end is reported, that
//! connection's holds cannot be tied to it, and a name it registered and
//! unmapped (its reference kept) is reaped while it lives.
//!
//! Not simulated: writers using another process's pid, other pid namespaces,
//! a driver without pidfds. The real-process tests (hostile22 to hostile26)
//! cover those.
//!
//! # Input format
//! A byte picks the reap grace (that many tenths of a second), then events:
//! a byte for the kind (see [`check_window`]'s match), then one byte per
//! argument, until the input ends or 400 events have run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use libshm_core::frame::{FRAME_LEN, Frame};
use libshm_core::manager::{
    Chore, CloseReason, ConnId, Effects, Manager, ManagerConfig, Peer, UnlinkReason,
};
use libshm_core::name::SegmentName;
use libshm_core::namespace::{Observed, Unlinked};
use libshm_core::storage::Growable;
use libshm_core::time::Timestamp;

use crate::cursor::Cursor;

/// Pids processes get: few, so that they are reused often.
const PIDS: u8 = 3;
/// Names the processes use.
const NAMES: u8 = 3;
/// Connections the script may open.
const MAX_CONNS: usize = 4;
/// Events per input, so that one input stays fast.
const MAX_EVENTS: usize = 400;

/// A process: its pid and which of the processes given that pid it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Process {
    pid: i32,
    generation: u32,
}

/// What the simulated kernel and `/dev/shm` know.
#[derive(Default)]
struct World {
    /// The generation of each pid's last process, and whether it runs.
    processes: BTreeMap<i32, (u32, bool)>,
    /// Segments in the namespace, by name, with their header refcounts.
    segments: BTreeMap<u8, i32>,
    /// Per process, the registrations it made and has not released.
    holds: BTreeMap<(Process, u8), u32>,
    /// References to names in transit (pickled, not yet opened).
    transit: BTreeMap<u8, u32>,
    /// Registrations whose process has unmapped the segment, keeping its
    /// reference (to hand on): still its, but a look at the maps finds no
    /// one, so the manager's check of the maps cannot save them.
    unmapped: BTreeSet<(Process, u8)>,
}

impl World {
    fn is_alive(&self, process: Process) -> bool {
        self.processes.get(&process.pid) == Some(&(process.generation, true))
    }

    /// The process running under `pid` now, if any.
    fn running(&self, pid: i32) -> Option<Process> {
        match self.processes.get(&pid) {
            Some(&(generation, true)) => Some(Process { pid, generation }),
            _ => None,
        }
    }

    /// Whether some live process holds `name`, or a reference to it is in
    /// transit: then it must not be unlinked.
    fn in_use(&self, name: u8) -> Option<String> {
        if let Some(count) = self.transit.get(&name).filter(|&&count| count > 0) {
            return Some(format!("{count} reference(s) in transit"));
        }
        self.holds
            .iter()
            .find(|&(&(process, held), &count)| held == name && count > 0 && self.is_alive(process))
            .map(|((process, _), count)| format!("{count} registration(s) by live {process:?}"))
    }
}

fn segment_name(name: u8) -> SegmentName {
    let text = format!("/torch_window_{name}");
    SegmentName::new(text.as_bytes()).expect("a valid name")
}

fn name_index(name: &SegmentName) -> u8 {
    let text = name.as_str();
    text.rsplit('_')
        .next()
        .and_then(|index| index.parse().ok())
        .expect("a name of ours")
}

impl World {
    fn observe(&self, name: u8) -> Observed {
        match self.segments.get(&name) {
            Some(&refcount) => Observed::Segment { refcount },
            None => Observed::Absent,
        }
    }

    /// `/dev/shm`'s unlink, where the check is made.
    fn unlink(&mut self, name: u8) -> Unlinked {
        if let Some(use_) = self.in_use(name) {
            panic!("{} unlinked while in use: {use_}", segment_name(name));
        }
        match self.segments.remove(&name) {
            Some(_) => Unlinked::Removed,
            None => Unlinked::Absent,
        }
    }

    /// Whether a live process maps it.
    fn mapped(&self, name: u8) -> bool {
        self.holds.iter().any(|(&(process, held), &count)| {
            held == name
                && count > 0
                && self.is_alive(process)
                && !self.unmapped.contains(&(process, held))
        })
    }
}

/// A connection: who connected, who wrote on it (last first), what it
/// queued that the manager has not read, and whether it is still open.
struct Conn {
    id: ConnId,
    peer: Process,
    writers: Vec<Process>,
    queue: Vec<(Process, [u8; FRAME_LEN])>,
    /// Its frames go through a journal: no writer is named for them, so
    /// the driver lets them speak for any pid.
    journal: bool,
    /// Garbage queued after its frames: the connection is closed for cause
    /// when the manager reads it.
    garbage: bool,
    hung_up: bool,
    open: bool,
}

/// The driver: watches, successors, closed connections' ties, the round's
/// ends, and the chores asked for.
#[derive(Default)]
struct Driver {
    world: World,
    /// The process each watched pid's watch is of.
    watched: BTreeMap<i32, Process>,
    /// The successor watched apart under a pid whose end is pending.
    successors: BTreeMap<i32, Process>,
    /// Ends to report after this round's reads; found gone, or noticed.
    exited: Vec<i32>,
    gone: BTreeSet<i32>,
    /// Whose bytes are being read.
    writer: Option<Process>,
    /// The processes still to tie a connection closed for cause to.
    closed_ties: BTreeMap<ConnId, Vec<Process>>,
    /// Candidates for `watch_peer`, by connection (peer first, then the
    /// writers, last first), while the connection is open.
    ties: BTreeMap<ConnId, Vec<Process>>,
    closed: Vec<ConnId>,
    chores: Vec<Chore>,
    /// Print what happens (`WINDOW_TRACE` set), to read a failing input.
    trace: bool,
    coverage: Coverage,
}

/// How often the paths this check is for ran, so a test can tell that the
/// inputs reach them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Coverage {
    /// Successors watched (`watch_successor` answering true for a new one).
    pub successors: u64,
    /// Successors promoted to watch their pid.
    pub promoted: u64,
    /// Successors retired, or dropped at the old end (`keep` false).
    pub dropped: u64,
    /// Unlinks carried out (each one checked).
    pub unlinks: u64,
}

impl Driver {
    /// Watches `process` under its pid, as `PidWatches::watch_in` does: a
    /// pid watched already answers for the process watched.
    fn watch(&mut self, process: Process) -> bool {
        if let Some(&watched) = self.watched.get(&process.pid) {
            return watched == process && self.world.is_alive(process);
        }
        if !self.world.is_alive(process) {
            return false;
        }
        self.watched.insert(process.pid, process);
        true
    }
}

impl Effects for Driver {
    fn reply(&mut self, _conn: ConnId, _reply: [u8; 2]) {}

    fn close(&mut self, conn: ConnId, _reason: CloseReason) {
        self.closed.push(conn);
    }

    fn chore(&mut self, chore: Chore) {
        self.chores.push(chore);
    }

    fn note(&mut self, note: libshm_core::manager::Note) {
        if self.trace {
            eprintln!("    note {note:?}");
        }
    }

    fn watch_pid(&mut self, _conn: ConnId, pid: i32) -> bool {
        match self.world.running(pid) {
            Some(process) if self.writer.is_none_or(|w| w.pid == pid) => self.watch(process),
            _ => false,
        }
    }

    fn watch_peer(&mut self, conn: ConnId, _peer: Option<i32>) -> Option<i32> {
        let mut candidates = match self.ties.remove(&conn) {
            Some(candidates) => candidates,
            None => self.closed_ties.remove(&conn)?,
        };
        while !candidates.is_empty() {
            let process = candidates.remove(0);
            if self.watch(process) {
                if !candidates.is_empty() {
                    self.closed_ties.insert(conn, candidates);
                }
                return Some(process.pid);
            }
        }
        None
    }

    fn unwatch_pid(&mut self, pid: i32) {
        self.watched.remove(&pid);
    }

    fn pid_has_ended(&mut self, pid: i32) -> bool {
        self.watched
            .get(&pid)
            .is_some_and(|&process| !self.world.is_alive(process))
    }

    fn speaks_for(&mut self, _conn: ConnId, pid: i32) -> bool {
        self.writer.is_none_or(|writer| writer.pid == pid)
    }

    fn pid_is_gone(&mut self, _conn: ConnId, pid: i32) -> bool {
        let gone =
            self.writer.is_none_or(|writer| writer.pid == pid) && self.world.running(pid).is_none();
        if gone && self.gone.insert(pid) {
            self.exited.push(pid);
        }
        gone
    }

    fn watch_successor(&mut self, _conn: ConnId, pid: i32) -> bool {
        if let Some(&successor) = self.successors.get(&pid) {
            return self.world.is_alive(successor);
        }
        match self.world.running(pid) {
            Some(process) if self.writer.is_none_or(|w| w.pid == pid) => {
                self.successors.insert(pid, process);
                self.coverage.successors += 1;
                true
            }
            _ => false,
        }
    }

    fn successor_has_ended(&mut self, pid: i32) -> bool {
        self.successors
            .get(&pid)
            .is_none_or(|&process| !self.world.is_alive(process))
    }

    fn promote_successor(&mut self, pid: i32, keep: bool) -> bool {
        let Some(successor) = self.successors.remove(&pid) else {
            return false;
        };
        if !keep || self.watched.contains_key(&pid) {
            self.coverage.dropped += 1;
            return false;
        }
        // Noticed at the next round if it has ended already.
        self.watched.insert(pid, successor);
        self.coverage.promoted += 1;
        true
    }
}

struct Sim {
    manager: Manager<Growable>,
    fx: Driver,
    conns: Vec<Conn>,
    /// Each process's connection: its own, or its parent's, inherited at
    /// fork as PyTorch's workers inherit theirs. A process sends every
    /// frame on it.
    conn_of: BTreeMap<Process, usize>,
    /// Between [`Sim::begin_round`] and [`Sim::end_round`]: no ticks.
    in_round: bool,
    /// Processes whose frames were read while the process watched under
    /// their pid had ended unnoticed: the manager charged them to their
    /// connection (see [`Sim::close_would_lose_a_tie`]).
    charged_unnoticed: BTreeSet<Process>,
    /// Pids whose end the manager has been told of and not yet reported.
    exiting: BTreeSet<i32>,
    now: u64,
}

impl Sim {
    fn new(grace_ticks: u8) -> Self {
        let config = ManagerConfig {
            shutdown_after: Duration::from_secs(1 << 20),
            reap_grace: Some(Duration::from_millis(u64::from(grace_ticks) * 100)),
            frame_timeout: None,
            silence_timeout: None,
            measure_every: None,
            // What a connection closed for cause leaves is reaped after
            // this, not a minute: within a script's ticks.
            linger: Duration::from_secs(1),
            ..ManagerConfig::default()
        };
        Self {
            manager: Manager::new(config, Timestamp::ZERO),
            fx: Driver::default(),
            conns: Vec::new(),
            conn_of: BTreeMap::new(),
            in_round: false,
            charged_unnoticed: BTreeSet::new(),
            exiting: BTreeSet::new(),
            now: 0,
        }
    }

    fn timestamp(&self) -> Timestamp {
        Timestamp::from_duration(Duration::from_millis(self.now))
    }

    fn conn(&self, choice: u8) -> Option<usize> {
        let count = self.conns.len();
        (count > 0).then(|| usize::from(choice) % count)
    }

    /// A live process picked by `choice`, if any.
    fn process(&self, choice: u8) -> Option<Process> {
        let pid = i32::from(choice % PIDS) + 1;
        self.fx.world.running(pid)
    }

    /// A process under a pid nobody runs, inheriting a connection if
    /// `inherit` is odd.
    fn spawn(&mut self, choice: u8, inherit: u8) {
        let pid = i32::from(choice % PIDS) + 1;
        let entry = self.fx.world.processes.entry(pid).or_insert((0, false));
        if entry.1 {
            return;
        }
        *entry = (entry.0 + 1, true);
        let process = Process {
            pid,
            generation: entry.0,
        };
        if inherit % 2 == 1
            && let Some(index) = self.conn(inherit / 2)
        {
            self.conn_of.insert(process, index);
        }
    }

    fn die(&mut self, choice: u8) {
        if let Some(process) = self.process(choice) {
            self.fx
                .world
                .processes
                .insert(process.pid, (process.generation, false));
        }
    }

    /// A connection of the process `choice` picks (`choice % PIDS`),
    /// through a journal if the quotient is odd.
    fn connect(&mut self, choice: u8) {
        let Some(process) = self.process(choice) else {
            return;
        };
        if self.conns.len() >= MAX_CONNS || self.conn_of.contains_key(&process) {
            return;
        }
        let peer = Peer {
            pid: Some(process.pid),
            uid: None,
        };
        let Ok(id) = self.manager.connect(peer, self.timestamp()) else {
            return;
        };
        self.conns.push(Conn {
            id,
            peer: process,
            writers: Vec::new(),
            queue: Vec::new(),
            journal: choice / PIDS % 2 == 1,
            garbage: false,
            hung_up: false,
            open: true,
        });
        self.conn_of.insert(process, self.conns.len() - 1);
    }

    /// A live process picked by `choice`, with its connection.
    fn sender(&self, choice: u8) -> Option<(Process, usize)> {
        let process = self.process(choice)?;
        Some((process, *self.conn_of.get(&process)?))
    }

    /// Whether `process` may write on connection `index`: it is open, and
    /// nothing written on it will be thrown away.
    fn writable(&self, index: usize) -> bool {
        let conn = &self.conns[index];
        conn.open && !conn.garbage && !conn.hung_up
    }

    fn write(&mut self, index: usize, process: Process, frame: Frame) {
        let conn = &mut self.conns[index];
        conn.queue.push((process, frame.encode()));
        conn.writers.retain(|&w| w != process);
        conn.writers.insert(0, process);
    }

    /// A registration: the frame, then the segment created or opened.
    fn register(&mut self, who: u8, name: u8) {
        let Some((process, index)) = self.sender(who) else {
            return;
        };
        if !self.writable(index) {
            return;
        }
        let name = name % NAMES;
        self.write(
            index,
            process,
            Frame::register(process.pid, segment_name(name)),
        );
        let world = &mut self.fx.world;
        *world.segments.entry(name).or_insert(0) += 1;
        *world.holds.entry((process, name)).or_insert(0) += 1;
        world.unmapped.remove(&(process, name));
    }

    /// `who` unmaps `name`, keeping its reference and its registration.
    fn unmap(&mut self, who: u8, name: u8) {
        if let Some(process) = self.process(who) {
            self.fx.world.unmapped.insert((process, name % NAMES));
        }
    }

    /// A release: the reference dropped (the last one unlinks), then the
    /// frame.
    fn release(&mut self, who: u8, name: u8) {
        let Some((process, index)) = self.sender(who) else {
            return;
        };
        let name = name % NAMES;
        if !self.writable(index)
            || self
                .fx
                .world
                .holds
                .get(&(process, name))
                .is_none_or(|&c| c == 0)
        {
            return;
        }
        self.drop_reference(name);
        if let Some(count) = self.fx.world.holds.get_mut(&(process, name)) {
            *count -= 1;
        }
        self.write(
            index,
            process,
            Frame::release(process.pid, segment_name(name)),
        );
    }

    fn drop_reference(&mut self, name: u8) {
        let segments = &mut self.fx.world.segments;
        if let Some(refcount) = segments.get_mut(&name) {
            *refcount -= 1;
            if *refcount <= 0 {
                segments.remove(&name);
            }
        }
    }

    /// A live holder pickles `name`: a reference in transit.
    fn pickle(&mut self, who: u8, name: u8) {
        let Some(process) = self.process(who) else {
            return;
        };
        let name = name % NAMES;
        let world = &mut self.fx.world;
        if world.holds.get(&(process, name)).is_some_and(|&c| c > 0) {
            *world.segments.entry(name).or_insert(0) += 1;
            *world.transit.entry(name).or_insert(0) += 1;
        }
    }

    /// The receiver has opened it (after its own registration): the
    /// reference in transit is dropped.
    fn unpickle(&mut self, name: u8) {
        let name = name % NAMES;
        let Some(count) = self.fx.world.transit.get_mut(&name).filter(|c| **c > 0) else {
            return;
        };
        *count -= 1;
        self.drop_reference(name);
    }

    /// `who` writes garbage on its connection (the last thing on it).
    fn garbage(&mut self, who: u8) {
        if let Some((process, index)) = self.sender(who)
            && self.writable(index)
        {
            let conn = &mut self.conns[index];
            conn.garbage = true;
            conn.writers.retain(|&w| w != process);
            conn.writers.insert(0, process);
        }
    }

    /// The connection's end of file: once every process that used it has
    /// exited (a live one would keep its descriptor; one that closes it
    /// while holding names has them reaped, as PyTorch's manager does).
    fn hang_up(&mut self, conn: u8) {
        let Some(index) = self.conn(conn) else {
            return;
        };
        let conn = &self.conns[index];
        let used = std::iter::once(&conn.peer).chain(&conn.writers);
        if conn.open && used.clone().all(|&p| !self.fx.world.is_alive(p)) {
            self.conns[index].hung_up = true;
        }
    }

    /// Hands the manager up to `frames` of connection `index`'s queue, one
    /// writer's run at a time (as a read with credentials returns them);
    /// then its garbage or its end of file once the queue is empty.
    fn read(&mut self, index: usize, frames: usize) {
        self.refresh_ties();
        let now = self.timestamp();
        for _ in 0..frames {
            let conn = &mut self.conns[index];
            if !conn.open {
                return;
            }
            let Some(&(writer, bytes)) = conn.queue.first() else {
                break;
            };
            conn.queue.remove(0);
            let (id, journal) = (conn.id, conn.journal);
            if self.fx.world.is_alive(writer)
                && !self.exiting.contains(&writer.pid)
                && self
                    .fx
                    .watched
                    .get(&writer.pid)
                    .is_some_and(|&watched| !self.fx.world.is_alive(watched))
            {
                self.charged_unnoticed.insert(writer);
            }
            if journal {
                self.manager
                    .receive_journaled(id, &bytes, now, &mut self.fx);
            } else {
                self.fx.writer = Some(writer);
                self.manager.receive(id, &bytes, now, &mut self.fx);
                self.fx.writer = None;
            }
            self.settle_closes();
        }
        let conn = &self.conns[index];
        if conn.open && conn.queue.is_empty() {
            let id = conn.id;
            if conn.garbage && !self.close_would_lose_a_tie(index) {
                let writer = conn.writers.first().copied().unwrap_or(conn.peer);
                self.fx.writer = Some(writer);
                self.manager
                    .receive(id, &[0xff; FRAME_LEN], now, &mut self.fx);
                self.fx.writer = None;
            } else if conn.hung_up {
                self.manager.disconnect(id, now, &mut self.fx);
                self.conns[index].open = false;
            }
            self.settle_closes();
        }
    }

    /// Whether a close for cause of connection `index` now would find a
    /// live process whose frames were charged to the connection (read
    /// while the process watched under its pid had ended unnoticed) and
    /// refuse to tie the connection's holds to it, because that end is not
    /// reported yet. Open: the holds then end as nobody's, and a live
    /// process's registration charged to the connection turns dead (found
    /// here: a process given the pid of one that died in the same round
    /// registers through a journal, is closed for cause before the old end
    /// is reported, and loses an unmapped name it holds). The garbage waits
    /// until the end is reported instead, so that the check stays on what
    /// is not known.
    fn close_would_lose_a_tie(&self, index: usize) -> bool {
        let conn = &self.conns[index];
        std::iter::once(&conn.peer)
            .chain(&conn.writers)
            .any(|&process| {
                self.charged_unnoticed.contains(&process)
                    && self.fx.world.is_alive(process)
                    && self.fx.watched.get(&process.pid).is_some_and(|&watched| {
                        watched != process && !self.fx.world.is_alive(watched)
                    })
            })
    }

    fn settle_closes(&mut self) {
        for id in std::mem::take(&mut self.fx.closed) {
            if let Some(conn) = self.conns.iter_mut().find(|c| c.id == id) {
                conn.open = false;
                conn.queue.clear();
            }
        }
    }

    /// A round of the real driver: ends noticed (those in `noticed`, a
    /// bit per pid), reads of the ready clients, then the ends reported
    /// after their connections' queues are read, then chores.
    fn round(&mut self, noticed: u8, ready: u8, frames: u8) {
        self.begin_round(noticed);
        for index in 0..self.conns.len() {
            if ready >> index & 1 == 1 {
                self.read(index, usize::from(frames % 8) + 1);
            }
        }
        self.end_round();
    }

    /// The top of a round: the ends noticed (a bit per pid in `noticed`)
    /// stop taking frames. Until [`Sim::end_round`], processes go on
    /// living, dying and writing while the manager reads, as they do
    /// while a real round runs.
    fn begin_round(&mut self, noticed: u8) {
        if self.in_round {
            return;
        }
        self.in_round = true;
        let now = self.timestamp();
        for (&pid, &process) in &self.fx.watched {
            let bit = 1 << ((pid - 1) % 8);
            if noticed & bit != 0
                && !self.fx.world.is_alive(process)
                && !self.fx.exited.contains(&pid)
            {
                self.fx.exited.push(pid);
            }
        }
        for &pid in &self.fx.exited {
            self.manager.pid_exiting(pid, now);
            self.exiting.insert(pid);
        }
    }

    /// A read of connection `conn`'s queue inside a round.
    fn read_in_round(&mut self, conn: u8, frames: u8) {
        if let Some(index) = self.conn(conn)
            && self.in_round
        {
            self.read(index, usize::from(frames % 8) + 1);
        }
    }

    /// The end of a round: the ends reported, then the chores.
    fn end_round(&mut self) {
        if !self.in_round {
            return;
        }
        self.end_exited();
        self.in_round = false;
        self.work();
    }

    /// What `watch_peer` would be offered, from the connections as they are.
    fn refresh_ties(&mut self) {
        for conn in &self.conns {
            if conn.open {
                let mut candidates = vec![conn.peer];
                candidates.extend(conn.writers.iter().copied().filter(|&w| w != conn.peer));
                self.fx.ties.insert(conn.id, candidates);
            }
        }
    }

    /// As `Driver::end_exited`: each connection of the ended pids read to
    /// the end once, then the ends reported; senders found gone meanwhile
    /// handled the same way.
    fn end_exited(&mut self) {
        let now = self.timestamp();
        let mut read = BTreeSet::new();
        while !self.fx.exited.is_empty() {
            // Each once, as the driver does (`each_once`): found ended
            // twice in a round, a pid reported twice would end the holders
            // of the process promoted to it by the first report.
            let mut seen = BTreeSet::new();
            let mut pids = std::mem::take(&mut self.fx.exited);
            pids.retain(|&pid| seen.insert(pid));
            for &pid in &pids {
                self.manager.pid_exiting(pid, now);
                self.exiting.insert(pid);
            }
            let ids: Vec<ConnId> = pids
                .iter()
                .flat_map(|&pid| self.manager.connections_of(pid).collect::<Vec<_>>())
                .filter(|&id| read.insert(id))
                .collect();
            for id in ids {
                if let Some(index) = self.conns.iter().position(|c| c.id == id) {
                    self.read(index, usize::MAX);
                }
            }
            for pid in pids {
                if self
                    .fx
                    .watched
                    .get(&pid)
                    .is_some_and(|&process| !self.fx.world.is_alive(process))
                {
                    self.fx.watched.remove(&pid);
                }
                self.manager.pid_exited(pid, now, &mut self.fx);
                self.exiting.remove(&pid);
                self.fx.gone.remove(&pid);
            }
        }
        self.fx.gone.clear();
    }

    fn work(&mut self) {
        let now = self.timestamp();
        self.manager.tick(now, &mut self.fx);
        while !self.fx.chores.is_empty() {
            let chore = self.fx.chores.remove(0);
            if self.fx.trace {
                eprintln!("    chore {chore:?}");
            }
            match chore {
                Chore::Observe(name) => {
                    let observed = self.fx.world.observe(name_index(&name));
                    self.manager
                        .observed(&name, Some(observed), now, &mut self.fx);
                }
                Chore::Unlink(name, reason) => {
                    assert_ne!(
                        reason,
                        UnlinkReason::Shutdown,
                        "{name}: a shutdown unlink while serving"
                    );
                    let outcome = self.fx.world.unlink(name_index(&name));
                    self.fx.coverage.unlinks += 1;
                    self.manager
                        .unlinked(&name, reason, Some(outcome), now, &mut self.fx);
                }
                Chore::CheckMapped(name) => {
                    let mapped = self.fx.world.mapped(name_index(&name));
                    if self.fx.trace {
                        eprintln!("    mapped: {mapped}");
                    }
                    self.manager.mapped(&name, Some(mapped), now, &mut self.fx);
                }
                Chore::MeasureUsage => {}
            }
            self.settle_closes();
        }
    }
}

/// Runs `input` as a script; panics if a name in use is unlinked.
pub fn check_window(input: &[u8]) {
    check_window_counting(input);
}

/// As [`check_window`], returning how often the window's paths ran.
pub fn check_window_counting(input: &[u8]) -> Coverage {
    let mut cursor = Cursor::new(input);
    let mut sim = Sim::new(cursor.byte());
    sim.fx.trace = std::env::var_os("WINDOW_TRACE").is_some();
    for _ in 0..MAX_EVENTS {
        if cursor.is_empty() {
            break;
        }
        if sim.fx.trace {
            eprintln!(
                "t={} {:?} {:?}",
                sim.now,
                cursor.clone().take(4),
                sim.fx.world.processes
            );
        }
        match cursor.byte() % 16 {
            0 => {
                let (pid, inherit) = (cursor.byte(), cursor.byte());
                sim.spawn(pid, inherit);
            }
            1 => sim.die(cursor.byte()),
            2 => sim.connect(cursor.byte()),
            3 | 4 => {
                let (who, name) = (cursor.byte(), cursor.byte());
                sim.register(who, name);
            }
            5 => {
                let (who, name) = (cursor.byte(), cursor.byte());
                sim.release(who, name);
            }
            6 => {
                let (who, name) = (cursor.byte(), cursor.byte());
                sim.pickle(who, name);
            }
            7 => sim.unpickle(cursor.byte()),
            8 => sim.garbage(cursor.byte()),
            9 => sim.hang_up(cursor.byte()),
            10 => {
                let (noticed, ready, frames) = (cursor.byte(), cursor.byte(), cursor.byte());
                sim.end_round();
                sim.round(noticed, ready, frames);
            }
            11 => {
                let advance = cursor.byte();
                if !sim.in_round {
                    sim.now += u64::from(advance) * 10;
                    sim.work();
                }
            }
            12 => sim.begin_round(cursor.byte()),
            13 => {
                let (conn, frames) = (cursor.byte(), cursor.byte());
                sim.read_in_round(conn, frames);
            }
            14 => sim.end_round(),
            _ => {
                let (who, name) = (cursor.byte(), cursor.byte());
                sim.unmap(who, name);
            }
        }
    }
    sim.end_round();
    if sim.fx.trace {
        for name in 0..NAMES {
            let state = sim.manager.name_state(&segment_name(name));
            eprintln!("{}: {state:?}", segment_name(name));
        }
    }
    sim.fx.coverage
}
