//! Fuzzes `Frame::parse`, the first thing to touch every byte a client sends
//! the manager.
//!
//! Any input must parse or fail with the error for the field that is really
//! wrong, without panicking; a frame that parses must re-encode to bytes that
//! parse to the same frame, with the input's pid, flag and name bytes. See
//! `libshm_fuzz::frame_check`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libshm_fuzz::frame_check::check_frame;

fuzz_target!(|bytes: &[u8]| check_frame(bytes));
