//! The two video tracks every viewer gets.

use std::sync::Arc;
use std::time::Instant;

/// Which track: the order is the order of video m-lines in an offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Track {
    /// Low-res full frame, always on.
    Context = 0,
    /// High-res frame shaped by the mode.
    Source = 1,
}

impl Track {
    pub const ALL: [Track; 2] = [Track::Context, Track::Source];

    /// The track id viewers see (`MediaStreamTrack.id` / `a=msid`).
    pub fn name(self) -> &'static str {
        match self {
            Track::Context => "context",
            Track::Source => "source",
        }
    }
}

/// One encoded access unit, shared by every viewer it is sent to.
#[derive(Clone, Debug)]
pub struct EncodedFrame {
    pub track: Track,
    /// H.264 Annex B.
    pub data: Arc<[u8]>,
    pub keyframe: bool,
    /// Capture time: RTP timestamp base and latency accounting.
    pub captured_at: Instant,
}
