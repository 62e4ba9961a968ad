//! The two video tracks every viewer gets, and a value per track.

use std::ops::{Index, IndexMut};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Which track: the order is the order of video m-lines in an offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Track {
    /// Low-res full frame, always on.
    Context,
    /// High-res frame shaped by the mode.
    Source,
}

impl Track {
    /// Both tracks, in m-line order.
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
    /// Its temporal layer: frames of layer 1 are referenced by no other frame, so a
    /// viewer can be left them out (half the frame rate) without breaking its decoding
    /// (see `focusd_board::encode::EncodedUnit::temporal_layer`).
    pub temporal_layer: u8,
}

/// One `T` per track, indexed by [`Track`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackMap<T> {
    /// The context track's value.
    pub context: T,
    /// The source track's value.
    pub source: T,
}

impl<T> TrackMap<T> {
    /// A map with `f(track)` for each track.
    pub fn from_fn(mut f: impl FnMut(Track) -> T) -> Self {
        TrackMap {
            context: f(Track::Context),
            source: f(Track::Source),
        }
    }

    /// Each track with its value, in m-line order.
    pub fn iter(&self) -> impl Iterator<Item = (Track, &T)> {
        [
            (Track::Context, &self.context),
            (Track::Source, &self.source),
        ]
        .into_iter()
    }

    /// A map of `f` applied to each value.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> TrackMap<U> {
        TrackMap {
            context: f(&self.context),
            source: f(&self.source),
        }
    }
}

impl<T> Index<Track> for TrackMap<T> {
    type Output = T;
    fn index(&self, track: Track) -> &T {
        match track {
            Track::Context => &self.context,
            Track::Source => &self.source,
        }
    }
}

impl<T> IndexMut<Track> for TrackMap<T> {
    fn index_mut(&mut self, track: Track) -> &mut T {
        match track {
            Track::Context => &mut self.context,
            Track::Source => &mut self.source,
        }
    }
}
