//! Whether the CPU quota of the manager's cgroup ran out, from the
//! `nr_throttled` count in `cpu.stat` of its cgroup and each ancestor.
//!
//! In a container with a CPU limit (`cpu.max`, or `cpu.cfs_quota_us` in
//! cgroup v1) every microsecond a manager spins is taken from the budget of
//! the container's other processes, PyTorch's training among them, and from
//! its own clients'. Pressure (see `pressure`) does not show it: once the
//! quota runs out every task in the cgroup waits, the manager with them, and
//! those waits are left out as the manager's own.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const CGROUPS: &str = "/proc/self/cgroup";
const MOUNTS: &str = "/sys/fs/cgroup";

/// The open `cpu.stat` files of this process's cgroup and its ancestors.
#[derive(Debug)]
pub(crate) struct CpuThrottling {
    stats: Vec<File>,
}

impl CpuThrottling {
    /// `None` where no `cpu.stat` can be read: no cgroup CPU controller, so
    /// no quota to run out.
    pub(crate) fn open() -> Option<Self> {
        let text = std::fs::read_to_string(CGROUPS).ok()?;
        let stats: Vec<File> = cpu_cgroup_dirs(&text)
            .iter()
            .filter_map(|dir| File::open(dir.join("cpu.stat")).ok())
            .collect();
        let throttling = Self { stats };
        throttling.times_throttled().map(|_| throttling)
    }

    /// How many times, in all, a quota of this cgroup or an ancestor ran
    /// out; `None` if no `cpu.stat` could be read.
    pub(crate) fn times_throttled(&self) -> Option<u64> {
        let mut buf = [0u8; 1024];
        let mut total = None;
        for stat in &self.stats {
            let Ok(len) = stat.read_at(&mut buf, 0) else {
                continue;
            };
            if let Some(count) = buf.get(..len).and_then(nr_throttled) {
                total = Some(total.unwrap_or(0u64).saturating_add(count));
            }
        }
        total
    }
}

/// The directories of the cgroup that holds the CPU controller, from the
/// process's own up to its hierarchy's root, per `/proc/self/cgroup`:
/// `0::/path` in cgroup v2, `N:cpu,cpuacct:/path` in v1.
fn cpu_cgroup_dirs(text: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let root = if controllers.split(',').any(|c| c == "cpu") {
            Path::new(MOUNTS).join(controllers)
        } else if hierarchy == "0" && controllers.is_empty() {
            let unified = Path::new(MOUNTS).join("unified");
            if Path::new(MOUNTS).join("cgroup.controllers").exists() {
                PathBuf::from(MOUNTS)
            } else {
                unified
            }
        } else {
            continue;
        };
        let mut dir = root.join(path.trim_start_matches('/'));
        loop {
            dirs.push(dir.clone());
            if dir == root || !dir.pop() || !dir.starts_with(&root) {
                break;
            }
        }
    }
    dirs
}

/// The `nr_throttled` of a `cpu.stat`.
fn nr_throttled(text: &[u8]) -> Option<u64> {
    core::str::from_utf8(text)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("nr_throttled "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cpu_cgroup_and_its_ancestors() {
        let v1 = "9:name=systemd:/\n4:memory:/m\n1:cpu,cpuacct:/pod/c1\n0::/\n";
        let dirs = cpu_cgroup_dirs(v1);
        assert!(dirs.starts_with(&[
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/pod/c1"),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/pod"),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
        ]));
        let v2 = cpu_cgroup_dirs("0::/a/b\n");
        assert_eq!(v2.len(), 3);
        assert!(v2[0].ends_with("a/b"), "{v2:?}");
        assert!(cpu_cgroup_dirs("garbage\n1:cpu\n").is_empty());
    }

    #[test]
    fn reads_nr_throttled() {
        let v2 = b"usage_usec 10\nnr_periods 4\nnr_throttled 3\nthrottled_usec 7\n";
        assert_eq!(nr_throttled(v2), Some(3));
        assert_eq!(nr_throttled(b"nr_periods 4\n"), None);
        assert_eq!(nr_throttled(b"nr_throttled x\n"), None);
    }
}
