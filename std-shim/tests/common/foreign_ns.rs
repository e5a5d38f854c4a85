//! Processes of other pid namespaces and connections handed across them:
//! a launcher that connects, hands its connection to the test and exits, and
//! a `sleep` given a chosen pid in a namespace of its own.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use libshm::protocol::frame::Frame;
use libshm::protocol::journal;

use super::journal_client::JournalClient;

/// A Python process that connects to the manager (from a new pid namespace
/// if asked, pid 1 there), says nothing on the connection, hands it to us
/// over `SCM_RIGHTS`, and exits once its stdin closes.
pub struct Launcher {
    child: std::process::Child,
    /// Its pid in ours.
    pub pid: i32,
    pub connection: Option<UnixStream>,
}

impl Launcher {
    pub fn hand_over(handle: &str, new_namespace: bool) -> Self {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let theirs_fd = theirs.as_raw_fd();
        let mut command = if new_namespace {
            let mut command = Command::new("unshare");
            command.args(["--pid", "--fork", "--kill-child", "python3"]);
            command
        } else {
            Command::new("python3")
        };
        command
            .arg("-c")
            .arg(
                r#"
import os, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
# Our /proc is the outer namespace's: "self" is our pid there.
outer = int(os.readlink("/proc/self"))
socket.send_fds(socket.socket(fileno=3), [struct.pack("=i", outer)], [s.fileno()])
s.close()
sys.stdin.read()
"#,
            )
            .arg(handle)
            .stdin(Stdio::piped());
        // SAFETY: only `dup2`, async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(theirs_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("python3");
        drop(theirs);
        let (fd, pid) = receive_fd_and_word(ours.as_raw_fd());
        Self {
            child,
            pid,
            connection: Some(UnixStream::from(fd)),
        }
    }

    /// Has it exit, and reaps it (`unshare` and, with `--kill-child`, the
    /// launcher under it): its pid is free.
    pub fn exit(&mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success(), "the launcher failed");
        assert!(
            super::wait_until(Duration::from_secs(2), || {
                !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
            }),
            "the launcher {} is reaped",
            self.pid
        );
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The descriptor and the 4-byte word of the next message on `socket`.
pub fn receive_fd_and_word(socket: i32) -> (OwnedFd, i32) {
    let mut word = [0u8; 4];
    let mut iov = libc::iovec {
        iov_base: word.as_mut_ptr().cast(),
        iov_len: 4,
    };
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `message` points at live buffers of ours.
    let n = unsafe { libc::recvmsg(socket, &raw mut message, libc::MSG_CMSG_CLOEXEC) };
    assert_eq!(n, 4, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: filled by the kernel; the header, if any, lies in `control`.
    let fd = unsafe {
        let header = libc::CMSG_FIRSTHDR(&raw const message);
        assert!(!header.is_null(), "no descriptor came");
        assert_eq!((*header).cmsg_type, libc::SCM_RIGHTS);
        OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(header).cast()))
    };
    (fd, i32::from_ne_bytes(word))
}

/// Offers a journal on `stream`, as a client's first frame does.
pub fn offer_journal(stream: UnixStream) -> JournalClient {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let memory = libshm_unix::SharedJournal::create(64).unwrap();
    let pid = std::process::id() as i32;
    let mut offer = libshm_unix::UnixTransport::from_fd(stream.try_clone().unwrap().into());
    offer
        .send_with_fd(&Frame::register(pid, journal::SETUP).encode(), memory.fd())
        .unwrap();
    drop(offer);
    let mut ring = JournalClient { stream, memory };
    let mut reply = [0u8; 2];
    std::io::Read::read_exact(&mut ring.stream, &mut reply).expect("the journal's answer");
    assert_eq!(&reply, b"JR", "the manager took the journal");
    ring
}

/// A `sleep` in a pid namespace of its own, given `pid` there (`sh`, pid 1
/// there, writes that namespace's `ns_last_pid`); killed with it.
pub struct NestedSleeper(std::process::Child);

impl NestedSleeper {
    pub fn start(pid: i32) -> Self {
        let script = format!(
            "echo {} > /proc/sys/kernel/ns_last_pid; sleep 600 & echo $!; wait",
            pid - 1
        );
        let mut child = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare sh");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(
            line.trim(),
            pid.to_string(),
            "sleep got pid {pid} in its namespace"
        );
        Self(child)
    }

    pub fn is_alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Kills `unshare`, and so (`--kill-child`) its child, pid 1 of the
    /// namespace, and with it the namespace.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for NestedSleeper {
    fn drop(&mut self) {
        self.kill();
    }
}
