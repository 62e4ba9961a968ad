//! Motion detection on the lores luma by background subtraction, with box tracking so the
//! ROI grows at once when something moves and shrinks gently, instead of flickering.
//!
//! The background is a running average that learns quickly where nothing moves and barely
//! at all under moving things, so a moving object is one solid blob (not just its leading
//! and trailing edges, as plain frame differencing gives) and leaves no trail. A pixel that
//! stays foreground without changing for [`ABSORB_RUNS`] runs is taken into the
//! background: that clears "ghosts" (background revealed where something stood when the
//! model started) and, in time, objects that stop.

use focusd_board::image::{Image, Plane};

use super::Detector;
use super::tracker::{Track, Tracker};
use crate::state::RoiBox;

/// Side of a motion cell in lores pixels.
const CELL: usize = 8;
/// Luma difference from the background that makes a pixel foreground.
const PIXEL_THRESHOLD: u16 = 20;
/// Foreground pixels (of 64) that make a cell active.
const CELL_PIXELS: u32 = 12;
/// Background learning rates per run, in 1/256: where it is background, and under motion.
const LEARN_BACKGROUND: i32 = 26;
const LEARN_FOREGROUND: i32 = 1;
/// Runs a foreground pixel may stay unchanged before it becomes background (1.3 s at 15 Hz).
const ABSORB_RUNS: u8 = 20;
/// How many detector runs a box outlives the motion that made it.
pub(crate) const HOLD_RUNS: u32 = 4;

/// The motion detector.
#[derive(Debug)]
pub struct MotionDetector {
    /// Background luma in 8.8 fixed point.
    background: Vec<u16>,
    /// The previous frame's luma.
    previous: Vec<u8>,
    /// Runs each pixel has been foreground without changing.
    still: Vec<u8>,
    /// Rows at the top to ignore (the test stamp changes every frame by design).
    ignore_top: usize,
    /// Margin added around each box, as a fraction of the frame width.
    margin: f64,
    tracker: Tracker,
}

impl MotionDetector {
    /// `ignore_top` rows are never motion; `margin_percent` pads every box.
    pub fn new(ignore_top: u32, margin_percent: f64) -> Self {
        Self {
            background: Vec::new(),
            previous: Vec::new(),
            still: Vec::new(),
            ignore_top: ignore_top as usize,
            margin: margin_percent / 100.0,
            // Moving shapes: a dead band would leave their trailing edges behind.
            tracker: Tracker::new(HOLD_RUNS, 0.0),
        }
    }

    /// Cells with enough foreground pixels; updates the background as it goes.
    fn active_cells(
        &mut self,
        luma: &[u8],
        w: usize,
        h: usize,
        stride: usize,
    ) -> (Vec<bool>, usize, usize) {
        let (cols, rows) = (w / CELL, h / CELL);
        let mut counts = vec![0u32; cols * rows];
        let first_row = self.ignore_top.div_ceil(CELL) * CELL;
        for y in first_row..rows * CELL {
            let row = &luma[y * stride..y * stride + cols * CELL];
            let span = y * w..y * w + cols * CELL;
            let bg = &mut self.background[span.clone()];
            let prev = &mut self.previous[span.clone()];
            let still = &mut self.still[span];
            let counts = &mut counts[(y / CELL) * cols..(y / CELL + 1) * cols];
            for (x, (&px, b)) in row.iter().zip(bg.iter_mut()).enumerate() {
                let level = *b >> 8;
                let foreground = (px as u16).abs_diff(level) > PIXEL_THRESHOLD;
                let changed = px.abs_diff(prev[x]) as u16 > PIXEL_THRESHOLD / 2;
                prev[x] = px;
                still[x] = if foreground && !changed {
                    still[x].saturating_add(1)
                } else {
                    0
                };
                if still[x] >= ABSORB_RUNS {
                    *b = (px as u16) << 8;
                    still[x] = 0;
                    continue;
                }
                counts[x / CELL] += u32::from(foreground);
                let rate = if foreground {
                    LEARN_FOREGROUND
                } else {
                    LEARN_BACKGROUND
                };
                let delta = ((px as i32) << 8) - *b as i32;
                *b = (*b as i32 + delta * rate / 256) as u16;
            }
        }
        (
            counts.iter().map(|&c| c >= CELL_PIXELS).collect(),
            cols,
            rows,
        )
    }

    /// Bounding boxes of 8-connected groups of active cells, in lores pixels.
    fn blobs(active: &[bool], cols: usize, rows: usize) -> Vec<Track> {
        let mut seen = vec![false; active.len()];
        let mut out = Vec::new();
        let mut stack = Vec::new();
        for start in 0..active.len() {
            if !active[start] || seen[start] {
                continue;
            }
            let (mut x0, mut y0, mut x1, mut y1) = (cols, rows, 0, 0);
            seen[start] = true;
            stack.push(start);
            while let Some(i) = stack.pop() {
                let (x, y) = (i % cols, i / cols);
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
                for ny in y.saturating_sub(1)..(y + 2).min(rows) {
                    for nx in x.saturating_sub(1)..(x + 2).min(cols) {
                        let j = ny * cols + nx;
                        if active[j] && !seen[j] {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
            out.push(Track::new(
                (x0 * CELL) as f64,
                (y0 * CELL) as f64,
                (x1 * CELL) as f64,
                (y1 * CELL) as f64,
                1.0,
            ));
        }
        out
    }
}

impl MotionDetector {
    /// Looks at one luma plane and returns the tracked motion boxes in percent of the
    /// frame.
    pub fn detect_plane(&mut self, luma: &Plane<'_>) -> Vec<RoiBox> {
        self.detect_luma(
            luma.data(),
            luma.width() as u32,
            luma.height() as u32,
            luma.stride(),
        )
    }

    /// Looks at one luma plane (`width` x `height`, rows `stride` bytes apart) and returns
    /// the tracked motion boxes in percent of the frame.
    pub fn detect_luma(
        &mut self,
        luma: &[u8],
        width: u32,
        height: u32,
        stride: usize,
    ) -> Vec<RoiBox> {
        let (w, h) = (width as usize, height as usize);
        if self.background.len() != w * h {
            let picture = || (0..h).flat_map(|y| &luma[y * stride..y * stride + w]);
            self.background = picture().map(|&p| (p as u16) << 8).collect();
            self.previous = picture().copied().collect();
            self.still = vec![0; w * h];
            self.tracker.clear();
            return Vec::new();
        }
        let (active, cols, rows) = self.active_cells(luma, w, h, stride);
        self.tracker.update(&Self::blobs(&active, cols, rows));
        let pad = self.margin * w as f64;
        self.tracker
            .tracks()
            .iter()
            .map(|t| RoiBox {
                x1: ((t.x0 - pad) / w as f64 * 100.0).clamp(0.0, 100.0),
                y1: ((t.y0 - pad) / h as f64 * 100.0).clamp(0.0, 100.0),
                x2: ((t.x1 + pad) / w as f64 * 100.0).clamp(0.0, 100.0),
                y2: ((t.y1 + pad) / h as f64 * 100.0).clamp(0.0, 100.0),
                label: "motion".into(),
                score: self.tracker.freshness(t),
                ..RoiBox::default()
            })
            .collect()
    }
}

impl Detector for MotionDetector {
    fn detect(&mut self, _at: std::time::Instant, _main: &Image, lores: &Image) -> Vec<RoiBox> {
        self.detect_plane(&lores.luma())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use focusd_board::source::{TestPattern, scene_boxes};

    fn covers(roi: &[RoiBox], x: f64, y: f64) -> bool {
        roi.iter()
            .any(|b| b.x1 <= x && x <= b.x2 && b.y1 <= y && y <= b.y2)
    }

    #[test]
    fn static_scene_has_no_roi() {
        let mut d = MotionDetector::new(10, 4.0);
        let luma = vec![90u8; 320 * 180];
        for _ in 0..5 {
            assert!(d.detect_luma(&luma, 320, 180, 320).is_empty());
        }
    }

    #[test]
    fn finds_the_moving_shapes_of_the_test_pattern() {
        let pattern = TestPattern::new((320, 180), 30.0);
        let mut img = Image::i420(320, 180);
        let mut d = MotionDetector::new(10, 4.0);
        let mut roi = vec![];
        let start = 5_000_000u64;
        for i in 0..20 {
            let ms = start + i * 66;
            pattern.draw(&mut img, ms);
            roi = d.detect_plane(&img.luma());
        }
        let last = start + 19 * 66;
        for b in scene_boxes(last as u32) {
            let (cx, cy) = ((b.x1 + b.x2) * 50.0, (b.y1 + b.y2) * 50.0);
            assert!(
                covers(&roi, cx, cy),
                "shape at {cx:.0},{cy:.0} not in {roi:?}"
            );
            assert!(
                covers(&roi, b.x1 * 100.0 + 1.0, b.y1 * 100.0 + 1.0),
                "corner of {b:?}"
            );
            assert!(
                covers(&roi, b.x2 * 100.0 - 1.0, b.y2 * 100.0 - 1.0),
                "corner of {b:?}"
            );
        }
        let area: f64 = roi.iter().map(|b| (b.x2 - b.x1) * (b.y2 - b.y1)).sum();
        assert!(
            area < 0.6 * 100.0 * 100.0,
            "ROI is not the whole frame: {roi:?}"
        );
        assert!(roi.iter().all(|b| b.y1 >= 0.0 && b.label == "motion"));
    }

    #[test]
    fn box_fades_after_motion_stops() {
        let mut d = MotionDetector::new(0, 0.0);
        let empty = vec![50u8; 160 * 96];
        let mut luma = empty.clone();
        d.detect_luma(&luma, 160, 96, 160);
        for y in 40..56 {
            luma[y * 160 + 40..y * 160 + 56].fill(200);
        }
        let roi = d.detect_luma(&luma, 160, 96, 160);
        assert_eq!(roi.len(), 1);
        assert!(
            (roi[0].x1 - 25.0).abs() < 0.1 && (roi[0].x2 - 35.0).abs() < 0.1,
            "solid blob: {roi:?}"
        );
        // An object that stops is absorbed after a while.
        let mut stopped = MotionDetector::new(0, 0.0);
        stopped.detect_luma(&empty, 160, 96, 160);
        let runs = (0..100)
            .take_while(|_| !stopped.detect_luma(&luma, 160, 96, 160).is_empty())
            .count();
        assert!(
            (ABSORB_RUNS as usize..ABSORB_RUNS as usize + HOLD_RUNS as usize + 2).contains(&runs),
            "{runs}"
        );
        // The object leaves: its box is held a little, then dropped.
        for _ in 0..HOLD_RUNS {
            assert_eq!(d.detect_luma(&empty, 160, 96, 160).len(), 1, "held");
        }
        assert!(
            d.detect_luma(&empty, 160, 96, 160).is_empty(),
            "dropped after hold"
        );
    }
}
