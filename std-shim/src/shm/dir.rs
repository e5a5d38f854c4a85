//! `/dev/shm` as one open directory, for those who look at what others put
//! there: the manager and the inspector.
//!
//! `/dev/shm` is world-writable. Any local user can put a FIFO, a symlink or a
//! file of their own under a name someone else uses, so every look here is
//! made by entry name relative to one directory descriptor opened up front:
//! `statat` without following links, `openat` with `O_NONBLOCK | O_NOFOLLOW`
//! (a FIFO cannot make it wait, a symlink is never followed) and only after
//! the entry was seen to be a regular file, and `unlinkat`, which needs no new
//! descriptor at all (so it still works when descriptors run out).

use std::io;
use std::os::fd::OwnedFd;

use libshm_core::name::SegmentName;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Where POSIX shared-memory objects live on Linux.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// The open `/dev/shm` directory.
#[derive(Debug)]
pub(crate) struct ShmDir {
    fd: OwnedFd,
}

/// What a header read found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// The `i32` in the file's first four bytes; 0 when it is shorter than
    /// that (created, not yet sized).
    Refcount(i32),
    /// The entry is no longer the file that was looked at (removed, or
    /// replaced by something else) between the look and the read.
    Changed,
}

impl ShmDir {
    /// Opens `/dev/shm`. A system where that fails has no POSIX shared
    /// memory to manage. `/dev/shm` itself may be a symlink (to `/run/shm`
    /// on some systems); what is inside it is never followed.
    pub(crate) fn open() -> io::Result<Self> {
        let fd = rustix::fs::open(
            SHM_DIR,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { fd })
    }

    /// How full the file system under `/dev/shm` is: used and total bytes.
    pub(crate) fn usage(&self) -> Result<(u64, u64), Errno> {
        let fs = rustix::fs::fstatvfs(&self.fd)?;
        let block = fs.f_frsize;
        let total = fs.f_blocks.saturating_mul(block);
        let free = fs.f_bfree.saturating_mul(block);
        Ok((total.saturating_sub(free), total))
    }

    /// What the entry for `name` is, without following it; `None` if there
    /// is none.
    pub(crate) fn stat(&self, name: &SegmentName) -> Result<Option<Stat>, Errno> {
        match rustix::fs::statat(&self.fd, entry(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::NOENT) => Ok(None),
            Err(errno) => Err(errno),
        }
    }

    /// Reads the refcount of the regular file `seen` (a [`ShmDir::stat`] of
    /// `name`) with `pread`: no mapping, so nothing of ours lingers to show up
    /// in `/proc` as one of its users. The file opened must be the one seen
    /// (same device and inode), or nothing is read: the entry may have been
    /// swapped since. Opening does not block and does not follow a link, so
    /// whatever was swapped in, the read cannot hang.
    ///
    /// Callers check that `seen` is a regular file before asking; the open
    /// happens only then. Permission errors are returned as they are: the
    /// caller decides whether a file it may not read is someone else's.
    pub(crate) fn read_refcount(&self, name: &SegmentName, seen: &Stat) -> Result<Header, Errno> {
        let fd = match rustix::fs::openat(
            &self.fd,
            entry(name),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Gone, or a symlink now.
            Err(Errno::NOENT | Errno::LOOP) => return Ok(Header::Changed),
            Err(errno) => return Err(errno),
        };
        let opened = rustix::fs::fstat(&fd)?;
        if !is_regular(&opened) || opened.st_dev != seen.st_dev || opened.st_ino != seen.st_ino {
            return Ok(Header::Changed);
        }
        let mut count = [0u8; 4];
        // A shorter file (or one truncated since the fstat) has no count yet.
        Ok(match rustix::io::pread(&fd, &mut count, 0)? {
            4 => Header::Refcount(i32::from_ne_bytes(count)),
            _ => Header::Refcount(0),
        })
    }

    /// Removes the entry for `name`, whatever it is. Callers look first;
    /// `/dev/shm`'s sticky bit makes the kernel refuse (`EPERM`) to remove
    /// another user's entry even if one was swapped in since the look.
    pub(crate) fn unlink(&self, name: &SegmentName) -> Result<(), Errno> {
        rustix::fs::unlinkat(&self.fd, entry(name), AtFlags::empty())
    }

    /// Lists the directory's entries.
    pub(crate) fn entries(&self) -> io::Result<rustix::fs::Dir> {
        Ok(rustix::fs::Dir::read_from(&self.fd)?)
    }
}

/// Whether `stat` describes a regular file.
pub(crate) fn is_regular(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
}

/// `name`'s entry in the directory: the name without its leading `/`.
/// [`SegmentName`] guarantees the rest holds no `/` and is not `.` or `..`,
/// so the entry can only ever be directly inside `/dev/shm`.
fn entry(name: &SegmentName) -> &str {
    let name = name.as_str();
    name.strip_prefix('/').unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_maps_to_its_entry() {
        let name = SegmentName::new(b"/torch_1_2_3").unwrap();
        assert_eq!(entry(&name), "torch_1_2_3");
    }
}
