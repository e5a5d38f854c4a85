//! `ulimit -n` against PyTorch's default `file_descriptor` sharing strategy,
//! which keeps a descriptor open for every shared storage in flight: a
//! DataLoader with workers runs out at 1024 ("Too many open files").

use rustix::process::{Resource, getrlimit};

use super::finding::{Finding, Severity};

/// Below this many descriptors, DataLoaders with workers run out.
const LOW: u64 = 4096;
/// What to ask for when the hard limit is low too.
const ENOUGH: u64 = 65536;

pub(crate) fn check() -> Finding {
    let limit = getrlimit(Resource::Nofile);
    let show = |n: Option<u64>| n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    let (soft, hard) = (limit.current, limit.maximum);
    let summary = format!("ulimit -n is {} (hard limit {})", show(soft), show(hard));
    let finding = |severity, found| {
        Finding::new("open_files", "open files", severity, found)
            .detail("soft", soft)
            .detail("hard", hard)
            .detail("recommended_min", LOW)
    };
    let soft_value = soft.unwrap_or(u64::MAX);
    if soft_value >= LOW {
        return finding(Severity::Ok, summary);
    }
    let strategy = "or share through our manager instead of descriptors: \
                    `torch.multiprocessing.set_sharing_strategy(\"file_system\")`";
    let fix = if hard.unwrap_or(u64::MAX) >= LOW {
        // An unlimited hard limit still caps `nofile` at the kernel's nr_open.
        let to = hard.unwrap_or(1 << 20).min(1 << 20);
        format!(
            "`ulimit -n {to}` in the shell that starts Python (in Python: \
             `resource.setrlimit(resource.RLIMIT_NOFILE, ({to}, {to}))`); {strategy}"
        )
    } else {
        format!(
            "raise the hard limit: `docker run --ulimit nofile={ENOUGH}:{ENOUGH}`, \
             `LimitNOFILE={ENOUGH}` in a systemd unit, or `* hard nofile {ENOUGH}` in \
             /etc/security/limits.conf, then `ulimit -n {ENOUGH}`; {strategy}"
        )
    };
    finding(
        Severity::Warning,
        format!(
            "{summary}: PyTorch's default file_descriptor strategy holds one per shared tensor \
             in flight, and DataLoader workers fail with \"Too many open files\" below {LOW}"
        ),
    )
    .fix(fix)
}
