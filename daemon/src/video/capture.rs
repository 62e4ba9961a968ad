//! The capture thread: takes each picture from the source into a pooled frame (the
//! lores picture from the source when it delivers one, else scaled), and hands it to each
//! wanted encoder, the ROI detector and the picture doors, each through a one-frame
//! "latest wins" slot, so that capture never waits for any of them. A source that fails
//! is closed, reported and opened again with backoff ([`super::reopen`]).

use std::sync::Arc;
use std::time::Instant;

use focusd_board::frame::{FramePool, PooledFrame};
use focusd_board::image::Layout;
use focusd_board::scale::{Scaler, lores_size};
use focusd_board::source::{self, FrameSource, SourceError, SourceSpec};
use focusd_board::stamp;
use tokio_util::sync::CancellationToken;

use super::reopen::Reopening;
use crate::config::Settings;
use crate::fanout::FrameFeed;
use crate::service::liveness::Liveness;
use crate::service::metrics::Metrics;
use crate::state::{Control, Part};
use crate::track::{Track, TrackMap};
use crate::video::signals::{Demand, KeyframeRequests};
use crate::video::slot::LatestSlot;

/// What to capture, and how: the part of the settings the capture thread needs.
/// What to capture, and how: the part of the settings the capture thread needs.
#[derive(Clone, Debug)]
pub struct CaptureSpec {
    /// The source.
    pub source: SourceSpec,
    /// The configured main size: the test pattern is drawn at it, a file scaled to it
    /// when `scale_file`.
    pub size: (u32, u32),
    /// Whether a file is scaled to `size` (`--size` was given) or kept native.
    pub scale_file: bool,
    /// Frame rate of the test pattern and of cameras.
    pub fps: f64,
    /// Width of the context track's picture (a source that makes its own takes it).
    pub lores_width: u32,
}

impl CaptureSpec {
    /// The part of `settings` about capture.
    pub fn from_settings(settings: &Settings) -> CaptureSpec {
        CaptureSpec {
            source: settings.source.clone(),
            size: settings.size,
            scale_file: settings.size_given,
            fps: settings.fps as f64,
            lores_width: settings.video.context_width,
        }
    }

    pub(super) fn open(&self) -> Result<Box<dyn FrameSource>, SourceError> {
        source::open(
            &self.source,
            source::Wanted {
                size: self.size,
                fps: self.fps,
                scale_file: self.scale_file,
                lores_width: self.lores_width,
            },
        )
    }
}

/// Takes pictures from a source into pooled frames: the main picture as the source lays
/// it out, the lores picture from the source when it delivers one, else scaled from the
/// main one, and the test stamp on both.
pub(super) struct Capturer {
    /// The open source; `None` between a failure and a successful reopen (a camera must
    /// be closed before it can be opened again).
    pub(super) source: Option<Box<dyn FrameSource>>,
    pub(super) pool: FramePool,
    /// The lores layout the source delivers itself, if it does.
    source_lores: Option<Layout>,
    /// Present when the source delivers no lores picture of its own.
    scaler: Option<Scaler>,
    has_stamp: bool,
}

impl Capturer {
    /// Frames for `source`; a lores picture it does not deliver is scaled to
    /// `context_width` wide, in the main picture's pixel format.
    pub(super) fn new(source: Box<dyn FrameSource>, context_width: u32) -> Self {
        let main = source.layout();
        let source_lores = source.lores_layout();
        let (lores, scaler) = match source_lores {
            Some(lores) => (lores, None),
            None => {
                let size = lores_size(main.size(), context_width);
                let lores = Layout::packed(main.format, size.0, size.1);
                (lores, Some(Scaler::new(main.size(), size)))
            }
        };
        Self {
            has_stamp: source.has_stamp(),
            pool: FramePool::new(main, lores),
            source_lores,
            scaler,
            source: Some(source),
        }
    }

    /// Waits for the source's next picture and returns it as frame `seq`. Without an open
    /// source, says so at once.
    pub(super) fn next(&mut self, seq: u64) -> Result<PooledFrame, SourceError> {
        let Some(source) = self.source.as_mut() else {
            return Err(SourceError::Io(std::io::Error::other(
                "the source is closed after a failure",
            )));
        };
        let mut frame = self.pool.take();
        let f = frame.get_mut();
        let delivers_lores = self.scaler.is_none();
        let captured = source.capture(&mut f.main, delivers_lores.then_some(&mut f.lores))?;
        f.seq = seq;
        f.captured_at = captured.at;
        f.wallclock_ms = captured.wallclock_ms;
        if let Some(scaler) = &self.scaler {
            scaler.scale(&f.main, &mut f.lores);
        }
        if self.has_stamp {
            stamp::draw(&mut f.lores.luma_mut(), captured.wallclock_ms);
        }
        Ok(frame)
    }

    /// Closes the source (after a failure), so that it can be opened again.
    fn close(&mut self) {
        if let Some(source) = self.source.take() {
            // Some device libraries panic when closing a device that failed (the `v4l`
            // crate, on an unexpected ioctl error); capture must survive that.
            let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(source)));
            if closed.is_err() {
                tracing::warn!("closing the failed source panicked; carrying on");
            }
        }
    }

    /// Takes `source` if it delivers pictures in the layouts the pool and the encoders were
    /// made for; says whether it did.
    fn reopened(&mut self, source: Box<dyn FrameSource>) -> bool {
        let same = source.layout() == self.pool.main_layout()
            && source.lores_layout() == self.source_lores;
        if same {
            self.source = Some(source);
        }
        same
    }
}

/// The capture thread's state.
pub(super) struct CaptureThread {
    pub(super) capturer: Capturer,
    /// What to reopen after a failure.
    pub(super) spec: CaptureSpec,
    /// Each track's encoder thread.
    pub(super) encoders: TrackMap<Arc<LatestSlot<Arc<PooledFrame>>>>,
    /// Which encoders are wanted: the others get no picture.
    pub(super) demand: Demand,
    /// The ROI detector's thread.
    pub(super) detector: Arc<LatestSlot<Arc<PooledFrame>>>,
    /// The picture doors.
    pub(super) pictures: FrameFeed,
    pub(super) metrics: Arc<Metrics>,
    /// Where a failing source is reported (state, `/healthz`, MQTT).
    pub(super) control: Arc<Control>,
    /// Asked for a keyframe on every track when the source comes back.
    pub(super) keyframes: KeyframeRequests,
    /// Marked for each picture taken, and for each reopen attempt (the watchdog stays fed
    /// while a camera is away).
    pub(super) liveness: Liveness,
}

impl CaptureThread {
    pub(super) fn run(mut self, shutdown: CancellationToken) {
        let mut seq = 0u64;
        let mut reopening = Reopening::new(self.liveness.clone());
        while !shutdown.is_cancelled() {
            if self.capturer.source.is_none() {
                if !reopening.wait(&shutdown) {
                    break;
                }
                self.reopen();
                continue;
            }
            let frame = match self.capturer.next(seq) {
                Ok(frame) => frame,
                Err(e) => {
                    self.metrics.capture_errors.inc();
                    tracing::warn!(error = %e, "capture failed; reopening the source with backoff");
                    self.control.fault(Part::Source, e.to_string());
                    self.capturer.close();
                    continue;
                }
            };
            reopening.reset();
            seq += 1;
            self.metrics.frames_captured.inc();
            self.liveness.frame_captured();
            let frame = Arc::new(frame);
            for (track, slot) in self.encoders.iter() {
                if self.demand.wanted(track) && slot.put(frame.clone()) {
                    self.metrics.track(track).dropped_encoder_busy.inc();
                }
            }
            self.pictures.publish(frame.clone());
            self.detector.put(frame);
        }
    }

    fn reopen(&mut self) {
        match self.spec.open() {
            Ok(src) => {
                let layout = src.layout();
                if self.capturer.reopened(src) {
                    tracing::info!("source open again");
                    self.control.recovered(Part::Source);
                    // Viewers stayed connected; their decoders start again from an IDR.
                    for track in Track::ALL {
                        self.keyframes[track].request(Instant::now());
                    }
                } else {
                    self.control.fault(
                        Part::Source,
                        format!("reopened with another picture layout ({layout:?})"),
                    );
                    tracing::warn!(
                        ?layout,
                        "reopened source changed its picture layout; retrying until it comes back as it was"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reopen source");
                self.control.fault(Part::Source, e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use focusd_board::encode::{EncoderSettings, OpenH264Encoder, VideoEncoder};
    use focusd_board::frame::CaptureTime;
    use focusd_board::image::{Image, PixelFormat, PixelRect};
    use focusd_board::source::TestPattern;
    use openh264::decoder::Decoder;

    use super::*;
    use crate::video::mask;
    /// Like a camera behind an ISP: NV12 with padded strides, and a low-resolution picture
    /// of its own (flat grey, so it cannot be mistaken for a scaled main picture).
    struct TwoStreamCamera {
        main: TestPattern,
        lores: Layout,
    }

    const LORES_GREY: u8 = 200;

    impl FrameSource for TwoStreamCamera {
        fn describe(&self) -> String {
            "two-stream camera".into()
        }
        fn layout(&self) -> Layout {
            self.main.layout()
        }
        fn lores_layout(&self) -> Option<Layout> {
            Some(self.lores)
        }
        fn fps(&self) -> f64 {
            30.0
        }
        fn has_stamp(&self) -> bool {
            true
        }
        fn capture(
            &mut self,
            main: &mut Image,
            lores: Option<&mut Image>,
        ) -> Result<CaptureTime, SourceError> {
            let at = CaptureTime::now();
            self.main.draw(main, at.wallclock_ms);
            lores.expect("asked for the lores picture").fill(LORES_GREY);
            Ok(at)
        }
    }

    fn read_stamp(img: &Image) -> Option<u32> {
        let luma = img.luma();
        stamp::read(luma.data(), img.width(), img.height(), luma.stride())
    }

    #[test]
    fn a_lores_picture_from_the_source_is_used_as_delivered() {
        let main = Layout::aligned(PixelFormat::Nv12, 640, 360, 64, 16);
        let lores = Layout::aligned(PixelFormat::Nv12, 256, 144, 32, 16);
        let camera = TwoStreamCamera {
            main: TestPattern::with_layout(main, 30.0),
            lores,
        };
        let mut capturer = Capturer::new(Box::new(camera), 320);
        assert!(capturer.scaler.is_none(), "nothing to scale");
        assert_eq!(
            capturer.pool.lores_layout(),
            lores,
            "the source's, not 320 wide"
        );
        let frame = capturer.next(7).unwrap();
        assert_eq!(frame.seq, 7);
        assert_eq!(*frame.main.layout(), main);
        assert_eq!(*frame.lores.layout(), lores);
        let luma = frame.lores.luma();
        assert_eq!(luma.row(100)[128], LORES_GREY, "as the source drew it");
        let stamped = read_stamp(&frame.lores);
        assert_eq!(
            stamped,
            Some(frame.wallclock_ms as u32),
            "stamped on lores too"
        );
        assert_eq!(read_stamp(&frame.main), stamped);
    }

    /// The test scene frozen at one instant, in any layout: what it shows is known.
    struct StillScene {
        pattern: TestPattern,
    }

    /// An instant when the shapes of the test scene are 5% of the frame apart.
    const STILL_MS: u64 = 5_002_000;

    impl FrameSource for StillScene {
        fn describe(&self) -> String {
            "still scene".into()
        }
        fn layout(&self) -> Layout {
            self.pattern.layout()
        }
        fn fps(&self) -> f64 {
            30.0
        }
        fn has_stamp(&self) -> bool {
            true
        }
        fn capture(
            &mut self,
            main: &mut Image,
            _lores: Option<&mut Image>,
        ) -> Result<CaptureTime, SourceError> {
            self.pattern.draw(main, STILL_MS);
            Ok(CaptureTime {
                wallclock_ms: STILL_MS,
                ..CaptureTime::now()
            })
        }
    }

    #[test]
    fn without_one_the_main_picture_is_scaled_in_its_own_format() {
        let main = Layout::aligned(PixelFormat::Nv12, 640, 360, 64, 16);
        let pattern = TestPattern::with_layout(main, 30.0);
        let mut capturer = Capturer::new(Box::new(StillScene { pattern }), 320);
        let lores = capturer.pool.lores_layout();
        assert_eq!(lores, Layout::packed(PixelFormat::Nv12, 320, 180));
        let frame = capturer.next(0).unwrap();
        assert_eq!(read_stamp(&frame.lores), Some(STILL_MS as u32));
        // Each shape's colour survives scaling at its centre.
        for b in focusd_board::source::scene_boxes(STILL_MS as u32) {
            let (cx, cy) = ((b.x1 + b.x2) * 160.0, (b.y1 + b.y2) * 90.0);
            let (cx, cy) = (cx as usize, cy as usize);
            assert_eq!(
                frame.lores.chroma_at(cx, cy),
                frame.main.chroma_at(cx * 2, cy * 2),
                "{b:?}"
            );
            assert_ne!(frame.lores.chroma_at(cx, cy), (128, 128), "{b:?}");
        }
    }

    #[test]
    fn nv12_frames_are_masked_encoded_and_decoded_intact() {
        let main = Layout::aligned(PixelFormat::Nv12, 640, 360, 64, 16);
        let pattern = TestPattern::with_layout(main, 30.0);
        let mut capturer = Capturer::new(Box::new(StillScene { pattern }), 320);
        let mut encoder = OpenH264Encoder::new(&EncoderSettings {
            width: 640,
            height: 360,
            format: PixelFormat::Nv12,
            fps: 30.0,
            bitrate_kbps: 2000,
            keyframe_interval: 0,
            temporal_layers: 1,
        })
        .unwrap();
        let keep = PixelRect {
            x0: 320,
            y0: 160,
            x1: 480,
            y1: 320,
        };
        let stamp_rows = stamp::band_height(360);
        let mut masked = Image::new(main);
        let mut decoder = Decoder::new().unwrap();
        let frame = capturer.next(0).unwrap();
        mask::apply(&frame.main, &[keep], stamp_rows, &mut masked);
        let captured = CaptureTime {
            at: frame.captured_at,
            wallclock_ms: frame.wallclock_ms,
        };
        encoder.submit(&masked, captured, true).unwrap();
        let mut unit = Vec::new();
        assert!(encoder.poll(&mut unit).unwrap().unwrap().keyframe);
        let decoded = decoder.decode(&unit).unwrap().expect("a picture");
        use openh264::formats::YUVSource;
        let (stride, y) = (decoded.strides().0, decoded.y());
        assert_eq!(
            stamp::read(y, 640, 360, stride),
            Some(frame.wallclock_ms as u32)
        );
        let mean = |x0: usize, y0: usize| {
            let sum: u32 = (y0..y0 + 16)
                .flat_map(|r| &y[r * stride + x0..r * stride + x0 + 16])
                .map(|&p| p as u32)
                .sum();
            sum / 256
        };
        assert!(mean(32, 100) <= 4, "masked out: {}", mean(32, 100));
        // Inside the kept rectangle the picture is the source's, block for block.
        let source = frame.main.luma();
        for (x0, y0) in [(336, 176), (392, 232), (448, 288)] {
            let want: u32 = (y0..y0 + 16)
                .flat_map(|r| &source.row(r)[x0..x0 + 16])
                .map(|&p| p as u32)
                .sum::<u32>()
                / 256;
            let got = mean(x0, y0);
            assert!(
                got.abs_diff(want) < 12,
                "kept block ({x0},{y0}): {got} vs {want}"
            );
        }
    }
}
