//! The ML detector: motion proposes, the model confirms, the identity tracker follows.
//!
//! Every call (each frame the ROI thread takes, several a second) runs the motion detector
//! on the lores frame, a fraction of a millisecond. The model runs only where and when it
//! helps:
//! * **where**: the region around the motion and the tracked objects' predicted boxes
//!   (grown by [`LOOK_GROWTH`], at least [`MIN_LOOK`] of the frame's height a side), or the
//!   whole frame once that region is most of it; and the whole frame every
//!   [`FULL_FRAME_EVERY`], for objects that never moved. With no motion and nothing tracked
//!   the model does not run between those looks, so a still scene costs almost nothing.
//! * **when**: within a CPU budget (`roi.cpu_percent` of one core): after a run that took
//!   `t`, the next waits `t / budget`.
//!
//! The detections of the wanted labels feed the [`ObjectTracker`] (a new object needs the
//! score threshold, a tracked one is continued at [`KEEP_FRACTION`] of it); between runs
//! the tracker's predictions move the boxes on. The ROI is one box per object: its box
//! predicted to the frame's time, grown ahead of it by its speed times the time to the next
//! run (so a walker never leaves the kept area between runs) and by the margin. Motion no object
//! explains is not kept: VISION sends nothing but the stamp band for leaves and shadows.

use std::time::{Duration, Instant};

use focusd_board::image::Image;

use super::Detector;
use super::category::{self, Category};
use super::model::Model;
use super::model::input::{Region, letterbox};
use super::motion::MotionDetector;
use super::objects::{Detection, ObjectTracker, Rect, TrackState, TrackerConfig};
use crate::config::RoiSettings;
use crate::state::RoiBox;

/// The looked-at region is the region of interest grown by this fraction a side.
const LOOK_GROWTH: f64 = 0.3;
/// Smallest side of the looked-at region, as a fraction of the frame height: the model's
/// objects need some context around them.
const MIN_LOOK: f64 = 0.4;
/// A region covering more than this share of the frame is looked at as the whole frame.
const MOST_OF_THE_FRAME: f64 = 0.6;
/// The whole frame is looked at this often, motion or not.
const FULL_FRAME_EVERY: Duration = Duration::from_secs(10);
/// Detections smaller than this (percent of the frame height) are ignored.
const MIN_SIDE_PERCENT: f64 = 2.0;
/// A tracked object is continued by detections scoring this fraction of the threshold.
const KEEP_FRACTION: f32 = 0.6;
/// The kept area leads an object by at most this long of its motion (a wrong velocity must
/// not blow a box up).
const MAX_LEAD: Duration = Duration::from_secs(2);

/// What the model detector needs to know besides the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelOptions {
    /// Categories or model classes to keep (`roi.labels`); others are dropped.
    pub labels: Vec<String>,
    /// Score a detection needs to start a track.
    pub threshold: f32,
    /// Margin added around each box, percent of the frame width.
    pub margin_percent: f64,
    /// Share of one core the model may use, 0–1 (`roi.cpu_percent` / 100).
    pub cpu_budget: f64,
    /// Rows at the top of the lores frame motion ignores (the test stamp).
    pub ignore_top: u32,
}

impl ModelOptions {
    /// The options `[roi]` resolves to; `stamp_rows` as [`ModelOptions::ignore_top`].
    pub fn from_settings(settings: &RoiSettings, stamp_rows: u32) -> Self {
        Self {
            labels: settings.labels.clone(),
            threshold: settings.threshold,
            margin_percent: settings.margin_percent,
            cpu_budget: settings.cpu_percent / 100.0,
            ignore_top: stamp_rows,
        }
    }
}

/// Motion-proposed, model-confirmed, tracked ROI.
#[derive(Debug)]
pub struct ModelDetector {
    model: Model,
    /// Per class of the model: its category if its label is wanted.
    wanted: Vec<Option<Category>>,
    options: ModelOptions,
    motion: MotionDetector,
    objects: ObjectTracker,
    /// When the model may run next (the budget), `None` before the first run.
    next_run: Option<Instant>,
    /// When the whole frame was last looked at.
    last_full: Option<Instant>,
    /// Reused input buffer.
    rgb: Vec<u8>,
    /// Whether a failed run was logged (once is enough: it fails the same way each run).
    warned: bool,
    /// Model runs so far, and their total time (for the figures).
    runs: u64,
    busy: Duration,
}

impl ModelDetector {
    pub fn new(model: Model, options: ModelOptions) -> Self {
        let wanted = model
            .labels()
            .iter()
            .map(|l| category::wanted(&options.labels, l).then(|| Category::of(l)))
            .collect();
        Self {
            model,
            wanted,
            motion: MotionDetector::new(options.ignore_top, 0.0),
            objects: ObjectTracker::new(TrackerConfig::default()),
            options,
            next_run: None,
            last_full: None,
            rgb: Vec::new(),
            warned: false,
            runs: 0,
            busy: Duration::ZERO,
        }
    }

    /// The tracker (for tests and figures).
    pub fn objects(&self) -> &ObjectTracker {
        &self.objects
    }

    /// Model runs so far and the time they took.
    pub fn model_runs(&self) -> (u64, Duration) {
        (self.runs, self.busy)
    }

    /// Runs the model on `region` of `img` and returns the wanted detections scoring at
    /// least `min_score`, in frame pixels.
    pub fn look(&mut self, img: &Image, region: Region, min_score: f32) -> Vec<Detection> {
        let placement = letterbox(img, region, self.model.input_size(), &mut self.rgb);
        let found = match self.model.detect(&self.rgb, min_score) {
            Ok(found) => found,
            Err(e) => {
                if !std::mem::replace(&mut self.warned, true) {
                    tracing::warn!("ROI model run failed (logged once): {e}");
                }
                return Vec::new();
            }
        };
        let min_side = MIN_SIDE_PERCENT / 100.0 * img.height() as f64;
        found
            .into_iter()
            .filter_map(|d| {
                let category = self.wanted.get(d.class).copied().flatten()?;
                let (x0, y0) = placement.to_frame(d.x0, d.y0);
                let (x1, y1) = placement.to_frame(d.x1, d.y1);
                let rect = Rect { x0, y0, x1, y1 };
                (rect.width() >= min_side && rect.height() >= min_side).then(|| Detection {
                    rect,
                    score: d.score,
                    category,
                    class: self.model.labels()[d.class].clone(),
                })
            })
            .collect()
    }

    /// Where to look at `at`, in frame pixels, or `None` when there is nothing to look for
    /// and no whole-frame look is due.
    fn region(&self, at: Instant, main: &Image, motion: &[Rect]) -> Option<Region> {
        let whole = Region::whole(main);
        let full_due = self
            .last_full
            .is_none_or(|t| at.saturating_duration_since(t) >= FULL_FRAME_EVERY);
        let predicted = self.objects.predict(at).map(|(_, r)| r);
        let interest = motion.iter().copied().chain(predicted).reduce(|a, b| Rect {
            x0: a.x0.min(b.x0),
            y0: a.y0.min(b.y0),
            x1: a.x1.max(b.x1),
            y1: a.y1.max(b.y1),
        });
        let Some(r) = interest else {
            return full_due.then_some(whole);
        };
        if full_due {
            return Some(whole);
        }
        let min_side = MIN_LOOK * whole.h;
        let w = (r.width() * (1.0 + 2.0 * LOOK_GROWTH))
            .max(min_side)
            .min(whole.w);
        let h = (r.height() * (1.0 + 2.0 * LOOK_GROWTH))
            .max(min_side)
            .min(whole.h);
        if w * h > MOST_OF_THE_FRAME * whole.w * whole.h {
            return Some(whole);
        }
        let (cx, cy) = r.centre();
        Some(Region {
            x: (cx - w / 2.0).clamp(0.0, whole.w - w),
            y: (cy - h / 2.0).clamp(0.0, whole.h - h),
            w,
            h,
        })
    }
}

impl Detector for ModelDetector {
    fn detect(&mut self, at: Instant, main: &Image, lores: &Image) -> Vec<RoiBox> {
        let (w, h) = (main.width() as f64, main.height() as f64);
        // Motion regions in frame pixels.
        let motion: Vec<Rect> = self
            .motion
            .detect_plane(&lores.luma())
            .iter()
            .map(|p| Rect {
                x0: p.x1 / 100.0 * w,
                y0: p.y1 / 100.0 * h,
                x1: p.x2 / 100.0 * w,
                y1: p.y2 / 100.0 * h,
            })
            .collect();
        let due = self.next_run.is_none_or(|t| at >= t);
        let region = if due {
            self.region(at, main, &motion)
        } else {
            None
        };
        if let Some(region) = region {
            let begun = Instant::now();
            let keep = self.options.threshold * KEEP_FRACTION;
            let found = self.look(main, region, keep);
            let took = begun.elapsed();
            self.runs += 1;
            self.busy += took;
            if region == Region::whole(main) {
                self.last_full = Some(at);
            }
            // New objects need the threshold; weaker sightings only continue tracked ones.
            let known: Vec<Rect> = self.objects.predict(at).map(|(_, r)| r).collect();
            let found: Vec<Detection> = found
                .into_iter()
                .filter(|d| {
                    d.score >= self.options.threshold || known.iter().any(|k| k.iou(&d.rect) > 0.1)
                })
                .collect();
            let looked = Rect {
                x0: region.x,
                y0: region.y,
                x1: region.x + region.w,
                y1: region.y + region.h,
            };
            self.objects.observe(at, &found, &[looked]);
            self.next_run = Some(at + took.div_f64(self.options.cpu_budget.clamp(0.01, 1.0)));
        } else {
            self.objects.tick(at);
        }
        // Each box leads its object by the time to the next run.
        let lead = self
            .next_run
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(at))
            .min(MAX_LEAD)
            .as_secs_f64();
        let pad = self.options.margin_percent / 100.0 * w;
        let config = *self.objects.config();
        // Tentative objects are kept too (a newcomer is shown from its first sighting; a
        // false one costs a few bits for a run or two), and reported as such.
        self.objects
            .tracks()
            .iter()
            .map(|t| {
                let object = t.predicted(at, &config);
                let (vx, vy) = t.velocity;
                // Grown ahead of the object only: behind it is where it was.
                let kept = Rect {
                    x0: object.x0 - pad + vx.min(0.0) * lead,
                    y0: object.y0 - pad + vy.min(0.0) * lead,
                    x1: object.x1 + pad + vx.max(0.0) * lead,
                    y1: object.y1 + pad + vy.max(0.0) * lead,
                };
                let pct = |v: f64, side: f64| (v / side * 100.0).clamp(0.0, 100.0);
                // A lost object fades: it may have gone.
                let score = match t.state {
                    TrackState::Lost => t.score * 0.5,
                    _ => t.score,
                };
                RoiBox {
                    x1: pct(kept.x0, w),
                    y1: pct(kept.y0, h),
                    x2: pct(kept.x1, w),
                    y2: pct(kept.y1, h),
                    label: t.category.as_str().to_string(),
                    score,
                    id: Some(t.id),
                    sub_label: Some(t.class.clone()),
                    object: Some(crate::state::command::Rect {
                        x1: pct(object.x0, w),
                        y1: pct(object.y0, h),
                        x2: pct(object.x1, w),
                        y2: pct(object.y1, h),
                    }),
                    velocity: Some([vx / w * 100.0, vy / h * 100.0]),
                    stationary: Some(t.stationary),
                    state: Some(
                        match t.state {
                            TrackState::Tentative => "tentative",
                            TrackState::Lost => "lost",
                            _ => "confirmed",
                        }
                        .to_string(),
                    ),
                }
            })
            .collect()
    }
}
