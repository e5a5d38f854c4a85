//! Starting a manager: fork/exec the executable, read its handshake line.
//!
//! The same steps as PyTorch's `start_manager`: the manager gets no stdin, its
//! stdout is a pipe we read until the newline, and its stderr is ours. The
//! manager calls `setsid` itself, so a terminal's Ctrl-C aimed at the client
//! does not take it down. Unlike PyTorch, the child is reaped when it exits
//! (no zombie) and a manager that never answers is a timeout, not a hang.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use libshm_core::handshake::{HandshakeError, HandshakeReader, ManagerHandle, NoHandle};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

/// A manager that printed its handle.
#[derive(Clone, Copy, Debug)]
pub struct Launched {
    /// Where to connect.
    pub handle: ManagerHandle,
    /// The manager's pid.
    pub pid: u32,
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
        let mut child = Command::new(&self.executable)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if self.quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                executable: self.executable.clone(),
                source,
            })?;
        let result = self.read_handshake(&mut child);
        let pid = child.id();
        if result.is_err() {
            let _ = child.kill();
        }
        reap_in_background(child);
        result.map(|handle| Launched { handle, pid })
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
