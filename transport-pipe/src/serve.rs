//! The manager's side: one client, two pipe ends, one `poll` loop.
//!
//! It owns the file descriptors and nothing else; every decision is the core
//! [`Manager`]'s. Unlike the Unix manager it has exactly one client, given to
//! it at birth, and its life is that client's: when the request pipe reports
//! end of file (every copy of the client's end is closed: it exited, was
//! killed, or dropped its transport), the manager unlinks everything it still
//! knows, as a Unix manager does at shutdown, and [`serve`] returns.
//!
//! A child the client forked holds copies of the client's pipe end, and
//! holds off that end of file for as long as it lives. So the manager also
//! watches the client process itself (a pidfd of the process that started
//! it): when it exits, its holds end, as a Unix manager ends a watched
//! process's, and its segments are reaped unless a live process maps them.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use libshm_core::manager::{
    Chore, CloseReason, ConnId, ConnectError, Effects, Manager, ManagerConfig, Note, Peer,
    Severity, Stats, Status,
};
use libshm_core::namespace::Namespace;
use libshm_core::storage::Growable;
use libshm_core::time::Timestamp;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::{Errno, FdFlags};

/// Replies queued for a client that does not read them, before it is cut off.
const MAX_REPLY_BACKLOG: usize = 1 << 20;

/// The manager's two pipe ends: it reads frames from one and writes replies
/// to the other.
#[derive(Debug)]
pub struct ManagerEnds {
    requests: OwnedFd,
    replies: OwnedFd,
}

/// Why descriptors a manager was started with cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InheritError {
    /// The same descriptor was named for both ends.
    SameFd {
        /// The descriptor.
        fd: RawFd,
    },
    /// Nothing is open at this descriptor: the manager was not started by a
    /// pipe launcher (or was given the wrong numbers).
    NotOpen {
        /// The descriptor.
        fd: RawFd,
    },
    /// Preparing the descriptor failed.
    Setup {
        /// The descriptor.
        fd: RawFd,
        /// The call (`fcntl`, `ioctl`).
        op: &'static str,
        /// The OS error.
        errno: Errno,
    },
}

impl fmt::Display for InheritError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SameFd { fd } => {
                write!(f, "fd {fd} cannot be both the request and the reply end")
            }
            Self::NotOpen { fd } => write!(
                f,
                "fd {fd} is not open; a pipe manager is started by its client, with its pipes as known fds"
            ),
            Self::Setup { fd, op, errno } => {
                write!(f, "{op} on fd {fd}: {}", std::io::Error::from(*errno))
            }
        }
    }
}

impl std::error::Error for InheritError {}

impl ManagerEnds {
    /// The read end of the request pipe and the write end of the reply pipe.
    /// Makes both close-on-exec and non-blocking (a client that stops reading
    /// its replies must not wedge the manager).
    pub fn new(requests: OwnedFd, replies: OwnedFd) -> Result<Self, InheritError> {
        for fd in [&requests, &replies] {
            prepare(fd.as_fd())?;
        }
        Ok(Self { requests, replies })
    }

    /// Takes ownership of descriptors inherited across `exec` (the launcher
    /// puts them at [`REQUEST_FD`](crate::REQUEST_FD) and
    /// [`REPLY_FD`](crate::REPLY_FD)), after checking they are open.
    ///
    /// # Safety
    /// Nothing else in the process may own or use `requests` or `replies`:
    /// call this at the start of `main`, before anything opens a file that
    /// could land on those numbers had they been closed.
    pub unsafe fn inherited(requests: RawFd, replies: RawFd) -> Result<Self, InheritError> {
        if requests == replies {
            return Err(InheritError::SameFd { fd: requests });
        }
        for fd in [requests, replies] {
            if fd < 0 {
                return Err(InheritError::NotOpen { fd });
            }
            // SAFETY: the borrow only lives for this fcntl, which fails with
            // EBADF rather than misbehaving if nothing is open at `fd`.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            if rustix::io::fcntl_getfd(borrowed).is_err() {
                return Err(InheritError::NotOpen { fd });
            }
        }
        // SAFETY: both are open (checked above), distinct, and by the
        // caller's promise owned by nothing else, so each OwnedFd is their
        // sole owner and closes them exactly once.
        let (requests, replies) = unsafe {
            (
                OwnedFd::from_raw_fd(requests),
                OwnedFd::from_raw_fd(replies),
            )
        };
        Self::new(requests, replies)
    }
}

fn prepare(fd: BorrowedFd<'_>) -> Result<(), InheritError> {
    use std::os::fd::AsRawFd;
    let setup = |op| {
        move |errno| InheritError::Setup {
            fd: fd.as_raw_fd(),
            op,
            errno,
        }
    };
    // Inherited through exec, so not close-on-exec yet; nothing we might
    // start later should keep our client's pipes open.
    let flags = rustix::io::fcntl_getfd(fd).map_err(setup("fcntl(F_GETFD)"))?;
    rustix::io::fcntl_setfd(fd, flags | FdFlags::CLOEXEC).map_err(setup("fcntl(F_SETFD)"))?;
    rustix::io::ioctl_fionbio(fd, true).map_err(setup("ioctl(FIONBIO)"))
}

/// How the client's session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The request pipe reached end of file: the client exited, was killed,
    /// or dropped its transport.
    EndOfFile,
    /// The manager cut the client off for misbehaving.
    ClosedForCause(CloseReason),
    /// The client stopped reading its replies.
    NotReadingReplies,
    /// The manager refused the client (a configuration allowing no client).
    Refused(ConnectError),
    /// A system call on the pipes failed.
    Failed {
        /// The call.
        op: &'static str,
        /// The OS error.
        errno: Errno,
    },
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EndOfFile => f.write_str("the client closed its pipe"),
            Self::ClosedForCause(reason) => write!(f, "the client was cut off: {reason}"),
            Self::NotReadingReplies => f.write_str("the client stopped reading its replies"),
            Self::Refused(err) => write!(f, "the client was refused: {err}"),
            Self::Failed { op, errno } => write!(f, "{op}: {}", std::io::Error::from(*errno)),
        }
    }
}

/// What the loop did, for the exit log.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// The manager's counters at exit.
    pub stats: Stats,
    /// How the client's session ended.
    pub ended: Ended,
}

/// Serves the one client on `ends` until it goes, then unlinks every name
/// still known and returns.
///
/// From `config`, the reap grace, frame timeout, name prefix and name limit
/// apply. The shutdown timeout, linger, silence timeout, owner uid and
/// connection limit do not: the manager has one client, handed to it by
/// whoever started it (there are no credentials to check on a pipe, and
/// nobody else can reach it), and finishes as soon as that client goes.
/// A client cut off for misbehaving (only a broken client of ours can be: the
/// pipe is private) ends the session the same way. The client is the process
/// that started this one: frames with its pid end their holds when it exits,
/// even while the pipe stays open; any other pid's last as long as the pipe.
pub fn serve<N: Namespace>(ends: ManagerEnds, config: ManagerConfig, namespace: &mut N) -> Summary {
    let config = ManagerConfig {
        shutdown_after: Duration::ZERO,
        linger: Duration::ZERO,
        silence_timeout: None,
        owner_uid: None,
        max_connections: 1,
        ..config
    };
    // Timestamps count from here.
    let clock = Instant::now();
    let mut manager: Manager<Growable> =
        Manager::new(config, Timestamp::from_duration(clock.elapsed()));
    let mut driver = Driver {
        chores: VecDeque::new(),
        backlog: Vec::new(),
        replies_closed: false,
        cut: None,
        client: Client::parent(),
    };
    let ended = match manager.connect(Peer::default(), Timestamp::from_duration(clock.elapsed())) {
        Ok(conn) => {
            let ended = run(&ends, conn, &mut manager, &mut driver, namespace, clock);
            manager.disconnect(conn, Timestamp::from_duration(clock.elapsed()), &mut driver);
            ended
        }
        Err(err) => Ended::Refused(err),
    };
    tracing::debug!("client gone: {ended}");
    // No client is left, and neither the shutdown timeout nor the linger
    // apply: this is the manager's shutdown, unlinking every name it knows.
    loop {
        let now = Timestamp::from_duration(clock.elapsed());
        let status = manager.tick(now, &mut driver);
        driver.work(&mut manager, namespace, now);
        if status == Status::Finished {
            break;
        }
        if let Some(at) = manager.next_wakeup() {
            std::thread::sleep(now.until(at).min(Duration::from_millis(100)));
        }
    }
    let stats = manager.stats();
    tracing::info!(?stats, "manager finished");
    Summary { stats, ended }
}

fn run<N: Namespace>(
    ends: &ManagerEnds,
    conn: ConnId,
    manager: &mut Manager<Growable>,
    driver: &mut Driver,
    namespace: &mut N,
    clock: Instant,
) -> Ended {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Timestamp::from_duration(clock.elapsed());
        if manager.next_wakeup().is_some_and(|at| at <= now) {
            manager.tick(now, driver);
        }
        driver.work(manager, namespace, now);
        if let Some(reason) = driver.cut.take() {
            return Ended::ClosedForCause(reason);
        }

        let timeout = manager.next_wakeup().map(|at| {
            Timespec::try_from(now.until(at)).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        let watched_client = driver.client.as_ref().filter(|client| client.watched);
        // The requests, then what else is watched this round; the unused
        // slots (copies of the first) are left out of the poll.
        let mut fds = [
            PollFd::new(&ends.requests, PollFlags::IN),
            PollFd::new(&ends.requests, PollFlags::IN),
            PollFd::new(&ends.requests, PollFlags::IN),
        ];
        let mut watched = 1;
        // Watch the reply end only while replies wait for room: once the
        // client's read end is gone it would report POLLERR for ever.
        let replies_at = (!driver.backlog.is_empty()).then(|| {
            fds[watched] = PollFd::new(&ends.replies, PollFlags::OUT);
            watched += 1;
            watched - 1
        });
        let client_at = watched_client.map(|client| {
            fds[watched] = PollFd::new(&client.pidfd, PollFlags::IN);
            watched += 1;
            watched - 1
        });
        match rustix::event::poll(&mut fds[..watched], timeout.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(errno) => return Ended::Failed { op: "poll", errno },
        }
        let requests = fds[0].revents();
        let replies = replies_at.map_or(PollFlags::empty(), |at| fds[at].revents());
        let client_exited = client_at.is_some_and(|at| !fds[at].revents().is_empty());
        let now = Timestamp::from_duration(clock.elapsed());

        if client_exited
            && let Some(ended) = end_client(ends, conn, manager, driver, namespace, &mut buf, now)
        {
            return ended;
        }

        // Requests first, always: a frame the client wrote just before dying
        // must be seen before its end of file, or what it names would leak.
        if requests.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            match rustix::io::read(&ends.requests, &mut buf) {
                Ok(0) => return Ended::EndOfFile,
                Ok(n) => manager.receive(conn, &buf[..n], now, driver),
                Err(Errno::AGAIN | Errno::INTR) => {}
                Err(errno) => return Ended::Failed { op: "read", errno },
            }
            driver.work(manager, namespace, now);
            if let Some(reason) = driver.cut.take() {
                return Ended::ClosedForCause(reason);
            }
            // Frames read after the client died (`pid_is_gone`): its end
            // follows them.
            let gone = driver.client.as_ref().is_some_and(|c| c.gone_unreported);
            if gone
                && let Some(ended) =
                    end_client(ends, conn, manager, driver, namespace, &mut buf, now)
            {
                return ended;
            }
        }
        if !driver.backlog.is_empty() || replies.intersects(PollFlags::ERR | PollFlags::HUP) {
            driver.flush(&ends.replies);
        }
        if driver.backlog.len() > MAX_REPLY_BACKLOG {
            return Ended::NotReadingReplies;
        }
    }
}

/// The client process ended: what it wrote before dying is read first, then
/// its end reported, once. `Some` if the session ended meanwhile.
fn end_client<N: Namespace>(
    ends: &ManagerEnds,
    conn: ConnId,
    manager: &mut Manager<Growable>,
    driver: &mut Driver,
    namespace: &mut N,
    buf: &mut [u8],
    now: Timestamp,
) -> Option<Ended> {
    let ended = read_all_queued(ends, conn, manager, driver, buf, now);
    if let Some(client) = driver.client.as_mut() {
        client.watched = false;
        client.gone_unreported = false;
        let pid = client.pid;
        manager.pid_exited(pid, now, driver);
    }
    driver.work(manager, namespace, now);
    ended
}

/// Reads every request queued now; `Some` if the session ended meanwhile.
fn read_all_queued(
    ends: &ManagerEnds,
    conn: ConnId,
    manager: &mut Manager<Growable>,
    driver: &mut Driver,
    buf: &mut [u8],
    now: Timestamp,
) -> Option<Ended> {
    loop {
        match rustix::io::read(&ends.requests, &mut *buf) {
            Ok(0) => return Some(Ended::EndOfFile),
            Ok(n) => manager.receive(conn, &buf[..n], now, driver),
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => return None,
            Err(errno) => return Some(Ended::Failed { op: "read", errno }),
        }
        if let Some(reason) = driver.cut.take() {
            return Some(Ended::ClosedForCause(reason));
        }
    }
}

/// The client process, through a pidfd taken at start.
struct Client {
    pid: i32,
    pidfd: OwnedFd,
    /// Whether some hold depends on it (the manager asked to watch it).
    watched: bool,
    /// Frames of it were read after it died, and its end is still to be
    /// reported (see `Effects::pid_is_gone`).
    gone_unreported: bool,
}

impl Client {
    /// The process that started this manager: its one client. `None` where
    /// pidfds are unavailable, or it has already gone (the manager is then
    /// an orphan; its holds last as long as the pipes, as before).
    fn parent() -> Option<Self> {
        let pid = rustix::process::getppid()?;
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
        // Orphaned before the pidfd was taken: its pid is init's (or a
        // subreaper's), never the client's.
        if rustix::process::getppid() != Some(pid) {
            return None;
        }
        Some(Self {
            pid: pid.as_raw_nonzero().get(),
            pidfd,
            watched: false,
            gone_unreported: false,
        })
    }

    fn has_exited(&self) -> bool {
        let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
        matches!(rustix::event::poll(&mut fds, Some(&Timespec::default())), Ok(n) if n > 0)
    }
}

/// Carries out the manager's effects on the reply pipe, and queues its chores.
struct Driver {
    chores: VecDeque<Chore>,
    backlog: Vec<u8>,
    /// The client's reply end is gone; replies are dropped, and requests are
    /// still read until end of file (they may register names to clean up).
    replies_closed: bool,
    cut: Option<CloseReason>,
    /// The client process, the one sender it trusts a pid from.
    client: Option<Client>,
}

impl Driver {
    /// Carries out the chores the manager asked for (and those their
    /// outcomes ask for).
    fn work<N: Namespace>(
        &mut self,
        manager: &mut Manager<Growable>,
        namespace: &mut N,
        now: Timestamp,
    ) {
        while let Some(chore) = self.chores.pop_front() {
            if let Err(err) = manager.perform(chore, namespace, now, self) {
                tracing::warn!("{chore:?} failed: {err}; will retry");
            }
        }
    }

    /// Writes as many queued replies as the pipe takes now.
    fn flush(&mut self, replies: &OwnedFd) {
        while !self.backlog.is_empty() {
            match rustix::io::write(replies, &self.backlog) {
                Ok(n) => {
                    self.backlog.drain(..n);
                }
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return,
                Err(errno) => {
                    // EPIPE (SIGPIPE is ignored in Rust executables): the
                    // client closed its read end.
                    tracing::debug!("reply failed: {errno}; reading requests until end of file");
                    self.replies_closed = true;
                    self.backlog = Vec::new();
                    return;
                }
            }
        }
    }
}

impl Effects for Driver {
    fn reply(&mut self, _conn: ConnId, reply: [u8; 2]) {
        if !self.replies_closed {
            self.backlog.extend_from_slice(&reply);
        }
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        tracing::warn!(conn = %conn, "cutting the client off: {reason}");
        self.cut = Some(reason);
    }

    fn chore(&mut self, chore: Chore) {
        self.chores.push_back(chore);
    }

    /// Only the client's own pid is watched: a frame with another pid (a
    /// child writing on the pipe it inherited) counts for the pipe.
    fn watch_pid(&mut self, _conn: ConnId, pid: i32) -> bool {
        match self.client.as_mut() {
            Some(client) if client.pid == pid && !client.has_exited() => {
                client.watched = true;
                true
            }
            _ => false,
        }
    }

    /// The client, dead before its frames were read: its end is reported
    /// once the rest of what it wrote has been read.
    fn pid_is_gone(&mut self, _conn: ConnId, pid: i32) -> bool {
        match self.client.as_mut() {
            Some(client) if client.pid == pid && client.has_exited() => {
                client.gone_unreported = true;
                true
            }
            _ => false,
        }
    }

    fn unwatch_pid(&mut self, pid: i32) {
        if let Some(client) = self.client.as_mut().filter(|client| client.pid == pid) {
            client.watched = false;
        }
    }

    fn note(&mut self, note: Note) {
        match note.severity() {
            Severity::Trace => tracing::trace!("{note}"),
            Severity::Debug => tracing::debug!("{note}"),
            Severity::Info => tracing::info!("{note}"),
            Severity::Warn => tracing::warn!("{note}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PipeTransport;
    use crate::transport::tests::register;
    use libshm_core::frame::Frame;
    use libshm_core::name::SegmentName;
    use libshm_core::namespace::{Observed, Unlinked};
    use libshm_core::transport::Transport;
    use rustix::pipe::{PipeFlags, pipe_with};
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    /// A namespace in memory that records what was unlinked.
    #[derive(Clone, Default)]
    struct Names(Arc<Mutex<(BTreeSet<SegmentName>, Vec<SegmentName>)>>);

    impl Names {
        fn create(&self, name: SegmentName) {
            self.0.lock().unwrap().0.insert(name);
        }
        fn unlinked(&self) -> Vec<SegmentName> {
            self.0.lock().unwrap().1.clone()
        }
    }

    impl Namespace for Names {
        type Error = std::convert::Infallible;
        fn observe(&mut self, name: &SegmentName) -> Result<Observed, Self::Error> {
            Ok(if self.0.lock().unwrap().0.contains(name) {
                Observed::Segment { refcount: 1 }
            } else {
                Observed::Absent
            })
        }
        fn unlink(&mut self, name: &SegmentName) -> Result<Unlinked, Self::Error> {
            let mut state = self.0.lock().unwrap();
            Ok(if state.0.remove(name) {
                state.1.push(*name);
                Unlinked::Removed
            } else {
                Unlinked::Absent
            })
        }
    }

    fn name(n: u32) -> SegmentName {
        SegmentName::new(format!("/torch_1_2_{n}").as_bytes()).unwrap()
    }

    /// A manager serving in a thread, and the client's two ends.
    fn manager(names: &Names) -> (std::thread::JoinHandle<Summary>, OwnedFd, OwnedFd) {
        let (request_read, request_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let (reply_read, reply_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let ends = ManagerEnds::new(request_read, reply_write).unwrap();
        let mut namespace = names.clone();
        let thread =
            std::thread::spawn(move || serve(ends, ManagerConfig::default(), &mut namespace));
        (thread, request_write, reply_read)
    }

    #[test]
    fn end_of_file_unlinks_what_the_client_still_held() {
        let names = Names::default();
        let (thread, requests, replies) = manager(&names);
        let mut transport =
            PipeTransport::new(requests, replies, Some(Duration::from_secs(5))).unwrap();
        for n in 0..3 {
            names.create(name(n));
            register(&mut transport, name(n));
        }
        // The client unlinked name 0 itself, then released it.
        names.0.lock().unwrap().0.remove(&name(0));
        transport
            .send_all(&Frame::release(7, name(0)).encode())
            .unwrap();
        drop(transport);
        let summary = thread.join().unwrap();
        assert_eq!(summary.ended, Ended::EndOfFile);
        assert_eq!(summary.stats.registrations, 3);
        assert_eq!(summary.stats.releases, 1);
        assert_eq!(names.unlinked(), [name(1), name(2)]);
    }

    #[test]
    fn a_frame_written_just_before_dying_is_still_cleaned_up() {
        let names = Names::default();
        let (thread, requests, replies) = manager(&names);
        names.create(name(9));
        // Write a registration and vanish without reading the reply.
        let frame = Frame::register(7, name(9)).encode();
        rustix::io::write(&requests, &frame).unwrap();
        drop((requests, replies));
        let summary = thread.join().unwrap();
        assert_eq!(summary.ended, Ended::EndOfFile);
        assert_eq!(summary.stats.registrations, 1);
        assert_eq!(names.unlinked(), [name(9)]);
    }

    #[test]
    fn a_malformed_frame_cuts_the_client_off_and_it_sees_end_of_file() {
        let names = Names::default();
        let (thread, requests, replies) = manager(&names);
        let mut transport =
            PipeTransport::new(requests, replies, Some(Duration::from_secs(5))).unwrap();
        names.create(name(1));
        register(&mut transport, name(1));
        transport.send_all(&[0xff; 68]).unwrap();
        let summary = thread.join().unwrap();
        assert!(
            matches!(
                summary.ended,
                Ended::ClosedForCause(CloseReason::Malformed(_))
            ),
            "{}",
            summary.ended
        );
        assert_eq!(names.unlinked(), [name(1)], "finished like a shutdown");
        let mut buf = [0u8; 2];
        assert_eq!(transport.receive(&mut buf), Ok(0));
        assert!(transport.is_closed().unwrap());
    }

    #[test]
    fn half_a_frame_left_past_the_frame_timeout_ends_the_session() {
        let names = Names::default();
        let (request_read, request_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let (reply_read, reply_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let ends = ManagerEnds::new(request_read, reply_write).unwrap();
        let mut namespace = names.clone();
        let config = ManagerConfig {
            frame_timeout: Some(Duration::from_millis(50)),
            ..ManagerConfig::default()
        };
        let thread = std::thread::spawn(move || serve(ends, config, &mut namespace));
        let mut transport =
            PipeTransport::new(request_write, reply_read, Some(Duration::from_secs(5))).unwrap();
        names.create(name(4));
        register(&mut transport, name(4));
        let half = Frame::register(7, name(5)).encode();
        rustix::io::write(transport.requests(), &half[..30]).unwrap();
        let summary = thread.join().unwrap();
        assert_eq!(
            summary.ended,
            Ended::ClosedForCause(CloseReason::StalledFrame)
        );
        assert_eq!(names.unlinked(), [name(4)]);
    }

    #[test]
    fn inherited_descriptors_must_be_open_and_distinct() {
        // The soft descriptor limit is the first number no descriptor can have.
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let closed = limit.map_or(i32::MAX, |n| i32::try_from(n).unwrap_or(i32::MAX));
        // SAFETY: nothing can be open at `closed`, so the call fails before
        // it takes ownership of anything.
        let err = unsafe { ManagerEnds::inherited(closed, 0) }.unwrap_err();
        assert_eq!(err, InheritError::NotOpen { fd: closed });
        // SAFETY: rejected before anything is borrowed or owned.
        let err = unsafe { ManagerEnds::inherited(5, 5) }.unwrap_err();
        assert_eq!(err, InheritError::SameFd { fd: 5 });
        // SAFETY: a negative number is rejected before anything is borrowed.
        let err = unsafe { ManagerEnds::inherited(-1, closed) }.unwrap_err();
        assert_eq!(err, InheritError::NotOpen { fd: -1 });
    }
}
