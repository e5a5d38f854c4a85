//! The manager's private directory, `torch-shm-dir-XXXXXX`, and its socket path.
//!
//! PyTorch puts the socket in a fresh `0700` directory so that only its user can
//! connect; the directory name is random so that managers never collide. The
//! directory goes away with the manager.
//!
//! A manager also holds an exclusive `flock` on its directory for as long as
//! it lives. When it dies, the kernel drops the lock, and a new manager can
//! [adopt](RunDir::adopt) the directory and serve at the same handle: the
//! clients that knew the old handle, and the handles already passed around
//! in pickled messages, keep working.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libshm_core::handshake::HANDLE_MAX;
use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;

/// PyTorch's directory name prefix.
pub const DIR_PREFIX: &str = "torch-shm-dir-";

/// The socket's file name inside the directory.
pub const SOCKET_NAME: &str = "manager.sock";

const SUFFIX_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A private directory, locked while this manager lives, and removed (with
/// whatever socket is left in it) when dropped.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// The open directory, holding the lock.
    _lock: OwnedFd,
}

/// What adopting a dead manager's directory found.
#[derive(Debug)]
pub enum Adoption {
    /// The directory is ours now; bind the socket in it.
    Adopted(RunDir),
    /// A live manager holds it (another client adopted it first, or the old
    /// one was never dead): connect to the same handle.
    Served,
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
                Ok(()) => {}
                Err(Errno::EXIST) => continue,
                Err(errno) => return Err(errno.into()),
            }
            let lock = open_dir(&path)?;
            rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive)?;
            return Ok(Self { path, _lock: lock });
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary directory name",
        ))
    }

    /// Takes over the directory of a dead manager whose handle was
    /// `socket_path`, if no live manager holds it. Only a `torch-shm-dir-*`
    /// directory with a `manager.sock` handle, owned by us and private, is
    /// adopted; the stale socket is removed so a new one can be bound.
    pub fn adopt(socket_path: &Path) -> io::Result<Adoption> {
        let invalid = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot adopt {}: {why}", socket_path.display()),
            )
        };
        if socket_path.file_name() != Some(OsStr::new(SOCKET_NAME)) {
            return Err(invalid("not a manager socket path"));
        }
        let dir = socket_path
            .parent()
            .ok_or_else(|| invalid("no directory"))?;
        let named_like_ours = dir
            .file_name()
            .is_some_and(|name| name.as_bytes().starts_with(DIR_PREFIX.as_bytes()));
        if !named_like_ours {
            return Err(invalid("not a manager directory"));
        }
        let lock = open_dir(dir)?;
        let stat = rustix::fs::fstat(&lock)?;
        if stat.st_uid != rustix::process::geteuid().as_raw() || stat.st_mode & 0o077 != 0 {
            return Err(invalid("the directory is not private to us"));
        }
        match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Ok(Adoption::Served),
            Err(errno) => return Err(errno.into()),
        }
        match rustix::fs::unlink(socket_path) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(errno) => return Err(errno.into()),
        }
        Ok(Adoption::Adopted(Self {
            path: dir.to_path_buf(),
            _lock: lock,
        }))
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

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
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
    fn a_live_managers_directory_cannot_be_adopted_a_dead_ones_can() {
        let base = std::env::temp_dir();
        let live = RunDir::create(&base).unwrap();
        std::fs::write(live.socket_path(), b"").unwrap();
        assert!(matches!(
            RunDir::adopt(&live.socket_path()),
            Ok(Adoption::Served)
        ));

        // "Kill" it: the lock goes, the directory and socket stay behind.
        let path = live.path().to_owned();
        let socket = live.socket_path();
        rustix::fs::flock(&live._lock, FlockOperation::Unlock).unwrap();
        std::mem::forget(live);
        let adopted = match RunDir::adopt(&socket).unwrap() {
            Adoption::Adopted(dir) => dir,
            Adoption::Served => panic!("the lock was free"),
        };
        assert_eq!(adopted.path(), path);
        assert!(!socket.exists(), "the stale socket is removed");
        drop(adopted);
        assert!(!path.exists());
    }

    #[test]
    fn only_manager_directories_are_adopted() {
        assert!(RunDir::adopt(Path::new("/tmp/manager.sock")).is_err());
        assert!(RunDir::adopt(Path::new("/tmp/torch-shm-dir-abcdef/other.sock")).is_err());
    }

    #[test]
    fn refuses_bases_too_long_for_a_socket_path() {
        let base = PathBuf::from(format!("/tmp/{}", "x".repeat(90)));
        let err = RunDir::create(&base).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
