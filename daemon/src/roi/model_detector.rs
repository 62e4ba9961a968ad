//! The ML detector: motion proposes, the model confirms (as Frigate does).
//!
//! Each run, the motion detector on the lores frame proposes regions; the regions of the
//! people already tracked are added (so someone who stops moving stays found), and every
//! few runs the whole frame (so someone who never moved is found). Each region becomes a
//! crop of the main frame, squared and at least a third of the frame high, because the
//! default model is made for people who fill a good part of its 224-pixel input: a
//! pedestrian 80 pixels high in a wide 576-line scene is a speck in the whole frame but
//! well seen in a 192-pixel crop. The model runs on each crop; its boxes, mapped back to
//! the frame, feed a [`Tracker`] with hysteresis: a new track needs the score threshold,
//! a tracked person stays with half of it, and is held for a second after the last
//! sighting. Boxes under a minimum size are ignored and the margin pads what is sent.
//!
//! The ROI is the tracked people plus every motion region that holds one of them. The
//! default model finds one person per crop (it is made for one person in view), so two
//! people walking together would otherwise leave one of them out. Such a region stays
//! confirmed while motion follows it ([`ConfirmedMotion`]), over the runs in which the
//! model misses the person; motion that never held a person (leaves, shadows, lights) is
//! left out.

use focusd_board::image::Image;

use super::Detector;
use super::confirmed::ConfirmedMotion;
use super::model::input::{Region, letterbox};
use super::model::{Detection, Model};
use super::motion::MotionDetector;
use super::tracker::{Track, Tracker};
use crate::state::RoiBox;

/// Crops per run at most: bounds the run time.
const MAX_CROPS: usize = 4;
/// Smallest crop side, as a fraction of the frame height.
const MIN_CROP: f64 = 1.0 / 3.0;
/// A crop's side is this much the proposal's longer side (context around the person).
const CROP_GROWTH: f64 = 1.4;
/// The whole frame is looked at every this many runs.
const FULL_FRAME_EVERY: u64 = 10;
/// Detections smaller than this (percent of the frame height) are ignored.
const MIN_SIDE_PERCENT: f64 = 3.0;
/// Slack under this fraction of a person's box is kept: each move of a mask edge costs bits.
const DEAD_BAND: f64 = 0.2;
/// A moving region stays confirmed this many holds after a person was last seen in it.
const CONFIRMED_HOLDS: u32 = 3;
/// A tracked box stays while sightings score at least this fraction of the threshold.
const KEEP_FRACTION: f32 = 0.5;

/// What the model detector needs to know besides the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelOptions {
    /// Labels to keep (e.g. `person`); others are dropped.
    pub labels: Vec<String>,
    /// Score a detection needs to start a track.
    pub threshold: f32,
    /// Margin added around each box, percent of the frame width.
    pub margin_percent: f64,
    /// Runs a box outlives its last sighting.
    pub hold_runs: u32,
    /// Rows at the top of the lores frame motion ignores (the test stamp).
    pub ignore_top: u32,
}

/// Motion-proposed, model-confirmed ROI.
#[derive(Debug)]
pub struct ModelDetector {
    model: Model,
    /// Class indices of the kept labels.
    keep: Vec<usize>,
    options: ModelOptions,
    motion: MotionDetector,
    tracker: Tracker,
    /// Motion regions that held a person, followed while they move.
    confirmed: ConfirmedMotion,
    runs: u64,
    /// Reused input buffer.
    rgb: Vec<u8>,
    /// Whether a failed run was logged (once is enough: it fails the same way each run).
    warned: bool,
}

impl ModelDetector {
    pub fn new(model: Model, options: ModelOptions) -> Self {
        let keep = model
            .labels()
            .iter()
            .enumerate()
            .filter(|(_, l)| super::category::wanted(&options.labels, l))
            .map(|(i, _)| i)
            .collect();
        Self {
            model,
            keep,
            motion: MotionDetector::new(options.ignore_top, 0.0),
            tracker: Tracker::new(options.hold_runs, DEAD_BAND),
            confirmed: ConfirmedMotion::new(options.hold_runs * CONFIRMED_HOLDS),
            options,
            runs: 0,
            rgb: Vec::new(),
            warned: false,
        }
    }

    /// Runs the model on `region` of `img` and returns kept detections in frame pixels.
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
        found
            .into_iter()
            .filter(|d| self.keep.contains(&d.class))
            .map(|d| {
                let (x0, y0) = placement.to_frame(d.x0, d.y0);
                let (x1, y1) = placement.to_frame(d.x1, d.y1);
                Detection {
                    x0: x0 as f32,
                    y0: y0 as f32,
                    x1: x1 as f32,
                    y1: y1 as f32,
                    ..d
                }
            })
            .collect()
    }

    /// Regions to look at this run, in frame pixels: motion no tracked person explains
    /// first (largest first), then the tracked people, least recently seen first.
    fn regions(&self, main: &Image, motion: &[Track]) -> Vec<Region> {
        let whole = Region::whole(main);
        let (w, h) = (whole.w, whole.h);
        let tracks = self.tracker.tracks();
        let mut fresh: Vec<&Track> = motion
            .iter()
            .filter(|m| !tracks.iter().any(|t| t.overlaps(m)))
            .collect();
        fresh.sort_by(|a, b| b.area().total_cmp(&a.area()));
        let mut known: Vec<&Track> = tracks.iter().collect();
        known.sort_by_key(|t| std::cmp::Reverse(t.idle));
        let mut regions: Vec<Region> = Vec::new();
        for &Track { x0, y0, x1, y1, .. } in fresh.into_iter().chain(known) {
            let side = ((x1 - x0).max(y1 - y0) * CROP_GROWTH)
                .max(h * MIN_CROP)
                .min(w.min(h));
            let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
            let r = Region {
                x: (cx - side / 2.0).clamp(0.0, w - side),
                y: (cy - side / 2.0).clamp(0.0, h - side),
                w: side,
                h: side,
            };
            // A region mostly inside one already chosen adds nothing.
            let inside = |o: &Region| {
                let iw = (r.x + r.w).min(o.x + o.w) - r.x.max(o.x);
                let ih = (r.y + r.h).min(o.y + o.h) - r.y.max(o.y);
                iw.max(0.0) * ih.max(0.0) > 0.8 * r.w * r.h
            };
            if !regions.iter().any(inside) {
                regions.push(r);
            }
        }
        regions.truncate(MAX_CROPS);
        if self.runs.is_multiple_of(FULL_FRAME_EVERY) {
            regions.push(whole);
        }
        regions
    }
}

impl Detector for ModelDetector {
    fn detect(&mut self, main: &Image, lores: &Image) -> Vec<RoiBox> {
        let (w, h) = (main.width() as f64, main.height() as f64);
        // Motion regions in frame pixels.
        let motion: Vec<Track> = self
            .motion
            .detect_plane(&lores.luma())
            .iter()
            .map(|p| {
                Track::new(
                    p.x1 / 100.0 * w,
                    p.y1 / 100.0 * h,
                    p.x2 / 100.0 * w,
                    p.y2 / 100.0 * h,
                    0.0,
                )
            })
            .collect();
        let keep_score = self.options.threshold * KEEP_FRACTION;
        let mut found = Vec::new();
        for region in self.regions(main, &motion) {
            found.extend(self.look(main, region, keep_score));
        }
        self.runs += 1;
        let found = super::model::suppress(found, 0.3);
        let min_side = MIN_SIDE_PERCENT / 100.0 * h;
        let tracks = self.tracker.tracks();
        let sightings: Vec<Track> = found
            .iter()
            .map(|d| {
                Track::new(d.x0 as f64, d.y0 as f64, d.x1 as f64, d.y1 as f64, d.score)
                    .with_class(d.class)
            })
            .filter(|t| t.x1 - t.x0 >= min_side && t.y1 - t.y0 >= min_side)
            // Hysteresis: a weak sighting only keeps a person already tracked.
            .filter(|t| t.score >= self.options.threshold || tracks.iter().any(|k| k.overlaps(t)))
            .collect();
        self.tracker.update(&sightings);
        let pad = self.options.margin_percent / 100.0 * w;
        let roi_box = |t: &Track, score: f32| RoiBox {
            x1: ((t.x0 - pad) / w * 100.0).clamp(0.0, 100.0),
            y1: ((t.y0 - pad) / h * 100.0).clamp(0.0, 100.0),
            x2: ((t.x1 + pad) / w * 100.0).clamp(0.0, 100.0),
            y2: ((t.y1 + pad) / h * 100.0).clamp(0.0, 100.0),
            label: self.model.labels()[t.class].clone(),
            score,
        };
        let people = self.tracker.tracks();
        let mut roi: Vec<RoiBox> = people
            .iter()
            .map(|t| roi_box(t, t.score * self.tracker.freshness(t)))
            .collect();
        // A motion region with a person in it is kept whole: the model finds one person
        // per crop, and people walking together move as one region. It stays confirmed
        // while it keeps moving, over the runs in which the model misses the person.
        self.confirmed.update(&motion, people);
        for c in self.confirmed.regions() {
            roi.push(roi_box(
                &c.region,
                c.region.score * self.confirmed.freshness(c),
            ));
        }
        roi
    }
}
