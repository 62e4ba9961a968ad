//! Choosing what to ask a V4L2 camera for: among the pixel formats, sizes and frame rates
//! it offers, the one closest to the configured size and rate, and the cheapest to read.

use std::fmt;

/// A pixel format this backend reads, in order of the CPU it costs per frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Input {
    /// `NV12`: copied as it is (the pipeline and hardware encoders take NV12).
    Nv12,
    /// `YU12` (I420): copied as it is.
    I420,
    /// `YUYV` (4:2:2 packed): converted to I420.
    Yuyv,
    /// `MJPG`: each frame decoded as a JPEG, to I420.
    Mjpeg,
}

impl Input {
    /// Every format, cheapest first.
    pub const ALL: [Input; 4] = [Input::Nv12, Input::I420, Input::Yuyv, Input::Mjpeg];

    /// The V4L2 four-character code.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            Self::Nv12 => *b"NV12",
            Self::I420 => *b"YU12",
            Self::Yuyv => *b"YUYV",
            Self::Mjpeg => *b"MJPG",
        }
    }

    /// The format with this code, if this backend reads it. `JPEG` is MJPEG under another
    /// name (some older webcams).
    pub fn from_fourcc(code: [u8; 4]) -> Option<Self> {
        match &code {
            b"JPEG" => Some(Self::Mjpeg),
            _ => Self::ALL.into_iter().find(|i| i.fourcc() == code),
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.fourcc()).unwrap_or("????"))
    }
}

/// One way a camera can deliver pictures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mode {
    pub input: Input,
    pub width: u32,
    pub height: u32,
    /// Frames per second at this format and size (the fastest the camera offers).
    pub fps: f64,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}x{}@{}",
            self.input,
            self.width,
            self.height,
            (self.fps * 100.0).round() / 100.0
        )
    }
}

/// The mode closest to `size` at `fps`, or `None` when `modes` is empty.
///
/// In order: the size nearest in area and aspect ratio (an exact match wins); then a rate
/// that reaches `fps` (or comes closest); then the cheapest format; then the rate nearest
/// above `fps` (faster than asked costs CPU for nothing). Odd sizes are left out: 4:2:0
/// needs even ones.
pub fn choose(modes: &[Mode], size: (u32, u32), fps: f64) -> Option<Mode> {
    let want_area = (size.0 as f64) * (size.1 as f64);
    let want_aspect = size.0 as f64 / size.1 as f64;
    // Keys in hundredths, so that measurement noise in rates does not reorder modes.
    let key = |m: &Mode| {
        let area = (m.width as f64) * (m.height as f64);
        let aspect = m.width as f64 / m.height as f64;
        // Another shape of picture is worse than another size of the same shape.
        let size_miss = (area / want_area).ln().abs() + 2.0 * (aspect / want_aspect).ln().abs();
        let shortfall = ((fps - m.fps) / fps).max(0.0);
        let excess = ((m.fps - fps) / fps).max(0.0);
        (
            (size_miss * 100.0).round() as i64,
            (shortfall * 100.0).round() as i64,
            m.input,
            (excess * 100.0).round() as i64,
        )
    };
    modes
        .iter()
        .filter(|m| m.width > 0 && m.height > 0 && m.width % 2 == 0 && m.height % 2 == 0)
        .min_by_key(|m| key(m))
        .copied()
}

/// The size a stepwise range offers nearest to `want` (clamped, on the step grid, even).
pub fn nearest_step(want: u32, min: u32, max: u32, step: u32) -> u32 {
    let step = step.max(1);
    let clamped = want.clamp(min, max);
    let on_grid = min + (clamped - min) / step * step;
    // The grid point at or below `want`, made even; step up when that is nearer.
    let up = (on_grid + step).min(max);
    let pick = if clamped - on_grid > up - clamped {
        up
    } else {
        on_grid
    };
    pick & !1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(input: Input, width: u32, height: u32, fps: f64) -> Mode {
        Mode {
            input,
            width,
            height,
            fps,
        }
    }

    #[test]
    fn exact_size_and_rate_wins_then_the_cheaper_format() {
        let modes = [
            m(Input::Mjpeg, 1280, 720, 30.0),
            m(Input::Yuyv, 1280, 720, 30.0),
            m(Input::Yuyv, 640, 480, 30.0),
        ];
        assert_eq!(choose(&modes, (1280, 720), 30.0), Some(modes[1]));
    }

    #[test]
    fn a_webcam_gives_720p30_only_as_mjpeg() {
        // A typical USB 2 webcam: raw 720p only at 10 fps.
        let modes = [
            m(Input::Yuyv, 1280, 720, 10.0),
            m(Input::Mjpeg, 1280, 720, 30.0),
            m(Input::Yuyv, 640, 480, 30.0),
        ];
        assert_eq!(choose(&modes, (1280, 720), 30.0), Some(modes[1]));
        assert_eq!(choose(&modes, (640, 480), 30.0), Some(modes[2]));
    }

    #[test]
    fn nearest_size_keeps_the_aspect_ratio() {
        let modes = [
            m(Input::Nv12, 640, 480, 30.0),
            m(Input::Nv12, 960, 540, 30.0),
            m(Input::Nv12, 1920, 1080, 30.0),
        ];
        assert_eq!(choose(&modes, (1280, 720), 30.0), Some(modes[1]));
        assert_eq!(choose(&modes, (800, 600), 30.0), Some(modes[0]));
    }

    #[test]
    fn faster_than_asked_only_when_nothing_matches() {
        let modes = [
            m(Input::I420, 640, 360, 60.0),
            m(Input::I420, 640, 360, 30.0),
        ];
        assert_eq!(choose(&modes, (640, 360), 30.0), Some(modes[1]));
        assert_eq!(choose(&modes[..1], (640, 360), 30.0), Some(modes[0]));
        assert_eq!(choose(&[], (640, 360), 30.0), None);
        assert_eq!(
            choose(&[m(Input::I420, 641, 360, 30.0)], (640, 360), 30.0),
            None,
            "odd width"
        );
    }

    #[test]
    fn stepwise_sizes_snap_to_the_grid() {
        assert_eq!(nearest_step(1280, 16, 4096, 16), 1280);
        assert_eq!(nearest_step(1283, 16, 4096, 8), 1280);
        assert_eq!(nearest_step(1286, 16, 4096, 8), 1288);
        assert_eq!(nearest_step(9000, 16, 1920, 2), 1920);
        assert_eq!(nearest_step(8, 48, 1920, 1), 48);
        assert_eq!(nearest_step(641, 2, 1920, 1), 640, "made even");
    }

    #[test]
    fn fourcc_names() {
        assert_eq!(Input::from_fourcc(*b"YU12"), Some(Input::I420));
        assert_eq!(Input::from_fourcc(*b"JPEG"), Some(Input::Mjpeg));
        assert_eq!(Input::from_fourcc(*b"RGB3"), None);
        assert_eq!(
            m(Input::Yuyv, 640, 480, 29.97).to_string(),
            "YUYV 640x480@29.97"
        );
    }
}
