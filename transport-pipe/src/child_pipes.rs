//! A private manager's two pipes: created close-on-exec, handed to the child
//! at fork, kept by the parent as its [`PipeTransport`].
//!
//! Between fork and exec the child puts its ends at [`REQUEST_FD`] (it reads
//! frames there) and [`REPLY_FD`] (it writes replies there), where `dup2`
//! clears close-on-exec, so the manager inherits exactly those two and no
//! other process ever does. Starting the process and reading its handshake
//! are the launcher's (`libshm_unix::Launcher::launch_with`, or any
//! fork/exec): this module only adds the pipes to its command and checks the
//! handle it printed. The parent closes the child's ends once the manager has
//! answered: from then on each side's death is the other's end of file.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use libshm_core::handshake::ManagerHandle;
use rustix::pipe::{PipeFlags, pipe_with};

use crate::handle::{REPLY_FD, REQUEST_FD, pipe_handle_pid};
use crate::transport::{PipeError, PipeTransport};

/// Both pipes of a manager about to be started: the parent's ends as a
/// transport, the child's ends until the child has its copies.
#[derive(Debug)]
pub struct ChildPipes {
    transport: PipeTransport,
    /// The request pipe's read end and the reply pipe's write end.
    child_ends: (OwnedFd, OwnedFd),
}

impl ChildPipes {
    /// Creates both pipes; the transport waits for a reply as long as
    /// `reply_timeout` says (`None`: for ever).
    pub fn new(reply_timeout: Option<Duration>) -> Result<Self, PipeError> {
        let pipe = |errno| PipeError::Os { op: "pipe", errno };
        let (request_read, request_write) = pipe_with(PipeFlags::CLOEXEC).map_err(pipe)?;
        let (reply_read, reply_write) = pipe_with(PipeFlags::CLOEXEC).map_err(pipe)?;
        Ok(Self {
            transport: PipeTransport::new(request_write, reply_read, reply_timeout)?,
            child_ends: (request_read, reply_write),
        })
    }

    /// Adds `--transport pipe --pipe-fds 3,4 --client-pid <our pid>` to
    /// `command`, and the step that puts the child's ends there between fork
    /// and exec. Spawn the command from this process: the manager takes the
    /// pid for its parent's, and a manager that starts only after this
    /// process died (it was stopped meanwhile) can then tell that its client
    /// has ended, rather than take its new parent (init) for it.
    pub fn prepare(&self, command: &mut Command) {
        command
            .arg("--transport")
            .arg("pipe")
            .arg("--pipe-fds")
            .arg(format!("{REQUEST_FD},{REPLY_FD}"))
            .arg("--client-pid")
            .arg(rustix::process::getpid().as_raw_nonzero().to_string());
        let child_ends = (self.child_ends.0.as_raw_fd(), self.child_ends.1.as_raw_fd());
        // SAFETY: the hook runs in the forked child before exec, where only
        // async-signal-safe calls are allowed. `place_child_ends` makes raw
        // fcntl, dup2 and close system calls through rustix and nothing else:
        // no allocation (io::Error from an errno does not allocate), no locks.
        // The numbers stay open in the parent until `self` is dropped or
        // made a transport, after the spawn.
        unsafe {
            command.pre_exec(move || place_child_ends(child_ends.0, child_ends.1));
        }
    }

    /// Whether `handle`, printed by the process `pid`, is a manager serving
    /// these pipes: `pipe:<its pid>`. PyTorch's manager ignores the
    /// arguments and prints a socket path.
    pub fn accepts(handle: &ManagerHandle, pid: u32) -> bool {
        pipe_handle_pid(handle) == Some(pid)
    }

    /// The parent's ends, once the child has its copies (it was spawned).
    /// Ours go now: while we held the request pipe's read end, the manager's
    /// death would not close it, and while we held the reply pipe's write
    /// end, our reads would never see the manager's end of file.
    pub fn into_transport(self) -> PipeTransport {
        self.transport
    }
}

/// In the forked child: puts the request pipe's read end at [`REQUEST_FD`]
/// and the reply pipe's write end at [`REPLY_FD`], without close-on-exec.
///
/// Both are first copied above the two targets, so the first `dup2` cannot
/// overwrite the second one's source (the child's ends may well be 3 and 4,
/// crossed) and neither `dup2` is a no-op that would keep close-on-exec.
/// Whatever else the child had at 3 or 4 is its copy of a parent descriptor,
/// which the `dup2` closes in the child only. Std's own exec-error pipe cannot be
/// there: it is created after our pipes, which hold the lowest free numbers
/// for the whole spawn. (Only another thread closing 3 or 4 in that window
/// could put it there; an exec failure would then read as "no output".)
fn place_child_ends(requests: RawFd, replies: RawFd) -> io::Result<()> {
    // SAFETY: both numbers are open in this child: they are the parent's
    // pipe ends, inherited by fork, open until exec. The borrows end with
    // this function, before exec.
    let (requests, replies) = unsafe {
        (
            BorrowedFd::borrow_raw(requests),
            BorrowedFd::borrow_raw(replies),
        )
    };
    let above = REQUEST_FD.max(REPLY_FD) + 1;
    let requests = rustix::io::fcntl_dupfd_cloexec(requests, above)?;
    let replies = rustix::io::fcntl_dupfd_cloexec(replies, above)?;
    for (source, target) in [(&requests, REQUEST_FD), (&replies, REPLY_FD)] {
        // SAFETY: `target` is only named as dup2's destination and never
        // closed through this value (ManuallyDrop), as rustix's own
        // `stdio::dup2_stdout` does for fd 1. dup2 atomically replaces
        // whatever was open there; this single-threaded child, between fork
        // and exec, has no other user of that number.
        let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(target) });
        rustix::io::dup2(source, &mut target)?;
    }
    // The copies above the targets are close-on-exec; closing them now is tidier.
    drop((requests, replies));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tests::register;
    use libshm_core::name::SegmentName;
    use libshm_core::transport::{ErrorKind, Transport, TransportError};
    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::time::Instant;

    /// A stand-in manager over pipes: `sh -c script`, its handle line read,
    /// reaped in the background like a launched one.
    struct Shell {
        handle: ManagerHandle,
        pid: u32,
        transport: PipeTransport,
    }

    fn shell(script: &str) -> Shell {
        let pipes = ChildPipes::new(Some(Duration::from_secs(5))).unwrap();
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]).stdout(Stdio::piped());
        pipes.prepare(&mut command);
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let handle: ManagerHandle = line.trim_end().parse().unwrap();
        let pid = child.id();
        assert!(ChildPipes::accepts(&handle, pid), "{handle:?}");
        std::thread::spawn(move || child.wait());
        Shell {
            handle,
            pid,
            transport: pipes.into_transport(),
        }
    }

    fn wait_until(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn gone(pid: u32) -> bool {
        !Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn the_manager_reads_fd_3_and_writes_fd_4_and_sees_our_end_of_file() {
        // Reads one frame from fd 3, answers OK on fd 4, then waits for end of file.
        let script =
            r#"echo "pipe:$$"; head -c 68 <&3 >/dev/null && printf OK >&4; cat <&3 >/dev/null"#;
        let mut launched = shell(script);
        assert_eq!(launched.handle.as_str(), format!("pipe:{}", launched.pid));
        register(
            &mut launched.transport,
            SegmentName::new(b"/torch_1_2_3").unwrap(),
        );
        assert!(!gone(launched.pid));
        drop(launched.transport);
        assert!(wait_until(|| gone(launched.pid)), "exited and was reaped");
    }

    #[test]
    fn the_manager_is_told_our_pid_as_its_clients() {
        // `sh -c script` takes what `prepare` adds as $0, $1, ...: it sends
        // the last two back on fd 4, then closes it.
        let script =
            r#"echo "pipe:$$"; printf '%s %s' "$4" "$5" >&4; exec 4>&-; cat <&3 >/dev/null"#;
        let mut launched = shell(script);
        let (mut told, mut buf) = (Vec::new(), [0u8; 64]);
        loop {
            match launched.transport.receive(&mut buf).unwrap() {
                0 => break,
                n => told.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(
            String::from_utf8(told).unwrap(),
            format!("--client-pid {}", std::process::id())
        );
    }

    #[test]
    fn the_manager_inherits_its_two_pipes_and_nothing_else() {
        let launched = shell(r#"echo "pipe:$$"; exec sleep 10"#);
        let proc = PathBuf::from(format!("/proc/{}", launched.pid));
        assert!(wait_until(
            || std::fs::read_to_string(proc.join("comm")).is_ok_and(|comm| comm.trim() == "sleep")
        ));
        let mut fds: Vec<u32> = std::fs::read_dir(proc.join("fd"))
            .unwrap()
            .map(|entry| {
                entry
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        fds.sort();
        assert_eq!(fds[..5], [0, 1, 2, 3, 4]);
        // 3 is the pipe we write requests to, 4 the pipe we read replies from.
        let link = |path: PathBuf| std::fs::read_link(path).unwrap();
        let ours = |fd: BorrowedFd<'_>| link(format!("/proc/self/fd/{}", fd.as_raw_fd()).into());
        // Anything else came from the environment: a descriptor the test
        // process itself holds without close-on-exec (a CI runner's, say).
        for fd in &fds[5..] {
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
                .unwrap();
            const O_CLOEXEC: u32 = 0o2_000_000;
            assert_eq!(flags & O_CLOEXEC, 0, "fd {fd} leaked into the manager");
            assert_eq!(
                link(proc.join(format!("fd/{fd}"))),
                link(format!("/proc/self/fd/{fd}").into())
            );
        }
        assert_eq!(link(proc.join("fd/3")), ours(launched.transport.requests()));
        assert_eq!(link(proc.join("fd/4")), ours(launched.transport.replies()));
        assert!(
            link(proc.join("fd/3"))
                .to_str()
                .unwrap()
                .starts_with("pipe:")
        );
        let pid = rustix::process::Pid::from_raw(launched.pid as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    }

    #[test]
    fn a_dead_manager_is_closed_for_the_next_write() {
        let mut launched = shell(r#"echo "pipe:$$""#);
        assert!(wait_until(|| launched.transport.is_closed().unwrap()));
        let err = launched.transport.send_all(&[0u8; 68]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);
    }

    #[test]
    fn only_pipe_and_its_own_pid_is_a_pipe_manager() {
        let handle = |text: &str| text.parse::<ManagerHandle>().unwrap();
        assert!(ChildPipes::accepts(&handle("pipe:42"), 42));
        assert!(!ChildPipes::accepts(&handle("pipe:1"), 42));
        assert!(!ChildPipes::accepts(
            &handle("/tmp/torch-shm-dir-abcdef/manager.sock"),
            42
        ));
    }
}
