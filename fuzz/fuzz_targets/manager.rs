//! Fuzzes the manager state machine with arbitrary event sequences: clients
//! connecting with any uid, well-formed registrations and releases of
//! colliding names, mangled frames and garbage split at any byte, disconnects,
//! ticks on an advancing clock, and segments appearing and disappearing.
//!
//! The manager is the one process every client trusts to unlink shared memory,
//! so besides "no panic" the run is checked against a reference model: every
//! valid registration on a live connection answered exactly once and in order,
//! nothing sent to a closed connection, no unlink of a name not registered (or
//! already unlinked or forgotten) or still held, and no name left known after
//! shutdown. Small fixed capacities make "table full" reachable. See
//! `libshm_fuzz::manager_model` for the full list and
//! `libshm_fuzz::manager_script` for the input format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libshm_fuzz::manager_model::run_manager_script;
use libshm_fuzz::manager_script::ManagerScript;

fuzz_target!(|script: ManagerScript| run_manager_script(&script));
