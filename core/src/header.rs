//! The 64-byte segment header and the refcount in its first four bytes.
//!
//! ATen's `RefcountedMapAllocator` maps `size + 64` bytes and keeps a
//! `std::atomic<int>` at offset 0; user data starts at offset 64. Every process
//! that maps the segment adjusts that one counter, and whoever brings it to zero
//! unlinks the name. Because the counter is shared with processes we do not
//! control, every operation here tolerates a value it did not expect.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicI32, Ordering};

/// Bytes before user data.
pub const HEADER_LEN: usize = 64;

/// Why a mapping size is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// `data_len + 64` does not fit the address space.
    Overflow,
    /// The object is too small to hold the header and the requested data.
    /// Mapping it anyway would mean growing someone else's live segment.
    ObjectTooSmall {
        /// Bytes the caller asked to map, header included.
        wanted: u64,
        /// Bytes the object has.
        actual: u64,
    },
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overflow => f.write_str("segment size overflows the address space"),
            Self::ObjectTooSmall { wanted, actual } => write!(
                f,
                "segment holds {actual} bytes but {wanted} were requested (header included)"
            ),
        }
    }
}

impl core::error::Error for SizeError {}

/// Bytes to map for `data_len` bytes of user data.
pub fn mapping_len(data_len: usize) -> Result<usize, SizeError> {
    data_len.checked_add(HEADER_LEN).ok_or(SizeError::Overflow)
}

/// Bytes to map when opening an existing object of `object_len` bytes.
///
/// `Some(n)` maps the header plus `n` data bytes and refuses an object that is
/// smaller (ATen would `ftruncate` it bigger, writing into a live segment);
/// `None` maps the whole object.
pub fn open_mapping_len(data_len: Option<usize>, object_len: u64) -> Result<usize, SizeError> {
    let wanted = match data_len {
        Some(len) => mapping_len(len)?,
        None => usize::try_from(object_len).map_err(|_| SizeError::Overflow)?,
    };
    let wanted_u64 = u64::try_from(wanted).map_err(|_| SizeError::Overflow)?;
    if wanted_u64 > object_len || object_len < HEADER_LEN as u64 {
        return Err(SizeError::ObjectTooSmall {
            wanted: wanted_u64,
            actual: object_len,
        });
    }
    Ok(wanted)
}

/// The shared refcount of one mapped segment.
#[derive(Clone, Copy)]
pub struct Refcount<'a> {
    cell: &'a AtomicI32,
}

/// What releasing a reference left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// Others still hold the segment.
    Shared {
        /// References left after ours.
        remaining: i32,
    },
    /// Ours was the last reference: the caller unlinks the name.
    Last,
}

/// A refcount value that says the protocol was broken by someone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefcountError {
    /// Opening found a count of zero or less: the segment is already being
    /// torn down, and joining it would resurrect a name about to be unlinked.
    AlreadyReleased {
        /// The count found.
        count: i32,
    },
    /// Releasing found a count of zero or less: someone released too often.
    /// The count is left as found rather than driven further negative.
    Underflow {
        /// The count found.
        count: i32,
    },
    /// Opening found `i32::MAX`: one more would wrap.
    Saturated,
}

impl fmt::Display for RefcountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyReleased { count } => {
                write!(
                    f,
                    "segment refcount is {count}: it is already being released"
                )
            }
            Self::Underflow { count } => {
                write!(
                    f,
                    "segment refcount is {count}: released more often than acquired"
                )
            }
            Self::Saturated => f.write_str("segment refcount is at its maximum"),
        }
    }
}

impl core::error::Error for RefcountError {}

impl<'a> Refcount<'a> {
    /// The refcount at the start of a mapped segment.
    ///
    /// # Safety
    /// `header` must be aligned to 4 and point to at least 4 bytes that are
    /// readable and writable for `'a` and that every other party only accesses
    /// atomically (a `MAP_SHARED` mapping of a segment that follows this protocol).
    pub unsafe fn from_header(header: NonNull<u8>) -> Self {
        // SAFETY: the caller guarantees alignment, validity for 'a and atomic-only
        // access by others, which is exactly AtomicI32::from_ptr's contract.
        let cell = unsafe { AtomicI32::from_ptr(header.as_ptr().cast::<i32>()) };
        Self { cell }
    }

    /// A refcount over an atomic the caller owns (tests, in-memory segments).
    pub fn from_atomic(cell: &'a AtomicI32) -> Self {
        Self { cell }
    }

    /// The creator's first reference. Only valid on a segment nobody else has
    /// opened yet (`O_EXCL` guarantees that).
    pub fn initialize(&self) {
        self.cell.store(1, Ordering::SeqCst);
    }

    /// Adds an opener's reference and returns the new count.
    ///
    /// Unlike ATen's plain increment, this refuses to bring a count back from
    /// zero: that segment's last holder is unlinking it right now.
    pub fn acquire(&self) -> Result<i32, RefcountError> {
        let mut count = self.cell.load(Ordering::SeqCst);
        loop {
            if count <= 0 {
                return Err(RefcountError::AlreadyReleased { count });
            }
            let next = count.checked_add(1).ok_or(RefcountError::Saturated)?;
            match self
                .cell
                .compare_exchange_weak(count, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Ok(next),
                Err(seen) => count = seen,
            }
        }
    }

    /// Drops one reference. [`Released::Last`] tells the caller to unlink.
    pub fn release(&self) -> Result<Released, RefcountError> {
        match self.decrement_above(0) {
            Ok(1) => Ok(Released::Last),
            Ok(before) => Ok(Released::Shared {
                remaining: before - 1,
            }),
            Err(count) => Err(RefcountError::Underflow { count }),
        }
    }

    /// Drops a reference that someone took on another's behalf (PyTorch's
    /// `_shared_incref` while a handle is pickled, lowered by the receiver
    /// once it has opened the segment), and returns the new count.
    ///
    /// The caller holds a reference of its own, so this never drops the
    /// last one: a count of 1 or less means the reference in transit is not
    /// there (the handle was used before, or never took one), and is left
    /// as found with [`RefcountError::Underflow`].
    pub fn release_in_transit(&self) -> Result<i32, RefcountError> {
        self.decrement_above(1)
            .map(|before| before - 1)
            .map_err(|count| RefcountError::Underflow { count })
    }

    /// Lowers the count by one if it is above `floor`: the count before, or
    /// the count found (left as it is) if it was not above.
    fn decrement_above(&self, floor: i32) -> Result<i32, i32> {
        self.cell
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |count| {
                (count > floor).then(|| count - 1)
            })
    }

    /// The count right now (advisory: others may change it at any time).
    pub fn current(&self) -> i32 {
        self.cell.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for Refcount<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Refcount").field(&self.current()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use std::vec::Vec;

    /// A stand-in for a mapped header: 64 bytes, aligned like a page start.
    #[repr(C, align(64))]
    struct FakeHeader([u8; HEADER_LEN]);

    #[test]
    fn raw_header_pointer_round_trip() {
        let mut header = FakeHeader([0xee; HEADER_LEN]);
        let ptr = NonNull::from(&mut header.0).cast::<u8>();
        // SAFETY: `header` is 64-aligned, 64 bytes, lives to the end of the test
        // and is only touched through this Refcount meanwhile.
        let refcount = unsafe { Refcount::from_header(ptr) };
        refcount.initialize();
        assert_eq!(refcount.acquire(), Ok(2));
        assert_eq!(refcount.release(), Ok(Released::Shared { remaining: 1 }));
        assert_eq!(refcount.release(), Ok(Released::Last));
        assert_eq!(&header.0[..4], &0i32.to_ne_bytes());
        assert!(
            header.0[4..].iter().all(|&b| b == 0xee),
            "only the first 4 bytes change"
        );
    }

    #[test]
    fn never_resurrects_or_underflows() {
        let cell = AtomicI32::new(0);
        let refcount = Refcount::from_atomic(&cell);
        assert_eq!(
            refcount.acquire(),
            Err(RefcountError::AlreadyReleased { count: 0 })
        );
        assert_eq!(
            refcount.release(),
            Err(RefcountError::Underflow { count: 0 })
        );
        cell.store(-3, Ordering::SeqCst);
        assert_eq!(
            refcount.release(),
            Err(RefcountError::Underflow { count: -3 })
        );
        assert_eq!(refcount.current(), -3);
        cell.store(i32::MAX, Ordering::SeqCst);
        assert_eq!(refcount.acquire(), Err(RefcountError::Saturated));
    }

    #[test]
    fn a_reference_in_transit_is_released_but_never_the_callers_own() {
        let cell = AtomicI32::new(1);
        let refcount = Refcount::from_atomic(&cell);
        assert_eq!(
            refcount.acquire(),
            Ok(2),
            "the sender's reference in transit"
        );
        assert_eq!(refcount.acquire(), Ok(3), "the receiver opens");
        assert_eq!(refcount.release_in_transit(), Ok(2));
        assert_eq!(refcount.release(), Ok(Released::Shared { remaining: 1 }));
        assert_eq!(
            refcount.release_in_transit(),
            Err(RefcountError::Underflow { count: 1 }),
            "used twice: the last reference stays"
        );
        assert_eq!(refcount.current(), 1);
    }

    #[test]
    fn concurrent_acquire_release_balance() {
        let cell = Arc::new(AtomicI32::new(1));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let cell = Arc::clone(&cell);
                thread::spawn(move || {
                    let refcount = Refcount::from_atomic(&cell);
                    for _ in 0..if cfg!(miri) { 20 } else { 10_000 } {
                        refcount.acquire().unwrap();
                        assert!(matches!(refcount.release(), Ok(Released::Shared { .. })));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(Refcount::from_atomic(&cell).release(), Ok(Released::Last));
    }

    #[test]
    fn mapping_sizes() {
        assert_eq!(mapping_len(0), Ok(64));
        assert_eq!(mapping_len(usize::MAX), Err(SizeError::Overflow));
        assert_eq!(open_mapping_len(Some(100), 164), Ok(164));
        assert_eq!(open_mapping_len(Some(10), 164), Ok(74));
        assert_eq!(
            open_mapping_len(Some(101), 164),
            Err(SizeError::ObjectTooSmall {
                wanted: 165,
                actual: 164
            })
        );
        assert_eq!(open_mapping_len(None, 164), Ok(164));
        assert_eq!(
            open_mapping_len(None, 10),
            Err(SizeError::ObjectTooSmall {
                wanted: 10,
                actual: 10
            })
        );
    }
}
