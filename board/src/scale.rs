//! Bilinear 4:2:0 scaling (I420 or NV12, any strides), used for the lores image when the
//! source does not deliver one and for files scaled to `--size`.
//!
//! Sample positions are pixel centres, so an exact 4:1 reduction averages the two middle
//! pixels of each group of four, which is what the lores image needs and costs four reads
//! per output pixel.

use crate::image::{Image, Plane, PlaneMut};

/// Precomputed sample positions for one axis: left index and 8-bit weight of the right one.
#[derive(Clone, Debug)]
struct Axis {
    index: Vec<u32>,
    weight: Vec<u16>,
}

impl Axis {
    fn new(src: u32, dst: u32) -> Self {
        let mut index = Vec::with_capacity(dst as usize);
        let mut weight = Vec::with_capacity(dst as usize);
        let scale = src as f64 / dst as f64;
        for d in 0..dst {
            let pos = ((d as f64 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f64);
            let i = pos.floor() as u32;
            let w = ((pos - i as f64) * 256.0).round() as u16;
            let i = i.min(src.saturating_sub(2));
            let w = if i + 1 >= src { 0 } else { w.min(256) };
            index.push(i);
            weight.push(w);
        }
        Self { index, weight }
    }
}

/// A reusable scaler from one size to another (positions are computed once).
#[derive(Clone, Debug)]
pub struct Scaler {
    src: (u32, u32),
    dst: (u32, u32),
    luma: (Axis, Axis),
    chroma: (Axis, Axis),
}

impl Scaler {
    pub fn new(src: (u32, u32), dst: (u32, u32)) -> Self {
        Self {
            src,
            dst,
            luma: (Axis::new(src.0, dst.0), Axis::new(src.1, dst.1)),
            chroma: (
                Axis::new(src.0 / 2, dst.0 / 2),
                Axis::new(src.1 / 2, dst.1 / 2),
            ),
        }
    }

    /// Scales `src` into `dst`: both must have the sizes this scaler was made for and the
    /// same pixel format (strides may differ).
    pub fn scale(&self, src: &Image, dst: &mut Image) {
        assert_eq!(src.size(), self.src, "scaler source size");
        assert_eq!(dst.size(), self.dst, "scaler target size");
        assert_eq!(src.format(), dst.format(), "scaler keeps the pixel format");
        for (src, mut dst) in src.planes().zip(dst.planes_mut()) {
            let axes = if src.subsampling() == 1 {
                &self.luma
            } else {
                &self.chroma
            };
            plane(&src, axes, &mut dst);
        }
    }
}

fn plane(src: &Plane, axes: &(Axis, Axis), dst: &mut PlaneMut) {
    // One loop per sample width, so each compiles to straight code.
    match src.channels() {
        1 => plane_of::<1>(src, axes, dst),
        2 => plane_of::<2>(src, axes, dst),
        n => unreachable!("4:2:0 planes have 1 or 2 channels, not {n}"),
    }
}

fn plane_of<const CH: usize>(src: &Plane, (xs, ys): &(Axis, Axis), dst: &mut PlaneMut) {
    let (src_w, src_h) = (src.width(), src.height());
    for row in 0..dst.height() {
        let y = ys.index[row] as usize;
        let wy = ys.weight[row] as u32;
        let top = src.row(y);
        let bottom = src.row((y + 1).min(src_h - 1));
        let out = dst.row_mut(row);
        for (col, px) in out.chunks_exact_mut(CH).enumerate() {
            let x = xs.index[col] as usize;
            let wx = xs.weight[col] as u32;
            let x1 = (x + 1).min(src_w - 1);
            for (c, px) in px.iter_mut().enumerate() {
                let (l, r) = (x * CH + c, x1 * CH + c);
                let t = top[l] as u32 * (256 - wx) + top[r] as u32 * wx;
                let b = bottom[l] as u32 * (256 - wx) + bottom[r] as u32 * wx;
                *px = ((t * (256 - wy) + b * wy + (1 << 15)) >> 16) as u8;
            }
        }
    }
}

/// The lores size for a main image: `width` wide, same aspect ratio, both dimensions even.
pub fn lores_size(main: (u32, u32), width: u32) -> (u32, u32) {
    let width = width.min(main.0) & !1;
    let height = ((main.1 as u64 * width as u64 + main.0 as u64 / 2) / main.0 as u64) as u32;
    (width.max(2), (height & !1).max(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Layout, PixelFormat, PixelRect};

    #[test]
    fn lores_keeps_aspect() {
        assert_eq!(lores_size((1280, 720), 320), (320, 180));
        assert_eq!(lores_size((768, 576), 320), (320, 240));
        assert_eq!(lores_size((1920, 1080), 320), (320, 180));
    }

    fn whole(w: u32, h: u32) -> PixelRect {
        PixelRect {
            x0: 0,
            y0: 0,
            x1: w,
            y1: h,
        }
    }

    fn picture_pixels(img: &Image) -> (Vec<u8>, Vec<(u8, u8)>) {
        let luma = img.luma();
        let y = (0..luma.height())
            .flat_map(|r| luma.row(r).to_vec())
            .collect();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let c = (0..h)
            .step_by(2)
            .flat_map(|y| (0..w).step_by(2).map(move |x| (x, y)))
            .map(|(x, y)| img.chroma_at(x, y))
            .collect();
        (y, c)
    }

    #[test]
    fn flat_image_stays_flat() {
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let mut src = Image::new(Layout::aligned(format, 1280, 720, 64, 16));
            src.fill(90);
            src.fill_chroma(whole(1280, 720), 60, 200);
            let mut dst = Image::new(Layout::packed(format, 320, 180));
            Scaler::new((1280, 720), (320, 180)).scale(&src, &mut dst);
            let (y, c) = picture_pixels(&dst);
            assert!(y.iter().all(|&p| p == 90), "{format}");
            assert!(c.iter().all(|&p| p == (60, 200)), "{format}");
        }
    }

    #[test]
    fn nv12_scales_exactly_like_i420() {
        let mut i420 = Image::i420(64, 32);
        for y in 0..32 {
            for x in 0..64 {
                i420.luma_mut().row_mut(y)[x] = ((x * 4) ^ (y * 8)) as u8;
            }
        }
        for cy in 0..16u32 {
            for cx in 0..32u32 {
                let rect = PixelRect {
                    x0: cx * 2,
                    y0: cy * 2,
                    x1: cx * 2 + 2,
                    y1: cy * 2 + 2,
                };
                i420.fill_chroma(rect, (cx * 7) as u8, (255 - cy * 9) as u8);
            }
        }
        let mut nv12 = Image::new(Layout::aligned(PixelFormat::Nv12, 64, 32, 128, 16));
        nv12.copy_from(&i420);
        let scaler = Scaler::new((64, 32), (24, 14));
        let mut small_i420 = Image::i420(24, 14);
        let mut small_nv12 = Image::new(Layout::packed(PixelFormat::Nv12, 24, 14));
        scaler.scale(&i420, &mut small_i420);
        scaler.scale(&nv12, &mut small_nv12);
        assert_eq!(picture_pixels(&small_i420), picture_pixels(&small_nv12));
    }

    #[test]
    fn quarter_scale_averages_centre_pixels() {
        let mut src = Image::i420(8, 4);
        let mut y = src.luma_mut();
        for row in 0..4 {
            y.row_mut(row)
                .copy_from_slice(&[0, 100, 200, 0, 0, 0, 0, 0]);
        }
        let mut dst = Image::i420(2, 2);
        Scaler::new((8, 4), (2, 2)).scale(&src, &mut dst);
        assert_eq!(dst.luma().row(0)[..2], [150, 0]);
    }

    #[test]
    fn upscale_covers_target() {
        let mut src = Image::i420(4, 4);
        src.fill(50);
        let mut dst = Image::i420(10, 6);
        Scaler::new((4, 4), (10, 6)).scale(&src, &mut dst);
        assert!(picture_pixels(&dst).0.iter().all(|&p| p == 50));
    }
}
