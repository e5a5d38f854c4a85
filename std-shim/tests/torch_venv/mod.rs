//! A fresh venv whose torch overlays the PyTorch peer's, with our binaries
//! installed in it as the wheel installs them, for the tests that run real
//! torch against `shmctl torch` and `shmctl doctor`.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{SHM_MANAGER, SHMCTL, wait_until};

pub const REQUIRE: &str = "LIBSHM_REQUIRE_TORCH";

/// The peer's python, or `None` (skip) when it is absent and not required.
pub fn peer_python() -> Option<PathBuf> {
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
pub struct Venv {
    pub root: PathBuf,
    pub python: PathBuf,
    pub torch: PathBuf,
    pub peer_torch: PathBuf,
}

impl Venv {
    pub fn new(peer_python: &Path, tag: &str) -> Self {
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

    pub fn manager(&self) -> PathBuf {
        self.torch.join("bin/torch_shm_manager")
    }

    pub fn backup(&self) -> PathBuf {
        self.torch.join("bin/torch_shm_manager.libshm-backup")
    }

    pub fn pytorchs(&self) -> Vec<u8> {
        std::fs::read(self.peer_torch.join("bin/torch_shm_manager")).unwrap()
    }

    /// Runs the venv's `shmctl torch <args> --python <its python>`.
    pub fn torch(&self, args: &[&str]) -> Run {
        self.torch_with(args, &[])
    }

    pub fn torch_with(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
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

    /// Runs the venv's `shmctl doctor --json --python <its python>`.
    pub fn doctor(&self, envs: &[(&str, &str)]) -> Run {
        let mut command = Command::new(self.root.join("bin/shmctl"));
        command
            .args(["doctor", "--json", "--python"])
            .arg(&self.python)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(envs.iter().copied());
        Run::of(command.output().unwrap())
    }

    /// The file_system workload, expecting `manager` ("ours" or "pytorch") to serve it.
    pub fn workload(&self, manager: &str, envs: &[(&str, &str)]) -> Run {
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
    pub fn wait_for_managers_to_exit(&self) {
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
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "{self}");
        self
    }

    pub fn has(&self, text: &str) -> bool {
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

pub fn running_from(path: &Path) -> Vec<u32> {
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
