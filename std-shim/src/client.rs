//! The blocking driver of the core's client session.
//!
//! [`ClientSession`] decides what to write and when to wait; [`Client`] does
//! it over a [`Transport`], blocking in the transport's reads, retrying the
//! reads a signal interrupted. One operation runs to its end per call. The
//! links use it over their `Wire` (a Unix socket or pipes); benchmarks over a bare
//! socket.

use std::fmt;

use libshm_core::client::{AckMode, ClientError, ClientSession, READ_MAX, Step};
use libshm_core::frame::Frame;
use libshm_core::journal::{JournalMemory, NoJournal};
use libshm_core::name::SegmentName;
use libshm_core::transport::{ErrorKind, Transport, TransportError};

/// A [`ClientSession`] driven over a [`Transport`], with room for `N` queued
/// frames and unanswered registrations, and able to hand over a journal in
/// memory `M`.
pub struct Client<T: Transport, const N: usize = 64, M = NoJournal> {
    transport: T,
    session: ClientSession<N, M>,
}

impl<T: Transport, const N: usize, M: JournalMemory> Client<T, N, M> {
    /// A client over `transport`.
    pub fn new(transport: T, mode: AckMode) -> Self {
        Self {
            transport,
            session: ClientSession::new(mode),
        }
    }

    /// The session state.
    pub fn session(&self) -> &ClientSession<N, M> {
        &self.session
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Whether an earlier error made the connection unusable.
    pub fn is_poisoned(&self) -> bool {
        self.session.is_broken()
    }

    /// Registers `name` before the caller creates or opens it. In strict mode
    /// this returns once the manager said `OK`; pipelined, once the frame is
    /// written. Refusals seen in earlier replies are reported here too.
    pub fn register(&mut self, pid: i32, name: SegmentName) -> Result<(), ClientError<T::Error>> {
        self.session.register(pid, name)?;
        self.run(no_offer)
    }

    /// Tells the manager the caller no longer uses `name`. `deferrable` says
    /// the caller unlinked it itself, so the release may ride along with the
    /// next write.
    pub fn release(
        &mut self,
        pid: i32,
        name: SegmentName,
        deferrable: bool,
    ) -> Result<(), ClientError<T::Error>> {
        self.session.release(pid, name, deferrable)?;
        self.run(no_offer)
    }

    /// Writes deferred releases now.
    pub fn flush(&mut self) -> Result<(), ClientError<T::Error>> {
        self.session.flush()?;
        self.run(no_offer)
    }

    /// Flushes and waits until every registration has been answered (with a
    /// journal: until the manager has read every frame in it).
    pub fn settle(&mut self) -> Result<(), ClientError<T::Error>> {
        self.session.settle()?;
        self.run(no_offer)
    }

    /// Collects replies that have already arrived, without waiting, and
    /// reports any fault in them.
    pub fn poll(&mut self) -> Result<(), ClientError<T::Error>> {
        self.session.poll()?;
        self.run(no_offer)
    }

    /// Offers the journal in `memory` to the manager; `send` writes the offer
    /// with the memory attached (its file descriptor, over a Unix socket).
    /// Returns whether frames now go through the journal.
    pub fn offer_journal(
        &mut self,
        pid: i32,
        memory: M,
        send: impl FnOnce(&mut T, &[u8], &M) -> Result<(), T::Error>,
    ) -> Result<bool, ClientError<T::Error>> {
        self.session.offer_journal(pid, memory)?;
        let mut send = Some(send);
        self.run(|transport, bytes, memory| match send.take() {
            Some(send) => send(transport, bytes, memory),
            None => transport.send_all(bytes),
        })?;
        Ok(self.session.is_journaled())
    }

    /// Closes the connection, first telling its manager, as far as that
    /// goes without waiting, that the caller lets go of what it registered
    /// there: each of `releases` (frames for names registered on this
    /// connection) is committed to the journal if the manager took one (it
    /// reads a journal before it acts on the connection's end), else written
    /// with `try_send` (which writes what fits without waiting, 0 bytes if
    /// nothing does). The manager reads them in order, before the end of
    /// file. Returns whether all of them went; a full journal or socket
    /// buffer, or a broken connection, ends the attempt quietly (a frame cut
    /// short by a full buffer is dropped at the end of file).
    ///
    /// For a connection given up on while it may still be alive (a reply
    /// timed out): otherwise its manager ends those holds when it sees the
    /// connection close, and a hold ended by a close counts against the
    /// segment as a dead registration, though the caller, alive, holds the
    /// names on another connection.
    pub fn hand_back(
        mut self,
        releases: impl IntoIterator<Item = Frame>,
        mut try_send: impl FnMut(&mut T, &[u8]) -> Result<usize, T::Error>,
    ) -> bool {
        if let Some(journal) = self.session.journal() {
            return releases
                .into_iter()
                .all(|frame| journal.append(&frame.to_raw()).is_ok());
        }
        let bytes: Vec<u8> = releases.into_iter().flat_map(|f| f.encode()).collect();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match try_send(&mut self.transport, rest) {
                Ok(n) if n > 0 => rest = &rest[n..],
                _ => return false,
            }
        }
        true
    }

    /// Carries out the session's steps until the operation is done.
    fn run(
        &mut self,
        mut offer: impl FnMut(&mut T, &[u8], &M) -> Result<(), T::Error>,
    ) -> Result<(), ClientError<T::Error>> {
        let mut buf = [0u8; READ_MAX];
        loop {
            match self.session.step() {
                Step::Done(result) => return result.map_err(ClientError::Fault),
                Step::Send(bytes) => {
                    let written = self.transport.send_all(bytes);
                    self.wrote(written)?;
                }
                Step::Offer { bytes, memory } => {
                    let written = offer(&mut self.transport, bytes, memory);
                    self.wrote(written)?;
                }
                Step::Receive { max } => match self.transport.receive(&mut buf[..max]) {
                    Ok(n) => self.session.received(&buf[..n]),
                    Err(err) => self.read_failed(err)?,
                },
                Step::TryReceive { max } => match self.transport.try_receive(&mut buf[..max]) {
                    Ok(Some(n)) => self.session.received(&buf[..n]),
                    Ok(None) => self.session.nothing_ready(),
                    Err(err) => self.read_failed(err)?,
                },
            }
        }
    }

    /// A write is whole, or the stream is broken.
    fn wrote(&mut self, written: Result<(), T::Error>) -> Result<(), ClientError<T::Error>> {
        match written {
            Ok(()) => {
                self.session.sent();
                Ok(())
            }
            Err(err) => Err(self.broken(err)),
        }
    }

    /// A read a signal interrupted is tried again; any other failure breaks
    /// the stream.
    fn read_failed(&mut self, err: T::Error) -> Result<(), ClientError<T::Error>> {
        if err.kind() == ErrorKind::Interrupted {
            return Ok(());
        }
        Err(self.broken(err))
    }

    fn broken(&mut self, err: T::Error) -> ClientError<T::Error> {
        self.session.failed();
        ClientError::Transport(err)
    }
}

/// A client that offers no journal never writes an offer.
fn no_offer<T: Transport, M>(transport: &mut T, bytes: &[u8], _: &M) -> Result<(), T::Error> {
    transport.send_all(bytes)
}

impl<T: Transport + fmt::Debug, const N: usize, M: fmt::Debug> fmt::Debug for Client<T, N, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.transport)
            .field("session", &self.session)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    use libshm_core::client::ClientFault;
    use libshm_core::fault::{FaultInjector, Faults};
    use libshm_core::frame::FRAME_LEN;
    use libshm_core::journal::{Journal, journal_len};
    use libshm_core::loopback::Loopback;
    use libshm_core::manager::ManagerConfig;
    use libshm_core::storage::Fixed;
    use libshm_pipe::PipeTransport;
    use rustix::pipe::{PipeFlags, pipe_with};

    fn name(n: u32) -> SegmentName {
        SegmentName::new(format!("/torch_1_2_{n}").as_bytes()).unwrap()
    }

    /// A client's pipes to a manager thread that runs `manager` on its ends
    /// (requests, replies).
    fn piped<R: Send + 'static>(
        manager: impl FnOnce(OwnedFd, OwnedFd) -> R + Send + 'static,
    ) -> (PipeTransport, std::thread::JoinHandle<R>) {
        let (request_read, request_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let (reply_read, reply_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let transport =
            PipeTransport::new(request_write, reply_read, Some(Duration::from_secs(5))).unwrap();
        let thread = std::thread::spawn(move || manager(request_read, reply_write));
        (transport, thread)
    }

    /// A fake manager that reads `frames` frames (any way they are split)
    /// and answers each with `OK` written one byte at a time. Returns how
    /// many reads the frames took.
    fn answer_byte_by_byte(frames: usize) -> impl FnOnce(OwnedFd, OwnedFd) -> usize {
        move |requests, replies| {
            let mut buf = [0u8; FRAME_LEN];
            let mut total = 0;
            let mut reads = 0;
            while total < frames * FRAME_LEN {
                let want = (frames * FRAME_LEN - total).min(buf.len());
                let n = rustix::io::read(&requests, &mut buf[..want]).unwrap();
                assert_ne!(n, 0, "client closed early");
                reads += 1;
                let before = total / FRAME_LEN;
                total += n;
                for _ in before..total / FRAME_LEN {
                    for byte in *b"OK" {
                        rustix::io::write(&replies, &[byte]).unwrap();
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            reads
        }
    }

    #[test]
    fn frames_split_into_single_bytes_and_replies_split_in_halves_get_through() {
        let (transport, manager) = piped(answer_byte_by_byte(3));
        let faults = Faults {
            max_chunk: Some(1),
            interrupt_every: Some(3),
            ..Faults::default()
        };
        let mut client: Client<_> =
            Client::new(FaultInjector::new(transport, faults), AckMode::Strict);
        for n in 0..3 {
            client.register(7, name(n)).unwrap();
        }
        assert_eq!(client.session().awaiting(), 0);
        let reads = manager.join().unwrap();
        assert!(reads >= 3, "the manager saw the frames in {reads} read(s)");
    }

    #[test]
    fn pipelined_replies_are_collected_in_batches() {
        let (transport, manager) = piped(answer_byte_by_byte(40));
        let mut client: Client<_> = Client::new(transport, AckMode::Pipelined { max_in_flight: 8 });
        for n in 0..40 {
            client.register(7, name(n)).unwrap();
        }
        client.settle().unwrap();
        manager.join().unwrap();
        assert_eq!(client.session().awaiting(), 0);
    }

    #[test]
    fn end_of_file_in_the_middle_of_a_reply_is_a_typed_error_and_poisons() {
        let (transport, manager) = piped(|requests, replies| {
            let mut buf = [0u8; FRAME_LEN];
            let mut got = 0;
            while got < FRAME_LEN {
                got += rustix::io::read(&requests, &mut buf[got..]).unwrap();
            }
            rustix::io::write(&replies, b"O").unwrap();
            // Both ends close here: the manager died mid-reply.
        });
        let mut client: Client<_> = Client::new(transport, AckMode::Strict);
        let err = client.register(7, name(1)).unwrap_err();
        manager.join().unwrap();
        assert!(
            matches!(
                err,
                ClientError::Fault(ClientFault::ManagerClosed { unanswered: 1 })
            ),
            "{err}"
        );
        assert!(client.is_poisoned());
        assert!(matches!(
            client.register(7, name(2)),
            Err(ClientError::Poisoned)
        ));
    }

    /// A client over one end of a socket pair, and the other end.
    fn socket_pair() -> (
        Client<libshm_unix::UnixTransport>,
        std::os::unix::net::UnixStream,
    ) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let transport = libshm_unix::UnixTransport::from_fd(ours.into());
        (Client::new(transport, AckMode::default()), theirs)
    }

    fn try_send(
        socket: &mut libshm_unix::UnixTransport,
        bytes: &[u8],
    ) -> Result<usize, libshm_unix::SocketError> {
        socket.try_send(bytes)
    }

    #[test]
    fn holds_handed_back_on_a_socket_are_released_in_order_before_the_end_of_file() {
        use std::io::Read;
        let (client, mut manager) = socket_pair();
        let releases = [name(1), name(2), name(1)].map(|n| Frame::release(7, n));
        assert!(client.hand_back(releases, try_send));
        let mut bytes = Vec::new();
        manager.read_to_end(&mut bytes).unwrap();
        let frames: Vec<_> = bytes
            .chunks(FRAME_LEN)
            .map(|chunk| Frame::parse(chunk).unwrap())
            .collect();
        assert_eq!(frames, releases);
    }

    #[test]
    fn handing_back_on_a_socket_nobody_reads_gives_up_without_waiting() {
        let (mut client, manager) = socket_pair();
        // Fill the socket's buffers: the manager is stalled.
        let filler = [0u8; 4096];
        while client.transport_mut().try_send(&filler).unwrap() > 0 {}
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let all = client.hand_back([Frame::release(7, name(1))], try_send);
            done.send(all).unwrap();
        });
        let all = finished
            .recv_timeout(Duration::from_secs(10))
            .expect("handing back returned");
        assert!(!all, "nothing fit");
        drop(manager);
    }

    /// Memory for a journal of 16 frames.
    fn journal_words() -> Vec<std::sync::atomic::AtomicU32> {
        (0..journal_len(16) / 4)
            .map(|_| std::sync::atomic::AtomicU32::new(0))
            .collect()
    }

    /// A client over a loopback manager that takes `journal` when offered.
    fn over_loopback(journal: Journal<'_>) -> Client<Loopback<'_, Fixed<16, 4>>, 8, Journal<'_>> {
        let wire = Loopback::with_journal(ManagerConfig::default(), journal);
        Client::new(wire, AckMode::default())
    }

    #[test]
    fn holds_handed_back_with_a_journal_are_committed_to_it() {
        let memory = journal_words();
        let journal = Journal::from_words(&memory).unwrap();
        let mut client = over_loopback(journal);
        assert!(
            client
                .offer_journal(7, journal, |wire, bytes, _| wire.send_all(bytes))
                .unwrap()
        );
        client.register(7, name(1)).unwrap();
        client.settle().unwrap();
        assert_eq!(journal.unread().unwrap(), 0);
        let releases = [Frame::release(7, name(1))];
        let mut sent = 0;
        assert!(client.hand_back(releases, |_, bytes| {
            sent += bytes.len();
            Ok(bytes.len())
        }));
        assert_eq!(sent, 0, "nothing written to the socket");
        let mut frames = Vec::new();
        journal
            .drain(|raw| frames.push(Frame::parse(&raw).unwrap()))
            .unwrap();
        assert_eq!(frames, releases);
    }

    #[test]
    fn the_offer_is_written_with_its_memory_and_the_session_keeps_it() {
        let memory = journal_words();
        let journal = Journal::from_words(&memory).unwrap();
        let mut client = over_loopback(journal);
        let mut offers = 0;
        let accepted = client
            .offer_journal(7, journal, |wire, bytes, memory| {
                offers += 1;
                assert_eq!(memory.capacity(), 16);
                wire.send_all(bytes)
            })
            .unwrap();
        assert!(accepted && client.session().is_journaled());
        assert_eq!(offers, 1);
        let writes = client.transport().writes();
        for n in 0..4 {
            client.register(7, name(n)).unwrap();
        }
        assert_eq!(client.transport().writes(), writes, "no write per frame");
        client.settle().unwrap();
        assert_eq!(client.transport().manager().stats().registrations, 4);
    }
}
