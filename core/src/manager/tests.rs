use super::*;
use crate::frame::Frame;
use crate::storage::Fixed;
use std::collections::BTreeSet;
use std::vec::Vec;

type TestManager = Manager<Fixed<64, 8>>;

/// Records effects and plays the shared-memory namespace.
#[derive(Default)]
struct Recorder {
    replies: Vec<(ConnId, [u8; 2])>,
    closed: Vec<(ConnId, CloseReason)>,
    unlinked: Vec<(SegmentName, UnlinkReason)>,
    existing: BTreeSet<SegmentName>,
}

impl Effects for Recorder {
    fn reply(&mut self, conn: ConnId, reply: [u8; 2]) {
        self.replies.push((conn, reply));
    }
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        self.closed.push((conn, reason));
    }
    fn unlink(&mut self, name: &SegmentName, reason: UnlinkReason) {
        self.unlinked.push((*name, reason));
        self.existing.remove(name);
    }
    fn exists(&mut self, name: &SegmentName) -> bool {
        self.existing.contains(name)
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

fn setup() -> (TestManager, Recorder) {
    (
        TestManager::new(ManagerConfig::default(), at(0)),
        Recorder::default(),
    )
}

/// Runs ticks every 100 ms from `from` to `to` inclusive.
fn run_until(m: &mut TestManager, fx: &mut Recorder, from: u64, to: u64) -> Status {
    let mut t = from;
    while t <= to {
        if m.tick(at(t), fx) == Status::Finished {
            return Status::Finished;
        }
        t += 100;
    }
    Status::Serving
}

#[test]
fn answers_every_registration_in_order_and_forgets_released_gone_names() {
    let (mut m, mut fx) = setup();
    let c = m.connect(Peer::default(), at(0)).unwrap();
    let mut bytes = Vec::new();
    for n in ["/a", "/b", "/c"] {
        bytes.extend_from_slice(&reg(n));
        fx.existing.insert(name(n));
    }
    m.receive(c, &bytes, at(1), &mut fx);
    assert_eq!(fx.replies, [(c, ACK), (c, ACK), (c, ACK)]);
    assert_eq!(
        m.name_state(&name("/a")),
        Some(NameState::Held { holders: 1 })
    );

    // Our client unlinks before it releases: the next sweep forgets the name,
    // without a lookup per release.
    fx.existing.remove(&name("/a"));
    m.receive(c, &rel("/a"), at(2), &mut fx);
    assert_eq!(m.name_state(&name("/a")), Some(NameState::Released));
    assert_eq!(fx.replies.len(), 3, "releases are not answered");
    assert!(m.next_wakeup().is_some_and(|t| t <= at(2_000)));
    run_until(&mut m, &mut fx, 100, 2_000);
    assert_eq!(m.name_state(&name("/a")), None);
    assert_eq!(m.stats().forgotten, 1);
}

#[test]
fn frames_split_at_every_boundary_reassemble() {
    let (mut m, mut fx) = setup();
    let c = m.connect(Peer::default(), at(0)).unwrap();
    let mut stream = Vec::new();
    stream.extend_from_slice(&reg("/x"));
    stream.extend_from_slice(&reg("/y"));
    for split in 0..stream.len() {
        let mut m2 = TestManager::new(ManagerConfig::default(), at(0));
        let c2 = m2.connect(Peer::default(), at(0)).unwrap();
        let mut fx2 = Recorder::default();
        m2.receive(c2, &stream[..split], at(1), &mut fx2);
        m2.receive(c2, &stream[split..], at(1), &mut fx2);
        assert_eq!(fx2.replies.len(), 2, "split at {split}");
        assert!(fx2.closed.is_empty());
    }
    for byte in &stream {
        m.receive(c, core::slice::from_ref(byte), at(1), &mut fx);
    }
    assert_eq!(fx.replies.len(), 2);
}

#[test]
fn half_frame_stalls_nobody_and_is_closed_after_the_frame_timeout() {
    let (mut m, mut fx) = setup();
    let staller = m.connect(Peer::default(), at(0)).unwrap();
    m.receive(staller, &reg("/held")[..], at(0), &mut fx);
    m.receive(staller, &reg("/s")[..10], at(10), &mut fx);
    let other = m.connect(Peer::default(), at(20)).unwrap();
    m.receive(other, &reg("/o"), at(30), &mut fx);
    let late = m.connect(Peer::default(), at(3_000)).unwrap();
    m.receive(late, &reg("/l"), at(3_000), &mut fx);
    assert_eq!(fx.replies, [(staller, ACK), (other, ACK), (late, ACK)]);
    assert!(m.next_wakeup().unwrap() <= at(5_010));

    m.tick(at(5_009), &mut fx);
    assert!(fx.closed.is_empty());
    m.tick(at(5_010), &mut fx);
    assert_eq!(fx.closed, [(staller, CloseReason::StalledFrame)]);
    // What the staller held is now orphaned, and the others are untouched.
    assert!(matches!(
        m.name_state(&name("/held")),
        Some(NameState::Orphaned { .. })
    ));
    assert_eq!(
        m.name_state(&name("/o")),
        Some(NameState::Held { holders: 1 })
    );
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let (mut m, mut fx) = setup();
    let bad = m.connect(Peer::default(), at(0)).unwrap();
    let good = m.connect(Peer::default(), at(0)).unwrap();
    let mut frame = reg("/a");
    frame[4] = 7;
    let mut stream = Vec::from(frame);
    stream.extend_from_slice(&reg("/after-garbage"));
    m.receive(bad, &stream, at(1), &mut fx);
    m.receive(good, &reg("/b"), at(1), &mut fx);
    assert_eq!(
        fx.closed,
        [(
            bad,
            CloseReason::Malformed(FrameError::FreeFlag { value: 7 })
        )]
    );
    assert_eq!(
        fx.replies,
        [(good, ACK)],
        "nothing after the garbage is processed"
    );
    assert_eq!(m.name_state(&name("/after-garbage")), None);
    assert_eq!(m.connection_count(), 1);
}

#[test]
fn releases_of_names_not_held_close_the_connection() {
    let (mut m, mut fx) = setup();
    let a = m.connect(Peer::default(), at(0)).unwrap();
    let b = m.connect(Peer::default(), at(0)).unwrap();
    m.receive(a, &reg("/mine"), at(1), &mut fx);
    m.receive(b, &rel("/mine"), at(2), &mut fx);
    assert_eq!(fx.closed, [(b, CloseReason::UnknownRelease(name("/mine")))]);
    assert_eq!(
        m.name_state(&name("/mine")),
        Some(NameState::Held { holders: 1 })
    );
}

#[test]
fn prefix_and_uid_are_enforced() {
    let config = ManagerConfig {
        name_prefix: Some(NamePrefix::torch()),
        owner_uid: Some(1000),
        ..ManagerConfig::default()
    };
    let mut m = TestManager::new(config, at(0));
    let mut fx = Recorder::default();
    assert_eq!(
        m.connect(
            Peer {
                pid: Some(1),
                uid: Some(0)
            },
            at(0)
        ),
        Err(ConnectError::ForeignUid { uid: Some(0) })
    );
    assert_eq!(
        m.connect(Peer::default(), at(0)),
        Err(ConnectError::ForeignUid { uid: None })
    );
    let c = m
        .connect(
            Peer {
                pid: Some(1),
                uid: Some(1000),
            },
            at(0),
        )
        .unwrap();
    m.receive(c, &reg("/torch_1_2_3"), at(1), &mut fx);
    m.receive(c, &reg("/etc_passwd"), at(1), &mut fx);
    assert_eq!(fx.replies, [(c, ACK)]);
    assert_eq!(
        fx.closed,
        [(c, CloseReason::ForeignName(name("/etc_passwd")))]
    );
    assert_eq!(m.stats().rejected, 2);
}

#[test]
fn orphans_are_reaped_after_the_grace_period_and_not_before() {
    let (mut m, mut fx) = setup();
    let keeper = m.connect(Peer::default(), at(0)).unwrap();
    let victim = m.connect(Peer::default(), at(0)).unwrap();
    for n in ["/solo", "/shared"] {
        fx.existing.insert(name(n));
        m.receive(victim, &reg(n), at(1), &mut fx);
    }
    m.receive(keeper, &reg("/shared"), at(1), &mut fx);
    m.disconnect(victim, at(1_000));

    assert_eq!(run_until(&mut m, &mut fx, 1_000, 2_900), Status::Serving);
    assert!(fx.unlinked.is_empty(), "grace period not over yet");
    run_until(&mut m, &mut fx, 3_000, 3_000);
    assert_eq!(fx.unlinked, [(name("/solo"), UnlinkReason::Orphaned)]);
    assert_eq!(
        m.name_state(&name("/shared")),
        Some(NameState::Held { holders: 1 })
    );

    // The live holder lets go: the dead one's reference keeps the refcount up,
    // so the name is orphaned now and reaped one grace period later.
    m.receive(keeper, &rel("/shared"), at(4_000), &mut fx);
    assert!(matches!(
        m.name_state(&name("/shared")),
        Some(NameState::Orphaned { .. })
    ));
    run_until(&mut m, &mut fx, 4_000, 6_000);
    assert_eq!(fx.unlinked.len(), 2);
    assert_eq!(fx.unlinked[1], (name("/shared"), UnlinkReason::Orphaned));
}

#[test]
fn registering_an_orphan_again_cancels_its_reaping() {
    let (mut m, mut fx) = setup();
    let a = m.connect(Peer::default(), at(0)).unwrap();
    let b = m.connect(Peer::default(), at(0)).unwrap();
    fx.existing.insert(name("/x"));
    m.receive(a, &reg("/x"), at(0), &mut fx);
    m.disconnect(a, at(100));
    m.receive(b, &reg("/x"), at(500), &mut fx);
    run_until(&mut m, &mut fx, 500, 10_000);
    assert!(fx.unlinked.is_empty());
    assert_eq!(
        m.name_state(&name("/x")),
        Some(NameState::Held { holders: 1 })
    );
}

#[test]
fn names_in_transit_survive_however_long_they_wait() {
    let (mut m, mut fx) = setup();
    let sender = m.connect(Peer::default(), at(0)).unwrap();
    let idle_client = m.connect(Peer::default(), at(0)).unwrap();
    fx.existing.insert(name("/in_transit"));
    m.receive(sender, &reg("/in_transit"), at(0), &mut fx);
    m.receive(sender, &rel("/in_transit"), at(10), &mut fx);
    m.disconnect(sender, at(20));
    assert_eq!(
        m.name_state(&name("/in_transit")),
        Some(NameState::Released)
    );
    // An hour of ticks: re-checked now and then, never unlinked.
    let step = if cfg!(miri) { 60_000 } else { 250 };
    let mut t = 0;
    while t < 3_600_000 {
        assert_eq!(m.tick(at(t), &mut fx), Status::Serving);
        t += step;
    }
    assert!(fx.unlinked.is_empty());
    // The receiver opens it, then drops it and unlinks it: forgotten.
    m.receive(idle_client, &reg("/in_transit"), at(t), &mut fx);
    fx.existing.remove(&name("/in_transit"));
    m.receive(idle_client, &rel("/in_transit"), at(t), &mut fx);
    run_until(&mut m, &mut fx, t, t + 2_000);
    assert_eq!(m.name_count(), 0);
}

#[test]
fn released_names_that_disappear_later_are_forgotten() {
    // PyTorch clients release before unlinking, so the first check finds the
    // name still there; a later check forgets it.
    let (mut m, mut fx) = setup();
    let c = m.connect(Peer::default(), at(0)).unwrap();
    fx.existing.insert(name("/pt"));
    m.receive(c, &reg("/pt"), at(0), &mut fx);
    m.receive(c, &rel("/pt"), at(0), &mut fx);
    assert_eq!(m.name_count(), 1);
    fx.existing.remove(&name("/pt"));
    run_until(&mut m, &mut fx, 0, 1_000);
    assert_eq!(m.name_count(), 0);
    assert!(fx.unlinked.is_empty());
}

#[test]
fn shuts_down_after_idle_timeout_unlinking_everything_known() {
    let (mut m, mut fx) = setup();
    let c = m.connect(Peer::default(), at(0)).unwrap();
    for n in ["/a", "/b"] {
        fx.existing.insert(name(n));
        m.receive(c, &reg(n), at(0), &mut fx);
    }
    m.receive(c, &rel("/b"), at(0), &mut fx);
    assert_eq!(
        run_until(&mut m, &mut fx, 0, 60_000),
        Status::Serving,
        "a client is connected"
    );
    m.disconnect(c, at(60_000));
    assert_eq!(m.next_wakeup(), Some(at(62_000)));
    assert_eq!(m.tick(at(61_999), &mut fx), Status::Serving);
    assert_eq!(m.tick(at(62_000), &mut fx), Status::Finished);
    let mut unlinked: Vec<_> = fx.unlinked.iter().map(|(n, _)| n.as_str()).collect();
    unlinked.sort();
    assert_eq!(unlinked, ["/a", "/b"]);
}

#[test]
fn a_new_connection_restarts_the_shutdown_clock() {
    let (mut m, mut fx) = setup();
    assert_eq!(m.tick(at(1_999), &mut fx), Status::Serving);
    let c = m.connect(Peer::default(), at(1_999)).unwrap();
    m.disconnect(c, at(3_000));
    assert_eq!(m.tick(at(4_999), &mut fx), Status::Serving);
    assert_eq!(m.tick(at(5_000), &mut fx), Status::Finished);
}

#[test]
fn without_reaping_orphans_wait_for_shutdown_like_pytorch() {
    let config = ManagerConfig {
        reap_grace: None,
        ..ManagerConfig::default()
    };
    let mut m = TestManager::new(config, at(0));
    let mut fx = Recorder::default();
    let a = m.connect(Peer::default(), at(0)).unwrap();
    let b = m.connect(Peer::default(), at(0)).unwrap();
    fx.existing.insert(name("/leak"));
    m.receive(a, &reg("/leak"), at(0), &mut fx);
    m.disconnect(a, at(0));
    run_until(&mut m, &mut fx, 0, 30_000);
    assert!(fx.unlinked.is_empty());
    m.disconnect(b, at(30_000));
    assert_eq!(run_until(&mut m, &mut fx, 30_000, 32_000), Status::Finished);
    assert_eq!(fx.unlinked, [(name("/leak"), UnlinkReason::Shutdown)]);
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
    assert_eq!(m.stats().refused, 1);
    assert_eq!(m.connect(Peer::default(), at(0)).map(|_| ()), Ok(()));
    assert_eq!(
        m.connect(Peer::default(), at(0)),
        Err(ConnectError::TooManyConnections)
    );
}

#[test]
fn repeated_registrations_on_one_connection_are_counted() {
    let (mut m, mut fx) = setup();
    let c = m.connect(Peer::default(), at(0)).unwrap();
    fx.existing.insert(name("/twice"));
    m.receive(c, &reg("/twice"), at(0), &mut fx);
    m.receive(c, &reg("/twice"), at(0), &mut fx);
    m.receive(c, &rel("/twice"), at(0), &mut fx);
    assert_eq!(
        m.name_state(&name("/twice")),
        Some(NameState::Held { holders: 1 })
    );
    m.receive(c, &rel("/twice"), at(0), &mut fx);
    assert_eq!(m.name_state(&name("/twice")), Some(NameState::Released));
    m.receive(c, &rel("/twice"), at(0), &mut fx);
    assert_eq!(
        fx.closed,
        [(c, CloseReason::UnknownRelease(name("/twice")))]
    );
}

#[test]
fn bytes_for_unknown_or_closed_connections_are_ignored() {
    let (mut m, mut fx) = setup();
    m.receive(ConnId(99), &reg("/x"), at(0), &mut fx);
    m.disconnect(ConnId(99), at(0));
    assert!(fx.replies.is_empty() && fx.closed.is_empty());
}

#[test]
fn journal_frames_are_silent_and_reserved_names_are_kept_out_of_the_table() {
    #[derive(Default)]
    struct JournalFx(Recorder, bool);
    impl Effects for JournalFx {
        fn reply(&mut self, conn: ConnId, reply: [u8; 2]) {
            self.0.reply(conn, reply);
        }
        fn close(&mut self, conn: ConnId, reason: CloseReason) {
            self.0.close(conn, reason);
        }
        fn unlink(&mut self, name: &SegmentName, reason: UnlinkReason) {
            self.0.unlink(name, reason);
        }
        fn exists(&mut self, name: &SegmentName) -> bool {
            self.0.exists(name)
        }
        fn attach_journal(&mut self, _conn: ConnId) -> bool {
            true
        }
        fn drain_journal(&mut self, _conn: ConnId) {
            self.1 = true;
        }
    }
    let (mut m, _) = setup();
    let mut fx = JournalFx::default();
    let c = m.connect(Peer::default(), at(0)).unwrap();
    m.receive(c, &reg(crate::journal::SETUP_NAME), at(0), &mut fx);
    assert_eq!(fx.0.replies, [(c, crate::ack::JOURNAL_READY)]);
    m.receive_journaled(c, &reg("/j"), at(0), &mut fx);
    assert_eq!(
        fx.0.replies.len(),
        1,
        "journaled registrations are not answered"
    );
    assert_eq!(
        m.name_state(&name("/j")),
        Some(NameState::Held { holders: 1 })
    );
    m.receive(c, &reg(crate::journal::DOORBELL_NAME), at(0), &mut fx);
    assert!(fx.1, "the doorbell asks the driver to read the journal");
    assert_eq!(fx.0.replies[1], (c, ACK));
    assert_eq!(m.name_count(), 1, "reserved names never enter the table");

    m.receive_journaled(c, &reg(crate::journal::DOORBELL_NAME), at(0), &mut fx);
    assert_eq!(fx.0.closed, [(c, CloseReason::JournalMisuse)]);
    assert!(matches!(
        m.name_state(&name("/j")),
        Some(NameState::Orphaned { .. })
    ));
}

#[test]
fn a_journal_offer_to_a_driver_without_journals_is_refused() {
    let (mut m, mut fx) = setup();
    let c = m.connect(Peer::default(), at(0)).unwrap();
    m.receive(c, &reg(crate::journal::SETUP_NAME), at(0), &mut fx);
    assert_eq!(fx.replies, [(c, REFUSAL)]);
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
fn adopted_orphans_are_reaped_unless_someone_registers_them() {
    let (mut m, mut fx) = setup();
    for n in ["/lost", "/found"] {
        fx.existing.insert(name(n));
        assert!(m.adopt_orphan(name(n), at(0)));
    }
    let c = m.connect(Peer::default(), at(100)).unwrap();
    m.receive(c, &reg("/found"), at(100), &mut fx);
    assert!(
        !m.adopt_orphan(name("/found"), at(200)),
        "known names are left alone"
    );
    run_until(&mut m, &mut fx, 200, 3_000);
    assert_eq!(fx.unlinked, [(name("/lost"), UnlinkReason::Orphaned)]);
    assert_eq!(
        m.name_state(&name("/found")),
        Some(NameState::Held { holders: 1 })
    );
}
