//! Handing a segment to another process so that it stays alive in transit.
//!
//! PyTorch pickles a shared tensor as (manager handle, name, size) and, while
//! the pickle travels, holds an extra reference in the segment's header
//! (`_shared_incref`); the receiver opens the segment and then drops that
//! reference (`_shared_decref` in `rebuild_storage_filename`). The sender may
//! drop its own segment the moment the message is sent. A [`ShareHandle`] is
//! that message: [`SharedSegment::share`] raises the refcount and
//! [`ShareHandle::open`] lowers it again.

use std::fmt;
use std::str::FromStr;

use libshm_core::handshake::{HandleError, ManagerHandle};
use libshm_core::name::{NameError, SegmentName};

use crate::error::Error;
use crate::registry;
use crate::segment::SharedSegment;

/// A segment on its way to another process, holding a reference to it until
/// it is opened there.
///
/// Send it as text: [`Display`](fmt::Display) writes
/// `<size> <name> <manager handle>` and [`FromStr`] reads it back. Open it
/// exactly once, with [`ShareHandle::open`]. The refcount is one number, so
/// nothing can tell a reference in transit from a holder's: opening the
/// same handle twice drops someone else's reference, and the segment's name
/// may then be unlinked while that holder still maps it (PyTorch's pickled
/// handles have the same limit).
///
/// A handle that is never opened keeps the segment in `/dev/shm` until its
/// manager exits: with no live holder, a refcount higher than its dead
/// holders account for reads as "in transit" to our `shm-manager`, which
/// keeps the segment while it serves and, once its last client has gone,
/// lingers up to its `--linger` (60 s by default) for a receiver before it
/// unlinks every name it knows. PyTorch's own manager forgets a name once
/// its sender released it, so there an unopened handle's segment is left
/// for `shmctl gc`. To take back a handle that was never sent, open it in
/// the sending process and drop the segment.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a share handle keeps its segment alive until it is opened"]
pub struct ShareHandle {
    manager: ManagerHandle,
    name: SegmentName,
    len: usize,
}

impl ShareHandle {
    pub(crate) fn new(manager: ManagerHandle, name: SegmentName, len: usize) -> Self {
        Self { manager, name, len }
    }

    /// The manager the sender registered the segment with.
    pub fn manager(&self) -> &ManagerHandle {
        &self.manager
    }

    /// The segment's name.
    pub fn name(&self) -> &SegmentName {
        &self.name
    }

    /// Data bytes the receiver maps.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the segment has no data bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Opens the segment, registering with the sender's manager (or, for a
    /// private `pipe:` manager nobody else can reach, this process's
    /// default manager), and drops the reference the handle held.
    ///
    /// Fails with [`Error::NotInTransit`] if, once ours is added, the
    /// segment holds no other reference to drop.
    pub fn open(self) -> Result<SharedSegment, Error> {
        let link = registry::link_for(self.manager)?;
        SharedSegment::open_shared(link, self.name, self.len)
    }
}

impl fmt::Display for ShareHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The handle goes last: it is the only field that may hold spaces.
        write!(f, "{} {} {}", self.len, self.name, self.manager)
    }
}

/// Why text is not a [`ShareHandle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShareHandleError {
    /// Fewer than three space-separated fields.
    #[error("a share handle is `<size> <name> <manager handle>`")]
    Shape,
    /// The size is not a number of bytes.
    #[error("a share handle's size is not a number of bytes")]
    Size,
    /// The name is not a segment name.
    #[error("a share handle's segment name is invalid")]
    Name(#[source] NameError),
    /// The manager handle is invalid.
    #[error("a share handle's manager handle is invalid")]
    Manager(#[source] HandleError),
}

impl FromStr for ShareHandle {
    type Err = ShareHandleError;

    fn from_str(text: &str) -> Result<Self, ShareHandleError> {
        let mut fields = text.splitn(3, ' ');
        let (Some(len), Some(name), Some(manager)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(ShareHandleError::Shape);
        };
        Ok(Self {
            len: len.parse().map_err(|_| ShareHandleError::Size)?,
            name: name.parse().map_err(ShareHandleError::Name)?,
            manager: manager.parse().map_err(ShareHandleError::Manager)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_with_spaces_in_the_handle() {
        let handle = ShareHandle::new(
            "/tmp/my dir/torch-shm-dir-x/manager.sock".parse().unwrap(),
            "/torch_1_2_3".parse().unwrap(),
            4096,
        );
        let text = handle.to_string();
        assert_eq!(
            text,
            "4096 /torch_1_2_3 /tmp/my dir/torch-shm-dir-x/manager.sock"
        );
        assert_eq!(text.parse::<ShareHandle>(), Ok(handle));
    }

    #[test]
    fn malformed_text_says_which_field() {
        assert_eq!(
            "4096 /torch_1".parse::<ShareHandle>(),
            Err(ShareHandleError::Shape)
        );
        assert_eq!(
            "-1 /torch_1 /tmp/s".parse::<ShareHandle>(),
            Err(ShareHandleError::Size)
        );
        assert_eq!(
            "1 torch_1 /tmp/s".parse::<ShareHandle>(),
            Err(ShareHandleError::Name(NameError::MissingLeadingSlash))
        );
        assert_eq!(
            "1 /torch_1 /tmp/\u{7f}".parse::<ShareHandle>(),
            Err(ShareHandleError::Manager(HandleError::ControlByte {
                at: 5
            }))
        );
    }
}
