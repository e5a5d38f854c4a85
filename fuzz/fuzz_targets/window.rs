//! Fuzzes the manager under pid reuse while ends are pending (the window of
//! successor holders), checked against the truth: no name is unlinked while
//! a live process holds it or a reference to it is in transit. See
//! `libshm_fuzz::window_check` for the simulated driver and the input format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libshm_fuzz::window_check::check_window;

fuzz_target!(|input: &[u8]| check_window(input));
