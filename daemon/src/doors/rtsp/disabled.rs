//! The RTSP door in a build without GStreamer: it cannot start.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use super::{RtspDoor, RtspError};

pub(super) fn start(
    _door: RtspDoor,
    _shutdown: CancellationToken,
) -> Result<SocketAddr, RtspError> {
    Err(RtspError::NotEnabled)
}
