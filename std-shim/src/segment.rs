//! A mapped, refcounted shared-memory segment: how it comes to be, is shared
//! and goes away. Reading and writing its data is [`data`]'s.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::Arc;

use libshm_core::handshake::ManagerHandle;
use libshm_core::header::{HEADER_LEN, Refcount, RefcountError, Released};
use libshm_core::name::SegmentName;
use memmap2::MmapRaw;

use crate::error::Error;
use crate::link::Link;
use crate::manager_link::ManagerLink;
use crate::naming::current_pid;
use crate::pool::Pool;
use crate::share::ShareHandle;
use crate::shm;

mod cursor;
mod data;

pub use cursor::SegmentCursor;
pub use data::{OutOfBounds, ViewError};

/// A POSIX shared-memory segment laid out as PyTorch lays it out: a 64-byte
/// header whose first 4 bytes are the cross-process refcount, then the data.
///
/// Creating registers a fresh name with the manager first, so a crash at any
/// later point leaves nothing the manager does not know about. Dropping
/// decrements the refcount, unlinks the name if that was the last reference,
/// unmaps, and tells the manager. Drop never panics.
///
/// Other processes may write the data at any time, so the safe API never
/// lends it out as `&[u8]`: it copies in and out with atomic accesses
/// ([`read_at`](Self::read_at), [`write_at`](Self::write_at),
/// [`read_obj`](Self::read_obj), [`cursor`](Self::cursor)) or lays atomics
/// over it ([`atomics`](Self::atomics)). Callers who coordinate access
/// themselves have `unsafe` slices.
///
/// To hand the segment to another process, [`share`](Self::share) it.
pub struct SharedSegment {
    map: ManuallyDrop<MmapRaw>,
    data_len: usize,
    name: SegmentName,
    link: Arc<Link>,
    /// The process that holds the reference; a forked copy must not release it.
    owner_pid: u32,
    /// Taken from this pool, and given back to it to unmap and unlink.
    pool: Option<Arc<Pool>>,
}

/// What closing a segment did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Ours was the last reference, and the name was unlinked (for a
    /// segment from a pool: is being unlinked, by the pool's thread).
    pub unlinked: bool,
}

impl SharedSegment {
    /// Creates a segment of `size` data bytes through this process's default manager.
    pub fn create(size: usize) -> Result<Self, Error> {
        ManagerLink::default_for_process()?.create(size)
    }

    /// Opens the segment `name` that another process shared, registering with
    /// the manager at `handle`. Maps the header plus `size` bytes and refuses
    /// a segment smaller than that.
    ///
    /// The three values are what [`manager_handle`](Self::manager_handle),
    /// [`name`](Self::name) and [`len`](Self::len) return in the sharing
    /// process (and what PyTorch's `storage._share_filename_cpu_()` returns);
    /// parse them from text with [`str::parse`]. Unlike a [`ShareHandle`]
    /// they keep nothing alive: the segment must still be open somewhere.
    pub fn open(handle: &ManagerHandle, name: &SegmentName, size: usize) -> Result<Self, Error> {
        ManagerLink::connect(handle)?.open(name, size)
    }

    /// The one way a segment is created: registers `name` with the link's
    /// manager, then creates and maps it with `size` data bytes and a
    /// refcount of 1.
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

    /// Registers `name` and maps the existing segment (all of it for `None`),
    /// adding our reference to its refcount.
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

    /// Opens what a [`ShareHandle`] names, then drops the reference the
    /// handle kept alive in transit (PyTorch's receiver calls
    /// `_shared_decref` after opening, for the same reason).
    pub(crate) fn open_shared(
        link: Arc<Link>,
        name: SegmentName,
        size: usize,
    ) -> Result<Self, Error> {
        let segment = Self::open_with(link, name, Some(size))?;
        match segment.refcount().release_in_transit() {
            Ok(_) => Ok(segment),
            // Dropping `segment` releases our reference, the only one left:
            // nobody else holds the segment, so unlinking it is right.
            Err(RefcountError::Underflow { count }) => Err(Error::NotInTransit {
                name,
                refcount: count,
            }),
            Err(source) => Err(Error::Refcount { name, source }),
        }
    }

    fn assemble(map: MmapRaw, data_len: usize, name: SegmentName, link: Arc<Link>) -> Self {
        Self {
            map: ManuallyDrop::new(map),
            data_len,
            name,
            link,
            owner_pid: current_pid(),
            pool: None,
        }
    }

    /// A segment of `size` data bytes from `link`'s pool, if one is ready:
    /// created, registered and mapped ahead, refcount 1.
    pub(crate) fn from_pool(link: &Arc<Link>, size: usize) -> Option<Self> {
        let pool = link.pool()?;
        let (name, map) = pool.take(size)?;
        let mut segment = Self::assemble(map, size, name, Arc::clone(link));
        segment.pool = Some(Arc::clone(pool));
        Some(segment)
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

    /// A handle another process opens this segment with, keeping the
    /// segment alive until it does, as PyTorch does while a tensor is
    /// pickled: the refcount is raised now and lowered by
    /// [`ShareHandle::open`]. This process may drop the segment as soon as
    /// the handle is sent. See [`ShareHandle`] for a handle that is never
    /// opened.
    pub fn share(&self) -> Result<ShareHandle, Error> {
        self.refcount()
            .acquire()
            .map_err(|source| Error::Refcount {
                name: self.name,
                source,
            })?;
        Ok(ShareHandle::new(
            self.link.handle(),
            self.name,
            self.data_len,
        ))
    }

    /// Closes the segment now and says whether it was unlinked. Dropping does
    /// the same and logs instead of returning.
    pub fn close(self) -> Closed {
        let mut this = ManuallyDrop::new(self);
        let closed = this.release();
        // SAFETY: `this` is not used again and its Drop never runs; the link
        // is the one field left to drop (the map went in release(), the
        // rest are plain values). Without this the connection would outlive
        // every segment and link that used it.
        unsafe { std::ptr::drop_in_place(&mut this.link) };
        closed
    }

    fn release(&mut self) -> Closed {
        // A forked copy, or an open whose refcount was refused: unmap only.
        let ours = current_pid() == self.owner_pid;
        if let Some(pool) = self.pool.take().filter(|_| ours) {
            // The refcount now; the unmapping and unlinking on the pool's
            // thread, off the caller's path.
            let last = matches!(self.refcount().release(), Ok(Released::Last));
            // SAFETY: as below: taken exactly once, never read again.
            let map = unsafe { ManuallyDrop::take(&mut self.map) };
            pool.give_back(self.name, map, last);
            if !last {
                self.link.release(self.name, false);
            }
            // Else the pool's thread tells the manager once it has unlinked
            // the name: told before, and killed in between, this process
            // would leave the name to nobody (a manager keeps a released
            // name that still exists only to unlink it at its shutdown).
            return Closed { unlinked: last };
        }
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
                    tracing::warn!("{}", crate::error_chain::Chain(&err));
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
