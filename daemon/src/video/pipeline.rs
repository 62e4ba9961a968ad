//! The video pipeline's wiring: opens the source and both tracks' encoders, starts the
//! capture thread ([`super::capture`]) and one encoder thread per track
//! ([`super::encoder`]), and hands out the signals and outputs the rest of the daemon
//! uses (keyframe requests, demand, targets, the pulse, the picture feed, the taps).
//!
//! Each slot between them keeps only the newest frame, so a slow encoder or detector skips
//! frames instead of delaying capture. An encoder runs only while someone claims its track
//! ([`Demand`]): with no viewer, capture and the detector go on and nothing is encoded.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use focusd_board::encode::{self, EncodeError, EncoderSettings, EncoderSpec, VideoEncoder};
use focusd_board::frame::PooledFrame;
use focusd_board::image::Layout;
use focusd_board::source::SourceError;
use focusd_board::stamp;
use tokio_util::sync::CancellationToken;

use super::capture::{CaptureSpec, CaptureThread, Capturer};
use super::encoder::EncoderWorker;
use crate::config::VideoSettings;
use crate::fanout::{EncodedTaps, FrameFeed, HubSender};
use crate::service::liveness::Liveness;
use crate::service::metrics::Metrics;
use crate::state::Control;
use crate::track::{Track, TrackMap};
use crate::video::signals::{Demand, EncoderTargets, KeyframeRequests};
use crate::video::slot::LatestSlot;

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
        out: HubSender,
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
