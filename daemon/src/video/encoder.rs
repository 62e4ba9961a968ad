//! One track's encoder thread: takes the newest frame from its slot while someone wants
//! the track, shapes it by mode ([`super::mask`]), encodes it and hands the access unit to
//! the hub's queue and the taps. A full queue drops the frame and makes the next one a
//! keyframe, so no viewer decodes a picture with a missing reference; the first picture
//! after a claim is a keyframe too. An encoder that fails for good is reopened with backoff
//! ([`super::reopen`]) while viewers stay connected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use focusd_board::encode::{EncodeError, VideoEncoder};
use focusd_board::frame::{CaptureTime, PooledFrame};
use focusd_board::image::Image;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::reopen::Reopening;
use crate::fanout::{EncodedTaps, HubSender};
use crate::service::liveness::Liveness;
use crate::service::metrics::Metrics;
use crate::state::{Control, Part};
use crate::track::{EncodedFrame, Track};
use crate::video::mask;
use crate::video::signals::{Demand, EncoderTargets, KeyframeRequests};
use crate::video::slot::LatestSlot;

/// Opens a track's encoder again after it failed (the spec and settings it was opened
/// with).
pub(super) type EncoderOpener = Box<dyn Fn() -> Result<Box<dyn VideoEncoder>, EncodeError> + Send>;

/// One track's encoder thread.
pub(super) struct EncoderWorker {
    pub(super) track: Track,
    /// The encoder; `None` only while it is being opened again after a failure.
    pub(super) encoder: Option<Box<dyn VideoEncoder>>,
    /// How to open it again.
    pub(super) reopen: EncoderOpener,
    /// Marked at each turn of the loop (the encoder is not stuck) and each reopen attempt
    /// (the watchdog stays fed while a device is away).
    pub(super) liveness: Liveness,
    /// Whether anyone wants this track: without a claim, pictures are not encoded.
    pub(super) demand: Demand,
    /// The bitrate to aim at, checked before each picture.
    pub(super) targets: EncoderTargets,
    pub(super) frames: Arc<LatestSlot<Arc<PooledFrame>>>,
    pub(super) keyframe: KeyframeRequests,
    pub(super) control: Arc<Control>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) out: HubSender,
    /// The RTSP door's copy of each frame.
    pub(super) taps: EncodedTaps,
    /// Rows of test stamp kept through masking.
    pub(super) stamp_rows: u32,
    /// Masked copy of the main image (VISION / HYBRID), made on first use.
    pub(super) scratch: Option<Image>,
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
        let mut reopening = Reopening::new(self.liveness.clone());
        loop {
            if !reopening.wait(shutdown) {
                return false;
            }
            match (self.reopen)() {
                Ok(encoder) => {
                    tracing::info!(track = self.track.name(), "encoder open again");
                    self.encoder = Some(encoder);
                    self.control.recovered(part);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(track = self.track.name(), error = %e, "cannot reopen the encoder; retrying with backoff");
                    self.control.fault(part, e.to_string());
                }
            }
        }
    }

    pub(super) fn run(mut self, shutdown: CancellationToken) {
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
    use focusd_board::encode::{EncodedUnit, EncoderSettings, OpenH264Encoder};
    use focusd_board::image::PixelFormat;
    use focusd_board::source::TestPattern;

    use super::*;
    use crate::state::command::Mode;
    use crate::track::TrackMap;
    use crate::video::capture::Capturer;

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
