//! Region-of-interest detection. A [`Detector`] looks at lores frames and returns boxes;
//! [`spawn`] runs one on its own thread, always on the latest frame, so detection never
//! delays video. The ML detector of a later version joins behind the same trait.

mod motion;

use std::sync::Arc;
use std::time::{Duration, Instant};

use focusd_board::frame::PooledFrame;
use tokio_util::sync::CancellationToken;

pub use motion::MotionDetector;

use crate::metrics::Metrics;
use crate::slot::LatestSlot;
use crate::state::{Control, RoiBox};

/// Finds regions of interest in lores frames.
pub trait Detector: Send {
    /// Looks at one lores luma plane (`width` x `height`, tightly packed) and returns the
    /// current boxes in percent of the frame.
    fn detect(&mut self, luma: &[u8], width: u32, height: u32) -> Vec<RoiBox>;
}

/// Runs `detector` on its own thread until `shutdown`, at most `fps` times a second, and
/// writes its boxes into `control`.
pub fn spawn(
    mut detector: Box<dyn Detector>,
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
                let lores = &frame.lores;
                let boxes = detector.detect(lores.y(), lores.width(), lores.height());
                drop(frame);
                metrics.detector_runs.inc();
                control.set_roi(boxes);
            }
        })
}
