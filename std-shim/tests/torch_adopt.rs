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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{SHM_MANAGER, SHMCTL, wait_until};

const REQUIRE: &str = "LIBSHM_REQUIRE_TORCH";

/// The peer's python, or `None` (skip) when it is absent and not required.
fn peer_python() -> Option<PathBuf> {
    let torch_dir = std::env::var_os("LIBSHM_TORCH_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            let dir =
                Path::new(&home).join(".cache/torch-peer-venv/lib/python3.11/site-packages/torch");
            dir.is_dir().then_some(dir)
        });
    // <venv>/lib/pythonX.Y/site-packages/torch -> <venv>/bin/python
    let python = torch_dir
        .and_then(|dir| Some(dir.ancestors().nth(4)?.join("bin/python")))
        .filter(|python| python.exists());
    if python.is_none() {
        assert!(
            std::env::var_os(REQUIRE).is_none(),
            "{REQUIRE} is set but no PyTorch peer was found (run ../shared/peers/torch-peer.sh)"
        );
        eprintln!("skipped: no PyTorch peer (run ../shared/peers/torch-peer.sh)");
    }
    python
}

/// A fresh overlay venv with our binaries installed in it.
struct Venv {
    root: PathBuf,
    python: PathBuf,
    torch: PathBuf,
    peer_torch: PathBuf,
}

impl Venv {
    fn new(peer_python: &Path, tag: &str) -> Self {
        let root = std::env::temp_dir().join(format!(
            "libshm-adopt-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torch-overlay-venv.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(peer_python)
            .arg(&root)
            .arg("--without-pip")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let torch = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        // What the wheel installs: both binaries in the venv's bin/.
        for (from, name) in [(SHMCTL, "shmctl"), (SHM_MANAGER, "shm-manager")] {
            std::fs::copy(from, root.join("bin").join(name)).unwrap();
        }
        let peer_torch = std::fs::read_link(torch.join("__init__.py"))
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        Self {
            python: root.join("bin/python"),
            root,
            torch,
            peer_torch,
        }
    }

    fn manager(&self) -> PathBuf {
        self.torch.join("bin/torch_shm_manager")
    }

    fn backup(&self) -> PathBuf {
        self.torch.join("bin/torch_shm_manager.libshm-backup")
    }

    fn pytorchs(&self) -> Vec<u8> {
        std::fs::read(self.peer_torch.join("bin/torch_shm_manager")).unwrap()
    }

    /// Runs the venv's `shmctl torch <args> --python <its python>`.
    fn torch(&self, args: &[&str]) -> Run {
        self.torch_with(args, &[])
    }

    fn torch_with(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let mut command = Command::new(self.root.join("bin/shmctl"));
        command
            .arg("torch")
            .args(args)
            .arg("--python")
            .arg(&self.python)
            .env_remove("LIBSHM_MANAGER")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(envs.iter().copied());
        Run::of(command.output().unwrap())
    }

    /// The file_system workload, expecting `manager` ("ours" or "pytorch") to serve it.
    fn workload(&self, manager: &str, envs: &[(&str, &str)]) -> Run {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/adopt_workload.py");
        Run::of(
            Command::new(&self.python)
                .arg(script)
                .arg(manager)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .envs(envs.iter().copied())
                .output()
                .unwrap(),
        )
    }

    /// Waits until no manager runs from torch's path (they exit 2 s after
    /// their last client).
    fn wait_for_managers_to_exit(&self) {
        let manager = self.manager();
        assert!(
            wait_until(Duration::from_secs(10), || running_from(&manager)
                .is_empty()),
            "managers still running from {}: {:?}",
            manager.display(),
            running_from(&manager)
        );
    }
}

impl Drop for Venv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A finished command's exit code and output.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "{self}");
        self
    }

    fn has(&self, text: &str) -> bool {
        self.stdout.contains(text) || self.stderr.contains(text)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn running_from(path: &Path) -> Vec<u32> {
    let wanted = path.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                let exe = exe.as_os_str().as_encoded_bytes();
                exe == wanted || exe.strip_suffix(b" (deleted)") == Some(wanted)
            })
        })
        .collect()
}

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
/// connected so that it stays.
struct RunningManager {
    child: Child,
    _client: std::os::unix::net::UnixStream,
}

impl RunningManager {
    fn start(path: &Path) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let client = std::os::unix::net::UnixStream::connect(line.trim_end()).unwrap();
        Self {
            child,
            _client: client,
        }
    }
}

impl Drop for RunningManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_running_manager_blocks_the_swap_unless_forced() {
    let Some(peer) = peer_python() else { return };
    let venv = Venv::new(&peer, "running");
    let original = venv.pytorchs();

    let theirs = RunningManager::start(&venv.manager());
    let run = venv.torch(&["install"]).expect(1);
    assert!(
        run.has(&format!("is still running (pid {})", theirs.child.id())) && run.has("--force"),
        "{run}"
    );
    assert_eq!(std::fs::read(venv.manager()).unwrap(), original);
    assert!(!venv.backup().exists());
    drop(theirs);

    venv.torch(&["install"]).expect(0);
    venv.wait_for_managers_to_exit();
    let ours = RunningManager::start(&venv.manager());
    let run = venv.torch(&["status"]).expect(0);
    assert!(
        run.has(&format!(
            "running from it: pid {}, {}",
            ours.child.id(),
            ours_version()
        )),
        "{run}"
    );
    venv.torch(&["restore"]).expect(1);
    let forced = venv.torch(&["restore", "--force"]).expect(0);
    assert!(forced.has("keep the binary they started with"), "{forced}");
    assert_eq!(std::fs::read(venv.manager()).unwrap(), original);
    // The running manager now shows its replaced binary, still ours.
    let run = venv.torch(&["status"]).expect(1);
    assert!(
        run.has(&format!(
            "running from it: pid {}, {}",
            ours.child.id(),
            ours_version()
        )),
        "{run}"
    );
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
