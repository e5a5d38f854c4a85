//! When to warn that `/dev/shm` is filling up.
//!
//! A full `/dev/shm` is the most common way PyTorch's shared memory fails
//! (Docker gives containers 64 MB): creators get `ENOSPC`, or `SIGBUS` where
//! nothing reserved the memory. The manager measures usage now and then and
//! this alarm decides whether that is worth a line on stderr: once when usage
//! climbs past 80 % and again past 95 %, repeated at most every five minutes
//! while it stays there, and re-armed only once usage falls back under 75 %,
//! so a level hovering at a threshold does not flood the log.

use core::time::Duration;

use crate::time::Timestamp;

/// Usage of the shared-memory file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in use.
    pub used: u64,
    /// Bytes in all.
    pub total: u64,
}

impl Usage {
    /// Percent used, rounded down; 0 for an empty file system.
    pub fn percent(&self) -> u64 {
        self.used
            .saturating_mul(100)
            .checked_div(self.total)
            .unwrap_or(0)
    }
}

/// How full it is, as far as warnings go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Below the first threshold (or back under the re-arm level).
    Normal,
    /// At or above 80 %.
    High,
    /// At or above 95 %: the next large allocation may fail.
    Critical,
}

/// A warning to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pressure {
    /// The level reached.
    pub level: Level,
    /// What was measured.
    pub usage: Usage,
}

/// Percent at which usage counts as high.
pub const HIGH_PERCENT: u64 = 80;
/// Percent at which usage counts as critical.
pub const CRITICAL_PERCENT: u64 = 95;
/// Percent under which the alarm re-arms.
pub const REARM_PERCENT: u64 = 75;
/// How often the same level is repeated while it lasts.
pub const REPEAT_AFTER: Duration = Duration::from_secs(300);

/// The alarm's memory of what it said.
#[derive(Clone, Copy, Debug)]
pub struct PressureAlarm {
    level: Level,
    warned_at: Option<Timestamp>,
}

impl Default for PressureAlarm {
    fn default() -> Self {
        Self {
            level: Level::Normal,
            warned_at: None,
        }
    }
}

impl PressureAlarm {
    /// Takes a measurement; returns a warning when one is due.
    pub fn update(&mut self, usage: Usage, now: Timestamp) -> Option<Pressure> {
        let percent = usage.percent();
        let measured = if percent >= CRITICAL_PERCENT {
            Level::Critical
        } else if percent >= HIGH_PERCENT {
            Level::High
        } else if percent < REARM_PERCENT {
            Level::Normal
        } else {
            // Between the re-arm level and the first threshold: no change.
            self.level.min(Level::High)
        };
        let climbed = measured > self.level;
        let repeat_due = measured != Level::Normal
            && self
                .warned_at
                .is_some_and(|at| at.after(REPEAT_AFTER) <= now);
        self.level = measured;
        if climbed || repeat_due {
            self.warned_at = Some(now);
            return Some(Pressure {
                level: measured,
                usage,
            });
        }
        None
    }

    /// The level as of the last measurement.
    pub fn level(&self) -> Level {
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::from_millis(s * 1_000)
    }

    fn used(percent: u64) -> Usage {
        Usage {
            used: percent,
            total: 100,
        }
    }

    #[test]
    fn warns_once_per_threshold_and_repeats_only_after_five_minutes() {
        let mut alarm = PressureAlarm::default();
        assert_eq!(alarm.update(used(50), at(0)), None);
        let high = alarm.update(used(81), at(1)).unwrap();
        assert_eq!(high.level, Level::High);
        assert_eq!(alarm.update(used(85), at(2)), None, "still high: quiet");
        assert_eq!(alarm.update(used(78), at(3)), None, "hovering: quiet");
        assert_eq!(alarm.update(used(81), at(4)), None, "not re-armed yet");
        let critical = alarm.update(used(96), at(5)).unwrap();
        assert_eq!(critical.level, Level::Critical);
        assert_eq!(alarm.update(used(97), at(60)), None);
        assert_eq!(
            alarm.update(used(97), at(305)).map(|p| p.level),
            Some(Level::Critical),
            "repeated after five minutes"
        );
        assert_eq!(alarm.update(used(70), at(306)), None);
        assert_eq!(alarm.level(), Level::Normal);
        assert!(alarm.update(used(82), at(307)).is_some(), "re-armed");
    }

    #[test]
    fn an_empty_file_system_is_not_full() {
        let mut alarm = PressureAlarm::default();
        let empty = Usage { used: 0, total: 0 };
        assert_eq!(empty.percent(), 0);
        assert_eq!(alarm.update(empty, at(0)), None);
    }
}
