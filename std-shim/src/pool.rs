//! Segments made ahead of time, for processes that allocate the same sizes
//! over and over (opt-in: [`Config::pool`](crate::Config::pool), or
//! `LIBSHM_POOL`).
//!
//! A background thread keeps a few segments of each pooled size created,
//! registered with the manager, sized, reserved and mapped with their pages
//! already faulted in; a create of that size takes one off the shelf, and a
//! drop hands the unmapping, the unlinking and then the release with the
//! manager back to the thread. The hot path is
//! then a lock and a pop, and the system calls happen on another core.
//!
//! A pooled segment is indistinguishable from a fresh one: created for the
//! purpose (so zeroed), with a name of its own, its refcount 1, registered
//! with the link's manager under this process's pid. It is therefore reaped
//! like any other if the process dies, and the segments still on the shelves
//! are unlinked when the process exits. A forked child never takes from its
//! parent's shelves (they are registered to the parent).
//!
//! `LIBSHM_POOL`: a comma-separated list of `<size>[:<depth>]` (`4KiB:16,1MiB`;
//! depth 8 by default, 1024 at most), or `auto`: every size asked for four times gets a
//! shelf of four, while the pool holds at most 64 MiB.
//!
//! Whatever the depths, the pool never takes the last eighth of `/dev/shm`:
//! segments made ahead of need must not fail someone else's allocation.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use libshm_core::header::{HEADER_LEN, Refcount};
use libshm_core::name::SegmentName;
use memmap2::MmapRaw;

use crate::fork_gate;
use crate::link::Link;
use crate::naming::{current_pid, next_name};
use crate::shm;

/// Depth of a shelf whose size names none.
const DEFAULT_DEPTH: usize = 8;
/// Deepest shelf: a pool is a few segments ahead of need, and a depth from
/// the environment is not trusted to be sane.
const MAX_DEPTH: usize = 1024;
/// `auto`: requests of one size before it gets a shelf, and its depth.
const AUTO_AFTER: u32 = 4;
const AUTO_DEPTH: usize = 4;
/// `auto`: most bytes kept on the shelves, and most sizes tracked.
const AUTO_BUDGET: usize = 64 << 20;
const AUTO_SIZES: usize = 64;
/// The share of `/dev/shm` the pool leaves free for allocations as they come
/// (one part in this many).
const LEAVE_FREE_PARTS: u64 = 8;
/// How long the filler sleeps when nothing wakes it.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long the filler waits before trying a link another thread uses.
const BUSY_WAIT: Duration = Duration::from_micros(200);

/// Which sizes to pool, and how many of each to keep ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolSizes {
    /// These data sizes, with these depths.
    Fixed(Vec<(usize, usize)>),
    /// Sizes asked for repeatedly, learned as the process runs.
    Auto,
}

/// Why a `LIBSHM_POOL` value is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not `auto` or a list of <size>[:<depth>] such as 4KiB:16,1MiB (depth at most 1024)"
)]
pub struct PoolSizesError(String);

impl FromStr for PoolSizes {
    type Err = PoolSizesError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim() == "auto" {
            return Ok(Self::Auto);
        }
        let error = || PoolSizesError(text.to_owned());
        let sizes = text
            .split(',')
            .map(|part| {
                let (size, depth) = match part.trim().split_once(':') {
                    Some((size, depth)) => {
                        let depth = depth.parse().map_err(|_| error())?;
                        if depth > MAX_DEPTH {
                            return Err(error());
                        }
                        (size, depth)
                    }
                    None => (part.trim(), DEFAULT_DEPTH),
                };
                let size = crate::units::parse_size(size).map_err(|_| error())?;
                Ok((size, depth))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if sizes.is_empty() {
            return Err(error());
        }
        Ok(Self::Fixed(sizes))
    }
}

/// A segment on a shelf: created, registered, refcount 1, mapped.
struct Ready {
    name: SegmentName,
    map: MmapRaw,
}

/// A pooled segment that was dropped: unmapped (and, if ours was the last
/// reference, unlinked and then released with the manager) by the filler.
struct Spent {
    name: SegmentName,
    map: MmapRaw,
    unlink: bool,
}

#[derive(Default)]
struct Shelves {
    ready: HashMap<usize, Vec<Ready>>,
    /// Wanted depth per size.
    depth: HashMap<usize, usize>,
    /// `auto`: requests per size so far.
    requests: HashMap<usize, u32>,
    spent: Vec<Spent>,
    stopped: bool,
}

impl Shelves {
    fn bytes_wanted(&self) -> usize {
        self.depth.iter().fold(0, |sum: usize, (size, depth)| {
            sum.saturating_add(size.saturating_mul(*depth))
        })
    }

    /// Sizes short of their depth, with how many each lacks.
    fn missing(&self) -> Vec<(usize, usize)> {
        self.depth
            .iter()
            .filter_map(|(&size, &depth)| {
                let have = self.ready.get(&size).map_or(0, Vec::len);
                Some((size, depth.checked_sub(have).filter(|&lack| lack > 0)?))
            })
            .collect()
    }
}

/// The pool of one manager link.
pub(crate) struct Pool {
    owner_pid: u32,
    auto: bool,
    shelves: Mutex<Shelves>,
    wake: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shelves = self.lock();
        let ready: HashMap<usize, usize> = shelves
            .ready
            .iter()
            .map(|(size, ready)| (*size, ready.len()))
            .collect();
        f.debug_struct("Pool").field("ready", &ready).finish()
    }
}

impl Pool {
    /// A pool for `link`, with its filler thread.
    pub(crate) fn start(link: &Arc<Link>, sizes: &PoolSizes) -> Arc<Self> {
        let mut shelves = Shelves::default();
        if let PoolSizes::Fixed(sizes) = sizes {
            // Built in code rather than parsed, a depth may be any number.
            shelves.depth = sizes
                .iter()
                .map(|&(size, depth)| (size, depth.min(MAX_DEPTH)))
                .collect();
        }
        let pool = Arc::new(Self {
            owner_pid: current_pid(),
            auto: *sizes == PoolSizes::Auto,
            shelves: Mutex::new(shelves),
            wake: Condvar::new(),
        });
        exit::remember(&pool);
        let (weak_pool, weak_link) = (Arc::downgrade(&pool), Arc::downgrade(link));
        let spawned = std::thread::Builder::new()
            .name("libshm-pool".into())
            .spawn(move || fill(&weak_pool, &weak_link));
        if let Err(err) = spawned {
            tracing::warn!("no segment pool: {err}");
        }
        pool
    }

    fn lock(&self) -> MutexGuard<'_, Shelves> {
        self.shelves.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ready segment of `size` data bytes, if one is on the shelf.
    pub(crate) fn take(&self, size: usize) -> Option<(SegmentName, MmapRaw)> {
        if current_pid() != self.owner_pid {
            // A forked child: the shelves are registered to the parent.
            return None;
        }
        let mut shelves = self.lock();
        if self.auto && !shelves.depth.contains_key(&size) {
            learn(&mut shelves, size);
        }
        let ready = shelves.ready.get_mut(&size)?.pop()?;
        drop(shelves);
        self.wake.notify_one();
        Some((ready.name, ready.map))
    }

    /// Segments of `size` on the shelf now.
    pub(crate) fn ready(&self, size: usize) -> usize {
        if current_pid() != self.owner_pid {
            // A forked child has no shelves (and its copy of the lock may be
            // held by the parent's thread).
            return 0;
        }
        self.lock().ready.get(&size).map_or(0, Vec::len)
    }

    /// Takes back a pooled segment's mapping to unmap (and its name to
    /// unlink, then release with the manager) off the caller's path.
    pub(crate) fn give_back(&self, name: SegmentName, map: MmapRaw, unlink: bool) {
        if current_pid() != self.owner_pid {
            drop(map);
            if unlink && let Err(err) = shm::unlink(&name) {
                tracing::warn!("{}", crate::error_chain::Chain(&err));
            }
            return;
        }
        self.lock().spent.push(Spent { name, map, unlink });
        self.wake.notify_one();
    }

    /// Unlinks what is still on the shelves and stops the filler.
    fn drain(&self) {
        if current_pid() != self.owner_pid {
            return;
        }
        let mut shelves = self.lock();
        shelves.stopped = true;
        for ready in shelves.ready.drain().flat_map(|(_, ready)| ready) {
            let _ = shm::unlink(&ready.name);
        }
        for spent in shelves.spent.drain(..) {
            if spent.unlink {
                let _ = shm::unlink(&spent.name);
            }
        }
        drop(shelves);
        self.wake.notify_all();
    }
}

/// A pool that goes before the process does (its link dropped) unlinks its
/// shelves as one drained at exit does.
impl Drop for Pool {
    fn drop(&mut self) {
        self.drain();
    }
}

/// `auto`: counts a request of `size`, and gives it a shelf on the fourth.
fn learn(shelves: &mut Shelves, size: usize) {
    if shelves.requests.len() >= AUTO_SIZES && !shelves.requests.contains_key(&size) {
        return;
    }
    let seen = shelves.requests.entry(size).or_insert(0);
    *seen += 1;
    let seen = *seen;
    // A size the caller asked for may be any number: checked, not wrapped.
    let fits = size
        .checked_mul(AUTO_DEPTH)
        .and_then(|bytes| bytes.checked_add(shelves.bytes_wanted()))
        .is_some_and(|total| total <= AUTO_BUDGET);
    if seen >= AUTO_AFTER && fits {
        shelves.depth.insert(size, AUTO_DEPTH);
    }
}

/// The filler: reclaims what was given back and tops the shelves up, until
/// the pool or its link goes, or the pool is drained at exit.
fn fill(pool: &Weak<Pool>, link: &Weak<Link>) {
    loop {
        let (Some(pool), Some(link)) = (pool.upgrade(), link.upgrade()) else {
            return;
        };
        let (spent, missing) = {
            let mut shelves = pool.lock();
            if shelves.stopped {
                return;
            }
            if shelves.spent.is_empty() && shelves.missing().is_empty() {
                shelves = pool
                    .wake
                    .wait_timeout(shelves, IDLE_WAIT)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            (std::mem::take(&mut shelves.spent), shelves.missing())
        };
        for spent in spent {
            drop(spent.map);
            if spent.unlink {
                if let Err(err) = shm::unlink(&spent.name) {
                    tracing::warn!("{}", crate::error_chain::Chain(&err));
                }
                // The release its drop left to us, now that it is unlinked.
                beside_forks(|| link.release_unless_busy(spent.name, true));
            }
        }
        'refill: for (size, lack) in missing {
            for _ in 0..lack {
                if !leaves_room(size) {
                    tracing::debug!(
                        "segment pool: not making a {size}-byte segment ahead: /dev/shm would \
                         keep less than 1/{LEAVE_FREE_PARTS} free"
                    );
                    std::thread::sleep(IDLE_WAIT);
                    break 'refill;
                }
                match make(&link, size) {
                    Ok(ready) => {
                        let mut shelves = pool.lock();
                        if shelves.stopped {
                            // Drained while this one was made: nobody unlinks
                            // it but us.
                            let _ = shm::unlink(&ready.name);
                            return;
                        }
                        shelves.ready.entry(size).or_default().push(ready);
                    }
                    Err(err) => {
                        tracing::warn!("segment pool: {}", crate::error_chain::Chain(&err));
                        // Not again at once: /dev/shm may be full.
                        std::thread::sleep(IDLE_WAIT);
                        break 'refill;
                    }
                }
            }
        }
    }
}

/// Whether `/dev/shm` keeps [`LEAVE_FREE_PARTS`] free after a segment of
/// `size` data bytes is made; a file system that cannot be asked is given
/// the benefit of the doubt (creation reserves its pages, so a full one is
/// an error, not a `SIGBUS`).
fn leaves_room(size: usize) -> bool {
    let Ok(fs) = rustix::fs::statvfs(shm::dir::SHM_DIR) else {
        return true;
    };
    let total = fs.f_blocks.saturating_mul(fs.f_frsize);
    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
    let needs = u64::try_from(size)
        .unwrap_or(u64::MAX)
        .saturating_add(HEADER_LEN as u64);
    free.saturating_sub(needs) >= total / LEAVE_FREE_PARTS
}

/// Creates, registers and maps one segment of `size` data bytes, pages in.
fn make(link: &Link, size: usize) -> Result<Ready, crate::Error> {
    let name = next_name(link.prefix())?;
    beside_forks(|| link.register_unless_busy(name))?;
    let map = match shm::create_populated(&name, size) {
        Ok(map) => map,
        Err(err) => {
            let gone = !matches!(err, crate::Error::Exists { .. });
            beside_forks(|| link.release_unless_busy(name, gone));
            return Err(err);
        }
    };
    debug_assert!(map.len() >= HEADER_LEN);
    // SAFETY: the mapping is page-aligned, at least HEADER_LEN bytes,
    // readable and writable, and alive for this call; nobody else knows the
    // name yet (created with O_EXCL).
    let refcount =
        unsafe { Refcount::from_header(std::ptr::NonNull::new_unchecked(map.as_mut_ptr())) };
    refcount.initialize();
    Ok(Ready { name, map })
}

/// Runs `op` (something done with the link's lock, `None` while another
/// thread holds it) inside the fork gate, so that no `fork` copies the lock
/// while this thread holds it; never waits for the lock inside the gate,
/// where a fork would wait for us while we waited for its thread.
fn beside_forks<T>(mut op: impl FnMut() -> Option<T>) -> T {
    loop {
        let inside = fork_gate::enter();
        if let Some(done) = op() {
            return done;
        }
        drop(inside);
        std::thread::sleep(BUSY_WAIT);
    }
}

/// Unlinking the shelves when the process exits.
mod exit {
    use std::sync::{Arc, Mutex, Once, PoisonError, Weak};

    use super::Pool;

    static POOLS: Mutex<Vec<Weak<Pool>>> = Mutex::new(Vec::new());
    static HOOK: Once = Once::new();

    pub(super) fn remember(pool: &Arc<Pool>) {
        POOLS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(pool));
        HOOK.call_once(|| {
            unsafe extern "C" {
                fn atexit(hook: extern "C" fn()) -> i32;
            }
            // SAFETY: `at_exit` is a plain function that never unwinds
            // across the FFI boundary (it catches panics); atexit only
            // stores the pointer, which lives for the whole program.
            if unsafe { atexit(at_exit) } != 0 {
                tracing::warn!("the segment pool will not be unlinked at exit");
            }
        });
    }

    extern "C" fn at_exit() {
        let _ = std::panic::catch_unwind(|| {
            let pools = std::mem::take(&mut *POOLS.lock().unwrap_or_else(PoisonError::into_inner));
            for pool in pools.iter().filter_map(Weak::upgrade) {
                pool.drain();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!("auto".parse(), Ok(PoolSizes::Auto));
        assert_eq!(
            "4KiB:16, 1MiB".parse(),
            Ok(PoolSizes::Fixed(vec![(4096, 16), (1 << 20, DEFAULT_DEPTH)]))
        );
        assert!("".parse::<PoolSizes>().is_err());
        assert!("4KiB:x".parse::<PoolSizes>().is_err());
        assert!("4KiB:1025".parse::<PoolSizes>().is_err(), "too deep");
        assert!("4KiB:18446744073709551615".parse::<PoolSizes>().is_err());
    }

    #[test]
    fn auto_learns_repeated_sizes_within_its_budget() {
        let mut shelves = Shelves::default();
        for _ in 0..AUTO_AFTER {
            learn(&mut shelves, 4096);
        }
        assert_eq!(shelves.depth.get(&4096), Some(&AUTO_DEPTH));
        for _ in 0..AUTO_AFTER {
            learn(&mut shelves, AUTO_BUDGET);
        }
        assert!(!shelves.depth.contains_key(&AUTO_BUDGET), "over the budget");
        for _ in 0..AUTO_AFTER {
            learn(&mut shelves, usize::MAX / 2);
        }
        assert!(!shelves.depth.contains_key(&(usize::MAX / 2)), "no wrap");
        assert_eq!(shelves.missing(), [(4096, AUTO_DEPTH)]);
    }
}
