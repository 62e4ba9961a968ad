//! Checks on pictures: what the test pattern looks like, how close a decoded picture is,
//! the real footage and its hand annotations.

use std::path::{Path, PathBuf};

use focusd_board::image::Image;
use focusd_board::source::TestPattern;

/// PSNR (dB) of luma `got` against `want`, both `w` x `h`, over rows `from_row..`.
pub fn psnr(got: &[u8], want: &[u8], w: usize, from_row: usize) -> f64 {
    let (a, b) = (
        &got[from_row * w..],
        &want[from_row * w..want.len().min(got.len())],
    );
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        99.0
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// The test pattern's luma at wall-clock `ms`, `w` x `h`.
pub fn pattern_luma(w: u32, h: u32, ms: u32) -> Vec<u8> {
    let pattern = TestPattern::new((w, h), 30.0);
    let mut img = Image::i420(w, h);
    // The stamp holds ms mod 2^32 and the scene is a function of that, so any epoch works.
    pattern.draw(&mut img, ms as u64);
    // A packed image: its luma plane is exactly w x h bytes.
    img.luma().data().to_vec()
}

/// A y4m made from real footage: `vtest.avi` of Debian's opencv-doc, converted by
/// `tests/media.sh`. `None` when it has not been prepared.
pub fn real_footage() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.media/vtest.y4m");
    p.exists().then_some(p)
}

/// Boxes `[[x1, y1, x2, y2], ...]` of a hand annotation in tests/data/.
pub fn json_boxes(v: &serde_json::Value) -> Vec<[f64; 4]> {
    let num = |x: &serde_json::Value| x.as_f64().expect("a number");
    v.as_array()
        .expect("a list of boxes")
        .iter()
        .map(|b| {
            let b = b.as_array().expect("a box");
            [num(&b[0]), num(&b[1]), num(&b[2]), num(&b[3])]
        })
        .collect()
}
