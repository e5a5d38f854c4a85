//! A pipe manager's handle, `pipe:<pid>`, and the file descriptors it is
//! started with.
//!
//! A Unix manager's handle is a socket path that any process of its user can
//! connect to. A pipe manager has no address: its one client holds the only
//! way in. Its handle still follows the handshake's rules (so `ERROR: ...`
//! reporting and logging work the same way) and names the manager's pid, which
//! is what a person reading a log wants to know. Other processes that are
//! handed a `pipe:` handle cannot reach that manager and use their own.

use std::os::fd::RawFd;

use libshm_core::handshake::ManagerHandle;

/// The prefix of every pipe manager's handle.
pub const HANDLE_PREFIX: &str = "pipe:";

/// The descriptor the manager reads requests (frames) from.
pub const REQUEST_FD: RawFd = 3;

/// The descriptor the manager writes replies (`OK`/`NO`) to.
pub const REPLY_FD: RawFd = 4;

/// The handle of the pipe manager running as `pid`.
pub fn pipe_handle(pid: u32) -> ManagerHandle {
    // `pipe:` and at most ten digits: ASCII, no control bytes, far below
    // HANDLE_MAX, so validation cannot fail.
    ManagerHandle::new(format!("{HANDLE_PREFIX}{pid}").as_bytes())
        .expect("a pipe handle is a valid handle")
}

/// Whether `handle` names a pipe manager (which no other process can reach).
pub fn is_pipe_handle(handle: &ManagerHandle) -> bool {
    handle.as_bytes().starts_with(HANDLE_PREFIX.as_bytes())
}

/// The pid in a well-formed pipe handle.
pub fn pipe_handle_pid(handle: &ManagerHandle) -> Option<u32> {
    let digits = handle.as_str().strip_prefix(HANDLE_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&pid| pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_through_the_handshake_rules() {
        for pid in [1, 42, 4_194_304, u32::MAX] {
            let handle = pipe_handle(pid);
            assert_eq!(handle.as_str(), format!("pipe:{pid}"));
            assert!(is_pipe_handle(&handle));
            assert_eq!(pipe_handle_pid(&handle), Some(pid));
        }
    }

    #[test]
    fn other_handles_are_not_pipe_handles() {
        let socket = ManagerHandle::new(b"/tmp/torch-shm-dir-abc123/manager.sock").unwrap();
        assert!(!is_pipe_handle(&socket));
        assert_eq!(pipe_handle_pid(&socket), None);
        for bad in ["pipe:", "pipe:x1", "pipe:0", "pipe:+1", "pipe:99999999999"] {
            let handle = ManagerHandle::new(bad.as_bytes()).unwrap();
            assert!(is_pipe_handle(&handle), "{bad}");
            assert_eq!(pipe_handle_pid(&handle), None, "{bad}");
        }
    }
}
