//! Whether more tasks are runnable than the manager has CPUs
//! (`/proc/loadavg`'s count of runnable tasks, machine-wide, against the
//! CPUs its affinity and CPU quota give it).
//!
//! The pressure stall count alone cannot tell a busy machine from a virtual
//! one waking an idle CPU: a task woken onto a halted virtual CPU waits for
//! the host to run that CPU, and the kernel counts that as waiting for a
//! CPU. Here one strict client at 25,000 round trips a second made tasks
//! "wait" 6.5–7 % of the time with the other CPU idle, and spinning rested.
//! A task can only be queued behind another's work when more tasks are
//! runnable than there are CPUs, and the count says whether that happened.
//! It is compared with the manager's own CPUs, not the machine's: in a
//! container pinned to two of eight CPUs, three runnable tasks crowd it.
//! Tasks elsewhere on the machine count too, which errs towards resting.
//! The affinity is read again at every pressure sample: a manager moved onto
//! fewer CPUs after it started must not judge by the CPUs it had.

use std::fs::File;
use std::os::unix::fs::FileExt;

const LOADAVG: &str = "/proc/loadavg";

/// `/proc/loadavg`, kept open so a look is one `pread`, and the CPU count.
#[derive(Debug)]
pub(crate) struct Crowding {
    loadavg: File,
    /// The CPUs at start (affinity and quota): never more than these.
    most_cpus: u32,
    /// The CPUs at the last [`refresh`](Self::refresh).
    cpus: u32,
}

impl Crowding {
    /// `None` where the counts cannot be read.
    pub(crate) fn open() -> Option<Self> {
        let cpus = u32::try_from(std::thread::available_parallelism().ok()?.get()).ok()?;
        let mut crowding = Self {
            loadavg: File::open(LOADAVG).ok()?,
            most_cpus: cpus,
            cpus,
        };
        crowding.refresh();
        crowding.is_crowded().map(|_| crowding)
    }

    /// Reads this thread's affinity again (one system call; the quota is
    /// taken as it was at start).
    pub(crate) fn refresh(&mut self) {
        self.cpus = rustix::thread::sched_getaffinity(None)
            .map_or(self.most_cpus, |set| set.count().clamp(1, self.most_cpus));
    }

    /// Whether more tasks are runnable now, the caller included, than there
    /// are CPUs.
    pub(crate) fn is_crowded(&self) -> Option<bool> {
        let mut buf = [0u8; 128];
        let len = self.loadavg.read_at(&mut buf, 0).ok()?;
        Some(runnable(buf.get(..len)?)? > self.cpus)
    }
}

/// The `3` of `0.35 1.22 1.26 3/78 22313`.
fn runnable(text: &[u8]) -> Option<u32> {
    let field = core::str::from_utf8(text)
        .ok()?
        .split_ascii_whitespace()
        .nth(3)?;
    field.split_once('/')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_runnable_count() {
        assert_eq!(runnable(b"0.35 1.22 1.26 3/78 22313\n"), Some(3));
        for text in [
            &b""[..],
            b"0.35 1.22 1.26\n",
            b"0.35 1.22 1.26 3 22313\n",
            b"0.35 1.22 1.26 x/78 1\n",
            b"\xff",
        ] {
            assert_eq!(runnable(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_thread_moved_onto_one_cpu_judges_by_one() {
        let mut crowding = Crowding::open().expect("/proc/loadavg and the CPU count");
        let before = rustix::thread::sched_getaffinity(None).unwrap();
        let first = (0..rustix::thread::CpuSet::MAX_CPU)
            .find(|&cpu| before.is_set(cpu))
            .unwrap();
        let mut one = rustix::thread::CpuSet::new();
        one.set(first);
        rustix::thread::sched_setaffinity(None, &one).unwrap();
        crowding.refresh();
        let judged_by = crowding.cpus;
        rustix::thread::sched_setaffinity(None, &before).unwrap();
        assert_eq!(judged_by, 1);
        crowding.refresh();
        assert_eq!(crowding.cpus, crowding.most_cpus.min(before.count()));
    }

    #[test]
    fn reads_this_machine() {
        let crowding = Crowding::open().expect("/proc/loadavg and the CPU count");
        assert!(crowding.cpus >= 1);
        assert!(crowding.is_crowded().is_some());
    }
}
