//! The PyTorch peer: finding it, making `import torch` start the manager a
//! test chooses, and what PyTorch left in /dev/shm.
//!
//! The peer comes from `../shared/peers/torch-peer.sh`. It is found through
//! `LIBSHM_TORCH_DIR` (the torch package directory the script prints) or at
//! the script's default venv. Without it the tests skip, unless
//! `LIBSHM_REQUIRE_TORCH=1` (set in CI) makes a missing peer a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::SHM_MANAGER;

/// A Python with torch installed.
pub struct Peer {
    pub python: PathBuf,
    pub torch_dir: PathBuf,
}

impl Peer {
    /// PyTorch's own `torch_shm_manager`.
    pub fn torch_shm_manager(&self) -> PathBuf {
        self.torch_dir.join("bin/torch_shm_manager")
    }
}

/// The peer, or `None` (after saying so) when it is missing and not required.
pub fn peer() -> Option<Peer> {
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

/// A copy of the torch package in which only `bin/torch_shm_manager` is
/// the test's: every other entry is a symlink to the real one. On
/// `PYTHONPATH` it makes `import torch` start that manager, as copying a
/// binary over theirs would, without touching the shared venv. Each overlay's
/// manager has a path of its own, so the processes it runs can be told apart.
pub struct Overlay(pub PathBuf);

impl Overlay {
    /// Installs our `shm-manager`.
    pub fn new(peer: &Peer) -> Self {
        Self::with_manager(peer, Path::new(SHM_MANAGER))
    }

    /// Installs a copy of `manager` (PyTorch's own finds its libraries
    /// through the symlinked `lib/`).
    pub fn with_manager(peer: &Peer, manager: &Path) -> Self {
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
        std::fs::copy(manager, torch.join("bin/torch_shm_manager")).unwrap();
        Self(root)
    }

    /// The manager executable torch starts.
    pub fn manager(&self) -> PathBuf {
        self.0.join("torch/bin/torch_shm_manager")
    }

    /// Pids of the running managers started from this overlay.
    pub fn running_managers(&self) -> Vec<u32> {
        processes_running(&self.manager())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Pids of the live processes executing `exe` (zombies have no executable).
pub fn processes_running(exe: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|path| path == exe))
        .collect()
}

/// Segments in /dev/shm named `torch_<pid>_…` for any of `pids`.
pub fn torch_segments_of(pids: &[u32]) -> Vec<String> {
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

/// A suffix that keeps two runs' scratch paths apart.
pub fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}
