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
    /// The installed manager did not start and serve; the original is back.
    CheckFailed { path: PathBuf, why: String },
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

impl fmt::Display for TorchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPythonOnPath => f.write_str(
                "no python3 or python on PATH; pass the python of the environment torch is \
                 installed in: --python /path/to/venv/bin/python",
            ),
            Self::PythonNotRunnable { python, error } => write!(
                f,
                "cannot run {}: {error}; pass the python of the environment torch is \
                 installed in: --python /path/to/venv/bin/python",
                python.display()
            ),
            Self::NoTorch { python } => write!(
                f,
                "{} cannot import torch (no module named 'torch'); pass the python that has \
                 torch with --python, or install it there: {} -m pip install torch",
                python.display(),
                python.display()
            ),
            Self::ProbeFailed { python, detail } => write!(
                f,
                "asking {} where torch is failed: {detail}; check that it is a working \
                 python (`{} -c 'import torch'` shows the whole error)",
                python.display(),
                python.display()
            ),
            Self::ProbeUnreadable { python, output } => write!(
                f,
                "{} did not answer as a python would (it printed {output:?}); pass the \
                 environment's real interpreter with --python",
                python.display()
            ),
            Self::NoManagerFile { path } => write!(
                f,
                "torch has no manager at {}; reinstall torch (pip install --force-reinstall \
                 --no-deps torch) and run this again",
                path.display()
            ),
            Self::ReadOnly { dir, error } => write!(
                f,
                "cannot write in {}: {error}; torch is installed read-only here: run this as \
                 the user who owns it (often with sudo), or install torch into a virtual \
                 environment you own (python3 -m venv ~/venv && ~/venv/bin/pip install torch) \
                 and pass --python ~/venv/bin/python",
                dir.display()
            ),
            Self::ManagerRunning { path, pids } => write!(
                f,
                "a manager started from {} is still running (pid {}); wait for the programs \
                 using torch to finish (a manager exits 2 s after its last client leaves), or \
                 pass --force to swap the file anyway (running managers keep their old binary)",
                path.display(),
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::OurManagerNotFound { looked } => write!(
                f,
                "cannot find libshm-rs's shm-manager (looked at {}); install it beside shmctl \
                 (pip install libshm-rs puts both on PATH) or point LIBSHM_MANAGER at it",
                looked
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::NotOurManager { path } => write!(
                f,
                "{} is not libshm-rs's shm-manager (it has no .libshm_manager section); point \
                 LIBSHM_MANAGER at our shm-manager, or unset it to use the one beside shmctl",
                path.display()
            ),
            Self::CheckFailed { path, why } => write!(
                f,
                "the installed manager at {} did not serve ({why}); the previous manager was \
                 put back; run `shm-manager -v` by hand to see why it fails",
                path.display()
            ),
            Self::NoBackup {
                path,
                torch_version,
            } => write!(
                f,
                "{} is ours but there is no backup of PyTorch's beside it (it was copied in by \
                 hand?); reinstall torch to get PyTorch's back: pip install --force-reinstall \
                 --no-deps torch=={torch_version}",
                path.display()
            ),
            Self::LiveUnrecognised { path } => write!(
                f,
                "{} is neither ours nor PyTorch's, so restoring the backup would overwrite \
                 something else; check what put it there, or pass --force to restore anyway",
                path.display()
            ),
            Self::Mismatch {
                path,
                expected,
                found,
            } => write!(
                f,
                "{} does not match what was copied (sha256 {found}, expected {expected}); the \
                 disk or another process changed it: run the command again",
                path.display()
            ),
            Self::Io {
                action,
                path,
                error,
            } => write!(f, "cannot {action} {}: {error}", path.display()),
        }
    }
}

impl std::error::Error for TorchError {}
