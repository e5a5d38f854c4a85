//! The client's end: a Unix stream socket connected to a manager's handle.

use std::fmt;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use libshm_core::handshake::ManagerHandle;
use libshm_core::transport::{ErrorKind, Transport, TransportError};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType, sockopt,
};

/// A failed socket call: which one, and the OS's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketError {
    /// The call that failed (`connect`, `send`, ...).
    pub op: &'static str,
    /// The OS error.
    pub errno: Errno,
}

impl SocketError {
    pub(crate) fn new(op: &'static str) -> impl FnOnce(Errno) -> Self {
        move |errno| Self { op, errno }
    }
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, std::io::Error::from(self.errno))
    }
}

impl std::error::Error for SocketError {}

impl TransportError for SocketError {
    fn kind(&self) -> ErrorKind {
        match self.errno {
            Errno::INTR => ErrorKind::Interrupted,
            Errno::AGAIN | Errno::TIMEDOUT => ErrorKind::TimedOut,
            Errno::PIPE | Errno::CONNRESET | Errno::NOTCONN | Errno::CONNREFUSED | Errno::NOENT => {
                ErrorKind::Closed
            }
            _ => ErrorKind::Other,
        }
    }
}

/// A connection to a manager over its Unix socket.
#[derive(Debug)]
pub struct UnixTransport {
    fd: OwnedFd,
}

impl UnixTransport {
    /// Connects to the manager at `handle`. The socket is close-on-exec, so
    /// exec'd children never inherit it. `reply_timeout` bounds how long a
    /// blocking receive waits for the manager (PyTorch's client waits 1 s).
    pub fn connect(
        handle: &ManagerHandle,
        reply_timeout: Option<Duration>,
    ) -> Result<Self, SocketError> {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(SocketError::new("socket"))?;
        let address =
            SocketAddrUnix::new(handle.as_bytes()).map_err(SocketError::new("address"))?;
        loop {
            match rustix::net::connect(&fd, &address) {
                Err(Errno::INTR) => continue,
                other => break other.map_err(SocketError::new("connect"))?,
            }
        }
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, reply_timeout)
            .map_err(SocketError::new("setsockopt"))?;
        Ok(Self { fd })
    }

    /// Changes how long a blocking receive waits for the manager (see
    /// [`UnixTransport::connect`]).
    pub fn set_reply_timeout(&self, reply_timeout: Option<Duration>) -> Result<(), SocketError> {
        sockopt::set_socket_timeout(&self.fd, sockopt::Timeout::Recv, reply_timeout)
            .map_err(SocketError::new("setsockopt"))
    }

    /// Writes `bytes` with `fd` attached (`SCM_RIGHTS`): how a client hands
    /// its journal memory to the manager along with the offer frame.
    pub fn send_with_fd(&mut self, bytes: &[u8], fd: BorrowedFd<'_>) -> Result<(), SocketError> {
        let fds = [fd];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(SocketError {
                op: "sendmsg",
                errno: Errno::NOBUFS,
            });
        }
        let sent = loop {
            match rustix::net::sendmsg(
                &self.fd,
                &[IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(n) => break n,
                Err(Errno::INTR) => continue,
                Err(errno) => {
                    return Err(SocketError {
                        op: "sendmsg",
                        errno,
                    });
                }
            }
        };
        // The descriptor went with the first byte; the rest is plain data.
        self.send_all(&bytes[sent..])
    }

    /// Writes what fits of `bytes` without waiting; returns how many bytes
    /// that was (0 when the socket's buffer is full). For a last word on a
    /// connection being abandoned, which must not wait for a stalled peer.
    pub fn try_send(&mut self, bytes: &[u8]) -> Result<usize, SocketError> {
        loop {
            match rustix::net::send(&self.fd, bytes, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(n) => return Ok(n),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(0),
                Err(errno) => return Err(SocketError { op: "send", errno }),
            }
        }
    }

    /// Wraps a connected stream socket (one end of a `socketpair`, say).
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd }
    }
}

impl AsFd for UnixTransport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Transport for UnixTransport {
    type Error = SocketError;

    fn send_all(&mut self, mut bytes: &[u8]) -> Result<(), SocketError> {
        while !bytes.is_empty() {
            // NOSIGNAL: a dead manager is an error to report, not a SIGPIPE.
            match rustix::net::send(&self.fd, bytes, SendFlags::NOSIGNAL) {
                Ok(n) => bytes = &bytes[n..],
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(SocketError { op: "send", errno }),
            }
        }
        Ok(())
    }

    /// A signal ends the wait with `EINTR` whatever `SA_RESTART` says (the
    /// socket has a timeout); the wait goes on for what is left of the
    /// timeout, so that signals coming faster than it (a profiler's) cannot
    /// keep it from ever expiring, as retrying with the whole timeout did.
    /// What is left is waited for in `poll`, not set on the socket: the
    /// timeout is every handle's on it (a `dup`, a fork's copy).
    fn receive(&mut self, buf: &mut [u8]) -> Result<usize, SocketError> {
        let began = Instant::now();
        match rustix::net::recv(&self.fd, &mut *buf, RecvFlags::empty()) {
            Err(Errno::INTR) => {}
            other => return other.map(|(n, _)| n).map_err(SocketError::new("recv")),
        }
        let timeout = sockopt::socket_timeout(&self.fd, sockopt::Timeout::Recv)
            .map_err(SocketError::new("getsockopt"))?;
        loop {
            let left = timeout.map(|t| t.saturating_sub(began.elapsed()));
            if left.is_some_and(|left| left.is_zero()) {
                return Err(SocketError {
                    op: "recv",
                    errno: Errno::AGAIN,
                });
            }
            // Too long for a `Timespec`: as good as for ever.
            let wait = left.and_then(|left| rustix::event::Timespec::try_from(left).ok());
            let mut ready = [rustix::event::PollFd::new(
                &self.fd,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut ready, wait.as_ref()) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(errno) => return Err(SocketError { op: "poll", errno }),
            }
            match rustix::net::recv(&self.fd, &mut *buf, RecvFlags::DONTWAIT) {
                // Nothing yet, interrupted again, or taken by another reader
                // of the socket: wait for what is left.
                Err(Errno::AGAIN | Errno::INTR) => continue,
                other => return other.map(|(n, _)| n).map_err(SocketError::new("recv")),
            }
        }
    }

    fn try_receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, SocketError> {
        match rustix::net::recv(&self.fd, buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) => Ok(Some(n)),
            Err(Errno::AGAIN) => Ok(None),
            Err(errno) => Err(SocketError { op: "recv", errno }),
        }
    }
}

/// Whether `fd`'s peer has closed it: nothing sent will be read. (Not a
/// peer that only stopped writing: it may still read.)
pub(crate) fn peer_hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut ready = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::HUP,
    )];
    let now = rustix::event::Timespec::default();
    matches!(rustix::event::poll(&mut ready, Some(&now)), Ok(n) if n > 0)
}

/// Bytes sent on `fd` that its peer has not read yet (`SIOCOUTQ`); zero if
/// the kernel does not say.
pub(crate) fn unread_by_peer(fd: BorrowedFd<'_>) -> usize {
    // SAFETY: `TIOCOUTQ` (`SIOCOUTQ`) writes one `c_int` and reads nothing.
    let getter = unsafe {
        rustix::ioctl::Getter::<{ libc::TIOCOUTQ as rustix::ioctl::Opcode }, libc::c_int>::new()
    };
    // SAFETY: the getter's opcode and output type match, as above.
    let queued = unsafe { rustix::ioctl::ioctl(fd, getter) };
    queued.map_or(0, |queued| usize::try_from(queued).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    fn timed_receive(transport: &mut UnixTransport) -> (Result<usize, SocketError>, Duration) {
        let began = Instant::now();
        let mut buf = [0u8; 2];
        (transport.receive(&mut buf), began.elapsed())
    }

    /// A timeout set on the socket before it was wrapped bounds the wait,
    /// or a client of a manager that never answers waits for ever. (A wait
    /// in `poll`, tried, would have to be given it.)
    #[test]
    fn a_receive_times_out_as_the_wrapped_socket_said() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut transport = UnixTransport::from_fd(ours.into());
        let (result, waited) = timed_receive(&mut transport);
        assert_eq!(result.unwrap_err().kind(), ErrorKind::TimedOut);
        assert!(
            waited >= Duration::from_millis(90) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }

    #[test]
    fn a_changed_reply_timeout_bounds_the_next_receive() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut transport = UnixTransport::from_fd(ours.into());
        transport
            .set_reply_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let (result, waited) = timed_receive(&mut transport);
        assert_eq!(result.unwrap_err().kind(), ErrorKind::TimedOut);
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    /// An answer that comes while the receive waits is returned, and the
    /// peer's close reads as the end (0), not as a timeout.
    #[test]
    fn a_receive_returns_a_late_answer_and_then_the_end() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut transport = UnixTransport::from_fd(ours.into());
        transport
            .set_reply_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let answerer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            theirs.write_all(b"OK").unwrap();
            std::thread::sleep(Duration::from_millis(50));
        });
        let mut buf = [0u8; 2];
        assert_eq!(transport.receive(&mut buf).unwrap(), 2);
        assert_eq!(&buf, b"OK");
        answerer.join().unwrap();
        let (result, waited) = timed_receive(&mut transport);
        assert_eq!(result.unwrap(), 0);
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
}
