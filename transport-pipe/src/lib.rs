//! Anonymous-pipe transport for libshm-rs: a private manager per process, for
//! runtimes that cannot or will not use Unix sockets or a socket file
//! (sandboxes, minimal embedded Linux).
//!
//! - [`PipeTransport`]: a client's ends of its manager's two pipes,
//!   implementing the core's [`Transport`](libshm_core::transport::Transport),
//!   so the client's driver runs over it unchanged.
//! - [`serve`]: the manager's side, one client and one `poll` loop around the
//!   core's [`Manager`](libshm_core::manager::Manager). When the client's pipe
//!   reaches end of file (it exited, was killed, or closed it), everything it
//!   registered is unlinked and `serve` returns. Its client process is held
//!   ([`ClientProcess::hold`]) before the manager prints its handshake.
//! - [`ChildPipes`]: both pipes, created close-on-exec, added to the command
//!   that starts `shm-manager --transport pipe` at fds [`REQUEST_FD`] and
//!   [`REPLY_FD`], with the client's pid ([`ClientProcess`]); the launcher
//!   (`libshm_unix::Launcher::launch_with`) reads its handshake line,
//!   `pipe:<pid>`.
//!
//! The frames and replies are PyTorch's, as over the socket. What differs is
//! reach: a pipe manager serves exactly the process that started it and
//! cannot be found by handle, so another process handed a `pipe:` handle uses
//! its own manager (any manager protects the opener).
//!
//! What it does not do: decide anything (the core does), touch `/dev/shm`
//! (`serve` unlinks through the [`Namespace`](libshm_core::namespace::Namespace)
//! it is given), or depend on the Unix transport.
//!
//! # SIGPIPE
//! Writing to a pipe whose reader died raises `SIGPIPE`. Rust executables and
//! CPython ignore it, and then a dead manager is [`PipeError::Closed`]. A C
//! or C++ host that keeps the default action should ignore `SIGPIPE` too; see
//! [`PipeTransport`] for the check made before every write and the race it
//! leaves.
//!
//! # Example
//! A manager served in a thread over two pipes, and a client registering
//! with it by hand (the `libshm` crate's client drives the core's session
//! over this transport):
//! ```
//! use libshm_core::ack::ACK;
//! use libshm_core::frame::Frame;
//! use libshm_core::manager::ManagerConfig;
//! use libshm_core::name::SegmentName;
//! use libshm_core::namespace::{Namespace, Observed, Unlinked};
//! use libshm_core::transport::Transport;
//! use libshm_pipe::{ClientProcess, Ended, ManagerEnds, PipeTransport, serve};
//! use rustix::pipe::{PipeFlags, pipe_with};
//!
//! /// Every name exists, with one reference, until it is unlinked.
//! struct EverythingExists;
//! impl Namespace for EverythingExists {
//!     type Error = std::convert::Infallible;
//!     fn observe(&mut self, _: &SegmentName) -> Result<Observed, Self::Error> {
//!         Ok(Observed::Segment { refcount: 1 })
//!     }
//!     fn unlink(&mut self, _: &SegmentName) -> Result<Unlinked, Self::Error> { Ok(Unlinked::Removed) }
//! }
//!
//! let (request_read, request_write) = pipe_with(PipeFlags::CLOEXEC)?;
//! let (reply_read, reply_write) = pipe_with(PipeFlags::CLOEXEC)?;
//! let ends = ManagerEnds::new(request_read, reply_write)?;
//! // In a thread, its client is our process: whoever is our parent stands
//! // in, held before the manager is handed to its client (the handshake).
//! let client = ClientProcess::Parent.hold();
//! let manager = std::thread::spawn(move || {
//!     serve(ends, client, ManagerConfig::default(), &mut EverythingExists)
//! });
//!
//! let mut pipes = PipeTransport::new(request_write, reply_read, None)?;
//! pipes.send_all(&Frame::register(1, SegmentName::new(b"/torch_1_2_3")?).encode())?;
//! let (mut reply, mut got) = ([0u8; 2], 0);
//! while got < reply.len() {
//!     match pipes.receive(&mut reply[got..])? {
//!         0 => return Err("the manager closed its pipe".into()),
//!         n => got += n,
//!     }
//! }
//! assert_eq!(reply, ACK);
//! drop(pipes); // end of file: the manager unlinks what is left and returns
//! let summary = manager.join().unwrap();
//! assert_eq!(summary.stats.registrations, 1);
//! assert_eq!(summary.stats.unlinked_at_shutdown, 1);
//! assert_eq!(summary.ended, Ended::EndOfFile);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod child_pipes;
mod handle;
mod serve;
mod transport;

pub use child_pipes::ChildPipes;
pub use handle::{
    HANDLE_PREFIX, REPLY_FD, REQUEST_FD, is_pipe_handle, pipe_handle, pipe_handle_pid,
};
pub use serve::{ClientProcess, Ended, HeldClient, InheritError, ManagerEnds, Summary, serve};
pub use transport::{PipeError, PipeTransport};
