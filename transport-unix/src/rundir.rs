//! The manager's private directory, `torch-shm-dir-XXXXXX`, and its socket path.
//!
//! PyTorch puts the socket in a fresh `0700` directory so that only its user can
//! connect; the directory name is random so that managers never collide. The
//! directory goes away with the manager.
//!
//! The socket path must fit a socket address (107 bytes and a NUL), so a long
//! `TMPDIR` cannot hold it; [`RunDir::create_or_fall_back`] then uses a short
//! directory instead ([`FALLBACK_BASES`]) and says why.
//!
//! A manager also holds an exclusive `flock` on its directory for as long as
//! it lives. When it dies, the kernel drops the lock, and a new manager can
//! [adopt](RunDir::adopt) the directory and serve at the same handle: the
//! clients that knew the old handle, and the handles already passed around
//! in pickled messages, keep working.

use std::ffi::OsStr;
use std::fmt;
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

/// Bytes a socket path has after its base: `/torch-shm-dir-XXXXXX/manager.sock`.
pub const SOCKET_PATH_SUFFIX_LEN: usize = 1 + DIR_PREFIX.len() + 6 + 1 + SOCKET_NAME.len();

/// The longest base directory whose socket path still fits a socket address
/// (PyTorch's client copies the handle into a 108-byte `sun_path` too).
pub const BASE_MAX: usize = HANDLE_MAX - SOCKET_PATH_SUFFIX_LEN;

/// Where a manager goes, in this order, when its preferred base cannot hold
/// its directory. `/tmp` is PyTorch's own default and short everywhere;
/// `/dev/shm` is a world-writable sticky tmpfs on every Linux system where
/// shared memory works at all, and `libshm::inspect` ignores directories
/// there. `/run/user/<uid>` is not used: logind removes
/// it at logout, under a running job.
pub const FALLBACK_BASES: [&str; 2] = ["/tmp", "/dev/shm"];

/// The environment variables PyTorch (and Python's `tempfile`) consult for the
/// temporary directory, in order.
const TEMP_VARS: [&str; 4] = ["TMPDIR", "TMP", "TEMP", "TEMPDIR"];

const SUFFIX_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A private directory, locked while this manager lives, and removed (with
/// whatever socket is left in it) when dropped.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// The open directory, holding the lock.
    _lock: OwnedFd,
}

/// Why no manager directory could be made under a base.
#[derive(Debug)]
pub enum CreateError {
    /// `<base>/torch-shm-dir-XXXXXX/manager.sock` would not fit a socket address.
    PathTooLong {
        /// The base directory.
        base: PathBuf,
        /// How long the socket path would be.
        len: usize,
    },
    /// The OS refused: the base is missing, not a directory, read-only or
    /// not ours to write.
    Os {
        /// The base directory.
        base: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
}

impl CreateError {
    /// The base directory that failed.
    pub fn base(&self) -> &Path {
        match self {
            Self::PathTooLong { base, .. } | Self::Os { base, .. } => base,
        }
    }
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PathTooLong { base, len } => write!(
                f,
                "a manager socket under {} would be a {len}-byte path, over the {HANDLE_MAX} \
                 bytes a Unix socket address holds",
                base.display()
            ),
            Self::Os { base, error } => write!(
                f,
                "cannot create a manager directory under {}: {error}",
                base.display()
            ),
        }
    }
}

impl std::error::Error for CreateError {}

/// A directory made by [`RunDir::create_or_fall_back`].
#[derive(Debug)]
pub struct Placed {
    /// The directory.
    pub dir: RunDir,
    /// Why the preferred base was not used, if it was not.
    pub instead_of: Option<CreateError>,
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
        Self::default_base_and_var().0
    }

    /// [`RunDir::default_base`] and the variable it came from (`None` for
    /// the `/tmp` default).
    pub fn default_base_and_var() -> (PathBuf, Option<&'static str>) {
        TEMP_VARS
            .iter()
            .find_map(|&var| {
                let dir = std::env::var_os(var).filter(|dir| !dir.is_empty())?;
                Some((PathBuf::from(dir), Some(var)))
            })
            .unwrap_or_else(|| (PathBuf::from("/tmp"), None))
    }

    /// How long the socket path of a manager directory under `base` is.
    pub fn socket_path_len(base: &Path) -> usize {
        base.as_os_str().len() + SOCKET_PATH_SUFFIX_LEN
    }

    /// Creates `<base>/torch-shm-dir-XXXXXX` with mode 0700, retrying on
    /// collisions. Fails early when the socket path would not fit `sun_path`.
    pub fn create(base: &Path) -> Result<Self, CreateError> {
        let len = Self::socket_path_len(base);
        if len > HANDLE_MAX {
            return Err(CreateError::PathTooLong {
                base: base.to_path_buf(),
                len,
            });
        }
        Self::create_under(base).map_err(|error| CreateError::Os {
            base: base.to_path_buf(),
            error,
        })
    }

    /// Creates the directory under `preferred`, or, if that fails (too long a
    /// path, missing, read-only, not writable), under the first of
    /// [`FALLBACK_BASES`] that works. If none does, the error is the
    /// preferred base's: that is the one to fix.
    pub fn create_or_fall_back(preferred: &Path) -> Result<Placed, CreateError> {
        let refused = match Self::create(preferred) {
            Ok(dir) => {
                return Ok(Placed {
                    dir,
                    instead_of: None,
                });
            }
            Err(err) => err,
        };
        for base in FALLBACK_BASES.iter().map(Path::new) {
            if base == preferred {
                continue;
            }
            if let Ok(dir) = Self::create(base) {
                return Ok(Placed {
                    dir,
                    instead_of: Some(refused),
                });
            }
        }
        Err(refused)
    }

    fn create_under(base: &Path) -> io::Result<Self> {
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

    /// Whether a live manager of ours serves `dir`: it holds the
    /// directory's lock, whatever namespace its socket listens in. A
    /// directory we may not open (another user's) says nothing: `false`.
    pub fn is_served(dir: &Path) -> bool {
        let Ok(lock) = open_dir(dir) else {
            return false;
        };
        // A shared lock, held only for this call: the test must not keep
        // an adopting manager from its exclusive one for long.
        matches!(
            rustix::fs::flock(&lock, FlockOperation::NonBlockingLockShared),
            Err(Errno::WOULDBLOCK)
        )
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
        assert!(RunDir::is_served(live.path()));

        // "Kill" it: the lock goes, the directory and socket stay behind.
        let path = live.path().to_owned();
        let socket = live.socket_path();
        rustix::fs::flock(&live._lock, FlockOperation::Unlock).unwrap();
        std::mem::forget(live);
        assert!(!RunDir::is_served(&path));
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
        assert!(
            matches!(err, CreateError::PathTooLong { len, .. } if len == base.as_os_str().len() + 34),
            "{err}"
        );
    }

    #[test]
    fn the_longest_base_that_fits_is_seventy_three_bytes() {
        assert_eq!(BASE_MAX, 73);
        let fits = PathBuf::from(format!("/tmp/{}", "y".repeat(BASE_MAX - 5)));
        std::fs::create_dir_all(&fits).unwrap();
        let dir = RunDir::create(&fits).unwrap();
        assert_eq!(dir.socket_path().as_os_str().len(), HANDLE_MAX);
        drop(dir);
        let _ = std::fs::remove_dir(&fits);
        let over = PathBuf::from(format!("/tmp/{}", "y".repeat(BASE_MAX - 4)));
        assert!(RunDir::create(&over).is_err());
    }

    #[test]
    fn falls_back_to_a_short_directory_and_says_why() {
        let long = PathBuf::from(format!("/tmp/{}", "z".repeat(100)));
        let placed = RunDir::create_or_fall_back(&long).unwrap();
        assert!(placed.dir.path().starts_with(FALLBACK_BASES[0]));
        assert!(matches!(
            placed.instead_of,
            Some(CreateError::PathTooLong { .. })
        ));

        let missing = Path::new("/nonexistent-libshm-base");
        let placed = RunDir::create_or_fall_back(missing).unwrap();
        assert!(placed.dir.path().starts_with(FALLBACK_BASES[0]));
        match placed.instead_of {
            Some(CreateError::Os { base, error }) => {
                assert_eq!(base, missing);
                assert_eq!(error.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }

        let placed = RunDir::create_or_fall_back(&std::env::temp_dir()).unwrap();
        assert!(placed.instead_of.is_none());
    }
}
