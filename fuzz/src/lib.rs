//! Fuzz checks for `libshm-core`: what must hold for any bytes a peer can send.
//!
//! The cargo-fuzz targets in `fuzz_targets/` are one line each; the checks live
//! here so that they can be unit-tested, replayed on the committed seeds with a
//! plain `cargo test`, and read in one place:
//!
//! - [`frame_check`]: `Frame::parse` on any bytes, and its round trip.
//! - [`handshake_check`]: the manager's handshake line, read in any pieces.
//! - [`manager_script`] and [`manager_model`]: the manager state machine
//!   driven by arbitrary connections, frames from several pids, garbage,
//!   disconnects, pid deaths, ticks, header refcounts and namespace changes,
//!   with a driver that carries out chores late or fails them, checked
//!   against a reference model.
//! - [`client_script`]: the client session fed arbitrary replies.
//! - [`window_check`]: the manager under pid reuse while ends are pending
//!   (successor holders), with a simulated driver that keeps the real one's
//!   order within a round, checked against the truth: no name unlinked
//!   while a live process holds it or a reference is in transit.
//!
//! Inputs are decoded with [`cursor::Cursor`] in formats documented beside each
//! script, so that the seeds in `corpus/` (written by `examples/write_seeds.rs`)
//! mean what their file names say. The checks panic on a broken invariant;
//! that is how libFuzzer learns of it.
//!
//! What it deliberately does not do: touch sockets, `/dev/shm` or the clock.
//! The core is sans-IO, so everything here is deterministic and replayable.

pub mod client_script;
pub mod cursor;
pub mod frame_check;
pub mod handshake_check;
pub mod manager_model;
pub mod manager_script;
pub mod name_pool;
pub mod window_check;
