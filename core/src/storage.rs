//! Where a manager keeps its tables: fixed capacity without a heap, or growable
//! with one.
//!
//! An embedded runtime picks [`Fixed`] and knows its worst case at compile time;
//! a full table is a refused registration, never a panic. The `shm-manager`
//! daemon picks [`Growable`] (feature `alloc`), so its memory follows the
//! registrations that are alive and returns when they end.

use crate::manager::{ConnId, Connection, Hold, NameRecord};
use crate::name::SegmentName;

/// The few map operations a manager needs.
pub trait Table<K, V>: Default {
    /// Looks a key up.
    fn get(&self, key: &K) -> Option<&V>;
    /// Looks a key up for changing its value.
    fn get_mut(&mut self, key: &K) -> Option<&mut V>;
    /// Inserts or replaces. A full table hands the pair back.
    fn insert(&mut self, key: K, value: V) -> Result<(), (K, V)>;
    /// Removes a key.
    fn remove(&mut self, key: &K) -> Option<V>;
    /// Keeps the entries for which `keep` returns true.
    fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool);
    /// Number of entries.
    fn len(&self) -> usize;
    /// Whether the table is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The three tables a manager keeps.
pub trait Storage {
    /// Every name the manager knows, with its holders' state.
    type Names: Table<SegmentName, NameRecord>;
    /// Which connection holds which name, and how many times.
    type Holds: Table<Hold, u32>;
    /// Live connections and their half-read frames.
    type Conns: Table<ConnId, Connection>;
}

/// Heap-free storage: at most `NAMES` names and holds, `CONNS` connections.
/// Both must be powers of two (heapless' index map requires it).
#[derive(Debug)]
pub struct Fixed<const NAMES: usize, const CONNS: usize>;

impl<const NAMES: usize, const CONNS: usize> Storage for Fixed<NAMES, CONNS> {
    type Names = heapless::index_map::FnvIndexMap<SegmentName, NameRecord, NAMES>;
    type Holds = heapless::index_map::FnvIndexMap<Hold, u32, NAMES>;
    type Conns = heapless::index_map::FnvIndexMap<ConnId, Connection, CONNS>;
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

#[cfg(feature = "alloc")]
mod growable {
    use super::*;
    use alloc::collections::BTreeMap;

    /// Heap storage with no fixed limit; memory follows live entries.
    #[derive(Debug)]
    pub struct Growable;

    impl Storage for Growable {
        type Names = BTreeMap<SegmentName, NameRecord>;
        type Holds = BTreeMap<Hold, u32>;
        type Conns = BTreeMap<ConnId, Connection>;
    }

    impl<K: Ord, V> Table<K, V> for BTreeMap<K, V> {
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
        fn len(&self) -> usize {
            BTreeMap::len(self)
        }
    }
}

#[cfg(feature = "alloc")]
pub use growable::Growable;
