//! The shared-memory namespace as a manager driver sees it.
//!
//! The manager state machine decides *what* to look at and unlink; a driver
//! carries it out through this trait and reports back. It lives in the core so
//! that every transport's event loop can take the same implementation (the std
//! shim's, over `/dev/shm`) without the transports depending on each other.
//!
//! `/dev/shm` is world-writable: any local user may put a FIFO, a symlink or a
//! file of their own under a name the manager knows. An implementation must
//! therefore never block on what it finds (no open without `O_NONBLOCK`),
//! never follow a link, and never open for reading or unlink anything that is
//! not a regular file owned by the manager's user: that is [`Observed::Foreign`]
//! and [`Unlinked::Foreign`].

use core::fmt;

use crate::name::SegmentName;
use crate::pressure::Usage;

/// What a look at one name found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Nothing by that name.
    Absent,
    /// A regular file owned by the manager's user. `refcount` is the `i32`
    /// in the first four bytes of its header, or 0 when the file is shorter
    /// than that (created, not yet sized).
    Segment {
        /// The header's refcount as read (advisory: holders may change it).
        refcount: i32,
    },
    /// Something the manager must not touch: another user's object, a FIFO,
    /// a symlink, a directory.
    Foreign,
}

/// What an unlink attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unlinked {
    /// The object existed, was a regular file of ours, and is gone now.
    Removed,
    /// Nothing by that name existed.
    Absent,
    /// It exists but is not ours to remove (see [`Observed::Foreign`]); left alone.
    Foreign,
}

/// Looks at and unlinks segment names, without ever blocking on them.
pub trait Namespace {
    /// The implementation's error: a look or unlink that could not be carried
    /// out now (out of descriptors, say) and is worth trying again later.
    type Error: fmt::Display;

    /// What is under `name` now, with its header's refcount if it is ours.
    fn observe(&mut self, name: &SegmentName) -> Result<Observed, Self::Error>;

    /// Which of `names` have no entry (`absent[i]` for `names[i]`), told by
    /// one listing where that costs less than a look at each; false, and
    /// `absent` untouched, where it does not (the caller then looks at
    /// each). A name found absent had no entry at some moment of the
    /// listing, as [`Namespace::observe`]'s answer holds at its moment.
    fn absent_among(
        &mut self,
        _names: &[SegmentName],
        _absent: &mut [bool],
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }

    /// Removes `name` if it is a regular file belonging to the caller's user.
    fn unlink(&mut self, name: &SegmentName) -> Result<Unlinked, Self::Error>;

    /// The size of `name` in bytes, if it is a regular file of ours; for
    /// status reports.
    fn size(&mut self, _name: &SegmentName) -> Result<Option<u64>, Self::Error> {
        Ok(None)
    }

    /// Whether any process maps `name` or holds a descriptor to it. A
    /// namespace that cannot tell says no: then the refcount rule alone
    /// judges, as it does for every name whose holders' connections ended.
    fn mapped(&mut self, _name: &SegmentName) -> Result<bool, Self::Error> {
        Ok(false)
    }

    /// How full the namespace's file system is, where that can be told.
    fn usage(&mut self) -> Result<Option<Usage>, Self::Error> {
        Ok(None)
    }
}
