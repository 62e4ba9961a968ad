//! Region-of-interest detection. A [`Detector`] looks at frames and returns boxes;
//! [`spawn`] builds the configured one and runs it on its own thread, always on the latest
//! frame, so detection never delays video.
//!
//! Detectors: [`MotionDetector`] (background subtraction on the lores frame) and
//! [`ModelDetector`] (motion proposes, a detection [`model`] confirms). A model that cannot
//! be used is reported once, clearly, and motion runs in its place.

pub mod category;
pub mod model;
mod model_detector;
mod motion;
pub mod objects;
mod tracker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use focusd_board::frame::PooledFrame;
use focusd_board::image::Image;
use tokio_util::sync::CancellationToken;

pub use model::{Model, ModelError};
pub use model_detector::{ModelDetector, ModelOptions};
pub use motion::MotionDetector;

use crate::config::{DetectorKind, RoiSettings};
use crate::service::metrics::Metrics;
use crate::state::{Control, RoiBox};
use crate::video::slot::LatestSlot;

/// Finds regions of interest in frames.
///
/// Called on the ROI thread only, one frame at a time; it may take as long as the model
/// needs (video never waits for it) and must not block on anything else.
pub trait Detector: Send {
    /// Looks at one frame captured at `at` (`main` at full size, `lores` as the context
    /// track has it) and returns the current boxes in percent of the frame.
    fn detect(&mut self, at: Instant, main: &Image, lores: &Image) -> Vec<RoiBox>;
}

/// Builds the detector `settings` ask for. A model that cannot be loaded gives the motion
/// detector and the reason, for the caller to report.
pub fn build(
    settings: &RoiSettings,
    stamp_rows: u32,
) -> (Option<Box<dyn Detector>>, Option<ModelError>) {
    let motion = || Box::new(MotionDetector::new(stamp_rows, settings.margin_percent));
    match settings.kind {
        DetectorKind::Off => (None, None),
        DetectorKind::Motion => (Some(motion()), None),
        DetectorKind::Model => {
            let loaded = match &settings.model {
                Some(path) => Model::load(path),
                None => Model::default_model(),
            }
            .and_then(|m| {
                if m.labels()
                    .iter()
                    .any(|l| category::wanted(&settings.labels, l))
                {
                    Ok(m)
                } else {
                    Err(ModelError::Labels {
                        model: m.name().to_string(),
                        wanted: settings.labels.clone(),
                        // The first few are enough to show what the model calls things.
                        known: m.labels().iter().take(8).cloned().collect(),
                    })
                }
            });
            match loaded {
                Ok(model) => {
                    let options = ModelOptions::from_settings(settings, stamp_rows);
                    (Some(Box::new(ModelDetector::new(model, options))), None)
                }
                Err(e) => (Some(motion()), Some(e)),
            }
        }
    }
}

/// Builds the configured detector on its own thread (a model takes a moment to plan, and
/// video must not wait for it), then runs it until `shutdown`, at most `fps` times a
/// second, writing its boxes into `control`.
pub fn spawn(
    settings: RoiSettings,
    stamp_rows: u32,
    frames: Arc<LatestSlot<Arc<PooledFrame>>>,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    fps: f64,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let interval = Duration::from_secs_f64(1.0 / fps);
    std::thread::Builder::new()
        .name("focusd-roi".into())
        .spawn(move || {
            let started = Instant::now();
            let (detector, failure) = build(&settings, stamp_rows);
            let running = match (&failure, &detector) {
                (Some(e), _) => {
                    tracing::error!("ROI model not used, falling back to motion detection: {e}");
                    metrics.detector_fallback.inc();
                    "motion"
                }
                (None, None) => "off",
                (None, Some(_)) => settings.kind.as_str(),
            };
            tracing::info!(
                "ROI detector: {running} ({} ms to load)",
                started.elapsed().as_millis()
            );
            let Some(mut detector) = detector else {
                return;
            };
            let mut next = Instant::now();
            while !shutdown.is_cancelled() {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                next = Instant::now() + interval;
                let Some(frame) = frames.take_timeout(Duration::from_millis(200)) else {
                    continue;
                };
                let begun = Instant::now();
                let boxes = detector.detect(frame.captured_at, &frame.main, &frame.lores);
                drop(frame);
                metrics.detector_runs.inc();
                metrics
                    .detector_busy_us
                    .add(begun.elapsed().as_micros() as u64);
                control.set_roi(boxes);
            }
        })
}
