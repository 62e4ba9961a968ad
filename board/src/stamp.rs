//! The test-source timestamp stamp: 32 cells across the top band of every frame.
//!
//! Cell `i` (0 = leftmost) is white when bit `31 - i` of the capture wall-clock time in ms
//! (mod 2^32) is set, black otherwise. Any receiver that decodes a frame can subtract the
//! stamp from its own clock to get glass-to-glass latency.

/// Height of the stamp band for an image of height `h`: `round(h / 18)`.
pub fn band_height(h: u32) -> u32 {
    ((h as f64) / 18.0).round().max(1.0) as u32
}

const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// Draws the stamp for `ms` into the top band of the luma plane `y` (`w` wide, `h` high).
/// Chroma under the band is left to the caller (the test pattern keeps it neutral).
pub fn draw(y: &mut [u8], w: u32, h: u32, ms: u64) {
    let value = ms as u32;
    let (w, band) = (w as usize, band_height(h) as usize);
    let first_row = &mut y[..w];
    for i in 0..32usize {
        let bit = (value >> (31 - i)) & 1;
        let (x0, x1) = (i * w / 32, (i + 1) * w / 32);
        first_row[x0..x1].fill(if bit == 1 { WHITE } else { BLACK });
    }
    let (first, rest) = y.split_at_mut(w);
    for row in rest.chunks_exact_mut(w).take(band - 1) {
        row.copy_from_slice(first);
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

    #[test]
    fn draw_then_read_round_trips() {
        for &(w, h) in &[(1280u32, 720u32), (320, 180), (768, 576)] {
            let mut y = vec![90u8; (w * h) as usize];
            let ms = 1_763_700_000_123u64;
            draw(&mut y, w, h, ms);
            assert_eq!(read(&y, w, h, w as usize), Some(ms as u32), "{w}x{h}");
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
