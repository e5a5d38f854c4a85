//! Starting a manager: fork/exec the executable, read its handshake line.
//! Whatever the transport: one over pipes adds its descriptors through
//! [`Launcher::launch_with`].
//!
//! The same steps as PyTorch's `start_manager`: the manager gets no stdin, its
//! stdout is a pipe we read until the newline, and its stderr is ours. The
//! manager calls `setsid` itself, so a terminal's Ctrl-C aimed at the client
//! does not take it down. Unlike PyTorch, the child is reaped when it exits
//! (no zombie) and a manager that never answers is a timeout, not a hang.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use libshm_core::handshake::{HandshakeError, HandshakeReader, ManagerHandle, NoHandle};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::process::PidfdFlags;

/// A manager that printed its handle.
#[derive(Debug)]
pub struct Launched {
    /// Where to connect.
    pub handle: ManagerHandle,
    /// The manager's pid.
    pub pid: u32,
    /// A pidfd of the manager, taken before anyone could reap it (so it
    /// names this process even after the pid is reused), where the kernel
    /// has pidfds: for signalling a manager that only its launcher uses.
    pub pidfd: Option<OwnedFd>,
}

/// Why a manager could not be started.
#[derive(Debug)]
pub enum LaunchError {
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
    /// It printed a handle the caller cannot use (a manager that does not
    /// serve over the transport asked for); it was killed.
    Rejected {
        /// What it printed.
        handle: ManagerHandle,
    },
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn { executable, .. } => {
                write!(f, "could not execute manager {}", executable.display())
            }
            Self::Read(_) => f.write_str("could not read the manager's handle"),
            Self::Handshake(err) => err.fmt(f),
            Self::ManagerFailed(message) => write!(f, "manager failed to start: {message}"),
            Self::TimedOut(after) => write!(f, "manager printed no handle within {after:?}"),
            Self::Rejected { handle } => write!(
                f,
                "manager printed {handle:?}, a handle of a transport other than the one asked for"
            ),
        }
    }
}

impl std::error::Error for LaunchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
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

/// How to start a manager.
#[derive(Clone, Debug)]
pub struct Launcher {
    executable: PathBuf,
    args: Vec<OsString>,
    quiet: bool,
    timeout: Duration,
}

impl Launcher {
    /// Runs `executable` with no arguments, as PyTorch does.
    pub fn new(executable: impl Into<PathBuf>) -> Self {
        Self {
            executable: executable.into(),
            args: Vec::new(),
            quiet: false,
            timeout: Duration::from_secs(10),
        }
    }

    /// Extra arguments (our manager's options; PyTorch's takes none).
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

    /// The executable.
    pub fn executable(&self) -> &Path {
        &self.executable
    }

    /// Starts the manager and waits for its handle.
    pub fn launch(&self) -> Result<Launched, LaunchError> {
        self.launch_with(|_| {}, |_, _| true)
    }

    /// Starts the manager with `prepare` applied to its command first (a
    /// transport's arguments and inherited descriptors, as
    /// `libshm_pipe::ChildPipes` adds them), and waits for a handle that
    /// `accepts` (given the handle and the manager's pid) takes; any other
    /// is [`LaunchError::Rejected`].
    pub fn launch_with(
        &self,
        prepare: impl FnOnce(&mut Command),
        accepts: impl FnOnce(&ManagerHandle, u32) -> bool,
    ) -> Result<Launched, LaunchError> {
        let mut command = Command::new(&self.executable);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if self.quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            });
        prepare(&mut command);
        let mut child = command.spawn().map_err(|source| LaunchError::Spawn {
            executable: self.executable.clone(),
            source,
        })?;
        let pid = child.id();
        // Not reaped before the reaper thread below: the pid is still this child.
        let pidfd = rustix::process::Pid::from_raw(pid as i32)
            .and_then(|raw| rustix::process::pidfd_open(raw, PidfdFlags::empty()).ok());
        let result = self.read_handshake(&mut child).and_then(|handle| {
            if accepts(&handle, pid) {
                Ok(handle)
            } else {
                Err(LaunchError::Rejected { handle })
            }
        });
        if result.is_err() {
            let _ = child.kill();
        }
        reap_in_background(child);
        result.map(|handle| Launched { handle, pid, pidfd })
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

    fn shell(script: &str) -> Launcher {
        Launcher::new("/bin/sh")
            .args(["-c", script])
            .timeout(Duration::from_secs(5))
    }

    #[test]
    fn failures_are_typed() {
        let err = shell("echo 'ERROR: no room'; exit 1").launch().unwrap_err();
        assert!(
            matches!(&err, LaunchError::ManagerFailed(m) if m == "no room"),
            "{err}"
        );
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

    #[test]
    fn a_prepared_command_runs_and_a_rejected_manager_is_killed() {
        // `prepare` adds `$0` and `$1`; the script prints them as its handle.
        let launched = shell(r#"echo "/tmp/$0-$1"; exec sleep 10"#)
            .launch_with(
                |command| {
                    command.args(["prepared", "too"]);
                },
                |handle, _| handle.as_str() == "/tmp/prepared-too",
            )
            .unwrap();
        let pid = launched.pid;
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
        let mut rejected_pid = 0;
        let err = shell(r#"echo "pipe:1"; exec sleep 10"#)
            .launch_with(
                |_| {},
                |_, pid| {
                    rejected_pid = pid;
                    false
                },
            )
            .unwrap_err();
        assert!(
            matches!(&err, LaunchError::Rejected { handle } if handle.as_str() == "pipe:1"),
            "{err}"
        );
        let proc = format!("/proc/{rejected_pid}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&proc).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!std::path::Path::new(&proc).exists(), "killed and reaped");
    }
}
