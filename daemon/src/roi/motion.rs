//! Motion detection on the lores luma by background subtraction, with box tracking so the
//! ROI grows at once when something moves and shrinks gently, instead of flickering.
//!
//! The background is a running average that learns quickly where nothing moves and barely
//! at all under moving things, so a moving object is one solid blob (not just its leading
//! and trailing edges, as plain frame differencing gives) and leaves no trail. A pixel that
//! stays foreground without changing for [`ABSORB_RUNS`] runs is taken into the
//! background: that clears "ghosts" (background revealed where something stood when the
//! model started) and, in time, objects that stop.

use super::Detector;
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
const HOLD_RUNS: u32 = 4;
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

    fn area(&self) -> f64 {
        (self.x1 - self.x0).max(0.0) * (self.y1 - self.y0).max(0.0)
    }

    fn overlap_area(&self, o: &Track) -> f64 {
        let w = self.x1.min(o.x1) - self.x0.max(o.x0);
        let h = self.y1.min(o.y1) - self.y0.max(o.y0);
        w.max(0.0) * h.max(0.0)
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
    tracks: Vec<Track>,
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
            tracks: Vec::new(),
        }
    }

    /// Cells with enough foreground pixels; updates the background as it goes.
    fn active_cells(&mut self, luma: &[u8], w: usize, h: usize) -> (Vec<bool>, usize, usize) {
        let (cols, rows) = (w / CELL, h / CELL);
        let mut counts = vec![0u32; cols * rows];
        let first_row = self.ignore_top.div_ceil(CELL) * CELL;
        for y in first_row..rows * CELL {
            let row = &luma[y * w..y * w + cols * CELL];
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
        // Each track follows the one blob it overlaps most; a blob no track follows starts
        // a track of its own. Following a union of blobs instead would keep one box
        // spanning two objects long after they parted.
        let mut claimed = vec![false; blobs.len()];
        let mut next: Vec<Track> = Vec::new();
        for track in &self.tracks {
            let best = blobs
                .iter()
                .enumerate()
                .filter(|(_, b)| b.overlaps(track))
                .max_by(|(_, a), (_, b)| a.overlap_area(track).total_cmp(&b.overlap_area(track)));
            let Some((i, target)) = best else {
                if track.idle < HOLD_RUNS {
                    next.push(Track {
                        idle: track.idle + 1,
                        ..*track
                    });
                }
                continue;
            };
            claimed[i] = true;
            // Grow at once to cover the motion; shrink each edge part of the way.
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
        next.extend(
            blobs
                .iter()
                .zip(&claimed)
                .filter(|(_, c)| !**c)
                .map(|(b, _)| *b),
        );
        // Merge tracks that mostly cover each other (two tracks on one object).
        let mut merged: Vec<Track> = Vec::new();
        for t in next {
            match merged
                .iter_mut()
                .find(|m| m.overlap_area(&t) > 0.5 * m.area().min(t.area()))
            {
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
        if self.background.len() != luma.len() {
            self.background = luma.iter().map(|&p| (p as u16) << 8).collect();
            self.previous = luma.to_vec();
            self.still = vec![0; luma.len()];
            self.tracks.clear();
            return Vec::new();
        }
        let (active, cols, rows) = self.active_cells(luma, w, h);
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
        let empty = vec![50u8; 160 * 96];
        let mut luma = empty.clone();
        d.detect(&luma, 160, 96);
        for y in 40..56 {
            luma[y * 160 + 40..y * 160 + 56].fill(200);
        }
        let roi = d.detect(&luma, 160, 96);
        assert_eq!(roi.len(), 1);
        assert!(
            (roi[0].x1 - 25.0).abs() < 0.1 && (roi[0].x2 - 35.0).abs() < 0.1,
            "solid blob: {roi:?}"
        );
        // An object that stops is absorbed after a while.
        let mut stopped = MotionDetector::new(0, 0.0);
        stopped.detect(&empty, 160, 96);
        let runs = (0..100)
            .take_while(|_| !stopped.detect(&luma, 160, 96).is_empty())
            .count();
        assert!(
            (ABSORB_RUNS as usize..ABSORB_RUNS as usize + HOLD_RUNS as usize + 2).contains(&runs),
            "{runs}"
        );
        // The object leaves: its box is held a little, then dropped.
        for _ in 0..HOLD_RUNS {
            assert_eq!(d.detect(&empty, 160, 96).len(), 1, "held");
        }
        assert!(d.detect(&empty, 160, 96).is_empty(), "dropped after hold");
    }
}
