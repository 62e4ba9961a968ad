//! The pure-Rust encoder (`jpeg-encoder`), fed row by row straight from the planes.

use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, SamplingFactor};

use super::JpegError;
use crate::image::Image;

/// Rows of Y, Cb, Cr for the encoder, read from an image in either format; the encoder
/// subsamples chroma back to 4:2:0 itself.
struct Rows<'a>(&'a Image);

impl ImageBuffer for Rows<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        // The caller checked that the size fits in 16 bits.
        self.0.width() as u16
    }

    fn height(&self) -> u16 {
        self.0.height() as u16
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let (image, y) = (self.0, y as usize);
        let width = image.width() as usize;
        let luma = image.luma();
        buffers[0].extend_from_slice(&luma.row(y)[..width]);
        let chroma = image.chroma();
        for x in 0..width {
            let (u, v) = chroma.at(x, y);
            buffers[1].push(u);
            buffers[2].push(v);
        }
    }
}

pub(super) fn encode(image: &Image, quality: u8, out: &mut Vec<u8>) -> Result<(), JpegError> {
    let mut encoder = Encoder::new(&mut *out, quality);
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder
        .encode_image(Rows(image))
        .map_err(|e| JpegError::Encoder(e.to_string()))
}
