//! Each track's encoded frames, for the doors that take H.264 beside the WebRTC hub (the
//! RTSP server): the same access units the viewers get, no second encoding.
//!
//! A broadcast channel per track: an encoder sends only while someone listens, and a
//! listener too slow for [`TAP_DEPTH`] frames loses the oldest ones (it is told how many,
//! and waits for a keyframe before it goes on).

use tokio::sync::broadcast;

use crate::track::{EncodedFrame, Track, TrackMap};

/// Frames a listener may fall behind before it loses some.
pub const TAP_DEPTH: usize = 32;

/// Both tracks' taps; cheap to clone (every clone is the same taps).
#[derive(Clone, Debug)]
pub struct EncodedTaps(TrackMap<broadcast::Sender<EncodedFrame>>);

impl Default for EncodedTaps {
    fn default() -> Self {
        Self::new()
    }
}

impl EncodedTaps {
    pub fn new() -> EncodedTaps {
        EncodedTaps(TrackMap::from_fn(|_| broadcast::Sender::new(TAP_DEPTH)))
    }

    /// Hands `frame` to its track's listeners, if it has any (the encoder thread; never
    /// blocks).
    pub fn send(&self, frame: &EncodedFrame) {
        let tx = &self.0[frame.track];
        if tx.receiver_count() > 0 {
            // Only fails when the last listener left meanwhile: nothing to do.
            let _ = tx.send(frame.clone());
        }
    }

    /// A listener to `track`'s frames from now on.
    pub fn subscribe(&self, track: Track) -> broadcast::Receiver<EncodedFrame> {
        self.0[track].subscribe()
    }
}
