//! When the manager polls without sleeping.
//!
//! A client that waits for each `OK` (PyTorch's) sends its next frame within
//! microseconds of the last reply. A manager that is still awake then answers
//! without a wake-up on either side: no interrupt to rouse its own CPU, and a
//! reply that lands before the client's thread has gone to sleep. On a
//! virtual machine a wake-up costs tens of microseconds, more than the
//! manager's work. But polling burns a CPU the clients may need, so it pays
//! only when frames do come that fast and nobody else wants the CPU.
//!
//! The policy is halt-polling's: after a round with events, poll for up to a
//! window; a frame that arrives inside it doubles the window (up to the
//! maximum), a window that runs out halves it, and a window that ran out at
//! its minimum rests the spinning for a while. Each poll yields the CPU
//! first; a yield that takes long means another task ran on this CPU, so the
//! machine is busy, and spinning rests for longer.

use std::time::{Duration, Instant};

/// Smallest window; below it spinning rests.
const MIN_WINDOW: Duration = Duration::from_micros(5);
/// A yield this long means another task ran in between.
const CONTENDED_YIELD: Duration = Duration::from_micros(50);
/// Rest after a window that ran out at its minimum: frames are not coming
/// fast enough for spinning to pay.
const FUTILE_REST: Duration = Duration::from_millis(20);
/// Rest after a contended yield: the CPUs are busy.
const CONTENDED_REST: Duration = Duration::from_millis(500);

/// The spinning policy's state.
#[derive(Debug)]
pub(crate) struct Spinner {
    max: Duration,
    window: Duration,
    last_event: Option<Instant>,
    rest_until: Option<Instant>,
    /// Whether the last round polled without sleeping.
    was_spinning: bool,
}

impl Spinner {
    /// Spins for at most `max` after events; zero never spins.
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            max,
            window: max,
            last_event: None,
            rest_until: None,
            was_spinning: false,
        }
    }

    /// Whether this round should poll without sleeping; call once per
    /// round, before polling.
    pub(crate) fn spin_now(&mut self, now: Instant) -> bool {
        let spinning = !self.max.is_zero()
            && self.rest_until.is_none_or(|until| now >= until)
            && self
                .last_event
                .is_some_and(|at| now.saturating_duration_since(at) < self.window);
        if self.was_spinning && !spinning && self.rest_until.is_none_or(|until| now >= until) {
            self.ran_out(now);
        }
        self.was_spinning = spinning;
        spinning
    }

    /// The round's poll found events.
    pub(crate) fn events(&mut self, now: Instant) {
        if self.was_spinning {
            // Caught awake: spinning paid.
            self.window = (self.window * 2).min(self.max);
        }
        self.last_event = Some(now);
    }

    /// A yield before a spinning poll took `took`.
    pub(crate) fn yielded(&mut self, took: Duration, now: Instant) {
        if took >= CONTENDED_YIELD {
            self.rest(now + CONTENDED_REST);
        }
    }

    fn ran_out(&mut self, now: Instant) {
        if self.window <= MIN_WINDOW {
            self.window = self.max;
            self.rest(now + FUTILE_REST);
        } else {
            self.window = (self.window / 2).max(MIN_WINDOW);
        }
    }

    fn rest(&mut self, until: Instant) {
        self.rest_until = Some(until);
        self.was_spinning = false;
        self.last_event = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(80);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn spins_after_events_and_doubles_its_window_when_frames_come_in_time() {
        let t0 = Instant::now();
        let mut s = Spinner::new(MAX);
        assert!(!s.spin_now(t0), "nothing happened yet");
        s.events(t0);
        assert!(s.spin_now(t0 + us(10)));
        s.events(t0 + us(10));
        assert!(s.spin_now(t0 + us(60)), "window still {:?}", s.window);
        assert!(!s.spin_now(t0 + us(200)), "ran out");
        assert_eq!(s.window, us(40), "halved");
    }

    #[test]
    fn a_window_that_keeps_running_out_rests_the_spinning() {
        let t0 = Instant::now();
        let mut s = Spinner::new(MAX);
        let mut t = t0;
        let mut rounds = 0;
        while s.rest_until.is_none() {
            s.events(t);
            assert!(s.spin_now(t + us(1)));
            t += us(1_000);
            assert!(!s.spin_now(t));
            rounds += 1;
            assert!(rounds <= 5, "80, 40, 20, 10, 5 us, then rest");
        }
        s.events(t);
        assert!(!s.spin_now(t + us(1)), "resting");
        s.events(t + FUTILE_REST);
        assert!(s.spin_now(t + FUTILE_REST + us(1)), "back after the rest");
    }

    #[test]
    fn a_contended_yield_rests_the_spinning_for_long() {
        let t0 = Instant::now();
        let mut s = Spinner::new(MAX);
        s.events(t0);
        assert!(s.spin_now(t0));
        s.yielded(us(300), t0 + us(300));
        s.events(t0 + us(301));
        assert!(!s.spin_now(t0 + us(302)));
        assert!(!s.spin_now(t0 + CONTENDED_REST));
        s.events(t0 + CONTENDED_REST + us(400));
        assert!(s.spin_now(t0 + CONTENDED_REST + us(401)));
    }

    #[test]
    fn zero_never_spins() {
        let t0 = Instant::now();
        let mut s = Spinner::new(Duration::ZERO);
        s.events(t0);
        assert!(!s.spin_now(t0));
    }
}
