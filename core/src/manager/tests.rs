use super::*;
use crate::frame::Frame;
use crate::storage::Fixed;
use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

type TestManager = Manager<Fixed<64, 8>>;

/// Records effects; pids in `trusted` can be watched.
#[derive(Default)]
struct Recorder {
    replies: Vec<(ConnId, [u8; 2])>,
    closed: Vec<(ConnId, CloseReason)>,
    chores: Vec<Chore>,
    trusted: BTreeSet<i32>,
    /// Pids of processes that have exited.
    gone: BTreeSet<i32>,
    /// Watched pids whose process has ended, not yet reported.
    ended: BTreeSet<i32>,
    watched: BTreeMap<i32, usize>,
    notes: Vec<Note>,
    /// Pids the bytes being read do not speak for: another writer's.
    foreign: BTreeSet<i32>,
    /// Other processes the kernel named as writing on a connection, the
    /// next to tie its untrusted holds to first.
    writers: BTreeMap<ConnId, Vec<i32>>,
    /// Processes found under a pid whose old end was pending, watched apart
    /// until it is reported: whether each still runs.
    successors: BTreeMap<i32, bool>,
}

impl Effects for Recorder {
    fn reply(&mut self, conn: ConnId, reply: [u8; 2]) {
        self.replies.push((conn, reply));
    }
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        self.closed.push((conn, reason));
    }
    fn chore(&mut self, chore: Chore) {
        self.chores.push(chore);
    }
    fn watch_pid(&mut self, _conn: ConnId, pid: i32) -> bool {
        let trusted = self.trusted.contains(&pid) && !self.foreign.contains(&pid);
        if trusted {
            *self.watched.entry(pid).or_default() += 1;
        }
        trusted
    }
    fn watch_peer(&mut self, conn: ConnId, peer: Option<i32>) -> Option<i32> {
        // The kernel's word for who connected, whoever writes now, else for
        // who wrote on it.
        let trusted = |pid: &i32| self.trusted.contains(pid) && !self.gone.contains(pid);
        let pid = match peer.filter(trusted) {
            Some(pid) => pid,
            None => {
                let writers = self.writers.get_mut(&conn)?;
                writers.retain(trusted);
                (!writers.is_empty()).then(|| writers.remove(0))?
            }
        };
        *self.watched.entry(pid).or_default() += 1;
        Some(pid)
    }
    fn unwatch_pid(&mut self, pid: i32) {
        self.watched.remove(&pid);
    }
    fn pid_is_gone(&mut self, _conn: ConnId, pid: i32) -> bool {
        self.gone.contains(&pid) && !self.foreign.contains(&pid)
    }
    fn speaks_for(&mut self, _conn: ConnId, pid: i32) -> bool {
        !self.foreign.contains(&pid)
    }
    fn pid_has_ended(&mut self, pid: i32) -> bool {
        self.ended.contains(&pid)
    }
    fn watch_successor(&mut self, _conn: ConnId, pid: i32) -> bool {
        let trusted = self.trusted.contains(&pid) && !self.foreign.contains(&pid);
        trusted && *self.successors.entry(pid).or_insert(true)
    }
    fn successor_has_ended(&mut self, pid: i32) -> bool {
        self.successors.get(&pid) == Some(&false)
    }
    fn promote_successor(&mut self, pid: i32, keep: bool) -> bool {
        self.successors.remove(&pid);
        if keep {
            *self.watched.entry(pid).or_default() += 1;
        }
        keep
    }
    fn note(&mut self, note: Note) {
        self.notes.push(note);
    }
}

/// The shared-memory namespace: names and their header refcounts.
#[derive(Default)]
struct Names {
    refcounts: BTreeMap<SegmentName, i32>,
    foreign: BTreeSet<SegmentName>,
    unlinked: Vec<SegmentName>,
    /// Fail this many unlinks before succeeding.
    failing_unlinks: usize,
    /// Names some process maps.
    mapped: BTreeSet<SegmentName>,
    /// Names asked about with `mapped`, in order.
    asked_mapped: Vec<SegmentName>,
    usage: Option<crate::pressure::Usage>,
}

impl Namespace for Names {
    type Error = &'static str;
    fn usage(&mut self) -> Result<Option<crate::pressure::Usage>, Self::Error> {
        Ok(self.usage)
    }
    fn observe(&mut self, name: &SegmentName) -> Result<Observed, Self::Error> {
        if self.foreign.contains(name) {
            return Ok(Observed::Foreign);
        }
        Ok(match self.refcounts.get(name) {
            Some(&refcount) => Observed::Segment { refcount },
            None => Observed::Absent,
        })
    }
    fn mapped(&mut self, name: &SegmentName) -> Result<bool, Self::Error> {
        self.asked_mapped.push(*name);
        Ok(self.mapped.contains(name))
    }
    fn unlink(&mut self, name: &SegmentName) -> Result<Unlinked, Self::Error> {
        if self.foreign.contains(name) {
            return Ok(Unlinked::Foreign);
        }
        if self.failing_unlinks > 0 {
            self.failing_unlinks -= 1;
            return Err("EBUSY");
        }
        Ok(match self.refcounts.remove(name) {
            Some(_) => {
                self.unlinked.push(*name);
                Unlinked::Removed
            }
            None => Unlinked::Absent,
        })
    }
}

/// A manager, its driver and its namespace.
struct Rig {
    m: TestManager,
    fx: Recorder,
    ns: Names,
    now: u64,
}

impl Rig {
    fn new() -> Self {
        Self::with(ManagerConfig::default())
    }

    fn with(config: ManagerConfig) -> Self {
        Self {
            m: TestManager::new(config, at(0)),
            fx: Recorder::default(),
            ns: Names::default(),
            now: 0,
        }
    }

    /// Like PyTorch's manager: `/torch_` names only.
    fn torch() -> Self {
        Self::with(ManagerConfig {
            name_prefix: Some(NamePrefix::torch()),
            ..ManagerConfig::default()
        })
    }

    fn connect(&mut self) -> ConnId {
        self.m.connect(Peer::default(), at(self.now)).unwrap()
    }

    fn connect_as(&mut self, pid: i32) -> ConnId {
        let peer = Peer {
            pid: Some(pid),
            uid: None,
        };
        self.m.connect(peer, at(self.now)).unwrap()
    }

    /// A client that stays connected (and said something), so the manager
    /// does not shut down while a test looks at reaping.
    fn bystander(&mut self) -> ConnId {
        let c = self.connect();
        self.register(c, 1, "/bystander");
        c
    }

    fn send(&mut self, conn: ConnId, bytes: &[u8]) {
        self.m.receive(conn, bytes, at(self.now), &mut self.fx);
        self.chores();
    }

    /// `pid` on `conn` registers `n`; a creator also makes the segment.
    fn register(&mut self, conn: ConnId, pid: i32, n: &str) {
        self.send(conn, &Frame::register(pid, name(n)).encode());
    }

    /// `pid` on `conn` creates `n` (refcount 1) and registers it.
    fn create_and_register(&mut self, conn: ConnId, pid: i32, n: &str) {
        self.create(n, 1);
        self.register(conn, pid, n);
    }

    fn release(&mut self, conn: ConnId, pid: i32, n: &str) {
        self.send(conn, &Frame::release(pid, name(n)).encode());
    }

    /// `pid` on `conn` releases `n`, its last live registration, which
    /// nobody dead holds either.
    fn release_last(&mut self, conn: ConnId, pid: i32, n: &str) {
        self.release(conn, pid, n);
        assert_eq!(self.state(n), Some(NameState::Released { dead: 0 }), "{n}");
    }

    /// The driver reports `conn` closed, now.
    fn disconnect(&mut self, conn: ConnId) {
        self.m.disconnect(conn, at(self.now), &mut self.fx);
    }

    /// The driver reports `pid` dead, now.
    fn exited(&mut self, pid: i32) {
        self.m.pid_exited(pid, at(self.now), &mut self.fx);
    }

    fn create(&mut self, n: &str, refcount: i32) {
        self.ns.refcounts.insert(name(n), refcount);
    }

    fn refcount(&mut self, n: &str, refcount: i32) {
        self.ns.refcounts.insert(name(n), refcount);
    }

    fn exists(&self, n: &str) -> bool {
        self.ns.refcounts.contains_key(&name(n))
    }

    fn chores(&mut self) {
        while !self.fx.chores.is_empty() {
            for chore in std::mem::take(&mut self.fx.chores) {
                let _ = self
                    .m
                    .perform(chore, &mut self.ns, at(self.now), &mut self.fx);
            }
        }
    }

    /// Ticks whenever the manager asks, until `to` ms; returns the status.
    fn run_to(&mut self, to: u64) -> Status {
        loop {
            let wake = self.m.next_wakeup().map_or(u64::MAX, Timestamp::as_millis);
            if wake > to {
                self.now = self.now.max(to);
                return Status::Serving;
            }
            self.now = self.now.max(wake);
            let status = self.m.tick(at(self.now), &mut self.fx);
            self.chores();
            if status == Status::Finished {
                return status;
            }
        }
    }

    fn state(&self, n: &str) -> Option<NameState> {
        self.m.name_state(&name(n))
    }
}

fn name(s: &str) -> SegmentName {
    SegmentName::new(s.as_bytes()).unwrap()
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn reg(n: &str) -> [u8; FRAME_LEN] {
    Frame::register(1, name(n)).encode()
}

fn rel(n: &str) -> [u8; FRAME_LEN] {
    Frame::release(1, name(n)).encode()
}

#[test]
fn answers_every_registration_in_order_and_forgets_released_gone_names() {
    let mut r = Rig::new();
    let c = r.connect();
    let mut bytes = Vec::new();
    for n in ["/a", "/b", "/c"] {
        bytes.extend_from_slice(&reg(n));
        r.create(n, 1);
    }
    r.send(c, &bytes);
    assert_eq!(r.fx.replies, [(c, ACK), (c, ACK), (c, ACK)]);
    assert_eq!(r.state("/a"), Some(NameState::Held { registrations: 1 }));
    // The last user unlinks, then releases.
    r.ns.refcounts.remove(&name("/a"));
    r.send(c, &rel("/a"));
    assert_eq!(r.state("/a"), Some(NameState::Released { dead: 0 }));
    assert!(r.fx.chores.is_empty(), "a release costs no look at once");
    r.run_to(1_500);
    assert_eq!(r.state("/a"), None, "gone, so forgotten");
    assert_eq!(r.m.name_count(), 2);
    assert!(r.ns.unlinked.is_empty());
}

#[test]
fn frames_split_at_every_boundary_reassemble() {
    for split in 1..FRAME_LEN {
        let mut r = Rig::new();
        let c = r.connect();
        let mut bytes = reg("/x").to_vec();
        bytes.extend_from_slice(&reg("/y"));
        r.send(c, &bytes[..split]);
        r.send(c, &bytes[split..]);
        assert_eq!(r.fx.replies.len(), 2, "split at {split}");
        assert!(r.fx.closed.is_empty());
    }
}

#[test]
fn half_frame_stalls_nobody_and_is_closed_after_the_frame_timeout() {
    let mut r = Rig::new();
    let slow = r.connect();
    let fast = r.connect();
    r.send(fast, &reg("/fast0"));
    r.send(slow, &reg("/slow")[..30]);
    r.send(fast, &reg("/fast1"));
    assert_eq!(r.fx.replies, [(fast, ACK), (fast, ACK)]);
    r.run_to(4_900);
    assert!(r.fx.closed.is_empty());
    r.run_to(5_100);
    assert_eq!(r.fx.closed, [(slow, CloseReason::StalledFrame)]);
    assert_eq!(r.m.connection_count(), 1);
}

#[test]
fn a_connection_that_never_says_anything_is_closed_after_the_frame_timeout() {
    let mut r = Rig::new();
    let silent = r.connect();
    let talker = r.connect();
    r.send(talker, &reg("/t"));
    r.run_to(5_100);
    assert_eq!(r.fx.closed, [(silent, CloseReason::StalledFrame)]);
    assert_eq!(r.m.connection_count(), 1);
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let mut r = Rig::new();
    let bad = r.connect();
    let good = r.connect();
    let mut frame = reg("/x");
    frame[4] = 7; // free must be 0 or 1
    r.send(bad, &frame);
    r.send(good, &reg("/y"));
    assert_eq!(r.fx.closed.len(), 1);
    assert_eq!(r.fx.closed[0].0, bad);
    assert_eq!(r.fx.replies, [(good, ACK)]);
}

#[test]
fn stray_and_double_releases_are_ignored_and_the_connection_lives() {
    let mut r = Rig::new();
    let c = r.connect();
    r.create_and_register(c, 1, "/held");
    r.release(c, 1, "/never-registered");
    r.register(c, 1, "/twice");
    r.release(c, 1, "/twice");
    r.release(c, 1, "/twice");
    assert!(r.fx.closed.is_empty(), "{:?}", r.fx.closed);
    assert_eq!(r.m.stats().stray_releases, 2);
    r.register(c, 1, "/after");
    assert_eq!(r.fx.replies.last(), Some(&(c, ACK)));
    r.run_to(10_000);
    assert!(r.exists("/held"));
    assert_eq!(r.state("/held"), Some(NameState::Held { registrations: 1 }));
}

#[test]
fn a_release_from_another_pid_on_the_connection_is_charged_to_it() {
    let mut r = Rig::new();
    r.fx.trusted.extend([10, 11]);
    let c = r.connect();
    r.create_and_register(c, 10, "/parent");
    // A forked child drops its inherited copy on the parent's connection.
    r.release(c, 11, "/parent");
    assert_eq!(r.m.stats().stray_releases, 0);
    assert_eq!(r.state("/parent"), Some(NameState::Released { dead: 0 }));
}

#[test]
fn a_connection_with_many_processes_finds_who_holds_a_released_name() {
    let mut r = Rig::new();
    let pids: Vec<i32> = (100..106).collect();
    r.fx.trusted.extend(pids.iter().copied());
    r.fx.trusted.insert(99);
    let other = r.connect();
    r.create_and_register(other, 99, "/elsewhere");
    let c = r.connect();
    for &pid in &pids {
        r.create_and_register(c, pid, &std::format!("/held_{pid}"));
    }
    // The oldest and the newest of its holders, released by a pid holding
    // neither: each is charged to its holder.
    r.release(c, 103, "/held_100");
    r.release(c, 103, "/held_105");
    for n in ["/held_100", "/held_105"] {
        assert_eq!(r.state(n), Some(NameState::Released { dead: 0 }), "{n}");
    }
    // A name only another connection holds is a stray here.
    r.release(c, 103, "/elsewhere");
    assert_eq!(r.m.stats().stray_releases, 1);
    assert_eq!(
        r.state("/elsewhere"),
        Some(NameState::Held { registrations: 1 })
    );
    // Holders leaving from the middle keep the list whole.
    r.exited(102);
    r.run_to(10_000);
    r.release_last(c, 103, "/held_101");
    r.release_last(c, 101, "/held_104");
}

#[test]
fn a_registration_from_before_a_close_for_cause_moves_to_the_new_connection() {
    let mut r = Rig::new();
    r.fx.trusted.insert(10);
    let old = r.connect_as(10);
    r.create_and_register(old, 10, "/moved");
    r.create_and_register(old, 10, "/released");
    let mut malformed = reg("/x");
    malformed[4] = 2;
    r.send(old, &malformed);
    assert!(matches!(r.fx.closed[..], [(c, CloseReason::Malformed(_))] if c == old));
    // Its holds live on with the process, which reconnects and registers
    // again what it holds: once, not twice.
    let new = r.connect_as(10);
    r.register(new, 10, "/moved");
    assert_eq!(
        r.state("/moved"),
        Some(NameState::Held { registrations: 1 })
    );
    // A release on the new connection of what it registered only before
    // the close is charged to the old holds.
    r.release(new, 10, "/released");
    assert_eq!(r.m.stats().stray_releases, 0);
    assert_eq!(r.state("/released"), Some(NameState::Released { dead: 0 }));
    // Handed on (a pickle) and released, then the process exits cleanly:
    // no dead registration is left to make the pickled name an orphan.
    r.release(new, 10, "/moved");
    r.exited(10);
    r.run_to(10_000);
    assert_eq!(r.state("/moved"), Some(NameState::Released { dead: 0 }));
}

#[test]
fn a_sender_that_exited_before_its_frames_were_read_holds_them_until_its_end_is_reported() {
    let mut r = Rig::new();
    r.fx.trusted.insert(10);
    let c = r.connect_as(10);
    r.create("/late", 1);
    r.create("/pickled", 2);
    // Journaled before the crash, read after it: the driver reports the
    // exit once it has read the rest.
    r.fx.gone.insert(20);
    r.register(c, 20, "/late");
    r.register(c, 20, "/pickled");
    assert_eq!(r.m.connections_of(20).collect::<Vec<_>>(), [c]);
    // Its release among those frames still counts: a pickle it handed on
    // and let go of is not left with its registration turned dead.
    r.release_last(c, 20, "/pickled");
    r.exited(20);
    r.run_to(10_000);
    assert!(!r.exists("/late"), "{:?}", r.state("/late"));
    assert_eq!(r.state("/pickled"), Some(NameState::Released { dead: 0 }));
}

/// A gone sender's holder takes its pid's late frames until its end is
/// reported. A process given that pid meanwhile (a fork on the same
/// connection) is another process: its registration must not join the
/// gone one's holder, or the report ends it and its name in transit
/// (refcount 1, its own) is reaped while it lives. It is the connection's
/// until then; the gone sender's late release still reaches its own holder.
#[test]
fn a_process_given_a_gone_senders_pid_keeps_what_it_registers_before_the_end_is_reported() {
    let mut r = Rig::new();
    r.fx.trusted.insert(10);
    let _bystander = r.bystander();
    let c = r.connect_as(10);
    r.create("/late", 1);
    r.create("/pickled", 2);
    r.fx.gone.insert(20);
    r.register(c, 20, "/late");
    r.register(c, 20, "/pickled");
    // Pid 20 is given to a new process, which registers a name it hands on.
    r.fx.gone.remove(&20);
    r.fx.trusted.insert(20);
    r.create("/transit", 1);
    r.register(c, 20, "/transit");
    assert!(
        !r.fx.watched.contains_key(&20),
        "watched while the old process's end is pending"
    );
    assert!(
        r.fx.successors.contains_key(&20),
        "the new process not watched apart"
    );
    r.release_last(c, 20, "/pickled");
    r.exited(20);
    r.run_to(r.now + 100_000);
    assert!(!r.exists("/late"), "{:?}", r.state("/late"));
    assert_eq!(r.state("/pickled"), Some(NameState::Released { dead: 0 }));
    assert_eq!(
        r.state("/transit"),
        Some(NameState::Held { registrations: 1 }),
        "the new process's registration ended with the gone one's"
    );
    // Once the old end is reported, the new process is watched as any
    // other: what it registers now is reaped when it ends.
    r.create("/after", 1);
    r.register(c, 20, "/after");
    assert!(
        r.fx.watched.contains_key(&20),
        "the new process not watched"
    );
    r.fx.gone.insert(20);
    r.exited(20);
    r.run_to(r.now + 100_000);
    assert!(!r.exists("/after"), "leaked: {:?}", r.state("/after"));
    // What it registered while the old end was pending ends with it too.
    assert!(!r.exists("/transit"), "leaked: {:?}", r.state("/transit"));
}

/// The same for a watched process that exits, and a connection then
/// closed for cause, the process that opened it gone: the new process's
/// name in transit is kept while it lives, and reaped once it ends.
#[test]
fn a_process_given_an_exiting_pid_keeps_its_names_when_its_connection_is_closed_for_cause() {
    let mut r = Rig::new();
    r.fx.trusted.extend([10, 20]);
    let _bystander = r.bystander();
    let c = r.connect_as(10);
    r.create("/old", 1);
    r.register(c, 20, "/old");
    assert!(r.fx.watched.contains_key(&20));
    r.m.pid_exiting(20, at(r.now));
    r.create("/transit", 1);
    r.register(c, 20, "/transit");
    r.fx.gone.insert(10);
    let mut malformed = reg("/x");
    malformed[4] = 2;
    r.send(c, &malformed);
    assert!(!r.fx.closed.is_empty(), "not closed for cause");
    r.exited(20);
    r.run_to(r.now + 100_000);
    assert!(!r.exists("/old"), "{:?}", r.state("/old"));
    assert_eq!(
        r.state("/transit"),
        Some(NameState::Held { registrations: 1 }),
        "the new process's name ended with the old process or the connection"
    );
    r.fx.gone.insert(20);
    r.m.pid_exiting(20, at(r.now));
    r.exited(20);
    r.run_to(r.now + 100_000);
    assert!(!r.exists("/transit"), "leaked: {:?}", r.state("/transit"));
}

/// A watched process ends and its connection reaches its end in the same
/// round, read first: its pid's entry outlives its last holder until the
/// end is reported, so a new process given the pid and registering on
/// another connection meanwhile is not watched afresh and then ended by
/// that report (hostile24's finding 1).
#[test]
fn a_new_process_under_a_pid_whose_last_holder_ended_before_its_report_keeps_its_names() {
    let mut r = Rig::new();
    r.fx.trusted.insert(20);
    let a = r.connect_as(10);
    let b = r.connect_as(11);
    r.create("/old", 1);
    r.register(a, 20, "/old");
    r.m.pid_exiting(20, at(r.now));
    r.disconnect(a);
    r.create("/new", 1);
    r.register(b, 20, "/new");
    r.exited(20);
    r.run_to(r.now + 100_000);
    assert_eq!(
        r.state("/new"),
        Some(NameState::Held { registrations: 1 }),
        "the new process's name ended with the old process's report"
    );
    r.fx.gone.insert(20);
    r.m.pid_exiting(20, at(r.now));
    r.exited(20);
    r.run_to(r.now + 100_000);
    assert!(!r.exists("/new"), "leaked: {:?}", r.state("/new"));
}

/// A successor that ends inside the window, and a third process given the
/// pid then: the successor's names end with the pending report, the third
/// one's are its own, kept through a close for cause while it lives
/// (hostile24's finding 2).
#[test]
fn a_third_process_under_a_pid_in_the_window_keeps_its_names_and_the_second_ones_end() {
    let mut r = Rig::new();
    r.fx.trusted.extend([10, 20]);
    let _bystander = r.bystander();
    let c = r.connect_as(10);
    r.create("/old", 1);
    r.register(c, 20, "/old");
    r.m.pid_exiting(20, at(r.now));
    r.create("/second", 1);
    r.register(c, 20, "/second");
    r.fx.successors.insert(20, false);
    r.create("/third", 1);
    r.register(c, 20, "/third");
    r.fx.gone.insert(10);
    let mut malformed = reg("/x");
    malformed[4] = 2;
    r.send(c, &malformed);
    r.exited(20);
    r.run_to(r.now + 100_000);
    assert!(!r.exists("/second"), "leaked: {:?}", r.state("/second"));
    assert_eq!(
        r.state("/third"),
        Some(NameState::Held { registrations: 1 }),
        "the third process's name was not its own"
    );
    r.fx.gone.insert(20);
    r.m.pid_exiting(20, at(r.now));
    r.exited(20);
    r.run_to(r.now + 100_000);
    assert!(!r.exists("/third"), "leaked: {:?}", r.state("/third"));
}

/// A frame whose pid names no live process (its sender lives on the
/// connection) ends its holder at once; the name is looked at before its
/// sender creates it. One absence is not believed: the segment created right
/// after is reaped, not forgotten and leaked.
#[test]
fn a_name_absent_once_after_its_holder_ended_is_looked_at_again_before_it_is_forgotten() {
    let mut r = Rig::new();
    let _bystander = r.bystander();
    let c = r.connect_as(10);
    r.fx.gone.insert(i32::MAX);
    r.register(c, i32::MAX, "/late_create");
    r.exited(i32::MAX);
    r.run_to(r.now + 10);
    assert!(
        r.state("/late_create").is_some(),
        "forgotten on one look, before its creator made it"
    );
    r.create("/late_create", 1);
    r.run_to(r.now + 10_000);
    assert!(!r.exists("/late_create"), "{:?}", r.state("/late_create"));
    // Absent on both looks: forgotten, never unlinked.
    r.register(c, i32::MAX, "/never_made");
    r.exited(i32::MAX);
    r.run_to(r.now + 10_000);
    assert_eq!(r.state("/never_made"), None);
    assert!(!r.ns.unlinked.contains(&name("/never_made")));
}

#[test]
fn names_outside_the_prefix_are_refused_or_skipped_and_peers_of_other_users_rejected() {
    let mut r = Rig::with(ManagerConfig {
        name_prefix: Some(NamePrefix::torch()),
        owner_uid: Some(1000),
        ..ManagerConfig::default()
    });
    let stranger = Peer {
        pid: Some(5),
        uid: Some(0),
    };
    assert_eq!(
        r.m.connect(stranger, at(0)),
        Err(ConnectError::ForeignUid { uid: Some(0) })
    );
    let me = Peer {
        pid: Some(6),
        uid: Some(1000),
    };
    let c = r.m.connect(me, at(0)).unwrap();
    r.send(c, &reg("/sem.lock"));
    r.send(c, &reg("/torch_1_2_3"));
    assert_eq!(r.fx.replies, [(c, REFUSAL), (c, ACK)]);
    assert!(r.fx.closed.is_empty());
    // Journaled, nobody waits for an answer: skipped, and the connection
    // stays, so the frames behind it still count.
    // It is noted once per connection, however many come.
    for _ in 0..3 {
        r.m.receive_journaled(c, &reg("/other"), at(0), &mut r.fx);
    }
    r.m.receive_journaled(c, &reg("/torch_1_2_4"), at(0), &mut r.fx);
    assert!(r.fx.closed.is_empty());
    let noted = r.fx.notes.iter().filter(|note| matches!(
        note,
        Note::ForeignSkipped { conn, name: skipped, .. } if *conn == c && *skipped == name("/other")
    ));
    assert_eq!(noted.count(), 1);
    assert_eq!(r.state("/sem.lock"), None);
    assert_eq!(r.state("/other"), None);
    assert!(r.state("/torch_1_2_4").is_some());
}

#[test]
fn holds_belong_to_connection_and_pid_so_a_forked_childs_death_reaps_only_its_names() {
    let mut r = Rig::new();
    r.fx.trusted.extend([100, 200]);
    let c = r.connect_as(100);
    r.create_and_register(c, 100, "/parent");
    r.create_and_register(c, 200, "/child");
    assert_eq!(r.fx.watched.keys().copied().collect::<Vec<_>>(), [100, 200]);

    r.now = 1_000;
    r.exited(200);
    r.chores();
    r.run_to(2_900);
    assert!(r.exists("/child"), "not before the grace period");
    r.run_to(3_200);
    assert!(!r.exists("/child"), "reaped while the parent lives");
    assert!(r.exists("/parent"));
    assert_eq!(r.m.stats().reaped, 1);
    assert_eq!(
        r.state("/parent"),
        Some(NameState::Held { registrations: 1 })
    );
    assert!(
        !r.fx.watched.contains_key(&200),
        "the dead pid is no longer watched"
    );
    assert!(r.fx.closed.is_empty());
}

#[test]
fn an_untrusted_pid_is_held_for_as_long_as_its_connection() {
    let mut r = Rig::new();
    r.bystander();
    let c = r.connect();
    r.create_and_register(c, 4242, "/x");
    r.exited(4242);
    r.run_to(10_000);
    assert!(r.exists("/x"));
    r.disconnect(c);
    let reap_after = r.now + 2_000;
    r.run_to(reap_after - 100);
    assert!(r.exists("/x"));
    r.run_to(reap_after + 200);
    assert!(!r.exists("/x"));
}

#[test]
fn a_connection_closed_for_cause_keeps_its_processes_names_while_they_live() {
    let mut r = Rig::new();
    r.fx.trusted.extend([7, 8]);
    let c = r.connect_as(8);
    r.create_and_register(c, 7, "/trusted");
    r.create_and_register(c, 999, "/untrusted");
    let mut garbage = reg("/x");
    garbage[4] = 9;
    r.send(c, &garbage);
    assert_eq!(r.fx.closed.len(), 1);
    r.run_to(30_000);
    assert!(r.exists("/trusted") && r.exists("/untrusted"));
    assert_eq!(r.m.holder_count(), 2);

    r.exited(7);
    let reaped_by = r.now + 2_300;
    r.run_to(reaped_by);
    assert!(!r.exists("/trusted"));
    assert!(
        r.exists("/untrusted"),
        "tied to the connecting process, pid 8"
    );
    r.exited(8);
    let reaped_by = r.now + 2_300;
    r.run_to(reaped_by);
    assert!(!r.exists("/untrusted"));
}

#[test]
fn a_name_in_transit_is_kept_while_its_refcount_exceeds_dead_registrations() {
    let mut r = Rig::new();
    r.fx.trusted.insert(30);
    let c = r.connect();
    r.create_and_register(c, 30, "/t");
    r.refcount("/t", 2); // pickled: _shared_incref
    r.exited(30);
    r.run_to(600_000);
    assert!(r.exists("/t"), "in transit for ten minutes, still there");
    assert_eq!(r.state("/t"), Some(NameState::Released { dead: 1 }));
    assert!(
        r.fx.notes
            .iter()
            .any(|n| matches!(n, Note::InTransit { .. })),
        "{:?}",
        r.fx.notes
    );
    // The receiver registers, opens (3), lowers the pickle's reference (2),
    // uses it and lets go (1): only the dead creator's reference is left.
    r.fx.trusted.insert(31);
    r.register(c, 31, "/t");
    r.release(c, 31, "/t");
    r.refcount("/t", 1);
    let deadline = r.now + 2_300;
    r.run_to(deadline);
    assert!(!r.exists("/t"));
    assert_eq!(r.m.stats().reaped, 1);
}

#[test]
fn a_tensor_in_transit_after_a_co_holder_died_is_kept_until_its_receiver_lets_go() {
    let mut r = Rig::new();
    r.fx.trusted.extend([1, 2, 3]);
    let c = r.connect();
    r.create_and_register(c, 1, "/x"); // A creates
    r.register(c, 2, "/x"); // B opens
    r.refcount("/x", 2);
    r.exited(2); // B SIGKILLed
    r.refcount("/x", 3); // A pickles it into a queue
    r.refcount("/x", 2); // A drops its own reference...
    r.release(c, 1, "/x"); // ...and tells the manager
    r.run_to(60_000);
    assert!(r.exists("/x"), "waiting in the queue");
    r.register(c, 3, "/x"); // C unpickles
    r.refcount("/x", 3);
    r.refcount("/x", 2);
    r.run_to(120_000);
    assert!(r.exists("/x"), "C holds it");
    r.refcount("/x", 1);
    r.release(c, 3, "/x");
    let deadline = r.now + 2_300;
    r.run_to(deadline);
    assert!(!r.exists("/x"), "only the dead B's reference was left");
}

#[test]
fn an_orphan_is_unlinked_only_if_it_still_is_one_when_its_grace_ends() {
    let mut r = Rig::new();
    r.fx.trusted.insert(5);
    let c = r.connect();
    r.create_and_register(c, 5, "/o");
    r.exited(5);
    r.run_to(1_000);
    assert!(matches!(r.state("/o"), Some(NameState::Orphaned { .. })));
    r.refcount("/o", 2); // someone pickled it after all
    r.run_to(5_000);
    assert!(r.exists("/o"));
    assert_eq!(r.state("/o"), Some(NameState::Released { dead: 1 }));
}

#[test]
fn registering_an_orphan_again_cancels_its_reaping() {
    let mut r = Rig::new();
    let a = r.connect();
    let b = r.connect();
    r.create_and_register(a, 1, "/o");
    r.disconnect(a);
    r.run_to(1_000);
    r.register(b, 2, "/o");
    r.refcount("/o", 2);
    r.run_to(10_000);
    assert!(r.exists("/o"));
    assert_eq!(r.state("/o"), Some(NameState::Held { registrations: 1 }));
}

#[test]
fn failed_unlinks_keep_the_name_and_are_retried_and_only_real_ones_count() {
    let mut r = Rig::new();
    r.bystander();
    let c = r.connect();
    r.create_and_register(c, 1, "/f");
    r.ns.failing_unlinks = 3;
    r.disconnect(c);
    r.run_to(2_300);
    assert!(r.exists("/f"));
    assert_eq!(r.m.stats().reaped, 0);
    assert!(r.m.stats().unlink_failures >= 1);
    assert!(r.state("/f").is_some(), "the record is kept");
    r.run_to(10_000);
    assert!(!r.exists("/f"));
    assert_eq!(r.m.stats().reaped, 1);
    assert_eq!(r.m.stats().unlink_failures, 3);
}

#[test]
fn what_is_not_ours_is_forgotten_and_never_unlinked() {
    let mut r = Rig::new();
    let c = r.connect();
    r.create_and_register(c, 1, "/fifo");
    r.ns.foreign.insert(name("/fifo"));
    r.disconnect(c);
    r.run_to(5_000);
    assert!(r.exists("/fifo"));
    assert_eq!(r.state("/fifo"), None);
    assert!(r.fx.notes.contains(&Note::Untouchable {
        name: name("/fifo")
    }));
}

#[test]
fn shuts_down_after_idle_timeout_unlinking_everything_known() {
    let mut r = Rig::new();
    let c = r.connect();
    for n in ["/a", "/b"] {
        r.create_and_register(c, 1, n);
    }
    r.release(c, 1, "/b");
    r.refcount("/b", 0);
    r.m.disconnect(c, at(100), &mut r.fx);
    assert_eq!(r.run_to(10_000), Status::Finished);
    assert!(r.ns.refcounts.is_empty());
    assert_eq!(r.m.name_count(), 0);
}

#[test]
fn shutdown_lingers_for_names_in_transit_and_a_receiver_can_still_come() {
    let mut r = Rig::new();
    let c = r.connect();
    r.create_and_register(c, 1, "/q");
    r.refcount("/q", 2); // pickled, then the sender died
    r.disconnect(c);
    assert_eq!(r.run_to(30_000), Status::Serving, "lingers");
    assert!(r.exists("/q"));
    assert!(r.m.is_closing());
    let receiver = r.connect();
    assert!(!r.m.is_closing());
    r.register(receiver, 2, "/q");
    r.refcount("/q", 3);
    r.refcount("/q", 2);
    r.refcount("/q", 1);
    r.release(receiver, 2, "/q");
    r.disconnect(receiver);
    let until = r.now + 10_000;
    assert_eq!(r.run_to(until), Status::Finished);
    assert!(!r.exists("/q"));
}

#[test]
fn the_linger_is_bounded() {
    let mut r = Rig::with(ManagerConfig {
        linger: Duration::from_secs(10),
        ..ManagerConfig::default()
    });
    let c = r.connect();
    r.create_and_register(c, 1, "/q");
    r.refcount("/q", 5);
    r.disconnect(c);
    assert_eq!(r.run_to(11_000), Status::Serving);
    assert!(r.exists("/q"));
    assert_eq!(r.run_to(14_000), Status::Finished);
    assert!(!r.exists("/q"));
}

#[test]
fn a_new_connection_restarts_the_shutdown_clock() {
    let mut r = Rig::new();
    r.run_to(1_500);
    let c = r.connect();
    r.m.disconnect(c, at(1_500), &mut r.fx);
    assert_eq!(r.run_to(3_400), Status::Serving);
    assert_eq!(r.run_to(3_600), Status::Finished);
}

#[test]
fn without_reaping_orphans_wait_for_shutdown_like_pytorch() {
    let mut r = Rig::with(ManagerConfig {
        reap_grace: None,
        linger: Duration::ZERO,
        ..ManagerConfig::default()
    });
    let a = r.connect();
    let b = r.bystander();
    r.create_and_register(a, 1, "/o");
    r.disconnect(a);
    r.run_to(60_000);
    assert!(r.exists("/o"));
    assert_eq!(r.state("/o"), Some(NameState::Orphaned { reap_at: None }));
    r.disconnect(b);
    let until = r.now + 3_000;
    assert_eq!(r.run_to(until), Status::Finished);
    assert!(!r.exists("/o"));
}

#[test]
fn a_full_table_refuses_registrations_instead_of_panicking() {
    let mut m: Manager<Fixed<2, 2>> = Manager::new(ManagerConfig::default(), at(0));
    let mut fx = Recorder::default();
    let c = m.connect(Peer::default(), at(0)).unwrap();
    for n in ["/a", "/b", "/c"] {
        m.receive(c, &reg(n), at(0), &mut fx);
    }
    assert_eq!(fx.replies, [(c, ACK), (c, ACK), (c, REFUSAL)]);
    let capped = ManagerConfig {
        max_names: 1,
        ..ManagerConfig::default()
    };
    let mut m: Manager<Fixed<4, 2>> = Manager::new(capped, at(0));
    let mut fx = Recorder::default();
    let c = m.connect(Peer::default(), at(0)).unwrap();
    for n in ["/a", "/a", "/b"] {
        m.receive(c, &reg(n), at(0), &mut fx);
    }
    assert_eq!(fx.replies, [(c, ACK), (c, ACK), (c, REFUSAL)]);
}

#[test]
fn repeated_registrations_are_counted_and_end_as_dead_registrations() {
    let mut r = Rig::new();
    r.bystander();
    let c = r.connect();
    r.create("/r", 3);
    for _ in 0..3 {
        r.register(c, 1, "/r");
    }
    r.release(c, 1, "/r");
    assert_eq!(r.state("/r"), Some(NameState::Held { registrations: 2 }));
    r.refcount("/r", 2);
    r.disconnect(c);
    r.run_to(1_000);
    assert!(matches!(r.state("/r"), Some(NameState::Orphaned { .. })));
    r.run_to(2_300);
    assert!(!r.exists("/r"));
    assert_eq!(r.m.stats().reaped, 1);
}

#[test]
fn bytes_for_unknown_or_closed_connections_are_ignored() {
    let mut r = Rig::new();
    r.send(ConnId(99), &reg("/x"));
    r.disconnect(ConnId(99));
    r.exited(12345);
    assert!(r.fx.replies.is_empty() && r.fx.closed.is_empty());
}

#[cfg(feature = "alloc")]
#[test]
fn a_big_disconnect_is_worked_off_in_batches() {
    let mut m: Manager<crate::storage::Growable> = Manager::new(
        ManagerConfig {
            batch: 10,
            ..ManagerConfig::default()
        },
        at(0),
    );
    let mut fx = Recorder::default();
    let c = m.connect(Peer::default(), at(0)).unwrap();
    for i in 0..100 {
        let n = std::format!("/n{i}");
        m.receive(c, &Frame::register(1, name(&n)).encode(), at(0), &mut fx);
    }
    m.disconnect(c, at(0), &mut fx);
    let mut ticks = 0;
    while fx.chores.len() < 100 {
        let before = fx.chores.len();
        assert_eq!(
            m.next_wakeup(),
            Some(at(0)),
            "more work is asked for at once"
        );
        m.tick(at(0), &mut fx);
        assert!(fx.chores.len() - before <= 10);
        ticks += 1;
        assert!(ticks < 100);
    }
    assert!(ticks >= 10);
}

#[test]
fn journal_frames_are_silent_and_reserved_names_are_kept_out_of_the_table() {
    use crate::journal::{Accepted, Journal, journal_len};
    use core::sync::atomic::AtomicU32;
    struct JournalFx(Recorder, bool, Vec<AtomicU32>);
    impl Effects for JournalFx {
        fn reply(&mut self, conn: ConnId, reply: [u8; 2]) {
            self.0.reply(conn, reply);
        }
        fn close(&mut self, conn: ConnId, reason: CloseReason) {
            self.0.close(conn, reason);
        }
        fn chore(&mut self, chore: Chore) {
            self.0.chore(chore);
        }
        fn attach_journal(&mut self, _conn: ConnId) -> Option<Journal<'_>> {
            Journal::from_words(&self.2).ok()
        }
        fn drain_journal(&mut self, _conn: ConnId) {
            self.1 = true;
        }
    }
    let mut m = TestManager::new(ManagerConfig::default(), at(0));
    let words = (0..journal_len(4) / 4).map(|_| AtomicU32::new(0)).collect();
    let mut fx = JournalFx(Recorder::default(), false, words);
    let c = m.connect(Peer::default(), at(0)).unwrap();
    m.receive(c, &reg(crate::journal::SETUP_NAME), at(0), &mut fx);
    assert_eq!(fx.0.replies, [(c, crate::ack::JOURNAL_READY)]);
    assert_eq!(
        Journal::from_words(&fx.2).unwrap().advertised(),
        Ok(Accepted::Every),
        "before it answers, the manager says which names it takes"
    );
    m.receive_journaled(c, &reg("/j"), at(0), &mut fx);
    assert_eq!(
        fx.0.replies.len(),
        1,
        "journaled registrations are not answered"
    );
    assert_eq!(
        m.name_state(&name("/j")),
        Some(NameState::Held { registrations: 1 })
    );
    m.receive(c, &reg(crate::journal::DOORBELL_NAME), at(0), &mut fx);
    assert!(fx.1, "the doorbell asks the driver to read the journal");
    assert_eq!(fx.0.replies[1], (c, ACK));
    assert_eq!(m.name_count(), 1, "reserved names never enter the table");

    m.receive_journaled(c, &reg(crate::journal::DOORBELL_NAME), at(0), &mut fx);
    assert_eq!(fx.0.closed, [(c, CloseReason::JournalMisuse)]);
    m.tick(at(0), &mut fx);
    assert_eq!(
        m.name_state(&name("/j")),
        Some(NameState::Released { dead: 1 }),
        "an untrusted pid's holds end with its connection"
    );
}

#[test]
fn read_journal_is_bounded_and_a_corrupt_journal_closes_its_connection() {
    use crate::journal::{Journal, JournalError, journal_len};
    use core::sync::atomic::{AtomicU32, Ordering};
    let memory: Vec<AtomicU32> = (0..journal_len(4) / 4).map(|_| AtomicU32::new(0)).collect();
    let journal = Journal::from_words(&memory).unwrap();
    journal.initialize();
    for n in ["/a", "/b", "/c"] {
        let frame = Frame::parse(&reg(n)).unwrap();
        journal.append(&frame.to_raw()).unwrap();
    }
    let mut m = TestManager::new(ManagerConfig::default(), at(0));
    let mut fx = Recorder::default();
    let c = m.connect(Peer::default(), at(0)).unwrap();
    assert_eq!(
        m.read_journal(c, journal, 2, at(0), &mut fx),
        Ok(2),
        "the budget ran out: one left"
    );
    assert_eq!(m.name_count(), 2);
    assert_eq!(m.read_journal(c, journal, 2, at(0), &mut fx), Ok(1));
    assert_eq!(m.name_count(), 3);
    assert!(fx.replies.is_empty(), "nobody waits for journaled frames");

    memory[2].store(1_000, Ordering::Relaxed); // the committed counter
    assert_eq!(
        m.read_journal(c, journal, 2, at(0), &mut fx),
        Err(JournalError::Overrun { unread: 997 })
    );
    assert_eq!(fx.closed, [(c, CloseReason::JournalMisuse)]);
}

#[test]
fn a_journal_offer_to_a_driver_without_journals_is_refused() {
    let mut r = Rig::new();
    let c = r.connect();
    r.send(c, &reg(crate::journal::SETUP_NAME));
    assert_eq!(r.fx.replies, [(c, REFUSAL)]);
}

#[test]
fn a_journaled_registration_that_does_not_fit_closes_the_connection() {
    let mut m: Manager<Fixed<2, 2>> = Manager::new(ManagerConfig::default(), at(0));
    let mut fx = Recorder::default();
    let c = m.connect(Peer::default(), at(0)).unwrap();
    for n in ["/a", "/b", "/c"] {
        m.receive_journaled(c, &reg(n), at(0), &mut fx);
    }
    assert_eq!(fx.closed, [(c, CloseReason::RegistryFull)]);
    assert!(fx.replies.is_empty());
}

#[test]
fn adopted_orphans_are_reaped_unless_someone_registers_them_or_they_are_in_transit() {
    let mut r = Rig::new();
    // Left by a creator that died unseen: only its own reference.
    for n in ["/lost", "/found"] {
        r.create(n, 1);
        assert!(r.m.adopt_orphan(name(n), at(0)));
    }
    // Another family's tensor in a queue: its creator's reference and the
    // pickle's. Not this manager's to judge an orphan.
    r.create("/queued", 2);
    assert!(r.m.adopt_orphan(name("/queued"), at(0)));
    r.now = 100;
    let c = r.connect();
    r.register(c, 1, "/found");
    assert!(
        !r.m.adopt_orphan(name("/found"), at(200)),
        "held names are left alone"
    );
    r.run_to(1_000);
    assert!(
        !r.m.adopt_orphan(name("/lost"), at(1_000)),
        "a second sweep does not restart the grace period"
    );
    // Only the sweep's guess makes it an orphan (its creator may have let
    // go cleanly of a tensor waiting in a queue): reaped after the linger,
    // not the grace period.
    r.run_to(2_300);
    assert!(r.exists("/lost"), "a receiver has as long as a linger");
    r.run_to(62_000);
    assert_eq!(r.ns.unlinked, [name("/lost")]);
    assert_eq!(
        r.state("/found"),
        Some(NameState::Held { registrations: 1 })
    );
    r.run_to(120_000);
    assert!(r.exists("/queued"), "in transit: kept");
}

#[test]
fn a_held_name_removed_from_outside_is_reported_once_and_a_late_creator_is_not() {
    let mut r = Rig::new();
    let c = r.connect();
    r.create_and_register(c, 1, "/victim");
    // Registered before it is created, as creators do: not a vanishing.
    r.register(c, 1, "/late");
    r.run_to(1_500);
    r.create("/late", 1);
    r.ns.refcounts.remove(&name("/victim")); // rm /dev/shm/victim
    r.run_to(10_000);
    let vanished: Vec<&Note> =
        r.fx.notes
            .iter()
            .filter(|n| matches!(n, Note::Vanished { .. }))
            .collect();
    assert_eq!(
        vanished,
        [&Note::Vanished {
            name: name("/victim"),
            registrations: 1
        }]
    );
    assert_eq!(
        r.state("/victim"),
        Some(NameState::Held { registrations: 1 }),
        "still held: its holders have not let go"
    );
    r.release(c, 1, "/victim");
    r.run_to(12_000);
    assert_eq!(r.state("/victim"), None, "forgotten once released");
}

#[test]
fn a_filling_namespace_is_reported_when_it_crosses_a_threshold() {
    use crate::pressure::{Level, Usage};
    let mut r = Rig::new();
    let c = r.connect();
    r.register(c, 1, "/x");
    r.ns.usage = Some(Usage {
        used: 10,
        total: 100,
    });
    r.run_to(3_000);
    r.ns.usage = Some(Usage {
        used: 90,
        total: 100,
    });
    r.run_to(10_000);
    let levels: Vec<Level> =
        r.fx.notes
            .iter()
            .filter_map(|n| match n {
                Note::Pressure(p) => Some(p.level),
                _ => None,
            })
            .collect();
    assert_eq!(levels, [Level::High]);
}

/// With reaping off and on: the only client registers "/o" and leaves at 0,
/// `fail` makes the shutdown pass fail on it, then a client comes back before
/// the retry; "/o" must stay.
fn a_failure_at_shutdown_is_judged_afresh(config: ManagerConfig, fail: impl Fn(&mut Rig)) {
    for grace in [None, Some(Duration::from_secs(30))] {
        let mut r = Rig::with(ManagerConfig {
            reap_grace: grace,
            ..config
        });
        let c = r.connect();
        r.create_and_register(c, 1, "/o");
        r.disconnect(c);
        fail(&mut r);
        r.bystander(); // a client comes back before the retry
        r.run_to(20_000);
        assert!(
            r.exists("/o"),
            "grace {grace:?}: reaped as an orphan with reaping off or within its grace"
        );
    }
}

#[test]
fn a_failed_shutdown_unlink_is_judged_afresh_once_a_client_returns() {
    a_failure_at_shutdown_is_judged_afresh(ManagerConfig::default(), |r| {
        r.ns.failing_unlinks = 1;
        r.run_to(2_000); // shutdown: the orphan's unlink fails (EMFILE, say)
        assert!(r.exists("/o") && r.m.is_closing());
    });
}

#[test]
fn a_failed_look_at_shutdown_is_judged_afresh_once_a_client_returns() {
    let config = ManagerConfig {
        measure_every: None,
        ..ManagerConfig::default()
    };
    a_failure_at_shutdown_is_judged_afresh(config, |r| {
        r.run_to(1_000);
        assert!(matches!(r.state("/o"), Some(NameState::Orphaned { .. })));
        // At shutdown the pass looks at it, and the look fails.
        r.now = 2_000;
        r.m.tick(at(2_000), &mut r.fx);
        assert_eq!(
            std::mem::take(&mut r.fx.chores),
            [Chore::Observe(name("/o"))]
        );
        r.m.observed(&name("/o"), None, at(2_000), &mut r.fx);
    });
}

#[test]
fn a_name_that_lingered_is_looked_at_again_once_a_client_returns() {
    let mut r = Rig::new();
    let c = r.connect();
    r.create_and_register(c, 1, "/q");
    r.refcount("/q", 2); // pickled, then its sender died
    r.disconnect(c);
    assert_eq!(r.run_to(5_000), Status::Serving, "lingers");
    assert!(r.m.is_closing());
    r.bystander(); // a client returns: the manager serves again
    r.refcount("/q", 1); // the pickled handle is dropped unread
    r.run_to(120_000);
    assert!(!r.exists("/q"), "an orphan now: reaped after its grace");
}

#[cfg(feature = "alloc")]
#[test]
fn a_shutdown_pass_cut_short_by_a_forgotten_name_still_finishes() {
    let config = ManagerConfig {
        batch: 1,
        linger: Duration::from_secs(10),
        silence_timeout: None,
        measure_every: None,
        patrol_every: None,
        ..ManagerConfig::default()
    };
    let mut m: Manager<crate::storage::Growable> = Manager::new(config, at(0));
    let mut fx = Recorder::default();
    fx.trusted.insert(8);
    let mut ns = Names::default();
    ns.refcounts.insert(name("/s"), 1);
    // A process whose connection is closed for cause goes on holding "/s".
    let peer = Peer {
        pid: Some(8),
        uid: None,
    };
    let c = m.connect(peer, at(0)).unwrap();
    m.receive(c, &Frame::register(8, name("/s")).encode(), at(0), &mut fx);
    let mut garbage = reg("/x");
    garbage[4] = 9;
    m.receive(c, &garbage, at(0), &mut fx);
    // Another client registered "/b", already gone, and left.
    let d = m.connect(Peer::default(), at(0)).unwrap();
    m.receive(d, &reg("/b"), at(0), &mut fx);
    m.disconnect(d, at(0), &mut fx);
    m.tick(at(0), &mut fx); // converts the hold (the whole batch)
    m.tick(at(0), &mut fx); // asks to look
    assert_eq!(fx.chores, [Chore::Observe(name("/b"))]);
    // The shutdown pass starts, one name per tick, while the driver is still
    // looking at "/b"; then the look comes back and "/b" (the highest id) is
    // forgotten, so the pass has nothing left under its cursor.
    m.tick(at(2_000), &mut fx);
    assert!(m.is_closing());
    let look = fx.chores.remove(0);
    let _ = m.perform(look, &mut ns, at(2_000), &mut fx);
    assert_eq!(m.name_count(), 1);
    // After the linger, "/s" is let go and unlinked, and the manager finishes.
    let mut now = 2_000;
    for _ in 0..1_000 {
        let Some(wake) = m.next_wakeup() else {
            panic!("at {now} ms the manager asks for no wake-up: it lingers for good");
        };
        now = now.max(wake.as_millis());
        let status = m.tick(at(now), &mut fx);
        while !fx.chores.is_empty() {
            for chore in std::mem::take(&mut fx.chores) {
                let _ = m.perform(chore, &mut ns, at(now), &mut fx);
            }
        }
        if status == Status::Finished {
            assert!(now <= 13_100, "finished at {now} ms");
            assert!(ns.refcounts.is_empty());
            return;
        }
    }
    panic!("not finished by {now} ms");
}

#[test]
fn an_adopted_name_registered_again_is_never_reaped_as_an_orphan() {
    let mut r = Rig::new();
    r.fx.trusted.insert(7);
    r.bystander();
    r.create("/a", 1); // its creator died while no manager watched
    assert!(r.m.adopt_orphan(name("/a"), at(0)));
    let c = r.connect();
    r.register(c, 7, "/a"); // a receiver opens it (2),
    r.refcount("/a", 2);
    r.refcount("/a", 3); // pickles it on to another process (3),
    r.refcount("/a", 2); // closes its own reference (2)
    r.release(c, 7, "/a"); // and lets go
    r.run_to(60_000);
    assert!(r.exists("/a"), "in transit to its next receiver");
}

#[test]
fn an_adoption_counts_the_creator_once_whether_or_not_it_registered_here() {
    let mut r = Rig::torch();
    r.fx.trusted.extend([7, 8]);
    r.bystander();
    // Created by pid 5 under a manager that died; pid 7 opened it here,
    // then died too: two references, both of dead processes, one seen.
    let opened = "/torch_5_1_0";
    r.create(opened, 2);
    let c = r.connect();
    r.register(c, 7, opened);
    // Created by pid 8 here, pickled into a queue, then pid 8 died: its
    // reference and the pickle's, one registration seen.
    let queued = "/torch_8_1_0";
    r.create(queued, 2);
    r.register(c, 8, queued);
    r.exited(7);
    r.exited(8);
    r.run_to(1_000);
    assert!(r.m.adopt_orphan(name(opened), at(r.now)));
    assert!(r.m.adopt_orphan(name(queued), at(r.now)));
    r.run_to(62_000);
    assert!(
        !r.exists(opened),
        "its unseen creator and its dead opener: an orphan"
    );
    assert!(r.exists(queued), "its creator is counted once: in transit");
}

#[test]
fn a_registration_after_an_adoption_keeps_the_dead_seen_here() {
    let mut r = Rig::torch();
    r.fx.trusted.extend([5, 7]);
    r.bystander();
    // Pid 5 created it here and died holding it; a sweep finds it too.
    let n = "/torch_5_1_0";
    r.create(n, 1);
    let c = r.connect();
    r.register(c, 5, n);
    r.exited(5);
    r.run_to(500);
    assert!(r.m.adopt_orphan(name(n), at(r.now)));
    // Pid 7 opens it, closes it and lets go: only pid 5's leak is left.
    r.register(c, 7, n);
    r.refcount(n, 2);
    r.refcount(n, 1);
    r.release(c, 7, n);
    r.run_to(10_000);
    assert!(
        !r.exists(n),
        "its creator's death is still counted: an orphan"
    );
}

#[test]
fn a_pid_reused_while_its_exit_is_handled_is_not_taken_for_the_dead_process() {
    let mut r = Rig::new();
    r.fx.trusted.extend([9, 10]);
    let c = r.connect_as(10);
    r.register(c, 10, "/parent");
    r.create("/parent", 2);
    r.create_and_register(c, 9, "/a"); // process A, pid 9, forked from the parent
    r.register(c, 9, "/shared");
    r.register(c, 10, "/shared");
    r.create("/shared", 2);
    // A exits; before its end is acted on, the driver reads what is left on
    // the socket: A's last release, and a new process B that got pid 9.
    r.m.pid_exiting(9, at(r.now));
    r.fx.trusted.remove(&9); // the driver no longer trusts pid 9
    r.refcount("/shared", 1);
    r.release(c, 9, "/shared"); // A's own late release
    r.create_and_register(c, 9, "/b"); // B
    r.exited(9);
    let reaped_by = r.now + 2_300;
    r.run_to(reaped_by);
    assert!(!r.exists("/a"), "A's orphan is reaped");
    assert!(r.exists("/b"), "B's segment is not A's");
    assert!(
        r.exists("/shared"),
        "A's late release was charged to A, not the parent"
    );
    assert_eq!(
        r.state("/shared"),
        Some(NameState::Held { registrations: 1 })
    );
    assert_eq!(r.m.stats().stray_releases, 0);
}

#[test]
fn a_pid_reused_before_its_old_processs_end_is_reported_is_not_taken_for_it() {
    let mut r = Rig::new();
    r.fx.trusted.extend([9, 10]);
    let c = r.connect_as(10);
    r.register(c, 10, "/parent");
    r.create("/parent", 2);
    r.create_and_register(c, 9, "/a"); // process A, pid 9, forked from the parent
    r.register(c, 9, "/shared");
    r.register(c, 10, "/shared");
    r.create("/shared", 2);
    // A has ended, unreported: the driver's watch says so when asked, and
    // no longer trusts pid 9. What it reads now is A's last release, then a
    // new process B that got pid 9.
    r.fx.ended.insert(9);
    r.fx.trusted.remove(&9);
    r.refcount("/shared", 1);
    r.release(c, 9, "/shared"); // A's own late release
    r.create_and_register(c, 9, "/b"); // B
    r.fx.ended.clear();
    r.exited(9);
    let reaped_by = r.now + 2_300;
    r.run_to(reaped_by);
    assert!(!r.exists("/a"), "A's orphan is reaped");
    assert!(r.exists("/b"), "B's segment is not A's");
    assert!(
        r.exists("/shared"),
        "A's late release was charged to A, not the parent"
    );
    assert_eq!(
        r.state("/shared"),
        Some(NameState::Held { registrations: 1 })
    );
    assert_eq!(r.m.stats().stray_releases, 0);
}

#[test]
fn a_flood_of_stray_releases_costs_little_per_frame() {
    let mut r = Rig::new();
    let c = r.connect();
    r.register(c, 1, "/held");
    let mut bytes = Vec::new();
    for _ in 0..1_000 {
        bytes.extend_from_slice(&rel("/never"));
    }
    r.send(c, &bytes);
    assert_eq!(r.m.stats().stray_releases, 1_000);
    assert!(r.fx.closed.is_empty());
}

#[test]
fn an_orphan_a_fork_of_its_dead_holder_still_maps_is_kept_until_nobody_maps_it() {
    let mut r = Rig::new();
    r.fx.trusted.extend([100, 200]);
    let c = r.connect_as(200);
    r.create_and_register(c, 200, "/inherited");
    // 200 forks a worker that inherits the mapping (and the connection),
    // then dies; the worker never says a word to the manager.
    r.ns.mapped.insert(name("/inherited"));
    r.now = 1_000;
    r.exited(200);
    r.chores();
    r.run_to(10_000);
    assert!(r.exists("/inherited"), "unlinked while a process maps it");
    assert!(r.ns.asked_mapped.contains(&name("/inherited")));
    assert!(
        r.fx.notes
            .iter()
            .any(|note| matches!(note, Note::StillMapped { name: n } if *n == name("/inherited")))
    );

    // The worker unmaps it: reaped at the next judgement.
    r.ns.mapped.clear();
    r.run_to(40_000);
    assert!(!r.exists("/inherited"), "kept after nobody maps it");
    assert_eq!(r.m.stats().reaped, 1);
}

#[test]
fn orphans_of_a_closed_connection_are_reaped_without_asking_who_maps_them() {
    let mut r = Rig::new();
    r.fx.trusted.extend([100]);
    let _bystander = r.bystander();
    let c = r.connect_as(100);
    r.create_and_register(c, 100, "/alone");
    r.now = 1_000;
    r.disconnect(c);
    r.chores();
    r.run_to(4_000);
    assert!(!r.exists("/alone"));
    assert!(
        r.ns.asked_mapped.is_empty(),
        "nobody shares a closed connection, so nobody inherited the mapping"
    );
}

/// A writer that does not speak for a pid (a worker in a pid namespace of
/// its own, whose pid there is a sibling's here) sends frames with the pid
/// of a process already holding on the connection: they go to the
/// connection's holder, not the process's, and do not end with it; the
/// process's own frames, before and after, still join its holder.
#[test]
fn a_frame_whose_writer_does_not_speak_for_its_pid_does_not_join_that_pids_holder() {
    let mut r = Rig::new();
    let _bystander = r.bystander();
    let c = r.connect();
    r.fx.trusted.insert(7);
    r.create_and_register(c, 7, "/sibling");
    r.fx.foreign.insert(7);
    r.create_and_register(c, 7, "/nested");
    r.create_and_register(c, 7, "/nested2");
    r.fx.foreign.remove(&7);
    r.create_and_register(c, 7, "/sibling2");
    r.exited(7);
    r.run_to(10_000);
    assert_eq!(
        r.state("/nested"),
        Some(NameState::Held { registrations: 1 })
    );
    assert_eq!(
        r.state("/nested2"),
        Some(NameState::Held { registrations: 1 })
    );
    assert!(r.exists("/nested") && r.exists("/nested2"));
    assert!(
        !r.exists("/sibling") && !r.exists("/sibling2"),
        "the sibling's are reaped: {:?} {:?}",
        r.state("/sibling"),
        r.state("/sibling2")
    );
    // The nested writer's release reaches its registration.
    r.fx.foreign.insert(7);
    r.release(c, 7, "/nested");
    assert_eq!(r.state("/nested"), Some(NameState::Released { dead: 0 }));
    r.disconnect(c);
    r.run_to(20_000);
    assert!(!r.exists("/nested2"), "the connection's holds end with it");
}

/// A release whose writer does not speak for its pid (a worker in a pid
/// namespace of its own, forked by one process on the connection, dropping
/// a mapping it inherited) is another process's on the connection: charged
/// to the connection's lowest holder holding the name, not to the process
/// whose pid it happens to use. Charged to that process, its registration
/// would be gone while it still maps the name, and the name reaped when the
/// real registrant crashes.
#[test]
fn a_release_whose_writer_does_not_speak_for_its_pid_is_not_charged_to_that_pids_process() {
    let mut r = Rig::new();
    r.fx.trusted.extend([10, 7]);
    let _bystander = r.bystander();
    let c = r.connect_as(10);
    r.create_and_register(c, 10, "/shared");
    r.register(c, 7, "/shared");
    r.refcount("/shared", 2);
    // The nested worker (pid 7 in its own namespace) unmaps what it
    // inherited from 10.
    r.fx.foreign.insert(7);
    r.release(c, 7, "/shared");
    r.refcount("/shared", 1);
    r.fx.foreign.remove(&7);
    assert_eq!(r.m.stats().stray_releases, 0);
    // 10 crashes; 7 still maps it.
    r.now = 1_000;
    r.exited(10);
    r.run_to(20_000);
    assert!(r.exists("/shared"), "reaped while 7 maps it");
    assert_eq!(
        r.state("/shared"),
        Some(NameState::Held { registrations: 1 })
    );
}

/// A registration whose writer does not speak for its pid does not take
/// over what the process of that pid registered on a connection closed for
/// cause (as the process itself, reconnecting, would): that registration
/// stays the process's, and turns dead when it ends.
#[test]
fn a_registration_whose_writer_does_not_speak_for_its_pid_leaves_that_pids_detached_holds() {
    let mut r = Rig::new();
    r.fx.trusted.insert(7);
    let _bystander = r.bystander();
    let old = r.connect_as(7);
    r.create_and_register(old, 7, "/detached");
    let mut malformed = reg("/x");
    malformed[4] = 2;
    r.send(old, &malformed);
    assert!(matches!(r.fx.closed[..], [(c, CloseReason::Malformed(_))] if c == old));
    // Another family's nested worker, pid 7 in its namespace, opens the
    // segment (say, unpickled) and registers it, then is done with it.
    let other = r.connect();
    r.fx.foreign.insert(7);
    r.refcount("/detached", 2);
    r.register(other, 7, "/detached");
    r.release(other, 7, "/detached");
    r.refcount("/detached", 1);
    r.fx.foreign.remove(&7);
    // 7 crashes without releasing: its registration is dead, the refcount
    // its alone, the name an orphan.
    r.now = 1_000;
    r.exited(7);
    r.run_to(20_000);
    assert!(!r.exists("/detached"), "leaked: {:?}", r.state("/detached"));
}

/// A connection closed for cause ties the holds of its untrusted pids to the
/// process that connected, whoever wrote the bytes that closed it (here a
/// forked child of the peer, whose writes do not speak for the peer's pid):
/// they do not end at once, while a nested worker still maps what it
/// registered.
#[test]
fn a_close_for_cause_on_a_childs_bytes_still_ties_the_untrusted_holds_to_the_peer() {
    let mut r = Rig::new();
    r.fx.trusted.insert(10);
    let _bystander = r.bystander();
    let c = r.connect_as(10);
    // A nested worker on the family's connection: its pid is not trusted.
    r.create_and_register(c, 99, "/nested");
    r.fx.foreign.insert(10);
    let mut malformed = reg("/x");
    malformed[4] = 2;
    r.send(c, &malformed);
    r.fx.foreign.remove(&10);
    assert!(matches!(r.fx.closed[..], [(closed, CloseReason::Malformed(_))] if closed == c));
    r.run_to(20_000);
    assert!(
        r.exists("/nested"),
        "reaped while its registrant maps it: {:?}",
        r.state("/nested")
    );
    // The tie holds until the peer ends; then, since releases may have been
    // lost with the connection, a receiver gets the linger's time.
    r.exited(10);
    r.run_to(40_000);
    assert!(
        r.exists("/nested"),
        "reaped within the linger after the peer ended"
    );
    r.run_to(100_000);
    assert!(!r.exists("/nested"), "leaked: {:?}", r.state("/nested"));
}

/// A connection closed for cause with no live process to tie its untrusted
/// pids' holds to ends them, but those unknown processes may live on: a name
/// they still map is kept (asked, not unlinked), and goes once nobody does.
#[test]
fn an_untrusted_hold_ended_by_a_close_for_cause_is_unlinked_only_once_nobody_maps_it() {
    let mut r = Rig::new();
    let _bystander = r.bystander();
    // The process that connected is gone: nothing to watch.
    let c = r.connect_as(10);
    r.create_and_register(c, 99, "/nested");
    r.ns.mapped.insert(name("/nested"));
    let mut malformed = reg("/x");
    malformed[4] = 2;
    r.send(c, &malformed);
    // Its releases may have been lost with the connection: the linger's
    // time first, then the walk.
    r.run_to(70_000);
    assert!(r.exists("/nested"), "unlinked while mapped");
    assert!(r.ns.asked_mapped.contains(&name("/nested")));
    r.ns.mapped.clear();
    r.run_to(200_000);
    assert!(!r.exists("/nested"), "leaked: {:?}", r.state("/nested"));
}

/// The tie of a connection's untrusted holds passes on: the process the
/// close tied them to ends while another that wrote on the connection lives
/// on (a nested worker that still hands the name on), so they are tied to
/// that one, and end with the last. The processes' own holders (on another
/// connection, in the same pid lists) end with them, neither sooner nor
/// later.
#[test]
fn a_closed_connections_untrusted_holds_pass_to_the_next_writer_when_theirs_ends() {
    let mut r = Rig::new();
    r.fx.trusted.extend([10, 11, 12]);
    let _bystander = r.bystander();
    let other = r.connect_as(12);
    r.create_and_register(other, 12, "/twelve");
    let c = r.connect_as(10);
    r.create_and_register(other, 10, "/ten");
    r.create_and_register(c, 99, "/nested");
    r.fx.writers.insert(c, Vec::from([11, 12]));
    let mut malformed = reg("/x");
    malformed[4] = 2;
    r.send(c, &malformed);
    assert!(matches!(r.fx.closed[..], [(closed, CloseReason::Malformed(_))] if closed == c));
    for writer in [10, 11] {
        r.fx.gone.insert(writer);
        r.exited(writer);
        r.run_to(r.now + 100_000);
        assert!(
            r.exists("/nested") && r.exists("/twelve"),
            "reaped after writer {writer} ended while 12 lives: {:?}",
            r.state("/nested")
        );
    }
    assert!(!r.exists("/ten"), "leaked: {:?}", r.state("/ten"));
    assert_eq!(r.fx.watched.keys().copied().collect::<Vec<_>>(), [12]);
    r.fx.gone.insert(12);
    r.exited(12);
    r.run_to(r.now + 100_000);
    for gone in ["/nested", "/twelve"] {
        assert!(!r.exists(gone), "leaked: {:?}", r.state(gone));
    }
}

/// Untrusted holds passed on to the next writer are that process's as they
/// were the peer's: when it registers the name again on a connection of its
/// own (reconnected after the close), the registration moves there, not
/// counted twice. Counted twice, both turn dead when it ends, and a segment
/// a receiver has in transit reads as an orphan.
#[test]
fn untrusted_holds_passed_on_to_the_next_writer_move_when_it_registers_again() {
    let mut r = Rig::new();
    r.fx.trusted.extend([10, 11]);
    let _bystander = r.bystander();
    let c = r.connect_as(10);
    r.create_and_register(c, 99, "/nested");
    r.fx.writers.insert(c, Vec::from([11]));
    let mut malformed = reg("/x");
    malformed[4] = 2;
    r.send(c, &malformed);
    assert!(matches!(r.fx.closed[..], [(closed, CloseReason::Malformed(_))] if closed == c));
    r.fx.gone.insert(10);
    r.exited(10);
    assert_eq!(r.fx.watched.keys().copied().collect::<Vec<_>>(), [11]);
    let again = r.connect_as(11);
    r.refcount("/nested", 2);
    r.register(again, 11, "/nested");
    assert_eq!(
        r.state("/nested"),
        Some(NameState::Held { registrations: 1 }),
        "the passed-on registration counted again"
    );
    // The nested worker has let go of it, and 11 hands it on (a receiver
    // has it in transit, one reference more than 11's) and crashes.
    r.refcount("/nested", 2);
    r.fx.gone.insert(11);
    r.exited(11);
    r.run_to(r.now + 100_000);
    assert!(
        r.exists("/nested"),
        "unlinked while in transit: {:?}",
        r.state("/nested")
    );
}
