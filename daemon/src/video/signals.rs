//! Signals the video threads share with the rest of the daemon, lock-free: keyframe
//! requests (the doors ask, an encoder thread takes), the demand for each track
//! (consumers claim it, the encoder threads read it) and the encoders' target bitrates
//! (the delivery policy sets them). The pipeline's pulse is [`crate::service::liveness`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::track::{Track, TrackMap};

/// A keyframe request per track, shared by the consumers (the hub, the relay) and the
/// encoder threads.
pub type KeyframeRequests = Arc<TrackMap<KeyframeRequest>>;

/// Asks an encoder for a keyframe; many requests before the next frame make one keyframe.
///
/// A consumer that must start from a keyframe ([`KeyframeRequest::request`]) always gets
/// one; requests to repair a loss ([`KeyframeRequest::repair`]) are honoured at most once
/// per interval whoever makes them, so that lossy receivers of several doors together
/// cannot turn a track into keyframes.
#[derive(Debug)]
pub struct KeyframeRequest {
    /// A keyframe is wanted on the next frame.
    wanted: AtomicBool,
    /// Time zero of `last_us`.
    epoch: Instant,
    /// When the last keyframe was asked for, µs after `epoch` ([`NEVER`]: not yet).
    last_us: AtomicU64,
}

/// `KeyframeRequest::last_us` before the first request.
const NEVER: u64 = u64::MAX;

impl Default for KeyframeRequest {
    fn default() -> Self {
        KeyframeRequest {
            wanted: AtomicBool::new(false),
            epoch: Instant::now(),
            last_us: AtomicU64::new(NEVER),
        }
    }
}

impl KeyframeRequest {
    /// Asks for a keyframe on the next frame, whatever was asked before (a new receiver
    /// cannot start without one); `now` starts the interval [`Self::repair`] keeps.
    pub fn request(&self, now: Instant) {
        self.last_us.store(self.micros(now), Ordering::Relaxed);
        self.wanted.store(true, Ordering::Relaxed);
    }

    /// Asks for a keyframe to repair a loss: honoured (and `true`) unless one was asked
    /// for less than `interval` before `now`.
    pub fn repair(&self, now: Instant, interval: Duration) -> bool {
        let at = self.micros(now);
        let min_gap = interval.as_micros() as u64;
        let mut last = self.last_us.load(Ordering::Relaxed);
        loop {
            if last != NEVER && at.saturating_sub(last) < min_gap {
                return false;
            }
            // Two doors asking at once: one of them wins the interval.
            match self
                .last_us
                .compare_exchange_weak(last, at, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(current) => last = current,
            }
        }
        self.wanted.store(true, Ordering::Relaxed);
        true
    }

    /// Whether a keyframe was asked for since the last call; clears the request.
    pub fn take(&self) -> bool {
        self.wanted.swap(false, Ordering::Relaxed)
    }

    fn micros(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.epoch).as_micros() as u64).min(NEVER - 1)
    }
}

/// The bitrate each encoder should aim at (kbit/s), set by the delivery policy, read by
/// the encoder threads before each picture. Cheap to clone and read from any thread.
#[derive(Clone, Debug)]
pub struct EncoderTargets(Arc<TrackMap<AtomicU32>>);

impl EncoderTargets {
    /// Starts at the configured bitrates.
    pub fn new(kbps: TrackMap<u32>) -> EncoderTargets {
        EncoderTargets(Arc::new(kbps.map(|k| AtomicU32::new(*k))))
    }

    /// Sets both tracks' targets.
    pub fn set(&self, kbps: TrackMap<u32>) {
        for (t, k) in kbps.iter() {
            self.0[t].store(*k, Ordering::Relaxed);
        }
    }

    /// The target of `track` now.
    pub fn get(&self, track: Track) -> u32 {
        self.0[track].load(Ordering::Relaxed)
    }
}

/// Who wants each track encoded: an encoder with no claim on its track encodes nothing
/// (capture and the ROI detector go on). Cheap to clone and read from any thread.
#[derive(Clone, Debug, Default)]
pub struct Demand(Arc<TrackMap<AtomicUsize>>);

impl Demand {
    /// Nobody wants anything yet.
    pub fn new() -> Demand {
        Demand::default()
    }

    /// Claims `track` until the returned [`Claim`] is dropped.
    pub fn claim(&self, track: Track) -> Claim {
        self.0[track].fetch_add(1, Ordering::Relaxed);
        Claim {
            demand: self.clone(),
            track,
        }
    }

    /// Whether anyone holds a claim on `track`.
    pub fn wanted(&self, track: Track) -> bool {
        self.consumers(track) > 0
    }

    /// How many claims on `track` are held.
    pub fn consumers(&self, track: Track) -> usize {
        self.0[track].load(Ordering::Relaxed)
    }
}

/// One consumer's wish for a track, released when dropped.
#[derive(Debug)]
pub struct Claim {
    demand: Demand,
    track: Track,
}

impl Claim {
    /// The track claimed.
    pub fn track(&self) -> Track {
        self.track
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.demand.0[self.track].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_share_one_interval_and_a_start_always_gets_its_keyframe() {
        let k = KeyframeRequest::default();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let interval = Duration::from_secs(1);
        assert!(!k.take(), "nothing asked yet");
        assert!(k.repair(ms(0), interval), "the first repair is honoured");
        // The other door asks within the interval: the same keyframe serves it.
        assert!(!k.repair(ms(10), interval));
        assert!(k.take() && !k.take(), "one keyframe for both");
        assert!(!k.repair(ms(999), interval));
        assert!(k.repair(ms(1000), interval));
        assert!(k.take());
        // A new receiver gets one at once, and it starts a new interval.
        k.request(ms(1200));
        assert!(k.take());
        assert!(!k.repair(ms(1500), interval));
        assert!(k.repair(ms(2200), interval));
    }

    #[test]
    fn claims_count_consumers_until_dropped() {
        let demand = Demand::new();
        assert!(!demand.wanted(Track::Source));
        let a = demand.claim(Track::Source);
        let b = demand.claim(Track::Source);
        let c = demand.claim(Track::Context);
        assert_eq!(demand.consumers(Track::Source), 2);
        drop(a);
        assert!(demand.wanted(Track::Source));
        drop(b);
        assert!(!demand.wanted(Track::Source));
        assert!(demand.wanted(Track::Context));
        drop(c);
        assert!(!demand.wanted(Track::Context));
    }
}
