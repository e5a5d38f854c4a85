//! `shm-manager` starting where `$TMPDIR` cannot hold its socket, and the
//! `ERROR: <cause>; <fix>` line it prints (PyTorch shows it in the exception
//! it raises) when it cannot start at all.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Daemon, SHM_MANAGER, unique_name};

/// A real directory under /tmp whose path is `len` bytes long.
struct LongDir(PathBuf);

impl LongDir {
    fn new(len: usize) -> Self {
        let head = format!("/tmp/libshm-long-{}-", std::process::id());
        let mut path = format!("{head}{}", unique_name("d").replace('/', ""));
        while path.len() < len {
            path.push('x');
        }
        path.truncate(len);
        std::fs::create_dir_all(&path).unwrap();
        Self(PathBuf::from(path))
    }
}

impl Drop for LongDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `shm-manager` as PyTorch does (no arguments but a short shutdown
/// timeout) with `TMPDIR` set, and returns it with what it logged before
/// its handshake.
fn start_with_tmpdir(tmpdir: &Path) -> (Daemon, String) {
    let mut child = Command::new(SHM_MANAGER)
        .args(["--shutdown-timeout", "300ms"])
        .env("TMPDIR", tmpdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // Anything logged before the handshake is in the pipe by now; the rest
    // of the log (nothing, at the default level) is not needed.
    let mut stderr = child.stderr.take().unwrap();
    rustix::io::ioctl_fionbio(&stderr, true).unwrap();
    let mut log = Vec::new();
    let _ = stderr.read_to_end(&mut log);
    let daemon = Daemon {
        child,
        handle: line.trim_end().to_owned(),
    };
    (daemon, String::from_utf8_lossy(&log).into_owned())
}

#[test]
fn a_tmpdir_too_long_for_the_socket_falls_back_to_tmp_and_says_so() {
    // 74 bytes: one over what fits (107 - 34); PyTorch's manager fails here.
    let long = LongDir::new(74);
    let (mut daemon, log) = start_with_tmpdir(&long.0);
    assert!(
        daemon.handle.starts_with("/tmp/torch-shm-dir-") && daemon.handle.len() <= 107,
        "{}",
        daemon.handle
    );
    assert!(
        log.contains(long.0.to_str().unwrap())
            && log.contains("108-byte path, over the 107 bytes")
            && log.contains("serving from /tmp/torch-shm-dir-")
            && log.contains("set TMPDIR to a shorter directory"),
        "the warning names the directory, the limit, where it went and the fix:\n{log}"
    );
    // And it serves there.
    let mut client = daemon.connect();
    client.register(&unique_name("fallback"));
    drop(client);
    assert!(daemon.wait_exit(Duration::from_secs(5)).is_some());
}

#[test]
fn a_tmpdir_that_fits_exactly_is_used_without_a_warning() {
    let fits = LongDir::new(73);
    let (daemon, log) = start_with_tmpdir(&fits.0);
    assert!(
        daemon.handle.starts_with(fits.0.to_str().unwrap()),
        "{}",
        daemon.handle
    );
    assert_eq!(daemon.handle.len(), 107);
    assert!(!log.contains("instead"), "{log}");
}

#[test]
fn a_missing_tmpdir_falls_back_too() {
    let missing = PathBuf::from(format!("/tmp/libshm-missing-{}", std::process::id()));
    let (daemon, log) = start_with_tmpdir(&missing);
    assert!(daemon.handle.starts_with("/tmp/torch-shm-dir-"));
    assert!(
        log.contains("No such file") && log.contains("set TMPDIR to a directory you can write"),
        "{log}"
    );
}

fn start_failing(args: &[&str]) -> Output {
    Command::new(SHM_MANAGER)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Exactly one stdout line, `ERROR: <cause>; <fix>`, exit status 1, and the
/// same cause and fix on stderr. Returns the line.
fn error_line(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let body = lines[0]
        .strip_prefix("ERROR: ")
        .unwrap_or_else(|| panic!("not an ERROR line: {stdout}"));
    let (cause, fix) = body
        .split_once("; ")
        .unwrap_or_else(|| panic!("no '; <fix>' in {body:?}"));
    assert!(!cause.is_empty() && !fix.is_empty(), "{body}");
    assert!(stderr.contains(body), "stderr has it too: {stderr}");
    lines[0].to_owned()
}

#[test]
fn start_up_failures_are_one_error_line_with_the_cause_and_the_fix() {
    let line = error_line(&start_failing(&["--run-dir", "/nonexistent-libshm-dir"]));
    assert!(
        line.contains("/nonexistent-libshm-dir: No such file")
            && line.contains("create /nonexistent-libshm-dir or pass a --run-dir"),
        "{line}"
    );

    let long = LongDir::new(90);
    let line = error_line(&start_failing(&["--run-dir", long.0.to_str().unwrap()]));
    assert!(
        line.contains("124-byte path") && line.contains("pass a --run-dir of at most 73 bytes"),
        "{line}"
    );

    let line = error_line(&start_failing(&["--name-prefix", "torch_"]));
    assert!(
        line.contains("--name-prefix") && line.contains("such as /torch_"),
        "{line}"
    );

    let line = error_line(&start_failing(&[
        "--adopt",
        "/tmp/not-a-manager/manager.sock",
    ]));
    assert!(
        line.contains("not a manager directory") && line.contains("without --adopt"),
        "{line}"
    );

    // A pipe manager started by hand, without its pipes.
    let line = error_line(&start_failing(&[
        "--transport",
        "pipe",
        "--pipe-fds",
        "40,41",
    ]));
    assert!(
        line.contains("--pipe-fds 40,41") && line.contains("ChildPipes"),
        "{line}"
    );
}
