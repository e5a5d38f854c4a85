//! The raw syscall floor: what one create, touch and drop costs with no
//! manager, no refcount and no registry, just the calls no implementation can
//! avoid (`shm_open`, `ftruncate`, `fallocate`, `mmap`, `close`, the page
//! faults of the touch, `shm_unlink`, `munmap`). Benchmarks report our hot path
//! as a ratio to this, measured in the same run.

use libshm_core::header::HEADER_LEN;
use libshm_core::name::{NameError, NamePrefix, SegmentName};

use crate::error::Error;
use crate::shm;

/// Bytes between touched bytes: one per page.
const PAGE: usize = 4096;

/// A fresh name, made the way segments are named (the floor pays for it too:
/// every implementation needs a unique name).
pub fn fresh_name(prefix: &NamePrefix) -> Result<SegmentName, NameError> {
    crate::naming::next_name(prefix)
}

/// Creates `name` with `data_len` data bytes, writes one byte per data page,
/// unlinks and unmaps it: the same system calls, in the same order, as
/// `SharedSegment::create` followed by `touch` and drop.
pub fn cycle(name: &SegmentName, data_len: usize) -> Result<(), Error> {
    let map = shm::create(name, data_len)?;
    let base = map.as_mut_ptr();
    let mut offset = 0;
    while offset < data_len {
        // SAFETY: HEADER_LEN + offset < HEADER_LEN + data_len = the mapping's
        // length; the mapping is private to this call (just created with O_EXCL).
        unsafe { base.add(HEADER_LEN + offset).write_volatile(0) };
        offset += PAGE;
    }
    shm::unlink(name)?;
    drop(map);
    Ok(())
}
