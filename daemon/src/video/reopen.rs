//! Reopening a device that failed (the camera, an encoder), on the thread that uses it.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::service::liveness::Liveness;

/// The first wait before reopening a failed device.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
const LAST_WAIT: Duration = Duration::from_secs(5);
/// How often a wait marks the pulse and looks for shutdown.
const STEP: Duration = Duration::from_millis(50);

/// Paces the attempts to reopen a failed device: waits that grow as [`Backoff`]'s do
/// (jittered, from 100 ms doubling to 5 s), each cut short by shutdown and marking the
/// pulse as it goes, so that the watchdog sees a thread working on its device as alive.
pub(super) struct Reopening {
    backoff: Backoff,
    /// Marked at each step of a wait and at each attempt.
    liveness: Liveness,
}

impl Reopening {
    pub(super) fn new(liveness: Liveness) -> Reopening {
        Reopening {
            backoff: Backoff::new(FIRST_WAIT, LAST_WAIT),
            liveness,
        }
    }

    /// Waits before the next attempt and counts it; `false` when shutdown came first.
    pub(super) fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let end = Instant::now() + self.backoff.next(getrandom::u64().unwrap_or(0));
        loop {
            if shutdown.is_cancelled() {
                return false;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.liveness.recovery_attempted();
            std::thread::sleep(STEP.min(left));
        }
        self.liveness.recovery_attempted();
        true
    }

    /// The device works again: the next failure starts from the shortest wait.
    pub(super) fn reset(&mut self) {
        self.backoff.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_mark_the_pulse_and_end_at_shutdown() {
        let liveness = Liveness::new();
        let mut reopening = Reopening::new(liveness.clone());
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        assert!(reopening.wait(&shutdown));
        let first = started.elapsed();
        assert!(first >= FIRST_WAIT / 2, "{first:?}");
        assert!(liveness.recovery_attempts() >= 2, "marked while waiting");
        let started = Instant::now();
        assert!(reopening.wait(&shutdown));
        assert!(started.elapsed() >= FIRST_WAIT, "the second wait is longer");
        reopening.reset();
        shutdown.cancel();
        let started = Instant::now();
        assert!(!reopening.wait(&shutdown), "shutdown ends the wait");
        assert!(started.elapsed() < FIRST_WAIT / 2);
    }
}
