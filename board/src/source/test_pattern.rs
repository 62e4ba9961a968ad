//! The `test` source: a static textured background, three moving shapes whose true boxes
//! are a pure function of the capture time, and the timestamp stamp in the top band.
//!
//! Because the boxes depend only on the capture time in ms, a receiver that reads the stamp
//! from a decoded frame knows exactly where the shapes were ([`scene_boxes`]), so ROI and
//! masking can be checked to the pixel.

use super::{FrameSource, Pacer, SourceError};
use crate::frame::CaptureTime;
use crate::image::{Image, Layout, PixelFormat, PixelRect};
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
    layout: Layout,
    fps: f64,
    /// The static background, drawn once (luma only; chroma is neutral).
    background: Vec<u8>,
    pacer: Pacer,
}

impl TestPattern {
    /// The pattern at `size`, in packed I420.
    pub fn new((width, height): (u32, u32), fps: f64) -> Self {
        Self::with_layout(Layout::packed(PixelFormat::I420, width, height), fps)
    }

    /// The pattern in any layout (NV12, padded strides), as a camera would deliver it.
    pub fn with_layout(layout: Layout, fps: f64) -> Self {
        let (width, height) = layout.size();
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
            layout,
            fps,
            background,
            pacer: Pacer::new(fps),
        }
    }

    /// Draws the scene as it is at wall-clock time `ms` into `image` (of this pattern's
    /// size, in any layout).
    pub fn draw(&self, image: &mut Image, ms: u64) {
        let (w, h) = (self.layout.width as usize, self.layout.height as usize);
        debug_assert_eq!(image.size(), self.layout.size());
        let whole = PixelRect {
            x0: 0,
            y0: 0,
            x1: w as u32,
            y1: h as u32,
        };
        image.fill_chroma(whole, 128, 128);
        let boxes = scene_boxes(ms as u32);
        {
            let mut luma = image.luma_mut();
            for (row, background) in self.background.chunks_exact(w).enumerate() {
                luma.row_mut(row).copy_from_slice(background);
            }
            for (b, shape) in boxes.iter().zip(SHAPES.iter()) {
                let rect = pixels(b, w, h);
                for row in rect.y0 as usize..rect.y1 as usize {
                    let line = &mut luma.row_mut(row)[rect.x0 as usize..rect.x1 as usize];
                    for (i, px) in line.iter_mut().enumerate() {
                        // A checker texture inside the shape so it is not a flat block.
                        let checker = ((i / 8) + (row - rect.y0 as usize) / 8).is_multiple_of(2);
                        *px = if checker { shape.luma } else { shape.luma - 25 };
                    }
                }
            }
            stamp::draw(&mut luma, ms);
        }
        for (b, shape) in boxes.iter().zip(SHAPES.iter()) {
            image.fill_chroma(pixels(b, w, h), shape.u, shape.v);
        }
    }
}

/// A scene box in pixels of a `w` x `h` picture.
fn pixels(b: &SceneBox, w: usize, h: usize) -> PixelRect {
    let at = |v: f64, size: usize| ((v * size as f64).round() as usize).min(size) as u32;
    PixelRect {
        x0: at(b.x1, w),
        y0: at(b.y1, h),
        x1: at(b.x2, w),
        y1: at(b.y2, h),
    }
}

impl FrameSource for TestPattern {
    fn describe(&self) -> String {
        let (w, h) = self.layout.size();
        format!("test {w}x{h}@{}", self.fps)
    }

    fn layout(&self) -> Layout {
        self.layout
    }

    fn fps(&self) -> f64 {
        self.fps
    }

    fn has_stamp(&self) -> bool {
        true
    }

    fn capture(
        &mut self,
        main: &mut Image,
        _lores: Option<&mut Image>,
    ) -> Result<CaptureTime, SourceError> {
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
        let ms = 1_763_700_000_456u64;
        let b = scene_boxes(ms as u32)[0];
        let cx = ((b.x1 + b.x2) / 2.0 * 640.0) as usize;
        let cy = ((b.y1 + b.y2) / 2.0 * 360.0) as usize;
        let mut drawn = vec![];
        for layout in [
            Layout::packed(PixelFormat::I420, 640, 360),
            Layout::aligned(PixelFormat::Nv12, 640, 360, 256, 16),
        ] {
            let src = TestPattern::with_layout(layout, 30.0);
            let mut img = Image::new(layout);
            src.draw(&mut img, ms);
            let luma = img.luma();
            assert_eq!(
                stamp::read(luma.data(), 640, 360, luma.stride()),
                Some(ms as u32)
            );
            assert!(luma.row(cy)[cx] >= 170);
            assert_eq!(img.chroma_at(cx, cy), (SHAPES[0].u, SHAPES[0].v));
            let mut packed = Image::i420(640, 360);
            packed.copy_from(&img);
            drawn.push(packed);
        }
        assert_eq!(drawn[0], drawn[1], "the same picture in either layout");
    }
}
