//! The pipeline's pulse: the capture and encoder threads mark it, `/healthz` and the
//! systemd watchdog ([`super::sd_notify`]) read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::track::{Track, TrackMap};

/// An encoder that has not come back from its work (or from waiting for work while no one
/// wants its track) for this long is stuck, and capture stops counting beats.
pub const ENCODER_STUCK: Duration = Duration::from_secs(1);

/// Whether the pipeline is working: the capture thread counts a *beat* for each picture it
/// takes while every encoder thread keeps up, each encoder thread marks its own progress
/// (a picture encoded or skipped, or a wait while its track is not wanted). An idle
/// daemon, encoding for no one, still beats. Cheap to clone and read from any thread.
#[derive(Clone, Debug)]
pub struct Liveness(Arc<Pulse>);

#[derive(Debug)]
struct Pulse {
    /// Pictures captured while the encoders kept up.
    beats: AtomicU64,
    /// Milliseconds since `started` of the last beat (0 = none yet).
    last_beat_ms: AtomicU64,
    /// Milliseconds since `started` at which each encoder thread last made progress.
    encoders: TrackMap<AtomicU64>,
    /// Attempts to reopen a failed device: the pipeline is alive and working on it.
    recoveries: AtomicU64,
    started: Instant,
}

impl Liveness {
    /// Nothing captured yet; the encoders count as having just started.
    pub fn new() -> Liveness {
        Liveness(Arc::new(Pulse {
            beats: AtomicU64::new(0),
            last_beat_ms: AtomicU64::new(0),
            encoders: TrackMap::default(),
            recoveries: AtomicU64::new(0),
            started: Instant::now(),
        }))
    }

    fn now_ms(&self) -> u64 {
        (self.0.started.elapsed().as_millis() as u64).max(1)
    }

    /// Marks a picture captured now (the capture thread); it is a beat unless an encoder
    /// is stuck.
    pub fn frame_captured(&self) {
        let now = self.now_ms();
        let stuck = ENCODER_STUCK.as_millis() as u64;
        if self
            .0
            .encoders
            .iter()
            .all(|(_, at)| now.saturating_sub(at.load(Ordering::Relaxed)) < stuck)
        {
            self.0.last_beat_ms.store(now, Ordering::Relaxed);
            self.0.beats.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Marks progress of `track`'s encoder thread now.
    pub fn encoder_progressed(&self, track: Track) {
        self.0.encoders[track].store(self.now_ms(), Ordering::Relaxed);
    }

    /// Beats since start (the watchdog's count).
    pub fn beats(&self) -> u64 {
        self.0.beats.load(Ordering::Relaxed)
    }

    /// Marks progress in reopening a failed device: each attempt, and each step of the
    /// wait before the next (called by the thread that retries, so that the watchdog
    /// sees it alive).
    pub fn recovery_attempted(&self) {
        self.0.recoveries.fetch_add(1, Ordering::Relaxed);
    }

    /// Progress marks in reopening failed devices since start.
    pub fn recovery_attempts(&self) -> u64 {
        self.0.recoveries.load(Ordering::Relaxed)
    }

    /// Time since the last beat, `None` before the first.
    pub fn since_last_beat(&self) -> Option<Duration> {
        match self.0.last_beat_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.0
                    .started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }

    /// The encoder thread that has made no progress for longest, and for how long, if
    /// that is [`ENCODER_STUCK`] or more.
    pub fn stuck_encoder(&self) -> Option<(Track, Duration)> {
        let now = self.now_ms();
        self.0
            .encoders
            .iter()
            .map(|(t, at)| (t, now.saturating_sub(at.load(Ordering::Relaxed))))
            .max_by_key(|(_, age)| *age)
            .map(|(t, age)| (t, Duration::from_millis(age)))
            .filter(|(_, age)| *age >= ENCODER_STUCK)
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_beats_while_encoders_keep_up() {
        let pulse = Liveness::new();
        assert_eq!(pulse.since_last_beat(), None);
        pulse.frame_captured();
        assert_eq!(pulse.beats(), 1, "encoders that just started keep up");
        assert!(pulse.stuck_encoder().is_none());
    }

    #[test]
    fn a_stuck_encoder_stops_the_beats_and_is_named() {
        // A pulse started 1.5 s ago whose encoders never marked progress since.
        let pulse = Liveness(Arc::new(Pulse {
            beats: AtomicU64::new(0),
            last_beat_ms: AtomicU64::new(0),
            encoders: TrackMap::default(),
            recoveries: AtomicU64::new(0),
            started: Instant::now() - ENCODER_STUCK - Duration::from_millis(500),
        }));
        pulse.encoder_progressed(Track::Context);
        pulse.frame_captured();
        assert_eq!(pulse.beats(), 0, "the source encoder is stuck");
        let (track, age) = pulse.stuck_encoder().expect("one is stuck");
        assert_eq!(track, Track::Source);
        assert!(age >= ENCODER_STUCK, "{age:?}");
        pulse.encoder_progressed(Track::Source);
        pulse.frame_captured();
        assert_eq!(pulse.beats(), 1, "it came back");
    }
}
