//! Unix-socket transport for libshm-rs: PyTorch's wire, and the manager's OS side.
//!
//! - [`UnixTransport`]: a client's connection to a manager handle, implementing
//!   the core's [`Transport`](libshm_core::transport::Transport).
//! - [`RunDir`] and [`Listener`]: the manager's private `0700` directory
//!   `torch-shm-dir-XXXXXX` with `manager.sock`, and who connects to it
//!   (`SO_PEERCRED`).
//! - [`serve`]: the manager daemon's `poll` loop around the core's
//!   [`Manager`](libshm_core::manager::Manager).
//! - [`Launcher`]: fork/exec a manager and read its handle line.
//!
//! What it does not do: decide anything (the core does) or touch `/dev/shm`
//! (the loop unlinks through a [`Namespace`](libshm_core::namespace::Namespace)
//! it is given; the `libshm` crate supplies the real one).
//!
//! # Example
//! A manager in a thread, and a client registering with it by hand (the
//! `libshm` crate's client drives the core's session over this transport):
//! ```
//! use libshm_core::ack::ACK;
//! use libshm_core::frame::Frame;
//! use libshm_core::manager::ManagerConfig;
//! use libshm_core::name::SegmentName;
//! use libshm_core::namespace::{Namespace, Observed, Unlinked};
//! use libshm_core::transport::Transport;
//! use libshm_unix::{Listener, RunDir, UnixTransport, serve};
//!
//! struct NothingExists;
//! impl Namespace for NothingExists {
//!     type Error = std::convert::Infallible;
//!     fn observe(&mut self, _: &SegmentName) -> Result<Observed, Self::Error> { Ok(Observed::Absent) }
//!     fn unlink(&mut self, _: &SegmentName) -> Result<Unlinked, Self::Error> { Ok(Unlinked::Absent) }
//! }
//!
//! let listener = Listener::bind(RunDir::create(&std::env::temp_dir())?)?;
//! let handle = *listener.handle();
//! let manager = std::thread::spawn(move || serve(listener, ManagerConfig::default(), &mut NothingExists));
//!
//! let mut socket = UnixTransport::connect(&handle, None)?;
//! socket.send_all(&Frame::register(1, SegmentName::new(b"/torch_1_2_3")?).encode())?;
//! let (mut reply, mut got) = ([0u8; 2], 0);
//! while got < reply.len() {
//!     match socket.receive(&mut reply[got..])? {
//!         0 => return Err("the manager closed the connection".into()),
//!         n => got += n,
//!     }
//! }
//! assert_eq!(reply, ACK);
//! drop(socket); // after 2 s without clients the manager exits
//! assert_eq!(manager.join().unwrap().stats.registrations, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod background;
mod closed_ties;
mod crowding;
mod event_loop;
mod heap;
mod launcher;
mod listener;
mod pid_watch;
mod pressure;
mod readiness;
mod report;
mod rundir;
mod sender;
mod shared_journal;
mod socket;
mod spin;
mod throttle;

pub use event_loop::{
    DEFAULT_SPIN, LeakFinder, MapFinder, Recovery, Summary, Tuning, serve, serve_tuned,
};
pub use launcher::{LaunchError, Launched, Launcher};
pub use listener::{Accepted, Listener};
pub use rundir::{
    Adoption, BASE_MAX, CreateError, DIR_PREFIX, FALLBACK_BASES, Placed, RunDir, SOCKET_NAME,
    SOCKET_PATH_SUFFIX_LEN,
};
pub use shared_journal::{AdoptError, SharedJournal};
pub use socket::{SocketError, UnixTransport};
