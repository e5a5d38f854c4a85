//! Interop with PyTorch itself, both ways, through `tests/python/interop.py`.
//!
//! Needs the reference peer from `../shared/peers/torch-peer.sh`. It is found
//! through `LIBSHM_TORCH_DIR` (the torch package directory the script prints)
//! or at the script's default venv. Without it these tests skip, unless
//! `LIBSHM_REQUIRE_TORCH=1` (set in CI) makes a missing peer a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{SHM_MANAGER, SHMCTL, wait_until};

struct Peer {
    python: PathBuf,
    torch_dir: PathBuf,
}

fn peer() -> Option<Peer> {
    let torch_dir = std::env::var_os("LIBSHM_TORCH_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            let python = Path::new(&home).join(".cache/torch-peer-venv/bin/python");
            let out = Command::new(python)
                .args([
                    "-c",
                    "import os, torch; print(os.path.dirname(torch.__file__))",
                ])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        });
    let found = torch_dir.and_then(|torch_dir| {
        // <venv>/lib/pythonX.Y/site-packages/torch -> <venv>/bin/python
        let venv = torch_dir.ancestors().nth(4)?;
        let python = venv.join("bin/python");
        python.exists().then_some(Peer { python, torch_dir })
    });
    if found.is_none() {
        assert!(
            std::env::var_os("LIBSHM_REQUIRE_TORCH").is_none(),
            "LIBSHM_REQUIRE_TORCH is set but no PyTorch peer was found (run ../shared/peers/torch-peer.sh)"
        );
        eprintln!("skipped: no PyTorch peer (run ../shared/peers/torch-peer.sh)");
    }
    found
}

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

/// Segments in /dev/shm named `torch_<pid>_…` for any of `pids`.
fn torch_segments_of(pids: &[u32]) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            let pid = name
                .strip_prefix("torch_")
                .and_then(|rest| rest.split('_').next());
            pid.and_then(|p| p.parse().ok())
                .is_some_and(|p: u32| pids.contains(&p))
        })
        .collect()
}

/// A copy of the torch package in which only `bin/torch_shm_manager` is
/// ours: every other entry is a symlink to the real one. On `PYTHONPATH` it
/// makes `import torch` start our manager, as copying our binary over theirs
/// would, without touching the shared venv.
struct Overlay(PathBuf);

impl Overlay {
    fn new(peer: &Peer) -> Self {
        use std::os::unix::fs::symlink;
        let root = std::env::temp_dir().join(format!(
            "libshm-torch-overlay-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let torch = root.join("torch");
        std::fs::create_dir_all(torch.join("bin")).unwrap();
        for entry in std::fs::read_dir(&peer.torch_dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != "bin" {
                symlink(entry.path(), torch.join(entry.file_name())).unwrap();
            }
        }
        for entry in std::fs::read_dir(peer.torch_dir.join("bin")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != "torch_shm_manager" {
                symlink(entry.path(), torch.join("bin").join(entry.file_name())).unwrap();
            }
        }
        std::fs::copy(SHM_MANAGER, torch.join("bin/torch_shm_manager")).unwrap();
        Self(root)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
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
