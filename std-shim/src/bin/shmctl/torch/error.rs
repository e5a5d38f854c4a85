//! What can go wrong adopting torch's manager, each with its fix.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why `shmctl torch` could not do what it was asked. Each message ends with
/// what to do about it.
#[derive(Debug)]
pub(crate) enum TorchError {
    /// No `python3` or `python` on `PATH`, and none given.
    NoPythonOnPath,
    /// The python given (or found) could not be run.
    PythonNotRunnable { python: PathBuf, error: io::Error },
    /// That python has no `torch` module.
    NoTorch { python: PathBuf },
    /// The python ran but failed to look for torch.
    ProbeFailed { python: PathBuf, detail: String },
    /// The probe's output made no sense (not a python, or a wrapper that
    /// prints to stdout).
    ProbeUnreadable { python: PathBuf, output: String },
    /// torch's package has no `bin/torch_shm_manager` (`import torch` itself
    /// would fail).
    NoManagerFile { path: PathBuf },
    /// torch's `bin/` cannot be written.
    ReadOnly { dir: PathBuf, error: io::Error },
    /// A manager started from that path is running.
    ManagerRunning { path: PathBuf, pids: Vec<u32> },
    /// Our `shm-manager` was not found to install.
    OurManagerNotFound { looked: Vec<PathBuf> },
    /// What would be installed is not our manager.
    NotOurManager { path: PathBuf },
    /// The installed manager did not serve; PyTorch's is back if it was kept.
    CheckFailed {
        path: PathBuf,
        why: String,
        rolled_back: bool,
    },
    /// `restore` found our manager but no backup of PyTorch's.
    NoBackup {
        path: PathBuf,
        torch_version: String,
    },
    /// `restore` found a manager that is neither ours nor PyTorch's.
    LiveUnrecognised { path: PathBuf },
    /// A copy did not come out byte for byte (hashes differ).
    Mismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// A file operation failed.
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

impl TorchError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            error,
        }
    }
}

impl TorchError {
    /// What went wrong, and what to do about it (empty if nothing specific).
    pub(crate) fn cause_and_fix(&self) -> (String, String) {
        const PASS_PYTHON: &str = "pass the python of the environment torch is installed in: --python /path/to/venv/bin/python";
        let pids = |pids: &[u32]| {
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Self::NoPythonOnPath => ("no python3 or python on PATH".into(), PASS_PYTHON.into()),
            Self::PythonNotRunnable { python, error } => (
                format!("cannot run {}: {error}", python.display()),
                PASS_PYTHON.into(),
            ),
            Self::NoTorch { python } => (
                format!(
                    "{} cannot import torch (no module named 'torch')",
                    python.display()
                ),
                format!(
                    "pass the python that has torch with --python, or install it there: {} -m \
                     pip install torch",
                    python.display()
                ),
            ),
            Self::ProbeFailed { python, detail } => (
                format!(
                    "asking {} where torch is failed: {detail}",
                    python.display()
                ),
                format!(
                    "check that it is a working python (`{} -c 'import torch'` shows the whole \
                     error)",
                    python.display()
                ),
            ),
            Self::ProbeUnreadable { python, output } => (
                format!(
                    "{} did not answer as a python would (it printed {output:?})",
                    python.display()
                ),
                "pass the environment's real interpreter with --python".into(),
            ),
            Self::NoManagerFile { path } => (
                format!("torch has no manager at {}", path.display()),
                "reinstall torch (pip install --force-reinstall --no-deps torch) and run this \
                 again"
                    .into(),
            ),
            Self::ReadOnly { dir, error } => (
                format!("cannot write in {}: {error}", dir.display()),
                "torch is installed read-only here: run this as the user who owns it (often \
                 with sudo), or install torch into a virtual environment you own (python3 -m \
                 venv ~/venv && ~/venv/bin/pip install torch) and pass --python \
                 ~/venv/bin/python"
                    .into(),
            ),
            Self::ManagerRunning {
                path,
                pids: running,
            } => (
                format!(
                    "a manager started from {} is still running (pid {})",
                    path.display(),
                    pids(running)
                ),
                "wait for the programs using torch to finish (a manager exits 2 s after its \
                 last client leaves), or pass --force to swap the file anyway (running \
                 managers keep their old binary)"
                    .into(),
            ),
            Self::OurManagerNotFound { looked } => (
                format!(
                    "cannot find libshm-rs's shm-manager (looked at {})",
                    looked
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "install it beside shmctl (pip install libshm-rs puts both on PATH) or point \
                 LIBSHM_MANAGER at it"
                    .into(),
            ),
            Self::NotOurManager { path } => (
                format!(
                    "{} is not libshm-rs's shm-manager (it has no .libshm_manager section)",
                    path.display()
                ),
                "point LIBSHM_MANAGER at our shm-manager, or unset it to use the one beside \
                 shmctl"
                    .into(),
            ),
            Self::CheckFailed {
                path,
                why,
                rolled_back,
            } => (
                format!(
                    "the installed manager at {} did not serve ({why}){}",
                    path.display(),
                    if *rolled_back {
                        "; PyTorch's was put back"
                    } else {
                        ""
                    }
                ),
                "run `shm-manager -v` by hand to see why it fails".into(),
            ),
            Self::NoBackup {
                path,
                torch_version,
            } => (
                format!(
                    "{} is ours but there is no backup of PyTorch's beside it (it was copied in \
                     by hand?)",
                    path.display()
                ),
                format!(
                    "reinstall torch to get PyTorch's back: pip install --force-reinstall \
                     --no-deps torch=={torch_version}"
                ),
            ),
            Self::LiveUnrecognised { path } => (
                format!(
                    "{} is neither ours nor PyTorch's, so restoring the backup would overwrite \
                     something else",
                    path.display()
                ),
                "check what put it there, or pass --force to restore anyway".into(),
            ),
            Self::Mismatch {
                path,
                expected,
                found,
            } => (
                format!(
                    "{} does not match what was copied (sha256 {found}, expected {expected})",
                    path.display()
                ),
                "the disk or another process changed it: run the command again".into(),
            ),
            Self::Io {
                action,
                path,
                error,
            } => (
                format!("cannot {action} {}: {error}", path.display()),
                String::new(),
            ),
        }
    }
}

impl fmt::Display for TorchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cause_and_fix() {
            (cause, fix) if fix.is_empty() => f.write_str(&cause),
            (cause, fix) => write!(f, "{cause}; {fix}"),
        }
    }
}

impl std::error::Error for TorchError {}
