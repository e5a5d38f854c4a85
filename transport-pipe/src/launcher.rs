//! Starting a private manager: two pipes, fork/exec, read its handshake line.
//!
//! The same steps as `libshm_unix::Launcher` (no stdin, stdout a pipe we read
//! until the newline, stderr ours, a timeout instead of a hang, the child
//! reaped when it exits), plus the pipes. Both are created close-on-exec;
//! between fork and exec the child puts its ends at [`REQUEST_FD`] (it reads
//! frames there) and [`REPLY_FD`] (it writes replies there), where `dup2`
//! clears close-on-exec, so the manager inherits exactly those two and no
//! other process ever does. The parent closes the child's ends right after
//! the spawn: from then on each side's death is the other's end of file.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use libshm_core::handshake::{HandshakeError, HandshakeReader, ManagerHandle, NoHandle};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, pipe_with};

use crate::handle::{REPLY_FD, REQUEST_FD, pipe_handle_pid};
use crate::transport::{PipeError, PipeTransport};

/// A manager that printed its handle, and the client's ends of its pipes.
#[derive(Debug)]
pub struct Launched {
    /// `pipe:<pid>`: for logs and for sharing (other processes that get it
    /// use a manager of their own).
    pub handle: ManagerHandle,
    /// The manager's pid.
    pub pid: u32,
    /// The only way to reach the manager.
    pub transport: PipeTransport,
}

/// Why a manager could not be started.
#[derive(Debug)]
pub enum LaunchError {
    /// Creating or preparing the pipes failed.
    Pipe(PipeError),
    /// The executable could not be run.
    Spawn {
        /// What we tried to run.
        executable: PathBuf,
        /// The OS's answer.
        source: io::Error,
    },
    /// Reading its stdout failed.
    Read(io::Error),
    /// It printed something that is not a handshake.
    Handshake(HandshakeError),
    /// It printed `ERROR: <message>`.
    ManagerFailed(String),
    /// It printed nothing within the timeout.
    TimedOut(Duration),
    /// It printed a handle that is not `pipe:<its pid>`: the executable is
    /// not a manager that speaks over pipes (PyTorch's does not).
    NotAPipeManager {
        /// What it printed.
        handle: ManagerHandle,
    },
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pipe(_) => f.write_str("could not set up the manager's pipes"),
            Self::Spawn { executable, .. } => {
                write!(f, "could not execute manager {}", executable.display())
            }
            Self::Read(_) => f.write_str("could not read the manager's handle"),
            Self::Handshake(err) => err.fmt(f),
            Self::ManagerFailed(message) => write!(f, "manager failed to start: {message}"),
            Self::TimedOut(after) => write!(f, "manager printed no handle within {after:?}"),
            Self::NotAPipeManager { handle } => write!(
                f,
                "manager printed {handle:?}, not pipe:<its pid>; it does not serve over pipes"
            ),
        }
    }
}

impl std::error::Error for LaunchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Pipe(err) => Some(err),
            Self::Spawn { source, .. } | Self::Read(source) => Some(source),
            // Displayed as this error's own message (above), so its cause comes next.
            Self::Handshake(err) => std::error::Error::source(err),
            _ => None,
        }
    }
}

impl From<NoHandle<'_>> for LaunchError {
    fn from(no_handle: NoHandle<'_>) -> Self {
        match no_handle {
            NoHandle::Failed(message) => Self::ManagerFailed(message.to_owned()),
            NoHandle::Handshake(err) => Self::Handshake(err),
        }
    }
}

/// How to start a pipe manager.
#[derive(Clone, Debug)]
pub struct Launcher {
    executable: PathBuf,
    args: Vec<OsString>,
    quiet: bool,
    timeout: Duration,
    reply_timeout: Option<Duration>,
}

impl Launcher {
    /// Runs `executable [args] --transport pipe --pipe-fds 3,4`.
    pub fn new(executable: impl Into<PathBuf>) -> Self {
        Self {
            executable: executable.into(),
            args: Vec::new(),
            quiet: false,
            timeout: Duration::from_secs(10),
            reply_timeout: None,
        }
    }

    /// Arguments before the transport's own (our manager's options).
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sends the manager's stderr to `/dev/null` instead of ours.
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// How long to wait for the handshake line.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the returned transport waits for a reply (`None`: for ever).
    pub fn reply_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// The executable.
    pub fn executable(&self) -> &Path {
        &self.executable
    }

    /// Starts the manager and waits for its handle.
    pub fn launch(&self) -> Result<Launched, LaunchError> {
        let pipe = |op| move |errno| LaunchError::Pipe(PipeError::Os { op, errno });
        let (request_read, request_write) = pipe_with(PipeFlags::CLOEXEC).map_err(pipe("pipe"))?;
        let (reply_read, reply_write) = pipe_with(PipeFlags::CLOEXEC).map_err(pipe("pipe"))?;
        let transport = PipeTransport::new(request_write, reply_read, self.reply_timeout)
            .map_err(LaunchError::Pipe)?;

        let mut command = Command::new(&self.executable);
        command
            .args(&self.args)
            .arg("--transport")
            .arg("pipe")
            .arg("--pipe-fds")
            .arg(format!("{REQUEST_FD},{REPLY_FD}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if self.quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            });
        let child_ends = (request_read.as_raw_fd(), reply_write.as_raw_fd());
        // SAFETY: the hook runs in the forked child before exec, where only
        // async-signal-safe calls are allowed. `place_child_ends` makes raw
        // fcntl, dup2 and close system calls through rustix and nothing else:
        // no allocation (io::Error from an errno does not allocate), no locks.
        unsafe {
            command.pre_exec(move || place_child_ends(child_ends.0, child_ends.1));
        }
        let spawned = command.spawn();
        // The child has its copies now (or never will). Ours must go: while
        // we hold the request pipe's read end, the manager's death would not
        // close it, and while we hold the reply pipe's write end, our reads
        // would never see the manager's end of file.
        drop((request_read, reply_write));
        let mut child = spawned.map_err(|source| LaunchError::Spawn {
            executable: self.executable.clone(),
            source,
        })?;

        let pid = child.id();
        let result = self.read_handshake(&mut child).and_then(|handle| {
            if pipe_handle_pid(&handle) == Some(pid) {
                Ok(handle)
            } else {
                Err(LaunchError::NotAPipeManager { handle })
            }
        });
        if result.is_err() {
            let _ = child.kill();
        }
        reap_in_background(child);
        result.map(|handle| Launched {
            handle,
            pid,
            transport,
        })
    }

    fn read_handshake(&self, child: &mut Child) -> Result<ManagerHandle, LaunchError> {
        let Some(stdout) = child.stdout.take() else {
            return Err(LaunchError::Read(io::Error::other("no stdout pipe")));
        };
        let deadline = Instant::now() + self.timeout;
        let mut reader = HandshakeReader::new();
        let mut buf = [0u8; 256];
        loop {
            let n = match read_before(&stdout, deadline, &mut buf) {
                Ok(n) => n,
                Err(Errno::INTR) => continue,
                Err(Errno::TIMEDOUT) => return Err(LaunchError::TimedOut(self.timeout)),
                Err(errno) => return Err(LaunchError::Read(errno.into())),
            };
            if let Some(handle) = reader.feed(&buf[..n])? {
                return Ok(handle);
            }
        }
    }
}

/// Waits until `deadline` for the manager's output, then reads it (`Ok(0)`:
/// end of file). Past the deadline: `TIMEDOUT`.
fn read_before(stdout: &ChildStdout, deadline: Instant, buf: &mut [u8]) -> Result<usize, Errno> {
    let left = deadline.saturating_duration_since(Instant::now());
    let left = Timespec::try_from(left).unwrap_or(Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    });
    match rustix::event::poll(&mut [PollFd::new(stdout, PollFlags::IN)], Some(&left))? {
        0 => Err(Errno::TIMEDOUT),
        _ => rustix::io::read(stdout, buf),
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

/// Waits for the manager in a small thread so it never lingers as a zombie.
fn reap_in_background(mut child: Child) {
    let spawned = std::thread::Builder::new()
        .name("shm-manager-reaper".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(err) = spawned {
        tracing::debug!("could not start a reaper thread: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tests::register;
    use libshm_core::name::SegmentName;
    use libshm_core::transport::{ErrorKind, Transport, TransportError};

    /// A stand-in manager: `sh -c script`, with our arguments as `$0...`.
    fn shell(script: &str) -> Launcher {
        Launcher::new("/bin/sh")
            .args(["-c", script])
            .timeout(Duration::from_secs(5))
            .reply_timeout(Some(Duration::from_secs(5)))
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
        let mut launched = shell(script).launch().unwrap();
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
    fn the_manager_inherits_its_two_pipes_and_nothing_else() {
        let launched = shell(r#"echo "pipe:$$"; exec sleep 10"#).launch().unwrap();
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
        let mut launched = shell(r#"echo "pipe:$$""#).launch().unwrap();
        assert!(wait_until(|| launched.transport.is_closed().unwrap()));
        let err = launched.transport.send_all(&[0u8; 68]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);
    }

    #[test]
    fn failures_are_typed() {
        let err = shell("echo 'ERROR: no pipes here'; exit 1")
            .launch()
            .unwrap_err();
        assert!(
            matches!(&err, LaunchError::ManagerFailed(m) if m == "no pipes here"),
            "{err}"
        );
        let err = shell("echo /tmp/torch-shm-dir-abcdef/manager.sock; cat <&3")
            .launch()
            .unwrap_err();
        assert!(matches!(err, LaunchError::NotAPipeManager { .. }), "{err}");
        let err = shell("echo pipe:1; cat <&3").launch().unwrap_err();
        assert!(matches!(err, LaunchError::NotAPipeManager { .. }), "{err}");
        let err = shell("exit 0").launch().unwrap_err();
        assert!(
            matches!(err, LaunchError::Handshake(HandshakeError::NoOutput)),
            "{err}"
        );
        let err = shell("sleep 5")
            .timeout(Duration::from_millis(100))
            .launch()
            .unwrap_err();
        assert!(matches!(err, LaunchError::TimedOut(_)), "{err}");
        let err = Launcher::new("/nonexistent/shm-manager")
            .launch()
            .unwrap_err();
        assert!(matches!(err, LaunchError::Spawn { .. }), "{err}");
    }
}
