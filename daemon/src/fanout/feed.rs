//! The newest captured frame, for the doors that serve pictures rather than H.264
//! (snapshots, MJPEG, the WebSockets).
//!
//! A watch channel: capture replaces the frame it holds (an `Arc` swap, whether anyone
//! reads or not), each reader sees the newest frame when it looks and skips the ones it
//! was too slow for, and no reader can hold capture up. The frame it holds is on loan
//! from the capture pool, which makes one more frame to make up for it.

use std::sync::Arc;

use focusd_board::frame::PooledFrame;
use tokio::sync::watch;

/// The newest frame; cheap to clone (every clone is the same feed).
#[derive(Clone, Debug)]
pub struct FrameFeed {
    tx: Arc<watch::Sender<Option<Arc<PooledFrame>>>>,
}

impl Default for FrameFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameFeed {
    /// A feed with no frame yet.
    pub fn new() -> FrameFeed {
        FrameFeed {
            tx: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Makes `frame` the newest (the capture thread, once per frame; never blocks).
    pub fn publish(&self, frame: Arc<PooledFrame>) {
        self.tx.send_replace(Some(frame));
    }

    /// The newest frame, if any was captured.
    pub fn latest(&self) -> Option<Arc<PooledFrame>> {
        self.tx.borrow().clone()
    }

    /// A reader that can wait for the next frame ([`watch::Receiver::changed`]).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<PooledFrame>>> {
        self.tx.subscribe()
    }
}
