//! Process ends waiting for their connections to be read. A process's end
//! is acted on only once each connection it used has been read as far as
//! its queue reached when the end was noticed: its last releases wait
//! there, and a name it handed on and released would otherwise count as
//! held by the dead and be reaped in transit. A queue can hold a socket
//! buffer and a whole journal ring (65,536 frames), so it is read a round's
//! worth at a time, everyone else served in between, and the end waits.

use std::collections::{HashMap, VecDeque};

use libshm_core::manager::ConnId;

/// How far a connection has been read, or must be: bytes off its socket and
/// frames out of its journal, each counted since it connected. Both only
/// grow, so the marks on one connection come in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReadPosition {
    pub(crate) socket: u64,
    pub(crate) journal: u64,
}

impl ReadPosition {
    fn is_past(self, mark: ReadPosition) -> bool {
        self.socket >= mark.socket && self.journal >= mark.journal
    }
}

/// The ends noticed and not yet acted on.
#[derive(Default)]
pub(crate) struct PendingEnds {
    /// Each pending pid, with how many of its connections are still to be
    /// read far enough.
    waiting: HashMap<i32, usize>,
    /// Each connection's marks, in order, with the pid waiting on each.
    marks: HashMap<ConnId, VecDeque<(ReadPosition, i32)>>,
    /// Pids read far enough on every connection, to act on in turn: a
    /// journal's thousands of gone senders reach their marks together.
    due: VecDeque<i32>,
}

impl PendingEnds {
    pub(crate) fn is_pending(&self, pid: i32) -> bool {
        self.waiting.contains_key(&pid)
    }

    /// Whether some end waits: for a connection to be read, or its turn.
    pub(crate) fn is_waiting(&self) -> bool {
        !self.marks.is_empty() || !self.due.is_empty()
    }

    /// The next pid whose end is due, if any.
    pub(crate) fn next_due(&mut self) -> Option<i32> {
        let pid = self.due.pop_front()?;
        self.waiting.remove(&pid);
        Some(pid)
    }

    /// Notes `pid`'s end, to be acted on once each of `marks`' connections
    /// has been read to its position. Returns false if it is already
    /// pending, or has nothing to wait for (act on it now).
    pub(crate) fn begin(
        &mut self,
        pid: i32,
        marks: impl IntoIterator<Item = (ConnId, ReadPosition)>,
    ) -> bool {
        if self.is_pending(pid) {
            return false;
        }
        let mut count = 0;
        for (conn, at) in marks {
            self.marks.entry(conn).or_default().push_back((at, pid));
            count += 1;
        }
        if count > 0 {
            self.waiting.insert(pid, count);
        }
        count > 0
    }

    /// The connections some end waits on.
    pub(crate) fn connections(&self) -> Vec<ConnId> {
        self.marks.keys().copied().collect()
    }

    /// How far `conn` must be read for every end waiting on it.
    pub(crate) fn target(&self, conn: ConnId) -> Option<ReadPosition> {
        self.marks.get(&conn)?.back().map(|&(at, _)| at)
    }

    /// `conn` has been read to `read` (`None`: it is closed, and nothing
    /// more of it will be read). The pids whose last wait this ended are
    /// due ([`PendingEnds::next_due`]); they stay pending until taken.
    pub(crate) fn read_to(&mut self, conn: ConnId, read: Option<ReadPosition>) {
        let Some(marks) = self.marks.get_mut(&conn) else {
            return;
        };
        while let Some(&(at, pid)) = marks.front() {
            if read.is_some_and(|read| !read.is_past(at)) {
                break;
            }
            marks.pop_front();
            if let Some(count) = self.waiting.get_mut(&pid) {
                *count -= 1;
                if *count == 0 {
                    self.due.push_back(pid);
                }
            }
        }
        if marks.is_empty() {
            self.marks.remove(&conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(socket: u64, journal: u64) -> ReadPosition {
        ReadPosition { socket, journal }
    }

    #[test]
    fn an_end_is_due_once_every_connection_it_waits_on_is_read_far_enough() {
        let (a, b) = (ConnId(1), ConnId(2));
        let mut ends = PendingEnds::default();
        assert!(ends.begin(7, [(a, at(680, 0)), (b, at(0, 3))]));
        assert!(ends.is_pending(7));
        ends.read_to(a, Some(at(679, 0)));
        ends.read_to(b, Some(at(0, 3)));
        assert_eq!(ends.next_due(), None, "a is one byte short");
        ends.read_to(a, Some(at(680, 0)));
        assert!(ends.is_pending(7), "until taken");
        assert_eq!(ends.next_due(), Some(7));
        assert!(!ends.is_pending(7) && !ends.is_waiting());
    }

    #[test]
    fn both_the_socket_and_the_journal_must_reach_the_mark() {
        let a = ConnId(1);
        let mut ends = PendingEnds::default();
        ends.begin(7, [(a, at(68, 10))]);
        ends.read_to(a, Some(at(1_000, 9)));
        assert_eq!(ends.next_due(), None);
        ends.read_to(a, Some(at(68, 10)));
        assert_eq!(ends.next_due(), Some(7));
    }

    #[test]
    fn marks_on_one_connection_are_reached_in_order() {
        let a = ConnId(1);
        let mut ends = PendingEnds::default();
        ends.begin(7, [(a, at(68, 0))]);
        ends.begin(8, [(a, at(136, 0))]);
        assert_eq!(ends.target(a), Some(at(136, 0)));
        ends.read_to(a, Some(at(100, 0)));
        ends.read_to(a, Some(at(136, 0)));
        assert_eq!(ends.next_due(), Some(7));
        assert_eq!(ends.next_due(), Some(8));
        assert_eq!(ends.next_due(), None);
    }

    #[test]
    fn a_closed_connection_keeps_no_end_waiting() {
        let (a, b) = (ConnId(1), ConnId(2));
        let mut ends = PendingEnds::default();
        ends.begin(7, [(a, at(1 << 20, 0)), (b, at(68, 0))]);
        ends.read_to(a, None);
        assert_eq!(ends.next_due(), None, "b is not read yet");
        ends.read_to(b, None);
        assert_eq!(ends.next_due(), Some(7));
    }

    #[test]
    fn an_end_already_pending_or_with_nothing_to_wait_for_is_not_begun() {
        let a = ConnId(1);
        let mut ends = PendingEnds::default();
        assert!(!ends.begin(7, []), "nothing to wait for");
        assert!(!ends.is_pending(7));
        assert!(ends.begin(8, [(a, at(68, 0))]));
        assert!(!ends.begin(8, [(a, at(136, 0))]), "noticed twice");
        assert_eq!(ends.target(a), Some(at(68, 0)));
    }
}
