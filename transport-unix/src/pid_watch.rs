//! Watching client processes end, so that their holds end with them.
//!
//! A pidfd per process (`pidfd_open`), in the event loop's epoll set: it turns
//! readable when the process exits, and it names that process even if its pid
//! is reused. Where pidfds are unavailable (kernels before 5.3, seccomp), a
//! periodic `kill(pid, 0)` plus the process's start time stand in.
//!
//! Whether a pid from a frame can be trusted to name its sender is decided
//! here too: the sender's pid namespace must be ours (else its `getpid()` means
//! nothing to us), and the process must be alive and run as our user.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags};

use crate::listener::PeerPidfd;

/// How often processes without a pidfd are checked.
pub(crate) const POLLED_INTERVAL: Duration = Duration::from_millis(250);

/// How long after the start of a wait that reported no end for a process it
/// still counts as running without a look at its pidfd. Shorter than the
/// path from a process's end to a new process given its pid writing a frame
/// (the end, its reaping by the parent, a clone and a write). The manager's
/// own clock measures it from before the call, since the kernel looks at
/// the ready list at some unknown moment inside it: a manager preempted or
/// stopped after that look (on its way back from the call, which a stop
/// ends with `EINTR` and no events) or later looks.
const FRESH_WAIT: Duration = Duration::from_micros(10);

/// The processes being watched.
pub(crate) struct PidWatches {
    uid: u32,
    /// Pid to its pidfd and the number of waits begun before it was made.
    fds: HashMap<i32, (OwnedFd, u64)>,
    /// Waits begun on the epoll set the pidfds are in.
    waits: u64,
    /// When the last wait began.
    wait_began: Instant,
    /// The last wait, if it returned every ready event: when it began and
    /// the pids whose ends it reported.
    last_wait: Option<(Instant, Vec<i32>)>,
    /// Pid to start time (clock ticks since boot), for the fallback.
    polled: HashMap<i32, u64>,
    /// Pid to a pidfd of the process found running under it while the end
    /// of the one watched as the pid was pending (see
    /// `Effects::watch_successor`); out of the epoll set until promoted.
    successors: HashMap<i32, OwnedFd>,
    /// Cleared once `pidfd_open` said it does not exist here.
    pidfds_work: bool,
    polled_at: Instant,
}

impl PidWatches {
    /// Watches nothing yet; trusts processes of `uid` only.
    pub(crate) fn new(uid: u32) -> Self {
        Self {
            uid,
            fds: HashMap::new(),
            waits: 0,
            wait_began: Instant::now(),
            last_wait: None,
            polled: HashMap::new(),
            successors: HashMap::new(),
            pidfds_work: true,
            polled_at: Instant::now(),
        }
    }

    /// Starts watching `pid` if it can be trusted; false if not (or if it
    /// cannot be watched). Watching an already watched pid is a no-op.
    pub(crate) fn watch(&mut self, pid: i32) -> bool {
        self.watch_in(pid, Reach::OurNamespace)
    }

    /// As [`PidWatches::watch`], for a pid the kernel gave (a connection's
    /// peer, named in our namespace): a process of a nested pid namespace is
    /// trusted too.
    pub(crate) fn watch_peer(&mut self, pid: i32) -> bool {
        self.watch_in(pid, Reach::NestedToo)
    }

    fn watch_in(&mut self, pid: i32, reach: Reach) -> bool {
        if let Some((fd, _)) = self.fds.get(&pid) {
            // The process watched under this pid may have exited since, and
            // the pid gone to a new one: not the process watched, and too
            // soon to tell who it is.
            return !has_exited(fd.as_fd());
        }
        if let Some(&started) = self.polled.get(&pid) {
            // The same, for a process watched by polling: still the one
            // that started then, or not to be trusted.
            return start_time(pid) == Some(started);
        }
        // Zero and negative pids name groups of processes, never a sender
        // (and `Pid` must not be given one).
        if pid <= 0 {
            return false;
        }
        let Some(raw) = Pid::from_raw(pid) else {
            return false;
        };
        if self.pidfds_work {
            match self.open_trusted_pidfd(raw, reach) {
                Ok(fd) => {
                    let trusted = fd.is_some();
                    if let Some(fd) = fd {
                        self.fds.insert(pid, (fd, self.waits));
                    }
                    return trusted;
                }
                Err(Errno::NOSYS | Errno::PERM | Errno::ACCESS) => self.pidfds_work = false,
                Err(_) => return false,
            }
        }
        let Some(started) = start_time(pid) else {
            return false;
        };
        let trusted = self.is_ours(pid, reach) && start_time(pid) == Some(started);
        if trusted {
            self.polled.insert(pid, started);
        }
        trusted
    }

    /// Starts watching, apart, the process running under `pid` now (the one
    /// watched as `pid` has ended, its end not reported yet), if it can be
    /// trusted; if one is watched so already, whether it still runs (once
    /// it has ended, the manager retires it before it watches the next).
    /// Only through a pidfd: no start time tells a successor from the
    /// process it follows as cheaply.
    pub(crate) fn watch_successor(&mut self, pid: i32) -> bool {
        if let Some(fd) = self.successors.get(&pid) {
            return !has_exited(fd.as_fd());
        }
        let Some(raw) = Pid::from_raw(pid).filter(|_| pid > 0 && self.pidfds_work) else {
            return false;
        };
        let Ok(Some(fd)) = self.open_trusted_pidfd(raw, Reach::OurNamespace) else {
            return false;
        };
        self.successors.insert(pid, fd);
        true
    }

    /// A pidfd for the process running under `pid`, if it can be trusted
    /// (`None` if not). /proc is read only once the pidfd pins the process,
    /// and the process must not have exited since: then /proc/<pid> was it.
    fn open_trusted_pidfd(&self, pid: Pid, reach: Reach) -> Result<Option<OwnedFd>, Errno> {
        let fd = rustix::process::pidfd_open(pid, PidfdFlags::empty())?;
        let trusted = self.is_ours(pid.as_raw_nonzero().get(), reach) && !has_exited(fd.as_fd());
        Ok(trusted.then_some(fd))
    }

    /// Whether the successor watched under `pid` has ended (or none is).
    pub(crate) fn successor_has_ended(&self, pid: i32) -> bool {
        self.successors
            .get(&pid)
            .is_none_or(|fd| has_exited(fd.as_fd()))
    }

    /// Watches the successor under `pid` as `pid` from now on (`keep`), or
    /// forgets it. False if there is none, or the pid is watched already.
    pub(crate) fn promote_successor(&mut self, pid: i32, keep: bool) -> bool {
        let Some(fd) = self.successors.remove(&pid) else {
            return false;
        };
        if !keep || self.fds.contains_key(&pid) || self.polled.contains_key(&pid) {
            return false;
        }
        self.fds.insert(pid, (fd, self.waits));
        true
    }

    /// Whether `pid` is watched by polling.
    pub(crate) fn has_polled_pid(&self, pid: i32) -> bool {
        self.polled.contains_key(&pid)
    }

    /// Stops watching `pid`.
    pub(crate) fn unwatch(&mut self, pid: i32) {
        self.fds.remove(&pid);
        self.polled.remove(&pid);
    }

    /// Whether the process watched as `pid` has ended (and not been
    /// reported yet); false for a pid not watched.
    pub(crate) fn has_ended(&self, pid: i32) -> bool {
        if let Some((fd, made_after)) = self.fds.get(&pid) {
            // A wait that has just begun would have reported its end.
            let running_at_last_wait = *made_after < self.waits
                && self.last_wait.as_ref().is_some_and(|(began, ended)| {
                    began.elapsed() < FRESH_WAIT && !ended.contains(&pid)
                });
            return !running_at_last_wait && has_exited(fd.as_fd());
        }
        self.polled
            .get(&pid)
            .is_some_and(|&started| start_time(pid) != Some(started))
    }

    /// The descriptor `pid` is watched through, if it is: readable once the
    /// process has ended.
    pub(crate) fn pidfd(&self, pid: i32) -> Option<BorrowedFd<'_>> {
        self.fds.get(&pid).map(|(fd, _)| fd.as_fd())
    }

    /// A wait on the epoll set the pidfds are in begins.
    pub(crate) fn wait_begins(&mut self) {
        self.waits += 1;
        self.last_wait = None;
        self.wait_began = Instant::now();
    }

    /// The wait returned, reporting the ends of `ended`; `complete` if it
    /// returned every ready event (the others' ends are not known otherwise).
    pub(crate) fn wait_returned(&mut self, ended: impl Iterator<Item = i32>, complete: bool) {
        self.last_wait = complete.then(|| (self.wait_began, ended.collect()));
    }

    /// Whether some pids are watched without a descriptor (the loop must
    /// wake up every [`POLLED_INTERVAL`] for them).
    pub(crate) fn has_polled(&self) -> bool {
        !self.polled.is_empty()
    }

    /// Appends to `exited` the polled pids that ended since the last check,
    /// if a check is due. They stay watched until [`PidWatches::unwatch`]
    /// (after what they sent has been read), so that meanwhile a new process
    /// given the pid is not taken for the one that ended, as with a pidfd.
    pub(crate) fn check_polled(&mut self, exited: &mut Vec<i32>) {
        if self.polled.is_empty() || self.polled_at.elapsed() < POLLED_INTERVAL {
            return;
        }
        self.polled_at = Instant::now();
        exited.extend(
            self.polled
                .iter()
                .filter(|&(&pid, &started)| start_time(pid) != Some(started))
                .map(|(&pid, _)| pid),
        );
    }

    /// Whether `pid` is a process (not one of its threads) that runs as our
    /// user in our pid namespace (or, with [`Reach::NestedToo`], one nested
    /// in it). A thread's id has a `/proc` entry too (hidden from listings,
    /// not from lookups): trusted by the watch by polling, a frame's holds
    /// would end with that thread, its process running on. `pidfd_open`
    /// refuses a thread's id the same way.
    fn is_ours(&self, pid: i32, reach: Reach) -> bool {
        let Some(status) = ProcStatus::read(pid) else {
            return false;
        };
        let in_reach = match reach {
            Reach::OurNamespace => status.nspid_levels == 1,
            Reach::NestedToo => status.nspid_levels >= 1,
        };
        status.tgid == Some(pid) && status.euid == Some(self.uid) && in_reach
    }
}

/// Which pid namespaces a watched process may run in.
#[derive(Clone, Copy)]
enum Reach {
    /// Ours: a frame's pid names a process only there.
    OurNamespace,
    /// Ours or one nested in it: a pid the kernel translated for us.
    NestedToo,
}

/// Whether the pids in frames from `peer_pid`'s connection name processes in
/// our pid namespace: the peer (as the kernel reports it to us) sees only one
/// level of pids, ours.
fn same_pid_namespace(peer_pid: i32) -> bool {
    ProcStatus::read(peer_pid).is_some_and(|status| status.nspid_levels == 1)
}

/// What the manager needs of the process that connected, read at accept:
/// whether it runs in our pid namespace (so pids in its connection's
/// frames name our processes), and when it started.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PeerFacts {
    pub(crate) in_our_namespace: bool,
    pub(crate) started: Option<u64>,
}

impl PeerFacts {
    /// Read under `pid` from /proc, and kept only if `pidfd` (the peer's
    /// own, from the socket) says the peer still ran after the reads: else
    /// the pid may have named another process by then, and nothing is
    /// known (its frames' pids are not trusted: a leak at worst, where a
    /// process of ours taken for it would have its pids' ends reaped).
    /// Where the kernel has no peer pidfds (before 6.5), what /proc says at
    /// accept.
    pub(crate) fn read(pid: Option<i32>, pidfd: &PeerPidfd) -> Self {
        let Some(pid) = pid else {
            return Self::default();
        };
        if matches!(pidfd, PeerPidfd::Refused) {
            return Self::default();
        }
        let facts = Self {
            in_our_namespace: same_pid_namespace(pid),
            started: start_time(pid),
        };
        match pidfd {
            PeerPidfd::Given(fd) if has_exited(fd.as_fd()) => Self::default(),
            _ => facts,
        }
    }
}

/// Whether `pid` names no running process of our pid namespace: none at
/// all, or one that has exited and not been reaped yet.
pub(crate) fn is_gone(pid: i32) -> bool {
    // Zero and negative pids name groups, never a sender (and `Pid` must
    // not be given one).
    if pid <= 0 {
        return false;
    }
    let Some(raw) = Pid::from_raw(pid) else {
        return false;
    };
    match rustix::process::pidfd_open(raw, PidfdFlags::empty()) {
        Ok(fd) => has_exited(fd.as_fd()),
        Err(Errno::SRCH) => true,
        // No pidfds: a missing or zombie /proc entry says the same.
        Err(_) => matches!(proc_stat(pid), Ok(None)) || has_no_proc_entry(pid),
    }
}

fn has_exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    matches!(rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default())), Ok(n) if n > 0)
}

/// What `/proc/<pid>/status` says that we need.
struct ProcStatus {
    /// The process the entry's thread belongs to.
    tgid: Option<i32>,
    euid: Option<u32>,
    /// Entries on the `NSpid:` line: 1 when the process is in the namespace
    /// of the `/proc` we read (ours).
    nspid_levels: usize,
}

impl ProcStatus {
    fn read(pid: i32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let mut status = Self {
            tgid: None,
            euid: None,
            nspid_levels: 0,
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("Tgid:") {
                status.tgid = rest.trim().parse().ok();
            } else if let Some(rest) = line.strip_prefix("Uid:") {
                status.euid = rest.split_whitespace().nth(1).and_then(|u| u.parse().ok());
            } else if let Some(rest) = line.strip_prefix("NSpid:") {
                status.nspid_levels = rest.split_whitespace().count();
            }
        }
        // Kernels before 4.1 have no NSpid line: there, nothing tells.
        Some(status)
    }
}

/// Whether some process (or zombie) has `pid`: one signal-free system call,
/// for weeding out pids that are surely gone where a start time read for
/// each would cost too much. A pid given to a later process passes.
pub(crate) fn pid_exists(pid: i32) -> bool {
    // Zero and negative pids name groups.
    if pid <= 0 {
        return false;
    }
    Pid::from_raw(pid)
        .is_some_and(|raw| rustix::process::test_kill_process(raw) != Err(Errno::SRCH))
}

/// Field 22 of `/proc/<pid>/stat`: when the running process `pid` started.
/// A pid reused by another process has another start time.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).ok().flatten()
}

/// The start time (field 22) of a running `pid` from `/proc/<pid>/stat`;
/// `Ok(None)` for a zombie or a process being reaped. A zombie whose other
/// threads still run (its main thread called `pthread_exit`) runs: the
/// process lives, and so must what it holds.
fn proc_stat(pid: i32) -> std::io::Result<Option<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold anything.
    let bad = || std::io::Error::from(std::io::ErrorKind::InvalidData);
    let after_name = &text[text.rfind(')').ok_or_else(bad)? + 1..];
    let mut fields = after_name.split_whitespace();
    let exited = matches!(fields.next(), Some("Z" | "X"));
    // Fields 20 (the thread count, the exited main thread included) and 22.
    let threads: u64 = fields
        .nth(16)
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    if exited && threads <= 1 {
        return Ok(None);
    }
    let start = fields.nth(1).and_then(|start| start.parse().ok());
    start.map(Some).ok_or_else(bad)
}

/// The parent (field 4 of `/proc/<pid>/stat`) of `pid`, running or a
/// zombie; `None` once it is reaped, or if `/proc` cannot tell.
pub(crate) fn parent_of(pid: i32) -> Option<i32> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything.
    let after_name = &text[text.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `/proc` has no entry for `pid`.
fn has_no_proc_entry(pid: i32) -> bool {
    std::fs::metadata(format!("/proc/{pid}"))
        .is_err_and(|err| err.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that runs until killed.
    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_child_is_watched_until_it_exits_and_the_dead_are_not_trusted() {
        let uid = rustix::process::geteuid().as_raw();
        let mut watches = PidWatches::new(uid);
        let mut child = sleeper();
        let pid = child.id() as i32;
        assert!(same_pid_namespace(std::process::id() as i32));
        assert!(watches.watch(pid));
        let fd = watches.pidfd(pid).unwrap();
        assert!(!has_exited(fd));
        child.kill().unwrap();
        child.wait().unwrap();
        let fd = watches.pidfd(pid).unwrap();
        assert!(has_exited(fd));
        watches.unwatch(pid);
        assert!(!watches.watch(pid), "a reaped pid is not trusted");
        assert!(!watches.watch(0) && !watches.watch(-1));
    }

    #[test]
    fn a_fresh_wait_stands_for_a_look_only_at_the_pidfds_it_covered_and_did_not_report() {
        let uid = rustix::process::geteuid().as_raw();
        let mut watches = PidWatches::new(uid);
        let mut covered = sleeper();
        let a = covered.id() as i32;
        assert!(watches.watch(a));
        covered.kill().unwrap();
        covered.wait().unwrap();
        // Ended, unreported: a wait that has just returned says otherwise
        // for a pidfd it covered (the end came after it), and no new process
        // can have the pid yet.
        assert!(
            (0..1_000).any(|_| {
                watches.wait_begins();
                watches.wait_returned(std::iter::empty(), true);
                !watches.has_ended(a)
            }),
            "a fresh wait never stood for a look"
        );
        watches.wait_returned(std::iter::once(a), true);
        assert!(watches.has_ended(a), "its end reported by the wait");
        watches.wait_returned(std::iter::empty(), false);
        assert!(watches.has_ended(a), "a wait that left events unreported");
        watches.wait_returned(std::iter::empty(), true);
        std::thread::sleep(FRESH_WAIT * 10);
        assert!(watches.has_ended(a), "a stale wait");

        watches.wait_begins();
        let mut made_later = sleeper();
        let b = made_later.id() as i32;
        assert!(watches.watch(b));
        made_later.kill().unwrap();
        made_later.wait().unwrap();
        watches.wait_returned(std::iter::empty(), true);
        assert!(watches.has_ended(b), "made after the wait began");
    }

    #[test]
    fn a_wait_that_began_long_ago_stands_for_no_look() {
        let uid = rustix::process::geteuid().as_raw();
        let mut watches = PidWatches::new(uid);
        let mut child = sleeper();
        let pid = child.id() as i32;
        assert!(watches.watch(pid));
        // Waits that began, had the kernel look at the ready list at once
        // (nothing), and were stopped or preempted on their way back for
        // longer than `FRESH_WAIT`: the process ended meanwhile, and its pid
        // may be a new process's by the time the waits return.
        child.kill().unwrap();
        child.wait().unwrap();
        let stood = (0..100)
            .filter(|_| {
                watches.wait_begins();
                std::thread::sleep(FRESH_WAIT * 10);
                watches.wait_returned(std::iter::empty(), true);
                !watches.has_ended(pid)
            })
            .count();
        assert_eq!(
            stood, 0,
            "waits timed from their return stood for a look at a pidfd that turned \
             readable after the kernel's look"
        );
    }

    #[test]
    fn processes_of_another_user_are_not_trusted() {
        let mut watches = PidWatches::new(rustix::process::geteuid().as_raw() + 1);
        assert!(!watches.watch(std::process::id() as i32));
    }

    #[test]
    fn the_fallback_does_not_trust_a_pid_now_another_process_s() {
        let uid = rustix::process::geteuid().as_raw();
        let mut watches = PidWatches::new(uid);
        watches.pidfds_work = false;
        let mut child = sleeper();
        let pid = child.id() as i32;
        assert!(watches.watch(pid) && watches.watch(pid));
        // As if the process watched had ended and this one got its pid:
        // another start time.
        *watches.polled.get_mut(&pid).unwrap() -= 1;
        assert!(!watches.watch(pid), "a pid reused since it was watched");
        assert!(watches.has_ended(pid));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A child whose main thread has exited while another thread runs (a
    /// zombie leader), until it is killed; reaped on drop.
    struct ZombieLeader(i32);

    impl ZombieLeader {
        fn start() -> Self {
            // SAFETY: the child only starts a thread and ends its own; it
            // never returns into the test harness.
            let child = unsafe { libc::fork() };
            assert!(child >= 0, "fork failed");
            if child == 0 {
                std::thread::spawn(|| std::thread::sleep(Duration::from_secs(30)));
                // SAFETY: ends this thread only (`exit`, not `exit_group`).
                unsafe { libc::syscall(libc::SYS_exit, 0) };
                unreachable!("the thread has exited");
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while !std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .unwrap()
                    .trim_start()
                    .starts_with('Z')
            }) {
                assert!(Instant::now() < deadline, "the main thread did not exit");
                std::thread::sleep(Duration::from_millis(5));
            }
            Self(child)
        }

        fn kill(&self) {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(10);
            // The remaining thread goes; the process is a zombie then.
            while proc_stat(self.0).is_ok_and(|started| started.is_some()) {
                assert!(Instant::now() < deadline, "the process did not end");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    impl Drop for ZombieLeader {
        fn drop(&mut self) {
            let mut status = 0;
            // SAFETY: our own child.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, &raw mut status, 0);
            }
        }
    }

    #[test]
    fn a_process_whose_main_thread_exited_runs_until_its_last_thread_ends() {
        let uid = rustix::process::geteuid().as_raw();
        let leader = ZombieLeader::start();
        let pid = leader.0;
        let mut polling = PidWatches::new(uid);
        polling.pidfds_work = false;
        assert!(
            polling.watch(pid),
            "a live process, though its leader is a zombie"
        );
        let mut with_pidfd = PidWatches::new(uid);
        assert!(with_pidfd.watch(pid));
        polling.polled_at -= POLLED_INTERVAL;
        let mut exited = Vec::new();
        polling.check_polled(&mut exited);
        assert!(exited.is_empty(), "taken for ended: {exited:?}");
        assert!(!polling.has_ended(pid) && !with_pidfd.has_ended(pid));
        assert!(!is_gone(pid));

        leader.kill();
        polling.polled_at -= POLLED_INTERVAL;
        polling.check_polled(&mut exited);
        assert_eq!(exited, [pid]);
        assert!(polling.has_ended(pid) && with_pidfd.has_ended(pid));
        assert!(is_gone(pid));
    }

    #[test]
    fn a_threads_id_is_no_process_s_pid_with_or_without_pidfds() {
        let uid = rustix::process::geteuid().as_raw();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            tid_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            let _ = end_rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        assert_ne!(tid, std::process::id() as i32);
        let mut polling = PidWatches::new(uid);
        polling.pidfds_work = false;
        let mut with_pidfd = PidWatches::new(uid);
        assert!(!polling.watch(tid), "a thread's id trusted by polling");
        assert!(!with_pidfd.watch(tid), "a thread's id trusted with pidfds");
        assert!(polling.watch(std::process::id() as i32));
        drop(end_tx);
        thread.join().unwrap();
    }

    #[test]
    fn the_fallback_notices_an_exit() {
        let uid = rustix::process::geteuid().as_raw();
        let mut watches = PidWatches::new(uid);
        watches.pidfds_work = false;
        let mut child = sleeper();
        let pid = child.id() as i32;
        assert!(watches.watch(pid));
        assert!(watches.has_polled());
        child.kill().unwrap();
        child.wait().unwrap();
        watches.polled_at -= POLLED_INTERVAL;
        let mut exited = Vec::new();
        watches.check_polled(&mut exited);
        assert_eq!(exited, [pid]);
        // Watched until the driver has read what it sent and lets go: its
        // pid is not trusted meanwhile, whoever has it now.
        assert!(watches.has_polled() && !watches.watch(pid));
        watches.unwatch(pid);
        assert!(!watches.has_polled());
    }
}
