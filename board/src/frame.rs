//! I420 images, captured frames and the pool that recycles them.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A planar 4:2:0 image with tightly packed planes (Y, then U, then V).
///
/// Width and height are even, so each chroma plane is exactly `width/2 x height/2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct I420Image {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl I420Image {
    /// A black image (Y=16, U=V=128). Panics if a dimension is odd or zero: callers validate
    /// sizes when they parse configuration, long before an image is made.
    pub fn new(width: u32, height: u32) -> Self {
        assert!(
            width > 0 && height > 0 && width.is_multiple_of(2) && height.is_multiple_of(2),
            "I420 needs even, non-zero dimensions, got {width}x{height}"
        );
        let luma = (width * height) as usize;
        let mut data = vec![128u8; luma + luma / 2];
        data[..luma].fill(16);
        Self {
            width,
            height,
            data,
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    fn luma_len(&self) -> usize {
        (self.width * self.height) as usize
    }

    fn chroma_len(&self) -> usize {
        self.luma_len() / 4
    }

    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }

    pub fn u(&self) -> &[u8] {
        let l = self.luma_len();
        &self.data[l..l + self.chroma_len()]
    }

    pub fn v(&self) -> &[u8] {
        let l = self.luma_len() + self.chroma_len();
        &self.data[l..]
    }

    /// Mutable Y, U and V planes at once.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let (l, c) = (self.luma_len(), self.chroma_len());
        let (y, uv) = self.data.split_at_mut(l);
        let (u, v) = uv.split_at_mut(c);
        (y, u, v)
    }

    /// All three planes as one buffer, in I420 order.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// All three planes as one mutable buffer, in I420 order (for readers that fill it whole).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Sets every pixel to grey level `luma` with neutral chroma.
    pub fn fill(&mut self, luma: u8) {
        let l = self.luma_len();
        self.data[..l].fill(luma);
        self.data[l..].fill(128);
    }

    /// Copies the pixels of `rect` (even-aligned, inside both images) from `src`.
    pub fn copy_rect_from(&mut self, src: &I420Image, rect: PixelRect) {
        debug_assert_eq!((self.width, self.height), (src.width, src.height));
        let w = self.width as usize;
        let (x0, y0, x1, y1) = (
            rect.x0 as usize,
            rect.y0 as usize,
            rect.x1 as usize,
            rect.y1 as usize,
        );
        let (dy, du, dv) = self.planes_mut();
        for row in y0..y1 {
            let o = row * w;
            dy[o + x0..o + x1].copy_from_slice(&src.y()[o + x0..o + x1]);
        }
        let cw = w / 2;
        for row in y0 / 2..y1 / 2 {
            let o = row * cw;
            du[o + x0 / 2..o + x1 / 2].copy_from_slice(&src.u()[o + x0 / 2..o + x1 / 2]);
            dv[o + x0 / 2..o + x1 / 2].copy_from_slice(&src.v()[o + x0 / 2..o + x1 / 2]);
        }
    }
}

/// A rectangle in pixels, `x0 <= x < x1`, `y0 <= y < y1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelRect {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl PixelRect {
    pub fn width(&self) -> u32 {
        self.x1.saturating_sub(self.x0)
    }

    pub fn height(&self) -> u32 {
        self.y1.saturating_sub(self.y0)
    }

    pub fn is_empty(&self) -> bool {
        self.width() == 0 || self.height() == 0
    }

    /// Grows the rectangle outward to multiples of `align` and clips it to `w x h`.
    pub fn align_out(&self, align: u32, w: u32, h: u32) -> PixelRect {
        PixelRect {
            x0: self.x0 / align * align,
            y0: self.y0 / align * align,
            x1: self.x1.div_ceil(align).saturating_mul(align).min(w),
            y1: self.y1.div_ceil(align).saturating_mul(align).min(h),
        }
    }
}

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
#[derive(Debug)]
pub struct Frame {
    /// Capture sequence number, counting from 0 for each source.
    pub seq: u64,
    /// Monotonic capture time: drives RTP timestamps and latency accounting.
    pub captured_at: Instant,
    /// Capture wall-clock time in ms since the Unix epoch (what the test stamp encodes).
    pub wallclock_ms: u64,
    /// Full-resolution image, as captured (or scaled to the configured size).
    pub main: I420Image,
    /// Low-resolution image with the main image's aspect ratio (the context track).
    pub lores: I420Image,
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
    main: (u32, u32),
    lores: (u32, u32),
}

impl FramePool {
    pub fn new(main: (u32, u32), lores: (u32, u32)) -> Self {
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
            main: I420Image::new(self.inner.main.0, self.inner.main.1),
            lores: I420Image::new(self.inner.lores.0, self.inner.lores.1),
        });
        PooledFrame {
            frame: Some(frame),
            pool: self.inner.clone(),
        }
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

    #[test]
    fn pool_recycles_frames() {
        let pool = FramePool::new((64, 32), (32, 16));
        let first = pool.take();
        let addr = first.main.as_bytes().as_ptr();
        drop(first);
        assert_eq!(pool.idle(), 1);
        let again = pool.take();
        assert_eq!(again.main.as_bytes().as_ptr(), addr, "buffer was reused");
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn copy_rect_copies_only_inside() {
        let mut src = I420Image::new(32, 32);
        src.as_bytes_mut().fill(200);
        let mut dst = I420Image::new(32, 32);
        let rect = PixelRect {
            x0: 8,
            y0: 8,
            x1: 16,
            y1: 24,
        };
        dst.copy_rect_from(&src, rect);
        assert_eq!(dst.y()[8 * 32 + 8], 200);
        assert_eq!(dst.y()[8 * 32 + 16], 16);
        assert_eq!(dst.y()[7 * 32 + 8], 16);
        assert_eq!(dst.u()[4 * 16 + 4], 200);
        assert_eq!(dst.u()[4 * 16 + 8], 128);
    }

    #[test]
    fn align_out_grows_and_clips() {
        let r = PixelRect {
            x0: 17,
            y0: 3,
            x1: 33,
            y1: 50,
        };
        assert_eq!(
            r.align_out(16, 40, 48),
            PixelRect {
                x0: 16,
                y0: 0,
                x1: 40,
                y1: 48
            }
        );
    }
}
