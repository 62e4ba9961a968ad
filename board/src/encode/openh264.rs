//! Software H.264 with Cisco's openh264 (built from source by the `openh264` crate):
//! constrained baseline, no B-frames, real-time usage, one slice per picture. The depth-0
//! case of the encoder contract: a picture's access unit is ready when `submit` returns.
//!
//! Two temporal layers are openh264's own (`iTemporalLayerNum`), which the Rust binding
//! fixes at one when it initialises the encoder on its first picture: the encoder is
//! initialised here with a blank picture, then given the same parameters with two layers
//! (openh264 re-creates its context for that), so the first real picture starts the
//! layered stream with an IDR.
//!
//! openh264 reads I420 only, with any strides: I420 pictures are read in place; NV12 ones
//! are first split into an I420 copy (one pass over the chroma, a copy of the luma).

use std::collections::VecDeque;

use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level,
    Profile, QpRange, RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSource;
use openh264_sys2::{
    ENCODER_OPTION_BITRATE, ENCODER_OPTION_SVC_ENCODE_PARAM_EXT, SBitrateInfo, SEncParamExt,
    SPATIAL_LAYER_ALL, VIDEO_CODING_LAYER,
};

use super::{EncodeError, EncodedUnit, EncoderSettings, VideoEncoder};
use crate::frame::CaptureTime;
use crate::image::{Image, Layout, PixelFormat, Plane};

/// The openh264 software encoder.
pub struct OpenH264Encoder {
    encoder: Encoder,
    /// The picture size it was created for.
    size: (u32, u32),
    /// The pixel format it was created for.
    format: PixelFormat,
    /// The I420 copy of an NV12 picture, made on first use.
    converted: Option<Image>,
    /// Access units `poll` has not taken yet, oldest first (one, when the caller polls
    /// after each submit).
    ready: VecDeque<(EncodedUnit, Vec<u8>)>,
    /// A buffer `poll` emptied, for the next access unit.
    spare: Vec<u8>,
    /// Set by `finish`: no more pictures.
    finished: bool,
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
        let create_error = |reason: String| EncodeError::Create {
            encoder: "openh264".into(),
            reason,
        };
        let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| create_error(e.to_string()))?;
        if settings.temporal_layers > 1 {
            layer(&mut encoder, settings).map_err(create_error)?;
        }
        Ok(Self {
            encoder,
            size: (settings.width, settings.height),
            format: settings.format,
            converted: None,
            ready: VecDeque::new(),
            spare: Vec::new(),
            finished: false,
        })
    }
}

/// Makes `encoder` (fresh from the binding) encode two temporal layers.
fn layer(encoder: &mut Encoder, settings: &EncoderSettings) -> Result<(), String> {
    let blank = Image::i420(settings.width, settings.height);
    // The binding initialises openh264 with its parameters on the first picture.
    encoder
        .encode(&Planes::of(&blank))
        .map_err(|e| format!("first picture: {e}"))?;
    let mut params = SEncParamExt::default();
    // SAFETY: ENCODER_OPTION_SVC_ENCODE_PARAM_EXT writes one SEncParamExt, which outlives
    // the call, from an encoder the picture above initialised.
    let rc = unsafe {
        encoder.raw_api().get_option(
            ENCODER_OPTION_SVC_ENCODE_PARAM_EXT,
            (&raw mut params).cast(),
        )
    };
    if rc != 0 {
        return Err(format!("reading its parameters failed (code {rc})"));
    }
    params.iTemporalLayerNum = 2;
    // SAFETY: as above, read this time; the parameters are the binding's own but for the
    // layer count, so nothing the binding relies on changes (it keeps the picture size,
    // and re-initialises only when that changes, which the size check in `submit` rules
    // out).
    let rc = unsafe {
        encoder.raw_api().set_option(
            ENCODER_OPTION_SVC_ENCODE_PARAM_EXT,
            (&raw mut params).cast(),
        )
    };
    if rc != 0 {
        return Err(format!("two temporal layers refused (code {rc})"));
    }
    encoder.force_intra_frame();
    Ok(())
}

/// Borrowed view of an I420 [`Image`] in the shape openh264 reads.
struct Planes<'a> {
    size: (u32, u32),
    y: Plane<'a>,
    u: Plane<'a>,
    v: Plane<'a>,
}

impl<'a> Planes<'a> {
    /// The planes of `image`, which is I420.
    fn of(image: &'a Image) -> Self {
        debug_assert_eq!(image.format(), PixelFormat::I420);
        let mut planes = image.planes();
        // An I420 image has three planes.
        let mut next = || planes.next().expect("three I420 planes");
        Self {
            size: image.size(),
            y: next(),
            u: next(),
            v: next(),
        }
    }
}

impl YUVSource for Planes<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.size.0 as usize, self.size.1 as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.y.stride(), self.u.stride(), self.v.stride())
    }

    fn y(&self) -> &[u8] {
        self.y.data()
    }

    fn u(&self) -> &[u8] {
        self.u.data()
    }

    fn v(&self) -> &[u8] {
        self.v.data()
    }
}

impl VideoEncoder for OpenH264Encoder {
    fn name(&self) -> &str {
        "openh264"
    }

    fn submit(
        &mut self,
        image: &Image,
        captured: CaptureTime,
        keyframe: bool,
    ) -> Result<(), EncodeError> {
        super::check_picture(self.finished, image, self.size, self.format)?;
        let image = match image.format() {
            PixelFormat::I420 => image,
            _ => {
                let (w, h) = self.size;
                let copy = self
                    .converted
                    .get_or_insert_with(|| Image::new(Layout::packed(PixelFormat::I420, w, h)));
                copy.copy_from(image);
                &*copy
            }
        };
        if keyframe {
            self.encoder.force_intra_frame();
        }
        let stream = self
            .encoder
            .encode(&Planes::of(image))
            .map_err(|e| EncodeError::Frame(e.to_string()))?;
        let frame_type = stream.frame_type();
        let temporal_layer = (0..stream.num_layers())
            .filter_map(|i| stream.layer(i))
            .map(|l| l.raw_info())
            .find(|info| info.uiLayerType == VIDEO_CODING_LAYER as u8)
            .map_or(0, |info| info.uiTemporalId);
        let mut data = std::mem::take(&mut self.spare);
        data.clear();
        stream.write_vec(&mut data);
        if !matches!(frame_type, FrameType::Skip) && !data.is_empty() {
            let unit = EncodedUnit {
                keyframe: matches!(frame_type, FrameType::IDR | FrameType::I),
                captured,
                temporal_layer,
            };
            self.ready.push_back((unit, data));
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<u8>) -> Result<Option<EncodedUnit>, EncodeError> {
        Ok(self.ready.pop_front().map(|(unit, data)| {
            out.extend_from_slice(&data);
            self.spare = data;
            unit
        }))
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError> {
        let mut info = SBitrateInfo {
            iLayer: SPATIAL_LAYER_ALL,
            iBitrate: i32::try_from(kbps.saturating_mul(1000)).unwrap_or(i32::MAX),
        };
        // SAFETY: ENCODER_OPTION_BITRATE reads one SBitrateInfo, which outlives the call;
        // the target bitrate is an option openh264 lets a caller change between pictures,
        // and nothing the wrapper relies on depends on it.
        let rc = unsafe {
            self.encoder
                .raw_api()
                .set_option(ENCODER_OPTION_BITRATE, (&raw mut info).cast())
        };
        if rc != 0 {
            return Err(EncodeError::Frame(format!(
                "openh264 refused bitrate {kbps} kbit/s (code {rc})"
            )));
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<(EncodedUnit, Vec<u8>)>) -> Result<(), EncodeError> {
        self.finished = true;
        out.extend(self.ready.drain(..));
        Ok(())
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
            format: PixelFormat::I420,
            fps: 30.0,
            bitrate_kbps: 500,
            keyframe_interval: 0,
            temporal_layers: 1,
        }
    }

    #[test]
    fn encodes_decodable_baseline_with_forced_keyframes_and_capture_times() {
        let mut enc = OpenH264Encoder::new(&settings()).unwrap();
        assert_eq!(enc.depth(), 0);
        let pattern = TestPattern::new((320, 180), 30.0);
        let mut img = Image::i420(320, 180);
        let mut dec = Decoder::new().unwrap();
        let mut out = Vec::new();
        let mut kinds = vec![];
        for i in 0..6u64 {
            let ms = 1_000_000 + i * 33;
            pattern.draw(&mut img, ms);
            let captured = CaptureTime {
                wallclock_ms: ms,
                ..CaptureTime::now()
            };
            enc.submit(&img, captured, i == 4).unwrap();
            out.clear();
            let unit = enc.poll(&mut out).unwrap().expect("depth 0: ready at once");
            assert_eq!(
                unit.captured, captured,
                "the unit carries its picture's time"
            );
            assert!(
                enc.poll(&mut out).unwrap().is_none(),
                "one unit per picture"
            );
            kinds.push(unit.keyframe);
            assert!(out.starts_with(&[0, 0, 0, 1]), "Annex B start code");
            let decoded = dec
                .decode(&out)
                .unwrap()
                .expect("a picture per access unit");
            let (w, h) = decoded.dimensions();
            assert_eq!((w, h), (320, 180));
            let stride = decoded.strides().0;
            let stamp = crate::stamp::read(decoded.y(), 320, 180, stride);
            assert_eq!(stamp, Some(ms as u32));
        }
        assert_eq!(kinds, vec![true, false, false, false, true, false]);
    }

    #[test]
    fn nv12_and_padded_strides_encode_exactly_like_packed_i420() {
        let ms = 1_000_000;
        let bitstream = |layout: Layout| {
            let mut enc = OpenH264Encoder::new(&EncoderSettings {
                format: layout.format,
                ..settings()
            })
            .unwrap();
            let pattern = TestPattern::with_layout(layout, 30.0);
            let mut img = Image::new(layout);
            let mut out = Vec::new();
            for i in 0..3 {
                pattern.draw(&mut img, ms + i * 33);
                enc.submit(&img, CaptureTime::now(), false).unwrap();
                enc.poll(&mut out).unwrap().expect("depth 0");
            }
            out
        };
        let packed = bitstream(Layout::packed(PixelFormat::I420, 320, 180));
        assert!(!packed.is_empty());
        for layout in [
            Layout::aligned(PixelFormat::I420, 320, 180, 64, 16),
            Layout::aligned(PixelFormat::Nv12, 320, 180, 32, 16),
        ] {
            assert!(bitstream(layout) == packed, "{layout:?}");
        }
    }

    #[test]
    fn live_bitrate_change_steers_the_output() {
        let pattern = TestPattern::new((320, 180), 30.0);
        let mut img = Image::i420(320, 180);
        let mut enc = OpenH264Encoder::new(&EncoderSettings {
            bitrate_kbps: 1500,
            ..settings()
        })
        .unwrap();
        let mut out = Vec::new();
        // Bytes of 30 P-frames of a moving scene at the current target.
        let mut run = |enc: &mut OpenH264Encoder, from: u64| {
            let mut bytes = 0;
            for i in from..from + 30 {
                pattern.draw(&mut img, 1_000_000 + i * 33);
                enc.submit(&img, CaptureTime::now(), false).unwrap();
                out.clear();
                enc.poll(&mut out).unwrap();
                bytes += out.len();
            }
            bytes
        };
        run(&mut enc, 0);
        let high = run(&mut enc, 30);
        enc.set_bitrate(60).unwrap();
        run(&mut enc, 60);
        let low = run(&mut enc, 90);
        assert!(
            low * 2 < high,
            "60 kbit/s spends less than half of 1500: {low} vs {high} bytes"
        );
    }

    /// The `nal_ref_idc` of each VCL NAL unit (slices: types 1 and 5) in an access unit.
    fn slice_ref_idcs(unit: &[u8]) -> Vec<u8> {
        openh264::nal_units(unit)
            .map(|nal| {
                let header = nal[nal.iter().position(|&b| b == 1).unwrap() + 1];
                (header & 0x1f, (header >> 5) & 3)
            })
            .filter(|(kind, _)| matches!(kind, 1 | 5))
            .map(|(_, idc)| idc)
            .collect()
    }

    #[test]
    fn two_temporal_layers_alternate_and_the_base_decodes_alone_at_half_rate() {
        let mut enc = OpenH264Encoder::new(&EncoderSettings {
            temporal_layers: 2,
            keyframe_interval: 8,
            ..settings()
        })
        .unwrap();
        let pattern = TestPattern::new((320, 180), 30.0);
        let mut img = Image::i420(320, 180);
        let mut all = Decoder::new().unwrap();
        let mut base = Decoder::new().unwrap();
        let mut out = Vec::new();
        let mut layers = vec![];
        for i in 0..20u64 {
            let ms = 1_000_000 + i * 33;
            pattern.draw(&mut img, ms);
            enc.submit(&img, CaptureTime::now(), i == 13).unwrap();
            out.clear();
            let unit = enc.poll(&mut out).unwrap().expect("depth 0");
            layers.push((unit.temporal_layer, unit.keyframe));
            let idcs = slice_ref_idcs(&out);
            assert!(!idcs.is_empty(), "picture {i} has slices");
            if unit.temporal_layer == 1 {
                assert!(
                    idcs.iter().all(|&idc| idc == 0),
                    "a layer-1 picture is no reference: {idcs:?}"
                );
            }
            let check = |dec: &mut Decoder| {
                let pic = dec.decode(&out).unwrap().expect("a picture per unit");
                let stamp = crate::stamp::read(pic.y(), 320, 180, pic.strides().0);
                assert_eq!(stamp, Some(ms as u32), "picture {i}");
            };
            check(&mut all);
            if unit.temporal_layer == 0 {
                check(&mut base);
            }
        }
        assert_eq!(layers[0], (0, true), "the first picture is an IDR");
        assert_eq!(layers[13], (0, true), "a forced one too");
        // Layers alternate, from layer 0 at each keyframe (every 8 pictures, or forced).
        let mut since_key = 0;
        for (i, &(layer, key)) in layers.iter().enumerate() {
            since_key = if key { 0 } else { since_key + 1 };
            assert_eq!(layer, since_key % 2, "picture {i}: {layers:?}");
        }
        assert_eq!(
            layers.iter().filter(|(_, key)| *key).count(),
            3,
            "0, 8 and 13"
        );
    }

    #[test]
    fn finish_drains_and_then_refuses() {
        let mut enc = OpenH264Encoder::new(&settings()).unwrap();
        for keyframe in [true, false] {
            enc.submit(&Image::i420(320, 180), CaptureTime::now(), keyframe)
                .unwrap();
        }
        let mut rest = Vec::new();
        enc.finish(&mut rest).unwrap();
        assert_eq!(
            rest.len(),
            2,
            "the units nobody polled are drained, none lost"
        );
        assert!(rest[0].0.keyframe, "oldest first");
        let err = enc
            .submit(&Image::i420(320, 180), CaptureTime::now(), false)
            .unwrap_err();
        assert!(matches!(err, EncodeError::Finished) && err.is_fatal());
    }

    #[test]
    fn wrong_size_or_format_is_recoverable() {
        let mut enc = OpenH264Encoder::new(&settings()).unwrap();
        let err = enc
            .submit(&Image::i420(64, 64), CaptureTime::now(), false)
            .unwrap_err();
        assert!(matches!(err, EncodeError::WrongPicture { .. }) && !err.is_fatal());
        let nv12 = Image::new(Layout::packed(PixelFormat::Nv12, 320, 180));
        let err = enc.submit(&nv12, CaptureTime::now(), false).unwrap_err();
        assert!(err.to_string().contains("NV12") && !err.is_fatal(), "{err}");
    }
}
