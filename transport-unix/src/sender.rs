//! Who wrote the bytes a read returns. A frame's pid is what its sender
//! says; with `SO_PASSCRED` on a connection, the kernel attaches each
//! writer's pid (as our pid namespace sees it) and never returns two
//! writers' bytes from one read, so a pid that names another process than
//! its writer shows.
//!
//! Read with `libc`: rustix's `UCred` holds the pid as a `NonZeroI32`, and
//! the kernel reports 0 for a writer outside our pid namespace, or for bytes
//! written before the option was on.

use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Errno;

/// Room for one `SCM_CREDENTIALS` and a few descriptors (a journal offer
/// sends one), as `u64`s so the headers in it are aligned.
const CONTROL_WORDS: usize = 16;

/// What one read returned besides its bytes.
#[derive(Debug, Default)]
pub(crate) struct Received {
    pub(crate) bytes: usize,
    /// The writer's pid in our namespace; `None` when the kernel did not say.
    pub(crate) writer: Option<i32>,
    /// Descriptors sent along, in order.
    pub(crate) fds: Vec<OwnedFd>,
}

/// Asks the kernel to name the writer of every read on `fd` from now on.
/// Bytes already queued may come without a name.
pub(crate) fn name_writers(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    rustix::net::sockopt::set_socket_passcred(fd, true)
}

/// Reads what is there without blocking, with its writer and any
/// descriptors (close-on-exec).
pub(crate) fn receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Received, Errno> {
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero `msghdr` is valid: null pointers with zero lengths.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; CONTROL_WORDS]>() as _;
    // SAFETY: `msg` points at `iov` (which points at `buf`) and at `control`,
    // all live and writable for the lengths given, for the whole call.
    let read = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &raw mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    let Ok(bytes) = usize::try_from(read) else {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
    };
    let mut received = Received {
        bytes,
        ..Received::default()
    };
    // SAFETY: the kernel wrote well-formed headers into `control` up to the
    // `msg_controllen` it set; the macros step through them without leaving
    // it, and return null past the last.
    let mut header = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !header.is_null() {
        // SAFETY: non-null, so a header inside `control`, which is aligned
        // for it (`u64`s).
        let (level, kind, len) = unsafe {
            (
                (*header).cmsg_level,
                (*header).cmsg_type,
                (*header).cmsg_len,
            )
        };
        // SAFETY: `header` is a header inside `control`.
        let data = unsafe { libc::CMSG_DATA(header) };
        #[allow(
            clippy::unnecessary_cast,
            reason = "`cmsg_len` is narrower on some libcs"
        )]
        let payload = (len as usize).saturating_sub(data as usize - header as usize);
        match (level, kind) {
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) if payload >= size_of::<libc::ucred>() => {
                // SAFETY: the payload holds a `ucred` (checked length);
                // read unaligned, as the kernel promises no more.
                let cred = unsafe { data.cast::<libc::ucred>().read_unaligned() };
                received.writer = (cred.pid > 0).then_some(cred.pid);
            }
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                for at in 0..payload / size_of::<libc::c_int>() {
                    // SAFETY: within the payload (counted above).
                    let raw = unsafe { data.cast::<libc::c_int>().add(at).read_unaligned() };
                    // SAFETY: the kernel just installed `raw` for us, and
                    // nothing else owns it.
                    received.fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
            _ => {}
        }
        // SAFETY: as for the first header; `header` is one of `msg`'s.
        header = unsafe { libc::CMSG_NXTHDR(&raw const msg, header) };
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn names_the_writer_of_each_read_and_keeps_writers_apart() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        name_writers(theirs.as_fd()).unwrap();
        ours.write_all(b"abc").unwrap();
        let mut buf = [0u8; 16];
        let got = receive(theirs.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got.bytes], b"abc");
        assert_eq!(got.writer, Some(std::process::id() as i32));
        assert!(got.fds.is_empty());
        assert_eq!(receive(theirs.as_fd(), &mut buf).unwrap_err(), Errno::AGAIN);

        // A forked child writes on the same connection after us: its bytes
        // come in a read of their own, with its pid.
        ours.write_all(b"parent").unwrap();
        // SAFETY: the child only writes and exits (async-signal-safe calls).
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: `ours` is open in the child; `_exit` ends it at once.
            unsafe {
                libc::write(ours.as_raw_fd(), b"child".as_ptr().cast(), 5);
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(child, &raw mut status, 0) };
        let first = receive(theirs.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..first.bytes], b"parent");
        assert_eq!(first.writer, Some(std::process::id() as i32));
        let second = receive(theirs.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..second.bytes], b"child");
        assert_eq!(second.writer, Some(child), "named though it has exited");
    }

    #[test]
    fn bytes_written_before_the_option_was_on_come_without_a_writer() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        ours.write_all(b"early").unwrap();
        name_writers(theirs.as_fd()).unwrap();
        let mut buf = [0u8; 16];
        let got = receive(theirs.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got.bytes], b"early");
        assert_eq!(got.writer, None);
    }
}
