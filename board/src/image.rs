//! Images as cameras and encoders lay them out: 4:2:0 planar (I420) or semi-planar (NV12),
//! with row strides and padded plane heights.
//!
//! A [`Layout`] says where each plane lies in one buffer, the way a V4L2 single-planar
//! buffer does: the luma plane (`luma_stride` bytes per row, `luma_rows` rows, of which
//! `height` are the picture), then the chroma plane(s) with `luma_rows / 2` rows each. A
//! source declares the layout it fills, so copying a camera's buffer is one `memcpy` and
//! an encoder that takes NV12 gets NV12.
//!
//! Everything that works on pixels (scaling, masking, the stamp, detectors) goes through
//! [`Plane`] / [`PlaneMut`], so it handles both formats and any stride.

use std::fmt;

/// How the chroma of a 4:2:0 image is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PixelFormat {
    /// Three planes: Y, then U, then V, each chroma plane half as wide and high (`YU12`).
    I420,
    /// Two planes: Y, then interleaved U,V pairs, half as high (`NV12`).
    Nv12,
}

impl PixelFormat {
    /// The format's usual four-character name.
    pub fn name(self) -> &'static str {
        match self {
            Self::I420 => "I420",
            Self::Nv12 => "NV12",
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a layout cannot hold a picture.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// 4:2:0 needs even, non-zero width and height.
    #[error("{format} needs even, non-zero dimensions, got {width}x{height}")]
    OddSize {
        format: PixelFormat,
        width: u32,
        height: u32,
    },
    /// A stride or the padded height is smaller than the picture.
    #[error("{format} {width}x{height}: {what} {got} is smaller than the minimum {min}")]
    TooSmall {
        format: PixelFormat,
        width: u32,
        height: u32,
        what: &'static str,
        got: u32,
        min: u32,
    },
}

/// A foreign plane too short for the picture it should hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("plane {index} holds {got} bytes, the picture needs {need}")]
pub struct ShortPlane {
    /// Which plane (0 = Y).
    pub index: usize,
    /// Its length.
    pub got: usize,
    /// The length the picture needs.
    pub need: usize,
}

/// Where the planes of an image lie in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    /// How chroma is stored.
    pub format: PixelFormat,
    /// Picture width in pixels (even).
    pub width: u32,
    /// Picture height in pixels (even).
    pub height: u32,
    /// Bytes from one luma row to the next (at least `width`).
    pub luma_stride: u32,
    /// Bytes from one chroma row to the next, in each chroma plane (at least `width / 2`
    /// for I420, `width` for NV12).
    pub chroma_stride: u32,
    /// Rows the luma plane occupies before chroma starts (at least `height`; hardware pads
    /// it, e.g. 1080 to 1088). Each chroma plane occupies half as many.
    pub luma_rows: u32,
}

impl Layout {
    /// Tightly packed planes: strides are the row widths, no padding rows.
    pub fn packed(format: PixelFormat, width: u32, height: u32) -> Self {
        Self::aligned(format, width, height, 1, 1)
    }

    /// The layout V4L2 drivers use: the luma stride rounded up to `stride_align` bytes,
    /// chroma strides derived from it, and the luma plane padded to `rows_align` rows.
    pub fn aligned(
        format: PixelFormat,
        width: u32,
        height: u32,
        stride_align: u32,
        rows_align: u32,
    ) -> Self {
        let luma_stride = width.next_multiple_of(stride_align.max(1));
        Self {
            format,
            width,
            height,
            luma_stride,
            chroma_stride: match format {
                PixelFormat::I420 => luma_stride / 2,
                PixelFormat::Nv12 => luma_stride,
            },
            luma_rows: height.next_multiple_of(rows_align.max(2)),
        }
    }

    /// Checks that the layout can hold a `width` x `height` 4:2:0 picture.
    pub fn check(&self) -> Result<(), LayoutError> {
        let (format, width, height) = (self.format, self.width, self.height);
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(LayoutError::OddSize {
                format,
                width,
                height,
            });
        }
        let min_chroma = match format {
            PixelFormat::I420 => width / 2,
            PixelFormat::Nv12 => width,
        };
        for (what, got, min) in [
            ("luma stride", self.luma_stride, width),
            ("chroma stride", self.chroma_stride, min_chroma),
            ("luma rows", self.luma_rows, height),
        ] {
            if got < min {
                return Err(LayoutError::TooSmall {
                    format,
                    width,
                    height,
                    what,
                    got,
                    min,
                });
            }
        }
        if !self.luma_rows.is_multiple_of(2) {
            return Err(LayoutError::OddSize {
                format,
                width,
                height: self.luma_rows,
            });
        }
        Ok(())
    }

    /// Picture size, `(width, height)`.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Bytes the whole buffer takes, padding included.
    pub fn len(&self) -> usize {
        self.planes()
            .last()
            .map_or(0, |p| p.offset + p.stride * p.rows_allocated)
    }

    /// Whether the layout holds no bytes (never, once [`Self::check`] passed).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The planes in buffer order.
    fn planes(&self) -> impl Iterator<Item = PlaneGeometry> + use<> {
        let luma_len = self.luma_stride as usize * self.luma_rows as usize;
        let chroma_rows = self.luma_rows as usize / 2;
        let chroma_len = self.chroma_stride as usize * chroma_rows;
        let luma = PlaneGeometry {
            offset: 0,
            stride: self.luma_stride as usize,
            rows_allocated: self.luma_rows as usize,
            width: self.width as usize,
            height: self.height as usize,
            channels: 1,
            subsampling: 1,
        };
        let chroma = |offset, channels| PlaneGeometry {
            offset,
            stride: self.chroma_stride as usize,
            rows_allocated: chroma_rows,
            width: self.width as usize / 2,
            height: self.height as usize / 2,
            channels,
            subsampling: 2,
        };
        let planes = match self.format {
            PixelFormat::I420 => [
                Some(luma),
                Some(chroma(luma_len, 1)),
                Some(chroma(luma_len + chroma_len, 1)),
            ],
            PixelFormat::Nv12 => [Some(luma), Some(chroma(luma_len, 2)), None],
        };
        planes.into_iter().flatten()
    }
}

/// One plane's place in a buffer and what its rows hold.
#[derive(Clone, Copy, Debug)]
struct PlaneGeometry {
    offset: usize,
    stride: usize,
    rows_allocated: usize,
    /// Picture samples per row (a U,V pair counts as one sample of two channels).
    width: usize,
    /// Picture rows.
    height: usize,
    channels: usize,
    subsampling: usize,
}

/// One plane of an image, read-only.
#[derive(Clone, Copy, Debug)]
pub struct Plane<'a> {
    data: &'a [u8],
    geometry: PlaneGeometry,
}

/// One plane of an image, writable.
#[derive(Debug)]
pub struct PlaneMut<'a> {
    data: &'a mut [u8],
    geometry: PlaneGeometry,
}

macro_rules! plane_accessors {
    () => {
        /// Samples per picture row.
        pub fn width(&self) -> usize {
            self.geometry.width
        }

        /// Picture rows.
        pub fn height(&self) -> usize {
            self.geometry.height
        }

        /// Bytes from one row to the next.
        pub fn stride(&self) -> usize {
            self.geometry.stride
        }

        /// Bytes per sample: 1, or 2 for NV12's interleaved U,V.
        pub fn channels(&self) -> usize {
            self.geometry.channels
        }

        /// Image pixels per sample along each axis: 1 for luma, 2 for chroma.
        pub fn subsampling(&self) -> usize {
            self.geometry.subsampling
        }

        /// Bytes of picture in each row (`width * channels`).
        pub fn row_bytes(&self) -> usize {
            self.geometry.width * self.geometry.channels
        }

        /// Picture row `y`, without the stride's padding.
        pub fn row(&self, y: usize) -> &[u8] {
            &self.data[y * self.geometry.stride..][..self.row_bytes()]
        }

        /// The plane's bytes from its first row, padding included.
        pub fn data(&self) -> &[u8] {
            self.data
        }
    };
}

impl<'a> Plane<'a> {
    plane_accessors!();

    /// The plane's bytes, for as long as the image is borrowed.
    pub fn into_data(self) -> &'a [u8] {
        self.data
    }
}

impl<'a> PlaneMut<'a> {
    plane_accessors!();

    /// Picture row `y`, writable.
    pub fn row_mut(&mut self, y: usize) -> &mut [u8] {
        let len = self.row_bytes();
        &mut self.data[y * self.geometry.stride..][..len]
    }

    /// Sets every picture sample to `value` (one byte per channel).
    pub fn fill(&mut self, value: &[u8]) {
        self.fill_rect(0..self.width(), 0..self.height(), value);
    }

    /// Sets the samples in columns `xs` of rows `ys` (in this plane's samples) to `value`.
    pub fn fill_rect(
        &mut self,
        xs: std::ops::Range<usize>,
        ys: std::ops::Range<usize>,
        value: &[u8],
    ) {
        let ch = self.channels();
        debug_assert_eq!(value.len(), ch, "one byte per channel");
        let bytes = xs.start * ch..xs.end * ch;
        if ch == 1 {
            for y in ys {
                self.row_mut(y)[bytes.clone()].fill(value[0]);
            }
        } else {
            // One row's worth of samples, copied into each row: a memcpy per row.
            let line = value.repeat(xs.len());
            for y in ys {
                self.row_mut(y)[bytes.clone()].copy_from_slice(&line);
            }
        }
    }

    /// The plane's bytes from its first row, padding included, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.data
    }

    /// The plane's bytes, writable for as long as the image is borrowed.
    pub fn into_data(self) -> &'a mut [u8] {
        self.data
    }
}

/// The chroma of an image, by format.
#[derive(Clone, Copy, Debug)]
pub enum Chroma<'a> {
    /// I420: a U plane and a V plane.
    Planar(Plane<'a>, Plane<'a>),
    /// NV12: one plane of U,V pairs.
    Interleaved(Plane<'a>),
}

impl Chroma<'_> {
    /// The U and V of the chroma sample covering image pixel (`x`, `y`).
    pub fn at(&self, x: usize, y: usize) -> (u8, u8) {
        let (cx, cy) = (x / 2, y / 2);
        match self {
            Self::Planar(u, v) => (u.row(cy)[cx], v.row(cy)[cx]),
            Self::Interleaved(uv) => {
                let row = uv.row(cy);
                (row[cx * 2], row[cx * 2 + 1])
            }
        }
    }
}

/// A 4:2:0 picture in one buffer, laid out as its [`Layout`] says.
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    layout: Layout,
    data: Vec<u8>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("layout", &self.layout)
            .finish()
    }
}

impl Image {
    /// A black image (Y=16, U=V=128) in `layout`. Panics if the layout fails
    /// [`Layout::check`]: callers check layouts when a source or the configuration
    /// declares them, long before an image is made.
    pub fn new(layout: Layout) -> Self {
        if let Err(e) = layout.check() {
            panic!("invalid image layout: {e}");
        }
        let mut image = Self {
            layout,
            data: vec![0; layout.len()],
        };
        image.fill(16);
        image
    }

    /// A black, tightly packed I420 image.
    pub fn i420(width: u32, height: u32) -> Self {
        Self::new(Layout::packed(PixelFormat::I420, width, height))
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn format(&self) -> PixelFormat {
        self.layout.format
    }

    pub fn width(&self) -> u32 {
        self.layout.width
    }

    pub fn height(&self) -> u32 {
        self.layout.height
    }

    pub fn size(&self) -> (u32, u32) {
        self.layout.size()
    }

    /// The planes in buffer order: Y, U, V for I420; Y, UV for NV12.
    pub fn planes(&self) -> impl Iterator<Item = Plane<'_>> {
        self.layout.planes().map(|geometry| Plane {
            data: &self.data[geometry.offset..][..geometry.stride * geometry.rows_allocated],
            geometry,
        })
    }

    /// The planes in buffer order, writable at once.
    pub fn planes_mut(&mut self) -> impl Iterator<Item = PlaneMut<'_>> {
        let mut rest: &mut [u8] = &mut self.data;
        let mut consumed = 0;
        self.layout.planes().map(move |geometry| {
            let tail = std::mem::take(&mut rest);
            let (_, tail) = tail.split_at_mut(geometry.offset - consumed);
            let len = geometry.stride * geometry.rows_allocated;
            let (data, tail) = tail.split_at_mut(len);
            rest = tail;
            consumed = geometry.offset + len;
            PlaneMut { data, geometry }
        })
    }

    /// The luma plane.
    pub fn luma(&self) -> Plane<'_> {
        // Every layout starts with its luma plane.
        self.planes().next().expect("luma plane")
    }

    /// The luma plane, writable.
    pub fn luma_mut(&mut self) -> PlaneMut<'_> {
        // Every layout starts with its luma plane.
        self.planes_mut().next().expect("luma plane")
    }

    /// The chroma plane(s), for reading U and V by pixel position in either format.
    pub fn chroma(&self) -> Chroma<'_> {
        let mut chroma = self.planes().skip(1);
        // Both formats have chroma after luma: one interleaved plane or two planes.
        let first = chroma.next().expect("chroma plane");
        match chroma.next() {
            None => Chroma::Interleaved(first),
            Some(v) => Chroma::Planar(first, v),
        }
    }

    /// The U and V of the chroma sample covering pixel (`x`, `y`).
    pub fn chroma_at(&self, x: usize, y: usize) -> (u8, u8) {
        self.chroma().at(x, y)
    }

    /// The whole buffer in layout order, padding included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The whole buffer, given up (to a library that takes ownership).
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// The whole buffer, writable (for readers that fill it whole in this layout).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Sets every pixel to grey level `luma` with neutral chroma.
    pub fn fill(&mut self, luma: u8) {
        for mut plane in self.planes_mut() {
            let value = if plane.subsampling() == 1 {
                [luma; 2]
            } else {
                [128; 2]
            };
            let ch = plane.channels();
            plane.fill(&value[..ch]);
        }
    }

    /// Paints chroma (`u`, `v`) over the chroma samples wholly inside `rect`.
    pub fn fill_chroma(&mut self, rect: PixelRect, u: u8, v: u8) {
        let xs = rect.x0.div_ceil(2) as usize..(rect.x1 / 2) as usize;
        let ys = rect.y0.div_ceil(2) as usize..(rect.y1 / 2) as usize;
        let uv = [u, v];
        for (i, mut plane) in self.planes_mut().skip(1).enumerate() {
            let value = if plane.channels() == 2 {
                &uv[..]
            } else {
                &uv[i..=i]
            };
            plane.fill_rect(xs.clone(), ys.clone(), value);
        }
    }

    /// Copies the pixels of `rect` (even-aligned, inside both images) from `src`, which
    /// has the same size and format (strides may differ).
    pub fn copy_rect_from(&mut self, src: &Image, rect: PixelRect) {
        debug_assert_eq!(self.size(), src.size());
        debug_assert_eq!(self.format(), src.format());
        for (mut dst, src) in self.planes_mut().zip(src.planes()) {
            let (sub, ch) = (dst.subsampling(), dst.channels());
            let xs = rect.x0 as usize / sub * ch..rect.x1 as usize / sub * ch;
            for y in rect.y0 as usize / sub..rect.y1 as usize / sub {
                dst.row_mut(y)[xs.clone()].copy_from_slice(&src.row(y)[xs.clone()]);
            }
        }
    }

    /// Copies a picture of this image's size and format given as foreign planes (a
    /// decoder's, a driver's or GStreamer's buffer), each with its row stride: Y, U, V for
    /// I420, Y and UV for NV12. A chroma stride of two rows takes every other row: how
    /// 4:2:2 chroma becomes 4:2:0.
    pub fn copy_from_planes(&mut self, planes: &[(&[u8], usize)]) -> Result<(), ShortPlane> {
        let format = self.format();
        assert_eq!(
            planes.len(),
            self.planes().count(),
            "one plane each for {format}"
        );
        for (index, (mut dst, &(src, stride))) in self.planes_mut().zip(planes).enumerate() {
            let (rows, row) = (dst.height(), dst.row_bytes());
            let need = (rows - 1) * stride + row;
            if src.len() < need || stride < row {
                return Err(ShortPlane {
                    index,
                    got: src.len(),
                    need,
                });
            }
            for y in 0..rows {
                dst.row_mut(y).copy_from_slice(&src[y * stride..][..row]);
            }
        }
        Ok(())
    }

    /// Copies the whole picture from `src`, of the same size, converting between I420 and
    /// NV12 and between strides as needed.
    pub fn copy_from(&mut self, src: &Image) {
        assert_eq!(self.size(), src.size(), "copy between images of one size");
        if self.format() == src.format() {
            for (mut dst, src) in self.planes_mut().zip(src.planes()) {
                for y in 0..dst.height() {
                    dst.row_mut(y).copy_from_slice(src.row(y));
                }
            }
            return;
        }
        let formats = (self.format(), src.format());
        let mut dst_planes = self.planes_mut();
        let mut src_planes = src.planes();
        // Both formats start with the same luma plane.
        let (mut dy, sy) = (
            dst_planes.next().expect("luma"),
            src_planes.next().expect("luma"),
        );
        for y in 0..dy.height() {
            dy.row_mut(y).copy_from_slice(sy.row(y));
        }
        match formats {
            (PixelFormat::I420, PixelFormat::Nv12) => {
                let (mut du, mut dv) =
                    (dst_planes.next().expect("u"), dst_planes.next().expect("v"));
                let suv = src_planes.next().expect("uv");
                for y in 0..suv.height() {
                    let (u, v) = (du.row_mut(y), dv.row_mut(y));
                    for ((pair, u), v) in suv.row(y).chunks_exact(2).zip(u).zip(v) {
                        *u = pair[0];
                        *v = pair[1];
                    }
                }
            }
            (PixelFormat::Nv12, PixelFormat::I420) => {
                let mut duv = dst_planes.next().expect("uv");
                let (su, sv) = (src_planes.next().expect("u"), src_planes.next().expect("v"));
                for y in 0..duv.height() {
                    let (u, v) = (su.row(y), sv.row(y));
                    for ((pair, u), v) in duv.row_mut(y).chunks_exact_mut(2).zip(u).zip(v) {
                        pair[0] = *u;
                        pair[1] = *v;
                    }
                }
            }
            _ => unreachable!("formats differ and there are two"),
        }
    }
}

/// A rectangle in pixels, `x0 <= x < x1`, `y0 <= y < y1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelRect {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl PixelRect {
    pub fn width(&self) -> u32 {
        self.x1.saturating_sub(self.x0)
    }

    pub fn height(&self) -> u32 {
        self.y1.saturating_sub(self.y0)
    }

    pub fn is_empty(&self) -> bool {
        self.width() == 0 || self.height() == 0
    }

    /// Grows the rectangle outward to multiples of `align` and clips it to `w x h`.
    pub fn align_out(&self, align: u32, w: u32, h: u32) -> PixelRect {
        PixelRect {
            x0: self.x0 / align * align,
            y0: self.y0 / align * align,
            x1: self.x1.div_ceil(align).saturating_mul(align).min(w),
            y1: self.y1.div_ceil(align).saturating_mul(align).min(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(layout: Layout) -> Image {
        let mut img = Image::new(layout);
        let mut planes = img.planes_mut();
        let mut luma = planes.next().unwrap();
        for y in 0..luma.height() {
            for (x, px) in luma.row_mut(y).iter_mut().enumerate() {
                *px = (x * 3 + y * 7) as u8;
            }
        }
        // Distinct U and V, in either format.
        let (w, h) = (layout.width / 2, layout.height / 2);
        drop(planes);
        for cy in 0..h {
            for cx in 0..w {
                let rect = PixelRect {
                    x0: cx * 2,
                    y0: cy * 2,
                    x1: cx * 2 + 2,
                    y1: cy * 2 + 2,
                };
                img.fill_chroma(rect, (cx * 5 + cy) as u8, (200 - cx - cy * 3) as u8);
            }
        }
        img
    }

    #[test]
    fn packed_i420_is_y_then_u_then_v() {
        let layout = Layout::packed(PixelFormat::I420, 8, 4);
        assert_eq!(layout.len(), 8 * 4 * 3 / 2);
        let img = Image::new(layout);
        let lens: Vec<usize> = img.planes().map(|p| p.data().len()).collect();
        assert_eq!(lens, [32, 8, 8]);
        assert!(img.as_bytes()[..32].iter().all(|&p| p == 16));
        assert!(img.as_bytes()[32..].iter().all(|&p| p == 128));
    }

    #[test]
    fn aligned_layout_pads_strides_and_rows_like_v4l2() {
        // The Pi's codec: 32-byte strides, 16-row luma plane.
        let l = Layout::aligned(PixelFormat::Nv12, 1920, 1080, 32, 16);
        assert_eq!(
            (l.luma_stride, l.chroma_stride, l.luma_rows),
            (1920, 1920, 1088)
        );
        assert_eq!(l.len(), 1920 * 1088 * 3 / 2);
        let l = Layout::aligned(PixelFormat::I420, 1000, 562, 64, 16);
        assert_eq!(
            (l.luma_stride, l.chroma_stride, l.luma_rows),
            (1024, 512, 576)
        );
        assert_eq!(l.len(), 1024 * 576 + 2 * 512 * 288);
        l.check().unwrap();
    }

    #[test]
    fn check_names_what_is_wrong() {
        let odd = Layout::packed(PixelFormat::Nv12, 7, 4).check().unwrap_err();
        assert!(odd.to_string().contains("even"), "{odd}");
        let mut narrow = Layout::packed(PixelFormat::Nv12, 8, 4);
        narrow.chroma_stride = 4;
        let err = narrow.check().unwrap_err();
        assert!(err.to_string().contains("chroma stride 4"), "{err}");
    }

    #[test]
    fn nv12_planes_interleave_chroma() {
        let img = gradient(Layout::aligned(PixelFormat::Nv12, 8, 4, 16, 8));
        let planes: Vec<Plane> = img.planes().collect();
        assert_eq!(planes.len(), 2);
        assert_eq!((planes[1].width(), planes[1].channels()), (4, 2));
        assert_eq!(planes[1].row(1)[2..4], [6, 200 - 1 - 3]);
        assert_eq!(img.chroma_at(3, 2), (6, 196));
    }

    #[test]
    fn copy_from_converts_both_ways_and_across_strides() {
        let i420 = gradient(Layout::packed(PixelFormat::I420, 16, 8));
        let mut nv12 = Image::new(Layout::aligned(PixelFormat::Nv12, 16, 8, 32, 16));
        nv12.copy_from(&i420);
        for (x, y) in [(0, 0), (5, 3), (15, 7)] {
            assert_eq!(nv12.chroma_at(x, y), i420.chroma_at(x, y));
            assert_eq!(nv12.luma().row(y)[x], i420.luma().row(y)[x]);
        }
        let mut back = Image::i420(16, 8);
        back.copy_from(&nv12);
        assert_eq!(back, i420, "the round trip is exact");
        let mut strided = Image::new(Layout::aligned(PixelFormat::I420, 16, 8, 64, 16));
        strided.copy_from(&i420);
        let mut again = Image::i420(16, 8);
        again.copy_from(&strided);
        assert_eq!(again, i420);
    }

    #[test]
    fn foreign_planes_are_copied_and_422_chroma_takes_every_other_row() {
        let (w, h) = (8usize, 4usize);
        let y: Vec<u8> = (0..w * h).map(|i| i as u8).collect();
        // 4:2:2 chroma: half width, full height; row r holds r * 10 + column.
        let chroma = |base: u8| -> Vec<u8> {
            (0..h)
                .flat_map(|r| (0..w / 2).map(move |c| base + (r * 10 + c) as u8))
                .collect()
        };
        let (u, v) = (chroma(0), chroma(100));
        let mut img = Image::i420(w as u32, h as u32);
        img.copy_from_planes(&[(&y, w), (&u, w), (&v, w)]).unwrap();
        assert_eq!(img.luma().row(3), &y[24..32]);
        assert_eq!(
            img.chroma_at(2, 2),
            (21, 121),
            "chroma row 1 is 4:2:2 row 2"
        );
        let short = img
            .copy_from_planes(&[(&y[..20], w), (&u, w), (&v, w)])
            .unwrap_err();
        assert_eq!(short.index, 0);
        assert!(short.to_string().contains("needs 32"), "{short}");
    }

    #[test]
    fn copy_rect_copies_only_inside_in_either_format() {
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let layout = Layout::aligned(format, 32, 32, 64, 1);
            let mut src = Image::new(layout);
            src.fill(200);
            let whole = PixelRect {
                x0: 0,
                y0: 0,
                x1: 32,
                y1: 32,
            };
            src.fill_chroma(whole, 60, 190);
            let mut dst = Image::new(layout);
            let rect = PixelRect {
                x0: 8,
                y0: 8,
                x1: 16,
                y1: 24,
            };
            dst.copy_rect_from(&src, rect);
            let luma = dst.luma();
            assert_eq!(luma.row(8)[8], 200, "{format}");
            assert_eq!(luma.row(8)[16], 16, "{format}");
            assert_eq!(luma.row(7)[8], 16, "{format}");
            assert_eq!(dst.chroma_at(8, 8), (60, 190), "{format}");
            assert_eq!(dst.chroma_at(16, 8), (128, 128), "{format}");
            assert_eq!(dst.chroma_at(8, 24), (128, 128), "{format}");
        }
    }

    #[test]
    fn align_out_grows_and_clips() {
        let r = PixelRect {
            x0: 17,
            y0: 3,
            x1: 33,
            y1: 50,
        };
        assert_eq!(
            r.align_out(16, 40, 48),
            PixelRect {
                x0: 16,
                y0: 0,
                x1: 40,
                y1: 48
            }
        );
    }
}
