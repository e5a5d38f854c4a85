//! Fuzzes reading the handshake line a starting manager prints, which comes
//! from a child process and may be anything.
//!
//! The first input byte says how the output is split into reads. However it
//! is split, the reader must reach the outcome the whole output implies, and a
//! `Ready` handle must be a usable socket path: non-empty, at most
//! `HANDLE_MAX` bytes, UTF-8 without control bytes. See
//! `libshm_fuzz::handshake_check`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libshm_fuzz::handshake_check::{HandshakeInput, check_handshake};

fuzz_target!(|bytes: &[u8]| check_handshake(&HandshakeInput::decode(bytes)));
