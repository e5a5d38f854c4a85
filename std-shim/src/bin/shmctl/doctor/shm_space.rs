//! `/dev/shm`: how big, how full, and the fix for where we run. Docker gives
//! containers 64 MiB; DataLoader workers put whole batches there, so a full
//! `/dev/shm` is PyTorch's most reported shared-memory failure (a SIGBUS, or
//! "DataLoader worker ... is killed by signal: Bus error").

use crate::units::format_size;

use super::container::{self, Container};
use super::finding::{Finding, Severity};

const SHM: &str = "/dev/shm";
const GIB: u64 = 1 << 30;
/// Smaller than this draws a warning even when empty.
const SMALL: u64 = GIB;
const WARN_PERCENT: u64 = 80;
const ERROR_PERCENT: u64 = 95;

pub(crate) fn check() -> Finding {
    let container = container::detect();
    let size = suggested_size();
    let size_fix = size_fix(container.as_ref(), size);
    let place = container.as_ref().map_or_else(
        || "not in a container".to_owned(),
        |c| format!("in a {} container", c.name()),
    );
    let finding = |severity, found: String| {
        Finding::new("dev_shm", "/dev/shm", severity, found)
            .detail("container", container.as_ref().map(Container::name))
            .detail("suggested_size_bytes", size)
    };
    let stat = match rustix::fs::statvfs(SHM) {
        Ok(stat) => stat,
        Err(err) => {
            return finding(
                Severity::Error,
                format!("cannot read {SHM}: {err}; shared memory cannot work ({place})"),
            )
            .fix(size_fix);
        }
    };
    let total = stat.f_blocks.saturating_mul(stat.f_frsize);
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    // An empty filesystem (size 0) has no room at all: 100 %.
    let used_percent = (total - free.min(total))
        .saturating_mul(100)
        .checked_div(total)
        .unwrap_or(100);
    let summary = format!(
        "{} with {} free ({used_percent}% used), {place}",
        format_size(total),
        format_size(free)
    );
    let finding = |severity, found| {
        finding(severity, found)
            .detail("total_bytes", total)
            .detail("free_bytes", free)
            .detail("used_percent", used_percent)
    };
    let gc = "`shmctl gc --yes` frees leaked segments (`shmctl ls` shows who holds the rest); \
              or make it bigger: ";
    if used_percent >= ERROR_PERCENT {
        finding(
            Severity::Error,
            format!("{summary}: the next segments will not fit"),
        )
        .fix(format!("{gc}{size_fix}"))
    } else if used_percent >= WARN_PERCENT {
        finding(Severity::Warning, format!("{summary}: nearly full")).fix(format!("{gc}{size_fix}"))
    } else if total < SMALL {
        finding(
            Severity::Warning,
            format!(
                "{summary}: small for DataLoader workers, which keep prefetched batches here \
                 (Docker's default is 64 MiB)"
            ),
        )
        .fix(size_fix)
    } else {
        finding(Severity::Ok, summary)
    }
}

/// Half the machine's memory, in whole GiB, between 1 and 16 GiB.
fn suggested_size() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(2 * GIB);
    (total / 2 / GIB).clamp(1, 16) * GIB
}

/// How to give `/dev/shm` `size` bytes, for the runtime we are in.
fn size_fix(container: Option<&Container>, size: u64) -> String {
    let g = size / GIB;
    let docker = format!(
        "restart the container with `docker run --shm-size={g}g ...` (compose: `shm_size: \
         \"{g}gb\"`)"
    );
    let kubernetes = format!(
        "mount a memory-backed volume at /dev/shm in the pod spec: `volumes: [{{name: dshm, \
         emptyDir: {{medium: Memory, sizeLimit: {g}Gi}}}}]` and `volumeMounts: [{{name: dshm, \
         mountPath: /dev/shm}}]`"
    );
    match container {
        Some(Container::Docker) => docker,
        Some(Container::Podman) => {
            format!("restart the container with `podman run --shm-size={g}g ...`")
        }
        Some(Container::Kubernetes) => kubernetes,
        Some(Container::Other(_)) => format!("Docker: {docker}\nKubernetes: {kubernetes}"),
        None => format!(
            "`sudo mount -o remount,size={g}G /dev/shm` (to keep it across reboots: \
             `tmpfs /dev/shm tmpfs defaults,size={g}G 0 0` in /etc/fstab)"
        ),
    }
}
