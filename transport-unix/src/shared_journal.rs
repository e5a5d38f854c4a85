//! The journal's memory: a sealed memory file that client and manager both map.
//!
//! The client creates it, seals its size (so a manager that maps it can never
//! be hit by `SIGBUS` from a client shrinking it), and sends the descriptor
//! with its offer. The manager adopts it only if it is a sealed regular file
//! of exactly a journal's size.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use libshm_core::journal::{self, Journal, JournalError, JournalMemory};
use rustix::fs::{FileType, MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

/// A mapped journal memory file. Views of it ([`JournalMemory::journal`])
/// borrow it, so none outlives the mapping.
pub struct SharedJournal {
    fd: OwnedFd,
    base: NonNull<u8>,
    len: usize,
    /// Which memory file it is (device and inode): the same file reached
    /// through another descriptor has the same.
    file: (u64, u64),
    /// The view of the mapping, validated once. It never leaves this struct
    /// with a lifetime longer than a borrow of it.
    journal: Journal<'static>,
}

// SAFETY: the mapping is process-wide memory, not tied to a thread, and the
// journal view only accesses it atomically.
unsafe impl Send for SharedJournal {}
// SAFETY: as above; shared references only perform atomic accesses.
unsafe impl Sync for SharedJournal {}

/// Why a manager refused a client's journal memory.
#[derive(Debug)]
pub enum AdoptError {
    /// Not a regular file (a socket, a pipe, a device...).
    NotAFile,
    /// Not sealed against shrinking and growing.
    Unsealed,
    /// A system call failed.
    Os(Errno),
    /// The contents or size are not a journal.
    Journal(JournalError),
}

impl fmt::Display for AdoptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAFile => f.write_str("journal memory is not a regular file"),
            Self::Unsealed => f.write_str("journal memory is not sealed against resizing"),
            Self::Os(errno) => write!(f, "journal memory: {}", io::Error::from(*errno)),
            Self::Journal(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for AdoptError {}

impl From<Errno> for AdoptError {
    fn from(errno: Errno) -> Self {
        Self::Os(errno)
    }
}

impl SharedJournal {
    /// Frames a client's journal holds by default (about 68 KiB).
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// Client: a new, initialized journal with room for `capacity` frames.
    pub fn create(capacity: usize) -> io::Result<Self> {
        let len = journal::journal_len(capacity);
        let fd = rustix::fs::memfd_create(
            "libshm-journal",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let stat = rustix::fs::fstat(&fd)?;
        let file = (stat.st_dev, stat.st_ino);
        let shared = Self::map(fd, len, file).map_err(|err| match err {
            AdoptError::Os(errno) => io::Error::from(errno),
            other => io::Error::other(other.to_string()),
        })?;
        shared.journal.initialize();
        Ok(shared)
    }

    /// Manager: checks and maps the memory a client sent with its offer.
    pub fn adopt(fd: OwnedFd) -> Result<Self, AdoptError> {
        // Seals first, size after: the client still holds the file, and an
        // unsealed file may shrink between the two looks. Seals are never
        // removed, so a size read once they are on is the size for good.
        // (A size read before could be stale: mapping it would end in
        // SIGBUS.)
        let seals = match rustix::fs::fcntl_get_seals(&fd) {
            Ok(seals) => seals,
            // Files that cannot be sealed (pipes, sockets, most files).
            Err(Errno::INVAL) => return Err(AdoptError::NotAFile),
            Err(errno) => return Err(AdoptError::Os(errno)),
        };
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(AdoptError::Unsealed);
        }
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(AdoptError::NotAFile);
        }
        let len = usize::try_from(stat.st_size)
            .map_err(|_| AdoptError::Journal(JournalError::BadLength { len: usize::MAX }))?;
        if len > journal::journal_len(journal::MAX_CAPACITY) {
            return Err(AdoptError::Journal(JournalError::BadLength { len }));
        }
        let shared = Self::map(fd, len, (stat.st_dev, stat.st_ino))?;
        shared.journal.validate().map_err(AdoptError::Journal)?;
        Ok(shared)
    }

    fn map(fd: OwnedFd, len: usize, file: (u64, u64)) -> Result<Self, AdoptError> {
        // Validate the length before mapping, so nothing is mapped in vain.
        if len == 0 || !len.is_multiple_of(4) {
            return Err(AdoptError::Journal(JournalError::BadLength { len }));
        }
        // SAFETY: a fresh shared mapping of `len` bytes of a file that is
        // sealed against shrinking (checked by adopt, set by create), at an
        // address the kernel picks; it aliases nothing of ours.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }?;
        let base = NonNull::new(base.cast::<u8>()).ok_or(AdoptError::Os(Errno::NOMEM))?;
        // SAFETY: `base` maps `len` bytes that stay mapped until Drop. The
        // 'static view is private: `journal()` hands it out only shortened to
        // a borrow of `self`, so every use ends before the unmap.
        let journal = match unsafe { Journal::from_raw(base, len) } {
            Ok(journal) => journal,
            Err(err) => {
                // SAFETY: unmapping the mapping made above, unused elsewhere.
                let _ = unsafe { rustix::mm::munmap(base.as_ptr().cast(), len) };
                return Err(AdoptError::Journal(err));
            }
        };
        Ok(Self {
            fd,
            base,
            len,
            file,
            journal,
        })
    }

    /// Whether `other` maps the same memory file (offered twice, perhaps
    /// through another descriptor of it).
    pub fn is_same_file(&self, other: &Self) -> bool {
        self.file == other.file
    }

    /// The memory file, to send with the offer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl JournalMemory for SharedJournal {
    fn journal(&self) -> Journal<'_> {
        self.journal
    }
}

impl Drop for SharedJournal {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; every view of it borrowed
        // `self` (see `journal()`), so none is left.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl fmt::Debug for SharedJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedJournal")
            .field("len", &self.len)
            .field("journal", &self.journal)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libshm_core::frame::Frame;
    use libshm_core::name::SegmentName;

    #[test]
    fn a_client_journal_is_adopted_by_a_manager_through_its_descriptor() {
        let client = SharedJournal::create(16).unwrap();
        let sent = client.fd().try_clone_to_owned().unwrap();
        let manager = SharedJournal::adopt(sent).unwrap();
        let frame = Frame::register(1, SegmentName::new(b"/torch_1_2_3").unwrap());
        client.journal().append(&frame.to_raw()).unwrap();
        let mut seen = Vec::new();
        manager
            .journal()
            .drain(|bytes| seen.push(Frame::parse(&bytes).unwrap()))
            .unwrap();
        assert_eq!(seen, [frame]);
        assert_eq!(
            client.journal().unread(),
            Ok(0),
            "the client sees the manager's progress"
        );
    }

    #[test]
    fn the_same_memory_through_two_descriptors_is_told_apart_from_another() {
        let client = SharedJournal::create(16).unwrap();
        let once = SharedJournal::adopt(client.fd().try_clone_to_owned().unwrap()).unwrap();
        let again = SharedJournal::adopt(client.fd().try_clone_to_owned().unwrap()).unwrap();
        let other = SharedJournal::create(16).unwrap();
        assert!(once.is_same_file(&again) && once.is_same_file(&client));
        assert!(!once.is_same_file(&other));
    }

    #[test]
    fn unsealed_or_foreign_descriptors_are_refused() {
        let unsealed = rustix::fs::memfd_create("x", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&unsealed, journal::journal_len(4) as u64).unwrap();
        assert!(matches!(
            SharedJournal::adopt(unsealed),
            Err(AdoptError::Unsealed)
        ));

        let (pipe, _) = rustix::pipe::pipe().unwrap();
        assert!(matches!(
            SharedJournal::adopt(pipe),
            Err(AdoptError::NotAFile)
        ));

        let empty =
            rustix::fs::memfd_create("x", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&empty, journal::journal_len(4) as u64).unwrap();
        rustix::fs::fcntl_add_seals(&empty, SealFlags::SHRINK | SealFlags::GROW).unwrap();
        assert!(matches!(
            SharedJournal::adopt(empty),
            Err(AdoptError::Journal(JournalError::BadHeader))
        ));
    }
}
