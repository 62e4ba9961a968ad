//! Shaping the source frame by mode: which pixels of the main image the source track keeps.

use focusd_board::frame::Frame;
use focusd_board::image::{Image, PixelRect};

use crate::state::Shaping;
use crate::state::command::{Mode, Rect};
use crate::track::Track;

/// Keep rectangles are grown to whole 16x16 macroblocks, so the encoder sees clean black
/// blocks and ringing never leaks into them.
const MB: u32 = 16;

/// What to encode for the source track.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// Nothing (LOW).
    Nothing,
    /// The whole main image (HIGH).
    Full,
    /// Only these pixels, black elsewhere (VISION, HYBRID); may be empty.
    Only(Vec<PixelRect>),
}

/// Decides the shape for a `w` x `h` main image.
pub fn shape(s: &Shaping, w: u32, h: u32) -> Shape {
    let keep = |limit: Option<&Rect>| {
        let rects = s
            .roi
            .iter()
            .filter_map(|b| match limit {
                Some(l) => b.rect().intersect(l),
                None => Some(b.rect()),
            })
            .map(|r| to_pixels(&r, w, h).align_out(MB, w, h))
            .filter(|r| !r.is_empty())
            .collect();
        Shape::Only(rects)
    };
    match s.mode {
        Mode::Low => Shape::Nothing,
        Mode::High => Shape::Full,
        Mode::Vision => keep(None),
        Mode::Hybrid => keep(s.hybrid_rect.as_ref()),
    }
}

fn to_pixels(r: &Rect, w: u32, h: u32) -> PixelRect {
    let px = |v: f64, size: u32| ((v / 100.0 * size as f64).round().max(0.0) as u32).min(size);
    PixelRect {
        x0: px(r.x1, w),
        y0: px(r.y1, h),
        x1: px(r.x2, w),
        y1: px(r.y2, h),
    }
}

/// Luma of masked-out pixels: 0 rather than video black (16), so codec noise never lifts
/// it over the contract's 16 nor the viewer's mask threshold (~18).
pub const MASK_LUMA: u8 = 0;

/// Writes `src` into `dst` with everything outside `keep` black, except the top
/// `stamp_rows` rows (the test stamp), which stay so latency can be read on every track.
/// `dst` has `src`'s size and format (any strides).
pub fn apply(src: &Image, keep: &[PixelRect], stamp_rows: u32, dst: &mut Image) {
    dst.fill(MASK_LUMA);
    let (w, h) = (src.width(), src.height());
    if stamp_rows > 0 {
        dst.copy_rect_from(
            src,
            PixelRect {
                x0: 0,
                y0: 0,
                x1: w,
                y1: (stamp_rows.div_ceil(2) * 2).min(h),
            },
        );
    }
    for r in keep {
        dst.copy_rect_from(src, *r);
    }
}

/// The picture `track` shows of `frame`: the lores image for the context; for the source,
/// the main image as `shaping` (asked only for the source) shapes it, masked into
/// `scratch` (made on first use) when only the ROI is kept, or `None` in LOW. The encoders
/// and the picture doors both see frames through this.
pub fn track_picture<'a>(
    track: Track,
    frame: &'a Frame,
    shaping: impl FnOnce() -> Shaping,
    stamp_rows: u32,
    scratch: &'a mut Option<Image>,
) -> Option<&'a Image> {
    match track {
        Track::Context => Some(&frame.lores),
        Track::Source => match shape(&shaping(), frame.main.width(), frame.main.height()) {
            Shape::Nothing => None,
            Shape::Full => Some(&frame.main),
            Shape::Only(rects) => {
                let scratch = scratch.get_or_insert_with(|| Image::new(*frame.main.layout()));
                apply(&frame.main, &rects, stamp_rows, scratch);
                Some(&*scratch)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RoiBox;
    use focusd_board::image::{Layout, PixelFormat};

    fn roi(x1: f64, y1: f64, x2: f64, y2: f64) -> RoiBox {
        RoiBox {
            x1,
            y1,
            x2,
            y2,
            label: "motion".into(),
            score: 1.0,
            ..RoiBox::default()
        }
    }

    #[test]
    fn modes_map_to_shapes() {
        let mut s = Shaping {
            mode: Mode::Low,
            hybrid_rect: None,
            roi: vec![roi(10.0, 10.0, 20.0, 20.0)],
        };
        assert_eq!(shape(&s, 1280, 720), Shape::Nothing);
        s.mode = Mode::High;
        assert_eq!(shape(&s, 1280, 720), Shape::Full);
        s.mode = Mode::Vision;
        let Shape::Only(r) = shape(&s, 1280, 720) else {
            panic!()
        };
        assert_eq!(
            r,
            vec![PixelRect {
                x0: 128,
                y0: 64,
                x1: 256,
                y1: 144
            }]
        );
        s.mode = Mode::Hybrid;
        let Shape::Only(r) = shape(&s, 1280, 720) else {
            panic!()
        };
        assert_eq!(r.len(), 1, "no rectangle: HYBRID behaves like VISION");
        s.hybrid_rect = Some(Rect {
            x1: 15.0,
            y1: 0.0,
            x2: 100.0,
            y2: 100.0,
        });
        let Shape::Only(r) = shape(&s, 1280, 720) else {
            panic!()
        };
        assert_eq!(r[0].x0, 192, "limited to the rectangle");
        s.hybrid_rect = Some(Rect {
            x1: 50.0,
            y1: 50.0,
            x2: 60.0,
            y2: 60.0,
        });
        assert_eq!(
            shape(&s, 1280, 720),
            Shape::Only(vec![]),
            "no overlap: all black"
        );
    }

    #[test]
    fn apply_blacks_out_all_but_keep_and_stamp_in_either_format() {
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let layout = Layout::aligned(format, 64, 64, 128, 16);
            let mut src = Image::new(layout);
            src.fill(150);
            let whole = PixelRect {
                x0: 0,
                y0: 0,
                x1: 64,
                y1: 64,
            };
            src.fill_chroma(whole, 40, 220);
            let mut dst = Image::new(layout);
            let keep = [PixelRect {
                x0: 16,
                y0: 32,
                x1: 32,
                y1: 48,
            }];
            apply(&src, &keep, 4, &mut dst);
            let luma = dst.luma();
            assert_eq!(luma.row(0)[0], 150, "{format}: stamp band kept");
            assert_eq!(luma.row(10)[10], MASK_LUMA, "{format}: outside is black");
            assert_eq!(luma.row(40)[20], 150, "{format}: inside kept");
            assert_eq!(dst.chroma_at(20, 40), (40, 220), "{format}: colour kept");
            assert_eq!(dst.chroma_at(10, 10), (128, 128), "{format}: grey outside");
        }
    }
}
