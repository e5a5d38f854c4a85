use super::*;
use crate::fault::{FaultInjector, Faults};
use crate::journal::{DOORBELL, Journal, SETUP, journal_len};
use crate::loopback::Loopback;
use crate::manager::{ManagerConfig, NameState};
use crate::name::NamePrefix;
use crate::storage::Fixed;
use crate::time::Timestamp;
use crate::transport::{ErrorKind, Transport, TransportError};
use core::sync::atomic::AtomicU32;
use std::vec::Vec;

type Wire<'j> = Loopback<'j, Fixed<64, 4>>;

fn name(i: u64) -> SegmentName {
    SegmentName::generate(&NamePrefix::torch(), 7, 1, i).unwrap()
}

fn wire() -> Wire<'static> {
    Loopback::new(ManagerConfig::default())
}

/// Journal memory for one test.
fn memory(capacity: usize) -> Vec<AtomicU32> {
    (0..journal_len(capacity) / 4)
        .map(|_| AtomicU32::new(0))
        .collect()
}

fn frames(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(Frame::encode).collect()
}

// The session step by step, with the test playing driver and manager.

#[test]
fn strict_registration_writes_then_waits_for_ok_split_across_reads() {
    let mut s: ClientSession<4> = ClientSession::new(AckMode::Strict);
    s.register(7, name(0)).unwrap();
    assert_eq!(
        s.step(),
        Step::Send(&frames(&[Frame::register(7, name(0))])[..])
    );
    s.sent();
    assert_eq!(s.step(), Step::Receive { max: 2 });
    s.received(b"O");
    assert_eq!(
        s.step(),
        Step::Receive { max: 1 },
        "never reads past what is owed"
    );
    s.received(b"K");
    assert_eq!(s.step(), Step::Done(Ok(())));
    assert_eq!(s.awaiting(), 0);
    assert_eq!(s.step(), Step::Done(Ok(())), "idle: the last result again");
}

#[test]
fn pipelined_registrations_collect_at_half_the_window_and_wait_when_full() {
    let mut s: ClientSession<8> = ClientSession::new(AckMode::Pipelined { max_in_flight: 2 });
    s.register(7, name(0)).unwrap();
    assert!(matches!(s.step(), Step::Send(_)));
    s.sent();
    assert_eq!(s.step(), Step::Done(Ok(())), "no wait for the answer");

    s.register(7, name(1)).unwrap();
    assert_eq!(s.step(), Step::TryReceive { max: READ_MAX });
    s.nothing_ready();
    assert!(matches!(s.step(), Step::Send(_)));
    s.sent();
    assert_eq!(s.step(), Step::Done(Ok(())));
    assert_eq!(s.awaiting(), 2);

    s.register(7, name(2)).unwrap();
    assert_eq!(s.step(), Step::TryReceive { max: READ_MAX });
    s.nothing_ready();
    assert_eq!(s.step(), Step::Receive { max: 4 }, "window full: wait");
    s.received(b"OK");
    assert!(matches!(s.step(), Step::Send(_)));
    s.sent();
    assert_eq!(s.step(), Step::Done(Ok(())));
    assert_eq!(s.awaiting(), 2);
}

#[test]
fn deferred_releases_ride_with_the_next_registration() {
    let mut s: ClientSession<4> = ClientSession::new(AckMode::Pipelined { max_in_flight: 4 });
    s.release(7, name(0), true).unwrap();
    assert_eq!(s.step(), Step::Done(Ok(())));
    assert_eq!(s.queued(), 1);
    s.register(7, name(1)).unwrap();
    let both = frames(&[Frame::release(7, name(0)), Frame::register(7, name(1))]);
    assert_eq!(s.step(), Step::Send(&both[..]));
    s.sent();
    assert_eq!(s.step(), Step::Done(Ok(())));
    assert_eq!(s.queued(), 0);

    s.release(7, name(2), false).unwrap();
    assert_eq!(
        s.step(),
        Step::Send(&frames(&[Frame::release(7, name(2))])[..]),
        "a live segment's release goes at once"
    );
    s.sent();
    assert_eq!(s.step(), Step::Done(Ok(())));
    s.flush().unwrap();
    assert_eq!(s.step(), Step::Done(Ok(())), "nothing to flush");
}

#[test]
fn refusals_come_out_of_the_next_checking_call_and_leave_it_usable() {
    let mut s: ClientSession<4> = ClientSession::new(AckMode::Pipelined { max_in_flight: 4 });
    s.register(7, name(0)).unwrap();
    s.step();
    s.sent();
    assert_eq!(s.step(), Step::Done(Ok(())));
    s.poll().unwrap();
    assert_eq!(s.step(), Step::TryReceive { max: READ_MAX });
    s.received(b"NO");
    assert_eq!(s.step(), Step::Done(Err(ClientFault::Refused(name(0)))));
    assert!(!s.is_broken());
    s.poll().unwrap();
    s.nothing_ready();
    assert_eq!(s.step(), Step::Done(Ok(())), "reported once");
}

#[test]
fn faults_and_failures_break_the_session() {
    let fatal: [(&[u8], ClientFault); 3] = [
        (b"OX", ClientFault::BadReply(BadReply(*b"OX"))),
        (b"JR", ClientFault::BadReply(BadReply(*b"JR"))),
        (b"", ClientFault::ManagerClosed { unanswered: 1 }),
    ];
    for (reply, fault) in fatal {
        let mut s: ClientSession<4> = ClientSession::new(AckMode::Strict);
        s.register(7, name(0)).unwrap();
        s.step();
        s.sent();
        s.received(reply);
        assert_eq!(s.step(), Step::Done(Err(fault)), "{reply:?}");
        assert!(s.is_broken());
        assert_eq!(s.register(7, name(1)), Err(Broken));
    }

    let mut s: ClientSession<4> = ClientSession::new(AckMode::Strict);
    s.register(7, name(0)).unwrap();
    s.step();
    s.failed();
    assert!(s.is_broken());

    let mut s: ClientSession<4> = ClientSession::new(AckMode::Strict);
    s.register(7, name(0)).unwrap();
    assert_eq!(
        s.register(7, name(1)),
        Err(Broken),
        "an abandoned operation leaves the stream unknown"
    );
    assert!(s.is_broken());

    let mut s: ClientSession<4> = ClientSession::new(AckMode::Strict);
    s.received(b"OK");
    assert_eq!(s.step(), Step::Done(Err(ClientFault::UnsolicitedReply)));
    assert!(s.is_broken());
}

#[test]
fn an_accepted_offer_moves_frames_into_the_journal() {
    let memory = memory(4);
    let journal = Journal::from_words(&memory).unwrap();
    let mut s: ClientSession<4, Journal<'_>> = ClientSession::new(AckMode::default());
    s.offer_journal(7, journal).unwrap();
    let offer = frames(&[Frame::register(7, SETUP)]);
    assert!(
        matches!(s.step(), Step::Offer { bytes, .. } if bytes == &offer[..]),
        "the offer carries the memory"
    );
    s.sent();
    assert_eq!(s.step(), Step::Receive { max: 2 });
    s.received(b"JR");
    assert_eq!(s.step(), Step::Done(Ok(())));
    assert!(s.is_journaled());
    journal.validate().unwrap();

    // The first frame costs a non-blocking read and nothing else.
    s.register(7, name(0)).unwrap();
    assert_eq!(s.step(), Step::TryReceive { max: READ_MAX });
    s.nothing_ready();
    assert_eq!(s.step(), Step::Done(Ok(())));
    // The second fills half the ring: the doorbell rings.
    s.release(7, name(0), true).unwrap();
    let bell = frames(&[Frame::register(7, DOORBELL)]);
    assert_eq!(s.step(), Step::Send(&bell[..]));
    s.sent();
    assert_eq!(s.step(), Step::Done(Ok(())));
    let mut seen = Vec::new();
    journal
        .drain(|bytes| seen.push(Frame::parse(&bytes).unwrap()))
        .unwrap();
    assert_eq!(
        seen,
        [Frame::register(7, name(0)), Frame::release(7, name(0))]
    );

    // Settling waits for the doorbell, then rings once more (pid 0) and waits.
    s.settle().unwrap();
    assert_eq!(s.step(), Step::Receive { max: 2 });
    s.received(b"OK");
    assert_eq!(
        s.step(),
        Step::Send(&frames(&[Frame::register(0, DOORBELL)])[..])
    );
    s.sent();
    assert_eq!(s.step(), Step::Receive { max: 2 });
    s.received(b"OK");
    assert_eq!(s.step(), Step::Done(Ok(())));
}

#[test]
fn a_full_journal_rings_and_waits_for_room() {
    let memory = memory(1);
    let journal = Journal::from_words(&memory).unwrap();
    let mut s: ClientSession<4, Journal<'_>> = ClientSession::new(AckMode::default());
    s.offer_journal(7, journal).unwrap();
    s.step();
    s.sent();
    s.received(b"JR");
    assert_eq!(s.step(), Step::Done(Ok(())));

    s.release(7, name(0), false).unwrap();
    assert!(
        matches!(s.step(), Step::Send(_)),
        "one frame is half of one"
    );
    s.sent();
    assert_eq!(s.step(), Step::Done(Ok(())));
    s.release(7, name(1), false).unwrap();
    assert_eq!(
        s.step(),
        Step::Receive { max: 2 },
        "full, and the doorbell already rung: wait for it"
    );
    journal.drain(|_| {}).unwrap();
    s.received(b"OK");
    assert!(
        matches!(s.step(), Step::Send(_)),
        "appended; half full again"
    );
    s.sent();
    assert_eq!(s.step(), Step::Done(Ok(())));
}

#[test]
fn a_declined_offer_is_taken_back_and_the_socket_goes_on() {
    for answer in [b"OK", b"NO"] {
        let memory = memory(4);
        let journal = Journal::from_words(&memory).unwrap();
        let mut s: ClientSession<4, Journal<'_>> = ClientSession::new(AckMode::default());
        s.offer_journal(7, journal).unwrap();
        s.step();
        s.sent();
        s.received(answer);
        assert_eq!(
            s.step(),
            Step::Send(&frames(&[Frame::release(7, SETUP)])[..]),
            "{answer:?}"
        );
        s.sent();
        assert_eq!(s.step(), Step::Done(Ok(())));
        assert!(!s.is_journaled());
        s.register(7, name(0)).unwrap();
        assert!(matches!(s.step(), Step::Send(_)));
    }
}

#[test]
fn an_offer_settles_first_and_a_refusal_there_withdraws_it() {
    let memory = memory(4);
    let journal = Journal::from_words(&memory).unwrap();
    let mut s: ClientSession<4, Journal<'_>> = ClientSession::new(AckMode::default());
    s.register(7, name(0)).unwrap();
    s.step();
    s.sent();
    s.step();
    s.offer_journal(7, journal).unwrap();
    assert_eq!(s.step(), Step::Receive { max: 2 });
    s.received(b"NO");
    assert_eq!(s.step(), Step::Done(Err(ClientFault::Refused(name(0)))));
    assert!(!s.is_journaled() && !s.is_broken());
    s.register(7, name(1)).unwrap();
    assert!(matches!(s.step(), Step::Send(_)), "no offer in the way");
}

// The session driven over transports: the in-process manager, and faults.

/// The tests' driver: a session and its transport; each call runs one
/// operation to its end.
struct Wired<T, const N: usize, M = NoJournal> {
    wire: T,
    session: ClientSession<N, M>,
}

/// What a transport call gave.
enum Got {
    Sent,
    Bytes(usize),
    Nothing,
}

impl<T: Transport, const N: usize, M: JournalMemory> Wired<T, N, M> {
    fn new(wire: T, mode: AckMode) -> Self {
        Self {
            wire,
            session: ClientSession::new(mode),
        }
    }

    fn call(
        &mut self,
        start: impl FnOnce(&mut ClientSession<N, M>) -> Result<(), Broken>,
    ) -> Result<(), ClientError<T::Error>> {
        start(&mut self.session)?;
        let mut buf = [0u8; READ_MAX];
        loop {
            let got = match self.session.step() {
                Step::Done(result) => return result.map_err(ClientError::Fault),
                Step::Send(bytes) | Step::Offer { bytes, .. } => {
                    self.wire.send_all(bytes).map(|()| Got::Sent)
                }
                Step::Receive { max } => self.wire.receive(&mut buf[..max]).map(Got::Bytes),
                Step::TryReceive { max } => self
                    .wire
                    .try_receive(&mut buf[..max])
                    .map(|n| n.map_or(Got::Nothing, Got::Bytes)),
            };
            match got {
                Ok(Got::Sent) => self.session.sent(),
                Ok(Got::Bytes(n)) => self.session.received(&buf[..n]),
                Ok(Got::Nothing) => self.session.nothing_ready(),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    self.session.failed();
                    return Err(ClientError::Transport(err));
                }
            }
        }
    }
}

#[test]
fn strict_mode_waits_for_each_ok() {
    let mut c: Wired<Wire, 8> = Wired::new(wire(), AckMode::Strict);
    for i in 0..5 {
        c.call(|s| s.register(7, name(i))).unwrap();
        assert_eq!(c.session.awaiting(), 0);
    }
    assert_eq!(c.wire.manager().name_count(), 5);
}

#[test]
fn pipelined_mode_keeps_replies_in_flight_within_the_window() {
    let mode = AckMode::Pipelined { max_in_flight: 4 };
    let mut c: Wired<Wire, 8> = Wired::new(wire(), mode);
    let mut max_seen = 0;
    for i in 0..20 {
        c.call(|s| s.register(7, name(i))).unwrap();
        max_seen = max_seen.max(c.session.awaiting());
    }
    // Replies are collected once half the window is in flight, so with an
    // instant manager the count hovers at half; it may never exceed the window.
    assert!((2..=4).contains(&max_seen), "in flight: {max_seen}");
    c.call(ClientSession::settle).unwrap();
    assert_eq!(c.session.awaiting(), 0);
    assert_eq!(c.wire.manager().stats().registrations, 20);
}

#[test]
fn deferrable_releases_ride_with_the_next_registration() {
    let mut c: Wired<Wire, 8> = Wired::new(wire(), AckMode::Strict);
    c.call(|s| s.register(7, name(0))).unwrap();
    c.call(|s| s.release(7, name(0), true)).unwrap();
    assert_eq!(c.session.queued(), 1);
    assert_eq!(
        c.wire.manager().name_state(&name(0)),
        Some(NameState::Held { registrations: 1 }),
        "not written yet"
    );
    c.call(|s| s.register(7, name(1))).unwrap();
    assert_eq!(c.session.queued(), 0);
    assert_eq!(
        c.wire.manager().name_state(&name(0)),
        Some(NameState::Released { dead: 0 })
    );
    assert_eq!(c.wire.manager().stats().releases, 1);
}

#[test]
fn releases_of_live_segments_are_written_at_once() {
    let mut c: Wired<Wire, 8> = Wired::new(wire(), AckMode::default());
    c.call(|s| s.register(7, name(0))).unwrap();
    c.call(|s| s.release(7, name(0), false)).unwrap();
    assert_eq!(c.session.queued(), 0);
    assert_eq!(c.wire.manager().stats().releases, 1);
}

#[test]
fn a_full_queue_of_deferred_releases_is_flushed() {
    let mut c: Wired<Wire, 4> = Wired::new(wire(), AckMode::Strict);
    for i in 0..3 {
        c.call(|s| s.register(7, name(i))).unwrap();
    }
    for i in 0..3 {
        c.call(|s| s.release(7, name(i), true)).unwrap();
        assert!(c.session.queued() < 3);
    }
    c.call(ClientSession::flush).unwrap();
    assert_eq!(c.wire.manager().stats().releases, 3);
}

#[test]
fn survives_split_writes_short_reads_and_interrupts() {
    for chunk in 1..9 {
        for mode in [AckMode::Strict, AckMode::Pipelined { max_in_flight: 5 }] {
            let faults = Faults {
                max_chunk: Some(chunk),
                interrupt_every: Some(2),
                eof_after: None,
            };
            let mut c: Wired<_, 8> = Wired::new(FaultInjector::new(wire(), faults), mode);
            for i in 0..12 {
                c.call(|s| s.register(7, name(i))).unwrap();
                if i % 3 == 0 {
                    c.call(|s| s.release(7, name(i), i % 2 == 0)).unwrap();
                }
            }
            c.call(ClientSession::settle).unwrap();
            let manager = c.wire.inner().manager();
            assert_eq!(manager.stats().registrations, 12, "chunk {chunk} {mode:?}");
            assert_eq!(manager.stats().releases, 4);
            assert_eq!(manager.stats().closed_for_cause, 0);
        }
    }
}

#[test]
fn end_of_file_mid_reply_is_reported_and_breaks_the_session() {
    let faults = Faults {
        eof_after: Some(3),
        ..Faults::default()
    };
    let mut c: Wired<_, 8> = Wired::new(FaultInjector::new(wire(), faults), AckMode::Strict);
    c.call(|s| s.register(7, name(0))).unwrap();
    let err = c.call(|s| s.register(7, name(1))).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Fault(ClientFault::ManagerClosed { unanswered: 1 })
        ),
        "{err:?}"
    );
    assert!(matches!(
        c.call(|s| s.register(7, name(2))),
        Err(ClientError::Poisoned)
    ));
}

#[test]
fn refusals_are_reported_without_breaking_the_session() {
    let tiny: Loopback<Fixed<2, 2>> = Loopback::new(ManagerConfig::default());
    let mut c: Wired<_, 4> = Wired::new(tiny, AckMode::Strict);
    c.call(|s| s.register(7, name(0))).unwrap();
    c.call(|s| s.register(7, name(1))).unwrap();
    let err = c.call(|s| s.register(7, name(2))).unwrap_err();
    assert!(matches!(err, ClientError::Fault(ClientFault::Refused(n)) if n == name(2)));
    c.call(|s| s.release(7, name(0), false)).unwrap();
    // The released name leaves the table at the next sweep, making room.
    c.wire.advance_to(Timestamp::from_millis(2_000));
    c.call(|s| s.register(7, name(3))).unwrap();
}

#[test]
fn pipelined_refusals_surface_on_a_later_call() {
    let tiny: Loopback<Fixed<2, 2>> = Loopback::new(ManagerConfig::default());
    let mut c: Wired<_, 4> = Wired::new(tiny, AckMode::Pipelined { max_in_flight: 4 });
    c.call(|s| s.register(7, name(0))).unwrap();
    c.call(|s| s.register(7, name(1))).unwrap();
    c.call(|s| s.register(7, name(2))).unwrap();
    let err = c.call(ClientSession::settle).unwrap_err();
    assert!(matches!(err, ClientError::Fault(ClientFault::Refused(n)) if n == name(2)));
}

/// A manager that says whatever the test scripts.
struct Scripted {
    replies: Vec<u8>,
}

#[derive(Debug)]
struct Never;

impl core::fmt::Display for Never {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("never")
    }
}

impl TransportError for Never {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

impl Transport for Scripted {
    type Error = Never;
    fn send_all(&mut self, _bytes: &[u8]) -> Result<(), Never> {
        Ok(())
    }
    fn receive(&mut self, buf: &mut [u8]) -> Result<usize, Never> {
        let n = buf.len().min(self.replies.len());
        buf[..n].copy_from_slice(&self.replies[..n]);
        self.replies.drain(..n);
        Ok(n)
    }
    fn try_receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Never> {
        if self.replies.is_empty() {
            Ok(None)
        } else {
            self.receive(buf).map(Some)
        }
    }
}

fn scripted(replies: &[u8]) -> Scripted {
    Scripted {
        replies: replies.to_vec(),
    }
}

#[test]
fn wrong_and_unsolicited_replies_are_detected() {
    let mut c: Wired<_, 4> = Wired::new(scripted(b"OX"), AckMode::Strict);
    let err = c.call(|s| s.register(7, name(0))).unwrap_err();
    assert!(matches!(err, ClientError::Fault(ClientFault::BadReply(BadReply(r))) if &r == b"OX"));

    let mode = AckMode::Pipelined { max_in_flight: 2 };
    let mut c: Wired<_, 4> = Wired::new(scripted(b"OKOK"), mode);
    c.call(|s| s.register(7, name(0))).unwrap();
    let err = c.call(ClientSession::poll).unwrap_err();
    assert!(
        matches!(err, ClientError::Fault(ClientFault::UnsolicitedReply)),
        "{err:?}"
    );
}

#[test]
fn a_crashed_pipelined_client_s_registrations_are_reaped() {
    let mut c: Wired<Wire, 8> = Wired::new(wire(), AckMode::default());
    for i in 0..3 {
        c.call(|s| s.register(7, name(i))).unwrap();
    }
    let mut wire = c.wire;
    for i in 0..3 {
        wire.create(name(i));
    }
    wire.disconnect();
    wire.advance_to(Timestamp::from_millis(1_000));
    assert_eq!(wire.unlinked(), 0, "grace period");
    wire.advance_to(Timestamp::from_millis(2_000));
    assert_eq!(wire.unlinked(), 3);
    assert!((0..3).all(|i| !wire.exists(&name(i))));
}

/// A session that offered `journal`, over a manager that reads it.
fn journaled<'j>(journal: Journal<'j>) -> Wired<Wire<'j>, 8, Journal<'j>> {
    let wire = Loopback::with_journal(ManagerConfig::default(), journal);
    let mut c = Wired::new(wire, AckMode::default());
    c.call(|s| s.offer_journal(7, journal)).unwrap();
    assert!(c.session.is_journaled());
    c
}

#[test]
fn with_a_journal_registrations_cost_no_write() {
    let memory = memory(64);
    let mut c = journaled(Journal::from_words(&memory).unwrap());
    let writes_before = c.wire.writes();
    for i in 0..20 {
        c.call(|s| s.register(7, name(i))).unwrap();
        c.call(|s| s.release(7, name(i), true)).unwrap();
    }
    assert_eq!(
        c.wire.writes(),
        writes_before + 1,
        "only the half-full doorbell"
    );
    c.call(ClientSession::settle).unwrap();
    let stats = c.wire.manager().stats();
    assert_eq!((stats.registrations, stats.releases), (20, 20));
    assert_eq!(stats.closed_for_cause, 0);
}

#[test]
fn a_full_journal_waits_for_the_manager_and_loses_nothing() {
    let memory = memory(2);
    let mut c = journaled(Journal::from_words(&memory).unwrap());
    for i in 0..30 {
        c.call(|s| s.register(7, name(i))).unwrap();
    }
    c.call(ClientSession::settle).unwrap();
    assert_eq!(c.wire.manager().stats().registrations, 30);
    assert_eq!(
        c.wire.manager().name_state(&name(29)),
        Some(NameState::Held { registrations: 1 })
    );
}

#[test]
fn journaled_registrations_of_a_crashed_client_are_reaped() {
    let memory = memory(64);
    let mut c = journaled(Journal::from_words(&memory).unwrap());
    for i in 0..3 {
        c.call(|s| s.register(7, name(i))).unwrap();
    }
    let mut wire = c.wire;
    assert_eq!(
        wire.manager().name_count(),
        0,
        "nothing read yet: no doorbell rang"
    );
    for i in 0..3 {
        wire.create(name(i));
    }
    wire.disconnect(); // the driver reads the journal before orphaning
    wire.advance_to(Timestamp::from_millis(2_100));
    assert_eq!(wire.unlinked(), 3);
}

#[test]
fn names_the_manager_does_not_take_go_through_the_socket_and_are_refused() {
    let memory = memory(64);
    let journal = Journal::from_words(&memory).unwrap();
    let mine = NamePrefix::new(b"/mine_").unwrap();
    let config = ManagerConfig {
        name_prefix: Some(mine),
        ..ManagerConfig::default()
    };
    let mut c: Wired<Wire, 8, Journal<'_>> =
        Wired::new(Loopback::with_journal(config, journal), AckMode::default());
    c.call(|s| s.offer_journal(7, journal)).unwrap();
    assert!(c.session.is_journaled());
    assert_eq!(
        journal.advertised(),
        Ok(crate::journal::Accepted::by_manager(Some(mine), None))
    );

    let ours = SegmentName::generate(&mine, 7, 1, 0).unwrap();
    let writes = c.wire.writes();
    c.call(|s| s.register(7, ours)).unwrap();
    assert_eq!(c.wire.writes(), writes, "a name it takes is journaled");

    // A name outside its prefix is written to the socket and answered `NO`,
    // so the caller hears of it before it creates the segment.
    c.call(|s| s.register(7, name(0))).unwrap();
    assert_eq!(
        c.wire.writes(),
        writes + 1,
        "a foreign name takes the socket"
    );
    let err = c.call(ClientSession::settle).unwrap_err();
    assert!(
        matches!(err, ClientError::Fault(ClientFault::Refused(refused)) if refused == name(0)),
        "{err:?}"
    );
    // Its release goes the way its registration went; the connection goes on.
    c.call(|s| s.release(7, name(0), false)).unwrap();
    c.call(|s| s.release(7, ours, true)).unwrap();
    c.call(ClientSession::settle).unwrap();
    let stats = c.wire.manager().stats();
    assert_eq!((stats.registrations, stats.releases), (1, 1));
    assert_eq!(stats.closed_for_cause, 0);
}

#[test]
fn an_advertisement_that_does_not_parse_journals_every_name() {
    let memory = memory(4);
    let journal = Journal::from_words(&memory).unwrap();
    let mut s: ClientSession<4, Journal<'_>> = ClientSession::new(AckMode::default());
    s.offer_journal(7, journal).unwrap();
    assert!(matches!(s.step(), Step::Offer { .. }));
    s.sent();
    // A hostile manager writes garbage over the header's manager words.
    for word in &memory[4..16] {
        word.store(0xffff_ffff, core::sync::atomic::Ordering::Relaxed);
    }
    s.received(b"JR");
    assert_eq!(s.step(), Step::Done(Ok(())));
    assert!(s.is_journaled());
    s.register(7, name(0)).unwrap();
    assert_eq!(s.step(), Step::TryReceive { max: READ_MAX });
    s.nothing_ready();
    assert_eq!(s.step(), Step::Done(Ok(())), "journaled, as before adverts");
    assert_eq!(journal.unread(), Ok(1));
}

#[test]
fn a_manager_without_journals_declines_and_the_socket_path_goes_on() {
    let memory = memory(8);
    let journal = Journal::from_words(&memory).unwrap();
    let mut c: Wired<Wire, 8, Journal<'_>> = Wired::new(wire(), AckMode::default());
    c.call(|s| s.offer_journal(7, journal)).unwrap();
    assert!(!c.session.is_journaled());
    c.call(|s| s.register(7, name(0))).unwrap();
    c.call(ClientSession::settle).unwrap();
    assert_eq!(c.wire.manager().stats().registrations, 1);
}

#[test]
fn pytorchs_ok_to_the_offer_is_a_decline_taken_back() {
    // PyTorch's manager answers OK to anything; the client then releases the
    // reserved name so that manager's table forgets it.
    let memory = memory(8);
    let journal = Journal::from_words(&memory).unwrap();
    let mut c: Wired<_, 4, Journal<'_>> = Wired::new(scripted(b"OK"), AckMode::Strict);
    c.call(|s| s.offer_journal(7, journal)).unwrap();
    assert!(!c.session.is_journaled());
}
