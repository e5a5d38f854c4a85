//! The client's end: the write end of the request pipe and the read end of
//! the reply pipe of one private manager.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use libshm_core::transport::{ErrorKind, Transport, TransportError};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

/// What went wrong on a pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeError {
    /// The manager's end is closed: it exited or was killed. Found by `op`
    /// (`poll` before a write, or a write that failed with `EPIPE`).
    Closed {
        /// The call that found out.
        op: &'static str,
    },
    /// The manager did not answer within the reply timeout.
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// A system call failed.
    Os {
        /// The call (`read`, `write`, `poll`, `pipe`, ...).
        op: &'static str,
        /// The OS error.
        errno: Errno,
    },
}

impl PipeError {
    pub(crate) fn os(op: &'static str) -> impl FnOnce(Errno) -> Self {
        move |errno| match errno {
            Errno::PIPE => Self::Closed { op },
            errno => Self::Os { op, errno },
        }
    }
}

impl fmt::Display for PipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed { op } => write!(f, "{op}: the manager's end of the pipe is closed"),
            Self::TimedOut { after } => write!(f, "the manager did not answer within {after:?}"),
            Self::Os { op, errno } => write!(f, "{op}: {}", std::io::Error::from(*errno)),
        }
    }
}

impl std::error::Error for PipeError {}

impl TransportError for PipeError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Closed { .. } => ErrorKind::Closed,
            Self::TimedOut { .. } => ErrorKind::TimedOut,
            Self::Os { errno, .. } => match *errno {
                Errno::INTR => ErrorKind::Interrupted,
                Errno::AGAIN => ErrorKind::TimedOut,
                _ => ErrorKind::Other,
            },
        }
    }
}

/// A client's pair of pipe ends to its private manager.
///
/// Both ends should be close-on-exec (the launcher makes them so), so a child
/// that execs another program never keeps the manager waiting. A child forked
/// without exec shares them until it drops its copy; the manager sees end of
/// file only when every copy of the request end is closed.
///
/// # SIGPIPE
/// Writing to a pipe whose reader is gone raises `SIGPIPE`, whose default
/// action kills the writer. Rust executables and CPython ignore `SIGPIPE`
/// from the start, so there the write fails with `EPIPE`, reported as
/// [`PipeError::Closed`]. Before every write we also ask `poll` whether the
/// manager's end is already closed (`POLLERR`/`POLLHUP`) and fail without
/// writing if so; that covers the usual case (the manager died a while ago)
/// even in a host that keeps the default action. It cannot cover a manager
/// that dies between the `poll` and the `write`: an embedder whose process
/// does not ignore `SIGPIPE` must ignore it (or block it in the writing
/// thread) to be safe. Sockets avoid all this with `MSG_NOSIGNAL`; pipes have
/// no such flag.
#[derive(Debug)]
pub struct PipeTransport {
    requests: OwnedFd,
    replies: OwnedFd,
    reply_timeout: Option<Duration>,
}

impl PipeTransport {
    /// A transport writing frames to `requests` (the write end of the
    /// manager's request pipe) and reading replies from `replies` (the read
    /// end of its reply pipe). `reply_timeout` bounds how long a blocking
    /// receive waits; `None` waits for ever.
    ///
    /// Makes `replies` non-blocking, which [`Transport::try_receive`] relies
    /// on; `requests` stays as it is (a blocking write is what `send_all`
    /// wants).
    pub fn new(
        requests: OwnedFd,
        replies: OwnedFd,
        reply_timeout: Option<Duration>,
    ) -> Result<Self, PipeError> {
        rustix::io::ioctl_fionbio(&replies, true).map_err(PipeError::os("ioctl(FIONBIO)"))?;
        Ok(Self {
            requests,
            replies,
            reply_timeout,
        })
    }

    /// The end requests are written to.
    pub fn requests(&self) -> BorrowedFd<'_> {
        self.requests.as_fd()
    }

    /// The end replies are read from.
    pub fn replies(&self) -> BorrowedFd<'_> {
        self.replies.as_fd()
    }

    /// Whether the manager's end of the request pipe is closed, without
    /// waiting. `Ok(false)` does not promise the next write succeeds: the
    /// manager may die in between.
    pub fn is_closed(&self) -> Result<bool, PipeError> {
        let mut fds = [PollFd::new(&self.requests, PollFlags::empty())];
        // POLLERR and POLLHUP are reported whatever was asked for; a pipe's
        // write end reports POLLERR once no reader is left.
        match rustix::event::poll(&mut fds, Some(&Timespec::default())) {
            Ok(_) => Ok(fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)),
            Err(Errno::INTR) => Ok(false),
            Err(errno) => Err(PipeError::Os { op: "poll", errno }),
        }
    }

    fn wait_writable(&self) -> Result<(), PipeError> {
        let mut fds = [PollFd::new(&self.requests, PollFlags::OUT)];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(Errno::INTR) => Ok(()),
            Err(errno) => Err(PipeError::Os { op: "poll", errno }),
        }
    }
}

impl Transport for PipeTransport {
    type Error = PipeError;

    fn send_all(&mut self, mut bytes: &[u8]) -> Result<(), PipeError> {
        // Fail with a typed error instead of writing into a pipe nobody reads
        // (see the module doc on SIGPIPE for the race this leaves).
        if self.is_closed()? {
            return Err(PipeError::Closed { op: "poll" });
        }
        while !bytes.is_empty() {
            match rustix::io::write(&self.requests, bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(Errno::INTR) => continue,
                // Someone made our end non-blocking; wait as a blocking write would.
                Err(Errno::AGAIN) => self.wait_writable()?,
                Err(errno) => return Err(PipeError::os("write")(errno)),
            }
        }
        Ok(())
    }

    fn receive(&mut self, buf: &mut [u8]) -> Result<usize, PipeError> {
        // A timeout too large for a timespec is as good as none.
        let timeout = self.reply_timeout.and_then(|t| Timespec::try_from(t).ok());
        loop {
            let mut fds = [PollFd::new(&self.replies, PollFlags::IN)];
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(0) => {
                    return Err(PipeError::TimedOut {
                        after: self.reply_timeout.unwrap_or_default(),
                    });
                }
                Ok(_) => {}
                Err(errno) => return Err(PipeError::os("poll")(errno)),
            }
            // Readable, or the manager closed its end (then read returns 0).
            match rustix::io::read(&self.replies, &mut *buf) {
                Ok(n) => return Ok(n),
                // Another reader of a shared end (a forked child) took the bytes.
                Err(Errno::AGAIN) => continue,
                Err(errno) => return Err(PipeError::os("read")(errno)),
            }
        }
    }

    fn try_receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, PipeError> {
        match rustix::io::read(&self.replies, buf) {
            Ok(n) => Ok(Some(n)),
            Err(Errno::AGAIN) => Ok(None),
            Err(errno) => Err(PipeError::os("read")(errno)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use libshm_core::ack::ACK;
    use libshm_core::frame::{FRAME_LEN, Frame};
    use libshm_core::name::SegmentName;
    use rustix::pipe::{PipeFlags, pipe_with};

    /// Registers `name` as PyTorch's client does: writes the frame and waits
    /// for the `OK`, however the reply is split.
    pub(crate) fn register(transport: &mut PipeTransport, name: SegmentName) {
        register_as(transport, 7, name);
    }

    /// Registers `name` as `pid` and waits for the `OK`.
    pub(crate) fn register_as(transport: &mut PipeTransport, pid: i32, name: SegmentName) {
        transport
            .send_all(&Frame::register(pid, name).encode())
            .unwrap();
        let (mut reply, mut got) = ([0u8; 2], 0);
        while got < reply.len() {
            let n = transport.receive(&mut reply[got..]).unwrap();
            assert_ne!(n, 0, "the manager closed before answering");
            got += n;
        }
        assert_eq!(reply, ACK);
    }

    /// A client transport and the manager's two ends, as the launcher wires them.
    fn wired(timeout: Option<Duration>) -> (PipeTransport, OwnedFd, OwnedFd) {
        let (request_read, request_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let (reply_read, reply_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let transport = PipeTransport::new(request_write, reply_read, timeout).unwrap();
        (transport, request_read, reply_write)
    }

    #[test]
    fn replies_split_in_halves_and_end_of_file_mid_reply_come_through() {
        let (mut transport, requests, replies) = wired(Some(Duration::from_secs(5)));
        let manager = std::thread::spawn(move || {
            let mut buf = [0u8; FRAME_LEN];
            let mut got = 0;
            while got < FRAME_LEN {
                got += rustix::io::read(&requests, &mut buf[got..]).unwrap();
            }
            rustix::io::write(&replies, b"O").unwrap();
            // Both ends close here: the manager died mid-reply.
        });
        let name = SegmentName::new(b"/torch_1_2_1").unwrap();
        transport
            .send_all(&Frame::register(7, name).encode())
            .unwrap();
        let mut buf = [0u8; 2];
        assert_eq!(transport.receive(&mut buf), Ok(1));
        assert_eq!(&buf[..1], b"O");
        manager.join().unwrap();
        assert_eq!(transport.receive(&mut buf), Ok(0));
        assert!(transport.is_closed().unwrap());
    }

    #[test]
    fn writing_to_a_dead_manager_is_closed_not_a_signal() {
        let (mut transport, requests, replies) = wired(None);
        drop((requests, replies));
        assert_eq!(transport.is_closed(), Ok(true));
        let err = transport.send_all(&[0u8; FRAME_LEN]).unwrap_err();
        assert_eq!(err, PipeError::Closed { op: "poll" });
        assert_eq!(err.kind(), ErrorKind::Closed);
        let mut buf = [0u8; 2];
        assert_eq!(transport.receive(&mut buf), Ok(0));
        assert_eq!(transport.try_receive(&mut buf), Ok(Some(0)));
    }

    #[test]
    fn a_write_that_loses_the_race_maps_epipe_to_closed() {
        // The poll cannot see this one coming; the write's EPIPE (SIGPIPE is
        // ignored in Rust executables) must still come out as Closed.
        let (request_read, request_write) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        drop(request_read);
        let errno = rustix::io::write(&request_write, b"x").unwrap_err();
        let err = PipeError::os("write")(errno);
        assert_eq!(err, PipeError::Closed { op: "write" });
        assert_eq!(err.kind(), ErrorKind::Closed);
    }

    #[test]
    fn a_silent_manager_times_out_and_try_receive_never_waits() {
        let (mut transport, _requests, _replies) = wired(Some(Duration::from_millis(50)));
        let mut buf = [0u8; 2];
        assert_eq!(transport.try_receive(&mut buf), Ok(None));
        let started = std::time::Instant::now();
        let err = transport.receive(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
