//! Turning one V4L2 buffer into a picture, per pixel format: NV12 and I420 are copied in
//! the driver's own layout; YUYV is converted by the `yuv` crate; MJPEG is decoded by
//! libjpeg-turbo (`turbojpeg`) straight to YUV, with no RGB step.

use turbojpeg::{Decompressor, Subsamp, YuvImage};
use yuv::{BufferStoreMut, YuvPackedImage, YuvPlanarImageMut};

use super::mode::Input;
use crate::image::{Image, Layout, PixelFormat};

/// Why one buffer could not be read. Each is about that buffer only: the caller skips it
/// and takes the next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The driver filled fewer bytes than the format needs.
    #[error("buffer holds {got} bytes, the format needs {need}")]
    Short { got: usize, need: usize },
    /// The JPEG could not be decoded (webcams send a corrupt one now and then).
    #[error("MJPEG frame: {0}")]
    Jpeg(String),
    /// A JPEG of another size than the format set on the device.
    #[error("MJPEG frame is {got:?}, the device was set to {want:?}")]
    JpegSize { got: (u32, u32), want: (u32, u32) },
    /// The pixel conversion refused the buffer.
    #[error("pixel conversion: {0}")]
    Convert(String),
}

/// Reads buffers of one negotiated format into pictures of [`Reader::layout`].
pub struct Reader {
    layout: Layout,
    kind: Kind,
}

enum Kind {
    /// NV12 or I420 in the driver's layout: the buffer is the picture.
    Copy,
    /// Packed 4:2:2 with this many bytes per row.
    Yuyv { stride: u32 },
    /// JPEG frames; `scratch` holds a decoded frame whose chroma is not 4:2:0.
    Mjpeg {
        decompressor: Box<Decompressor>,
        scratch: Vec<u8>,
    },
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A reader for `input` frames of `width` x `height`, rows `bytes_per_line` apart as
    /// the driver reported them.
    pub fn new(
        input: Input,
        width: u32,
        height: u32,
        bytes_per_line: u32,
    ) -> Result<Self, ReadError> {
        let packed_i420 = Layout::packed(PixelFormat::I420, width, height);
        let (layout, kind) = match input {
            Input::Nv12 => (
                Layout {
                    luma_stride: bytes_per_line.max(width),
                    chroma_stride: bytes_per_line.max(width),
                    ..Layout::packed(PixelFormat::Nv12, width, height)
                },
                Kind::Copy,
            ),
            Input::I420 => (
                Layout {
                    luma_stride: bytes_per_line.max(width),
                    chroma_stride: bytes_per_line.max(width) / 2,
                    ..packed_i420
                },
                Kind::Copy,
            ),
            Input::Yuyv => (
                packed_i420,
                Kind::Yuyv {
                    stride: bytes_per_line.max(width * 2),
                },
            ),
            Input::Mjpeg => (
                packed_i420,
                Kind::Mjpeg {
                    decompressor: Box::new(
                        Decompressor::new().map_err(|e| ReadError::Jpeg(e.to_string()))?,
                    ),
                    scratch: Vec::new(),
                },
            ),
        };
        Ok(Self { layout, kind })
    }

    /// The layout of the pictures [`Self::read`] writes.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Reads the filled part of one buffer into `into` (of [`Self::layout`]).
    pub fn read(&mut self, buf: &[u8], into: &mut Image) -> Result<(), ReadError> {
        debug_assert_eq!(*into.layout(), self.layout);
        let (width, height) = self.layout.size();
        match &mut self.kind {
            Kind::Copy => {
                let need = self.layout.len();
                let src = buf.get(..need).ok_or(ReadError::Short {
                    got: buf.len(),
                    need,
                })?;
                into.as_bytes_mut().copy_from_slice(src);
                Ok(())
            }
            Kind::Yuyv { stride } => {
                let need = (*stride * height) as usize;
                if buf.len() < need {
                    return Err(ReadError::Short {
                        got: buf.len(),
                        need,
                    });
                }
                let packed = YuvPackedImage {
                    yuy: &buf[..need],
                    yuy_stride: *stride,
                    width,
                    height,
                };
                yuv::yuyv422_to_yuv420(&mut planar(into), &packed)
                    .map_err(|e| ReadError::Convert(e.to_string()))
            }
            Kind::Mjpeg {
                decompressor,
                scratch,
            } => {
                let jpeg_err = |e: turbojpeg::Error| ReadError::Jpeg(e.to_string());
                let header = decompressor.read_header(buf).map_err(jpeg_err)?;
                let got = (header.width as u32, header.height as u32);
                if got != (width, height) {
                    return Err(ReadError::JpegSize {
                        got,
                        want: (width, height),
                    });
                }
                let (w, h) = (width as usize, height as usize);
                match header.subsamp {
                    Subsamp::Sub2x2 => {
                        // 4:2:0 already: libjpeg-turbo writes the packed planes in place.
                        let out = YuvImage {
                            pixels: into.as_bytes_mut(),
                            width: w,
                            align: 1,
                            height: h,
                            subsamp: Subsamp::Sub2x2,
                        };
                        decompressor.decompress_to_yuv(buf, out).map_err(jpeg_err)?;
                    }
                    subsamp @ (Subsamp::Sub2x1 | Subsamp::Gray) => {
                        // 4:2:2 (most webcams) or grey: decoded in its own sampling; 4:2:0
                        // chroma is every other row of 4:2:2's (neutral for grey).
                        let chroma = if subsamp == Subsamp::Gray {
                            0
                        } else {
                            w / 2 * h
                        };
                        // Room for 4:2:2 chroma, or for the neutral 4:2:0 chroma of grey.
                        scratch.resize(w * h + 2 * chroma.max(w / 2 * (h / 2)), 128);
                        let out = YuvImage {
                            pixels: &mut scratch[..],
                            width: w,
                            align: 1,
                            height: h,
                            subsamp,
                        };
                        decompressor.decompress_to_yuv(buf, out).map_err(jpeg_err)?;
                        let (y, rest) = scratch.split_at_mut(w * h);
                        let planes = if chroma == 0 {
                            // Neutral 4:2:0 chroma for a grey picture.
                            let quarter = w / 2 * (h / 2);
                            rest[..2 * quarter].fill(128);
                            let (u, v) = rest.split_at(quarter);
                            [(&*y, w), (u, w / 2), (&v[..quarter], w / 2)]
                        } else {
                            let (u, v) = rest.split_at(chroma);
                            [(&*y, w), (u, w), (v, w)]
                        };
                        into.copy_from_planes(&planes)
                            .map_err(|e| ReadError::Jpeg(e.to_string()))?;
                    }
                    _ => {
                        // Rare samplings (4:4:4, 4:4:0, 4:1:1): through RGB, and the `yuv`
                        // crate's BT.601 video-range conversion.
                        scratch.resize(w * h * 3, 0);
                        let out = turbojpeg::Image {
                            pixels: &mut scratch[..],
                            width: w,
                            pitch: w * 3,
                            height: h,
                            format: turbojpeg::PixelFormat::RGB,
                        };
                        decompressor.decompress(buf, out).map_err(jpeg_err)?;
                        return yuv::rgb_to_yuv420(
                            &mut planar(into),
                            scratch,
                            (w * 3) as u32,
                            yuv::YuvRange::Limited,
                            yuv::YuvStandardMatrix::Bt601,
                            yuv::YuvConversionMode::Balanced,
                        )
                        .map_err(|e| ReadError::Convert(e.to_string()));
                    }
                }
                full_to_video_range(into);
                Ok(())
            }
        }
    }
}

/// The I420 planes of `image`, as the `yuv` crate writes them.
fn planar(image: &mut Image) -> YuvPlanarImageMut<'_, u8> {
    let (width, height) = image.size();
    let mut planes = image.planes_mut();
    // An I420 image has three planes.
    let mut next = || {
        let p = planes.next().expect("three I420 planes");
        let stride = p.stride() as u32;
        (BufferStoreMut::Borrowed(p.into_data()), stride)
    };
    let ((y_plane, y_stride), (u_plane, u_stride), (v_plane, v_stride)) = (next(), next(), next());
    YuvPlanarImageMut {
        y_plane,
        y_stride,
        u_plane,
        u_stride,
        v_plane,
        v_stride,
        width,
        height,
    }
}

/// JPEG (JFIF) samples use the full 0–255 range; video (and every decoder that shows the
/// H.264 focusd sends) expects 16–235 luma and 16–240 chroma. Without this, shadows and
/// highlights of an MJPEG camera would be clipped.
fn full_to_video_range(image: &mut Image) {
    let table = |scale: u32| -> [u8; 256] {
        std::array::from_fn(|v| (16 + (v as u32 * scale + 127) / 255) as u8)
    };
    let (luma, chroma) = (table(219), table(224));
    for mut plane in image.planes_mut() {
        let map = if plane.subsampling() == 1 {
            &luma
        } else {
            &chroma
        };
        for row in 0..plane.height() {
            for px in plane.row_mut(row) {
                *px = map[*px as usize];
            }
        }
    }
}
