//! The errors a user of `libshm` sees: each says which segment or manager, and
//! which step failed, so the log line is enough to act on.
//!
//! A variant that wraps a cause returns it from `source()` and leaves it out
//! of its own message, so that a report walking the chain says each thing
//! once (`could not connect to manager /tmp/…/manager.sock: connect: No such
//! file or directory`).

use std::io;

use libshm_core::client::ClientError;
use libshm_core::flags::FlagsError;
use libshm_core::header::{RefcountError, SizeError};
use libshm_core::name::{NameError, SegmentName};
use libshm_unix::{LaunchError, SocketError};

use crate::wire::WireError;

/// Everything that can go wrong creating, opening or managing a segment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No manager executable was configured or found.
    #[error("no shm-manager executable found: set LIBSHM_MANAGER or Config::manager_executable")]
    NoManagerExecutable,
    /// Starting the manager failed.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The pipes for a private manager could not be made.
    #[error("could not set up a private manager's pipes")]
    Pipes(#[source] libshm_pipe::PipeError),
    /// The manager at `handle` could not be reached.
    #[error("could not connect to manager {handle}")]
    Connect {
        /// The manager's handle.
        handle: String,
        /// The socket error.
        #[source]
        source: SocketError,
    },
    /// The manager broke the protocol or went away mid-registration.
    #[error("manager {handle} failed")]
    Manager {
        /// The manager's handle.
        handle: String,
        /// What went wrong.
        #[source]
        source: ClientError<WireError>,
    },
    /// The manager refused a registration: its registry is full, or the
    /// name is outside the prefix it accepts (`--name-prefix`).
    #[error(
        "manager {handle} refused to register {name}: its registry is full, or the name is \
         outside the prefix it accepts (--name-prefix; set LIBSHM_NAME_PREFIX to match)"
    )]
    Refused {
        /// The manager's handle.
        handle: String,
        /// The segment.
        name: SegmentName,
    },
    /// `/dev/shm` cannot hold the segment. Reported up front (`fallocate`),
    /// never as a `SIGBUS` on first touch.
    #[error("no space in /dev/shm for {name} ({bytes} bytes)")]
    NoSpace {
        /// The segment.
        name: SegmentName,
        /// Bytes requested, header included.
        bytes: u64,
    },
    /// Creating found the name taken.
    #[error("segment {name} already exists")]
    Exists {
        /// The segment.
        name: SegmentName,
    },
    /// Opening found no such segment.
    #[error("segment {name} does not exist")]
    NotFound {
        /// The segment.
        name: SegmentName,
    },
    /// The requested size does not fit the segment.
    #[error("segment {name} cannot be mapped at that size")]
    Size {
        /// The segment.
        name: SegmentName,
        /// Why.
        #[source]
        source: SizeError,
    },
    /// The segment's refcount says it is being released or was misused.
    #[error("segment {name} refused a reference")]
    Refcount {
        /// The segment.
        name: SegmentName,
        /// Why.
        #[source]
        source: RefcountError,
    },
    /// A system call on a segment failed.
    #[error("{op} {name} failed")]
    Os {
        /// The call.
        op: &'static str,
        /// The segment.
        name: SegmentName,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A [`ShareHandle`](crate::ShareHandle) was opened, but by then the
    /// segment held no reference besides ours, so there was none in transit
    /// to take over: everyone else let go while we opened it (after the
    /// handle was opened elsewhere, say). Ours is dropped again, which
    /// unlinks the name.
    #[error(
        "segment {name} has no reference in transit (refcount {refcount} once opened): \
         its share handle was used before"
    )]
    NotInTransit {
        /// The segment.
        name: SegmentName,
        /// The refcount with our reference.
        refcount: i32,
    },
    /// A generated segment name is invalid (the prefix leaves no room).
    #[error(transparent)]
    Name(#[from] NameError),
    /// ATen flags that a managed segment cannot honour.
    #[error(transparent)]
    Flags(#[from] FlagsError),
    /// An environment variable has a value we cannot use.
    #[error("environment variable {var}: {why}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

impl Error {
    pub(crate) fn os(
        op: &'static str,
        name: SegmentName,
    ) -> impl FnOnce(rustix::io::Errno) -> Self {
        move |errno| Self::Os {
            op,
            name,
            source: errno.into(),
        }
    }
}
