//! Who uses a segment: the processes that map it or hold a descriptor to it,
//! read from `/proc`.
//!
//! A segment can be in use without being mapped (a descriptor passed over a
//! socket, an opener between `shm_open` and `mmap`) or without a descriptor
//! (mapped, then closed, as ATen does), so both are read. A mapping or
//! descriptor whose target is marked ` (deleted)` belongs to an earlier object
//! of the same name and does not count.
//!
//! Processes we may not inspect (another user's, or non-dumpable ones of our
//! own) are listed, not guessed at, so a caller can say how far "nobody uses
//! it" reaches. Kernel threads and zombies are not among them even when
//! their entries are closed to us: they have no address space and no
//! descriptors, so they cannot use a segment.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::ffi::OsStrExt;

use libshm_core::name::SegmentName;

/// Where a segment's path points inside `/proc/<pid>/maps` and `fd/*`.
const SHM_DIR: &[u8] = b"/dev/shm/";
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

/// Walks every process in `/proc` and records who maps or holds the names
/// `wanted` accepts. Fails only if `/proc` itself cannot be listed; a process
/// that exits mid-walk is skipped.
pub(crate) fn scan(wanted: impl Fn(&SegmentName) -> bool) -> io::Result<Users> {
    let mut users = Users::default();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|dir| dir.parse::<u32>().ok())
        else {
            continue;
        };
        let mut denied = false;
        let mut found = |name: SegmentName| {
            if wanted(&name) {
                users.by_name.entry(name).or_default().insert(pid);
            }
        };
        match std::fs::read(format!("/proc/{pid}/maps")) {
            Ok(maps) => maps
                .split(|&b| b == b'\n')
                .filter_map(maps_line_path)
                .filter_map(shm_name_of_path)
                .for_each(&mut found),
            Err(err) => denied |= err.kind() == io::ErrorKind::PermissionDenied,
        }
        match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => fds
                .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter_map(|target| shm_name_of_path(target.as_os_str().as_bytes()))
                .for_each(&mut found),
            Err(err) => denied |= err.kind() == io::ErrorKind::PermissionDenied,
        }
        if denied && can_hold_memory(pid) {
            users.uninspected.push(pid);
        }
    }
    users.uninspected.sort_unstable();
    Ok(users)
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
        Some((state, flags)) => !(matches!(state, b'Z' | b'X') || flags & PF_KTHREAD != 0),
        None => true,
    }
}

/// The state (field 3) and flags (field 9) of a `/proc/<pid>/stat` line. The
/// command name (field 2) is parenthesised and may hold anything, spaces
/// and parentheses included, so fields are counted from the last `)`.
fn state_and_flags(stat: &[u8]) -> Option<(u8, u64)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat[close + 1..]
        .split(u8::is_ascii_whitespace)
        .filter(|field| !field.is_empty());
    let state = *fields.next()?.first()?;
    // Fields 4 to 8 (ppid, pgrp, session, tty, tpgid) lie between.
    let flags = fields.nth(5)?;
    let flags = std::str::from_utf8(flags).ok()?.parse().ok()?;
    Some((state, flags))
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

/// `/dev/shm/<name>` as a segment name; `None` for other paths, for objects
/// already unlinked, and for file names that are not valid segment names.
fn shm_name_of_path(path: &[u8]) -> Option<SegmentName> {
    let file = path.strip_prefix(SHM_DIR)?;
    if file.ends_with(DELETED) {
        return None;
    }
    super::name_of_entry(file)
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
    fn only_live_objects_directly_in_dev_shm_are_segments() {
        let name = |path: &[u8]| shm_name_of_path(path).map(|n| n.as_str().to_owned());
        assert_eq!(
            name(b"/dev/shm/torch_1_2_3").as_deref(),
            Some("/torch_1_2_3")
        );
        assert_eq!(name(b"/dev/shm/torch_1_2_3 (deleted)"), None);
        assert_eq!(name(b"/dev/shm/dir/torch_1_2_3"), None);
        assert_eq!(name(b"/dev/shm/"), None);
        assert_eq!(name(b"/home/me/dev/shm/torch_1_2_3"), None);
        assert_eq!(name(b"/memfd:torch_1_2_3 (deleted)"), None);
        assert_eq!(name(&[b'/'; 200]), None);
        let long = [b"/dev/shm/".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(name(&long), None);
    }
}
