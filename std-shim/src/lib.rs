//! PyTorch-compatible shared-memory segments whose lifetime a manager daemon
//! guarantees: the crate applications use.
//!
//! A [`SharedSegment`] is a POSIX shared-memory object laid out as PyTorch's
//! `file_system` sharing strategy lays it out (64-byte header with a
//! cross-process refcount, then data). Every segment is registered with a
//! manager (through a [`ManagerLink`]) before it exists; if the process dies
//! holding it, the manager unlinks it. Segments and managers interoperate
//! with PyTorch's in both directions: a segment created here opens in
//! `torch`, and the other way round, and `shm-manager` is a drop-in
//! `torch_shm_manager`.
//!
//! Other processes may write a segment's data at any time, so it is never
//! lent out as `&[u8]`: it is copied in and out with atomic accesses
//! ([`SharedSegment::read_at`], [`write_obj`](SharedSegment::write_obj), an
//! `io` [`cursor`](SharedSegment::cursor)), or viewed as atomics for
//! counters and flags ([`SharedSegment::atomics`]). A [`ShareHandle`] hands
//! a segment to another process and keeps it alive until that process has
//! opened it, as PyTorch does while a tensor is pickled.
//!
//! Managers are reached over a Unix socket (PyTorch's way, the default) or,
//! with [`Config::transport`] or `LIBSHM_TRANSPORT=pipe`, over a pair of pipes
//! to a private manager that lives as long as this process. The client code
//! path is the same for both.
//!
//! What it does not do: serialize tensors or pick segment sizes. Protocol
//! logic lives in `libshm-core` (re-exported as [`protocol`]); sockets and
//! the daemon's event loop in `libshm-unix`; pipes and the private manager's
//! loop in `libshm-pipe`. This crate maps memory, keeps the process-wide
//! table of managers, tells leaked segments from live ones ([`inspect`]),
//! asks managers how they are ([`status`]), and ships the `shm-manager` and
//! `shmctl` binaries.
//!
//! # Example
//! ```no_run
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use libshm::{ShareHandle, SharedSegment};
//!
//! // Starts `shm-manager` on first use (found beside this executable, on PATH,
//! // or named by LIBSHM_MANAGER).
//! let segment = SharedSegment::create(4096)?;
//! segment.write_at(8, b"hello")?;
//! segment.atomics::<AtomicU64>(0, 1)?[0].fetch_add(1, Ordering::Release);
//!
//! // Hand it to another process as text; this one may drop it right away.
//! let text = segment.share()?.to_string();
//! drop(segment);
//!
//! // In the other process: opening takes over the reference in transit.
//! let other = text.parse::<ShareHandle>()?.open()?;
//! let mut buf = [0u8; 5];
//! other.read_at(8, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! assert_eq!(other.refcount_now(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

// The blocking driver of the core's client session; public for the benchmarks.
#[doc(hidden)]
pub mod client;
mod config;
mod error;
mod error_chain;
// Public only for libshm-benches and `shmctl bench`, which measure against
// it: the floor must make exactly the system calls `SharedSegment::create`
// makes, so it lives beside them. Not part of the API.
#[doc(hidden)]
pub mod floor;
mod fork_gate;
pub mod inspect;
mod link;
mod manager_link;
mod naming;
mod pool;
mod process;
mod registry;
mod segment;
mod share;
mod shared_memory;
mod shm;
pub mod status;
#[path = "bin/shared/units.rs"]
#[allow(dead_code, reason = "the binaries use the rest; the pool parses sizes")]
mod units;
mod wire;

pub use config::{
    Config, ENV_ACK, ENV_JOURNAL, ENV_MANAGER, ENV_POOL, ENV_PREFIX, ENV_TRANSPORT, MANAGER_BIN,
};
pub use error::Error;
pub use manager_link::ManagerLink;
pub use pool::{PoolSizes, PoolSizesError};
pub use segment::{Closed, OutOfBounds, SegmentCursor, SharedSegment, ViewError};
pub use share::{ShareHandle, ShareHandleError};
pub use shared_memory::SharedAtomic;
pub use shm::{ShmError, ShmNamespace};
pub use wire::{TransportKind, WireError};

/// The errors of starting and reaching managers, which [`Error`] carries.
pub use libshm_pipe::PipeError;
pub use libshm_unix::{LaunchError, SocketError};

/// The protocol itself (`libshm-core`): frames, names, the header, the
/// client and manager state machines, for code that goes below this crate.
pub use libshm_core as protocol;
pub use libshm_core::client::AckMode;
pub use libshm_core::flags::MapFlags;
pub use libshm_core::handshake::ManagerHandle;
pub use libshm_core::name::{NamePrefix, SegmentName};

/// The README's Rust examples, compiled as doctests so they keep up with the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
