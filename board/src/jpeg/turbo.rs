//! libjpeg-turbo, given the Y, U and V planes with their strides (NV12's interleaved
//! chroma is split first).

use turbojpeg::{Compressor, OutputBuf, Subsamp, YuvPlanesImage};

use super::JpegError;
use crate::image::{Chroma, Image};

fn library(e: turbojpeg::Error) -> JpegError {
    JpegError::Encoder(e.to_string())
}

/// A compressor handle and the scratch planes NV12 needs.
pub(super) struct Turbo {
    compressor: Compressor,
    /// U and V split out of NV12's interleaved plane.
    u: Vec<u8>,
    v: Vec<u8>,
}

impl std::fmt::Debug for Turbo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turbo").finish_non_exhaustive()
    }
}

impl Turbo {
    pub(super) fn new() -> Result<Self, JpegError> {
        Ok(Self {
            compressor: Compressor::new().map_err(library)?,
            u: Vec::new(),
            v: Vec::new(),
        })
    }

    pub(super) fn encode(
        &mut self,
        image: &Image,
        quality: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), JpegError> {
        self.compressor
            .set_quality(quality as i32)
            .map_err(library)?;
        let (width, height) = (image.width() as usize, image.height() as usize);
        let luma = image.luma();
        let chroma = image.chroma();
        let (u_plane, v_plane, chroma_stride): (&[u8], &[u8], usize) = match &chroma {
            Chroma::Planar(u, v) => (u.data(), v.data(), u.stride()),
            Chroma::Interleaved(uv) => {
                let (cw, ch) = (width / 2, height / 2);
                self.u.resize(cw * ch, 0);
                self.v.resize(cw * ch, 0);
                for r in 0..ch {
                    let row = &uv.row(r)[..cw * 2];
                    let (u, v) = (&mut self.u[r * cw..][..cw], &mut self.v[r * cw..][..cw]);
                    for (i, pair) in row.chunks_exact(2).enumerate() {
                        u[i] = pair[0];
                        v[i] = pair[1];
                    }
                }
                (&self.u, &self.v, cw)
            }
        };
        let planes = YuvPlanesImage {
            y_plane: luma.data(),
            u_plane,
            v_plane,
            width,
            height,
            y_stride: luma.stride(),
            u_stride: chroma_stride,
            v_stride: chroma_stride,
            subsamp: Subsamp::Sub2x2,
        };
        let mut buf = OutputBuf::new_owned();
        self.compressor
            .compress_yuv_planes(&planes, &mut buf)
            .map_err(library)?;
        out.extend_from_slice(&buf);
        Ok(())
    }
}
