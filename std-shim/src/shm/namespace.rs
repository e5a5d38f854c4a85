//! The manager's [`Namespace`]: `/dev/shm` through one [`ShmDir`].
//!
//! Only a regular file owned by the namespace's user is a segment: it alone is
//! opened (to read its refcount) or unlinked. Anything else under a name (a
//! FIFO, a symlink, a directory, another user's file) is
//! [`Observed::Foreign`] and [`Unlinked::Foreign`], and is left as it is.

use std::fmt;

use libshm_core::name::{NamePrefix, SegmentName};
use libshm_core::namespace::{Namespace, Observed, Unlinked};
use libshm_core::pressure::Usage;
use rustix::fs::{FileType, Stat};
use rustix::io::Errno;

use super::dir::{Header, SHM_DIR, ShmDir, is_regular};
use crate::inspect::{self, InspectError};

/// How often a name that changes between the look and the header read is
/// looked at again before giving up for now.
const LOOKS: usize = 3;

/// The real `/dev/shm`, as the manager sees it: it reads and unlinks only
/// regular files its own user owns, and never blocks on what it finds.
#[derive(Debug)]
pub struct ShmNamespace {
    dir: ShmDir,
    uid: u32,
    /// Whether [`ShmNamespace::find_leaked`] has said why it found nothing: the
    /// sweep asks repeatedly, and once is enough to read.
    told_doubt: bool,
}

/// Why `/dev/shm` could not be opened, or a look into it failed for now.
///
/// Each message carries its cause: the manager's event loop logs a
/// namespace's errors by their message alone, so `source()` is `None`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// `/dev/shm` itself could not be opened: there is no POSIX shared memory
    /// to manage here.
    #[error("cannot open {SHM_DIR}: {error}")]
    OpenDir {
        /// The OS error.
        error: std::io::Error,
    },
    /// A system call on one entry failed (out of descriptors, say); worth
    /// trying again later.
    #[error("{op} in {SHM_DIR}: {errno}")]
    Call {
        /// What was being done: `statat`, `header read`, `unlinkat`.
        op: &'static str,
        /// The OS error.
        errno: Errno,
    },
    /// The entry was replaced every time between the look and the header
    /// read; someone is busy with that name.
    #[error("it was replaced {LOOKS} times while being looked at")]
    KeptChanging,
    /// Leaked segments could not be looked for.
    #[error("{}", crate::error_chain::Chain(&**.0))]
    Scan(Box<InspectError>),
}

fn call(op: &'static str) -> impl Fn(Errno) -> ShmError {
    move |errno| ShmError::Call { op, errno }
}

impl ShmNamespace {
    /// A namespace acting for the current effective user. Fails if
    /// `/dev/shm` cannot be opened.
    pub fn for_current_user() -> Result<Self, ShmError> {
        Self::for_user(rustix::process::geteuid().as_raw())
    }

    /// A namespace that reads and unlinks only objects `uid` owns (root
    /// cleaning up after one user, say). Fails if `/dev/shm` cannot be opened.
    pub fn for_user(uid: u32) -> Result<Self, ShmError> {
        let dir = ShmDir::open().map_err(|error| ShmError::OpenDir { error })?;
        Ok(Self {
            dir,
            uid,
            told_doubt: false,
        })
    }

    /// The open `/dev/shm`, for the inspector's looks.
    pub(crate) fn dir(&self) -> &ShmDir {
        &self.dir
    }

    /// Whether `stat` is a segment of ours: a regular file we own.
    fn owns(&self, stat: &Stat) -> bool {
        is_regular(stat) && stat.st_uid == self.uid
    }

    /// Leaked segments of this namespace's user under `prefix`, judged by
    /// [`inspect`]. While any process could not be inspected (another user's,
    /// a non-dumpable one), a segment only it maps would look leaked, so
    /// then nothing is found.
    pub fn find_leaked(&mut self, prefix: &NamePrefix) -> Result<Vec<SegmentName>, ShmError> {
        let scan =
            inspect::scan_in(&self.dir, prefix).map_err(|err| ShmError::Scan(Box::new(err)))?;
        if let Some(doubt) = scan.doubt() {
            let why = format!(
                "not reaping segments under {prefix} that look leaked: {doubt}; any of them may \
                 use one"
            );
            if std::mem::replace(&mut self.told_doubt, true) {
                tracing::debug!("{why}");
            } else {
                tracing::warn!("{why}");
            }
            return Ok(Vec::new());
        }
        Ok(scan
            .segments
            .into_iter()
            .filter(|segment| {
                segment.status == inspect::Status::Leaked && segment.owner_uid == self.uid
            })
            .map(|segment| segment.name)
            .collect())
    }
}

impl Namespace for ShmNamespace {
    type Error = ShmError;

    fn observe(&mut self, name: &SegmentName) -> Result<Observed, Self::Error> {
        for _ in 0..LOOKS {
            let Some(stat) = self.dir.stat(name).map_err(call("statat"))? else {
                return Ok(Observed::Absent);
            };
            if !self.owns(&stat) {
                tracing::debug!("{name} is {}: not ours", Kind(&stat));
                return Ok(Observed::Foreign);
            }
            match self.dir.read_refcount(name, &stat) {
                Ok(Header::Refcount(refcount)) => return Ok(Observed::Segment { refcount }),
                Ok(Header::Changed) => continue,
                // A file of ours that even we may not read (mode 000): its
                // header cannot be judged, so it is not ours to judge.
                Err(Errno::ACCESS | Errno::PERM) => return Ok(Observed::Foreign),
                Err(errno) => return Err(call("header read")(errno)),
            }
        }
        Err(ShmError::KeptChanging)
    }

    fn absent_among(
        &mut self,
        names: &[SegmentName],
        absent: &mut [bool],
    ) -> Result<bool, Self::Error> {
        self.dir
            .absent_among(names, absent)
            .map_err(call("getdents"))
    }

    fn unlink(&mut self, name: &SegmentName) -> Result<Unlinked, Self::Error> {
        let Some(stat) = self.dir.stat(name).map_err(call("statat"))? else {
            return Ok(Unlinked::Absent);
        };
        if !self.owns(&stat) {
            tracing::debug!("{name} is {}: left alone", Kind(&stat));
            return Ok(Unlinked::Foreign);
        }
        // Between the look and the unlink, only its owner (us) or root can
        // swap the entry: /dev/shm is sticky, so the kernel refuses anyone
        // else's removal of our file, and refuses ours of theirs (EPERM).
        match self.dir.unlink(name) {
            Ok(()) => Ok(Unlinked::Removed),
            Err(Errno::NOENT) => Ok(Unlinked::Absent),
            Err(Errno::PERM | Errno::ACCESS) => Ok(Unlinked::Foreign),
            Err(errno) => Err(call("unlinkat")(errno)),
        }
    }

    fn size(&mut self, name: &SegmentName) -> Result<Option<u64>, Self::Error> {
        let stat = self.dir.stat(name).map_err(call("statat"))?;
        Ok(stat
            .filter(|stat| self.owns(stat))
            .map(|stat| u64::try_from(stat.st_size).unwrap_or(0)))
    }

    fn mapped(&mut self, name: &SegmentName) -> Result<bool, Self::Error> {
        inspect::mapped_in(&self.dir, &[*name])
            .map(|mapped| !mapped.is_empty())
            .map_err(|err| ShmError::Scan(Box::new(err)))
    }

    fn usage(&mut self) -> Result<Option<Usage>, Self::Error> {
        let (used, total) = self.dir.usage().map_err(call("fstatvfs"))?;
        Ok(Some(Usage { used, total }))
    }
}

/// What an entry is, for the log.
struct Kind<'a>(&'a Stat);

impl fmt::Display for Kind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match FileType::from_raw_mode(self.0.st_mode) {
            FileType::RegularFile => return write!(f, "a file of uid {}", self.0.st_uid),
            FileType::Fifo => "a FIFO",
            FileType::Symlink => "a symlink",
            FileType::Directory => "a directory",
            FileType::Socket => "a socket",
            FileType::CharacterDevice | FileType::BlockDevice => "a device",
            _ => "not a file",
        };
        f.write_str(kind)
    }
}
