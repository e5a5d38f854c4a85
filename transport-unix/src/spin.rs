//! When the manager polls without sleeping.
//!
//! A client that waits for each `OK` (PyTorch's) sends its next frame soon
//! after the last reply. A manager that is still awake then answers without
//! being woken. On a virtual machine a wake-up costs tens of microseconds,
//! more than the manager's work. But a spinning manager holds a CPU the
//! clients may need, so it pays only when frames do come that fast and nobody
//! else waits for a CPU.
//!
//! The window follows KVM's halt-polling: after a round that answered a
//! client (only an answer predicts a quick next frame), poll for up to a
//! window. A frame caught inside it doubles the window (up to the
//! maximum). A window that runs out is judged when the next frame comes: if
//! it came within the maximum, a longer spin would have caught it and the
//! window goes back to the maximum; if later, spinning would not have paid and
//! the window halves, and once at its minimum spinning rests for a while.
//!
//! Each poll yields the CPU first, so a task queued on this CPU runs at
//! once. That is not enough: the scheduler sees a spinning manager's CPU as
//! busy and may queue a woken client behind a task on the other one. So
//! while spinning, the kernel's CPU pressure is sampled (see `pressure`): if
//! other tasks waited for a CPU for 6 % of the time in two samples in a row,
//! spinning rests, for longer each time in a row (the wait only shows while
//! spinning). Nor may it spin into a CPU quota: a sample in which the
//! quota of the manager's cgroup ran out (see `throttle`) rests spinning at
//! once, as the pressure does after two, since the waits it causes are
//! hidden among the manager's own. Pressure counts only if, in its sample,
//! more tasks were runnable than there are CPUs at some look (every
//! millisecond, see `crowding`): a virtual machine counts the wake-up of an
//! idle CPU as waiting too.

use std::time::{Duration, Instant};

use crate::crowding::Crowding;
use crate::pressure::CpuPressure;
use crate::throttle::CpuThrottling;

/// Smallest window; below it spinning rests.
const MIN_WINDOW: Duration = Duration::from_micros(5);
/// Rest after windows that kept running out: frames are not coming fast
/// enough for spinning to pay.
const FUTILE_REST: Duration = Duration::from_millis(20);
/// How often pressure is sampled while spinning.
const PRESSURE_INTERVAL: Duration = Duration::from_millis(10);
/// How often, while spinning, the manager looks whether more tasks are
/// runnable than there are CPUs.
const CROWDING_INTERVAL: Duration = Duration::from_millis(1);
/// Other tasks waiting for a CPU this share of the time, in this many
/// samples in a row, means the CPUs are busy; one such sample is often a
/// start-up burst. Here PyTorch's client and a spinning manager alone made
/// others wait 0 to 3 % of 10 ms samples; with one core kept busy, 13 to
/// 17 %.
const STALL_LIMIT_PERCENT: u64 = 6;
const STALLED_SAMPLES: u32 = 2;
/// The first rest for pressure; each one in a row doubles it, up to the
/// longest.
const PRESSURE_REST: Duration = Duration::from_millis(500);
const PRESSURE_REST_MAX: Duration = Duration::from_secs(8);

/// What spinning did, for the log at shutdown: whether it paid.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SpinStats {
    /// Answered rounds whose frames came while spinning.
    pub(crate) caught: u64,
    /// Answered rounds whose frames woke the manager.
    pub(crate) woken: u64,
    /// Rests because frames came too late for spinning to pay.
    pub(crate) futile_rests: u64,
    /// Rests because other tasks waited for a CPU.
    pub(crate) pressure_rests: u64,
    /// Rests because the cgroup's CPU quota ran out.
    pub(crate) quota_rests: u64,
    /// Pressure samples over the limit with no more tasks runnable than
    /// CPUs seen: not counted.
    pub(crate) uncrowded_samples: u64,
}

/// The spinning policy's state.
#[derive(Debug)]
pub(crate) struct Spinner {
    max: Duration,
    window: Duration,
    last_event: Option<Instant>,
    rest_until: Option<Instant>,
    /// Whether the last round polled without sleeping.
    was_spinning: bool,
    /// A window ran out and the frame that ends the wait will judge it.
    ran_out: bool,
    pressure: Option<CpuPressure>,
    throttling: Option<CpuThrottling>,
    crowding: Option<Crowding>,
    /// When the manager last looked for crowding, and whether it has seen
    /// any since the last pressure sample.
    crowding_looked: Option<Instant>,
    crowded: bool,
    /// The last pressure sample: when, and the stall total then.
    sampled: Option<(Instant, u64)>,
    /// How many times the cgroup's quota had run out at the last sample.
    throttled: Option<u64>,
    stalled_samples: u32,
    pressure_rest: Duration,
    pub(crate) stats: SpinStats,
}

impl Spinner {
    /// Spins for at most `max` after an answer; zero never spins, and neither
    /// does a manager that cannot tell whether the CPUs are busy.
    pub(crate) fn new(max: Duration) -> Self {
        let pressure = if max.is_zero() {
            None
        } else {
            CpuPressure::open()
        };
        let max = match pressure {
            Some(_) => max,
            None if max.is_zero() => max,
            None => {
                tracing::info!(
                    "the kernel does not report CPU pressure (/proc/pressure/cpu): never spinning"
                );
                Duration::ZERO
            }
        };
        let mut spinner = Self::with_pressure(max, pressure);
        if !spinner.max.is_zero() {
            spinner.throttling = CpuThrottling::open();
            spinner.crowding = Crowding::open();
        }
        spinner
    }

    fn with_pressure(max: Duration, pressure: Option<CpuPressure>) -> Self {
        Self {
            max,
            window: max,
            last_event: None,
            rest_until: None,
            was_spinning: false,
            ran_out: false,
            pressure,
            throttling: None,
            crowding: None,
            crowding_looked: None,
            crowded: false,
            sampled: None,
            throttled: None,
            stalled_samples: 0,
            pressure_rest: PRESSURE_REST,
            stats: SpinStats::default(),
        }
    }

    /// Whether this round should poll without sleeping; call once per
    /// round, before polling.
    pub(crate) fn spin_now(&mut self, now: Instant) -> bool {
        let mut spinning = !self.max.is_zero()
            && self.rest_until.is_none_or(|until| now >= until)
            && self
                .last_event
                .is_some_and(|at| now.saturating_duration_since(at) < self.window);
        if spinning
            && let Some(crowding) = &self.crowding
            && self
                .crowding_looked
                .is_none_or(|at| now >= at + CROWDING_INTERVAL)
        {
            self.crowding_looked = Some(now);
            self.crowded |= crowding.is_crowded().unwrap_or(true);
        }
        if spinning
            && self
                .sampled
                .is_none_or(|(at, _)| now >= at + PRESSURE_INTERVAL)
        {
            if let Some(crowding) = self.crowding.as_mut() {
                crowding.refresh();
            }
            let stalled = self
                .pressure
                .as_mut()
                .and_then(CpuPressure::others_waited_us);
            let throttled = self
                .throttling
                .as_ref()
                .and_then(CpuThrottling::times_throttled);
            if let Some(throttled) = throttled {
                self.throttle_sampled(now, throttled);
            }
            if let Some(stalled) = stalled
                && self.rest_until.is_none_or(|until| now >= until)
            {
                self.pressure_sampled(now, stalled);
            }
            spinning = self.rest_until.is_none_or(|until| now >= until);
        }
        if self.was_spinning && !spinning {
            self.ran_out = true;
        }
        self.was_spinning = spinning;
        spinning
    }

    /// A sample of how often the cgroup's CPU quota ran out, while spinning.
    fn throttle_sampled(&mut self, now: Instant, throttled: u64) {
        if self.throttled.is_some_and(|before| throttled > before) {
            let rest = self.pressure_rest;
            tracing::debug!("the cgroup's CPU quota ran out while spinning: resting {rest:?}");
            self.pressure_rest = (rest * 2).min(PRESSURE_REST_MAX);
            self.rest(now + rest);
            self.stats.quota_rests += 1;
            return;
        }
        self.throttled = Some(throttled);
    }

    /// A pressure sample while spinning: `stalled_us` is the kernel's total,
    /// less this thread's own waits.
    fn pressure_sampled(&mut self, now: Instant, stalled_us: u64) {
        if let Some((at, before)) = self.sampled {
            let elapsed_us = now.saturating_duration_since(at).as_micros();
            let waited_us = u128::from(stalled_us.saturating_sub(before));
            // Without a look at crowding, pressure alone decides.
            let crowded = std::mem::take(&mut self.crowded) || self.crowding.is_none();
            let over = waited_us * 100 >= elapsed_us * u128::from(STALL_LIMIT_PERCENT);
            if over && !crowded {
                self.stats.uncrowded_samples += 1;
            }
            if over && crowded {
                self.stalled_samples += 1;
            } else {
                self.stalled_samples = 0;
                self.pressure_rest = PRESSURE_REST;
            }
            if self.stalled_samples >= STALLED_SAMPLES {
                let rest = self.pressure_rest;
                tracing::debug!(
                    "tasks waited for a CPU {waited_us} of {elapsed_us} us while spinning: resting {rest:?}"
                );
                self.pressure_rest = (rest * 2).min(PRESSURE_REST_MAX);
                self.rest(now + rest);
                self.stats.pressure_rests += 1;
                return;
            }
        }
        self.sampled = Some((now, stalled_us));
    }

    /// The round's poll found events.
    pub(crate) fn events(&mut self, now: Instant) {
        if self.was_spinning {
            // Caught awake: spinning paid.
            self.stats.caught += 1;
            self.window = (self.window * 2).min(self.max);
            self.last_event = Some(now);
            return;
        }
        self.stats.woken += 1;
        if std::mem::take(&mut self.ran_out)
            && let Some(last) = self.last_event
        {
            if now.saturating_duration_since(last) <= self.max {
                self.window = self.max;
            } else if self.window <= MIN_WINDOW {
                self.window = self.max;
                self.rest(now + FUTILE_REST);
                self.stats.futile_rests += 1;
                return;
            } else {
                self.window = (self.window / 2).max(MIN_WINDOW);
            }
        }
        self.last_event = Some(now);
    }

    fn rest(&mut self, until: Instant) {
        self.rest_until = Some(until);
        self.was_spinning = false;
        self.ran_out = false;
        self.last_event = None;
        self.stalled_samples = 0;
        self.crowded = false;
        // The time resting shows no waits caused by spinning: judge the
        // next spin from its own first sample.
        self.sampled = None;
        self.throttled = None;
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
    fn spins_after_events_and_keeps_its_window_while_frames_come_in_time() {
        let t0 = Instant::now();
        let mut s = Spinner::with_pressure(MAX, None);
        assert!(!s.spin_now(t0), "nothing happened yet");
        s.events(t0);
        assert!(s.spin_now(t0 + us(10)));
        s.events(t0 + us(10));
        assert!(s.spin_now(t0 + us(60)), "window still {:?}", s.window);
        assert!(!s.spin_now(t0 + us(200)), "ran out");
        assert_eq!(s.window, MAX, "judged only when the next frame comes");
        s.events(t0 + us(1_200));
        assert_eq!(s.window, MAX / 2, "came later than the maximum: halved");
        assert_eq!((s.stats.caught, s.stats.woken), (1, 2));
    }

    #[test]
    fn a_frame_a_longer_spin_would_have_caught_restores_the_maximum() {
        let t0 = Instant::now();
        let mut s = Spinner::with_pressure(MAX, None);
        s.events(t0);
        assert!(s.spin_now(t0 + us(1)));
        assert!(!s.spin_now(t0 + us(1_000)));
        s.events(t0 + us(1_000));
        assert_eq!(s.window, MAX / 2);
        let t1 = t0 + us(1_000);
        assert!(s.spin_now(t1 + us(1)));
        assert!(!s.spin_now(t1 + us(50)), "the halved window ran out");
        s.events(t1 + us(60));
        assert_eq!(s.window, MAX, "60 us is within the maximum");
    }

    #[test]
    fn a_window_that_keeps_running_out_rests_the_spinning() {
        let t0 = Instant::now();
        let mut s = Spinner::with_pressure(MAX, None);
        let mut t = t0;
        let mut rounds = 0;
        loop {
            s.events(t);
            if s.rest_until.is_some() {
                break;
            }
            assert!(s.spin_now(t + us(1)));
            t += us(1_000);
            assert!(!s.spin_now(t));
            rounds += 1;
            assert!(rounds <= 5, "80, 40, 20, 10, 5 us, then rest");
        }
        assert_eq!(rounds, 5);
        assert_eq!(s.stats.futile_rests, 1);
        assert!(!s.spin_now(t + us(1)), "resting");
        s.events(t + FUTILE_REST);
        assert!(s.spin_now(t + FUTILE_REST + us(1)), "back after the rest");
    }

    #[test]
    fn tasks_waiting_for_a_cpu_rest_the_spinning_longer_each_time_in_a_row() {
        let t0 = Instant::now();
        let mut s = Spinner::with_pressure(MAX, None);
        let step = PRESSURE_INTERVAL;
        let limit = step.as_micros() as u64 * STALL_LIMIT_PERCENT / 100;
        s.pressure_sampled(t0, 1_000);
        s.pressure_sampled(t0 + step, 1_000 + limit - 1);
        assert_eq!(s.stalled_samples, 0, "waits under the limit");
        s.pressure_sampled(t0 + step * 2, 1_000 + limit * 2);
        assert!(s.rest_until.is_none(), "one sample may be a burst");
        s.pressure_sampled(t0 + step * 3, 1_000 + limit * 3);
        let t1 = t0 + step * 3;
        assert_eq!(s.rest_until, Some(t1 + PRESSURE_REST), "two in a row: rest");
        s.events(t1 + us(1));
        assert!(!s.spin_now(t1 + us(2)));

        // The rest's own time is not judged: a first sample, then two more.
        let t2 = t1 + PRESSURE_REST;
        s.pressure_sampled(t2, 50_000);
        s.pressure_sampled(t2 + step, 60_000);
        assert_eq!(
            s.rest_until,
            Some(t1 + PRESSURE_REST),
            "a baseline, one strike"
        );
        s.pressure_sampled(t2 + step * 2, 70_000);
        let t3 = t2 + step * 2;
        assert_eq!(
            s.rest_until,
            Some(t3 + PRESSURE_REST * 2),
            "in a row: doubled"
        );

        assert_eq!(s.stats.pressure_rests, 2);
        let t4 = t3 + PRESSURE_REST * 2;
        s.pressure_sampled(t4, 70_000);
        s.pressure_sampled(t4 + step, 70_000);
        assert_eq!(s.pressure_rest, PRESSURE_REST, "a calm sample starts over");
    }

    #[test]
    fn pressure_counts_only_when_more_tasks_were_runnable_than_cpus() {
        let t0 = Instant::now();
        let step = PRESSURE_INTERVAL;
        let limit = step.as_micros() as u64 * STALL_LIMIT_PERCENT / 100;
        let mut s = Spinner::with_pressure(MAX, None);
        s.crowding = Crowding::open();
        assert!(s.crowding.is_some(), "/proc/loadavg is readable");
        for n in 0..4 {
            s.pressure_sampled(t0 + step * n, 1_000 + limit * 2 * u64::from(n));
        }
        assert!(s.rest_until.is_none(), "a virtual CPU waking up");
        assert_eq!(s.stats.uncrowded_samples, 3);
        s.crowded = true;
        s.pressure_sampled(t0 + step * 4, 1_000 + limit * 8);
        s.crowded = true;
        s.pressure_sampled(t0 + step * 5, 1_000 + limit * 10);
        assert_eq!(
            s.rest_until,
            Some(t0 + step * 5 + PRESSURE_REST),
            "crowded: rest"
        );
    }

    #[test]
    fn a_quota_that_ran_out_while_spinning_rests_the_spinning_at_once() {
        let t0 = Instant::now();
        let mut s = Spinner::with_pressure(MAX, None);
        s.throttle_sampled(t0, 7);
        s.throttle_sampled(t0 + PRESSURE_INTERVAL, 7);
        assert!(s.rest_until.is_none(), "the quota lasted");
        let t1 = t0 + PRESSURE_INTERVAL * 2;
        s.throttle_sampled(t1, 8);
        assert_eq!(s.rest_until, Some(t1 + PRESSURE_REST), "it ran out once");
        let t2 = t1 + PRESSURE_REST;
        s.throttle_sampled(t2, 9);
        assert_eq!(s.rest_until, Some(t1 + PRESSURE_REST), "a baseline first");
        s.throttle_sampled(t2 + PRESSURE_INTERVAL, 10);
        assert_eq!(
            s.rest_until,
            Some(t2 + PRESSURE_INTERVAL + PRESSURE_REST * 2),
            "in a row: doubled"
        );
        assert_eq!(s.stats.quota_rests, 2);
    }

    #[test]
    fn this_machine_spins_only_where_it_can_tell_busy_cpus() {
        let s = Spinner::new(MAX);
        assert_eq!(s.pressure.is_some(), CpuPressure::open().is_some());
        assert_eq!(s.max.is_zero(), s.pressure.is_none());
        assert!(Spinner::new(Duration::ZERO).pressure.is_none());
    }

    #[test]
    fn zero_never_spins() {
        let t0 = Instant::now();
        let mut s = Spinner::with_pressure(Duration::ZERO, None);
        s.events(t0);
        assert!(!s.spin_now(t0));
    }
}
