use super::*;
use crate::fault::{FaultInjector, Faults};
use crate::loopback::Loopback;
use crate::manager::{ManagerConfig, NameState};
use crate::name::NamePrefix;
use crate::storage::Fixed;
use crate::time::Timestamp;
use std::vec::Vec;

type Wire = Loopback<Fixed<64, 4>>;

fn name(i: u64) -> SegmentName {
    SegmentName::generate(&NamePrefix::torch(), 7, 1, i).unwrap()
}

fn wire() -> Wire {
    Loopback::new(ManagerConfig::default())
}

#[test]
fn strict_mode_waits_for_each_ok() {
    let mut client: Client<Wire, 8> = Client::new(wire(), AckMode::Strict);
    for i in 0..5 {
        client.register(7, name(i)).unwrap();
        assert_eq!(client.session().awaiting(), 0);
    }
    assert_eq!(client.transport().manager().name_count(), 5);
}

#[test]
fn pipelined_mode_keeps_replies_in_flight_within_the_window() {
    let mode = AckMode::Pipelined { max_in_flight: 4 };
    let mut client: Client<Wire, 8> = Client::new(wire(), mode);
    let mut max_seen = 0;
    for i in 0..20 {
        client.register(7, name(i)).unwrap();
        max_seen = max_seen.max(client.session().awaiting());
    }
    // Replies are collected once half the window is in flight, so with an
    // instant manager the count hovers at half; it may never exceed the window.
    assert!((2..=4).contains(&max_seen), "in flight: {max_seen}");
    client.settle().unwrap();
    assert_eq!(client.session().awaiting(), 0);
    assert_eq!(client.transport().manager().stats().registrations, 20);
}

#[test]
fn deferrable_releases_ride_with_the_next_registration() {
    let mut client: Client<Wire, 8> = Client::new(wire(), AckMode::Strict);
    client.register(7, name(0)).unwrap();
    client.release(7, name(0), true).unwrap();
    assert_eq!(client.session().queued(), 1);
    assert_eq!(
        client.transport().manager().name_state(&name(0)),
        Some(NameState::Held { registrations: 1 }),
        "not written yet"
    );
    client.register(7, name(1)).unwrap();
    assert_eq!(client.session().queued(), 0);
    assert_eq!(
        client.transport().manager().name_state(&name(0)),
        Some(NameState::Released { dead: 0 })
    );
    assert_eq!(client.transport().manager().stats().releases, 1);
}

#[test]
fn releases_of_live_segments_are_written_at_once() {
    let mut client: Client<Wire, 8> = Client::new(wire(), AckMode::default());
    client.register(7, name(0)).unwrap();
    client.release(7, name(0), false).unwrap();
    assert_eq!(client.session().queued(), 0);
    assert_eq!(client.transport().manager().stats().releases, 1);
}

#[test]
fn a_full_queue_of_deferred_releases_is_flushed() {
    let mut client: Client<Wire, 4> = Client::new(wire(), AckMode::Strict);
    for i in 0..3 {
        client.register(7, name(i)).unwrap();
    }
    for i in 0..3 {
        client.release(7, name(i), true).unwrap();
        assert!(client.session().queued() < 3);
    }
    client.flush().unwrap();
    assert_eq!(client.transport().manager().stats().releases, 3);
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
            let mut client: Client<_, 8> = Client::new(FaultInjector::new(wire(), faults), mode);
            for i in 0..12 {
                client.register(7, name(i)).unwrap();
                if i % 3 == 0 {
                    client.release(7, name(i), i % 2 == 0).unwrap();
                }
            }
            client.settle().unwrap();
            let manager = client.transport().inner().manager();
            assert_eq!(manager.stats().registrations, 12, "chunk {chunk} {mode:?}");
            assert_eq!(manager.stats().releases, 4);
            assert_eq!(manager.stats().closed_for_cause, 0);
        }
    }
}

#[test]
fn end_of_file_mid_reply_is_reported_and_poisons_the_client() {
    let faults = Faults {
        eof_after: Some(3),
        ..Faults::default()
    };
    let mut client: Client<_, 8> = Client::new(FaultInjector::new(wire(), faults), AckMode::Strict);
    client.register(7, name(0)).unwrap();
    let err = client.register(7, name(1)).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Fault(ClientFault::ManagerClosed { unanswered: 1 })
        ),
        "{err:?}"
    );
    assert!(matches!(
        client.register(7, name(2)),
        Err(ClientError::Poisoned)
    ));
}

#[test]
fn refusals_are_reported_without_poisoning() {
    let tiny: Loopback<Fixed<2, 2>> = Loopback::new(ManagerConfig::default());
    let mut client: Client<_, 4> = Client::new(tiny, AckMode::Strict);
    client.register(7, name(0)).unwrap();
    client.register(7, name(1)).unwrap();
    let err = client.register(7, name(2)).unwrap_err();
    assert!(matches!(err, ClientError::Fault(ClientFault::Refused(n)) if n == name(2)));
    client.release(7, name(0), false).unwrap();
    // The released name leaves the table at the next sweep, making room.
    client
        .transport_mut()
        .advance_to(Timestamp::from_millis(2_000));
    client.register(7, name(3)).unwrap();
}

#[test]
fn pipelined_refusals_surface_on_a_later_call() {
    let tiny: Loopback<Fixed<2, 2>> = Loopback::new(ManagerConfig::default());
    let mut client: Client<_, 4> = Client::new(tiny, AckMode::Pipelined { max_in_flight: 4 });
    client.register(7, name(0)).unwrap();
    client.register(7, name(1)).unwrap();
    client.register(7, name(2)).unwrap();
    let err = client.settle().unwrap_err();
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

#[test]
fn wrong_and_unsolicited_replies_are_detected() {
    let mut client: Client<_, 4> = Client::new(
        Scripted {
            replies: b"OX".to_vec(),
        },
        AckMode::Strict,
    );
    let err = client.register(7, name(0)).unwrap_err();
    assert!(matches!(err, ClientError::Fault(ClientFault::BadReply(BadReply(r))) if &r == b"OX"));

    let mode = AckMode::Pipelined { max_in_flight: 2 };
    let mut client: Client<_, 4> = Client::new(
        Scripted {
            replies: b"OKOK".to_vec(),
        },
        mode,
    );
    client.register(7, name(0)).unwrap();
    let err = client.poll().unwrap_err();
    assert!(
        matches!(err, ClientError::Fault(ClientFault::UnsolicitedReply)),
        "{err:?}"
    );
}

#[test]
fn a_crashed_pipelined_client_s_registrations_are_reaped() {
    let mut client: Client<Wire, 8> = Client::new(wire(), AckMode::default());
    for i in 0..3 {
        client.register(7, name(i)).unwrap();
    }
    let mut wire = client.transport;
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

/// Journal memory that lives as long as the test binary, without leaking:
/// each call takes a fresh slot of a static pool.
fn leaked_journal(capacity: usize) -> crate::journal::Journal<'static> {
    use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    const WORDS: usize = crate::journal::journal_len(64) / 4;
    const SLOTS: usize = 16;
    static POOL: [[AtomicU32; WORDS]; SLOTS] =
        [const { [const { AtomicU32::new(0) }; WORDS] }; SLOTS];
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    assert!(capacity <= 64);
    let slot = &POOL[NEXT.fetch_add(1, Ordering::Relaxed)];
    crate::journal::Journal::from_words(&slot[..crate::journal::journal_len(capacity) / 4]).unwrap()
}

fn journaled(capacity: usize) -> Client<Wire, 8> {
    let journal = leaked_journal(capacity);
    let wire = Loopback::with_journal(ManagerConfig::default(), journal);
    let mut client: Client<Wire, 8> = Client::new(wire, AckMode::default());
    let accepted = client
        .attach_journal(7, journal, |t, bytes| t.send_all(bytes))
        .unwrap();
    assert!(accepted);
    client
}

#[test]
fn with_a_journal_registrations_cost_no_write() {
    let mut client = journaled(64);
    let writes_before = client.transport().writes();
    for i in 0..20 {
        client.register(7, name(i)).unwrap();
        client.release(7, name(i), true).unwrap();
    }
    assert_eq!(
        client.transport().writes(),
        writes_before + 1,
        "only the half-full doorbell"
    );
    client.settle().unwrap();
    let stats = client.transport().manager().stats();
    assert_eq!((stats.registrations, stats.releases), (20, 20));
    assert_eq!(stats.closed_for_cause, 0);
}

#[test]
fn a_full_journal_waits_for_the_manager_and_loses_nothing() {
    let mut client = journaled(2);
    for i in 0..30 {
        client.register(7, name(i)).unwrap();
    }
    client.settle().unwrap();
    assert_eq!(client.transport().manager().stats().registrations, 30);
    assert_eq!(
        client.transport().manager().name_state(&name(29)),
        Some(NameState::Held { registrations: 1 })
    );
}

#[test]
fn journaled_registrations_of_a_crashed_client_are_reaped() {
    let mut client = journaled(64);
    for i in 0..3 {
        client.register(7, name(i)).unwrap();
    }
    let mut wire = client.transport;
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
fn a_manager_without_journals_declines_and_the_socket_path_goes_on() {
    let journal = leaked_journal(8);
    let mut client: Client<Wire, 8> = Client::new(wire(), AckMode::default());
    assert!(
        !client
            .attach_journal(7, journal, |t, bytes| t.send_all(bytes))
            .unwrap()
    );
    client.register(7, name(0)).unwrap();
    client.settle().unwrap();
    assert_eq!(client.transport().manager().stats().registrations, 1);
}

#[test]
fn pytorchs_ok_to_the_offer_is_a_decline_taken_back() {
    // PyTorch's manager answers OK to anything; the client then releases the
    // reserved name so that manager's table forgets it.
    let journal = leaked_journal(8);
    let mut client: Client<_, 4> = Client::new(
        Scripted {
            replies: b"OK".to_vec(),
        },
        AckMode::Strict,
    );
    assert!(
        !client
            .attach_journal(7, journal, |t, bytes| t.send_all(bytes))
            .unwrap()
    );
    assert!(client.session().journal().is_none());
}
