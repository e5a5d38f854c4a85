//! Replays every committed seed through its target's check on a plain build,
//! and checks that the script seeds decode to scripts that encode back to the
//! same bytes (so the formats documented in `src/` are the ones in use).

use std::fs;
use std::path::{Path, PathBuf};

use libshm_fuzz::client_script::{ClientScript, run_client_script};
use libshm_fuzz::frame_check::check_frame;
use libshm_fuzz::handshake_check::{HandshakeInput, check_handshake};
use libshm_fuzz::manager_model::run_manager_script;
use libshm_fuzz::manager_script::ManagerScript;
use libshm_fuzz::window_check::check_window_counting;

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut seeds: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| {
            let path = entry.expect("readable corpus dir").path();
            let bytes = fs::read(&path).expect("readable seed");
            (path, bytes)
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 5, "{target} has only {} seeds", seeds.len());
    seeds
}

#[test]
fn frame_seeds_pass() {
    for (_, bytes) in seeds("frame") {
        check_frame(&bytes);
    }
}

#[test]
fn handshake_seeds_pass() {
    for (_, bytes) in seeds("handshake") {
        check_handshake(&HandshakeInput::decode(&bytes));
    }
}

#[test]
fn manager_seeds_pass_and_round_trip() {
    for (path, bytes) in seeds("manager") {
        let script = ManagerScript::decode(&bytes);
        assert_eq!(
            script.encode(),
            bytes,
            "{} does not round-trip",
            path.display()
        );
        let run = std::panic::catch_unwind(|| run_manager_script(&script));
        assert!(run.is_ok(), "{} fails its check (above)", path.display());
    }
}

#[test]
fn client_seeds_pass_and_round_trip() {
    for (path, bytes) in seeds("client") {
        let script = ClientScript::decode(&bytes);
        assert_eq!(
            script.encode(),
            bytes,
            "{} does not round-trip",
            path.display()
        );
        run_client_script(&script);
    }
}

#[test]
fn window_seeds_pass_and_open_the_window() {
    for (path, bytes) in seeds("window") {
        let seen = check_window_counting(&bytes);
        // Each is written to put a new process under a pid whose end is
        // pending, and to see the old end reported.
        assert!(
            seen.successors > 0 && seen.promoted + seen.dropped > 0,
            "{}: {seen:?}",
            path.display()
        );
    }
}
