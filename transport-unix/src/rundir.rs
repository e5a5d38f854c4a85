//! The manager's private directory, `torch-shm-dir-XXXXXX`, and its socket path.
//!
//! PyTorch puts the socket in a fresh `0700` directory so that only its user can
//! connect; the directory name is random so that managers never collide. The
//! directory goes away with the manager.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libshm_core::handshake::HANDLE_MAX;
use rustix::fs::Mode;
use rustix::io::Errno;

/// PyTorch's directory name prefix.
pub const DIR_PREFIX: &str = "torch-shm-dir-";

/// The socket's file name inside the directory.
pub const SOCKET_NAME: &str = "manager.sock";

const SUFFIX_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A private directory that is removed (with whatever socket is left in it)
/// when dropped.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The directory PyTorch would use: `$TMPDIR`, `$TMP`, `$TEMP` or
    /// `$TEMPDIR`, else `/tmp`.
    pub fn default_base() -> PathBuf {
        ["TMPDIR", "TMP", "TEMP", "TEMPDIR"]
            .iter()
            .filter_map(std::env::var_os)
            .find(|dir| !dir.is_empty())
            .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
    }

    /// Creates `<base>/torch-shm-dir-XXXXXX` with mode 0700, retrying on
    /// collisions. Fails early when the socket path would not fit `sun_path`.
    pub fn create(base: &Path) -> io::Result<Self> {
        let longest = base.as_os_str().len() + 1 + DIR_PREFIX.len() + 6 + 1 + SOCKET_NAME.len();
        if longest > HANDLE_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "socket path under {} would be {longest} bytes, over the {HANDLE_MAX} a Unix socket allows",
                    base.display()
                ),
            ));
        }
        for _ in 0..128 {
            let mut random = [0u8; 6];
            rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())?;
            let mut name = Vec::from(DIR_PREFIX.as_bytes());
            name.extend(
                random
                    .iter()
                    .map(|b| SUFFIX_CHARS[usize::from(*b) % SUFFIX_CHARS.len()]),
            );
            let path = base.join(OsStr::from_bytes(&name));
            match rustix::fs::mkdir(&path, Mode::RWXU) {
                Ok(()) => return Ok(Self { path }),
                Err(Errno::EXIST) => continue,
                Err(errno) => return Err(errno.into()),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary directory name",
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the manager's socket goes.
    pub fn socket_path(&self) -> PathBuf {
        self.path.join(SOCKET_NAME)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // Best effort: a socket file may or may not be there.
        let _ = rustix::fs::unlink(self.socket_path());
        let _ = rustix::fs::rmdir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_private_directory_and_removes_it() {
        let base = std::env::temp_dir();
        let dir = RunDir::create(&base).unwrap();
        let path = dir.path().to_owned();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(DIR_PREFIX) && name.len() == DIR_PREFIX.len() + 6);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::write(dir.socket_path(), b"").unwrap();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn refuses_bases_too_long_for_a_socket_path() {
        let base = PathBuf::from(format!("/tmp/{}", "x".repeat(90)));
        let err = RunDir::create(&base).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
