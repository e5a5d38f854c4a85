//! Who to pass a closed connection's tie on to. A connection closed for
//! cause has its untrusted holds tied to one live process that used it
//! (`Driver::watch_peer`); when that one ends, they pass to the next of the
//! others the kernel named for it, remembered here past the connection's
//! end.
//!
//! Bounded, and by cost to whoever causes it: one process's closes keep at
//! most [`PER_PROCESS`] of them, its own oldest forgotten first, so a flood
//! of closes from one process costs only its own; past [`IN_ALL`] (which
//! takes 64 live processes flooding) a new close is not remembered, rather
//! than one that closed before it forgotten: forks are free, so no count
//! of processes tells a flood from a family. Every step is a map
//! operation, never a walk over what is remembered.

use std::collections::{BTreeMap, HashMap};

use libshm_core::manager::ConnId;

/// Closed connections remembered per process their holds were tied to at
/// the close.
const PER_PROCESS: usize = 256;
/// Closed connections remembered in all.
const IN_ALL: usize = 16_384;

/// A pid and its start time: one process, not whoever has its pid later.
pub(crate) type Writer = (i32, u64);

struct Entry {
    tied_at_close: i32,
    remembered: u64,
    writers: Vec<Writer>,
}

/// The remembered closed connections, each with the writers to pass its tie
/// on to, the next first.
#[derive(Default)]
pub(crate) struct ClosedTies {
    entries: HashMap<ConnId, Entry>,
    by_process: BTreeMap<(i32, u64), ConnId>,
    per_process: HashMap<i32, usize>,
    remembered: u64,
}

impl ClosedTies {
    /// Remembers `writers` for `conn`, whose holds were tied to
    /// `tied_at_close` when it closed, forgetting that process's oldest if
    /// it has too many, or nothing if all have too many.
    pub(crate) fn remember(&mut self, conn: ConnId, tied_at_close: i32, writers: Vec<Writer>) {
        self.take(conn);
        if self.entries.len() >= IN_ALL && !self.per_process.contains_key(&tied_at_close) {
            tracing::debug!(conn = %conn, "too many closed connections remembered: not passing its tie on");
            return;
        }
        self.remembered += 1;
        let remembered = self.remembered;
        self.by_process.insert((tied_at_close, remembered), conn);
        let count = self.per_process.entry(tied_at_close).or_default();
        *count += 1;
        let over_its_share = *count > PER_PROCESS;
        self.entries.insert(
            conn,
            Entry {
                tied_at_close,
                remembered,
                writers,
            },
        );
        // Its own oldest, also when all are remembered: then it has some.
        let forgotten = (over_its_share || self.entries.len() > IN_ALL)
            .then(|| self.by_process.range((tied_at_close, 0)..).next())
            .flatten()
            .map(|(_, &conn)| conn);
        if let Some(forgotten) = forgotten {
            tracing::debug!(conn = %forgotten, "forgetting who to pass a closed connection's tie on to");
            self.take(forgotten);
        }
    }

    /// Takes what was remembered for `conn`: the process its holds were
    /// tied to at the close, and the writers.
    pub(crate) fn take(&mut self, conn: ConnId) -> Option<(i32, Vec<Writer>)> {
        let entry = self.entries.remove(&conn)?;
        self.by_process
            .remove(&(entry.tied_at_close, entry.remembered));
        if let Some(count) = self.per_process.get_mut(&entry.tied_at_close) {
            *count -= 1;
            if *count == 0 {
                self.per_process.remove(&entry.tied_at_close);
            }
        }
        Some((entry.tied_at_close, entry.writers))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writers(pid: i32) -> Vec<Writer> {
        vec![(pid, 1)]
    }

    #[test]
    fn one_process_flooding_forgets_its_own_oldest() {
        let mut ties = ClosedTies::default();
        ties.remember(ConnId(0), 7, writers(70));
        for conn in 1..=(PER_PROCESS as u64 * 4) {
            ties.remember(ConnId(conn), 8, writers(80));
        }
        assert_eq!(ties.len(), PER_PROCESS + 1);
        assert_eq!(ties.take(ConnId(0)), Some((7, writers(70))));
        let kept = PER_PROCESS as u64 * 3 + 1;
        assert!(
            ties.take(ConnId(kept - 1)).is_none(),
            "an old one of the flood kept"
        );
        assert_eq!(ties.take(ConnId(kept)), Some((8, writers(80))));
    }

    #[test]
    fn past_the_bound_new_closes_are_not_remembered_but_a_known_process_trades_its_own() {
        let mut ties = ClosedTies::default();
        for conn in 0..=(IN_ALL as u64) {
            ties.remember(ConnId(conn), conn as i32, writers(1));
        }
        assert_eq!(ties.len(), IN_ALL);
        assert!(
            ties.take(ConnId(IN_ALL as u64)).is_none(),
            "a new one remembered"
        );
        assert!(ties.take(ConnId(0)).is_some());
        ties.remember(ConnId(0), 0, writers(1));
        ties.remember(ConnId(1_000_000), 1, writers(2));
        assert_eq!(ties.len(), IN_ALL);
        assert!(ties.take(ConnId(1)).is_none(), "its own oldest kept");
        assert_eq!(ties.take(ConnId(1_000_000)), Some((1, writers(2))));
        assert_eq!(ties.per_process.len(), ties.by_process.len());
    }

    #[test]
    fn remembering_again_replaces() {
        let mut ties = ClosedTies::default();
        ties.remember(ConnId(3), 5, writers(1));
        ties.remember(ConnId(3), 5, writers(2));
        assert_eq!(ties.len(), 1);
        assert_eq!(ties.per_process[&5], 1);
        assert_eq!(ties.take(ConnId(3)), Some((5, writers(2))));
        assert!(ties.by_process.is_empty() && ties.per_process.is_empty());
    }
}
