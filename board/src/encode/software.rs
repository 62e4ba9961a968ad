//! Software H.264 with Cisco's openh264 (built from source by the `openh264` crate):
//! constrained baseline, no B-frames, real-time usage, one slice per picture.

use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level,
    Profile, QpRange, RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSource;

use super::{EncodeError, EncodedInfo, EncoderSettings, VideoEncoder};
use crate::frame::I420Image;

/// The openh264 software encoder.
pub struct OpenH264Encoder {
    encoder: Encoder,
    size: (u32, u32),
}

impl std::fmt::Debug for OpenH264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenH264Encoder")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The lowest quantiser the rate control may use.
const MIN_QP: u8 = 18;

impl OpenH264Encoder {
    pub fn new(settings: &EncoderSettings) -> Result<Self, EncodeError> {
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .level(Level::Level_3_1)
            .complexity(Complexity::Low)
            .rate_control_mode(RateControlMode::Bitrate)
            // Below QP 18 the picture gains nothing visible: under its budget (a small
            // VISION region) the encoder stops there instead of spending the rest.
            .qp(QpRange::new(MIN_QP, 51))
            .bitrate(BitRate::from_bps(
                settings.bitrate_kbps.saturating_mul(1000),
            ))
            .max_frame_rate(FrameRate::from_hz(settings.fps as f32))
            // Dropping frames to meet the bitrate would stutter; quality gives way instead.
            .skip_frames(false)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                settings.keyframe_interval,
            ))
            .scene_change_detect(false)
            .num_threads(1);
        let encoder =
            Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| {
                EncodeError::Create {
                    encoder: "openh264",
                    reason: e.to_string(),
                }
            })?;
        Ok(Self {
            encoder,
            size: (settings.width, settings.height),
        })
    }
}

/// Borrowed view of an [`I420Image`] in the shape openh264 reads.
struct Planes<'a>(&'a I420Image);

impl YUVSource for Planes<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width() as usize, self.0.height() as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let w = self.0.width() as usize;
        (w, w / 2, w / 2)
    }

    fn y(&self) -> &[u8] {
        self.0.y()
    }

    fn u(&self) -> &[u8] {
        self.0.u()
    }

    fn v(&self) -> &[u8] {
        self.0.v()
    }
}

impl VideoEncoder for OpenH264Encoder {
    fn name(&self) -> &'static str {
        "openh264"
    }

    fn encode(
        &mut self,
        image: &I420Image,
        keyframe: bool,
        out: &mut Vec<u8>,
    ) -> Result<EncodedInfo, EncodeError> {
        let got = (image.width(), image.height());
        if got != self.size {
            return Err(EncodeError::WrongSize {
                got,
                expected: self.size,
            });
        }
        if keyframe {
            self.encoder.force_intra_frame();
        }
        let stream = self
            .encoder
            .encode(&Planes(image))
            .map_err(|e| EncodeError::Encode(e.to_string()))?;
        let frame_type = stream.frame_type();
        stream.write_vec(out);
        Ok(EncodedInfo {
            keyframe: matches!(frame_type, FrameType::IDR | FrameType::I),
            skipped: matches!(frame_type, FrameType::Skip) || out.is_empty(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::TestPattern;
    use openh264::decoder::Decoder;

    fn settings() -> EncoderSettings {
        EncoderSettings {
            width: 320,
            height: 180,
            fps: 30.0,
            bitrate_kbps: 500,
            keyframe_interval: 0,
        }
    }

    #[test]
    fn encodes_decodable_baseline_with_forced_keyframes() {
        let mut enc = OpenH264Encoder::new(&settings()).unwrap();
        let pattern = TestPattern::new((320, 180), 30.0);
        let mut img = I420Image::new(320, 180);
        let mut dec = Decoder::new().unwrap();
        let mut out = Vec::new();
        let mut kinds = vec![];
        for i in 0..6u64 {
            pattern.draw(&mut img, 1_000_000 + i * 33);
            out.clear();
            let info = enc.encode(&img, i == 4, &mut out).unwrap();
            kinds.push(info.keyframe);
            assert!(out.starts_with(&[0, 0, 0, 1]), "Annex B start code");
            let decoded = dec
                .decode(&out)
                .unwrap()
                .expect("a picture per access unit");
            let (w, h) = decoded.dimensions();
            assert_eq!((w, h), (320, 180));
            let stride = decoded.strides().0;
            let stamp = crate::stamp::read(decoded.y(), 320, 180, stride);
            assert_eq!(stamp, Some((1_000_000 + i * 33) as u32));
        }
        assert_eq!(kinds, vec![true, false, false, false, true, false]);
        // SPS is the first NAL of a keyframe: profile_idc 66 = baseline.
        assert!(!out.is_empty());
    }

    #[test]
    fn wrong_size_is_rejected() {
        let mut enc = OpenH264Encoder::new(&settings()).unwrap();
        let err = enc
            .encode(&I420Image::new(64, 64), false, &mut Vec::new())
            .unwrap_err();
        assert!(matches!(err, EncodeError::WrongSize { .. }));
    }
}
