//! A mapped, refcounted shared-memory segment.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::Arc;

use libshm_core::handshake::ManagerHandle;
use libshm_core::header::{HEADER_LEN, Refcount, Released};
use libshm_core::name::SegmentName;
use memmap2::MmapRaw;

use crate::error::Error;
use crate::link::Link;
use crate::manager::Manager;
use crate::naming::current_pid;
use crate::shm;

/// A POSIX shared-memory segment laid out as PyTorch lays it out: a 64-byte
/// header whose first 4 bytes are the cross-process refcount, then the data.
///
/// Creating registers a fresh name with the manager first, so a crash at any
/// later point leaves nothing the manager does not know about. Dropping
/// decrements the refcount, unlinks the name if that was the last reference,
/// unmaps, and tells the manager. Drop never panics.
///
/// The data is shared with other processes, which may write it at any time,
/// so it is reached through copies ([`SharedSegment::read_at`],
/// [`SharedSegment::write_at`]) or, for callers who coordinate access
/// themselves, through `unsafe` slices.
pub struct SharedSegment {
    map: ManuallyDrop<MmapRaw>,
    data_len: usize,
    name: SegmentName,
    link: Arc<Link>,
    /// The process that holds the reference; a forked copy must not release it.
    owner_pid: u32,
}

/// Bytes outside the segment's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bytes {start}..{end} are outside the segment's {len} data bytes")]
pub struct OutOfBounds {
    /// Requested start.
    pub start: usize,
    /// Requested end.
    pub end: usize,
    /// Data length.
    pub len: usize,
}

/// What closing a segment did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Ours was the last reference, and the name was unlinked.
    pub unlinked: bool,
}

impl SharedSegment {
    /// Creates a segment of `size` data bytes through this process's default manager.
    pub fn create(size: usize) -> Result<Self, Error> {
        Manager::default_for_process()?.create(size)
    }

    /// Opens the segment `name` that another process shared, registering with
    /// the manager at `handle`. Maps the header plus `size` bytes and refuses
    /// a segment smaller than that.
    pub fn open(handle: &str, name: &str, size: usize) -> Result<Self, Error> {
        Manager::connect(handle)?.open(name, size)
    }

    pub(crate) fn create_with(
        link: Arc<Link>,
        name: SegmentName,
        size: usize,
    ) -> Result<Self, Error> {
        link.register(name)?;
        let map = match shm::create(&name, size) {
            Ok(map) => map,
            Err(err) => {
                // The name may belong to someone else (it existed); only a name
                // that is certainly gone may ride along with a later write.
                let gone = !matches!(err, Error::Exists { .. });
                link.release(name, gone);
                return Err(err);
            }
        };
        let segment = Self::assemble(map, size, name, link);
        segment.refcount().initialize();
        Ok(segment)
    }

    pub(crate) fn open_with(
        link: Arc<Link>,
        name: SegmentName,
        size: Option<usize>,
    ) -> Result<Self, Error> {
        link.register(name)?;
        let map = match shm::open(&name, size) {
            Ok(map) => map,
            Err(err) => {
                let gone = matches!(err, Error::NotFound { .. });
                link.release(name, gone);
                return Err(err);
            }
        };
        let data_len = map.len() - HEADER_LEN;
        let mut segment = Self::assemble(map, data_len, name, link);
        if let Err(source) = segment.refcount().acquire() {
            // Not ours: unmap without touching the count, and let go of the name.
            segment.owner_pid = 0;
            let link = Arc::clone(&segment.link);
            drop(segment);
            link.release(name, false);
            return Err(Error::Refcount { name, source });
        }
        Ok(segment)
    }

    fn assemble(map: MmapRaw, data_len: usize, name: SegmentName, link: Arc<Link>) -> Self {
        Self {
            map: ManuallyDrop::new(map),
            data_len,
            name,
            link,
            owner_pid: current_pid(),
        }
    }

    fn refcount(&self) -> Refcount<'_> {
        // SAFETY: the mapping is page-aligned, at least HEADER_LEN (64) bytes,
        // readable and writable (MAP_SHARED, PROT_READ|WRITE), and stays mapped
        // while `self` lives. Every process following the protocol touches
        // these 4 bytes only atomically.
        unsafe { Refcount::from_header(self.base()) }
    }

    fn base(&self) -> NonNull<u8> {
        NonNull::new(self.map.as_mut_ptr()).unwrap_or(NonNull::dangling())
    }

    /// The segment's name, as shared with other processes.
    pub fn name(&self) -> &SegmentName {
        &self.name
    }

    /// The handle of the manager this segment is registered with.
    pub fn manager_handle(&self) -> ManagerHandle {
        self.link.handle()
    }

    /// Bytes of user data (the mapping minus the header).
    pub fn len(&self) -> usize {
        self.data_len
    }

    /// Whether there are no data bytes.
    pub fn is_empty(&self) -> bool {
        self.data_len == 0
    }

    /// The refcount in the header right now (other processes may change it).
    pub fn refcount_now(&self) -> i32 {
        self.refcount().current()
    }

    /// Start of the user data, for callers that coordinate access themselves.
    pub fn as_ptr(&self) -> NonNull<u8> {
        // SAFETY: HEADER_LEN is within the mapping, which is at least that long.
        unsafe { self.base().add(HEADER_LEN) }
    }

    /// The data as a slice.
    ///
    /// # Safety
    /// No process may write the data while the slice lives.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the range is the mapped data; the caller rules out writers.
        unsafe { std::slice::from_raw_parts(self.as_ptr().as_ptr(), self.data_len) }
    }

    /// The data as a mutable slice.
    ///
    /// # Safety
    /// No other process may read or write the data while the slice lives.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the range is the mapped data; the caller rules out other users.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr().as_ptr(), self.data_len) }
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        let end = offset.checked_add(len).filter(|&end| end <= self.data_len);
        end.map(drop).ok_or(OutOfBounds {
            start: offset,
            end: offset.saturating_add(len),
            len: self.data_len,
        })
    }

    /// Copies data bytes starting at `offset` into `out`.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<(), OutOfBounds> {
        self.check(offset, out.len())?;
        // SAFETY: the source range was bounds-checked against the live mapping
        // and cannot overlap `out`, which is process-private memory. No
        // reference to the shared bytes is created, so writes by other
        // processes (outside this program, like device memory) cannot break
        // an aliasing assumption.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.as_ptr().as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            );
        }
        Ok(())
    }

    /// Copies `data` into the segment at `offset`.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.check(offset, data.len())?;
        // SAFETY: as in read_at, with the roles of the two ranges swapped.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.as_ptr().as_ptr().add(offset),
                data.len(),
            );
        }
        Ok(())
    }

    /// Sets every data byte to `byte`.
    pub fn fill(&self, byte: u8) {
        // SAFETY: the range is exactly the mapped data; see read_at on sharing.
        unsafe { std::ptr::write_bytes(self.as_ptr().as_ptr(), byte, self.data_len) }
    }

    /// Writes one byte per page so the whole segment is backed now.
    pub fn touch(&self) {
        const PAGE: usize = 4096;
        let mut offset = 0;
        while offset < self.data_len {
            // SAFETY: offset < data_len, inside the mapping; a single byte store.
            unsafe { self.as_ptr().as_ptr().add(offset).write_volatile(0) };
            offset += PAGE;
        }
    }

    /// Closes the segment now and says whether it was unlinked. Dropping does
    /// the same and logs instead of returning.
    pub fn close(mut self) -> Closed {
        let closed = self.release();
        std::mem::forget(self);
        closed
    }

    fn release(&mut self) -> Closed {
        // A forked copy, or an open whose refcount was refused: unmap only.
        let ours = current_pid() == self.owner_pid;
        let unlinked = ours && self.drop_reference();
        // SAFETY: `map` is taken exactly once, here, reached only from close()
        // (which then forgets `self`) or drop(); nothing reads it afterwards.
        drop(unsafe { ManuallyDrop::take(&mut self.map) });
        if ours {
            self.link.release(self.name, unlinked);
        }
        Closed { unlinked }
    }

    /// Drops our reference; unlinks the name if it was the last one.
    fn drop_reference(&self) -> bool {
        match self.refcount().release() {
            Ok(Released::Last) => match shm::unlink(&self.name) {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!("{err}");
                    false
                }
            },
            Ok(Released::Shared { .. }) => false,
            Err(err) => {
                tracing::warn!("segment {}: {err}", self.name);
                false
            }
        }
    }
}

impl Drop for SharedSegment {
    fn drop(&mut self) {
        self.release();
    }
}

impl fmt::Debug for SharedSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSegment")
            .field("name", &self.name)
            .field("len", &self.data_len)
            .field("refcount", &self.refcount_now())
            .finish()
    }
}
