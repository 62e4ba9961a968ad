//! The RTSP door: `rtsp://host:8554/source` and `/context`, the encoded H.264 of both
//! tracks as the WebRTC viewers get it (no second encoding), so an NVR records the source
//! and detects on the context. GStreamer's RTSP server (feature `gstreamer`) serves it,
//! fed through an `appsrc` per track; without the feature [`disabled`] stands in.
//!
//! Each path is one shared media: the first client makes the track's encoder run (a
//! [`Demand`] claim) and asks it for a keyframe; later clients join that media; when the
//! last leaves, the claim goes. With access control on, a client gives Basic credentials:
//! any user name, and an access token (either one) as the password
//! (`rtsp://focusd:TOKEN@host:8554/source`). Closed by `/api/streams`, the door answers
//! 503 and ends the media playing (end of stream).

#[cfg(not(feature = "gstreamer"))]
mod disabled;
#[cfg(feature = "gstreamer")]
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::doors::http::auth::Gate;
use crate::fanout::EncodedTaps;
use crate::service::supervisor::Supervisor;
use crate::state::Control;
use crate::video::signals::{Demand, KeyframeRequests};

#[cfg(not(feature = "gstreamer"))]
use disabled as imp;
#[cfg(feature = "gstreamer")]
use server as imp;

/// Why the RTSP server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtspError {
    /// The address cannot be listened on (taken, not ours).
    #[error("RTSP cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    /// GStreamer or its RTSP server cannot be set up.
    #[error("RTSP: {0}")]
    Setup(String),
    /// The build has no GStreamer.
    #[error("RTSP is not enabled in this build (rebuild with --features gstreamer)")]
    NotEnabled,
}

/// What the RTSP door needs from the daemon.
pub struct RtspDoor {
    /// Where to listen (port 0: any free port).
    pub addr: SocketAddr,
    /// Each track's encoded frames.
    pub taps: EncodedTaps,
    /// Claimed while a track has clients, so its encoder runs.
    pub demand: Demand,
    /// Asked when a client starts a track, so it starts from a keyframe.
    pub keyframes: KeyframeRequests,
    /// Who may watch (the HTTP door's tokens).
    pub gate: Arc<Gate>,
    /// Whether the door is open (`/api/streams`): when it closes, new clients are
    /// refused 503 and the media playing end.
    pub control: Arc<Control>,
    /// Runs each media's feeder (restarted if it panics) on `tracker`.
    pub supervisor: Supervisor,
    pub tracker: TaskTracker,
}

impl RtspDoor {
    /// Starts serving until `shutdown`; the address it listens on.
    pub fn start(self, shutdown: CancellationToken) -> Result<SocketAddr, RtspError> {
        imp::start(self, shutdown)
    }
}
