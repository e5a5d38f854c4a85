//! Asking a manager what it is doing, without disturbing it.
//!
//! A client registers one of two reserved names on a fresh connection. Our
//! manager answers `OK`, then a text document, then closes the connection;
//! PyTorch's manager answers `OK` and nothing more (it takes the name for a
//! segment), which tells the asker it is not ours. Nothing about it touches
//! the registration path: the request is one more reserved name, like the
//! journal's.
//!
//! The document is lines of `<kind> <key>=<value> ...`, values without
//! spaces (segment names never contain one), framed by [`HEADER`] and
//! [`END`] lines. Kinds, in order:
//!
//! - `manager`: `pid`, `handle`, `uptime_ms`, `version`, `names`,
//!   `connections`, `holders`, `closing`;
//! - `stats`: the [`Stats`](crate::manager::Stats) counters by name;
//! - `holder`, one per live holder: `conn`, `pid` (`-` when untrusted),
//!   `connected`, `names`, `bytes`, `measured` (how many of its names the
//!   bytes cover);
//! - `event`, oldest first ([`HISTORY`] only): `t_ms`, `what`, and `name`,
//!   `conn`, `pid`, `refcount`, `dead`, `reason`, `registrations`,
//!   `percent` as the event has them;
//! - `name`, one per name the manager knows ([`NAMES`] only): `name`,
//!   `state` (`held`, `released`: in transit or not yet seen gone,
//!   `orphaned`, `unlinking`). A garbage collector spares these: the
//!   manager still answers for them.

use core::fmt;

use crate::name::SegmentName;

/// Registering this asks for the summary (manager, counters, holders).
pub const SUMMARY_NAME: &str = "/libshm_status_v1";
/// Registering this asks for the summary and the recent history.
pub const HISTORY_NAME: &str = "/libshm_history_v1";
/// Registering this asks for the summary and every name known.
pub const NAMES_NAME: &str = "/libshm_names_v1";
/// [`SUMMARY_NAME`] as a name.
pub const SUMMARY: SegmentName = SegmentName::from_known(SUMMARY_NAME);
/// [`HISTORY_NAME`] as a name.
pub const HISTORY: SegmentName = SegmentName::from_known(HISTORY_NAME);
/// [`NAMES_NAME`] as a name.
pub const NAMES: SegmentName = SegmentName::from_known(NAMES_NAME);
/// The document's first line.
pub const HEADER: &str = "libshm-status v=1";
/// The document's last line.
pub const END: &str = "end";

/// What a status request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Manager, counters and holders.
    Summary,
    /// The summary and the recent history of events.
    History,
    /// The summary and every name known, with its state.
    Names,
}

/// The request `name` makes, if it is one.
pub fn request(name: &SegmentName) -> Option<Detail> {
    if *name == SUMMARY {
        Some(Detail::Summary)
    } else if *name == HISTORY {
        Some(Detail::History)
    } else if *name == NAMES {
        Some(Detail::Names)
    } else {
        None
    }
}

/// Writes one line: `kind`, then each `key=value`, then a newline. A value
/// whose text would contain whitespace has it replaced by `_`.
pub fn write_line(
    out: &mut impl fmt::Write,
    kind: &str,
    fields: &[(&str, &dyn fmt::Display)],
) -> fmt::Result {
    out.write_str(kind)?;
    for (key, value) in fields {
        write!(out, " {key}=")?;
        fmt::Write::write_fmt(&mut NoSpaces(&mut *out), format_args!("{value}"))?;
    }
    out.write_char('\n')
}

/// Splits a line into its kind and `key=value` fields.
pub fn parse_line(line: &str) -> (&str, impl Iterator<Item = (&str, &str)>) {
    let mut words = line.split_ascii_whitespace();
    let kind = words.next().unwrap_or("");
    (kind, words.filter_map(|word| word.split_once('=')))
}

/// A writer that keeps a value one word long.
struct NoSpaces<'w, W>(&'w mut W);

impl<W: fmt::Write> fmt::Write for NoSpaces<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            self.0.write_char(if c.is_whitespace() { '_' } else { c })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    #[test]
    fn reserved_names_are_valid_names_and_recognised() {
        assert_eq!(SegmentName::new(SUMMARY_NAME.as_bytes()), Ok(SUMMARY));
        assert_eq!(SegmentName::new(HISTORY_NAME.as_bytes()), Ok(HISTORY));
        assert_eq!(request(&SUMMARY), Some(Detail::Summary));
        assert_eq!(request(&HISTORY), Some(Detail::History));
        assert_eq!(SegmentName::new(NAMES_NAME.as_bytes()), Ok(NAMES));
        assert_eq!(request(&NAMES), Some(Detail::Names));
        assert_eq!(request(&SegmentName::new(b"/torch_1_2_3").unwrap()), None);
    }

    #[test]
    fn lines_round_trip_and_values_stay_one_word() {
        let mut out = String::new();
        write_line(&mut out, "holder", &[("conn", &3), ("pid", &"a b\tc")]).unwrap();
        assert_eq!(out, "holder conn=3 pid=a_b_c\n");
        let (kind, fields) = parse_line(&out);
        assert_eq!(kind, "holder");
        assert_eq!(
            fields.collect::<Vec<_>>(),
            [("conn", "3"), ("pid", "a_b_c")]
        );
        let (kind, mut fields) = parse_line("");
        assert_eq!(kind, "");
        assert!(fields.next().is_none());
    }
}
