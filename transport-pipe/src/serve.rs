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
//! it, [`ClientProcess`]): when it exits, its holds end, as a Unix manager
//! ends a watched process's, and its segments are reaped unless a live
//! process maps them. The manager takes that pidfd before its handshake
//! ([`ClientProcess::hold`]), while the launcher still waits for it, so a
//! manager stopped or starved after the handshake still holds the right
//! process. A client that ended before even that (a wrapper printed a
//! handshake for the manager, which was stopped before it looked) is known
//! by the pid its launcher named: its frames, read late, end their holds as
//! a dead client's.

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
use rustix::process::Pid;

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

/// Which process is the manager's one client: frames with its pid end their
/// holds when it exits, even while a child it forked keeps the pipes open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientProcess {
    /// Whatever process is the manager's parent when it looks (`getppid`),
    /// for launchers that do not name their client. A manager that looks
    /// only after its client died (stopped or starved since its start, before
    /// its handshake) takes its new parent, init or a subreaper, for its
    /// client; a launcher that died before the handshake never wrote a frame.
    Parent,
    /// The process with this pid (in the manager's pid namespace), which
    /// launched the manager: `shm-manager --client-pid`, which
    /// [`ChildPipes`](crate::ChildPipes) passes. While it is the manager's
    /// parent, it is watched. Once no process has that pid, or the one that
    /// has it started after the manager (the pid was reused), the client has
    /// ended: its frames read from then on end their holds as those of a
    /// client that died. A live process that started before the manager but
    /// is not its parent (a launcher that starts it through a forking
    /// wrapper) is watched: taking a live client for a dead one would unlink
    /// what it still uses.
    Launcher(Pid),
}

impl ClientProcess {
    /// Looks for the client process now and holds it (a pidfd, or the
    /// knowledge that it has ended) for [`serve`].
    ///
    /// Call it before the handshake goes out. The launcher waits for the
    /// handshake before it writes a frame, forks or exits, so a client held
    /// before it is the launcher itself, however long the manager is then
    /// stopped or starved. Looked for after it, a client that died meanwhile
    /// would have left only its pid (and, without `--client-pid`, a new
    /// parent to mistake for it).
    ///
    /// It never fails the start. Where the client cannot be told apart from
    /// another process (no pidfds on this kernel or under this seccomp
    /// filter, a parent in another pid namespace, a parent that died before
    /// it was held), nothing is held: its frames' holds last as long as the
    /// pipes, as any other pid's. That costs only early cleanup, never a
    /// segment in use, so the manager serves on (and logs why) rather than
    /// print `ERROR:` and leave its client with no manager where pipe
    /// managers otherwise work.
    pub fn hold(self) -> HeldClient {
        match Client::find(self) {
            Ok(client) => HeldClient(Some(client)),
            Err(why) => {
                tracing::info!(
                    "not watching the client process ({why}); \
                     its names are held as long as its pipes are open"
                );
                HeldClient(None)
            }
        }
    }
}

/// Why the client process cannot be held.
#[derive(Clone, Copy, Debug)]
enum Unheld {
    /// `getppid` is 0: the parent is another pid namespace's, and pids named
    /// there mean nothing here.
    ParentElsewhere,
    /// `pidfd_open` failed (before Linux 5.3, or refused by a sandbox).
    NoPidfd(Errno),
    /// The parent exited before its pidfd was taken; the parent now is not
    /// the client.
    Orphaned,
}

impl fmt::Display for Unheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ParentElsewhere => f.write_str("its parent is in another pid namespace"),
            Self::NoPidfd(errno) => write!(f, "pidfd_open: {}", std::io::Error::from(*errno)),
            Self::Orphaned => f.write_str("the parent exited before it could be watched"),
        }
    }
}

/// The manager's client process as [`ClientProcess::hold`] found it, for
/// [`serve`].
#[derive(Debug)]
pub struct HeldClient(Option<Client>);

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
/// `client` is that process, held before the handshake went out.
pub fn serve<N: Namespace>(
    ends: ManagerEnds,
    client: HeldClient,
    config: ManagerConfig,
    namespace: &mut N,
) -> Summary {
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
        client: client.0,
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
        let watched_pidfd = driver
            .client
            .as_ref()
            .filter(|client| client.watched)
            .and_then(Client::pidfd);
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
        let client_at = watched_pidfd.map(|pidfd| {
            fds[watched] = PollFd::new(pidfd, PollFlags::IN);
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

/// The client process, as the manager found it at start.
#[derive(Debug)]
struct Client {
    pid: i32,
    process: Process,
    /// Whether some hold depends on it (the manager asked to watch it).
    watched: bool,
    /// Frames of it were read after it died, and its end is still to be
    /// reported (see `Effects::pid_is_gone`).
    gone_unreported: bool,
}

/// What the manager holds of its client's process.
#[derive(Debug)]
enum Process {
    /// A pidfd, which reports its exit.
    Open(OwnedFd),
    /// It ended before the manager could open one.
    EndedBeforeStart,
}

impl Client {
    /// The client `which` names, or why it cannot be told apart from another
    /// process: its holds then last as long as the pipes, as those of any
    /// other pid.
    fn find(which: ClientProcess) -> Result<Self, Unheld> {
        let (pid, process) = match which {
            ClientProcess::Parent => {
                let pid = rustix::process::getppid().ok_or(Unheld::ParentElsewhere)?;
                let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                    .map_err(Unheld::NoPidfd)?;
                // Orphaned before the pidfd was taken: its pid is init's (or a
                // subreaper's), never the client's.
                if rustix::process::getppid() != Some(pid) {
                    return Err(Unheld::Orphaned);
                }
                (pid, Process::Open(pidfd))
            }
            ClientProcess::Launcher(pid) => (pid, Self::launcher(pid)?),
        };
        if matches!(process, Process::EndedBeforeStart) {
            tracing::info!(
                pid = pid.as_raw_nonzero().get(),
                "the client ended before this manager started watching it; \
                 its frames end their holds as they are read"
            );
        }
        Ok(Self {
            pid: pid.as_raw_nonzero().get(),
            process,
            watched: false,
            gone_unreported: false,
        })
    }

    /// The process that launched this manager as `pid`, or why that cannot
    /// be judged.
    fn launcher(pid: Pid) -> Result<Process, Unheld> {
        // A parent in another pid namespace (`getppid` is 0): `pid` is
        // another namespace's, and means nothing here.
        rustix::process::getppid().ok_or(Unheld::ParentElsewhere)?;
        let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            Ok(pidfd) => pidfd,
            // Nobody has the pid the client had: it ended.
            Err(Errno::SRCH) => return Ok(Process::EndedBeforeStart),
            Err(errno) => return Err(Unheld::NoPidfd(errno)),
        };
        // Still our parent after the open: the pidfd names it, for a parent
        // stays ours until it exits, and its pid is free only after that.
        if rustix::process::getppid() == Some(pid) {
            return Ok(Process::Open(pidfd));
        }
        // Not our parent: it exited since (we were reparented; if it is a
        // zombie still, its pidfd reports the exit at once), its pid went to
        // a process that started after us, or a wrapper came between us.
        Ok(match started_after_this_process(pid) {
            // Read while the pidfd's process was alive, so of that process.
            Some(true) if !has_exited(&pidfd) => Process::EndedBeforeStart,
            _ => Process::Open(pidfd),
        })
    }

    /// The pidfd to poll for the client's exit, if it is still to come.
    fn pidfd(&self) -> Option<&OwnedFd> {
        match &self.process {
            Process::Open(pidfd) => Some(pidfd),
            Process::EndedBeforeStart => None,
        }
    }

    fn has_exited(&self) -> bool {
        self.pidfd().is_none_or(has_exited)
    }
}

fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    matches!(rustix::event::poll(&mut fds, Some(&Timespec::default())), Ok(n) if n > 0)
}

/// Whether the process `pid` started after this one, by the start times in
/// `/proc`; `None` where they cannot be read (no `/proc`, or `pid` exited).
fn started_after_this_process(pid: Pid) -> Option<bool> {
    let start = |who: &str| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{who}/stat")).ok()?;
        // The command name, in parentheses, may hold spaces and parentheses
        // itself; the fields after it start at the third (the state), and the
        // start time is the 22nd.
        let (_, fields) = stat.rsplit_once(')')?;
        fields.split_whitespace().nth(22 - 3)?.parse().ok()
    };
    Some(start(&pid.as_raw_nonzero().to_string())? > start("self")?)
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
    use crate::transport::tests::{register, register_as};
    use libshm_core::frame::Frame;
    use libshm_core::name::SegmentName;
    use libshm_core::namespace::{Observed, Unlinked};
    use libshm_core::transport::Transport;
    use rustix::pipe::{PipeFlags, pipe_with};
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

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
        let client = ClientProcess::Parent.hold();
        let thread = std::thread::spawn(move || {
            serve(ends, client, ManagerConfig::default(), &mut namespace)
        });
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
        let client = ClientProcess::Parent.hold();
        let thread = std::thread::spawn(move || serve(ends, client, config, &mut namespace));
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

    /// A manager serving `client` in a thread, reaping orphans 50 ms after
    /// their holders end, and the client's transport.
    fn manager_for(
        names: &Names,
        client: ClientProcess,
    ) -> (std::thread::JoinHandle<Summary>, PipeTransport) {
        let (request_read, request_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let (reply_read, reply_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let ends = ManagerEnds::new(request_read, reply_write).unwrap();
        let mut namespace = names.clone();
        let config = ManagerConfig {
            reap_grace: Some(Duration::from_millis(50)),
            ..ManagerConfig::default()
        };
        let client = client.hold();
        let thread = std::thread::spawn(move || serve(ends, client, config, &mut namespace));
        let transport =
            PipeTransport::new(request_write, reply_read, Some(Duration::from_secs(5))).unwrap();
        (thread, transport)
    }

    fn unlinked_within(names: &Names, name: SegmentName, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if names.unlinked().contains(&name) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn pid(raw: u32) -> Pid {
        Pid::from_raw(i32::try_from(raw).unwrap()).unwrap()
    }

    #[test]
    fn a_launcher_gone_before_the_manager_looked_ends_its_holds_as_they_are_read() {
        // A process that has exited and been reaped: nobody has its pid.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let launcher = gone.id();
        gone.wait().unwrap();
        let names = Names::default();
        let (thread, mut transport) = manager_for(&names, ClientProcess::Launcher(pid(launcher)));
        names.create(name(1));
        register_as(&mut transport, launcher as i32, name(1));
        // The pipe stays open (as a child the client forked keeps it).
        assert!(
            unlinked_within(&names, name(1), Duration::from_secs(5)),
            "the dead launcher's name outlived it while the pipe was open"
        );
        drop(transport);
        assert_eq!(thread.join().unwrap().ended, Ended::EndOfFile);
    }

    #[test]
    fn a_launchers_pid_taken_by_a_process_younger_than_the_manager_is_not_the_client() {
        // Started after this process, which serves here: whoever has the
        // launcher's pid now, it is not the process that launched us.
        let mut younger = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let reused = younger.id();
        let names = Names::default();
        let (thread, mut transport) = manager_for(&names, ClientProcess::Launcher(pid(reused)));
        names.create(name(2));
        register_as(&mut transport, reused as i32, name(2));
        let reaped = unlinked_within(&names, name(2), Duration::from_secs(5));
        let _ = younger.kill();
        let _ = younger.wait();
        assert!(
            reaped,
            "a process younger than the manager was taken for its client"
        );
        drop(transport);
        thread.join().unwrap();
    }

    #[test]
    fn a_live_launcher_older_than_the_manager_is_watched_even_if_not_its_parent() {
        // Init: alive, older than everything, and not this process's parent
        // (as a launcher with a forking wrapper between it and the manager).
        let names = Names::default();
        let (thread, mut transport) = manager_for(&names, ClientProcess::Launcher(pid(1)));
        names.create(name(3));
        register_as(&mut transport, 1, name(3));
        assert!(
            !unlinked_within(&names, name(3), Duration::from_millis(500)),
            "a live client's name was reaped"
        );
        drop(transport);
        assert_eq!(thread.join().unwrap().ended, Ended::EndOfFile);
        assert_eq!(names.unlinked(), [name(3)], "reaped at the end of file");
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
