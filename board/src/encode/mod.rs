//! Video encoders: one I420 image in, one H.264 access unit (Annex B) out.

mod software;

pub use software::OpenH264Encoder;

use crate::frame::I420Image;

/// How an encoder should behave. Every field has a low-latency default.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderSettings {
    /// Picture size the encoder will be fed.
    pub width: u32,
    pub height: u32,
    /// Nominal frame rate, for rate control.
    pub fps: f64,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// A keyframe at least this often, in frames (0 = only on request).
    pub keyframe_interval: u32,
}

/// Why encoding failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoder could not be created with these settings.
    #[error("cannot create {encoder} encoder: {reason}")]
    Create {
        encoder: &'static str,
        reason: String,
    },
    /// The image does not have the size the encoder was created for.
    #[error("image is {got:?}, encoder expects {expected:?}")]
    WrongSize {
        got: (u32, u32),
        expected: (u32, u32),
    },
    /// The encoder rejected a frame.
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// One encoded picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedInfo {
    /// The access unit starts a new GOP (IDR with SPS/PPS): a decoder can start here.
    pub keyframe: bool,
    /// The encoder produced no bitstream for this picture (rate control skipped it).
    pub skipped: bool,
}

/// An H.264 encoder. Output is Annex B with start codes, SPS/PPS in front of every IDR.
pub trait VideoEncoder: Send {
    /// Short name shown in the state JSON, e.g. `openh264`.
    fn name(&self) -> &'static str;

    /// Encodes `image`, appending the access unit to `out` (which the caller clears).
    /// `keyframe` forces an IDR.
    fn encode(
        &mut self,
        image: &I420Image,
        keyframe: bool,
        out: &mut Vec<u8>,
    ) -> Result<EncodedInfo, EncodeError>;
}
