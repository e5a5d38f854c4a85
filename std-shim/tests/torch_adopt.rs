//! `shmctl torch install | status | restore` against real torch: a fresh venv
//! whose torch package overlays the PyTorch peer's (built by
//! `tests/torch-overlay-venv.sh`, the same venv CI installs the wheel into),
//! with `shmctl` and `shm-manager` in its `bin/` where the wheel puts them.
//! The peer itself is never written to.
//!
//! Needs the peer from `../shared/peers/torch-peer.sh` (found through
//! `LIBSHM_TORCH_DIR` or its default venv); without it these tests skip,
//! unless `LIBSHM_REQUIRE_TORCH=1` (CI) makes that a failure. The read-only
//! test needs root for a private mount namespace, or runs as a user who
//! cannot write a directory made read-only; under `LIBSHM_REQUIRE_TORCH`
//! it fails rather than skips if neither works.

mod common;
mod torch_venv;

use std::path::Path;
use std::process::Command;

use common::{Daemon, RawClient};
use torch_venv::{REQUIRE, Run, Venv, peer_python};

fn ours_version() -> String {
    format!("ours (libshm-rs shm-manager {})", env!("CARGO_PKG_VERSION"))
}

#[test]
fn install_serves_a_file_system_workload_and_restore_puts_pytorchs_back_byte_for_byte() {
    let Some(peer) = peer_python() else { return };
    let venv = Venv::new(&peer, "cycle");
    let original = venv.pytorchs();

    let before = venv.torch(&["status"]).expect(1);
    assert!(
        before.has("PyTorch's (its hash matches torch's RECORD)"),
        "{before}"
    );
    assert!(before.has("to run ours: shmctl torch install"), "{before}");

    let install = venv.torch(&["install"]).expect(0);
    assert!(
        install.has("checked: it served at ") && install.has("exited"),
        "{install}"
    );
    assert_eq!(std::fs::read(venv.backup()).unwrap(), original);

    let status = venv.torch(&["status"]).expect(0);
    assert!(status.has(&ours_version()), "{status}");
    assert!(
        status.has("is PyTorch's (its hash matches torch's RECORD)"),
        "{status}"
    );

    let work = venv.workload("ours", &[]).expect(0);
    assert!(work.has("PASS") && work.has("served_by="), "{work}");

    venv.wait_for_managers_to_exit();
    let restore = venv.torch(&["restore"]).expect(0);
    assert!(
        restore.has("byte for byte") && restore.has("it matches torch's RECORD"),
        "{restore}"
    );
    assert_eq!(std::fs::read(venv.manager()).unwrap(), original);
    assert!(!venv.backup().exists());
    let after = venv.torch(&["status"]).expect(1);
    assert!(after.has("PyTorch's"), "{after}");
    venv.workload("pytorch", &[]).expect(0);
}

#[test]
fn a_second_install_keeps_the_backup_and_an_upgrade_over_ours_is_noticed() {
    let Some(peer) = peer_python() else { return };
    let venv = Venv::new(&peer, "upgrade");
    let original = venv.pytorchs();
    venv.torch(&["install"]).expect(0);
    venv.wait_for_managers_to_exit();
    let again = venv.torch(&["install"]).expect(0);
    assert!(again.has("already installed"), "{again}");
    assert_eq!(
        std::fs::read(venv.backup()).unwrap(),
        original,
        "a second install never backs up ours over PyTorch's"
    );

    // What `pip install --upgrade torch` does to the file: PyTorch's again.
    std::fs::write(venv.manager(), &original).unwrap();
    let status = venv.torch(&["status"]).expect(1);
    assert!(
        status.has("warning: torch runs PyTorch's") && status.has("upgrade"),
        "{status}"
    );
    assert!(status.has("Fix: shmctl torch install --python"), "{status}");

    // Restoring now has nothing to put back, and drops the stale backup.
    let restore = venv.torch(&["restore"]).expect(0);
    assert!(restore.has("removed the stale backup"), "{restore}");
    assert!(!venv.backup().exists());
    assert_eq!(std::fs::read(venv.manager()).unwrap(), original);

    // And installing again works as the first time did.
    venv.torch(&["install"]).expect(0);
    assert_eq!(std::fs::read(venv.backup()).unwrap(), original);
    venv.wait_for_managers_to_exit();
    venv.torch(&["restore"]).expect(0);
    assert_eq!(std::fs::read(venv.manager()).unwrap(), original);
}

#[test]
fn errors_name_the_problem_and_the_fix() {
    let Some(peer) = peer_python() else { return };
    let venv = Venv::new(&peer, "errors");
    let shmctl = venv.root.join("bin/shmctl");

    // No such python.
    let run = Run::of(
        Command::new(&shmctl)
            .args(["torch", "status", "--python", "/nonexistent/bin/python"])
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(
        run.has("cannot run /nonexistent/bin/python")
            && run.has("--python /path/to/venv/bin/python"),
        "{run}"
    );

    // No python on PATH at all.
    let empty = venv.root.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let run = Run::of(
        Command::new(&shmctl)
            .args(["torch", "install"])
            .env("PATH", &empty)
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(run.has("no python3 or python on PATH"), "{run}");

    // A python without torch: a plain venv beside the overlay one.
    let bare = venv.root.join("bare");
    let made = Command::new(&peer)
        .args(["-m", "venv", "--without-pip"])
        .arg(&bare)
        .status()
        .unwrap();
    assert!(made.success());
    let bare_python = bare.join("bin/python");
    let run = Run::of(
        Command::new(&shmctl)
            .args(["torch", "install", "--python"])
            .arg(&bare_python)
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(
        run.has("cannot import torch") && run.has("-m pip install torch"),
        "{run}"
    );

    // Something other than our manager to install.
    let pytorchs = venv.peer_torch.join("bin/torch_shm_manager");
    let run = venv
        .torch_with(
            &["install"],
            &[("LIBSHM_MANAGER", pytorchs.to_str().unwrap())],
        )
        .expect(1);
    assert!(run.has("is not libshm-rs's shm-manager"), "{run}");
    assert!(!venv.backup().exists(), "nothing was changed");

    // Restoring with nothing installed is fine and changes nothing.
    let run = venv.torch(&["restore"]).expect(0);
    assert!(run.has("nothing to restore"), "{run}");
}

/// A manager started from torch's path, as torch starts it, with a client
/// connected so that it stays. Killed when dropped (killed, neither manager
/// removes its directory; [`Daemon`]'s drop does).
struct RunningManager {
    manager: Daemon,
    _client: RawClient,
}

impl RunningManager {
    fn start(path: &Path) -> Self {
        let manager = Daemon::spawn(&mut Command::new(path));
        let client = manager.connect();
        Self {
            manager,
            _client: client,
        }
    }

    fn pid(&self) -> u32 {
        self.manager.child.id()
    }
}

/// What `shmctl torch status` says of our manager running as `pid`.
fn ours_running_as(pid: u32) -> String {
    format!("running from it: pid {pid}, {}", ours_version())
}

#[test]
fn a_running_manager_blocks_the_swap_unless_forced() {
    let Some(peer) = peer_python() else { return };
    let venv = Venv::new(&peer, "running");
    let original = venv.pytorchs();

    let theirs = RunningManager::start(&venv.manager());
    let run = venv.torch(&["install"]).expect(1);
    assert!(
        run.has(&format!("is still running (pid {})", theirs.pid())) && run.has("--force"),
        "{run}"
    );
    assert_eq!(std::fs::read(venv.manager()).unwrap(), original);
    assert!(!venv.backup().exists());
    drop(theirs);

    venv.torch(&["install"]).expect(0);
    venv.wait_for_managers_to_exit();
    let ours = RunningManager::start(&venv.manager());
    let run = venv.torch(&["status"]).expect(0);
    assert!(run.has(&ours_running_as(ours.pid())), "{run}");
    venv.torch(&["restore"]).expect(1);
    let forced = venv.torch(&["restore", "--force"]).expect(0);
    assert!(forced.has("keep the binary they started with"), "{forced}");
    assert_eq!(std::fs::read(venv.manager()).unwrap(), original);
    // The running manager now shows its replaced binary, still ours.
    let run = venv.torch(&["status"]).expect(1);
    assert!(run.has(&ours_running_as(ours.pid())), "{run}");
}

#[test]
fn a_read_only_site_packages_is_refused_with_the_fix_and_nothing_changes() {
    let Some(peer) = peer_python() else { return };
    let venv = Venv::new(&peer, "readonly");
    let original = venv.pytorchs();
    let bin = venv.torch.join("bin");
    let shmctl = venv.root.join("bin/shmctl");
    let script = r#"mount --bind "$BIN" "$BIN" && mount -o remount,bind,ro "$BIN" && exec "$SHMCTL" torch install --python "$PY""#;
    let out = if rustix::process::geteuid().is_root() {
        // Root ignores permission bits: make the directory read-only for
        // real, in a private mount namespace.
        let probe = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "true"])
            .status();
        if !probe.is_ok_and(|status| status.success()) {
            assert!(
                std::env::var_os(REQUIRE).is_none(),
                "{REQUIRE} is set but no private mount namespace can be made here"
            );
            eprintln!("skipped: root without mount namespaces");
            return;
        }
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .env("BIN", &bin)
            .env("SHMCTL", &shmctl)
            .env("PY", &venv.python)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap()
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o555)).unwrap();
        let out = Command::new(&shmctl)
            .args(["torch", "install", "--python"])
            .arg(&venv.python)
            .output()
            .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        out
    };
    let run = Run::of(out).expect(1);
    assert!(
        run.has(&format!("cannot write in {}", bin.display()))
            && (run.has("Read-only file system") || run.has("Permission denied"))
            && run.has("virtual environment you own"),
        "{run}"
    );
    assert_eq!(std::fs::read(venv.manager()).unwrap(), original);
    assert!(!venv.backup().exists());
    let leftovers: Vec<_> = std::fs::read_dir(&bin)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains("libshm"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_tmpdir_too_long_for_pytorchs_manager_works_with_ours() {
    let Some(peer) = peer_python() else { return };
    let venv = Venv::new(&peer, "tmpdir");
    // 80 bytes: the socket path would be 114, over the 107 that fit.
    let mut long = venv.root.join("t").to_string_lossy().into_owned();
    while long.len() < 80 {
        long.push('x');
    }
    std::fs::create_dir_all(&long).unwrap();
    let env = [("TMPDIR", long.as_str())];

    let theirs = venv.workload("pytorch", &env).expect(1);
    assert!(theirs.has("Unix socket path is"), "{theirs}");

    venv.torch(&["install"]).expect(0);
    let ours = venv.workload("ours", &env).expect(0);
    assert!(
        ours.has("PASS") && ours.has("serving from /tmp/torch-shm-dir-"),
        "our manager says where it went: {ours}"
    );
    venv.wait_for_managers_to_exit();
    venv.torch(&["restore"]).expect(0);
}
