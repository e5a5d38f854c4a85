//! Fuzzes the client session with arbitrary replies from the manager, which is
//! a separate process and may be buggy, old or not a manager at all.
//!
//! Registrations, releases (deferred or not) and flushes interleave with
//! well-formed reply batches and arbitrary bytes. Every fault must come back
//! as a typed `ClientFault`, never a panic, and the session's queue, reply
//! window and refusal must match a model. See `libshm_fuzz::client_script`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libshm_fuzz::client_script::{ClientScript, run_client_script};

fuzz_target!(|script: ClientScript| run_client_script(&script));
