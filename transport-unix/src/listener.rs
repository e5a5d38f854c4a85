//! The manager's listening socket, and who is on the other end of each accept.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use libshm_core::handshake::ManagerHandle;
use libshm_core::manager::Peer;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::rundir::RunDir;

/// Room for a burst of clients (PyTorch's manager allows 10 pending).
const BACKLOG: i32 = 512;

/// A non-blocking listening socket in its private directory.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    handle: ManagerHandle,
    // Dropped after `fd`: removes the socket file and the directory.
    dir: RunDir,
}

/// An accepted connection and the peer credentials the kernel recorded for it.
#[derive(Debug)]
pub struct Accepted {
    /// The connection, non-blocking and close-on-exec.
    pub fd: OwnedFd,
    /// Who connected, from `SO_PEERCRED`.
    pub peer: Peer,
    /// A pidfd of the process that connected (`SO_PEERPIDFD`, Linux 6.5+):
    /// what the manager reads of it under its pid is its own only while
    /// this says it runs.
    pub peer_pidfd: PeerPidfd,
}

/// What `SO_PEERPIDFD` gave.
#[derive(Debug)]
pub enum PeerPidfd {
    /// The connecting process's pidfd.
    Given(OwnedFd),
    /// The kernel has no such option (before 6.5): /proc at accept is all
    /// there is.
    Unsupported,
    /// The kernel has it and gave none: the peer is gone (before 6.16 a
    /// reaped peer gets `EINVAL`), or descriptors ran out. Nothing read
    /// under its pid now is known to be its.
    Refused,
}

impl Listener {
    /// Binds `manager.sock` inside `dir` and listens.
    pub fn bind(dir: RunDir) -> io::Result<Self> {
        let path = dir.socket_path();
        let handle = ManagerHandle::new(path.as_os_str().as_bytes())
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err.to_string()))?;
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        rustix::net::bind(&fd, &SocketAddrUnix::new(&path)?)?;
        // Accepted connections inherit it (Linux 6.16 on), so the kernel names
        // the writer of bytes sent before `accept` sets it on each.
        if let Err(errno) = crate::sender::name_writers(fd.as_fd()) {
            tracing::debug!("cannot learn who writes on connections: {errno}");
        }
        rustix::net::listen(&fd, BACKLOG)?;
        Ok(Self { fd, handle, dir })
    }

    /// The handle clients connect to (the socket path).
    pub fn handle(&self) -> &ManagerHandle {
        &self.handle
    }

    /// The private directory.
    pub fn dir(&self) -> &RunDir {
        &self.dir
    }

    /// Accepts one pending connection; `Ok(None)` when none is pending.
    pub fn accept(&self) -> Result<Option<Accepted>, Errno> {
        let fd = loop {
            match rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
                Ok(fd) => break fd,
                Err(Errno::INTR | Errno::CONNABORTED) => continue,
                Err(Errno::AGAIN) => return Ok(None),
                Err(errno) => return Err(errno),
            }
        };
        let peer = peer_credentials(fd.as_fd());
        // Without it, frames' pids are taken at their word, as before.
        if let Err(errno) = crate::sender::name_writers(fd.as_fd()) {
            tracing::debug!("cannot learn who writes on a connection: {errno}");
        }
        let peer_pidfd = peer_pidfd(fd.as_fd());
        Ok(Some(Accepted {
            fd,
            peer,
            peer_pidfd,
        }))
    }
}

/// Who is on the other end of `fd` (`SO_PEERCRED`): its uid, and its pid
/// unless it has none in our pid namespace (the kernel says 0: a client
/// outside a container the manager runs in). Read as plain integers, since
/// rustix's `UCred` holds the pid as a `NonZeroI32`: a zero there is an
/// invalid value, which came out as an error, and the client was refused.
fn peer_credentials(fd: BorrowedFd<'_>) -> Peer {
    let empty = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    match socket_option(fd, libc::SO_PEERCRED, empty) {
        Ok(cred) => Peer {
            pid: (cred.pid > 0).then_some(cred.pid),
            uid: Some(cred.uid),
        },
        Err(_) => Peer::default(),
    }
}

/// A pidfd of the process on the other end of `fd`, the one that connected
/// (`SO_PEERPIDFD`).
fn peer_pidfd(fd: BorrowedFd<'_>) -> PeerPidfd {
    match socket_option::<libc::c_int>(fd, libc::SO_PEERPIDFD, -1) {
        Ok(pidfd) if pidfd >= 0 => {
            // SAFETY: the kernel has just installed `pidfd` in our table for
            // us, and nothing else owns it.
            PeerPidfd::Given(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd) })
        }
        Err(Errno::NOPROTOOPT) => PeerPidfd::Unsupported,
        _ => PeerPidfd::Refused,
    }
}

/// A `SOL_SOCKET` option of `fd` that the kernel fills whole, as plain
/// data (`T` is a C integer or struct, valid for any bytes the kernel
/// writes); `initial` is what it holds before the call.
fn socket_option<T: Copy>(fd: BorrowedFd<'_>, option: libc::c_int, initial: T) -> Result<T, Errno> {
    let mut value = initial;
    let size = std::mem::size_of::<T>();
    let mut len = size as libc::socklen_t;
    // SAFETY: `value` and `len` are ours to write, `len` is `value`'s size,
    // and `fd` stays open for the call.
    let got = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if got != 0 {
        let raw = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(Errno::from_raw_os_error(raw));
    }
    if len as usize != size {
        return Err(Errno::INVAL);
    }
    Ok(value)
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux 6.16 and later copy the listener's options to each connection
    /// as it is made: no bytes go unnamed between `accept` and our
    /// `setsockopt`. Older kernels leave that window (the option is still
    /// set on each accepted connection).
    #[test]
    fn connections_are_born_with_their_writers_named() {
        let dir = RunDir::create(&std::env::temp_dir()).unwrap();
        let listener = Listener::bind(dir).unwrap();
        let path = listener.handle().as_str().to_owned();
        let _client = std::os::unix::net::UnixStream::connect(path).unwrap();
        let accepted = rustix::net::accept(&listener.fd).unwrap();
        let inherited = rustix::net::sockopt::socket_passcred(&accepted).unwrap();
        let release = rustix::system::uname();
        let release = release.release().to_string_lossy();
        let mut numbers = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let minor: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        if (major, minor) >= (6, 16) {
            assert!(inherited, "Linux {release} did not pass SO_PASSCRED on");
        }
    }
}
