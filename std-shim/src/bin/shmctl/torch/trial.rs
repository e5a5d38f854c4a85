//! Proving an installed manager works: start it as PyTorch does, read its
//! handle line, connect, disconnect, and see it exit on its own afterwards.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longer than any manager takes to print its handle (PyTorch's: 170 ms).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A manager exits 2 s after its last client; this leaves room for a busy machine.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the trial saw.
#[derive(Debug)]
pub(crate) struct Trial {
    /// The handle the manager printed.
    pub(crate) handle: String,
    /// From our disconnect to its exit.
    pub(crate) exited_after: Duration,
}

/// Starts the manager at `path` with PyTorch's `argv[0]` and no arguments.
/// The error says what went wrong, for the user.
pub(crate) fn run(path: &Path) -> Result<Trial, String> {
    let mut child = Command::new(path)
        .arg0("torch_shm_manager")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("could not start it: {err}"))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Some(out) = stdout {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let _ = line_tx.send(line);
    });
    // Its log, for the error message; read to its end so the pipe never fills.
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut err) = stderr {
            let _ = err.read_to_string(&mut text);
        }
        text
    });
    let fail = |child: &mut std::process::Child, why: String| {
        let _ = child.kill();
        let _ = child.wait();
        why
    };
    let line = match line_rx.recv_timeout(HANDSHAKE_TIMEOUT) {
        Ok(line) => line,
        Err(_) => return Err(fail(&mut child, "it printed no handle within 10 s".into())),
    };
    let handle = line.trim_end().to_owned();
    if !line.ends_with('\n') || handle.starts_with("ERROR") || handle.is_empty() {
        let status = child.wait().ok();
        let log = log.join().unwrap_or_default();
        let detail = log.lines().last().unwrap_or("").trim().to_owned();
        return Err(format!(
            "it printed {handle:?} instead of a socket path (exit {}){}",
            status.map_or_else(|| "unknown".into(), |s| s.to_string()),
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ));
    }
    match UnixStream::connect(&handle) {
        Ok(stream) => drop(stream),
        Err(err) => {
            return Err(fail(
                &mut child,
                format!("connecting to {handle} failed: {err}"),
            ));
        }
    }
    let left = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                return Ok(Trial {
                    handle,
                    exited_after: left.elapsed(),
                });
            }
            Ok(Some(status)) => return Err(format!("it exited with {status} after serving")),
            Ok(None) if left.elapsed() > EXIT_TIMEOUT => {
                return Err(fail(
                    &mut child,
                    "it did not exit within 10 s of its last client leaving".into(),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => return Err(fail(&mut child, format!("waiting for it failed: {err}"))),
        }
    }
}
