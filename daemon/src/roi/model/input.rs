//! Preparing a model's input from a video frame: a region of a 4:2:0 image (I420 or NV12), scaled to fit
//! the model's input with its aspect kept (letterboxed, black bars) and converted to RGB.

use focusd_board::image::Image;

/// A region of the frame, in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Region {
    /// The whole of `img`.
    pub fn whole(img: &Image) -> Self {
        Self {
            x: 0.0,
            y: 0.0,
            w: img.width() as f64,
            h: img.height() as f64,
        }
    }
}

/// How a region was placed in the model's input, to map boxes back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    region: Region,
    /// Input pixels per frame pixel.
    scale: f64,
    /// Where the region starts in the input (the letterbox bars).
    pad_x: f64,
    pad_y: f64,
}

impl Placement {
    /// Maps a point in input pixels to frame pixels.
    pub fn to_frame(&self, x: f32, y: f32) -> (f64, f64) {
        (
            self.region.x + (x as f64 - self.pad_x) / self.scale,
            self.region.y + (y as f64 - self.pad_y) / self.scale,
        )
    }
}

/// Fills `rgb` (`size.0` x `size.1` x 3) with `region` of `img`, scaled bilinearly to fit
/// and centred; the bars are black.
pub fn letterbox(
    img: &Image,
    region: Region,
    size: (usize, usize),
    rgb: &mut Vec<u8>,
) -> Placement {
    let (out_w, out_h) = size;
    let scale = (out_w as f64 / region.w).min(out_h as f64 / region.h);
    let (fit_w, fit_h) = (
        (region.w * scale).round() as usize,
        (region.h * scale).round() as usize,
    );
    let (pad_x, pad_y) = (
        (out_w - fit_w.min(out_w)) / 2,
        (out_h - fit_h.min(out_h)) / 2,
    );
    rgb.clear();
    rgb.resize(out_w * out_h * 3, 0);
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (luma, chroma) = (img.luma(), img.chroma());
    for oy in pad_y..pad_y + fit_h.min(out_h) {
        let sy = (region.y + (oy - pad_y) as f64 / scale).clamp(0.0, (h - 1) as f64);
        let (y0, fy) = (sy as usize, sy.fract());
        let y1 = (y0 + 1).min(h - 1);
        let (top_row, bottom_row) = (luma.row(y0), luma.row(y1));
        for ox in pad_x..pad_x + fit_w.min(out_w) {
            let sx = (region.x + (ox - pad_x) as f64 / scale).clamp(0.0, (w - 1) as f64);
            let (x0, fx) = (sx as usize, sx.fract());
            let x1 = (x0 + 1).min(w - 1);
            let lerp = |row: &[u8]| row[x0] as f64 + (row[x1] as f64 - row[x0] as f64) * fx;
            let (top, bottom) = (lerp(top_row), lerp(bottom_row));
            let yv = top + (bottom - top) * fy;
            let (u, v) = chroma.at(x0, y0);
            let (cb, cr) = (u as f64 - 128.0, v as f64 - 128.0);
            // BT.601, limited range, as cameras and ffmpeg's yuv420p give.
            let l = (yv - 16.0) * 1.164;
            let px = &mut rgb[(oy * out_w + ox) * 3..][..3];
            px[0] = (l + 1.596 * cr).round().clamp(0.0, 255.0) as u8;
            px[1] = (l - 0.392 * cb - 0.813 * cr).round().clamp(0.0, 255.0) as u8;
            px[2] = (l + 2.017 * cb).round().clamp(0.0, 255.0) as u8;
        }
    }
    Placement {
        region,
        scale,
        pad_x: pad_x as f64,
        pad_y: pad_y as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_region_is_centred_with_bars_and_maps_back() {
        let mut img = Image::i420(64, 32);
        img.fill(235);
        let mut rgb = Vec::new();
        let p = letterbox(&img, Region::whole(&img), (16, 16), &mut rgb);
        assert_eq!(rgb.len(), 16 * 16 * 3);
        assert_eq!(&rgb[..3], &[0, 0, 0], "top bar");
        assert_eq!(rgb[(8 * 16 + 8) * 3], 255, "white inside");
        assert_eq!(p.to_frame(0.0, 4.0), (0.0, 0.0));
        assert_eq!(p.to_frame(16.0, 12.0), (64.0, 32.0));
    }
}
