//! The shared-memory namespace as a manager driver sees it.
//!
//! The manager state machine decides *what* to unlink; a driver carries it out
//! through this trait. It lives in the core so that every transport's event loop
//! can take the same implementation (the std shim's, over `/dev/shm`) without
//! the transports depending on each other.

use core::fmt;

use crate::name::{NamePrefix, SegmentName};

/// What an unlink attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unlinked {
    /// The object existed, belonged to us, and is gone now.
    Removed,
    /// Nothing by that name existed.
    Absent,
    /// It exists but belongs to another user; left alone.
    Foreign,
}

/// Existence checks and unlinks of segment names.
pub trait Namespace {
    /// The implementation's error.
    type Error: fmt::Display;

    /// Whether `name` exists now.
    fn exists(&mut self, name: &SegmentName) -> Result<bool, Self::Error>;

    /// Removes `name` if it exists and belongs to the caller's user.
    fn unlink(&mut self, name: &SegmentName) -> Result<Unlinked, Self::Error>;

    /// Calls `each` for every name under `prefix` that belongs to the
    /// caller's user and looks leaked: its creator is dead and no process
    /// maps or holds it. Asked only by a manager that took over from a dead
    /// one and so cannot know what its predecessor knew. The default finds
    /// nothing.
    fn leaked(
        &mut self,
        _prefix: &NamePrefix,
        _each: &mut dyn FnMut(SegmentName),
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}
