//! Capped exponential backoff with jitter: for the doors that reconnect (MQTT, WHIP) and
//! the supervisor that restarts a task that panicked.

use std::time::Duration;

/// Each wait is drawn from the upper half of the current step, so a fleet that lost its
/// broker or SFU does not come back in lockstep; the step doubles up to a cap.
#[derive(Debug)]
pub struct Backoff {
    /// The first step, where [`Backoff::reset`] starts again.
    min: Duration,
    /// The largest step.
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            step: min,
        }
    }

    /// The next wait, given a random number; the step then doubles up to the cap.
    pub fn next(&mut self, random: u64) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let jitter_ms = random % (half.as_millis() as u64 + 1);
        half + Duration::from_millis(jitter_ms)
    }

    /// After a success: start again from the shortest step.
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_a_cap_with_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(15));
        let mut b = Backoff::new(min, max);
        let lows: Vec<Duration> = (0..10).map(|_| b.next(0)).collect();
        assert_eq!(lows[0], min / 2);
        assert_eq!(lows[1], min);
        assert_eq!(*lows.last().unwrap(), max / 2, "capped");
        let mut b = Backoff::new(min, max);
        let high = b.next(u64::MAX - 1);
        assert!(high >= min / 2 && high <= min, "{high:?}");
        for _ in 0..20 {
            assert!(b.next(getrandom::u64().unwrap()) <= max);
        }
        b.reset();
        assert!(b.next(0) <= min);
    }
}
