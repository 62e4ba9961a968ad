//! The test-source timestamp stamp: 32 cells across the top band of every frame.
//!
//! Cell `i` (0 = leftmost) is white when bit `31 - i` of the capture wall-clock time in ms
//! (mod 2^32) is set, black otherwise. Any receiver that decodes a frame can subtract the
//! stamp from its own clock to get glass-to-glass latency.

/// Height of the stamp band for an image of height `h`: `round(h / 18)`.
pub fn band_height(h: u32) -> u32 {
    ((h as f64) / 18.0).round().max(1.0) as u32
}

use crate::image::PlaneMut;

const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// Draws the stamp for `ms` into the top band of `luma`, a luma plane.
/// Chroma under the band is left to the caller (the test pattern keeps it neutral).
pub fn draw(luma: &mut PlaneMut<'_>, ms: u64) {
    let value = ms as u32;
    let (w, h) = (luma.width(), luma.height());
    let band = (band_height(h as u32) as usize).min(h);
    for row in 0..band {
        let line = luma.row_mut(row);
        for i in 0..32usize {
            let bit = (value >> (31 - i)) & 1;
            let (x0, x1) = (i * w / 32, (i + 1) * w / 32);
            line[x0..x1].fill(if bit == 1 { WHITE } else { BLACK });
        }
    }
}

/// Reads the stamp from a luma plane with row stride `stride`, or `None` when the band does
/// not look like a stamp (some cell is neither clearly white nor clearly black).
pub fn read(y: &[u8], w: u32, h: u32, stride: usize) -> Option<u32> {
    let band = band_height(h) as usize;
    let row = band / 2;
    let w = w as usize;
    let mut value = 0u32;
    for i in 0..32usize {
        let (x0, x1) = (i * w / 32, (i + 1) * w / 32);
        // Average the middle half of the cell: robust to codec ringing at cell edges.
        let (a, b) = (x0 + (x1 - x0) / 4, x1 - (x1 - x0) / 4);
        let line = &y[row * stride..row * stride + w];
        let sum: u32 = line[a..b.max(a + 1)].iter().map(|&p| p as u32).sum();
        let mean = sum / (b.max(a + 1) - a) as u32;
        let bit = match mean {
            0..=60 => 0,
            170..=255 => 1,
            _ => return None,
        };
        value |= bit << (31 - i);
    }
    Some(value)
}

/// Milliseconds from the stamp `stamp` to the wall-clock time `now_ms`, modulo 2^32.
pub fn age_ms(stamp: u32, now_ms: u64) -> u32 {
    (now_ms as u32).wrapping_sub(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Image, Layout, PixelFormat};

    #[test]
    fn draw_then_read_round_trips() {
        for &(w, h) in &[(1280u32, 720u32), (320, 180), (768, 576)] {
            // A padded stride, as cameras deliver.
            let mut img = Image::new(Layout::aligned(PixelFormat::Nv12, w, h, 256, 16));
            img.fill(90);
            let ms = 1_763_700_000_123u64;
            draw(&mut img.luma_mut(), ms);
            let luma = img.luma();
            assert_eq!(
                read(luma.data(), w, h, luma.stride()),
                Some(ms as u32),
                "{w}x{h}"
            );
        }
    }

    #[test]
    fn band_height_rounds() {
        assert_eq!(band_height(720), 40);
        assert_eq!(band_height(180), 10);
        assert_eq!(band_height(576), 32);
    }

    #[test]
    fn grey_band_is_not_a_stamp() {
        let y = vec![128u8; 320 * 180];
        assert_eq!(read(&y, 320, 180, 320), None);
    }

    #[test]
    fn age_wraps() {
        assert_eq!(age_ms(u32::MAX - 4, (1u64 << 32) + 5), 10);
    }
}
