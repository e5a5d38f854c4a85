//! Time as an argument. State machines never read a clock; drivers pass `now`.

use core::time::Duration;

/// A point on the driver's monotonic clock, in milliseconds since an epoch of
/// the driver's choosing (its start, usually).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's epoch.
    pub const ZERO: Self = Self(0);

    /// A timestamp `millis` after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// A timestamp `since_epoch` after the epoch (a driver's time since its
    /// start, say), saturating far in the future.
    pub fn from_duration(since_epoch: Duration) -> Self {
        Self::ZERO.after(since_epoch)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + duration`, saturating far in the future.
    pub fn after(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(millis))
    }

    /// Time from `self` until `later`; zero if `later` has passed.
    pub fn until(self, later: Self) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }

    /// Rounds up to a multiple of `step` milliseconds, so that many deadlines
    /// set close together wake the driver once.
    pub fn round_up(self, step: u64) -> Self {
        if step == 0 {
            return self;
        }
        Self(self.0.div_ceil(step).saturating_mul(step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t.after(Duration::from_millis(500)).as_millis(), 1_500);
        assert_eq!(t.after(Duration::MAX), Timestamp::from_millis(u64::MAX));
        assert_eq!(t.until(Timestamp::from_millis(400)), Duration::ZERO);
        assert_eq!(
            t.until(Timestamp::from_millis(1_250)),
            Duration::from_millis(250)
        );
        assert_eq!(
            Timestamp::from_millis(1_001).round_up(100).as_millis(),
            1_100
        );
        assert_eq!(
            Timestamp::from_millis(1_000).round_up(100).as_millis(),
            1_000
        );
        assert_eq!(Timestamp::from_millis(7).round_up(0).as_millis(), 7);
        assert_eq!(
            Timestamp::from_duration(Duration::from_micros(2_500)),
            Timestamp::from_millis(2)
        );
    }
}
