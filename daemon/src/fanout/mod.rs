//! Fan-out: how one capture and one encoding per track reach every consumer, none of
//! which can hold up another or the pipeline.
//!
//! ```text
//! capture ─► FrameFeed (newest frame) ─────────────────► picture doors (snapshot, MJPEG, WS)
//! encoder ─► EncodedTaps (broadcast, per track) ───────► RTSP door
//!         └► HubSender ══ hub queue (bounded) ═ [relay] ═► WebRTC hub ─► each viewer
//! ```
//! * [`feed`]: the newest captured frame, swapped in whether anyone reads or not;
//! * [`taps`]: each track's access units for the doors beside the hub; a slow listener
//!   loses the oldest and waits for a keyframe;
//! * the hub queue ([`hub_queue`]): bounded at [`HUB_QUEUE`]; when it is full the encoder
//!   drops the frame and makes the next one a keyframe. The relay door, when configured,
//!   sits on it (frames pass through Janus's RTP on their way). The last step, one access
//!   unit to every viewer with each viewer's own pacing and layers, is the hub's
//!   ([`crate::doors::webrtc::Hub`]).

pub mod feed;
pub mod taps;

pub use feed::FrameFeed;
pub use taps::EncodedTaps;

use tokio::sync::mpsc;

use crate::track::EncodedFrame;

/// Encoded frames waiting for the hub; beyond this the hub is behind and frames are shed.
pub const HUB_QUEUE: usize = 16;

/// The encoders' end of the hub queue.
pub type HubSender = mpsc::Sender<EncodedFrame>;
/// The hub's (or the relay's) end of the hub queue.
pub type HubReceiver = mpsc::Receiver<EncodedFrame>;

/// A new hub queue of [`HUB_QUEUE`] frames.
pub fn hub_queue() -> (HubSender, HubReceiver) {
    mpsc::channel(HUB_QUEUE)
}
