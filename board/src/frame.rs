//! Captured frames, when they were taken, and the pool that recycles them.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::image::{Image, Layout};

/// When a picture was taken. Sources stamp it; encoders carry it through to the access
/// unit made from the picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureTime {
    /// Monotonic time of capture: drives RTP timestamps and latency accounting.
    pub at: Instant,
    /// Wall-clock time of capture in ms since the Unix epoch (what the test stamp encodes).
    pub wallclock_ms: u64,
}

impl CaptureTime {
    /// The current time, as a capture time.
    pub fn now() -> Self {
        let wallclock_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self {
            at: Instant::now(),
            wallclock_ms,
        }
    }
}

/// One captured picture: the main image, its low-resolution copy and when it was taken.
///
/// Both images are in the layouts the pool was made with: the source's own (its format,
/// strides and padding), so a camera buffer is copied in whole and an encoder that takes
/// the camera's format gets it unconverted.
#[derive(Debug)]
pub struct Frame {
    /// Capture sequence number, counting from 0 for each source.
    pub seq: u64,
    /// Monotonic capture time: drives RTP timestamps and latency accounting.
    pub captured_at: Instant,
    /// Capture wall-clock time in ms since the Unix epoch (what the test stamp encodes).
    pub wallclock_ms: u64,
    /// Full-resolution image, as captured (or scaled to the configured size).
    pub main: Image,
    /// Low-resolution image with the main image's aspect ratio (the context track): from
    /// the source itself when it delivers one (an ISP's second stream), else scaled.
    pub lores: Image,
}

/// A fixed-size pool of [`Frame`]s. A frame goes back to the pool when the last
/// [`PooledFrame`] handle to it drops, so capture allocates only until the pool is warm.
#[derive(Clone, Debug)]
pub struct FramePool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    free: Mutex<Vec<Frame>>,
    main: Layout,
    lores: Layout,
}

impl FramePool {
    /// A pool of frames with images in these layouts (checked by [`Layout::check`]).
    pub fn new(main: Layout, lores: Layout) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                free: Mutex::new(Vec::new()),
                main,
                lores,
            }),
        }
    }

    /// A frame from the pool, or a new one when every pooled frame is still in use.
    pub fn take(&self) -> PooledFrame {
        let recycled = self
            .inner
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let frame = recycled.unwrap_or_else(|| Frame {
            seq: 0,
            captured_at: Instant::now(),
            wallclock_ms: 0,
            main: Image::new(self.inner.main),
            lores: Image::new(self.inner.lores),
        });
        PooledFrame {
            frame: Some(frame),
            pool: self.inner.clone(),
        }
    }

    /// Layout of every frame's main image.
    pub fn main_layout(&self) -> Layout {
        self.inner.main
    }

    /// Layout of every frame's lores image.
    pub fn lores_layout(&self) -> Layout {
        self.inner.lores
    }

    /// How many frames are waiting in the pool (for tests and metrics).
    pub fn idle(&self) -> usize {
        self.inner
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

/// A [`Frame`] on loan from a [`FramePool`]; returns there when dropped.
#[derive(Debug)]
pub struct PooledFrame {
    /// Always `Some` until `drop` moves it back to the pool.
    frame: Option<Frame>,
    pool: Arc<PoolInner>,
}

impl PooledFrame {
    pub fn get_mut(&mut self) -> &mut Frame {
        // The frame is only taken out in `drop`.
        self.frame.as_mut().expect("frame present until drop")
    }
}

impl Deref for PooledFrame {
    type Target = Frame;
    fn deref(&self) -> &Frame {
        // The frame is only taken out in `drop`.
        self.frame.as_ref().expect("frame present until drop")
    }
}

impl Drop for PooledFrame {
    fn drop(&mut self) {
        if let Some(frame) = self.frame.take() {
            let mut free = self
                .pool
                .free
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // A handful of frames covers capture, two encoders and the detector; more would
            // only mean a consumer is holding frames it should have dropped.
            if free.len() < 8 {
                free.push(frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::PixelFormat;

    #[test]
    fn pool_recycles_frames() {
        let pool = FramePool::new(
            Layout::packed(PixelFormat::Nv12, 64, 32),
            Layout::packed(PixelFormat::I420, 32, 16),
        );
        let first = pool.take();
        let addr = first.main.as_bytes().as_ptr();
        drop(first);
        assert_eq!(pool.idle(), 1);
        let again = pool.take();
        assert_eq!(again.main.as_bytes().as_ptr(), addr, "buffer was reused");
        assert_eq!(pool.idle(), 0);
    }
}
