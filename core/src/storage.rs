//! Where a manager keeps its tables: fixed capacity without a heap, or growable
//! with one.
//!
//! An embedded runtime picks [`Fixed`] and knows its worst case at compile time;
//! a full table is a refused registration, never a panic. The `shm-manager`
//! daemon picks [`Growable`] (feature `alloc`), sized for a million live names:
//! each name is stored once, in a slab, and everything else refers to it by a
//! `u32` id, so memory follows the live registrations and returns when they end.
//!
//! The tables are small traits rather than concrete maps so that the manager's
//! logic is written once; each trait names only the operations it needs, with
//! the cost it promises.

use crate::manager::{ConnId, Connection, Holder, HolderKey, NameRecord, PidEntry};
use crate::name::SegmentName;

/// A map with the few operations the manager needs for its small tables
/// (connections, holders by key, watched pids).
pub trait Table<K, V>: Default {
    /// Looks a key up.
    fn get(&self, key: &K) -> Option<&V>;
    /// Looks a key up for changing its value.
    fn get_mut(&mut self, key: &K) -> Option<&mut V>;
    /// Inserts or replaces. A full table hands the pair back.
    fn insert(&mut self, key: K, value: V) -> Result<(), (K, V)>;
    /// Removes a key.
    fn remove(&mut self, key: &K) -> Option<V>;
    /// Keeps the entries for which `keep` returns true. Visits every entry.
    fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool);
    /// Removes the run of keys that starts at `first` and goes on while
    /// `within` holds (in key order). Ordered tables visit only that run;
    /// the default visits every entry.
    fn remove_run(&mut self, first: &K, within: impl Fn(&K) -> bool) {
        let _ = first;
        self.retain(|key, _| !within(key));
    }
    /// Number of entries.
    fn len(&self) -> usize;
    /// Whether the table is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Values under stable `u32` ids, reused after removal.
pub trait Slab<T>: Default {
    /// Stores `value` and returns its id; a full slab hands it back.
    fn insert(&mut self, value: T) -> Result<u32, T>;
    /// The value under `id`.
    fn get(&self, id: u32) -> Option<&T>;
    /// The value under `id`, for changing it.
    fn get_mut(&mut self, id: u32) -> Option<&mut T>;
    /// Removes the value under `id`; its id may be handed out again.
    fn remove(&mut self, id: u32) -> Option<T>;
    /// Values stored.
    fn len(&self) -> usize;
    /// Whether nothing is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One past the highest id that may be in use, for walking every id.
    fn id_bound(&self) -> u32;
}

/// Finds a name's id. The names themselves live in the slab; an index may
/// store only ids and look names up through `name_of`.
pub trait NameIndex: Default {
    /// The id stored for `name`.
    fn find<'a>(&self, name: &SegmentName, name_of: impl Fn(u32) -> &'a SegmentName)
    -> Option<u32>;
    /// Records that `name` has `id`. The caller checked it was absent.
    fn insert<'a>(
        &mut self,
        name: &SegmentName,
        id: u32,
        name_of: impl Fn(u32) -> &'a SegmentName,
    ) -> Result<(), TableFull>;
    /// Forgets `name` (whose id `name_of` still resolves), shrinking the
    /// index once it is mostly empty.
    fn remove<'a>(&mut self, name: &SegmentName, name_of: impl Fn(u32) -> &'a SegmentName);
    /// An empty index whose hashing depends on `seed` (where it hashes), so
    /// that clients cannot aim names at one bucket.
    fn seeded(_seed: u64) -> Self {
        Self::default()
    }
}

/// Registration counts per (holder, name), by ids.
pub trait HoldTable: Default {
    /// The count for `holder` and `name`, for changing it.
    fn get_mut(&mut self, holder: u32, name: u32) -> Option<&mut u32>;
    /// Whether `holder` holds `name`.
    fn contains(&self, holder: u32, name: u32) -> bool;
    /// Adds a hold; a full table refuses.
    fn insert(&mut self, holder: u32, name: u32, count: u32) -> Result<(), TableFull>;
    /// Removes a hold.
    fn remove(&mut self, holder: u32, name: u32) -> Option<u32>;
    /// Calls `each(name, count)` for `holder`'s holds until it returns false.
    fn for_each_of(&self, holder: u32, each: impl FnMut(u32, u32) -> bool);
    /// Removes up to `max` holds of `holder`, calling `each(name, count)` for
    /// each, in time proportional to what it removes (growable storage).
    /// Returns how many it removed.
    fn take_of(&mut self, holder: u32, max: usize, each: impl FnMut(u32, u32)) -> usize;
    /// Holds stored.
    fn len(&self) -> usize;
    /// Whether no hold is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Deadlines, at most one per name, by tick.
pub trait Timers: Default {
    /// Moves `id`'s deadline from `old` to `new` (either may be [`NO_TICK`]).
    fn reschedule(&mut self, id: u32, old: u32, new: u32) -> Result<(), TableFull>;
    /// Removes and returns one deadline at or before `now` (earliest first,
    /// growable storage), as `(tick, id)`.
    fn pop_due(&mut self, now: u32) -> Option<(u32, u32)>;
    /// The earliest deadline.
    fn next(&self) -> Option<u32>;
    /// Deadlines stored.
    fn len(&self) -> usize;
    /// Whether no deadline is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A fixed-capacity table had no room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

/// "No deadline" in [`Timers`].
pub const NO_TICK: u32 = 0;

/// Every table a manager keeps.
pub trait Storage {
    /// Every name the manager knows, by id.
    type Names: Slab<NameRecord>;
    /// Name to id.
    type Index: NameIndex;
    /// Registration counts per (holder, name).
    type Holds: HoldTable;
    /// Holders (a process on a connection) by id.
    type Holders: Slab<Holder>;
    /// Holder ids by (connection, pid).
    type HolderIndex: Table<HolderKey, u32>;
    /// Watched pids, with how many live holders depend on each.
    type Pids: Table<i32, PidEntry>;
    /// Live connections and their half-read frames.
    type Conns: Table<ConnId, Connection>;
    /// When to look at each name next.
    type Timers: Timers;
}

/// Heap-free storage: at most `NAMES` names, holds and deadlines, and `CONNS`
/// connections, holders and watched pids. Both must be powers of two
/// (heapless' index map requires it).
#[derive(Debug)]
pub struct Fixed<const NAMES: usize, const CONNS: usize>;

impl<const NAMES: usize, const CONNS: usize> Storage for Fixed<NAMES, CONNS> {
    type Names = FixedSlab<NameRecord, NAMES>;
    type Index = heapless::index_map::FnvIndexMap<SegmentName, u32, NAMES>;
    type Holds = heapless::index_map::FnvIndexMap<(u32, u32), u32, NAMES>;
    type Holders = FixedSlab<Holder, CONNS>;
    type HolderIndex = heapless::index_map::FnvIndexMap<HolderKey, u32, CONNS>;
    type Pids = heapless::index_map::FnvIndexMap<i32, PidEntry, CONNS>;
    type Conns = heapless::index_map::FnvIndexMap<ConnId, Connection, CONNS>;
    type Timers = heapless::index_map::FnvIndexMap<u32, u32, NAMES>;
}

impl<K, V, const N: usize> Table<K, V> for heapless::index_map::FnvIndexMap<K, V, N>
where
    K: Eq + core::hash::Hash,
{
    fn get(&self, key: &K) -> Option<&V> {
        heapless::IndexMap::get(self, key)
    }
    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        heapless::IndexMap::get_mut(self, key)
    }
    fn insert(&mut self, key: K, value: V) -> Result<(), (K, V)> {
        heapless::IndexMap::insert(self, key, value).map(drop)
    }
    fn remove(&mut self, key: &K) -> Option<V> {
        heapless::IndexMap::swap_remove(self, key)
    }
    fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        heapless::IndexMap::retain(self, keep)
    }
    fn len(&self) -> usize {
        heapless::IndexMap::len(self)
    }
}

/// A slab in a fixed array: slots, and a stack of free ids.
#[derive(Debug)]
pub struct FixedSlab<T, const N: usize> {
    slots: heapless::Vec<Option<T>, N>,
    free: heapless::Vec<u32, N>,
    len: usize,
}

impl<T, const N: usize> Default for FixedSlab<T, N> {
    fn default() -> Self {
        Self {
            slots: heapless::Vec::new(),
            free: heapless::Vec::new(),
            len: 0,
        }
    }
}

impl<T, const N: usize> Slab<T> for FixedSlab<T, N> {
    fn insert(&mut self, value: T) -> Result<u32, T> {
        if let Some(id) = self.free.pop() {
            self.slots[id as usize] = Some(value);
            self.len += 1;
            return Ok(id);
        }
        let Ok(id) = u32::try_from(self.slots.len()) else {
            return Err(value);
        };
        match self.slots.push(Some(value)) {
            Ok(()) => {
                self.len += 1;
                Ok(id)
            }
            Err(Some(value)) => Err(value),
            // push hands back exactly what it was given.
            Err(None) => unreachable!("pushed Some"),
        }
    }
    fn get(&self, id: u32) -> Option<&T> {
        self.slots.get(id as usize)?.as_ref()
    }
    fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.slots.get_mut(id as usize)?.as_mut()
    }
    fn remove(&mut self, id: u32) -> Option<T> {
        let value = self.slots.get_mut(id as usize)?.take()?;
        // Room exists: at most N ids, each freed once.
        let _ = self.free.push(id);
        self.len -= 1;
        Some(value)
    }
    fn len(&self) -> usize {
        self.len
    }
    fn id_bound(&self) -> u32 {
        self.slots.len() as u32
    }
}

impl<const N: usize> NameIndex for heapless::index_map::FnvIndexMap<SegmentName, u32, N> {
    fn find<'a>(
        &self,
        name: &SegmentName,
        _name_of: impl Fn(u32) -> &'a SegmentName,
    ) -> Option<u32> {
        heapless::IndexMap::get(self, name).copied()
    }
    fn insert<'a>(
        &mut self,
        name: &SegmentName,
        id: u32,
        _name_of: impl Fn(u32) -> &'a SegmentName,
    ) -> Result<(), TableFull> {
        heapless::IndexMap::insert(self, *name, id)
            .map(drop)
            .map_err(|_| TableFull)
    }
    fn remove<'a>(&mut self, name: &SegmentName, _name_of: impl Fn(u32) -> &'a SegmentName) {
        heapless::IndexMap::swap_remove(self, name);
    }
}

impl<const N: usize> HoldTable for heapless::index_map::FnvIndexMap<(u32, u32), u32, N> {
    fn get_mut(&mut self, holder: u32, name: u32) -> Option<&mut u32> {
        heapless::IndexMap::get_mut(self, &(holder, name))
    }
    fn contains(&self, holder: u32, name: u32) -> bool {
        heapless::IndexMap::contains_key(self, &(holder, name))
    }
    fn insert(&mut self, holder: u32, name: u32, count: u32) -> Result<(), TableFull> {
        heapless::IndexMap::insert(self, (holder, name), count)
            .map(drop)
            .map_err(|_| TableFull)
    }
    fn remove(&mut self, holder: u32, name: u32) -> Option<u32> {
        heapless::IndexMap::swap_remove(self, &(holder, name))
    }
    fn for_each_of(&self, holder: u32, mut each: impl FnMut(u32, u32) -> bool) {
        for (&(h, name), &count) in self.iter() {
            if h == holder && !each(name, count) {
                return;
            }
        }
    }
    fn take_of(&mut self, holder: u32, max: usize, mut each: impl FnMut(u32, u32)) -> usize {
        let mut taken = 0;
        heapless::IndexMap::retain(self, |&(h, name), count| {
            if h != holder || taken >= max {
                return true;
            }
            taken += 1;
            each(name, *count);
            false
        });
        taken
    }
    fn len(&self) -> usize {
        heapless::IndexMap::len(self)
    }
}

impl<const N: usize> Timers for heapless::index_map::FnvIndexMap<u32, u32, N> {
    fn reschedule(&mut self, id: u32, _old: u32, new: u32) -> Result<(), TableFull> {
        if new == NO_TICK {
            heapless::IndexMap::swap_remove(self, &id);
            return Ok(());
        }
        heapless::IndexMap::insert(self, id, new)
            .map(drop)
            .map_err(|_| TableFull)
    }
    fn pop_due(&mut self, now: u32) -> Option<(u32, u32)> {
        let (&id, &tick) = self
            .iter()
            .filter(|&(_, &tick)| tick <= now)
            .min_by_key(|&(_, &tick)| tick)?;
        heapless::IndexMap::swap_remove(self, &id);
        Some((tick, id))
    }
    fn next(&self) -> Option<u32> {
        self.values().copied().min()
    }
    fn len(&self) -> usize {
        heapless::IndexMap::len(self)
    }
}

#[cfg(feature = "alloc")]
mod growable {
    use super::*;
    use alloc::collections::{BTreeMap, BTreeSet};
    use alloc::vec::Vec;
    use core::hash::BuildHasher;

    /// Heap storage with no fixed limit; memory follows live entries.
    #[derive(Debug)]
    pub struct Growable;

    impl Storage for Growable {
        type Names = ChunkedSlab<NameRecord>;
        type Index = HashIndex;
        type Holds = BTreeMap<(u32, u32), u32>;
        type Holders = ChunkedSlab<Holder>;
        type HolderIndex = BTreeMap<HolderKey, u32>;
        type Pids = BTreeMap<i32, PidEntry>;
        type Conns = BTreeMap<ConnId, Connection>;
        type Timers = BTreeSet<(u32, u32)>;
    }

    impl<K: Ord + Clone, V> Table<K, V> for BTreeMap<K, V> {
        fn get(&self, key: &K) -> Option<&V> {
            BTreeMap::get(self, key)
        }
        fn get_mut(&mut self, key: &K) -> Option<&mut V> {
            BTreeMap::get_mut(self, key)
        }
        fn insert(&mut self, key: K, value: V) -> Result<(), (K, V)> {
            BTreeMap::insert(self, key, value);
            Ok(())
        }
        fn remove(&mut self, key: &K) -> Option<V> {
            BTreeMap::remove(self, key)
        }
        fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
            BTreeMap::retain(self, keep)
        }
        fn remove_run(&mut self, first: &K, within: impl Fn(&K) -> bool) {
            while let Some(key) = self
                .range(first..)
                .next()
                .map(|(key, _)| key.clone())
                .filter(|key| within(key))
            {
                BTreeMap::remove(self, &key);
            }
        }
        fn len(&self) -> usize {
            BTreeMap::len(self)
        }
    }

    /// Ids per chunk of a [`ChunkedSlab`].
    const CHUNK: usize = 4096;

    /// A slab in chunks of 4096 slots. New values go to the lowest chunk
    /// with room, and a chunk whose last value leaves is freed, so memory
    /// follows the live values even when a few long-lived ones remain among
    /// a million gone.
    #[derive(Debug)]
    pub struct ChunkedSlab<T> {
        chunks: Vec<Option<Chunk<T>>>,
        /// Chunks with a free slot (or none allocated), lowest first.
        with_room: BTreeSet<u32>,
        len: usize,
    }

    #[derive(Debug)]
    struct Chunk<T> {
        slots: Vec<Option<T>>,
        /// Free slot numbers within the chunk.
        free: Vec<u16>,
    }

    impl<T> Chunk<T> {
        fn new() -> Self {
            let mut slots = Vec::with_capacity(CHUNK);
            slots.resize_with(CHUNK, || None);
            // Popped from the end: lowest slots first.
            let free = (0..CHUNK as u16).rev().collect();
            Self { slots, free }
        }
    }

    impl<T> Default for ChunkedSlab<T> {
        fn default() -> Self {
            Self {
                chunks: Vec::new(),
                with_room: BTreeSet::new(),
                len: 0,
            }
        }
    }

    impl<T> ChunkedSlab<T> {
        /// Chunks holding memory now.
        pub fn chunks_allocated(&self) -> usize {
            self.chunks.iter().filter(|c| c.is_some()).count()
        }

        fn split(id: u32) -> (usize, usize) {
            (id as usize / CHUNK, id as usize % CHUNK)
        }
    }

    impl<T> Slab<T> for ChunkedSlab<T> {
        fn insert(&mut self, value: T) -> Result<u32, T> {
            let index = match self.with_room.first() {
                Some(&index) => index as usize,
                None => {
                    if (self.chunks.len() + 1) * CHUNK > u32::MAX as usize {
                        return Err(value);
                    }
                    self.chunks.push(None);
                    self.chunks.len() - 1
                }
            };
            let chunk = self.chunks[index].get_or_insert_with(Chunk::new);
            let Some(slot) = chunk.free.pop() else {
                // A chunk in `with_room` always has a free slot.
                return Err(value);
            };
            chunk.slots[usize::from(slot)] = Some(value);
            if chunk.free.is_empty() {
                self.with_room.remove(&(index as u32));
            } else {
                self.with_room.insert(index as u32);
            }
            self.len += 1;
            Ok((index * CHUNK + usize::from(slot)) as u32)
        }
        fn get(&self, id: u32) -> Option<&T> {
            let (index, slot) = Self::split(id);
            self.chunks.get(index)?.as_ref()?.slots[slot].as_ref()
        }
        fn get_mut(&mut self, id: u32) -> Option<&mut T> {
            let (index, slot) = Self::split(id);
            self.chunks.get_mut(index)?.as_mut()?.slots[slot].as_mut()
        }
        fn remove(&mut self, id: u32) -> Option<T> {
            let (index, slot) = Self::split(id);
            let chunk = self.chunks.get_mut(index)?.as_mut()?;
            let value = chunk.slots[slot].take()?;
            chunk.free.push(slot as u16);
            self.len -= 1;
            if chunk.free.len() == CHUNK {
                // Empty: give its memory back.
                self.chunks[index] = None;
                while self.chunks.last().is_some_and(Option::is_none) {
                    self.chunks.pop();
                    self.with_room.remove(&(self.chunks.len() as u32));
                }
                if index < self.chunks.len() {
                    self.with_room.insert(index as u32);
                }
                if self.chunks.is_empty() {
                    *self = Self::default();
                }
            } else {
                self.with_room.insert(index as u32);
            }
            Some(value)
        }
        fn len(&self) -> usize {
            self.len
        }
        fn id_bound(&self) -> u32 {
            (self.chunks.len() * CHUNK) as u32
        }
    }

    /// Name ids in a hash table that stores only the ids (4 bytes and a
    /// control byte per slot) and hashes the names they point at, with a
    /// seed the driver picks so clients cannot aim for collisions.
    #[derive(Debug)]
    pub struct HashIndex {
        table: hashbrown::HashTable<u32>,
        hasher: foldhash::fast::FixedState,
    }

    impl HashIndex {
        /// An empty index whose hashes depend on `seed`.
        pub fn with_seed(seed: u64) -> Self {
            Self {
                table: hashbrown::HashTable::new(),
                hasher: foldhash::fast::FixedState::with_seed(seed),
            }
        }
    }

    impl Default for HashIndex {
        fn default() -> Self {
            Self::with_seed(0x6c69_6273_686d_2d72)
        }
    }

    impl NameIndex for HashIndex {
        fn find<'a>(
            &self,
            name: &SegmentName,
            name_of: impl Fn(u32) -> &'a SegmentName,
        ) -> Option<u32> {
            let hash = self.hasher.hash_one(name);
            self.table.find(hash, |&id| name_of(id) == name).copied()
        }
        fn insert<'a>(
            &mut self,
            name: &SegmentName,
            id: u32,
            name_of: impl Fn(u32) -> &'a SegmentName,
        ) -> Result<(), TableFull> {
            let hasher = self.hasher.clone();
            let hash = hasher.hash_one(name);
            self.table
                .insert_unique(hash, id, |&other| hasher.hash_one(name_of(other)));
            Ok(())
        }
        fn remove<'a>(&mut self, name: &SegmentName, name_of: impl Fn(u32) -> &'a SegmentName) {
            let hasher = self.hasher.clone();
            let hash = hasher.hash_one(name);
            if let Ok(entry) = self.table.find_entry(hash, |&id| name_of(id) == name) {
                entry.remove();
            }
            let (len, capacity) = (self.table.len(), self.table.capacity());
            if len == 0 {
                self.table = hashbrown::HashTable::new();
            } else if capacity > MIN_SHRINK_CAPACITY && len * 8 < capacity && len <= MAX_SHRINK_LEN
            {
                // Amortized: the table shrinks to a quarter full, so this
                // rehash is paid for by the removals that led here. Only
                // once it is small: a rehash is one call, and one of a
                // quarter million names would stall the loop for 25 ms.
                self.table
                    .shrink_to(len * 2, |&id| hasher.hash_one(name_of(id)));
            }
        }
        fn seeded(seed: u64) -> Self {
            Self::with_seed(seed)
        }
    }

    /// Below this many slots an index is not worth shrinking.
    const MIN_SHRINK_CAPACITY: usize = 1024;
    /// Above this many names an index is not rehashed to shrink (a few
    /// milliseconds at most); an empty one is freed whatever its size.
    const MAX_SHRINK_LEN: usize = 32 * 1024;

    impl HoldTable for BTreeMap<(u32, u32), u32> {
        fn get_mut(&mut self, holder: u32, name: u32) -> Option<&mut u32> {
            BTreeMap::get_mut(self, &(holder, name))
        }
        fn contains(&self, holder: u32, name: u32) -> bool {
            BTreeMap::contains_key(self, &(holder, name))
        }
        fn insert(&mut self, holder: u32, name: u32, count: u32) -> Result<(), TableFull> {
            BTreeMap::insert(self, (holder, name), count);
            Ok(())
        }
        fn remove(&mut self, holder: u32, name: u32) -> Option<u32> {
            BTreeMap::remove(self, &(holder, name))
        }
        fn for_each_of(&self, holder: u32, mut each: impl FnMut(u32, u32) -> bool) {
            for (&(_, name), &count) in self.range((holder, 0)..=(holder, u32::MAX)) {
                if !each(name, count) {
                    return;
                }
            }
        }
        fn take_of(&mut self, holder: u32, max: usize, mut each: impl FnMut(u32, u32)) -> usize {
            let mut taken = 0;
            for ((_, name), count) in self
                .extract_if((holder, 0)..=(holder, u32::MAX), |_, _| true)
                .take(max)
            {
                each(name, count);
                taken += 1;
            }
            taken
        }
        fn len(&self) -> usize {
            BTreeMap::len(self)
        }
    }

    impl Timers for BTreeSet<(u32, u32)> {
        fn reschedule(&mut self, id: u32, old: u32, new: u32) -> Result<(), TableFull> {
            if old != NO_TICK {
                self.remove(&(old, id));
            }
            if new != NO_TICK {
                self.insert((new, id));
            }
            Ok(())
        }
        fn pop_due(&mut self, now: u32) -> Option<(u32, u32)> {
            let &(tick, id) = self.first()?;
            if tick > now {
                return None;
            }
            self.pop_first();
            Some((tick, id))
        }
        fn next(&self) -> Option<u32> {
            self.first().map(|&(tick, _)| tick)
        }
        fn len(&self) -> usize {
            BTreeSet::len(self)
        }
    }
}

#[cfg(feature = "alloc")]
pub use growable::{ChunkedSlab, Growable, HashIndex};

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn a_chunked_slab_frees_empty_chunks_and_refills_the_lowest_first() {
        let mut slab: ChunkedSlab<u64> = ChunkedSlab::default();
        let ids: Vec<u32> = (0..10_000u64).map(|v| slab.insert(v).unwrap()).collect();
        assert_eq!(ids[..3], [0, 1, 2]);
        assert_eq!(slab.id_bound(), 3 * 4096);
        // All but one value in the last chunk go.
        let keep = ids[9_999];
        for &id in &ids[..9_999] {
            assert!(slab.remove(id).is_some());
        }
        assert_eq!(slab.len(), 1);
        assert_eq!(slab.get(keep), Some(&9_999));
        assert_eq!(
            slab.chunks_allocated(),
            1,
            "only the chunk with the survivor stays"
        );
        // New values fill the lowest chunk again.
        assert_eq!(slab.insert(7).unwrap(), 0);
        assert!(slab.remove(keep).is_some());
        assert!(slab.remove(0).is_some());
        assert_eq!(slab.id_bound(), 0, "empty: nothing kept");
        assert!(slab.remove(0).is_none() && slab.get(5).is_none());
    }
}
