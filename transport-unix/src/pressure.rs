//! How long tasks have waited for a CPU, from the kernel's pressure stall
//! information (`/proc/pressure/cpu`).
//!
//! A spinning manager looks busy to the scheduler, so a woken client may be
//! queued behind another task instead of on the manager's CPU; on a machine
//! with one core kept busy that doubled PyTorch's allocation time. Tasks then
//! wait for a CPU, which the kernel counts here, while a spinning manager on
//! an otherwise idle machine makes nobody wait.

use std::fs::File;
use std::os::unix::fs::FileExt;

const PATH: &str = "/proc/pressure/cpu";
/// This thread's own scheduling counters: a manager that yields to a client
/// on its CPU waits too, and that wait is not another task's.
const OWN_PATH: &str = "/proc/thread-self/schedstat";

/// The open pressure files, kept open so a sample is a `pread` each.
#[derive(Debug)]
pub(crate) struct CpuPressure {
    file: File,
    own: Option<File>,
}

impl CpuPressure {
    /// `None` where the kernel does not count pressure (no `CONFIG_PSI`, or
    /// `psi=0`). Open it on the thread whose own waits are to be left out.
    pub(crate) fn open() -> Option<Self> {
        let mut pressure = Self {
            file: File::open(PATH).ok()?,
            own: File::open(OWN_PATH).ok(),
        };
        pressure.others_waited_us().map(|_| pressure)
    }

    /// Microseconds, since boot, during which some task waited for a CPU,
    /// less this thread's own waits.
    pub(crate) fn others_waited_us(&mut self) -> Option<u64> {
        let mut buf = [0u8; 256];
        let len = self.file.read_at(&mut buf, 0).ok()?;
        let stalled = some_total(buf.get(..len)?)?;
        let own = self
            .own
            .as_ref()
            .and_then(|own| {
                let len = own.read_at(&mut buf, 0).ok()?;
                run_queue_wait_ns(buf.get(..len)?)
            })
            .unwrap_or(0);
        Some(stalled.saturating_sub(own / 1_000))
    }
}

/// The second field of `schedstat`: nanoseconds spent waiting to run.
fn run_queue_wait_ns(text: &[u8]) -> Option<u64> {
    core::str::from_utf8(text)
        .ok()?
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The `total=` of the `some` line.
fn some_total(text: &[u8]) -> Option<u64> {
    let text = core::str::from_utf8(text).ok()?;
    let line = text.lines().find(|line| line.starts_with("some "))?;
    line.split_ascii_whitespace()
        .find_map(|field| field.strip_prefix("total="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_some_total() {
        let text = b"some avg10=1.50 avg60=0.20 avg300=0.05 total=6614657218\n\
                     full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(some_total(text), Some(6_614_657_218));
    }

    #[test]
    fn reads_the_run_queue_wait() {
        assert_eq!(run_queue_wait_ns(b"97865 4321 12\n"), Some(4321));
        assert_eq!(run_queue_wait_ns(b"97865\n"), None);
        assert_eq!(run_queue_wait_ns(b"1 x 2\n"), None);
    }

    #[test]
    fn malformed_text_is_none() {
        for text in [
            &b""[..],
            b"full avg10=0.00 total=5\n",
            b"some avg10=0.00\n",
            b"some total=-3\n",
            b"some total=12x\n",
            b"\xff\xfe",
        ] {
            assert_eq!(some_total(text), None, "{text:?}");
        }
    }

    #[test]
    fn this_kernel_counts_pressure_and_the_count_never_falls() {
        // Only where the kernel has it; CI's machine does (`.ci/run` checks).
        let Some(mut pressure) = CpuPressure::open() else {
            assert!(
                std::env::var_os("LIBSHM_REQUIRE_PSI").is_none(),
                "{PATH} is required here"
            );
            return;
        };
        assert!(pressure.own.is_some(), "{OWN_PATH} is readable");
        let first = pressure.others_waited_us().expect("first sample");
        let second = pressure.others_waited_us().expect("second sample");
        assert!(second >= first);
    }
}
