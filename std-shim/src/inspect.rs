//! What is in `/dev/shm`, who still uses it, and what is safe to delete: the
//! library behind `shmctl ls` and `shmctl gc`.
//!
//! A program that dies by `SIGKILL` while its manager is also gone (or while
//! it used PyTorch's manager with no one left to clean up) leaves its segments
//! behind. Whether one may go cannot be read from the segment alone: its
//! refcount counts processes that may be long dead. So each segment is judged
//! by what is observable now:
//!
//! - the creator, from the pid in the name (`<prefix><pid>_<random>_<counter>`),
//!   is alive or not (`kill(pid, 0)`);
//! - some live process maps it or holds a descriptor to it (`/proc`).
//!
//! | creator      | users    | [`Status`]  |
//! |--------------|----------|-------------|
//! | alive        | any      | `in use`    |
//! | dead         | some     | `orphaned`  |
//! | dead         | none     | `leaked`    |
//! | not in name  | some     | `in use`    |
//! | not in name  | none     | `unknown`   |
//!
//! Only `leaked` segments are ever collected, only the caller's own, only once
//! unchanged for a minimum age (a segment in transit between processes is
//! briefly unused), only after checking that one segment again right before
//! unlinking it, and only while every process could be inspected.
//!
//! What it cannot see: processes in other pid namespaces that share this
//! `/dev/shm` (a container with `--ipc=host`), and processes whose `/proc`
//! entries we may not read (another user's, or non-dumpable ones);
//! [`Scan::uninspected`] lists the latter, and while it is not empty a
//! collection removes nothing unless [`GcPolicy::force`] says otherwise: one
//! of them may map a segment that looks unused. An ordinary user can inspect
//! neither root's processes nor other users', so on most machines only root
//! can collect without forcing. A live creator pid that now belongs to another
//! program counts as alive, which errs on the side of keeping.
//!
//! Everything in `/dev/shm` is looked at through one directory descriptor,
//! without following links or opening anything but regular files, and
//! without blocking (see `ShmNamespace`).
//!
//! # Example
//! ```no_run
//! use libshm::NamePrefix;
//! use libshm::inspect::{self, Status};
//!
//! let scan = inspect::scan(&NamePrefix::torch())?;
//! for segment in scan.segments.iter().filter(|s| s.status == Status::Leaked) {
//!     println!("{} ({} bytes) was left behind by pid {:?}",
//!              segment.name, segment.size, segment.creator_pid);
//! }
//! # Ok::<(), libshm::inspect::InspectError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

use libshm_core::header::HEADER_LEN;
use libshm_core::name::{NamePrefix, SegmentName};
use libshm_core::namespace::{Namespace, Unlinked};
use rustix::io::Errno;
use rustix::process::Pid;

use crate::shm::dir::{Header, SHM_DIR, ShmDir, is_regular};
use crate::shm::{ShmError, ShmNamespace};

mod users;

/// How a segment stands, from its creator's liveness and its users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// The creator is alive, or someone uses a segment whose name does not
    /// say who created it.
    InUse,
    /// The creator is dead but a live process still maps or holds it. It goes
    /// away when that process releases it (or, if it dies too, becomes leaked).
    Orphaned,
    /// The creator is dead and no process maps or holds it: nobody will ever
    /// release it.
    Leaked,
    /// The name does not carry a creator pid and nobody uses it. Could be
    /// anyone's; never collected.
    Unknown,
}

impl Status {
    /// Decides the status from what was observed. `creator_alive` is `None`
    /// when the name does not say who created it.
    pub fn classify(creator_alive: Option<bool>, has_users: bool) -> Self {
        match (creator_alive, has_users) {
            (Some(true), _) | (None, true) => Self::InUse,
            (Some(false), true) => Self::Orphaned,
            (Some(false), false) => Self::Leaked,
            (None, false) => Self::Unknown,
        }
    }

    /// The status as `ls` prints it: `in use`, `orphaned`, `leaked`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InUse => "in use",
            Self::Orphaned => "orphaned",
            Self::Leaked => "leaked",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One shared-memory object as observed during a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentReport {
    /// Its name, leading `/` included.
    pub name: SegmentName,
    /// Bytes the object holds, header included.
    pub size: u64,
    /// The count in the first four bytes, when the object is at least a
    /// header long and readable by us. Meaningful only if it has our
    /// (PyTorch's) layout.
    pub refcount: Option<i32>,
    /// The pid in the name, when the name has the generated shape.
    pub creator_pid: Option<u32>,
    /// Whether that pid is alive; `None` without a creator pid.
    pub creator_alive: Option<bool>,
    /// Live processes that map it or hold a descriptor to it, ascending.
    pub users: Vec<u32>,
    /// The verdict.
    pub status: Status,
    /// The object's owner.
    pub owner_uid: u32,
    /// Time since its contents or attributes last changed (the newer of
    /// mtime and ctime).
    pub age: Duration,
}

/// Everything one scan saw.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// The objects whose names start with the prefix, sorted by name.
    pub segments: Vec<SegmentReport>,
    /// Processes whose maps or descriptors could not be read (other users'
    /// or non-dumpable ones), ascending. If there are any, "no users" means
    /// "no users we can see".
    pub uninspected: Vec<u32>,
    /// This process runs in a nested pid namespace (a container): processes
    /// outside it, which may share this `/dev/shm`, cannot be seen at all.
    pub outside_namespace: bool,
}

impl Scan {
    /// What the scan could not see, for a reader: `None` if it saw every
    /// process.
    pub fn doubt(&self) -> Option<Doubt<'_>> {
        (!self.uninspected.is_empty() || self.outside_namespace).then_some(Doubt {
            pids: &self.uninspected,
            outside_namespace: self.outside_namespace,
        })
    }
}

/// What a scan could not see, displayed as `2 processes could not be
/// inspected (another user's or non-dumpable): pids 1, 4242`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Doubt<'a> {
    /// Processes that could not be inspected.
    pub pids: &'a [u32],
    /// Processes outside this pid namespace cannot be seen at all.
    pub outside_namespace: bool,
}

impl fmt::Display for Doubt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.outside_namespace {
            f.write_str(
                "this runs in a nested pid namespace (a container), so processes outside it \
                 that share /dev/shm cannot be seen",
            )?;
            if self.pids.is_empty() {
                return Ok(());
            }
            f.write_str("; and ")?;
        }
        let count = self.pids.len();
        write!(
            f,
            "{count} process{} could not be inspected (another user's or non-dumpable): pid{} ",
            if count == 1 { "" } else { "es" },
            if count == 1 { "" } else { "s" },
        )?;
        for (i, pid) in self.pids.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{pid}")?;
        }
        Ok(())
    }
}

/// Why a scan or a collection could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// A directory the inspector must read could not be listed.
    #[error("cannot list {dir}")]
    List {
        /// `/dev/shm` or `/proc`.
        dir: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A leaked segment passed every check but unlinking it failed.
    #[error("could not unlink {name}")]
    Unlink {
        /// The segment.
        name: SegmentName,
        /// What failed.
        #[source]
        source: ShmError,
    },
}

fn list_error(dir: &'static str) -> impl Fn(io::Error) -> InspectError {
    move |source| InspectError::List { dir, source }
}

/// Lists every object in `/dev/shm` whose name starts with `prefix` and
/// classifies it. Objects that are not regular files or whose names are not
/// valid segment names (too long, odd bytes) are left out.
pub fn scan(prefix: &NamePrefix) -> Result<Scan, InspectError> {
    let dir = ShmDir::open().map_err(list_error(SHM_DIR))?;
    scan_in(&dir, prefix)
}

/// [`scan`] through an open `/dev/shm`.
pub(crate) fn scan_in(dir: &ShmDir, prefix: &NamePrefix) -> Result<Scan, InspectError> {
    let now = SystemTime::now();
    let list = list_error(SHM_DIR);
    let mut found = Vec::new();
    for entry in dir.entries().map_err(&list)? {
        let entry = entry.map_err(|errno| list(errno.into()))?;
        let Some(name) = name_of_entry(entry.file_name().to_bytes()) else {
            continue;
        };
        if name.has_prefix(prefix)
            && let Some(object) = Object::stat(dir, &name, now)
        {
            found.push(object);
        }
    }
    // The users are read after every object was opened and closed again, so
    // the inspector never sees itself holding one.
    let wanted: BTreeMap<users::FileId, SegmentName> = found
        .iter()
        .map(|object| (object.id, object.name))
        .collect();
    let users = users::scan(&wanted).map_err(list_error("/proc"))?;
    let mut segments: Vec<SegmentReport> = found
        .into_iter()
        .map(|object| {
            let used_by = users.of(&object.name);
            object.judge(prefix, used_by)
        })
        .collect();
    segments.sort_by_key(|segment| segment.name);
    Ok(Scan {
        segments,
        uninspected: users.uninspected,
        outside_namespace: users::in_nested_pid_namespace(),
    })
}

/// Which of `names` some process maps or holds a descriptor to, or may, by
/// one walk of `/proc`. A process we may not inspect counts as a possible
/// user of a name only if it is of our uid and started after the name's
/// segment was made: a fork worker that made itself non-dumpable may map
/// what it inherited, while a process older than the segment could only
/// have opened it by name (and registered it). Most machines have such old
/// processes (an init or a daemon made non-dumpable, in a container without
/// `CAP_SYS_PTRACE`); counting them would keep every name.
pub fn mapped(names: &[SegmentName]) -> Result<Vec<SegmentName>, InspectError> {
    let dir = ShmDir::open().map_err(list_error(SHM_DIR))?;
    mapped_in(&dir, names)
}

pub(crate) fn mapped_in(
    dir: &ShmDir,
    names: &[SegmentName],
) -> Result<Vec<SegmentName>, InspectError> {
    let mut made: BTreeMap<SegmentName, SystemTime> = BTreeMap::new();
    let wanted: BTreeMap<users::FileId, SegmentName> = names
        .iter()
        .filter_map(|name| {
            let stat = dir.stat(name).ok()??;
            // Widened where the platform's fields are narrower.
            #[allow(clippy::unnecessary_cast)]
            let changed = timestamp(stat.st_ctime as i64, stat.st_ctime_nsec as i64);
            made.insert(*name, changed);
            is_regular(&stat).then(|| (users::file_id(&stat), *name))
        })
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let users = users::scan(&wanted).map_err(list_error("/proc"))?;
    // The uninspected processes of our uid, and when each started.
    let me = rustix::process::geteuid().as_raw();
    let doubtful: Vec<SystemTime> = users
        .uninspected
        .iter()
        .filter(|&&pid| users::owner(pid) == Some(me))
        .filter_map(|&pid| users::started_at(pid))
        .collect();
    Ok(wanted
        .into_values()
        .filter(|name| {
            // The segment's change time is its making (ATen truncates and
            // maps it once); start times are good to about a second.
            let made = made[name].checked_sub(START_TIME_SLACK);
            !users.of(name).is_empty()
                || doubtful
                    .iter()
                    .any(|&started| made.is_none_or(|made| started >= made))
        })
        .collect())
}

/// How much earlier than a segment's making a process may seem to start and
/// still be taken for one that could have inherited its mapping (the boot
/// time is whole seconds).
const START_TIME_SLACK: Duration = Duration::from_secs(2);

/// Observes one name afresh: a scan whose segments are that name alone, or
/// none if it no longer exists (or is not a regular file).
pub fn inspect_one(name: &SegmentName, prefix: &NamePrefix) -> Result<Scan, InspectError> {
    let dir = ShmDir::open().map_err(list_error(SHM_DIR))?;
    inspect_one_in(&dir, name, prefix)
}

fn inspect_one_in(
    dir: &ShmDir,
    name: &SegmentName,
    prefix: &NamePrefix,
) -> Result<Scan, InspectError> {
    let Some(object) = Object::stat(dir, name, SystemTime::now()) else {
        return Ok(Scan::default());
    };
    let users = users::scan(&BTreeMap::from([(object.id, *name)])).map_err(list_error("/proc"))?;
    Ok(Scan {
        segments: vec![object.judge(prefix, users.of(name))],
        uninspected: users.uninspected,
        outside_namespace: users::in_nested_pid_namespace(),
    })
}

/// Which leaked segments a collection may remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// Keep segments that changed more recently than this: a segment handed
    /// to another process is unused while in transit.
    pub min_age: Duration,
    /// Remove only segments this user owns.
    pub uid: u32,
    /// Remove leaked segments even while some processes could not be
    /// inspected, though one of them may map the segment unseen.
    pub force: bool,
}

impl GcPolicy {
    /// Only the caller's (effective user's) segments, unchanged for
    /// `min_age`, and only while every process could be inspected.
    pub fn for_current_user(min_age: Duration) -> Self {
        Self {
            min_age,
            uid: rustix::process::geteuid().as_raw(),
            force: false,
        }
    }
}

/// Why a collection keeps a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spared {
    /// It is not leaked (any more, if this was a re-check).
    NotLeaked(Status),
    /// It changed too recently.
    TooYoung {
        /// Its age.
        age: Duration,
        /// The policy's minimum.
        min_age: Duration,
    },
    /// Another user owns it.
    NotOwned {
        /// Its owner.
        uid: u32,
    },
    /// It looks leaked, but some processes could not be inspected and one of
    /// them may use it.
    Uninspected {
        /// How many processes could not be inspected.
        processes: usize,
    },
    /// This runs in a nested pid namespace: processes outside it may use it.
    OutsideNamespace,
}

impl fmt::Display for Spared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotLeaked(status) => write!(f, "it is {status}"),
            Self::TooYoung { age, min_age } => write!(
                f,
                "it changed {}s ago, less than {}s",
                age.as_secs(),
                min_age.as_secs()
            ),
            Self::NotOwned { uid } => write!(f, "it belongs to uid {uid}"),
            Self::OutsideNamespace => {
                f.write_str("processes outside this pid namespace cannot be seen and may use it")
            }
            Self::Uninspected { processes } => write!(
                f,
                "{processes} process{} could not be inspected and may use it",
                if *processes == 1 { "" } else { "es" }
            ),
        }
    }
}

impl SegmentReport {
    /// Why `policy` keeps this segment, or `None` if it may be removed.
    pub fn spared_by(&self, policy: &GcPolicy) -> Option<Spared> {
        if self.status != Status::Leaked {
            Some(Spared::NotLeaked(self.status))
        } else if self.owner_uid != policy.uid {
            Some(Spared::NotOwned {
                uid: self.owner_uid,
            })
        } else if self.age < policy.min_age {
            Some(Spared::TooYoung {
                age: self.age,
                min_age: policy.min_age,
            })
        } else {
            None
        }
    }
}

/// What a collection did with one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Collected {
    /// Unlinked; its memory is freed.
    Removed {
        /// Bytes the object held.
        bytes: u64,
    },
    /// Kept, and why.
    Spared(Spared),
    /// It was gone before we got to it.
    Gone,
}

/// Removes `name` if, observed right now, it is leaked and `policy` allows
/// it. The creator's liveness, the users, the owner and the age are all read
/// again here, so a list from an earlier [`scan`] is only a list of candidates.
/// While any process cannot be inspected it is kept, unless `policy.force`.
///
/// The check and the unlink are not atomic: a process that opens the name in
/// between loses it (its mapping stays valid; the name is gone). The minimum
/// age is what makes that window harmless in practice.
pub fn collect(
    name: &SegmentName,
    prefix: &NamePrefix,
    policy: &GcPolicy,
) -> Result<Collected, InspectError> {
    let mut namespace = ShmNamespace::for_user(policy.uid).map_err(|source| match source {
        ShmError::OpenDir { error } => InspectError::List {
            dir: SHM_DIR,
            source: error,
        },
        source => InspectError::Unlink {
            name: *name,
            source,
        },
    })?;
    let look = inspect_one_in(namespace.dir(), name, prefix)?;
    let Some(report) = look.segments.first() else {
        return Ok(Collected::Gone);
    };
    if let Some(spared) = report.spared_by(policy) {
        return Ok(Collected::Spared(spared));
    }
    if look.outside_namespace && !policy.force {
        return Ok(Collected::Spared(Spared::OutsideNamespace));
    }
    if !look.uninspected.is_empty() && !policy.force {
        return Ok(Collected::Spared(Spared::Uninspected {
            processes: look.uninspected.len(),
        }));
    }
    let unlinked = namespace
        .unlink(name)
        .map_err(|source| InspectError::Unlink {
            name: *name,
            source,
        })?;
    Ok(match unlinked {
        Unlinked::Removed => Collected::Removed { bytes: report.size },
        Unlinked::Absent => Collected::Gone,
        // Replaced by another user's object since the check.
        Unlinked::Foreign => Collected::Spared(Spared::NotOwned {
            uid: report.owner_uid,
        }),
    })
}

/// A `/dev/shm` directory entry's name as a segment name, if it is one.
fn name_of_entry(file_name: &[u8]) -> Option<SegmentName> {
    let mut name = [0u8; libshm_core::name::NAME_MAX];
    name.get_mut(1..=file_name.len())?
        .copy_from_slice(file_name);
    name[0] = b'/';
    SegmentName::new(&name[..=file_name.len()]).ok()
}

/// What the object itself says, before anyone asks `/proc`.
struct Object {
    name: SegmentName,
    /// Device and inode, which users' mappings are matched by.
    id: users::FileId,
    size: u64,
    owner_uid: u32,
    age: Duration,
    refcount: Option<i32>,
}

impl Object {
    /// `None` if the name is gone or is not a regular file. The refcount is
    /// read only from a file at least a header long that we may read.
    fn stat(dir: &ShmDir, name: &SegmentName, now: SystemTime) -> Option<Self> {
        let stat = dir.stat(name).ok()??;
        if !is_regular(&stat) {
            return None;
        }
        // Widened where the platform's fields are narrower.
        #[allow(clippy::unnecessary_cast)]
        let changed = timestamp(stat.st_mtime as i64, stat.st_mtime_nsec as i64)
            .max(timestamp(stat.st_ctime as i64, stat.st_ctime_nsec as i64));
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let refcount = if size >= HEADER_LEN as u64 {
            match dir.read_refcount(name, &stat) {
                Ok(Header::Refcount(count)) => Some(count),
                Ok(Header::Changed) | Err(_) => None,
            }
        } else {
            None
        };
        Some(Self {
            name: *name,
            id: users::file_id(&stat),
            size,
            owner_uid: stat.st_uid,
            age: now.duration_since(changed).unwrap_or_default(),
            refcount,
        })
    }

    fn judge(self, prefix: &NamePrefix, users: Vec<u32>) -> SegmentReport {
        let creator_pid = self
            .name
            .creator_pid(prefix)
            .filter(|&pid| as_pid(pid).is_some());
        let creator_alive = creator_pid.map(is_alive);
        SegmentReport {
            name: self.name,
            size: self.size,
            refcount: self.refcount,
            creator_pid,
            creator_alive,
            status: Status::classify(creator_alive, !users.is_empty()),
            users,
            owner_uid: self.owner_uid,
            age: self.age,
        }
    }
}

/// A file time as a `SystemTime`; times before 1970 count as 1970.
fn timestamp(secs: i64, nanos: i64) -> SystemTime {
    let secs = u64::try_from(secs).unwrap_or(0);
    let nanos = u32::try_from(nanos).unwrap_or(0).min(999_999_999);
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
}

/// A number that can name a process: 0 and values past `i32::MAX` cannot,
/// and `kill(0, _)` would mean our own process group.
fn as_pid(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok()?)
}

/// `kill(pid, 0)`: only "no such process" is dead. A pid we may not signal
/// is alive (another user's), and so is one we cannot judge.
fn is_alive(pid: u32) -> bool {
    match as_pid(pid) {
        Some(pid) => !matches!(rustix::process::test_kill_process(pid), Err(Errno::SRCH)),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_table() {
        assert_eq!(Status::classify(Some(true), false), Status::InUse);
        assert_eq!(Status::classify(Some(true), true), Status::InUse);
        assert_eq!(Status::classify(Some(false), true), Status::Orphaned);
        assert_eq!(Status::classify(Some(false), false), Status::Leaked);
        assert_eq!(Status::classify(None, true), Status::InUse);
        assert_eq!(Status::classify(None, false), Status::Unknown);
    }

    #[test]
    fn liveness_and_pids() {
        assert!(is_alive(std::process::id()));
        assert!(as_pid(0).is_none(), "kill(0) would mean our process group");
        assert!(as_pid(u32::MAX).is_none());
        assert!(is_alive(1), "init is alive, or at least not ours to judge");
    }

    #[test]
    fn only_leaked_old_and_own_segments_are_collectable() {
        let leaked = SegmentReport {
            name: SegmentName::new(b"/torch_1_2_3").unwrap(),
            size: 4160,
            refcount: Some(1),
            creator_pid: Some(1),
            creator_alive: Some(false),
            users: Vec::new(),
            status: Status::Leaked,
            owner_uid: 1000,
            age: Duration::from_secs(120),
        };
        let policy = GcPolicy {
            min_age: Duration::from_secs(60),
            uid: 1000,
            force: false,
        };
        assert_eq!(leaked.spared_by(&policy), None);
        let orphaned = SegmentReport {
            status: Status::Orphaned,
            users: vec![7],
            ..leaked.clone()
        };
        assert_eq!(
            orphaned.spared_by(&policy),
            Some(Spared::NotLeaked(Status::Orphaned))
        );
        let young = SegmentReport {
            age: Duration::from_secs(5),
            ..leaked.clone()
        };
        assert!(matches!(
            young.spared_by(&policy),
            Some(Spared::TooYoung { .. })
        ));
        let theirs = SegmentReport {
            owner_uid: 0,
            ..leaked
        };
        assert_eq!(theirs.spared_by(&policy), Some(Spared::NotOwned { uid: 0 }));
    }

    #[test]
    fn directory_entries_become_names_only_when_valid() {
        assert_eq!(
            name_of_entry(b"torch_1_2_3").map(|n| n.as_str().to_owned()),
            Some("/torch_1_2_3".to_owned())
        );
        assert_eq!(name_of_entry(b""), None);
        assert_eq!(name_of_entry(b"with space"), None);
        assert_eq!(name_of_entry(&[b'a'; 80]), None);
    }

    #[test]
    fn file_times_before_the_epoch_do_not_panic() {
        assert_eq!(timestamp(-5, -1), SystemTime::UNIX_EPOCH);
        assert!(timestamp(1, 2_000_000_000) > SystemTime::UNIX_EPOCH);
    }
}
