//! PyTorch-compatible shared-memory segments whose lifetime a manager daemon
//! guarantees: the crate applications use.
//!
//! A [`SharedSegment`] is a POSIX shared-memory object laid out as PyTorch's
//! `file_system` sharing strategy lays it out (64-byte header with a
//! cross-process refcount, then data). Every segment is registered with a
//! [`Manager`] before it exists; if the process dies holding it, the manager
//! unlinks it. Segments and managers interoperate with PyTorch's in both
//! directions: a segment created here opens in `torch`, and the other way
//! round, and `shm-manager` is a drop-in `torch_shm_manager`.
//!
//! Managers are reached over a Unix socket (PyTorch's way, the default) or,
//! with [`Config::transport`] or `LIBSHM_TRANSPORT=pipe`, over a pair of pipes
//! to a private manager that lives as long as this process. The client code
//! path is the same for both.
//!
//! What it does not do: serialize tensors or pick segment sizes. Protocol
//! logic lives in `libshm-core`; sockets and the daemon's event loop in
//! `libshm-unix`; pipes and the private manager's loop in `libshm-pipe`. This
//! crate maps memory, keeps the process-wide table of managers, tells leaked
//! segments from live ones ([`inspect`]), and ships the `shm-manager` and
//! `shmctl` binaries.
//!
//! # Example
//! ```no_run
//! use libshm::SharedSegment;
//!
//! // Starts `shm-manager` on first use (found beside this executable, on PATH,
//! // or named by LIBSHM_MANAGER).
//! let segment = SharedSegment::create(4096)?;
//! segment.write_at(0, b"hello")?;
//!
//! // Another process opens it from these three values.
//! let (handle, name, size) = (segment.manager_handle(), *segment.name(), segment.len());
//! let other = SharedSegment::open(handle.as_str(), name.as_str(), size)?;
//! let mut buf = [0u8; 5];
//! other.read_at(0, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! assert_eq!(segment.refcount_now(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

// The blocking driver of the core's client session; public for the benchmarks.
#[doc(hidden)]
pub mod client;
mod config;
mod error;
pub mod floor;
pub mod inspect;
mod link;
mod manager;
#[doc(hidden)]
pub mod manager_identity;
mod naming;
mod process;
mod registry;
mod segment;
mod shm;
pub mod status;
pub mod units;
mod wire;

pub use config::{
    Config, ENV_ACK, ENV_JOURNAL, ENV_MANAGER, ENV_PREFIX, ENV_TRANSPORT, MANAGER_BIN,
    parse_ack_mode,
};
pub use error::Error;
pub use manager::Manager;
pub use segment::{Closed, OutOfBounds, SharedSegment};
pub use shm::{ShmError, ShmNamespace};
pub use wire::{TransportKind, WireError};

pub use libshm_core as core;
pub use libshm_core::client::AckMode;
pub use libshm_core::flags::MapFlags;
pub use libshm_core::handshake::ManagerHandle;
pub use libshm_core::name::{NamePrefix, SegmentName};
