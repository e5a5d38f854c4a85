//! Which process we are, without a system call on the hot path.
//!
//! Fork safety needs the current pid on every create and drop, and glibc no
//! longer caches `getpid`, so each check would cost a system call (about 2 µs
//! on a virtual machine, a sixth of a whole 4 KiB allocation). Instead the pid
//! is cached in a page marked `MADV_WIPEONFORK`: the kernel hands a forked
//! child that page zero-filled, so a zero means "ask the kernel again". This
//! works for every kind of fork, not only those that run `pthread_atfork`
//! handlers.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::mm::{Advice, MapFlags, ProtFlags};

/// The cache: in a wipe-on-fork page when the kernel supports it.
static CACHE: OnceLock<Option<&'static AtomicU32>> = OnceLock::new();

/// The calling process's pid.
pub(crate) fn current_pid() -> u32 {
    let Some(cell) = CACHE.get_or_init(wipe_on_fork_cell) else {
        return getpid();
    };
    match cell.load(Ordering::Relaxed) {
        0 => {
            let pid = getpid();
            cell.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

fn getpid() -> u32 {
    rustix::process::getpid()
        .as_raw_nonzero()
        .get()
        .unsigned_abs()
}

/// Maps one anonymous page, marks it wipe-on-fork, and leaks it as the cache.
/// `None` when the kernel cannot (before Linux 4.14): then every call asks.
fn wipe_on_fork_cell() -> Option<&'static AtomicU32> {
    let len = rustix::param::page_size();
    // SAFETY: a fresh anonymous private mapping at an address the kernel
    // picks; it aliases nothing.
    let page = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .ok()?;
    // SAFETY: `page` is the start of the `len`-byte mapping made above.
    if unsafe { rustix::mm::madvise(page, len, Advice::LinuxWipeOnFork) }.is_err() {
        // SAFETY: unmapping the mapping made above, which nothing else uses.
        let _ = unsafe { rustix::mm::munmap(page, len) };
        return None;
    }
    // SAFETY: the page is zero-filled, writable, page-aligned (so aligned for
    // u32), never unmapped (leaked for the life of the process), and only
    // ever accessed through this atomic.
    Some(unsafe { AtomicU32::from_ptr(page.cast::<u32>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_kernel() {
        assert_eq!(current_pid(), std::process::id());
        assert_eq!(current_pid(), std::process::id(), "cached value");
        assert!(
            CACHE.get().is_some_and(Option::is_some),
            "wipe-on-fork is available here"
        );
    }
}
