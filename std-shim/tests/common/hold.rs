//! Holding a manager's event loop between two chosen system calls, with
//! `ptrace`: the manager runs on at the next `resume` (or drop).

use std::time::{Duration, Instant};

/// The calls the event loop waits in.
#[cfg(target_arch = "x86_64")]
pub const EPOLL_WAITS: [i64; 3] = [libc::SYS_epoll_wait, libc::SYS_epoll_pwait, 441];
#[cfg(not(target_arch = "x86_64"))]
pub const EPOLL_WAITS: [i64; 2] = [libc::SYS_epoll_pwait, 441];

const INFO_ENTRY: u8 = 1;
const INFO_EXIT: u8 = 2;

/// The manager's main thread, traced.
pub struct Held {
    tid: i32,
    /// The system call it last entered.
    entered: i64,
    attached: bool,
}

impl Held {
    /// Seizes `tid` (the manager's pid: its event loop thread) and stops
    /// it where it is.
    pub fn seize(tid: u32) -> Self {
        let tid = tid as i32;
        // SAFETY: plain ptrace requests on a process of ours; no memory
        // of ours is handed over.
        let seized = unsafe {
            libc::ptrace(
                libc::PTRACE_SEIZE,
                tid,
                0,
                libc::PTRACE_O_TRACESYSGOOD as libc::c_long,
            )
        };
        assert_eq!(
            seized,
            0,
            "seize the manager: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: as above.
        let interrupted = unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) };
        assert_eq!(interrupted, 0, "{}", std::io::Error::last_os_error());
        let mut held = Self {
            tid,
            entered: -1,
            attached: true,
        };
        held.wait();
        held
    }

    /// Waits for the next stop; returns its status.
    fn wait(&mut self) -> i32 {
        let mut status = 0;
        // SAFETY: `status` is ours to write.
        let waited = unsafe { libc::waitpid(self.tid, &mut status, libc::__WALL) };
        assert_eq!(waited, self.tid, "{}", std::io::Error::last_os_error());
        assert!(libc::WIFSTOPPED(status), "the manager ended: {status:#x}");
        status
    }

    /// Runs it to its next system call stop (entry or exit); returns
    /// (entry?, the call's number or its return value).
    fn next_syscall(&mut self) -> (bool, i64) {
        let mut pass = 0;
        loop {
            // SAFETY: as in `seize`; `pass` is a signal number or zero.
            let resumed =
                unsafe { libc::ptrace(libc::PTRACE_SYSCALL, self.tid, 0, pass as libc::c_long) };
            assert_eq!(resumed, 0, "{}", std::io::Error::last_os_error());
            let status = self.wait();
            let sig = libc::WSTOPSIG(status);
            if sig != (libc::SIGTRAP | 0x80) {
                // A signal for the manager goes on to it; a stop of the
                // group (`status >> 16` set) carries none.
                pass = if status >> 16 == 0 { sig } else { 0 };
                continue;
            }
            let mut info = [0u8; 88];
            // SAFETY: the kernel writes at most `info.len()` bytes.
            let got = unsafe {
                libc::ptrace(
                    libc::PTRACE_GET_SYSCALL_INFO,
                    self.tid,
                    info.len(),
                    info.as_mut_ptr(),
                )
            };
            assert!(got > 0, "{}", std::io::Error::last_os_error());
            let word = i64::from_ne_bytes(info[24..32].try_into().unwrap());
            match info[0] {
                INFO_ENTRY => {
                    self.entered = word;
                    return (true, word);
                }
                INFO_EXIT => return (false, word),
                _ => pass = 0,
            }
        }
    }

    /// Runs it until it is about to wait for events.
    pub fn until_waiting(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let (true, nr) = self.next_syscall()
                && EPOLL_WAITS.contains(&nr)
            {
                return;
            }
        }
        panic!("the manager never waited for events");
    }

    /// Runs it until a wait for events returns some: it has them in hand
    /// and has not looked at them yet.
    pub fn until_events_in_hand(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let (false, ret) = self.next_syscall()
                && EPOLL_WAITS.contains(&self.entered)
                && ret > 0
            {
                return;
            }
        }
        panic!("the manager's waits returned no events");
    }

    /// Runs it until a wait for events returns (with events or none).
    pub fn until_wait_returns(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let (false, ret) = self.next_syscall()
                && EPOLL_WAITS.contains(&self.entered)
                && ret >= 0
            {
                return;
            }
        }
        panic!("the manager's waits never returned");
    }

    /// Lets it run on, untraced.
    pub fn resume(mut self) {
        self.detach();
    }

    fn detach(&mut self) {
        if std::mem::take(&mut self.attached) {
            // SAFETY: as in `seize`.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, self.tid, 0, 0) };
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.detach();
    }
}
