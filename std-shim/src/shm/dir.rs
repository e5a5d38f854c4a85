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

use std::collections::HashSet;
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

    /// Which of `names` have no entry, by one listing (`absent[i]` for
    /// `names[i]`), if the directory holds few enough entries for a listing
    /// to cost less than a look at each; false, `absent` untouched, if not.
    /// Here a failed look costs about 1.7 us and a listing about 0.15-0.2 us
    /// an entry (tmpfs, 10 to 20,000 entries) plus 4 us.
    pub(crate) fn absent_among(
        &self,
        names: &[SegmentName],
        absent: &mut [bool],
    ) -> Result<bool, Errno> {
        // tmpfs counts 20 bytes (BOGO_DIRENT_SIZE) an entry; elsewhere the
        // size only overstates the count.
        let size = u64::try_from(rustix::fs::fstat(&self.fd)?.st_size).unwrap_or(u64::MAX);
        let asked = u64::try_from(names.len()).unwrap_or(u64::MAX);
        if names.len() != absent.len() || size / 20 > asked.saturating_mul(LISTED_PER_LOOK) {
            return Ok(false);
        }
        let wanted: HashSet<&[u8]> = names.iter().map(|name| entry(name).as_bytes()).collect();
        let mut present: HashSet<&[u8]> = HashSet::new();
        for listed in rustix::fs::Dir::read_from(&self.fd)? {
            let listed = listed?;
            if let Some(&name) = wanted.get(listed.file_name().to_bytes()) {
                present.insert(name);
            }
        }
        for (name, absent) in names.iter().zip(absent.iter_mut()) {
            *absent = !present.contains(entry(name).as_bytes());
        }
        Ok(true)
    }
}

/// Entries a listing may read for each name asked about, for it to cost
/// less than the looks it replaces (about 9 here; kept well below).
const LISTED_PER_LOOK: u64 = 4;

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

    /// A listing tells the names with an entry, whatever it is, from those
    /// without, and is declined for a few names in a crowded directory.
    #[test]
    fn a_listing_finds_absent_names_and_is_declined_where_looks_cost_less() {
        let dir = ShmDir::open().unwrap();
        let tag = format!("dirtest{}", std::process::id());
        let name = |i: usize| SegmentName::new(format!("/{tag}_{i}").as_bytes()).unwrap();
        // Many names, so that the listing is not declined for entries other
        // tests make meanwhile.
        let names: Vec<SegmentName> = (0..512).map(name).collect();
        let present = [3, 7];
        for &i in &present {
            let path = format!("{SHM_DIR}/{}", entry(&names[i]));
            if i == 7 {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    path.as_str(),
                    FileType::Fifo,
                    Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap();
            } else {
                std::fs::write(&path, [0u8; 8]).unwrap();
            }
        }
        let mut absent = vec![false; names.len()];
        let listed = dir.absent_among(&names, &mut absent);
        for &i in &present {
            let _ = dir.unlink(&names[i]);
        }
        assert!(
            listed.unwrap(),
            "a listing of /dev/shm for 512 names was declined"
        );
        for (i, absent) in absent.iter().enumerate() {
            assert_eq!(*absent, !present.contains(&i), "name {i}");
        }
        // One name in a directory of more entries than a listing is worth.
        let crowd: Vec<SegmentName> = (1000..1000 + 2 * LISTED_PER_LOOK as usize)
            .map(name)
            .collect();
        for name in &crowd {
            std::fs::write(format!("{SHM_DIR}/{}", entry(name)), []).unwrap();
        }
        let mut one = [false];
        let listed = dir.absent_among(&names[..1], &mut one);
        for name in &crowd {
            let _ = dir.unlink(name);
        }
        assert!(
            !listed.unwrap() && !one[0],
            "a listing for one name among many"
        );
    }
}
