//! Where torch is: found by asking the python that would import it, since
//! only that interpreter knows its `sys.path` (venvs, `.pth` files,
//! `PYTHONPATH`, user site-packages), without importing it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::TorchError;

/// The file torch runs (`torch/__init__.py` passes it to `_C._initExtension`).
pub(crate) const MANAGER_FILE: &str = "torch_shm_manager";

/// PyTorch's manager, kept beside the live one while ours is installed.
pub(crate) const BACKUP_FILE: &str = "torch_shm_manager.libshm-backup";

/// Finds torch the way `import torch` would, without running it (importing
/// torch takes seconds and can fail for reasons unrelated to its manager):
/// `find_spec` walks the same `sys.path` with the same finders, and its
/// `origin` is the `__file__` torch derives its manager path from (not
/// resolved through symlinks). The version comes from the installed
/// distribution's metadata. The current directory is dropped from `sys.path`
/// first, so a torch source checkout there is not mistaken for the package.
const PROBE: &str = r#"
import sys
if sys.path and sys.path[0] in ("", "."):
    del sys.path[0]
import importlib.util, os
spec = importlib.util.find_spec("torch")
if spec is None or not spec.origin or not spec.origin.endswith("__init__.py"):
    print("libshm-probe: no-torch")
    sys.exit(0)
try:
    from importlib.metadata import version
    v = version("torch")
except Exception:
    v = "unknown"
print("libshm-probe: dir=" + os.path.dirname(os.path.abspath(spec.origin)))
print("libshm-probe: version=" + v)
"#;

/// A torch installation.
#[derive(Clone, Debug)]
pub(crate) struct Site {
    /// The interpreter that imports it.
    pub(crate) python: PathBuf,
    /// The `torch` package directory.
    pub(crate) package: PathBuf,
    /// `torch.__version__`.
    pub(crate) version: String,
    /// The hash torch's wheel recorded for its manager, when its `RECORD`
    /// is there (not for conda or distribution packages).
    pub(crate) record: Option<String>,
}

impl Site {
    /// The directory holding the manager.
    pub(crate) fn bin_dir(&self) -> PathBuf {
        self.package.join("bin")
    }

    /// The manager torch starts.
    pub(crate) fn manager(&self) -> PathBuf {
        self.bin_dir().join(MANAGER_FILE)
    }

    /// Where PyTorch's manager is kept while ours is installed.
    pub(crate) fn backup(&self) -> PathBuf {
        self.bin_dir().join(BACKUP_FILE)
    }
}

/// The python to ask: the one given, else the first `python3` or `python`
/// on `PATH` (per directory, `python3` first).
pub(crate) fn find_python(given: Option<&Path>) -> Result<PathBuf, TorchError> {
    if let Some(python) = given {
        return Ok(python.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| [dir.join("python3"), dir.join("python")])
        .find(|candidate| is_executable(candidate))
        .ok_or(TorchError::NoPythonOnPath)
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Finds torch through `python`.
pub(crate) fn locate(python: &Path) -> Result<Site, TorchError> {
    let output = Command::new(python)
        .args(["-c", PROBE])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|error| TorchError::PythonNotRunnable {
            python: python.to_path_buf(),
            error,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix("libshm-probe: ")?.strip_prefix(key))
            .map(str::to_owned)
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let detail = stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .map_or_else(|| format!("exit status {}", output.status), str::to_owned);
        return Err(TorchError::ProbeFailed {
            python: python.to_path_buf(),
            detail,
        });
    }
    if stdout.lines().any(|line| line == "libshm-probe: no-torch") {
        return Err(TorchError::NoTorch {
            python: python.to_path_buf(),
        });
    }
    let (Some(package), Some(version)) = (field("dir="), field("version=")) else {
        return Err(TorchError::ProbeUnreadable {
            python: python.to_path_buf(),
            output: stdout.chars().take(200).collect(),
        });
    };
    let package = PathBuf::from(package);
    let record = recorded_manager_hash(&package, &version);
    Ok(Site {
        python: python.to_path_buf(),
        package,
        version,
        record,
    })
}

/// The `sha256=` hash torch's wheel lists for `torch/bin/torch_shm_manager`
/// in `<site-packages>/torch-<version>.dist-info/RECORD` (any
/// `torch-<digit>….dist-info` if the version's own is not there).
fn recorded_manager_hash(package: &Path, version: &str) -> Option<String> {
    let site_packages = package.parent()?;
    let exact = site_packages.join(format!("torch-{version}.dist-info"));
    let dist_info = if exact.is_dir() {
        exact
    } else {
        std::fs::read_dir(site_packages)
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .and_then(|name| name.strip_prefix("torch-"))
                    .is_some_and(|rest| {
                        rest.starts_with(|c: char| c.is_ascii_digit())
                            && rest.ends_with(".dist-info")
                    })
            })?
    };
    let record = std::fs::read_to_string(dist_info.join("RECORD")).ok()?;
    let wanted = format!("torch/bin/{MANAGER_FILE},");
    record.lines().find_map(|line| {
        let rest = line.strip_prefix(&wanted)?;
        let hash = rest.split(',').next()?.strip_prefix("sha256=")?;
        Some(hash.to_owned())
    })
}
