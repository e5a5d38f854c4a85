//! Connections handed on: a process connects to a manager, says something,
//! passes the connection to the test over `SCM_RIGHTS`, and exits (or waits),
//! as a launcher that passes its connection to the family it starts.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Daemon, RawClient, SHM_MANAGER, frame, unique_name};

/// Connects a Python process to the manager at `handle`, has it register a
/// name nobody creates (so the connection has spoken, under the process's
/// own pid), hand the connection to us over `SCM_RIGHTS` and exit. Returns
/// the connection and the pid of the process that connected it, reaped
/// (free for reuse).
pub fn connection_from_exited_process(handle: &str) -> (RawClient, i32) {
    let (client, mut child) = handed_connection(handle);
    let pid = child.id() as i32;
    drop(child.stdin.take());
    assert!(
        child.wait().unwrap().success(),
        "the handing process failed"
    );
    (client, pid)
}

/// As [`connection_from_exited_process`], the process that connected kept
/// alive until its stdin closes.
pub fn handed_connection(handle: &str) -> (RawClient, std::process::Child) {
    use std::os::unix::process::CommandExt;
    let (ours, theirs) = UnixStream::pair().unwrap();
    let theirs_fd = theirs.as_raw_fd();
    let spoken = unique_name("handedspoken");
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(
            r#"
import os, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
b = sys.argv[2].encode()
s.sendall(struct.pack("=iB", os.getpid(), 0) + b + b"\0" * (63 - len(b)))
assert s.recv(2) == b"OK"
socket.send_fds(socket.socket(fileno=3), [b"x"], [s.fileno()])
s.close()
sys.stdin.read()
"#,
        )
        .args([handle, &spoken]);
    // SAFETY: only `dup2`, async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(theirs_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.stdin(Stdio::piped()).spawn().expect("python3");
    drop(theirs);
    let fd = receive_fd(ours.as_raw_fd());
    let stream = UnixStream::from(fd);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (RawClient { stream }, child)
}

/// The descriptor that came with the next message on `socket`.
pub fn receive_fd(socket: RawFd) -> OwnedFd {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one descriptor's control message, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `message` points at live buffers of ours.
    let n = unsafe { libc::recvmsg(socket, &raw mut message, libc::MSG_CMSG_CLOEXEC) };
    assert_eq!(n, 1, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: `message` was filled by the kernel; the header, if any, lies
    // in `control`.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&raw const message);
        assert!(!header.is_null(), "no descriptor came");
        assert_eq!((*header).cmsg_type, libc::SCM_RIGHTS);
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<RawFd>());
        OwnedFd::from_raw_fd(fd)
    }
}

/// A manager with `--reap-grace 1s`, `--frame-timeout 2s` and `--linger`
/// (what a connection closed for cause held for unknown processes gets as
/// long as a lingering manager would give it), its log discarded.
pub fn manager_lingering(linger: &str) -> Daemon {
    lingering(linger, None)
}

/// [`manager_lingering`], its debug log written to `log`.
pub fn manager_lingering_logging_to(linger: &str, log: std::fs::File) -> Daemon {
    lingering(linger, Some(log))
}

/// [`manager_lingering`], its debug log written to the file the environment
/// variable `var` names, if set (for reading what became of each frame).
pub fn manager_lingering_logged_if(linger: &str, var: &str) -> Daemon {
    lingering(
        linger,
        std::env::var_os(var).map(|path| std::fs::File::create(path).unwrap()),
    )
}

fn lingering(linger: &str, log: Option<std::fs::File>) -> Daemon {
    let mut command = Command::new(SHM_MANAGER);
    command.args([
        "--reap-grace",
        "1s",
        "--frame-timeout",
        "2s",
        "--linger",
        linger,
    ]);
    match log {
        Some(log) => command.arg("-vv").stderr(log),
        None => command.stderr(Stdio::null()),
    };
    Daemon::spawn(&mut command)
}

/// A frame the manager refuses at once (free flag 7): its connection is
/// closed for cause.
pub fn malformed_frame(tag: &str) -> [u8; 68] {
    let mut bad = crate::common::frame_from(0, 0, &crate::common::unique_name(tag));
    bad[4] = 7;
    bad
}

/// What the manager sent on `stream` until it closed it, or `None` if it
/// did not within `within`.
pub fn replies_until_closed(
    stream: &mut std::os::unix::net::UnixStream,
    within: std::time::Duration,
) -> Option<String> {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).unwrap();
    let mut replies = Vec::new();
    match stream.read_to_end(&mut replies) {
        Ok(_) => Some(String::from_utf8_lossy(&replies).into_owned()),
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
            Some(String::from_utf8_lossy(&replies).into_owned())
        }
        Err(_) => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts a process of ours that shares `conn` as descriptor 3, writes the
/// first 30 bytes of a frame on it and exits: a writer that died mid-frame.
/// Returns its pid, reaped (free for reuse).
pub fn half_frame_from_exited_writer(conn: RawFd) -> i32 {
    let half = frame(0, &unique_name("half"));
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg("import os, sys; os.write(3, bytes.fromhex(sys.argv[1]))")
        .arg(hex(&half[..30]));
    super::share_as_fd3(&mut command, conn);
    let mut child = command.spawn().expect("python3");
    let pid = child.id() as i32;
    assert!(child.wait().unwrap().success(), "the half writer failed");
    pid
}

/// Starts a process of ours sharing `conn` as descriptor 3 that writes a
/// malformed frame on it (free flag 7: the connection is closed for cause
/// at once) and lives on until its stdin closes.
pub fn malformed_frame_from_a_live_writer(conn: RawFd) -> std::process::Child {
    let mut bad = frame(0, &unique_name("bad"));
    bad[4] = 7;
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg("import os, sys; os.write(3, bytes.fromhex(sys.argv[1])); sys.stdin.read()")
        .arg(hex(&bad))
        .stdin(Stdio::piped());
    super::share_as_fd3(&mut command, conn);
    command.spawn().expect("python3")
}

/// Starts a process of ours sharing the family's connection as descriptor
/// 3 that registers `name` (nobody creates it) under its own pid and exits:
/// a member of the family that wrote once and is gone. The answer is read,
/// so the manager has read the frame, and its writer, before this returns.
fn registration_from_a_writer_that_exits(family: &mut RawClient, name: &str) {
    let mut command = Command::new("python3");
    command.arg("-c").arg(
        r#"
import os, struct, sys
b = sys.argv[1].encode()
os.write(3, struct.pack("=iB", os.getpid(), 0) + b + b"\0" * (63 - len(b)))
"#,
    );
    command.arg(name);
    super::share_as_fd3(&mut command, family.stream.as_raw_fd());
    let mut child = command.spawn().expect("python3");
    assert_eq!(family.reply(), Some(*b"OK"), "registration of {name}");
    assert!(child.wait().unwrap().success(), "the writer failed");
}

/// hostile14's family (its connecting process gone, a nested worker W that
/// registered, created and maps a name on it), `came_and_went` other
/// members that wrote once after W and ended, and a last one that writes a
/// malformed frame, lives past the close and then ends: the connection's
/// untrusted holds are tied to that last writer at the close and must pass
/// to W when it ends. Asserts W's name, in transit (queued, unmapped), is
/// kept while W lives (past the linger, the grace and a look) and unlinked
/// once it has ended. Needs a private pid namespace (W's pid is fixed).
pub fn assert_names_outlive_the_tied_writer(came_and_went: usize) {
    let daemon = manager_lingering("3s");
    let _bystander = daemon.bystander();
    let (mut family, peer) = connection_from_exited_process(&daemon.handle);
    assert!(super::process_gone(peer as u32));
    let name = unique_name("tied");
    let _cleanup = super::Cleanup(vec![name.clone()]);
    let q = 30_000;
    assert!(super::process_gone(q as u32));
    let mut worker = super::NestedWorker::spawn(family.stream.as_raw_fd(), q, &name);
    for _ in 0..came_and_went {
        registration_from_a_writer_that_exits(&mut family, &unique_name("came"));
    }
    let mut writer = malformed_frame_from_a_live_writer(family.stream.as_raw_fd());
    let writer_pid = writer.id();
    assert!(
        family.is_closed_by_peer(Duration::from_secs(10)),
        "the malformed frame closes the connection for cause"
    );
    // The writer that was tied finishes.
    drop(writer.stdin.take());
    assert!(writer.wait().unwrap().success());
    worker.queue();
    // The linger (3 s), the grace, the look, and slack.
    std::thread::sleep(Duration::from_secs(8));
    let kept = super::shm_exists(&name);
    drop(worker);
    let gone = super::wait_until(Duration::from_secs(15), || !super::shm_exists(&name));
    let told = super::story(&daemon.handle, &name);
    assert!(
        kept && gone,
        "{name}, in transit from a live nested worker that wrote on a connection closed for \
         a malformed frame from a writer (pid {writer_pid}) that ended right after the close, \
         {came_and_went} other writers having come and gone: kept while the worker lived: \
         {kept}; gone once it ended: {gone}. The manager's story:\n  {told}"
    );
}
