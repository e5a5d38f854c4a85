//! What the manager tells people: log lines for what it noted (with the fix
//! where there is one), a bounded history of recent events, and the status
//! document it sends when asked ([`libshm_core::status`]), written a piece
//! per round of the event loop ([`Report`]).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Instant;

use libshm_core::manager::{HolderView, Manager, NameState, Note, Severity, UnlinkReason};
use libshm_core::name::SegmentName;
use libshm_core::namespace::Namespace;
use libshm_core::pressure::Pressure;
use libshm_core::status::{self, Detail, write_line};
use libshm_core::storage::Growable;
use libshm_core::time::Timestamp;

/// Events kept for `shmctl why`; about 100 bytes each.
const HISTORY_LEN: usize = 8_192;
/// A status report adds up the sizes of at most this many names per holder,
/// and of this many in all (a size is one `statat`).
const MEASURED_PER_HOLDER: usize = 1_024;
const MEASURED_IN_ALL: usize = 4_096;

/// Work one round of the event loop spends on status reports, all of them
/// together, in lines written: a report of 800 KB (a full history, the
/// 4,096 sizes) is written between other clients' rounds, never built whole
/// in one, however many askers ask over and over.
const WORK_PER_ROUND: u32 = 128;
/// What looking up one size costs, in lines: a `statat` costs a few times
/// what formatting a line does.
const SIZE_COST: u32 = 4;

/// The recent events, oldest first, at most [`HISTORY_LEN`], numbered from
/// the first ever recorded so that a report written in pieces knows where
/// it stopped after older ones were dropped.
#[derive(Default)]
pub(crate) struct History {
    events: VecDeque<(Timestamp, Note)>,
    /// Events dropped from the front: the number of the oldest one kept.
    dropped: u64,
}

impl History {
    pub(crate) fn record(&mut self, now: Timestamp, note: Note) {
        if self.events.len() == HISTORY_LEN {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back((now, note));
    }

    /// The number the next event recorded will have.
    fn recorded(&self) -> u64 {
        self.dropped + self.events.len() as u64
    }

    /// Event number `at`, if it is still kept.
    fn get(&self, at: u64) -> Option<&(Timestamp, Note)> {
        let index = usize::try_from(at.checked_sub(self.dropped)?).ok()?;
        self.events.get(index)
    }
}

/// Who is reporting: what the `manager` line says besides the counters.
pub(crate) struct Identity {
    pub(crate) handle: String,
    pub(crate) started: Instant,
}

/// What is left of a round's work for status reports ([`WORK_PER_ROUND`]),
/// shared by every report in flight.
pub(crate) struct Budget(u32);

impl Budget {
    /// A fresh round's.
    pub(crate) fn per_round() -> Self {
        Self(WORK_PER_ROUND)
    }

    /// Nothing left this round: reports go on in the next.
    pub(crate) fn is_spent(&self) -> bool {
        self.0 == 0
    }

    /// Takes `cost` if that much is left.
    fn spend(&mut self, cost: u32) -> bool {
        let left = self.0.checked_sub(cost);
        self.0 = left.unwrap_or(self.0);
        left.is_some()
    }

    /// Lines the rest of the round pays for.
    fn lines(&self) -> usize {
        self.0 as usize
    }
}

/// A status report being written to one asker, a piece at a time as its
/// socket has room and the round's [`Budget`] allows, so that no round
/// builds more than a slice of it.
///
/// Written across rounds, it is not one snapshot, and says so nowhere in
/// its text (the format is the one-shot document's). A reader can rely on
/// this: the `manager` and `stats` lines are from the moment it was asked
/// for; each `holder` line describes its holder when the line was written,
/// a holder that ended before then is left out and one that started
/// meanwhile may be; its `bytes` add up the sizes of `measured` of its names
/// looked up over the rounds before, so a name taken or let go meanwhile
/// may be in or out of the sum. The `event` lines are those recorded before
/// it was asked for, oldest first, less any dropped from the history (it
/// keeps the latest 8,192) before their piece was written. `name` lines
/// come as [`Manager::names_from`] gives them.
pub(crate) struct Report {
    detail: Detail,
    part: Part,
    /// Sizes it may still look up, of [`MEASURED_IN_ALL`].
    sizes_left: usize,
    /// The number of the first event recorded after it was asked for.
    history_end: u64,
}

/// Where a report goes on from.
enum Part {
    Holders {
        /// The next holder's [`HolderView::cursor`], at least.
        from: u32,
        /// The holder at `from` whose sizes are being looked up.
        measuring: Option<Measuring>,
    },
    History {
        next: u64,
    },
    Names {
        from: u32,
    },
    End,
    Done,
}

/// A holder's sizes, looked up so far.
struct Measuring {
    holder: HolderView,
    bytes: u64,
    measured: usize,
}

impl Report {
    /// Writes the head of a `detail` report to `out` (its counters are
    /// now's) and returns the report, to go on with [`Report::piece`].
    pub(crate) fn begin(
        detail: Detail,
        manager: &Manager<Growable>,
        identity: &Identity,
        history: &History,
        out: &mut Vec<u8>,
    ) -> Self {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = write_head(&mut text, manager, identity);
        out.extend_from_slice(text.as_bytes());
        Self {
            detail,
            part: Part::Holders {
                from: 0,
                measuring: None,
            },
            sizes_left: MEASURED_IN_ALL,
            history_end: history.recorded(),
        }
    }

    /// Appends to `out` the next piece, as much as `budget` pays for.
    /// Returns whether the report is complete (its end line written).
    pub(crate) fn piece<N: Namespace>(
        &mut self,
        budget: &mut Budget,
        manager: &Manager<Growable>,
        namespace: &mut N,
        history: &History,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_piece(&mut text, budget, manager, namespace, history);
        out.extend_from_slice(text.as_bytes());
        matches!(self.part, Part::Done)
    }

    fn write_piece<N: Namespace>(
        &mut self,
        out: &mut String,
        budget: &mut Budget,
        manager: &Manager<Growable>,
        namespace: &mut N,
        history: &History,
    ) -> std::fmt::Result {
        loop {
            match &mut self.part {
                Part::Holders { from, measuring } => {
                    let Some(holder) = manager.holders_from(*from).next() else {
                        self.part = match self.detail {
                            Detail::Summary => Part::End,
                            Detail::History => Part::History { next: 0 },
                            Detail::Names => Part::Names { from: 0 },
                        };
                        continue;
                    };
                    // The same holder as when the last piece stopped, or a
                    // new one (that one ended, its place may be taken).
                    let mut sizes = measuring
                        .take()
                        .filter(|m| {
                            m.holder.cursor() == holder.cursor()
                                && m.holder.conn == holder.conn
                                && m.holder.pid == holder.pid
                        })
                        .unwrap_or(Measuring {
                            holder,
                            bytes: 0,
                            measured: 0,
                        });
                    let allowed = self.sizes_left.min(MEASURED_PER_HOLDER);
                    let mut paid = true;
                    if sizes.measured < allowed {
                        // Those looked up in earlier pieces.
                        let mut to_skip = sizes.measured;
                        manager.names_held_by(&holder, |name, _| {
                            if to_skip > 0 {
                                to_skip -= 1;
                                return true;
                            }
                            if !budget.spend(SIZE_COST) {
                                paid = false;
                                return false;
                            }
                            if let Ok(Some(size)) = namespace.size(name) {
                                sizes.bytes += size;
                            }
                            sizes.measured += 1;
                            sizes.measured < allowed
                        });
                    }
                    if !paid || !budget.spend(1) {
                        *measuring = Some(sizes);
                        return Ok(());
                    }
                    self.sizes_left -= sizes.measured;
                    *from = holder.cursor() + 1;
                    write_holder(out, &holder, sizes.bytes, sizes.measured)?;
                }
                Part::History { next } => {
                    *next = (*next).max(history.dropped);
                    while *next < self.history_end {
                        if !budget.spend(1) {
                            return Ok(());
                        }
                        if let Some((at, note)) = history.get(*next) {
                            write_event(out, *at, note)?;
                        }
                        *next += 1;
                    }
                    self.part = Part::End;
                }
                Part::Names { from } => {
                    if budget.is_spent() {
                        return Ok(());
                    }
                    let mut given = 0;
                    let next = manager.names_from(*from, budget.lines(), |name, state| {
                        given += 1;
                        let _ = write_name(out, name, state);
                    });
                    budget.spend(given);
                    match next {
                        Some(next) => {
                            *from = next;
                            return Ok(());
                        }
                        None => self.part = Part::End,
                    }
                }
                Part::End => {
                    if !budget.spend(1) {
                        return Ok(());
                    }
                    writeln!(out, "{}", status::END)?;
                    self.part = Part::Done;
                }
                Part::Done => return Ok(()),
            }
        }
    }
}

/// The `manager` and `stats` lines, after the header.
fn write_head(
    out: &mut String,
    manager: &Manager<Growable>,
    identity: &Identity,
) -> std::fmt::Result {
    writeln!(out, "{}", status::HEADER)?;
    write_line(
        out,
        "manager",
        &[
            ("pid", &std::process::id()),
            ("handle", &identity.handle),
            ("uptime_ms", &identity.started.elapsed().as_millis()),
            ("version", &env!("CARGO_PKG_VERSION")),
            ("names", &manager.name_count()),
            // Not counting the asker's own connection.
            ("connections", &manager.connection_count().saturating_sub(1)),
            ("holders", &manager.holder_count()),
            ("closing", &manager.is_closing()),
        ],
    )?;
    let s = manager.stats();
    write_line(
        out,
        "stats",
        &[
            ("registrations", &s.registrations),
            ("refused", &s.refused),
            ("releases", &s.releases),
            ("stray_releases", &s.stray_releases),
            ("connections", &s.connections),
            ("rejected", &s.rejected),
            ("closed_for_cause", &s.closed_for_cause),
            ("holders_exited", &s.holders_exited),
            ("reaped", &s.reaped),
            ("forgotten", &s.forgotten),
            ("unlinked_at_shutdown", &s.unlinked_at_shutdown),
            ("unlink_failures", &s.unlink_failures),
        ],
    )
}

fn write_holder(
    out: &mut String,
    holder: &HolderView,
    bytes: u64,
    measured: usize,
) -> std::fmt::Result {
    let pid = holder
        .pid
        .map_or_else(|| "-".to_owned(), |pid| pid.to_string());
    write_line(
        out,
        "holder",
        &[
            ("conn", &holder.conn.0),
            ("pid", &pid),
            ("connected", &holder.connected),
            ("names", &holder.names),
            ("bytes", &bytes),
            ("measured", &measured),
        ],
    )
}

fn write_name(out: &mut String, name: &SegmentName, state: NameState) -> std::fmt::Result {
    let state = match state {
        NameState::Held { .. } => "held",
        NameState::Released { .. } => "released",
        NameState::Orphaned { .. } => "orphaned",
        NameState::Unlinking => "unlinking",
    };
    write_line(out, "name", &[("name", name), ("state", &state)])
}

fn write_event(out: &mut String, at: Timestamp, note: &Note) -> std::fmt::Result {
    let t = at.as_millis();
    let line = |out: &mut String, what: &str, rest: &[(&str, &dyn std::fmt::Display)]| {
        let mut fields: Vec<(&str, &dyn std::fmt::Display)> = vec![("t_ms", &t), ("what", &what)];
        fields.extend_from_slice(rest);
        write_line(out, "event", &fields)
    };
    match note {
        Note::Registered { conn, pid, name } => line(
            out,
            "registered",
            &[("name", name), ("conn", &conn.0), ("pid", pid)],
        ),
        Note::Released { conn, pid, name } => line(
            out,
            "released",
            &[("name", name), ("conn", &conn.0), ("pid", pid)],
        ),
        Note::StrayRelease { conn, pid, name } => line(
            out,
            "stray_release",
            &[("name", name), ("conn", &conn.0), ("pid", pid)],
        ),
        Note::ForeignSkipped { conn, pid, name } => line(
            out,
            "foreign_skipped",
            &[("name", name), ("conn", &conn.0), ("pid", pid)],
        ),
        Note::HolderEnded {
            conn,
            pid,
            why,
            holds,
        } => {
            let pid = pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string());
            let why = format!("{why:?}").to_lowercase();
            line(
                out,
                "holder_ended",
                &[
                    ("conn", &conn.0),
                    ("pid", &pid),
                    ("reason", &why),
                    ("names", holds),
                ],
            )
        }
        Note::InTransit {
            name,
            refcount,
            dead,
        } => line(
            out,
            "in_transit",
            &[("name", name), ("refcount", refcount), ("dead", dead)],
        ),
        Note::Orphaned {
            name,
            refcount,
            dead,
        } => line(
            out,
            "orphaned",
            &[("name", name), ("refcount", refcount), ("dead", dead)],
        ),
        Note::StillMapped { name } => line(out, "still_mapped", &[("name", name)]),
        Note::Unlinked { name, reason } => {
            let reason = match reason {
                UnlinkReason::Orphaned => "orphaned",
                UnlinkReason::Shutdown => "shutdown",
            };
            line(out, "unlinked", &[("name", name), ("reason", &reason)])
        }
        Note::Gone { name } => line(out, "gone", &[("name", name)]),
        Note::Vanished {
            name,
            registrations,
        } => line(
            out,
            "vanished",
            &[("name", name), ("registrations", registrations)],
        ),
        Note::Untouchable { name } => line(out, "untouchable", &[("name", name)]),
        Note::Lingering { names } => line(out, "lingering", &[("names", names)]),
        Note::Pressure(Pressure { level, usage }) => {
            let level = format!("{level:?}").to_lowercase();
            line(
                out,
                "pressure",
                &[("percent", &usage.percent()), ("reason", &level)],
            )
        }
    }
}

/// Logs what the manager noted, at the level its severity says.
pub(crate) fn log_note(note: &Note) {
    match note.severity() {
        Severity::Trace => tracing::trace!("{note}"),
        Severity::Debug => tracing::debug!("{note}"),
        Severity::Info => tracing::info!("{note}"),
        Severity::Warn => tracing::warn!("{note}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libshm_core::frame::Frame;
    use libshm_core::manager::{Chore, CloseReason, ConnId, Effects, ManagerConfig, Peer};
    use libshm_core::namespace::{Observed, Unlinked};

    /// Ignores what the manager asks: the report only reads it.
    struct Quiet;

    impl Effects for Quiet {
        fn reply(&mut self, _conn: ConnId, _reply: [u8; 2]) {}
        fn close(&mut self, _conn: ConnId, _reason: CloseReason) {}
        fn chore(&mut self, _chore: Chore) {}
    }

    /// Every name exists, as big as its text is long; counts the lookups.
    #[derive(Default)]
    struct Sizes {
        looked_up: u32,
    }

    impl Namespace for Sizes {
        type Error = std::convert::Infallible;
        fn observe(&mut self, _name: &SegmentName) -> Result<Observed, Self::Error> {
            Ok(Observed::Segment { refcount: 1 })
        }
        fn unlink(&mut self, _name: &SegmentName) -> Result<Unlinked, Self::Error> {
            Ok(Unlinked::Removed)
        }
        fn size(&mut self, name: &SegmentName) -> Result<Option<u64>, Self::Error> {
            self.looked_up += 1;
            Ok(Some(name.to_string().len() as u64))
        }
    }

    fn name(tag: &str, i: usize) -> SegmentName {
        SegmentName::new(format!("/torch_report_{tag}_{i}").as_bytes()).unwrap()
    }

    /// A manager with three connections holding four names each.
    fn manager() -> Manager<Growable> {
        let mut manager = Manager::new(ManagerConfig::default(), Timestamp::ZERO);
        for c in 0..3 {
            let peer = Peer {
                pid: Some(100 + c),
                uid: None,
            };
            let conn = manager.connect(peer, Timestamp::ZERO).unwrap();
            for i in 0..4 {
                let frame = Frame::register(100 + c, name(&format!("c{c}"), i)).encode();
                manager.receive(conn, &frame, Timestamp::ZERO, &mut Quiet);
            }
        }
        manager
    }

    fn history(events: usize, tag: &str) -> History {
        let mut history = History::default();
        for i in 0..events {
            history.record(Timestamp::ZERO, Note::Gone { name: name(tag, i) });
        }
        history
    }

    fn identity() -> Identity {
        Identity {
            handle: "test".to_owned(),
            started: Instant::now(),
        }
    }

    /// The report after its head, written a round at a time with `per_round`
    /// each; checks that no round did more than it pays for.
    fn in_rounds(
        report: &mut Report,
        per_round: u32,
        manager: &Manager<Growable>,
        history: &History,
    ) -> String {
        let mut sizes = Sizes::default();
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let (before, looked_up) = (out.len(), sizes.looked_up);
            let done = report.piece(
                &mut Budget(per_round),
                manager,
                &mut sizes,
                history,
                &mut out,
            );
            let lines = out[before..].iter().filter(|&&b| b == b'\n').count() as u32;
            let work = lines + (sizes.looked_up - looked_up) * SIZE_COST;
            assert!(work <= per_round, "a round did {work} of {per_round}");
            if done {
                return String::from_utf8(out).unwrap();
            }
        }
        panic!("the report never ended");
    }

    #[test]
    fn a_report_written_in_small_pieces_is_the_report_written_whole() {
        let manager = manager();
        let history = history(50, "ev");
        for detail in [Detail::Summary, Detail::History, Detail::Names] {
            let mut head = Vec::new();
            let mut whole = Report::begin(detail, &manager, &identity(), &history, &mut head);
            let mut pieces = Report::begin(detail, &manager, &identity(), &history, &mut head);
            let whole = in_rounds(&mut whole, u32::MAX, &manager, &history);
            let pieces = in_rounds(&mut pieces, SIZE_COST + 1, &manager, &history);
            assert_eq!(pieces, whole, "{detail:?}");
            assert!(whole.ends_with("\nend\n"));
            let holders: Vec<_> = whole.lines().filter(|l| l.starts_with("holder ")).collect();
            assert_eq!(holders.len(), 3, "{whole}");
            assert!(
                holders
                    .iter()
                    .all(|l| l.contains(" names=4 ") && l.ends_with(" measured=4"))
            );
            let count = |kind: &str| whole.lines().filter(|l| l.starts_with(kind)).count();
            let (events, names) = match detail {
                Detail::Summary => (0, 0),
                Detail::History => (50, 0),
                Detail::Names => (0, 12),
            };
            assert_eq!(
                (count("event "), count("name ")),
                (events, names),
                "{detail:?}"
            );
        }
    }

    #[test]
    fn a_history_report_leaves_out_events_dropped_before_their_piece_and_after_the_ask() {
        let manager = manager();
        let mut history = history(HISTORY_LEN, "old");
        let mut head = Vec::new();
        let mut report = Report::begin(Detail::History, &manager, &identity(), &history, &mut head);
        // The three holders and 100 events.
        let mut out = Vec::new();
        let first = 3 * 4 * SIZE_COST + 3 + 100;
        let mut sizes = Sizes::default();
        assert!(!report.piece(&mut Budget(first), &manager, &mut sizes, &history, &mut out));
        for i in 0..200 {
            history.record(
                Timestamp::ZERO,
                Note::Gone {
                    name: name("new", i),
                },
            );
        }
        let rest = in_rounds(&mut report, 1_000, &manager, &history);
        let text = String::from_utf8(out).unwrap() + &rest;
        let events: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("event "))
            .map(|l| l.rsplit_once("name=").unwrap().1.to_owned())
            .collect();
        let expected: Vec<String> = (0..100)
            .chain(200..HISTORY_LEN)
            .map(|i| name("old", i).to_string())
            .collect();
        assert_eq!(events, expected);
    }
}
