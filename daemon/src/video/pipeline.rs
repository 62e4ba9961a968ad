//! The video pipeline: a capture thread that never waits, and one encoder thread per track.
//!
//! ```text
//! source ─► capture thread ─► [latest slot] ─► context encoder ─┐
//!                  │        ─► [latest slot] ─► source encoder ──┼─► hub queue (bounded)
//!                  └──────────► [latest slot] ─► ROI detector     │
//! ```
//! Each slot keeps only the newest frame, so a slow encoder or detector skips frames instead
//! of delaying capture. When the hub's queue is full an encoded frame is dropped and the
//! next one is forced to be a keyframe, so no viewer decodes a picture with a missing
//! reference.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use focusd_board::encode::{self, EncodeError, EncoderSettings, VideoEncoder};
use focusd_board::frame::{CaptureTime, FramePool, I420Image, PooledFrame};
use focusd_board::scale::{Scaler, lores_size};
use focusd_board::source::{self, FrameSource, SourceError, SourceSpec};
use focusd_board::stamp;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, VideoSettings};
use crate::service::metrics::Metrics;
use crate::state::Control;
use crate::video::mask::{self, Shape};
use crate::video::signals::{KeyframeRequests, Liveness};
use crate::video::slot::LatestSlot;
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
    /// Whether frames carry the test stamp (its band is not scene content).
    pub has_stamp: bool,
    /// When frames last arrived (for `/healthz`).
    pub liveness: Liveness,
    threads: Vec<JoinHandle<()>>,
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
        let main_size = src.size();
        let lores = lores_size(main_size, video.context_width);
        let src_fps = src.fps();
        let keyframe_interval = (video.keyframe_interval_s * src_fps).round().max(1.0) as u32;
        let enc_settings = |(width, height): (u32, u32), kbps| EncoderSettings {
            width,
            height,
            fps: src_fps,
            bitrate_kbps: kbps,
            keyframe_interval,
        };
        let spec = &video.encoder;
        let context_encoder = encode::open(spec, &enc_settings(lores, video.context_kbps))?;
        let source_encoder = encode::open(spec, &enc_settings(main_size, video.source_kbps))?;
        let encoder_name = source_encoder.name().to_string();
        tracing::info!(encoder = %encoder_name, "encoders open");
        let description = src.describe();
        let stamp_rows = if src.has_stamp() {
            stamp::band_height(main_size.1)
        } else {
            0
        };

        let keyframes = KeyframeRequests::default();
        let slots: TrackMap<Arc<LatestSlot<Arc<PooledFrame>>>> = TrackMap::default();
        let liveness = Liveness::new();
        let mut threads = Vec::new();

        let capture = CaptureThread {
            source: src,
            spec: capture.clone(),
            pool: FramePool::new(main_size, lores),
            scaler: Scaler::new(main_size, lores),
            encoders: slots.clone(),
            detector: detector_frames,
            metrics: metrics.clone(),
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
            let worker = EncoderWorker {
                track,
                encoder,
                frames: slots[track].clone(),
                keyframe: keyframes.clone(),
                control: control.clone(),
                metrics: metrics.clone(),
                out: out.clone(),
                stamp_rows,
                scratch: None,
                // The context track is encoded in every mode: its output is the pulse.
                liveness: (track == Track::Context).then(|| liveness.clone()),
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
            main_size,
            lores_size: lores,
            fps: src_fps,
            source: description,
            encoder: encoder_name,
            has_stamp: stamp_rows > 0,
            liveness,
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
    /// Frame rate of the test pattern.
    pub fps: f64,
}

impl CaptureSpec {
    /// The part of `settings` about capture.
    pub fn from_settings(settings: &Settings) -> CaptureSpec {
        CaptureSpec {
            source: settings.source.clone(),
            size: settings.size,
            scale_file: settings.size_given,
            fps: settings.fps as f64,
        }
    }

    fn open(&self) -> Result<Box<dyn FrameSource>, SourceError> {
        source::open(&self.source, self.size, self.fps, self.scale_file)
    }
}

/// The capture thread's state.
struct CaptureThread {
    source: Box<dyn FrameSource>,
    /// What to reopen after a failure.
    spec: CaptureSpec,
    pool: FramePool,
    scaler: Scaler,
    /// Each track's encoder thread.
    encoders: TrackMap<Arc<LatestSlot<Arc<PooledFrame>>>>,
    /// The ROI detector's thread.
    detector: Arc<LatestSlot<Arc<PooledFrame>>>,
    metrics: Arc<Metrics>,
}

impl CaptureThread {
    fn run(mut self, shutdown: CancellationToken) {
        let mut seq = 0u64;
        let mut backoff = Duration::from_millis(100);
        let has_stamp = self.source.has_stamp();
        while !shutdown.is_cancelled() {
            let mut frame = self.pool.take();
            let f = frame.get_mut();
            let captured = match self.source.capture(&mut f.main) {
                Ok(c) => c,
                Err(e) => {
                    self.metrics.capture_errors.inc();
                    tracing::warn!(error = %e, retry_in = ?backoff, "capture failed; reopening the source");
                    if wait_cancelled(&shutdown, backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    self.reopen();
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            f.seq = seq;
            f.captured_at = captured.at;
            f.wallclock_ms = captured.wallclock_ms;
            self.scaler.scale(&f.main, &mut f.lores);
            if has_stamp {
                let (w, h) = (f.lores.width(), f.lores.height());
                stamp::draw(f.lores.planes_mut().0, w, h, captured.wallclock_ms);
            }
            seq += 1;
            self.metrics.frames_captured.inc();
            let frame = Arc::new(frame);
            for (track, slot) in self.encoders.iter() {
                if slot.put(frame.clone()) {
                    self.metrics.track(track).dropped_encoder_busy.inc();
                }
            }
            self.detector.put(frame);
        }
    }

    fn reopen(&mut self) {
        match self.spec.open() {
            Ok(src) if src.size() == self.source.size() => self.source = src,
            Ok(src) => tracing::warn!(
                size = ?src.size(),
                "reopened source changed size; keeping the old one until it comes back"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot reopen source"),
        }
    }
}

/// Sleeps for `d` unless cancelled first; returns whether it was cancelled.
fn wait_cancelled(token: &CancellationToken, d: Duration) -> bool {
    let step = Duration::from_millis(50);
    let end = Instant::now() + d;
    while Instant::now() < end {
        if token.is_cancelled() {
            return true;
        }
        std::thread::sleep(step.min(end.saturating_duration_since(Instant::now())));
    }
    token.is_cancelled()
}

/// One track's encoder thread.
struct EncoderWorker {
    track: Track,
    encoder: Box<dyn VideoEncoder>,
    frames: Arc<LatestSlot<Arc<PooledFrame>>>,
    keyframe: KeyframeRequests,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    out: mpsc::Sender<EncodedFrame>,
    /// Rows of test stamp kept through masking.
    stamp_rows: u32,
    /// Masked copy of the main image (VISION / HYBRID), made on first use.
    scratch: Option<I420Image>,
    /// Marked for every frame encoded, on the track that stands for the pipeline's pulse.
    liveness: Option<Liveness>,
}

impl EncoderWorker {
    fn run(mut self, shutdown: CancellationToken) {
        let metrics = self.metrics.clone();
        let m = metrics.track(self.track);
        let mut force_key = true;
        let mut buf = Vec::with_capacity(256 * 1024);
        while !shutdown.is_cancelled() {
            let Some(frame) = self.frames.take_timeout(Duration::from_millis(100)) else {
                continue;
            };
            let image = match self.track {
                Track::Context => &frame.lores,
                Track::Source => match mask::shape(
                    &self.control.shaping(),
                    frame.main.width(),
                    frame.main.height(),
                ) {
                    Shape::Nothing => {
                        // When media resumes, viewers need a fresh start.
                        force_key = true;
                        continue;
                    }
                    Shape::Full => &frame.main,
                    Shape::Only(rects) => {
                        let scratch = self.scratch.get_or_insert_with(|| {
                            I420Image::new(frame.main.width(), frame.main.height())
                        });
                        mask::apply(&frame.main, &rects, self.stamp_rows, scratch);
                        &*scratch
                    }
                },
            };
            let key = self.keyframe[self.track].take() | force_key;
            let captured = CaptureTime {
                at: frame.captured_at,
                wallclock_ms: frame.wallclock_ms,
            };
            let started = Instant::now();
            if let Err(e) = self.encoder.submit(image, captured, key) {
                tracing::warn!(track = self.track.name(), error = %e, "encode failed");
                if e.is_fatal() {
                    // Nothing more comes from this track; the watchdog and /healthz
                    // report the stall (the context track is the pulse).
                    tracing::error!(track = self.track.name(), "encoder stopped");
                    break;
                }
                force_key = true;
                continue;
            }
            m.encode_seconds.observe(started.elapsed().as_secs_f64());
            buf.clear();
            let unit = match self.encoder.poll(&mut buf) {
                Ok(Some(unit)) => unit,
                // Skipped by rate control, or still in a pipelined encoder.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(track = self.track.name(), error = %e, "encode failed");
                    force_key = true;
                    continue;
                }
            };
            force_key = false;
            if let Some(l) = &self.liveness {
                l.frame_encoded();
            }
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
            };
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
        if let Err(e) = self.encoder.finish(&mut rest) {
            tracing::debug!(track = self.track.name(), error = %e, "encoder drain failed");
        }
        for (unit, data) in rest {
            let _ = self.out.try_send(EncodedFrame {
                track: self.track,
                data: Arc::from(data),
                keyframe: unit.keyframe,
                captured_at: unit.captured.at,
            });
        }
    }
}
