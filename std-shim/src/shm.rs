//! The `/dev/shm` side of a segment: create, open and unlink for the process
//! that uses it (`dir` and `namespace` hold the side of those who only
//! look: the manager and the inspector).
//!
//! Creation is `shm_open(O_CREAT|O_EXCL, 0600)`, `ftruncate` and `fallocate`, in
//! that order, so a full `/dev/shm` is an error now rather than a `SIGBUS` at
//! first touch. Every open adds `O_NOFOLLOW`, like glibc's `shm_open`.
//!
//! These opens need no guard against what others put in `/dev/shm`: a create
//! is `O_EXCL` (anything already there is `EEXIST`), and an open is `O_RDWR`,
//! which does not wait on a FIFO and whose result must then map a header's
//! worth of bytes, which a FIFO cannot.

use std::os::fd::OwnedFd;

use libshm_core::header::{self, SizeError};
use libshm_core::name::SegmentName;
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{FallocateFlags, Mode};
use rustix::io::Errno;
use rustix::shm::OFlags;

use crate::error::Error;

pub(crate) mod dir;
mod namespace;

pub use namespace::{ShmError, ShmNamespace};

fn nofollow() -> OFlags {
    OFlags::from_bits_retain(rustix::fs::OFlags::NOFOLLOW.bits())
}

/// Creates `name` with room for `data_len` bytes after the header and maps it.
/// On any failure after `shm_open` the name is unlinked again.
pub(crate) fn create(name: &SegmentName, data_len: usize) -> Result<MmapRaw, Error> {
    create_mapped(name, data_len, false)
}

/// [`create`], with every page faulted in by the kernel as it maps (for
/// segments made ahead of time, off the hot path).
pub(crate) fn create_populated(name: &SegmentName, data_len: usize) -> Result<MmapRaw, Error> {
    create_mapped(name, data_len, true)
}

fn create_mapped(name: &SegmentName, data_len: usize, populate: bool) -> Result<MmapRaw, Error> {
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
    let sized = size(&fd, name, bytes).and_then(|()| map(&fd, name, len, populate));
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

fn map(fd: &OwnedFd, name: &SegmentName, len: usize, populate: bool) -> Result<MmapRaw, Error> {
    let mut options = MmapOptions::new();
    options.len(len);
    if populate {
        options.populate();
    }
    options.map_raw(fd).map_err(|source| Error::Os {
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
    map(&fd, name, len, false)
}

/// Unlinks `name`; a name that is already gone is not an error.
pub(crate) fn unlink(name: &SegmentName) -> Result<(), Error> {
    match rustix::shm::unlink(name.as_str()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(errno) => Err(Error::os("shm_unlink", *name)(errno)),
    }
}
