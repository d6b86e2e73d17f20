//! Retry timing and rate-limited retry logs.
//!
//! [`Backoff`] is capped exponential backoff with full jitter: the n-th
//! consecutive failure waits a uniformly random time in `[0, min(initial ·
//! 2ⁿ, max)]`. It is reset after progress (any item accepted). No count
//! bounds retries: only time, through `retry.give_up_after` for failures
//! specific to a document (`delivery` has the rule; an outage is retried
//! for as long as it lasts), and on shutdown the app aborts the sink and
//! unacknowledged lines are re-read after restart.
//!
//! [`LogLimiter`] lets one log line through per interval and counts the rest,
//! so a long outage with many batches in flight logs a handful of warnings,
//! not one per request or item.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            ceiling: initial,
        }
    }

    /// The wait before the next attempt; doubles the ceiling for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }

    /// Called after progress: the next failure waits at most `initial` again.
    pub fn reset(&mut self) {
        self.ceiling = self.initial;
    }
}

/// Lets one event through per `interval`; counts the suppressed ones.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            state: Mutex::new(LimiterState {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if this event should be logged, `n` being how many were
    /// suppressed since the last one logged; `None` to stay quiet.
    pub fn check(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match state.last {
            Some(last) if now.duration_since(last) < self.interval => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let initial = Duration::from_millis(10);
        let max = Duration::from_millis(70);
        let mut b = Backoff::new(initial, max);
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(b.ceiling);
            assert!(b.next_delay() <= b.ceiling.max(initial));
        }
        let ms: Vec<u128> = ceilings.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [10, 20, 40, 70, 70, 70]);
        for _ in 0..100 {
            assert!(b.next_delay() <= max);
        }
        b.reset();
        assert!(b.next_delay() <= initial);
        // Jitter: delays are not all equal.
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(1), max).next_delay())
            .collect();
        assert!(delays.len() > 1);
    }

    #[test]
    fn limiter_lets_one_through_per_interval_and_counts_the_rest() {
        let l = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.check(), Some(0));
        assert_eq!(l.check(), None);
        assert_eq!(l.check(), None);
        let l = LogLimiter::new(Duration::ZERO);
        assert_eq!(l.check(), Some(0));
        assert_eq!(l.check(), Some(0));
    }
}
