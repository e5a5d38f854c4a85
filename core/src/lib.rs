//! The protocol of PyTorch's shared-memory manager (`libshm`), with no IO.
//!
//! Everything a reader needs to understand the protocol is here: the 68-byte
//! [`frame::AllocInfo`] frame, [`name::SegmentName`] validation, ATen's
//! [`flags::MapFlags`], the 64-byte [`header`] with its shared refcount, the
//! manager's [`handshake`] line and [`ack`] reply, the registration
//! [`journal`], and the two state machines, [`client::ClientSession`] and
//! [`manager::Manager`]. They are deterministic: bytes, connection events and
//! `now` go in, and what to send, wait for, close or unlink comes out. They never read a clock or call the OS, which is what lets them
//! run under Miri, in a fuzzer and in a `no_std` runtime.
//!
//! What it deliberately does not do: open sockets, map memory, spawn processes
//! or read `/dev/shm`. The [`transport::Transport`] trait is the seam for
//! bytes; [`namespace::Namespace`] is the seam for unlinking. `libshm-unix` and
//! `libshm-pipe` implement the transports, and `libshm` is the crate
//! applications use.
//!
//! No heap is needed. Capacities are const generics; a full table is a typed
//! refusal, never a panic. The `alloc` feature adds [`storage::Growable`] for
//! managers whose memory should follow their live registrations.
//!
//! # Example
//! A minimal runtime: a client session registering and releasing a segment
//! through an in-process manager. The loop is the whole driver; a real one
//! (the `libshm` crate's `Client`) is the same over a socket, plus retries.
//! ```
//! use std::error::Error;
//!
//! use libshm_core::client::{AckMode, ClientSession, READ_MAX, Step};
//! use libshm_core::loopback::Loopback;
//! use libshm_core::manager::{ManagerConfig, NameState};
//! use libshm_core::name::{NamePrefix, SegmentName};
//! use libshm_core::storage::Fixed;
//! use libshm_core::transport::Transport;
//!
//! /// Runs the session's operation to its end over the loopback.
//! fn run(session: &mut ClientSession<8>, wire: &mut Loopback<Fixed<16, 4>>) -> Result<(), Box<dyn Error>> {
//!     let mut buf = [0u8; READ_MAX];
//!     loop {
//!         match session.step() {
//!             Step::Send(bytes) | Step::Offer { bytes, .. } => {
//!                 wire.send_all(bytes)?;
//!                 session.sent();
//!             }
//!             Step::Receive { max } => {
//!                 let n = wire.receive(&mut buf[..max])?;
//!                 session.received(&buf[..n]);
//!             }
//!             Step::TryReceive { max } => match wire.try_receive(&mut buf[..max])? {
//!                 Some(n) => session.received(&buf[..n]),
//!                 None => session.nothing_ready(),
//!             },
//!             Step::Done(result) => return Ok(result?),
//!         }
//!     }
//! }
//!
//! let mut wire: Loopback<Fixed<16, 4>> = Loopback::new(ManagerConfig::default());
//! let mut session: ClientSession<8> = ClientSession::new(AckMode::Strict);
//! let name = SegmentName::generate(&NamePrefix::torch(), 4242, 7, 0)?;
//!
//! session.register(4242, name)?;
//! run(&mut session, &mut wire)?; // done once the manager said "OK"
//! assert_eq!(wire.manager().name_state(&name), Some(NameState::Held { registrations: 1 }));
//! session.release(4242, name, false)?;
//! run(&mut session, &mut wire)?;
//! assert_eq!(
//!     wire.manager().name_state(&name),
//!     Some(NameState::Released { dead: 0 }) // forgotten by the next sweep, as it no longer exists
//! );
//! # Ok::<(), Box<dyn Error>>(())
//! ```
#![no_std]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod ack;
pub mod client;
pub mod fault;
pub mod flags;
pub mod frame;
pub mod handshake;
pub mod header;
pub mod journal;
pub mod loopback;
pub mod manager;
pub mod name;
pub mod namespace;
pub mod pressure;
pub mod status;
pub mod storage;
pub mod time;
pub mod transport;
