//! Fuzzes the manager state machine with arbitrary event scripts: clients
//! connecting with any uid, well-formed registrations and releases of
//! colliding names from several pids per connection, mangled frames and
//! garbage split at any byte, journaled frames, disconnects, evictions, pid
//! deaths, ticks on an advancing clock, segments whose header refcounts rise
//! and fall, foreign objects under names, failing unlinks, adoption sweeps,
//! and a driver that carries out chores late, in any order, or fails them.
//!
//! The manager is the one process every client trusts to unlink shared memory,
//! so besides "no panic" the run is checked against a reference model: every
//! valid registration on a live connection answered exactly once and in order,
//! only misbehaving connections closed, holders and watched pids as the rules
//! say, no unlink of a name a live holder holds or whose refcount shows it in
//! transit, orphans reaped no earlier than their grace, and a manager that
//! settles while serving and finishes in time once left alone. Small fixed
//! capacities make "table full" reachable. See `libshm_fuzz::manager_model`
//! for the full list and `libshm_fuzz::manager_script` for the input format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libshm_fuzz::manager_model::run_manager_script;
use libshm_fuzz::manager_script::ManagerScript;

fuzz_target!(|script: ManagerScript| run_manager_script(&script));
