//! JPEG pictures of 4:2:0 images, for the doors that serve pictures instead of H.264
//! (snapshots, MJPEG, JPEG over a WebSocket).
//!
//! Two encoders sit behind one [`JpegEncoder`]: libjpeg-turbo (feature `turbojpeg`,
//! SIMD on x86 and NEON on the boards, built from source with the V4L2 backend) and the
//! pure-Rust `jpeg-encoder`, always built, so the default build needs no C toolchain
//! beyond the one it has. [`JpegEncoder::new`] takes the fastest one compiled in. Both
//! read the planes as they lie (I420 or NV12, any stride) and keep 4:2:0 sampling, so no
//! RGB step happens on the way.
//!
//! On a 720p frame here, libjpeg-turbo took a third of the time of `jpeg-encoder` (its
//! AVX2 path) at quality 80; `focusd-bench --only jpeg` measures both.

mod pure;
#[cfg(feature = "turbojpeg")]
mod turbo;

use crate::image::Image;

/// Why a picture could not be compressed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JpegError {
    /// The picture is beyond what JPEG can hold (65 535 pixels a side).
    #[error("a {width}x{height} picture is too large for JPEG")]
    TooLarge { width: u32, height: u32 },
    /// The library failed; the message is its own.
    #[error("JPEG encoder: {0}")]
    Encoder(String),
}

/// Which library compresses.
#[derive(Debug)]
enum Backend {
    #[cfg(feature = "turbojpeg")]
    Turbo(turbo::Turbo),
    Pure,
}

/// A JPEG encoder for 4:2:0 images. Not shared between threads: each caller keeps its own
/// (libjpeg-turbo's handle holds scratch memory between pictures).
#[derive(Debug)]
pub struct JpegEncoder {
    backend: Backend,
}

impl Default for JpegEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl JpegEncoder {
    /// The fastest encoder in this build: libjpeg-turbo when compiled in (and its handle
    /// can be made), else `jpeg-encoder`.
    pub fn new() -> Self {
        #[cfg(feature = "turbojpeg")]
        match turbo::Turbo::new() {
            Ok(t) => {
                return Self {
                    backend: Backend::Turbo(t),
                };
            }
            Err(e) => tracing::warn!(error = %e, "libjpeg-turbo unavailable; using jpeg-encoder"),
        }
        Self::pure()
    }

    /// The pure-Rust encoder, whatever the build has (for comparison).
    pub fn pure() -> Self {
        Self {
            backend: Backend::Pure,
        }
    }

    /// The library's name (state, metrics, the benchmark).
    pub fn name(&self) -> &'static str {
        match self.backend {
            #[cfg(feature = "turbojpeg")]
            Backend::Turbo(_) => "libjpeg-turbo",
            Backend::Pure => "jpeg-encoder",
        }
    }

    /// Compresses `image` at `quality` (clamped to 1..=100), replacing what `out` held.
    pub fn encode(
        &mut self,
        image: &Image,
        quality: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), JpegError> {
        let (width, height) = image.size();
        if width > u16::MAX as u32 || height > u16::MAX as u32 {
            return Err(JpegError::TooLarge { width, height });
        }
        let quality = quality.clamp(1, 100);
        out.clear();
        match &mut self.backend {
            #[cfg(feature = "turbojpeg")]
            Backend::Turbo(t) => t.encode(image, quality, out),
            Backend::Pure => pure::encode(image, quality, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Layout, PixelFormat};

    /// A picture with content in every plane: a luma ramp and two chroma ramps.
    fn picture(format: PixelFormat, stride_align: u32) -> Image {
        let mut image = Image::new(Layout::aligned(format, 96, 64, stride_align, 16));
        let mut planes = image.planes_mut();
        let mut y = planes.next().expect("luma");
        for r in 0..64 {
            for (c, px) in y.row_mut(r)[..96].iter_mut().enumerate() {
                *px = (c * 2 + r) as u8;
            }
        }
        for (i, mut p) in planes.enumerate() {
            for r in 0..32 {
                let w = p.row_bytes();
                for (c, px) in p.row_mut(r)[..w].iter_mut().enumerate() {
                    *px = (60 + c + r * 2 + i * 50) as u8;
                }
            }
        }
        image
    }

    fn check(mut encoder: JpegEncoder) {
        let mut out = Vec::new();
        for (format, align) in [
            (PixelFormat::I420, 1),
            (PixelFormat::Nv12, 64),
            (PixelFormat::I420, 64),
        ] {
            let image = picture(format, align);
            encoder.encode(&image, 90, &mut out).expect("encodes");
            assert_eq!(&out[..2], &[0xFF, 0xD8], "{format}: starts with SOI");
            assert_eq!(
                &out[out.len() - 2..],
                &[0xFF, 0xD9],
                "{format}: ends with EOI"
            );
            // The frame header (SOF0) holds the size.
            let sof = out
                .windows(2)
                .position(|w| w == [0xFF, 0xC0])
                .expect("baseline SOF");
            let h = u16::from_be_bytes([out[sof + 5], out[sof + 6]]);
            let w = u16::from_be_bytes([out[sof + 7], out[sof + 8]]);
            assert_eq!((w, h), (96, 64), "{} {format}", encoder.name());
        }
        // Lower quality, fewer bytes.
        let image = picture(PixelFormat::I420, 1);
        encoder.encode(&image, 95, &mut out).expect("encodes");
        let high = out.len();
        encoder.encode(&image, 20, &mut out).expect("encodes");
        assert!(
            out.len() < high,
            "{}: q20 {} >= q95 {high}",
            encoder.name(),
            out.len()
        );
    }

    #[test]
    fn both_encoders_write_baseline_jpeg_of_either_format_and_any_stride() {
        check(JpegEncoder::pure());
        check(JpegEncoder::new());
    }
}
