//! Pid reuse on purpose: processes given a chosen pid (root,
//! `ns_last_pid`, in a private pid namespace where nobody else forks), and
//! what the manager has read of a connection, for timing a write into the
//! window where a gone sender's end is pending.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use libshm::SegmentName;
use libshm::protocol::frame::Frame;

use super::journal_client::JournalClient;
use super::{Daemon, RawClient};

/// Bytes `stream`'s peer (the manager) has not read yet.
pub fn unread_by_manager(stream: &UnixStream) -> usize {
    let mut queued: libc::c_int = 0;
    // SAFETY: `TIOCOUTQ` writes one c_int to the pointer given, ours.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &raw mut queued) };
    assert_eq!(rc, 0, "TIOCOUTQ: {}", std::io::Error::last_os_error());
    usize::try_from(queued).unwrap_or(0)
}

/// Spins until the manager has read everything queued on `stream` (`what`
/// names it in the failure); returns when the spinning began, so the
/// caller can tell how soon it was read.
pub fn spin_until_read(stream: &UnixStream, what: &str) -> Instant {
    let began = Instant::now();
    while unread_by_manager(stream) > 0 {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the manager never read {what}"
        );
        std::hint::spin_loop();
    }
    began
}

/// Lets `stream` queue up to `bytes` unread by its peer (root's
/// `SO_SNDBUFFORCE`, past `wmem_max`): a long queue for an end to wait on.
pub fn force_send_buffer(stream: &UnixStream, bytes: usize) {
    let size = libc::c_int::try_from(bytes).unwrap();
    // SAFETY: a valid socket of ours, and `size` outlives the call, which
    // reads `size_of::<c_int>()` bytes from it.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_SNDBUFFORCE: {}", std::io::Error::last_os_error());
}

/// A forked process of ours, killed and reaped when dropped.
pub struct ForkedWriter {
    pub pid: i32,
    /// Killed and reaped already.
    dead: bool,
    /// Written to, it writes its later frames.
    cue: std::fs::File,
}

impl ForkedWriter {
    /// Forks a process (given `pid` if asked: root, `ns_last_pid`, in a
    /// private pid namespace) that writes `frames` on `conn`, then, once
    /// cued ([`ForkedWriter::cue`]), `later`, each frame with its own pid in
    /// the first four bytes, and then waits for a signal. `None` if the
    /// fork got another pid than asked.
    pub fn fork(
        pid: Option<i32>,
        conn: &UnixStream,
        frames: &[[u8; 68]],
        later: &[[u8; 68]],
    ) -> Option<Self> {
        let first: Vec<u8> = frames.iter().flatten().copied().collect();
        let second: Vec<u8> = later.iter().flatten().copied().collect();
        let fd = conn.as_raw_fd();
        let (cue_read, cue_write) = std::io::pipe().unwrap();
        let cue_fd = cue_read.as_raw_fd();
        if let Some(pid) = pid {
            std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
                .expect("write ns_last_pid (root, in our own pid namespace)");
        }
        // SAFETY: the child only calls `getpid`, writes into its own copies
        // of `first` and `second` (allocated before the fork), `read`s,
        // `write`s and `pause`s: all async-signal-safe, as a fork of a
        // threaded process requires.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            // SAFETY: as above; the buffers are this process's own copies.
            unsafe {
                let own = libc::getpid().to_ne_bytes();
                for bytes in [&first, &second] {
                    let base = bytes.as_ptr().cast_mut();
                    for at in (0..bytes.len()).step_by(68) {
                        std::ptr::copy_nonoverlapping(own.as_ptr(), base.add(at), own.len());
                    }
                }
                libc::write(fd, first.as_ptr().cast(), first.len());
                if !second.is_empty() {
                    let mut byte = 0u8;
                    if libc::read(cue_fd, (&raw mut byte).cast(), 1) == 1 {
                        libc::write(fd, second.as_ptr().cast(), second.len());
                    }
                }
                loop {
                    libc::pause();
                }
            }
        }
        let writer = Self {
            pid: child,
            dead: false,
            cue: std::os::fd::OwnedFd::from(cue_write).into(),
        };
        pid.is_none_or(|pid| child == pid).then_some(writer)
    }

    /// Has it write its later frames.
    pub fn cue(&mut self) {
        use std::io::Write;
        self.cue.write_all(&[1]).unwrap();
    }

    pub fn is_alive(&self) -> bool {
        let mut status = 0;
        // SAFETY: polls our own child, not reaped yet, without blocking.
        !self.dead && unsafe { libc::waitpid(self.pid, &raw mut status, libc::WNOHANG) == 0 }
    }

    /// Kills and reaps it: its pid is free again.
    pub fn kill(&mut self) {
        if !std::mem::replace(&mut self.dead, true) {
            // SAFETY: our own child, not reaped yet.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

impl Drop for ForkedWriter {
    fn drop(&mut self) {
        self.kill();
    }
}

/// While the manager is stopped, fills each of `rings` with `per_ring`
/// stray releases of `junk` by `filler` (so the round that reads them is
/// long), and has a child forked onto `shared` register `gone_name` and
/// exit (reaped: its pid is free), then waits until the manager has read
/// the child's bytes. Returns that pid and when the manager was continued:
/// bytes read within the rings' round leave the child's end pending while
/// the rings are read.
pub fn gone_registration_behind_rings(
    daemon: &Daemon,
    rings: &[JournalClient],
    per_ring: usize,
    filler: i32,
    junk: SegmentName,
    shared: &mut RawClient,
    gone_name: &str,
) -> (i32, Instant) {
    let mut gone_pid = 0;
    daemon.while_stopped(|| {
        for ring in rings {
            for _ in 0..per_ring {
                ring.append(Frame::release(filler, junk));
            }
        }
        gone_pid = shared.register_from_exited_child(&[gone_name]);
    });
    let began = spin_until_read(&shared.stream, "the connection");
    (gone_pid, began)
}
