//! Interop with PyTorch itself, both ways, through `tests/python/interop.py`.
//!
//! Needs the reference peer (see `common::torch`): without it these tests
//! skip, unless `LIBSHM_REQUIRE_TORCH=1` (set in CI) makes a missing peer a
//! failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::torch::{Overlay, Peer, peer, torch_segments_of};
use common::{SHM_MANAGER, SHMCTL, wait_until};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/interop.py")
}

fn run(peer: &Peer, scenario: &str, pythonpath: Option<&Path>, envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(&peer.python);
    command
        .arg(script())
        .arg(scenario)
        .env("SHMCTL", SHMCTL)
        .envs(envs.iter().copied());
    if let Some(path) = pythonpath {
        command.env("PYTHONPATH", path);
    }
    let output = command.output().expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.lines().any(|l| l == "PASS"),
        "scenario {scenario} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    output
}

fn pids(output: &Output) -> Vec<u32> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("pids="))
        .map(|list| list.split(',').filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

#[test]
fn our_manager_serves_pytorch_queues_pools_and_dataloaders() {
    let Some(peer) = peer() else { return };
    let overlay = Overlay::new(&peer);
    let output = run(&peer, "drop-in", Some(&overlay.0), &[]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let served_by = stdout
        .lines()
        .find_map(|l| l.strip_prefix("manager="))
        .unwrap_or_default();
    assert!(
        served_by.starts_with(overlay.0.to_str().unwrap()),
        "torch used {served_by:?}, not our manager"
    );
    let pids = pids(&output);
    assert!(
        pids.len() >= 4,
        "parent, queue children and workers: {pids:?}"
    );
    // Every client is gone: within the shutdown timeout plus 1 s nothing is left.
    assert!(
        wait_until(Duration::from_secs(3), || torch_segments_of(&pids)
            .is_empty()),
        "left behind: {:?}",
        torch_segments_of(&pids)
    );
}

#[test]
fn rust_opens_what_pytorch_created_with_pytorchs_manager() {
    let Some(peer) = peer() else { return };
    let output = run(&peer, "torch-creates", None, &[]);
    let pids = pids(&output);
    assert!(wait_until(Duration::from_secs(3), || torch_segments_of(
        &pids
    )
    .is_empty()));
}

#[test]
fn pytorch_opens_what_rust_created_with_our_manager() {
    let Some(peer) = peer() else { return };
    let manager = PathBuf::from(SHM_MANAGER);
    run(
        &peer,
        "rust-creates",
        None,
        &[("LIBSHM_MANAGER", manager.to_str().unwrap())],
    );
}

#[test]
fn our_client_works_with_pytorchs_manager_strict_and_pipelined() {
    let Some(peer) = peer() else { return };
    let theirs = peer.torch_dir.join("bin/torch_shm_manager");
    for mode in ["strict", "pipelined"] {
        run(
            &peer,
            "rust-creates",
            None,
            &[
                ("LIBSHM_MANAGER", theirs.to_str().unwrap()),
                ("LIBSHM_ACK", mode),
            ],
        );
    }
}

#[test]
fn share_handles_carry_a_reference_in_transit_both_ways() {
    let Some(peer) = peer() else { return };
    // PyTorch's own manager stays: its segments open with ours (any manager
    // protects the opener), and ours are opened by PyTorch with our manager.
    run(&peer, "torch-shares", None, &[]);
    let manager = PathBuf::from(SHM_MANAGER);
    run(
        &peer,
        "rust-shares",
        None,
        &[("LIBSHM_MANAGER", manager.to_str().unwrap())],
    );
}

#[test]
fn a_sigkilled_child_holding_twenty_tensors_is_reaped_while_the_parent_lives() {
    let Some(peer) = peer() else { return };
    let overlay = Overlay::new(&peer);
    let output = run(
        &peer,
        "child-killed",
        Some(&overlay.0),
        &[("REAP_GRACE", "2")],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("reaped 20 segments"), "{stdout}");
}
