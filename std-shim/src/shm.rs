//! The `/dev/shm` side of a segment: create, open, unlink, and the manager's
//! [`Namespace`] over the same calls.
//!
//! Creation is `shm_open(O_CREAT|O_EXCL, 0600)`, `ftruncate` and `fallocate`, in
//! that order, so a full `/dev/shm` is an error now rather than a `SIGBUS` at
//! first touch. Every open adds `O_NOFOLLOW`, like glibc's `shm_open`.

use std::os::fd::OwnedFd;

use libshm_core::header::{self, SizeError};
use libshm_core::name::SegmentName;
use libshm_core::namespace::{Namespace, Observed, Unlinked};
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{FallocateFlags, Mode};
use rustix::io::Errno;
use rustix::shm::OFlags;

use crate::error::Error;

fn nofollow() -> OFlags {
    OFlags::from_bits_retain(rustix::fs::OFlags::NOFOLLOW.bits())
}

/// `O_NONBLOCK` for `shm_open`, which the shm flag set does not name: an
/// inspector opening whatever it finds in `/dev/shm` must never wait on it.
fn nonblock() -> OFlags {
    OFlags::from_bits_retain(rustix::fs::OFlags::NONBLOCK.bits())
}

/// Creates `name` with room for `data_len` bytes after the header and maps it.
/// On any failure after `shm_open` the name is unlinked again.
pub(crate) fn create(name: &SegmentName, data_len: usize) -> Result<MmapRaw, Error> {
    let len = header::mapping_len(data_len).map_err(|source| Error::Size {
        name: *name,
        source,
    })?;
    let bytes = len as u64;
    let fd = match rustix::shm::open(
        name.as_str(),
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | nofollow(),
        Mode::RUSR | Mode::WUSR,
    ) {
        Ok(fd) => fd,
        Err(Errno::EXIST) => return Err(Error::Exists { name: *name }),
        Err(errno) => return Err(Error::os("shm_open", *name)(errno)),
    };
    let sized = size(&fd, name, bytes).and_then(|()| map(&fd, name, len));
    if sized.is_err() {
        let _ = rustix::shm::unlink(name.as_str());
    }
    sized
}

fn size(fd: &OwnedFd, name: &SegmentName, bytes: u64) -> Result<(), Error> {
    rustix::fs::ftruncate(fd, bytes).map_err(Error::os("ftruncate", *name))?;
    match rustix::fs::fallocate(fd, FallocateFlags::empty(), 0, bytes) {
        Ok(()) => Ok(()),
        Err(Errno::NOSPC) => Err(Error::NoSpace { name: *name, bytes }),
        // A file system without fallocate (not tmpfs) still works, unguarded.
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => Ok(()),
        Err(errno) => Err(Error::os("fallocate", *name)(errno)),
    }
}

fn map(fd: &OwnedFd, name: &SegmentName, len: usize) -> Result<MmapRaw, Error> {
    MmapOptions::new()
        .len(len)
        .map_raw(fd)
        .map_err(|source| Error::Os {
            op: "mmap",
            name: *name,
            source,
        })
}

/// Opens an existing `name` without creating it and maps the header plus
/// `data_len` bytes (or the whole object for `None`). Refuses a segment
/// smaller than asked for: growing it would write into someone's live data.
pub(crate) fn open(name: &SegmentName, data_len: Option<usize>) -> Result<MmapRaw, Error> {
    let fd = match rustix::shm::open(name.as_str(), OFlags::RDWR | nofollow(), Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Err(Error::NotFound { name: *name }),
        Err(errno) => return Err(Error::os("shm_open", *name)(errno)),
    };
    let stat = rustix::fs::fstat(&fd).map_err(Error::os("fstat", *name))?;
    let object_len = u64::try_from(stat.st_size).unwrap_or(0);
    let len = header::open_mapping_len(data_len, object_len).map_err(|source: SizeError| {
        Error::Size {
            name: *name,
            source,
        }
    })?;
    map(&fd, name, len)
}

/// The refcount in `name`'s header, read with `pread` rather than a mapping:
/// a glance needs no shared atomic view, and nothing of ours lingers to show
/// up in `/proc` as one of its users. `None` when the object cannot be opened
/// for reading or is too small to have our header.
///
/// Advisory: the holders may change the count right after.
pub(crate) fn peek_refcount(name: &SegmentName) -> Option<i32> {
    let fd = rustix::shm::open(
        name.as_str(),
        OFlags::RDONLY | nofollow() | nonblock(),
        Mode::empty(),
    )
    .ok()?;
    let stat = rustix::fs::fstat(&fd).ok()?;
    let is_file =
        rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile;
    if !is_file || u64::try_from(stat.st_size).unwrap_or(0) < header::HEADER_LEN as u64 {
        return None;
    }
    let mut count = [0u8; 4];
    match rustix::io::pread(&fd, &mut count, 0) {
        Ok(4) => Some(i32::from_ne_bytes(count)),
        _ => None,
    }
}

/// Unlinks `name`; a name that is already gone is not an error.
pub(crate) fn unlink(name: &SegmentName) -> Result<(), Error> {
    match rustix::shm::unlink(name.as_str()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(errno) => Err(Error::os("shm_unlink", *name)(errno)),
    }
}

/// The real `/dev/shm`, as the manager sees it: it unlinks only objects owned
/// by its own user.
#[derive(Debug)]
pub struct ShmNamespace {
    uid: u32,
}

impl ShmNamespace {
    /// A namespace acting for the current effective user.
    pub fn for_current_user() -> Self {
        Self {
            uid: rustix::process::geteuid().as_raw(),
        }
    }

    /// A namespace that unlinks only objects `uid` owns (root cleaning up
    /// after one user, say).
    pub fn for_user(uid: u32) -> Self {
        Self { uid }
    }
}

impl Namespace for ShmNamespace {
    type Error = std::io::Error;

    fn observe(&mut self, name: &SegmentName) -> Result<Observed, Self::Error> {
        match rustix::shm::open(name.as_str(), OFlags::RDONLY | nofollow(), Mode::empty()) {
            Ok(_) => Ok(Observed::Segment {
                refcount: peek_refcount(name).unwrap_or(0),
            }),
            Err(Errno::NOENT) => Ok(Observed::Absent),
            // Exists, but is not ours to open.
            Err(Errno::ACCESS | Errno::PERM | Errno::LOOP) => Ok(Observed::Foreign),
            Err(errno) => Err(errno.into()),
        }
    }

    fn leaked(
        &mut self,
        prefix: &libshm_core::name::NamePrefix,
        each: &mut dyn FnMut(SegmentName),
    ) -> Result<(), Self::Error> {
        let scan = crate::inspect::scan(prefix).map_err(std::io::Error::other)?;
        for segment in scan.segments {
            if segment.status == crate::inspect::Status::Leaked && segment.owner_uid == self.uid {
                each(segment.name);
            }
        }
        Ok(())
    }

    fn unlink(&mut self, name: &SegmentName) -> Result<Unlinked, Self::Error> {
        let fd = match rustix::shm::open(name.as_str(), OFlags::RDONLY | nofollow(), Mode::empty())
        {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(Unlinked::Absent),
            Err(Errno::ACCESS | Errno::PERM | Errno::LOOP) => return Ok(Unlinked::Foreign),
            Err(errno) => return Err(errno.into()),
        };
        if rustix::fs::fstat(&fd)?.st_uid != self.uid {
            return Ok(Unlinked::Foreign);
        }
        match rustix::shm::unlink(name.as_str()) {
            Ok(()) => Ok(Unlinked::Removed),
            Err(Errno::NOENT) => Ok(Unlinked::Absent),
            Err(errno) => Err(errno.into()),
        }
    }
}
