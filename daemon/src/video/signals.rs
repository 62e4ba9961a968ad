//! Signals the video threads share with the rest of the daemon, lock-free: keyframe
//! requests (the WebRTC hub asks, an encoder thread takes) and the pipeline's pulse
//! (the context encoder marks, `/healthz` and the systemd watchdog read).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::video::track::TrackMap;

/// A keyframe request per track, shared by the hub and the encoder threads.
pub type KeyframeRequests = Arc<TrackMap<KeyframeRequest>>;

/// Asks an encoder for a keyframe; many requests before the next frame make one keyframe.
#[derive(Debug, Default)]
pub struct KeyframeRequest(AtomicBool);

impl KeyframeRequest {
    /// Asks for a keyframe on the next frame.
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    /// Whether a keyframe was asked for since the last call; clears the request.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// Whether frames are flowing out of the pipeline: the context track's encoder marks
/// each frame it encodes. Cheap to clone and read from any thread.
#[derive(Clone, Debug)]
pub struct Liveness {
    /// Context frames encoded so far.
    frames: Arc<AtomicU64>,
    /// Milliseconds since `started` at which the last frame was encoded (0 = none yet).
    last_ms: Arc<AtomicU64>,
    /// Attempts to reopen a failed device: the pipeline is alive and working on it.
    recoveries: Arc<AtomicU64>,
    started: Instant,
}

impl Liveness {
    /// Nothing encoded yet.
    pub fn new() -> Liveness {
        Liveness {
            frames: Arc::default(),
            last_ms: Arc::default(),
            recoveries: Arc::default(),
            started: Instant::now(),
        }
    }

    /// Marks a frame encoded now (called by the track that is the pulse).
    pub fn frame_encoded(&self) {
        let ms = (self.started.elapsed().as_millis() as u64).max(1);
        self.last_ms.store(ms, Ordering::Relaxed);
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    /// Frames encoded on the context track since start.
    pub fn frames_encoded(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Marks progress in reopening a failed device: each attempt, and each step of the
    /// wait before the next (called by the thread that retries, so that the watchdog
    /// sees it alive).
    pub fn recovery_attempted(&self) {
        self.recoveries.fetch_add(1, Ordering::Relaxed);
    }

    /// Progress marks in reopening failed devices since start.
    pub fn recovery_attempts(&self) -> u64 {
        self.recoveries.load(Ordering::Relaxed)
    }

    /// Time since the last encoded frame, `None` before the first.
    pub fn since_last_frame(&self) -> Option<Duration> {
        match self.last_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}
