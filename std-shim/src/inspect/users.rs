//! Who uses a segment: the processes that map it or hold a descriptor to it,
//! read from `/proc`.
//!
//! A segment can be in use without being mapped (a descriptor passed over a
//! socket, an opener between `shm_open` and `mmap`) or without a descriptor
//! (mapped, then closed, as ATen does), so both are read. Objects are matched
//! by device and inode, never by path: `/dev/shm` may be a symlink (to
//! `/run/shm`), and `/proc` shows the target's path. A mapping or descriptor
//! whose target is marked ` (deleted)` belongs to an earlier object and does
//! not count.
//!
//! Processes we may not inspect (another user's, or non-dumpable ones of our
//! own) are listed, not guessed at, so a caller can say how far "nobody uses
//! it" reaches. Kernel threads and zombies are not among them even when
//! their entries are closed to us: they have no address space and no
//! descriptors, so they cannot use a segment.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime};

use libshm_core::name::SegmentName;

/// What the kernel appends to the path of an unlinked object.
const DELETED: &[u8] = b" (deleted)";

/// The users of the names one `/proc` walk was asked about.
#[derive(Debug, Default)]
pub(crate) struct Users {
    by_name: BTreeMap<SegmentName, BTreeSet<u32>>,
    /// Processes whose maps or descriptors we were not allowed to read,
    /// ascending.
    pub(crate) uninspected: Vec<u32>,
}

impl Users {
    /// The pids using `name`, ascending.
    pub(crate) fn of(&self, name: &SegmentName) -> Vec<u32> {
        self.by_name
            .get(name)
            .map(|pids| pids.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// An object's identity: device major, minor, and inode.
pub(crate) type FileId = (u32, u32, u64);

/// The identity of the object `stat` describes.
pub(crate) fn file_id(stat: &rustix::fs::Stat) -> FileId {
    // Widened where the platform's fields are narrower.
    #[allow(clippy::unnecessary_cast)]
    let (dev, ino) = (stat.st_dev as u64, stat.st_ino as u64);
    (rustix::fs::major(dev), rustix::fs::minor(dev), ino)
}

/// Rounds of listing `/proc` again for processes born during a walk.
const LATE_ROUNDS: usize = 4;

/// Walks every process in `/proc` and records who maps or holds the objects
/// in `wanted` (by identity, with their names). Fails only if `/proc` itself
/// cannot be listed; a process that exits mid-walk is skipped.
///
/// A process may fork and exit while the walk runs, handing what it maps to
/// a child the first listing did not show; so `/proc` is listed again until
/// it shows nobody new, a few rounds at most (a busy machine always has
/// someone new; a fork chain that outruns them is the window left).
pub(crate) fn scan(wanted: &BTreeMap<FileId, SegmentName>) -> io::Result<Users> {
    let mut users = Users::default();
    let mut walked = BTreeSet::new();
    // A name's file under /dev/shm: the name without its slash.
    let files: BTreeSet<&[u8]> = wanted.values().map(|name| &name.as_bytes()[1..]).collect();
    for _ in 0..=LATE_ROUNDS {
        let unseen: Vec<u32> = list_pids()?
            .into_iter()
            .filter(|pid| !walked.contains(pid))
            .collect();
        if unseen.is_empty() {
            break;
        }
        for pid in unseen {
            walked.insert(pid);
            walk(pid, wanted, &files, &mut users);
        }
    }
    users.uninspected.sort_unstable();
    users.uninspected.dedup();
    Ok(users)
}

/// The pids `/proc` lists now.
fn list_pids() -> io::Result<Vec<u32>> {
    Ok(std::fs::read_dir("/proc")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect())
}

/// Records what process `pid` maps or holds among `wanted`.
fn walk(
    pid: u32,
    wanted: &BTreeMap<FileId, SegmentName>,
    files: &BTreeSet<&[u8]>,
    users: &mut Users,
) {
    let mut denied = false;
    let mut found = |id: FileId| {
        if let Some(name) = wanted.get(&id) {
            users.by_name.entry(*name).or_default().insert(pid);
        }
    };
    let mut base = format!("/proc/{pid}");
    let mut maps = std::fs::read(format!("{base}/maps"));
    if matches!(&maps, Ok(maps) if maps.is_empty())
        && let Some(thread) = live_thread_of_exited_leader(pid)
    {
        // The main thread has exited and the others carry on: the leader
        // shows no memory and no descriptors, a live thread shows them.
        base = thread;
        maps = std::fs::read(format!("{base}/maps"));
    }
    match maps {
        Ok(maps) => maps
            .split(|&b| b == b'\n')
            .filter_map(maps_line_id)
            .for_each(&mut found),
        Err(err) => denied |= err.kind() == io::ErrorKind::PermissionDenied,
    }
    match std::fs::read_dir(format!("{base}/fd")) {
        Ok(fds) => fds
            .filter_map(|fd| {
                let path = fd.ok()?.path();
                let target = std::fs::read_link(&path).ok()?;
                if target.as_os_str().as_bytes().ends_with(DELETED) {
                    return None;
                }
                // `stat` asks the descriptor's file system, which may hang
                // (a dead NFS or FUSE server): only a file named as one of
                // ours is asked, and ours live on a tmpfs.
                if !files.contains(target.file_name()?.as_bytes()) {
                    return None;
                }
                // The descriptor's own object, however it is named.
                rustix::fs::stat(&path).ok().map(|stat| file_id(&stat))
            })
            .for_each(&mut found),
        Err(err) => denied |= err.kind() == io::ErrorKind::PermissionDenied,
    }
    if denied && can_hold_memory(pid) {
        users.uninspected.push(pid);
    }
}

/// `/proc/<pid>/task/<tid>` of a live thread of `pid`, if `pid`'s own
/// thread has exited (a zombie leader) while others run.
fn live_thread_of_exited_leader(pid: u32) -> Option<String> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    if state_and_flags(&stat)?.0 != b'Z' {
        return None;
    }
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&tid| tid != pid)
        .map(|tid| format!("/proc/{pid}/task/{tid}"))
}

/// `PF_KTHREAD` in the flags of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether `pid` could map or hold anything: it is not a kernel thread and
/// not a zombie. `/proc/<pid>/stat` is readable by everyone; if it cannot be
/// read or parsed, the process is assumed to be able to.
fn can_hold_memory(pid: u32) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
        // Gone since it was listed: it holds nothing now.
        return false;
    };
    match state_and_flags(&stat) {
        Some((_, flags)) if flags & PF_KTHREAD != 0 => false,
        // A zombie leader whose other threads run holds what they hold.
        Some((b'Z' | b'X', _)) => live_thread_of_exited_leader(pid).is_some(),
        _ => true,
    }
}

/// The fields of a `/proc/<pid>/stat` line from field 3 (the state) on. The
/// command name (field 2) is parenthesised and may hold anything, spaces
/// and parentheses included, so fields are counted from the last `)`.
fn stat_fields(stat: &[u8]) -> Option<impl Iterator<Item = &[u8]>> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    Some(
        stat[close + 1..]
            .split(u8::is_ascii_whitespace)
            .filter(|field| !field.is_empty()),
    )
}

/// The state (field 3) and flags (field 9) of a `/proc/<pid>/stat` line.
fn state_and_flags(stat: &[u8]) -> Option<(u8, u64)> {
    let mut fields = stat_fields(stat)?;
    let state = *fields.next()?.first()?;
    // Fields 4 to 8 (ppid, pgrp, session, tty, tpgid) lie between.
    let flags = fields.nth(5)?;
    let flags = std::str::from_utf8(flags).ok()?.parse().ok()?;
    Some((state, flags))
}

/// When process `pid` started, from its `/proc/<pid>/stat` (readable even
/// for a process we may not otherwise inspect): boot time plus its start
/// (field 22, in clock ticks since boot). Precise to about a second, as the
/// boot time is.
pub(crate) fn started_at(pid: u32) -> Option<SystemTime> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let ticks: u64 = std::str::from_utf8(stat_fields(&stat)?.nth(19)?)
        .ok()?
        .parse()
        .ok()?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    let since_boot = Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second);
    Some(boot_time()? + since_boot)
}

/// When the machine booted: `btime` in `/proc/stat`.
fn boot_time() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The uid that owns process `pid`.
pub(crate) fn owner(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// The path column of one `/proc/<pid>/maps` line: what follows the address
/// range, permissions, offset, device and inode. Paths may hold spaces, so
/// only the first five fields are split off.
fn maps_line_path(line: &[u8]) -> Option<&[u8]> {
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_ascii_start();
        let end = rest.iter().position(u8::is_ascii_whitespace)?;
        rest = &rest[end..];
    }
    let path = rest.trim_ascii_start();
    (!path.is_empty()).then_some(path)
}

/// The identity of the object one `/proc/<pid>/maps` line maps: its device
/// (`maj:min`, hex) and inode; `None` for anonymous mappings and objects
/// already unlinked.
fn maps_line_id(line: &[u8]) -> Option<FileId> {
    let path = maps_line_path(line)?;
    if path.ends_with(DELETED) {
        return None;
    }
    let mut fields = line
        .split(u8::is_ascii_whitespace)
        .filter(|field| !field.is_empty());
    let dev = fields.nth(3)?;
    let inode = fields.next()?;
    let (major, minor) = std::str::from_utf8(dev).ok()?.split_once(':')?;
    let major = u32::from_str_radix(major, 16).ok()?;
    let minor = u32::from_str_radix(minor, 16).ok()?;
    let inode = std::str::from_utf8(inode).ok()?.parse().ok()?;
    (inode != 0).then_some((major, minor, inode))
}

/// Whether this process runs in a pid namespace other than the first one
/// (a container's), sharing `/dev/shm` with processes it cannot see. The
/// kernel gives the initial pid namespace a fixed inode
/// (`PROC_PID_INIT_INO`); a container that mounts its own `/proc` shows no
/// other sign of it. Unknown (no `/proc`) counts as nested: under doubt,
/// nothing is reaped. `LIBSHM_SHM_PRIVATE=1` says this `/dev/shm` is the
/// namespace's own (a container without `--ipc=host`).
pub(crate) fn in_nested_pid_namespace() -> bool {
    if std::env::var_os("LIBSHM_SHM_PRIVATE").is_some_and(|v| v == "1") {
        return false;
    }
    const INITIAL: &str = "pid:[4026531836]";
    std::fs::read_link("/proc/self/ns/pid")
        .map_or(true, |link| link != std::path::Path::new(INITIAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_path_column_of_maps_lines() {
        let line = b"7f1c2a000000-7f1c2a101000 rw-s 00000000 00:1a 1234                       /dev/shm/torch_1_2_3";
        assert_eq!(maps_line_path(line), Some(&b"/dev/shm/torch_1_2_3"[..]));
        let anonymous = b"7ffd5c1e0000-7ffd5c201000 rw-p 00000000 00:00 0";
        assert_eq!(maps_line_path(anonymous), None);
        let spaced = b"55d0-55d1 r--p 00000000 08:01 99  /home/a b/lib.so (deleted)";
        assert_eq!(
            maps_line_path(spaced),
            Some(&b"/home/a b/lib.so (deleted)"[..])
        );
        assert_eq!(maps_line_path(b""), None);
    }

    #[test]
    fn reads_the_identity_of_what_a_maps_line_maps() {
        let line = b"7f1c2a000000-7f1c2a101000 rw-s 00000000 00:1a 1234  /run/shm/torch_1_2_3";
        assert_eq!(maps_line_id(line), Some((0, 0x1a, 1234)));
        let deleted = b"7f1c-7f1d rw-s 00000000 00:1a 1234 /dev/shm/torch_1_2_3 (deleted)";
        assert_eq!(maps_line_id(deleted), None);
        let anonymous = b"7ffd5c1e0000-7ffd5c201000 rw-p 00000000 00:00 0";
        assert_eq!(maps_line_id(anonymous), None);
    }

    #[test]
    fn reads_state_and_flags_past_any_command_name() {
        let kthread = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0";
        assert_eq!(state_and_flags(kthread), Some((b'S', 2_129_984)));
        assert_ne!(2_129_984 & PF_KTHREAD, 0);
        let odd = b"77 (a) b (c) Z 1 77 77 0 -1 4194560 0 0";
        assert_eq!(state_and_flags(odd), Some((b'Z', 4_194_560)));
        assert_eq!(state_and_flags(b"77 (cut short) S 1 2"), None);
        assert_eq!(state_and_flags(b""), None);
    }

    #[test]
    fn this_process_can_hold_memory_and_kernel_threads_cannot() {
        assert!(can_hold_memory(std::process::id()));
        // kthreadd is pid 2 wherever the kernel's threads are visible.
        if let Ok(stat) = std::fs::read("/proc/2/stat")
            && stat.windows(10).any(|w| w == b"(kthreadd)")
        {
            assert!(!can_hold_memory(2));
        }
    }

    #[test]
    fn a_mapped_segment_is_found_by_identity_whatever_its_path() {
        // A segment of ours, mapped here and reached through a symlinked
        // directory: /proc shows the target's path, the identity matches.
        let name =
            SegmentName::new(format!("/libshm_users_{}", std::process::id()).as_bytes()).unwrap();
        let fd = rustix::shm::open(
            name.as_str(),
            rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        let map = memmap2::MmapOptions::new().len(4096).map_raw(&fd).unwrap();
        drop(fd);
        let stat = rustix::fs::stat(format!("/dev/shm{name}")).unwrap();
        let wanted = BTreeMap::from([(file_id(&stat), name)]);
        let users = scan(&wanted).unwrap();
        let _ = rustix::shm::unlink(name.as_str());
        assert_eq!(users.of(&name), [std::process::id()]);
        drop(map);
    }
}
