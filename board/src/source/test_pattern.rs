//! The `test` source: a static textured background, three moving shapes whose true boxes
//! are a pure function of the capture time, and the timestamp stamp in the top band.
//!
//! Because the boxes depend only on the capture time in ms, a receiver that reads the stamp
//! from a decoded frame knows exactly where the shapes were ([`scene_boxes`]), so ROI and
//! masking can be checked to the pixel.

use super::{FrameSource, Pacer, SourceError};
use crate::frame::CaptureTime;
use crate::frame::I420Image;
use crate::stamp;

/// A shape's true box in the test scene, as fractions (0–1) of the frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SceneBox {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

/// One moving shape of the scene.
struct Shape {
    /// Size as fractions of the frame.
    w: f64,
    h: f64,
    /// Periods of the back-and-forth motion along x and y, in ms.
    period_x: f64,
    period_y: f64,
    /// Phase offset of both motions, in periods.
    phase: f64,
    /// Fill: luma (with a checker 25 darker) and chroma.
    luma: u8,
    u: u8,
    v: u8,
}

const SHAPES: [Shape; 3] = [
    Shape {
        w: 0.14,
        h: 0.20,
        period_x: 7_100.0,
        period_y: 5_300.0,
        phase: 0.00,
        luma: 215,
        u: 90,
        v: 200,
    },
    Shape {
        w: 0.10,
        h: 0.16,
        period_x: 5_900.0,
        period_y: 8_300.0,
        phase: 0.35,
        luma: 200,
        u: 200,
        v: 80,
    },
    Shape {
        w: 0.18,
        h: 0.12,
        period_x: 9_700.0,
        period_y: 6_100.0,
        phase: 0.70,
        luma: 235,
        u: 150,
        v: 140,
    },
];

/// Shapes stay below the stamp band (1/18 of the height) with a small gap.
const TOP: f64 = 0.08;

fn triangle(t: f64) -> f64 {
    let f = t.rem_euclid(1.0);
    if f < 0.5 { f * 2.0 } else { 2.0 - f * 2.0 }
}

/// The true boxes of the shapes at capture time `ms` (mod 2^32, as the stamp carries it).
pub fn scene_boxes(ms: u32) -> [SceneBox; 3] {
    SHAPES.each_ref().map(|s| {
        let t = ms as f64;
        let (w, h) = (s.w, s.h);
        let x = 0.02 + triangle(t / s.period_x + s.phase) * (0.96 - w);
        let y = TOP + triangle(t / s.period_y + s.phase) * (0.98 - TOP - h);
        SceneBox {
            x1: x,
            y1: y,
            x2: x + w,
            y2: y + h,
        }
    })
}

/// The test pattern source.
#[derive(Debug)]
pub struct TestPattern {
    width: u32,
    height: u32,
    fps: f64,
    /// The static background, drawn once (luma only; chroma is neutral).
    background: Vec<u8>,
    pacer: Pacer,
}

impl TestPattern {
    pub fn new((width, height): (u32, u32), fps: f64) -> Self {
        let mut background = vec![0u8; (width * height) as usize];
        for (y, row) in background.chunks_exact_mut(width as usize).enumerate() {
            for (x, px) in row.iter_mut().enumerate() {
                // A gentle diagonal gradient with a grid: real texture, static like a scene
                // seen by a fixed camera.
                let gradient =
                    60 + (x * 40 / width as usize) as u32 + (y * 30 / height as usize) as u32;
                let grid = x % 64 == 0 || y % 64 == 0;
                *px = if grid { 120 } else { gradient as u8 };
            }
        }
        Self {
            width,
            height,
            fps,
            background,
            pacer: Pacer::new(fps),
        }
    }

    /// Draws the scene as it is at wall-clock time `ms` into `image`.
    pub fn draw(&self, image: &mut I420Image, ms: u64) {
        let (w, h) = (self.width as usize, self.height as usize);
        let (y, u, v) = image.planes_mut();
        y.copy_from_slice(&self.background);
        u.fill(128);
        v.fill(128);
        for (b, shape) in scene_boxes(ms as u32).iter().zip(SHAPES.iter()) {
            let (luma, cu, cv) = (shape.luma, shape.u, shape.v);
            let x0 = (b.x1 * w as f64).round() as usize;
            let x1 = ((b.x2 * w as f64).round() as usize).min(w);
            let y0 = (b.y1 * h as f64).round() as usize;
            let y1 = ((b.y2 * h as f64).round() as usize).min(h);
            for row in y0..y1 {
                for (i, px) in y[row * w + x0..row * w + x1].iter_mut().enumerate() {
                    // A checker texture inside the shape so it is not a flat block.
                    let checker = ((i / 8) + (row - y0) / 8).is_multiple_of(2);
                    *px = if checker { luma } else { luma - 25 };
                }
            }
            for row in y0.div_ceil(2)..y1 / 2 {
                u[row * w / 2 + x0.div_ceil(2)..row * w / 2 + x1 / 2].fill(cu);
                v[row * w / 2 + x0.div_ceil(2)..row * w / 2 + x1 / 2].fill(cv);
            }
        }
        stamp::draw(y, self.width, self.height, ms);
    }
}

impl FrameSource for TestPattern {
    fn describe(&self) -> String {
        format!("test {}x{}@{}", self.width, self.height, self.fps)
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn fps(&self) -> f64 {
        self.fps
    }

    fn has_stamp(&self) -> bool {
        true
    }

    fn capture(&mut self, main: &mut I420Image) -> Result<CaptureTime, SourceError> {
        self.pacer.wait();
        let capture = CaptureTime::now();
        self.draw(main, capture.wallclock_ms);
        Ok(capture)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_stay_inside_frame_and_below_band() {
        for ms in (0..200_000u32).step_by(97) {
            for b in scene_boxes(ms) {
                assert!(b.x1 >= 0.0 && b.x2 <= 1.0 && b.y2 <= 1.0, "{b:?}");
                assert!(b.y1 >= 1.0 / 18.0, "{b:?} overlaps the stamp band");
            }
        }
    }

    #[test]
    fn shapes_move() {
        let a = scene_boxes(1_000);
        let b = scene_boxes(1_100);
        assert!(a.iter().zip(b.iter()).all(|(a, b)| a != b));
    }

    #[test]
    fn drawn_frame_carries_stamp_and_shapes() {
        let src = TestPattern::new((640, 360), 30.0);
        let mut img = I420Image::new(640, 360);
        let ms = 1_763_700_000_456u64;
        src.draw(&mut img, ms);
        assert_eq!(stamp::read(img.y(), 640, 360, 640), Some(ms as u32));
        let b = scene_boxes(ms as u32)[0];
        let cx = ((b.x1 + b.x2) / 2.0 * 640.0) as usize;
        let cy = ((b.y1 + b.y2) / 2.0 * 360.0) as usize;
        assert!(img.y()[cy * 640 + cx] >= 170);
    }
}
