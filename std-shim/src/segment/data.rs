//! A segment's data: bytes other processes may write at any time. Reached by
//! atomic copies ([`crate::shared_memory`]), typed values, atomic views and,
//! for callers who coordinate access themselves, `unsafe` slices.

use std::mem::{align_of, size_of};
use std::ptr::NonNull;

use bytemuck::{NoUninit, Pod};
use libshm_core::header::HEADER_LEN;

use super::{SegmentCursor, SharedSegment};
use crate::shared_memory::{self, SharedAtomic};

/// Bytes outside the segment's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bytes {start}..{end} are outside the segment's {len} data bytes")]
pub struct OutOfBounds {
    /// Requested start.
    pub start: usize,
    /// Requested end (saturated at `usize::MAX`).
    pub end: usize,
    /// Data length.
    pub len: usize,
}

/// Why a range cannot be viewed as atomics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// The range is not inside the data.
    #[error(transparent)]
    OutOfBounds(#[from] OutOfBounds),
    /// The range does not start at a multiple of the atomic's alignment.
    #[error("offset {offset} is not a multiple of {align}, the atomic type's alignment")]
    Misaligned {
        /// Requested offset.
        offset: usize,
        /// The alignment the type needs.
        align: usize,
    },
}

impl SharedSegment {
    /// Start of the user data, for callers that coordinate access themselves.
    pub fn as_ptr(&self) -> NonNull<u8> {
        // SAFETY: HEADER_LEN is within the mapping, which is at least that long.
        unsafe { self.base().add(HEADER_LEN) }
    }

    /// Start of `offset..offset + len` in the data, if that is inside it.
    fn range(&self, offset: usize, len: usize) -> Result<*mut u8, OutOfBounds> {
        match offset.checked_add(len) {
            // SAFETY: offset <= end <= data_len: inside the mapped data.
            Some(end) if end <= self.data_len => Ok(unsafe { self.as_ptr().add(offset) }.as_ptr()),
            _ => Err(OutOfBounds {
                start: offset,
                end: offset.saturating_add(len),
                len: self.data_len,
            }),
        }
    }

    /// Copies data bytes starting at `offset` into `out`.
    ///
    /// Concurrent writers may be seen half done; each aligned 8-byte word is
    /// read whole (see [`atomics`](Self::atomics) for synchronization).
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<(), OutOfBounds> {
        let src = self.range(offset, out.len())?;
        // SAFETY: the range is inside the live mapping (checked above), which
        // is readable and writable; this crate only accesses it atomically.
        unsafe { shared_memory::copy_out(src, out) };
        Ok(())
    }

    /// Copies `data` into the segment at `offset`.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        let dst = self.range(offset, data.len())?;
        // SAFETY: as in read_at.
        unsafe { shared_memory::copy_in(dst, data) };
        Ok(())
    }

    /// Sets every data byte to `byte`.
    pub fn fill(&self, byte: u8) {
        // SAFETY: exactly the mapped data; see read_at.
        unsafe { shared_memory::fill(self.as_ptr().as_ptr(), self.data_len, byte) };
    }

    /// Faults every data page in for writing now, changing no byte, so the
    /// first real write does not pay for it (`/dev/shm` space was already
    /// reserved when the segment was created).
    pub fn touch(&self) {
        const PAGE: usize = 4096;
        for offset in (0..self.data_len).step_by(PAGE) {
            // SAFETY: offset < data_len: one byte of the mapped data; see read_at.
            unsafe { shared_memory::touch(self.as_ptr().as_ptr().add(offset)) };
        }
    }

    /// Reads a `T` (a `bytemuck::Pod` type: any bit pattern is a valid
    /// value) from the data at `offset`, which need not be aligned.
    pub fn read_obj<T: Pod>(&self, offset: usize) -> Result<T, OutOfBounds> {
        let mut value = T::zeroed();
        self.read_at(offset, bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// Writes `value` (any type without padding, such as a `bytemuck::Pod`
    /// struct) into the data at `offset`, which need not be aligned.
    pub fn write_obj<T: NoUninit>(&self, offset: usize, value: T) -> Result<(), OutOfBounds> {
        self.write_at(offset, bytemuck::bytes_of(&value))
    }

    /// Lays `count` atomics of type `A` (`AtomicU32`, `AtomicU64`, ...) over
    /// the data at `offset`: counters and flags that every process mapping
    /// the segment updates with the orderings it needs, which is how
    /// processes synchronize on the rest of the data.
    ///
    /// `offset` must be a multiple of `A`'s size. Keep such a range apart from
    /// ranges written with copies or other atomic sizes: Rust's memory model
    /// allows overlapping atomic accesses only when they have the same size.
    pub fn atomics<A: SharedAtomic>(&self, offset: usize, count: usize) -> Result<&[A], ViewError> {
        let len = count.checked_mul(size_of::<A>()).ok_or(OutOfBounds {
            start: offset,
            end: usize::MAX,
            len: self.data_len,
        })?;
        let start = self.range(offset, len)?;
        let align = align_of::<A>();
        if !start.addr().is_multiple_of(align) {
            return Err(ViewError::Misaligned { offset, align });
        }
        // SAFETY: the range is inside the mapping (checked), aligned for `A`
        // (checked), and stays mapped while `self` is borrowed. `A` is an
        // atomic integer (SharedAtomic is sealed): every bit pattern is valid,
        // and all access through it is atomic; the crate's own accesses to
        // the data are atomic too.
        Ok(unsafe { std::slice::from_raw_parts(start.cast::<A>(), count) })
    }

    /// An [`io::Read`](std::io::Read), [`io::Write`](std::io::Write) and
    /// [`io::Seek`](std::io::Seek) cursor over the data, starting at 0.
    pub fn cursor(&self) -> SegmentCursor<'_> {
        SegmentCursor::new(self)
    }

    /// The data as a slice.
    ///
    /// # Safety
    /// Nobody (another process, another thread, or this one through
    /// another method or mapping) may write the data while the slice lives.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the range is the mapped data; the caller rules out writers.
        unsafe { std::slice::from_raw_parts(self.as_ptr().as_ptr(), self.data_len) }
    }

    /// The data as a mutable slice.
    ///
    /// # Safety
    /// Nobody else (another process, or this one through another mapping of
    /// the same segment) may read or write the data while the slice lives.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the range is the mapped data; `&mut self` rules out other
        // users of this mapping and the caller rules out everyone else.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr().as_ptr(), self.data_len) }
    }
}
