//! Bilinear I420 scaling, used for the lores image and for files scaled to `--size`.
//!
//! Sample positions are pixel centres, so an exact 4:1 reduction averages the two middle
//! pixels of each group of four, which is what the lores image needs and costs four reads
//! per output pixel.

use crate::frame::I420Image;

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

    /// Scales `src` into `dst`; both must have the sizes this scaler was made for.
    pub fn scale(&self, src: &I420Image, dst: &mut I420Image) {
        assert_eq!((src.width(), src.height()), self.src, "scaler source size");
        assert_eq!((dst.width(), dst.height()), self.dst, "scaler target size");
        let (dy, du, dv) = dst.planes_mut();
        plane(src.y(), self.src.0, &self.luma, dy, self.dst.0);
        plane(src.u(), self.src.0 / 2, &self.chroma, du, self.dst.0 / 2);
        plane(src.v(), self.src.0 / 2, &self.chroma, dv, self.dst.0 / 2);
    }
}

fn plane(src: &[u8], src_w: u32, axes: &(Axis, Axis), dst: &mut [u8], dst_w: u32) {
    let (xs, ys) = axes;
    let src_w = src_w as usize;
    let src_h = src.len() / src_w;
    for (row, out) in dst.chunks_exact_mut(dst_w as usize).enumerate() {
        let y = ys.index[row] as usize;
        let wy = ys.weight[row] as u32;
        let top = &src[y * src_w..(y + 1) * src_w];
        let bottom = &src[(y + 1).min(src_h - 1) * src_w..][..src_w];
        for (col, px) in out.iter_mut().enumerate() {
            let x = xs.index[col] as usize;
            let wx = xs.weight[col] as u32;
            let x1 = (x + 1).min(src_w - 1);
            let t = top[x] as u32 * (256 - wx) + top[x1] as u32 * wx;
            let b = bottom[x] as u32 * (256 - wx) + bottom[x1] as u32 * wx;
            *px = ((t * (256 - wy) + b * wy + (1 << 15)) >> 16) as u8;
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

    #[test]
    fn lores_keeps_aspect() {
        assert_eq!(lores_size((1280, 720), 320), (320, 180));
        assert_eq!(lores_size((768, 576), 320), (320, 240));
        assert_eq!(lores_size((1920, 1080), 320), (320, 180));
    }

    #[test]
    fn flat_image_stays_flat() {
        let mut src = I420Image::new(1280, 720);
        let (y, u, v) = src.planes_mut();
        y.fill(90);
        u.fill(60);
        v.fill(200);
        let mut dst = I420Image::new(320, 180);
        Scaler::new((1280, 720), (320, 180)).scale(&src, &mut dst);
        assert!(dst.y().iter().all(|&p| p == 90));
        assert!(dst.u().iter().all(|&p| p == 60));
        assert!(dst.v().iter().all(|&p| p == 200));
    }

    #[test]
    fn quarter_scale_averages_centre_pixels() {
        let mut src = I420Image::new(8, 4);
        let (y, _, _) = src.planes_mut();
        for row in y.chunks_exact_mut(8) {
            row.copy_from_slice(&[0, 100, 200, 0, 0, 0, 0, 0]);
        }
        let mut dst = I420Image::new(2, 2);
        Scaler::new((8, 4), (2, 2)).scale(&src, &mut dst);
        assert_eq!(dst.y()[0], 150);
        assert_eq!(dst.y()[1], 0);
    }

    #[test]
    fn upscale_covers_target() {
        let mut src = I420Image::new(4, 4);
        src.planes_mut().0.fill(50);
        let mut dst = I420Image::new(10, 6);
        Scaler::new((4, 4), (10, 6)).scale(&src, &mut dst);
        assert!(dst.y().iter().all(|&p| p == 50));
    }
}
