//! Putting one file in place of another atomically: a temporary file in the
//! target's directory, written, synced, checked, renamed over the target,
//! and the directory synced. A process that starts the manager at any moment
//! runs the old file or the new one, never half of either, and a crash leaves
//! one or the other (and at worst a stray temporary file).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::TorchError;
use super::sha256::{self, Digest};

/// Copies `from` over `to` and returns the digest of what is now at `to`,
/// checked against `from`'s. The new file takes `to`'s mode and owner if
/// `to` exists (0755 otherwise).
pub(crate) fn replace(from: &Path, to: &Path) -> Result<Digest, TorchError> {
    let dir = to.parent().unwrap_or(Path::new("."));
    let expected = sha256::of_file(from).map_err(|e| TorchError::io("read", from, e))?;
    let (mode, owner) = match std::fs::metadata(to) {
        Ok(meta) => (
            meta.permissions().mode() & 0o7777,
            Some((meta.uid(), meta.gid())),
        ),
        Err(_) => (0o755, None),
    };
    let temp = temp_path(to);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|error| match error.kind() {
            io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
                TorchError::ReadOnly {
                    dir: dir.to_path_buf(),
                    error,
                }
            }
            _ => TorchError::io("create a file in", dir, error),
        })?;
    let written = (|| {
        let mut input = File::open(from).map_err(|e| TorchError::io("read", from, e))?;
        io::copy(&mut input, &mut out).map_err(|e| TorchError::io("write", &temp, e))?;
        if let Some((uid, gid)) = owner
            && rustix::process::geteuid().is_root()
        {
            std::os::unix::fs::fchown(&out, Some(uid), Some(gid))
                .map_err(|e| TorchError::io("set the owner of", &temp, e))?;
        }
        out.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| TorchError::io("set the mode of", &temp, e))?;
        out.sync_all()
            .map_err(|e| TorchError::io("sync", &temp, e))?;
        verify(&temp, &expected)?;
        std::fs::rename(&temp, to).map_err(|e| TorchError::io("rename into place", to, e))
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(err);
    }
    // The rename is durable once the directory is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TorchError::io("sync", dir, e))?;
    verify(to, &expected)?;
    Ok(expected)
}

/// Fails unless the file at `path` hashes to `expected`.
pub(crate) fn verify(path: &Path, expected: &Digest) -> Result<(), TorchError> {
    let found = sha256::of_file(path).map_err(|e| TorchError::io("read", path, e))?;
    if found == *expected {
        Ok(())
    } else {
        Err(TorchError::Mismatch {
            path: path.to_path_buf(),
            expected: expected.hex(),
            found: found.hex(),
        })
    }
}

/// `.<name>.libshm-tmp-<pid>` beside `to`: hidden, and unique per process.
fn temp_path(to: &Path) -> PathBuf {
    let name = to
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    to.with_file_name(format!(".{name}.libshm-tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_keeps_the_mode_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("libshm-swap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (from, to) = (dir.join("new"), dir.join("live"));
        std::fs::write(&from, b"new contents").unwrap();
        std::fs::write(&to, b"old").unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o751)).unwrap();
        let digest = replace(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"new contents");
        assert_eq!(digest, sha256::of_bytes(b"new contents"));
        let mode = std::fs::metadata(&to).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o751);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
