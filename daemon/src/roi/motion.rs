//! Motion detection by frame differencing on the lores luma, with box tracking so the ROI
//! grows at once when something moves and shrinks gently, instead of flickering.

use super::Detector;
use crate::state::RoiBox;

/// Side of a motion cell in lores pixels.
const CELL: usize = 8;
/// Mean absolute luma difference over a cell that counts as motion.
const CELL_THRESHOLD: u32 = 4;
/// How many detector runs a box outlives the motion that made it.
const HOLD_RUNS: u32 = 6;
/// Fraction of the gap an edge moves inward per run when a box shrinks.
const SHRINK: f64 = 0.5;

/// A tracked box in lores pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Track {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
    /// Runs since motion last touched this box.
    idle: u32,
}

impl Track {
    fn overlaps(&self, o: &Track) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    fn union(&self, o: &Track) -> Track {
        Track {
            x0: self.x0.min(o.x0),
            y0: self.y0.min(o.y0),
            x1: self.x1.max(o.x1),
            y1: self.y1.max(o.y1),
            idle: self.idle.min(o.idle),
        }
    }
}

/// The motion detector.
#[derive(Debug)]
pub struct MotionDetector {
    previous: Vec<u8>,
    /// Rows at the top to ignore (the test stamp changes every frame by design).
    ignore_top: usize,
    /// Margin added around each box, as a fraction of the frame width.
    margin: f64,
    tracks: Vec<Track>,
}

impl MotionDetector {
    /// `ignore_top` rows are never motion; `margin_percent` pads every box.
    pub fn new(ignore_top: u32, margin_percent: f64) -> Self {
        Self {
            previous: Vec::new(),
            ignore_top: ignore_top as usize,
            margin: margin_percent / 100.0,
            tracks: Vec::new(),
        }
    }

    /// Cells whose mean difference from the previous frame exceeds the threshold.
    fn active_cells(&self, luma: &[u8], w: usize, h: usize) -> (Vec<bool>, usize, usize) {
        let (cols, rows) = (w / CELL, h / CELL);
        let mut active = vec![false; cols * rows];
        let first_row = self.ignore_top.div_ceil(CELL);
        for cy in first_row..rows {
            for cx in 0..cols {
                let mut sum = 0u32;
                for y in cy * CELL..(cy + 1) * CELL {
                    let o = y * w + cx * CELL;
                    for (a, b) in luma[o..o + CELL].iter().zip(&self.previous[o..o + CELL]) {
                        sum += a.abs_diff(*b) as u32;
                    }
                }
                active[cy * cols + cx] = sum > CELL_THRESHOLD * (CELL * CELL) as u32;
            }
        }
        (active, cols, rows)
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
                // Two-cell reach joins the leading and trailing edges of one moving object.
                for ny in y.saturating_sub(2)..(y + 3).min(rows) {
                    for nx in x.saturating_sub(2)..(x + 3).min(cols) {
                        let j = ny * cols + nx;
                        if active[j] && !seen[j] {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
            out.push(Track {
                x0: (x0 * CELL) as f64,
                y0: (y0 * CELL) as f64,
                x1: (x1 * CELL) as f64,
                y1: (y1 * CELL) as f64,
                idle: 0,
            });
        }
        out
    }

    fn update_tracks(&mut self, blobs: Vec<Track>) {
        let mut next: Vec<Track> = Vec::new();
        for track in &self.tracks {
            let touching: Vec<&Track> = blobs.iter().filter(|b| b.overlaps(track)).collect();
            if touching.is_empty() {
                if track.idle < HOLD_RUNS {
                    next.push(Track {
                        idle: track.idle + 1,
                        ..*track
                    });
                }
                continue;
            }
            // Grow at once to cover the motion; shrink each edge part of the way.
            let target = touching[1..].iter().fold(*touching[0], |a, b| a.union(b));
            let ease = |now: f64, want: f64, grows: bool| {
                if grows {
                    want
                } else {
                    now + (want - now) * SHRINK
                }
            };
            next.push(Track {
                x0: ease(track.x0, target.x0, target.x0 < track.x0),
                y0: ease(track.y0, target.y0, target.y0 < track.y0),
                x1: ease(track.x1, target.x1, target.x1 > track.x1),
                y1: ease(track.y1, target.y1, target.y1 > track.y1),
                idle: 0,
            });
        }
        for blob in blobs {
            if !next.iter().any(|t| t.overlaps(&blob)) {
                next.push(blob);
            }
        }
        // Merge boxes that came to overlap.
        let mut merged: Vec<Track> = Vec::new();
        for t in next {
            match merged.iter_mut().find(|m| m.overlaps(&t)) {
                Some(m) => *m = m.union(&t),
                None => merged.push(t),
            }
        }
        self.tracks = merged;
    }
}

impl Detector for MotionDetector {
    fn detect(&mut self, luma: &[u8], width: u32, height: u32) -> Vec<RoiBox> {
        let (w, h) = (width as usize, height as usize);
        if self.previous.len() != luma.len() {
            self.previous = luma.to_vec();
            self.tracks.clear();
            return Vec::new();
        }
        let (active, cols, rows) = self.active_cells(luma, w, h);
        self.previous.copy_from_slice(luma);
        self.update_tracks(Self::blobs(&active, cols, rows));
        let pad = self.margin * w as f64;
        self.tracks
            .iter()
            .map(|t| RoiBox {
                x1: ((t.x0 - pad) / w as f64 * 100.0).clamp(0.0, 100.0),
                y1: ((t.y0 - pad) / h as f64 * 100.0).clamp(0.0, 100.0),
                x2: ((t.x1 + pad) / w as f64 * 100.0).clamp(0.0, 100.0),
                y2: ((t.y1 + pad) / h as f64 * 100.0).clamp(0.0, 100.0),
                label: "motion".into(),
                score: if t.idle == 0 {
                    1.0
                } else {
                    1.0 - t.idle as f32 / (HOLD_RUNS + 1) as f32
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use focusd_board::frame::I420Image;
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
            assert!(d.detect(&luma, 320, 180).is_empty());
        }
    }

    #[test]
    fn finds_the_moving_shapes_of_the_test_pattern() {
        let pattern = TestPattern::new((320, 180), 30.0);
        let mut img = I420Image::new(320, 180);
        let mut d = MotionDetector::new(10, 4.0);
        let mut roi = vec![];
        let start = 5_000_000u64;
        for i in 0..20 {
            let ms = start + i * 66;
            pattern.draw(&mut img, ms);
            roi = d.detect(img.y(), 320, 180);
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
        let mut luma = vec![50u8; 160 * 96];
        d.detect(&luma, 160, 96);
        for y in 40..56 {
            luma[y * 160 + 40..y * 160 + 56].fill(200);
        }
        assert_eq!(d.detect(&luma, 160, 96).len(), 1);
        for _ in 0..HOLD_RUNS {
            assert_eq!(d.detect(&luma, 160, 96).len(), 1, "held");
        }
        assert!(d.detect(&luma, 160, 96).is_empty(), "dropped after hold");
    }
}
