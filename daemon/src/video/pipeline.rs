//! The video pipeline: a capture thread that never waits, and one encoder thread per track.
//!
//! ```text
//! source ─► capture thread ─► [latest slot] ─► context encoder ─┐
//!                  │        ─► [latest slot] ─► source encoder ──┼─► hub queue (bounded)
//!                  └──────────► [latest slot] ─► ROI detector     │
//! ```
//! Each slot keeps only the newest frame, so a slow encoder or detector skips frames instead
//! of delaying capture. An encoder runs only while someone claims its track
//! ([`Demand`]): with no viewer, capture and the detector go on and nothing is encoded;
//! the first picture after a claim is a keyframe. When the hub's queue is full an encoded
//! frame is dropped and the next one is forced to be a keyframe, so no viewer decodes a
//! picture with a missing reference.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use focusd_board::encode::{self, EncodeError, EncoderSettings, EncoderSpec, VideoEncoder};
use focusd_board::frame::{CaptureTime, FramePool, PooledFrame};
use focusd_board::image::{Image, Layout};
use focusd_board::scale::{Scaler, lores_size};
use focusd_board::source::{self, FrameSource, SourceError, SourceSpec};
use focusd_board::stamp;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, VideoSettings};
use crate::service::metrics::Metrics;
use crate::state::{Control, Part};
use crate::video::feed::FrameFeed;
use crate::video::mask;
use crate::video::signals::{Demand, EncoderTargets, KeyframeRequests, Liveness};
use crate::video::slot::LatestSlot;
use crate::video::taps::EncodedTaps;
use crate::video::track::{EncodedFrame, Track, TrackMap};

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The configured source cannot be opened (missing file, backend not in this build).
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// An encoder cannot be created (not in this build, no device, refused settings).
    #[error("encoder: {0}")]
    Encoder(#[from] EncodeError),
    /// A thread could not be spawned.
    #[error("cannot start pipeline thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    /// Per-track keyframe requests, indexed by [`Track`].
    pub keyframes: KeyframeRequests,
    /// Who wants each track encoded; the encoders idle without a claim.
    pub demand: Demand,
    /// The bitrates the encoders aim at (the delivery policy sets them).
    pub targets: EncoderTargets,
    /// Size of the main image (the source track).
    pub main_size: (u32, u32),
    /// Size of the lores image (the context track).
    pub lores_size: (u32, u32),
    /// Frame rate of the source.
    pub fps: f64,
    /// Human description of the source (state JSON).
    pub source: String,
    /// What the encoders are, from [`VideoEncoder::name`] (state JSON, registration).
    pub encoder: String,
    /// Why that encoder: `configured`, or what `auto` found (state JSON, registration).
    pub encoder_reason: String,
    /// Whether frames carry the test stamp (its band is not scene content).
    pub has_stamp: bool,
    /// The pipeline's pulse (for `/healthz` and the watchdog).
    pub liveness: Liveness,
    /// The newest frame, for the picture doors.
    pub pictures: FrameFeed,
    /// Rows of test stamp at the top of the main image (kept through masking).
    pub stamp_rows: u32,
    /// Each track's encoded frames, for the RTSP door.
    pub taps: EncodedTaps,
    threads: Vec<JoinHandle<()>>,
}

/// Both tracks' encoders as first opened.
struct Encoders {
    /// What they were opened with: every reopen uses it.
    spec: EncoderSpec,
    /// Why this encoder (`configured`, or what `auto` found).
    reason: String,
    context: Box<dyn VideoEncoder>,
    source: Box<dyn VideoEncoder>,
}

impl Encoders {
    /// Opens both tracks' encoders. A configured encoder is opened as is. `auto` is
    /// resolved once, so that both tracks and every reopen use the same device; a hardware
    /// encoder that refuses these settings (a size beyond its limits) gives way to
    /// openh264, and the reason says so.
    fn open(
        configured: &EncoderSpec,
        context: &EncoderSettings,
        source: &EncoderSettings,
    ) -> Result<Self, EncodeError> {
        let open = |spec: EncoderSpec, reason: String| -> Result<Self, EncodeError> {
            Ok(Self {
                context: encode::open(&spec, context)?,
                source: encode::open(&spec, source)?,
                spec,
                reason,
            })
        };
        if *configured != EncoderSpec::Auto {
            return open(configured.clone(), "configured".into());
        }
        let (spec, reason) = encode::resolve_auto();
        match open(spec.clone(), reason) {
            Err(e) if e.is_config() && spec != EncoderSpec::OpenH264 => {
                tracing::warn!(encoder = %spec, "hardware encoder refused, using openh264: {e}");
                open(
                    EncoderSpec::OpenH264,
                    format!("{spec} refused these settings ({e})"),
                )
            }
            other => other,
        }
    }
}

impl Pipeline {
    /// Opens the source and encoders and starts capturing. Frames go to `out`.
    pub fn start(
        capture: &CaptureSpec,
        video: &VideoSettings,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
        out: mpsc::Sender<EncodedFrame>,
        detector_frames: Arc<LatestSlot<Arc<PooledFrame>>>,
        shutdown: CancellationToken,
    ) -> Result<Pipeline, PipelineError> {
        let src = capture.open()?;
        let capturer = Capturer::new(src, video.context_width);
        let (main_layout, lores_layout) =
            (capturer.pool.main_layout(), capturer.pool.lores_layout());
        let (main_size, lores) = (main_layout.size(), lores_layout.size());
        let src = capturer
            .source
            .as_ref()
            .expect("a capturer starts with its source");
        let src_fps = src.fps();
        let keyframe_interval = (video.keyframe_interval_s * src_fps).round().max(1.0) as u32;
        let enc_settings = |layout: Layout, kbps| EncoderSettings {
            width: layout.width,
            height: layout.height,
            format: layout.format,
            fps: src_fps,
            bitrate_kbps: kbps,
            keyframe_interval,
            temporal_layers: video.temporal_layers,
        };
        let Encoders {
            spec,
            reason: encoder_reason,
            context: context_encoder,
            source: source_encoder,
        } = Encoders::open(
            &video.encoder,
            &enc_settings(lores_layout, video.context_kbps),
            &enc_settings(main_layout, video.source_kbps),
        )?;
        let spec = &spec;
        let encoder_name = source_encoder.name().to_string();
        tracing::info!(encoder = %encoder_name, reason = %encoder_reason, "encoders open");
        let description = src.describe();
        let stamp_rows = if src.has_stamp() {
            stamp::band_height(main_size.1)
        } else {
            0
        };

        let keyframes = KeyframeRequests::default();
        let demand = Demand::new();
        let targets = EncoderTargets::new(TrackMap {
            context: video.context_kbps,
            source: video.source_kbps,
        });
        let slots: TrackMap<Arc<LatestSlot<Arc<PooledFrame>>>> = TrackMap::default();
        let liveness = Liveness::new();
        let pictures = FrameFeed::new();
        let taps = EncodedTaps::new();
        let mut threads = Vec::new();

        let capture = CaptureThread {
            capturer,
            spec: capture.clone(),
            encoders: slots.clone(),
            demand: demand.clone(),
            detector: detector_frames,
            pictures: pictures.clone(),
            metrics: metrics.clone(),
            control: control.clone(),
            keyframes: keyframes.clone(),
            liveness: liveness.clone(),
        };
        let token = shutdown.clone();
        threads.push(
            std::thread::Builder::new()
                .name("focusd-capture".into())
                .spawn(move || capture.run(token))?,
        );

        for (track, encoder) in [
            (Track::Context, context_encoder),
            (Track::Source, source_encoder),
        ] {
            let settings = enc_settings(
                if track == Track::Context {
                    lores_layout
                } else {
                    main_layout
                },
                if track == Track::Context {
                    video.context_kbps
                } else {
                    video.source_kbps
                },
            );
            let spec = spec.clone();
            let worker = EncoderWorker {
                track,
                encoder: Some(encoder),
                reopen: Box::new(move || encode::open(&spec, &settings)),
                liveness: liveness.clone(),
                demand: demand.clone(),
                targets: targets.clone(),
                frames: slots[track].clone(),
                keyframe: keyframes.clone(),
                control: control.clone(),
                metrics: metrics.clone(),
                out: out.clone(),
                taps: taps.clone(),
                stamp_rows,
                scratch: None,
            };
            let token = shutdown.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("focusd-enc-{}", track.name()))
                    .spawn(move || worker.run(token))?,
            );
        }

        Ok(Pipeline {
            keyframes,
            demand,
            targets,
            main_size,
            lores_size: lores,
            fps: src_fps,
            source: description,
            encoder: encoder_name,
            encoder_reason,
            has_stamp: stamp_rows > 0,
            liveness,
            pictures,
            stamp_rows,
            taps,
            threads,
        })
    }

    /// The capture and encoder threads, to join after shutdown was signalled (see
    /// [`join_within`]).
    pub fn into_threads(self) -> Vec<JoinHandle<()>> {
        self.threads
    }
}

/// Waits up to `grace` for `threads` to finish (after shutdown was signalled) and says
/// whether they all did. A thread stuck in a read from a source that stopped delivering
/// cannot be interrupted: it is left to end with the process.
pub fn join_within(threads: Vec<JoinHandle<()>>, grace: Duration) -> bool {
    let end = Instant::now() + grace;
    let mut pending = threads;
    loop {
        let (done, running): (Vec<_>, Vec<_>) = pending.into_iter().partition(|t| t.is_finished());
        for t in done {
            let _ = t.join();
        }
        if running.is_empty() {
            return true;
        }
        if Instant::now() >= end {
            for t in &running {
                let name = t.thread().name().unwrap_or("pipeline").to_owned();
                tracing::warn!(thread = %name, "thread did not stop in {grace:?}; leaving it");
            }
            return false;
        }
        pending = running;
        std::thread::sleep(Duration::from_millis(5));
    }
}

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

    fn open(&self) -> Result<Box<dyn FrameSource>, SourceError> {
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
struct Capturer {
    /// The open source; `None` between a failure and a successful reopen (a camera must
    /// be closed before it can be opened again).
    source: Option<Box<dyn FrameSource>>,
    pool: FramePool,
    /// The lores layout the source delivers itself, if it does.
    source_lores: Option<Layout>,
    /// Present when the source delivers no lores picture of its own.
    scaler: Option<Scaler>,
    has_stamp: bool,
}

impl Capturer {
    /// Frames for `source`; a lores picture it does not deliver is scaled to
    /// `context_width` wide, in the main picture's pixel format.
    fn new(source: Box<dyn FrameSource>, context_width: u32) -> Self {
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
    fn next(&mut self, seq: u64) -> Result<PooledFrame, SourceError> {
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
struct CaptureThread {
    capturer: Capturer,
    /// What to reopen after a failure.
    spec: CaptureSpec,
    /// Each track's encoder thread.
    encoders: TrackMap<Arc<LatestSlot<Arc<PooledFrame>>>>,
    /// Which encoders are wanted: the others get no picture.
    demand: Demand,
    /// The ROI detector's thread.
    detector: Arc<LatestSlot<Arc<PooledFrame>>>,
    /// The picture doors.
    pictures: FrameFeed,
    metrics: Arc<Metrics>,
    /// Where a failing source is reported (state, `/healthz`, MQTT).
    control: Arc<Control>,
    /// Asked for a keyframe on every track when the source comes back.
    keyframes: KeyframeRequests,
    /// Marked for each picture taken, and for each reopen attempt (the watchdog stays fed
    /// while a camera is away).
    liveness: Liveness,
}

/// The first wait before reopening a failed source, doubled after each failed reopen.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between reopens.
const LAST_RETRY: Duration = Duration::from_secs(5);

impl CaptureThread {
    fn run(mut self, shutdown: CancellationToken) {
        let mut seq = 0u64;
        let mut backoff = FIRST_RETRY;
        while !shutdown.is_cancelled() {
            if self.capturer.source.is_none() {
                if wait_cancelled(&shutdown, backoff, &self.liveness) {
                    break;
                }
                backoff = (backoff * 2).min(LAST_RETRY);
                self.liveness.recovery_attempted();
                self.reopen();
                continue;
            }
            let frame = match self.capturer.next(seq) {
                Ok(frame) => frame,
                Err(e) => {
                    self.metrics.capture_errors.inc();
                    tracing::warn!(error = %e, retry_in = ?backoff, "capture failed; reopening the source");
                    self.control.fault(Part::Source, e.to_string());
                    self.capturer.close();
                    continue;
                }
            };
            backoff = FIRST_RETRY;
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

/// Sleeps for `d` unless cancelled first, marking `alive` at each step; returns whether it
/// was cancelled.
fn wait_cancelled(token: &CancellationToken, d: Duration, alive: &Liveness) -> bool {
    let step = Duration::from_millis(50);
    let end = Instant::now() + d;
    while Instant::now() < end {
        if token.is_cancelled() {
            return true;
        }
        alive.recovery_attempted();
        std::thread::sleep(step.min(end.saturating_duration_since(Instant::now())));
    }
    token.is_cancelled()
}

/// One track's encoder thread.
/// Opens a track's encoder again after it failed (the spec and settings it was opened
/// with).
type EncoderOpener = Box<dyn Fn() -> Result<Box<dyn VideoEncoder>, EncodeError> + Send>;

struct EncoderWorker {
    track: Track,
    /// The encoder; `None` only while it is being opened again after a failure.
    encoder: Option<Box<dyn VideoEncoder>>,
    /// How to open it again.
    reopen: EncoderOpener,
    /// Marked at each turn of the loop (the encoder is not stuck) and each reopen attempt
    /// (the watchdog stays fed while a device is away).
    liveness: Liveness,
    /// Whether anyone wants this track: without a claim, pictures are not encoded.
    demand: Demand,
    /// The bitrate to aim at, checked before each picture.
    targets: EncoderTargets,
    frames: Arc<LatestSlot<Arc<PooledFrame>>>,
    keyframe: KeyframeRequests,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    out: mpsc::Sender<EncodedFrame>,
    /// The RTSP door's copy of each frame.
    taps: EncodedTaps,
    /// Rows of test stamp kept through masking.
    stamp_rows: u32,
    /// Masked copy of the main image (VISION / HYBRID), made on first use.
    scratch: Option<Image>,
}

impl EncoderWorker {
    /// After a fatal error: closes the encoder, reports the fault, and opens it again with
    /// backoff until it works (true) or shutdown comes (false). Viewers stay connected;
    /// the next picture is a keyframe.
    fn recover(&mut self, error: EncodeError, shutdown: &CancellationToken) -> bool {
        let part = match self.track {
            Track::Context => Part::ContextEncoder,
            Track::Source => Part::SourceEncoder,
        };
        self.metrics.encoder_failures.inc();
        self.control.fault(part, error.to_string());
        self.encoder = None;
        let mut backoff = FIRST_RETRY;
        loop {
            if wait_cancelled(shutdown, backoff, &self.liveness) {
                return false;
            }
            backoff = (backoff * 2).min(LAST_RETRY);
            self.liveness.recovery_attempted();
            match (self.reopen)() {
                Ok(encoder) => {
                    tracing::info!(track = self.track.name(), "encoder open again");
                    self.encoder = Some(encoder);
                    self.control.recovered(part);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(track = self.track.name(), error = %e, retry_in = ?backoff, "cannot reopen the encoder");
                    self.control.fault(part, e.to_string());
                }
            }
        }
    }

    fn run(mut self, shutdown: CancellationToken) {
        let metrics = self.metrics.clone();
        let m = metrics.track(self.track);
        let mut force_key = true;
        // The bitrate the encoder was last set to (`None`: as opened).
        let mut applied_kbps: Option<u32> = None;
        let mut buf = Vec::with_capacity(256 * 1024);
        while !shutdown.is_cancelled() {
            let frame = self.frames.take_timeout(Duration::from_millis(100));
            self.liveness.encoder_progressed(self.track);
            if !self.demand.wanted(self.track) {
                // Encoding for no one; whoever comes next starts from a keyframe.
                force_key = true;
                continue;
            }
            let Some(frame) = frame else {
                continue;
            };
            let control = &self.control;
            let Some(image) = mask::track_picture(
                self.track,
                &frame,
                || control.shaping(),
                self.stamp_rows,
                &mut self.scratch,
            ) else {
                // LOW: when media resumes, viewers need a fresh start.
                force_key = true;
                continue;
            };
            let key = self.keyframe[self.track].take() | force_key;
            let captured = CaptureTime {
                at: frame.captured_at,
                wallclock_ms: frame.wallclock_ms,
            };
            let Some(encoder) = self.encoder.as_mut() else {
                break;
            };
            let target = self.targets.get(self.track);
            if applied_kbps != Some(target) {
                // An encoder that cannot change its rate keeps the one it has.
                if let Err(e) = encoder.set_bitrate(target) {
                    tracing::debug!(track = self.track.name(), error = %e, "cannot change the bitrate");
                }
                applied_kbps = Some(target);
            }
            let started = Instant::now();
            let result = encoder.submit(image, captured, key).and_then(|()| {
                m.encode_seconds.observe(started.elapsed().as_secs_f64());
                buf.clear();
                encoder.poll(&mut buf)
            });
            let unit = match result {
                Ok(Some(unit)) => unit,
                // Skipped by rate control, or still in a pipelined encoder.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(track = self.track.name(), error = %e, "encode failed");
                    force_key = true;
                    if e.is_fatal() {
                        if !self.recover(e, &shutdown) {
                            break;
                        }
                        applied_kbps = None;
                    }
                    continue;
                }
            };
            force_key = false;
            m.frames.inc();
            m.bytes.add(buf.len() as u64);
            if unit.keyframe {
                m.keyframes.inc();
            }
            let encoded = EncodedFrame {
                track: self.track,
                data: Arc::from(buf.as_slice()),
                keyframe: unit.keyframe,
                captured_at: unit.captured.at,
                temporal_layer: unit.temporal_layer,
            };
            self.taps.send(&encoded);
            match self.out.try_send(encoded) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    m.dropped_hub_busy.inc();
                    force_key = true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        // A pipelined encoder still holds pictures: hand them on while the hub listens.
        let mut rest = Vec::new();
        if let Some(encoder) = self.encoder.as_mut()
            && let Err(e) = encoder.finish(&mut rest)
        {
            tracing::debug!(track = self.track.name(), error = %e, "encoder drain failed");
        }
        for (unit, data) in rest {
            let _ = self.out.try_send(EncodedFrame {
                track: self.track,
                data: Arc::from(data),
                keyframe: unit.keyframe,
                captured_at: unit.captured.at,
                temporal_layer: unit.temporal_layer,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::Mode;
    use focusd_board::encode::{EncodedUnit, OpenH264Encoder};
    use focusd_board::image::{PixelFormat, PixelRect};
    use focusd_board::source::TestPattern;
    use openh264::decoder::Decoder;

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

    /// openh264 that fails for good at its `fail_at`-th picture, as a hardware encoder
    /// whose device goes away does.
    struct FailsOnce {
        inner: OpenH264Encoder,
        submitted: u32,
        fail_at: u32,
    }

    impl VideoEncoder for FailsOnce {
        fn name(&self) -> &str {
            "fails-once"
        }
        fn submit(
            &mut self,
            image: &Image,
            captured: CaptureTime,
            keyframe: bool,
        ) -> Result<(), EncodeError> {
            self.submitted += 1;
            if self.submitted == self.fail_at {
                return Err(EncodeError::Device(
                    "Input/output error (os error 5)".into(),
                ));
            }
            self.inner.submit(image, captured, keyframe)
        }
        fn poll(&mut self, out: &mut Vec<u8>) -> Result<Option<EncodedUnit>, EncodeError> {
            self.inner.poll(out)
        }
        fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError> {
            self.inner.set_bitrate(kbps)
        }
        fn finish(&mut self, out: &mut Vec<(EncodedUnit, Vec<u8>)>) -> Result<(), EncodeError> {
            self.inner.finish(out)
        }
    }

    #[test]
    fn a_failed_encoder_is_reopened_with_backoff_and_resumes_with_a_keyframe() {
        let settings = EncoderSettings {
            width: 320,
            height: 180,
            format: PixelFormat::I420,
            fps: 30.0,
            bitrate_kbps: 300,
            keyframe_interval: 0,
            temporal_layers: 1,
        };
        let opened = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let reopen: EncoderOpener = {
            let (opened, settings) = (opened.clone(), settings.clone());
            Box::new(move || {
                // The device is still away at the first attempt.
                if opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return Err(EncodeError::Create {
                        encoder: "fails-once".into(),
                        reason: "No such device".into(),
                    });
                }
                Ok(Box::new(OpenH264Encoder::new(&settings)?) as Box<dyn VideoEncoder>)
            })
        };
        let control = Arc::new(Control::new(Mode::High, None, "x".into(), "y".into()));
        let frames = Arc::new(LatestSlot::new());
        let (tx, mut rx) = mpsc::channel(64);
        let recovery = Liveness::new();
        let demand = Demand::new();
        let _viewer = demand.claim(Track::Context);
        let worker = EncoderWorker {
            track: Track::Context,
            encoder: Some(Box::new(FailsOnce {
                inner: OpenH264Encoder::new(&settings).unwrap(),
                submitted: 0,
                fail_at: 5,
            })),
            reopen,
            liveness: recovery.clone(),
            demand,
            targets: EncoderTargets::new(TrackMap {
                context: 300,
                source: 2500,
            }),
            frames: frames.clone(),
            keyframe: KeyframeRequests::default(),
            control: control.clone(),
            metrics: Arc::new(Metrics::default()),
            out: tx,
            taps: EncodedTaps::new(),
            stamp_rows: 0,
            scratch: None,
        };
        let shutdown = CancellationToken::new();
        let thread = {
            let token = shutdown.clone();
            std::thread::spawn(move || worker.run(token))
        };
        let mut capturer = Capturer::new(Box::new(TestPattern::new((320, 180), 30.0)), 320);
        let mut units = Vec::new();
        let mut saw_fault = false;
        let end = Instant::now() + Duration::from_secs(10);
        while units.len() < 15 && Instant::now() < end {
            frames.put(Arc::new(capturer.next(0).unwrap()));
            saw_fault |= !control.snapshot().faults.is_empty();
            while let Ok(unit) = rx.try_recv() {
                units.push(unit.keyframe);
            }
        }
        shutdown.cancel();
        thread.join().unwrap();
        assert!(
            saw_fault,
            "the fault was in the state while the encoder was away"
        );
        assert!(
            control.snapshot().faults.is_empty(),
            "and cleared once it was back"
        );
        assert_eq!(
            opened.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "one failed reopen, then one that worked"
        );
        assert!(recovery.recovery_attempts() >= 2);
        // Pictures 1-4, then after the reopen a keyframe first.
        assert!(units.len() >= 15, "{units:?}");
        assert!(units[0] && !units[1..4].iter().any(|k| *k), "{units:?}");
        assert!(
            units[4],
            "the first picture after the reopen is a keyframe: {units:?}"
        );
    }
}
