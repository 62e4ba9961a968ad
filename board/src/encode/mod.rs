//! Video encoders: pictures in, H.264 access units (Annex B) out.
//!
//! Open one from an [`EncoderSpec`] with [`open`]. Every encoder speaks the same
//! contract, written for hardware; the software encoder is its simplest case.
//!
//! # The contract
//!
//! - **One thread.** An encoder is owned by one thread (in the daemon, the track's encoder
//!   thread), which makes every call; it is `Send`, never shared. Calls may block on the
//!   device for at most about one frame interval (a hardware encoder waiting for a free
//!   input buffer), never on the network or on other tracks.
//! - **Pipelined.** [`VideoEncoder::submit`] hands in a picture and its [`CaptureTime`];
//!   [`VideoEncoder::poll`] hands out finished access units, oldest first, each carrying
//!   the capture time of the picture it was made from. A software encoder is *depth 0*:
//!   the access unit of a picture is ready as soon as `submit` returns. A hardware encoder
//!   returns it 1–3 submits later ([`VideoEncoder::depth`]). Rate control may skip a
//!   picture: then no access unit ever comes for it.
//! - **Keyframes.** `submit(.., keyframe: true)` makes that picture an IDR, with SPS and
//!   PPS in front (as every IDR has). Requests between pictures are the caller's to merge.
//! - **Temporal layers.** An encoder asked for two ([`EncoderSettings::temporal_layers`])
//!   and able to make them (openh264; not the Pi 4's `bcm2835-codec`, whose V4L2 controls
//!   have none, nor x264 or Jetson's through GStreamer) marks every other access unit as
//!   layer 1, which nothing references: leaving those out halves the frame rate without
//!   breaking the decoding. The others make every unit layer 0.
//! - **Bitrate.** [`VideoEncoder::set_bitrate`] changes the target while running, without
//!   a keyframe; it takes effect within a few pictures.
//! - **Stop.** [`VideoEncoder::finish`] drains what is still in flight; after it the
//!   encoder takes no more pictures.
//! - **Errors.** [`EncodeError::is_fatal`] says whether the encoder can go on: after a
//!   recoverable error the picture is lost and the next one should be a keyframe; after a
//!   fatal one the encoder must be dropped (and reopened, or the process ended).
//!
//! Backends not compiled into this build are present with the same API and answer
//! [`EncodeError::NotEnabled`] (see `disabled.rs`).

mod disabled;
mod openh264;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use self::openh264::OpenH264Encoder;
use crate::frame::CaptureTime;
use crate::image::{Image, PixelFormat};

#[cfg(not(feature = "v4l2-m2m"))]
use disabled::v4l2m2m;
#[cfg(feature = "v4l2-m2m")]
pub mod v4l2m2m;

#[cfg(not(feature = "gstreamer"))]
use disabled::gst;
#[cfg(feature = "gstreamer")]
pub mod gst;

/// Which encoder to use, as written on the command line (`--encoder`, `video.encoder`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum EncoderSpec {
    /// The board's hardware encoder when this build has its backend and finds it, else
    /// openh264.
    #[default]
    Auto,
    /// Cisco's openh264, in software.
    OpenH264,
    /// A V4L2 memory-to-memory stateful encoder (the Pi 4's `bcm2835-codec`), by device or
    /// the first one found.
    V4l2M2m(Option<PathBuf>),
    /// A GStreamer encoder element, e.g. `x264enc` or `nvv4l2h264enc`.
    Gst(String),
}

impl FromStr for EncoderSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind, arg) {
            ("auto", None) => Ok(Self::Auto),
            ("openh264", None) => Ok(Self::OpenH264),
            ("v4l2m2m", None) => Ok(Self::V4l2M2m(None)),
            ("v4l2m2m", Some(dev)) if !dev.is_empty() => Ok(Self::V4l2M2m(Some(dev.into()))),
            ("gst", Some(element)) if !element.is_empty() => Ok(Self::Gst(element.into())),
            ("v4l2m2m" | "gst", Some(_)) => {
                Err(format!("encoder `{s}` needs a value after the colon"))
            }
            _ => Err(format!(
                "unknown encoder `{s}`: expected auto, openh264, v4l2m2m[:/dev/videoN] or gst:ELEMENT"
            )),
        }
    }
}

impl fmt::Display for EncoderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::OpenH264 => write!(f, "openh264"),
            Self::V4l2M2m(None) => write!(f, "v4l2m2m"),
            Self::V4l2M2m(Some(dev)) => write!(f, "v4l2m2m:{}", dev.display()),
            Self::Gst(element) => write!(f, "gst:{element}"),
        }
    }
}

/// How an encoder should behave. Every field has a low-latency default.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderSettings {
    /// Width of the pictures the encoder will be fed.
    pub width: u32,
    /// Height of the pictures the encoder will be fed.
    pub height: u32,
    /// Pixel format of the pictures the encoder will be fed (the source's, so a hardware
    /// encoder that takes it needs no conversion); their strides may be any.
    pub format: PixelFormat,
    /// Nominal frame rate, for rate control.
    pub fps: f64,
    /// Target bitrate in kbit/s, until [`VideoEncoder::set_bitrate`] changes it.
    pub bitrate_kbps: u32,
    /// A keyframe at least this often, in frames (0 = only on request).
    pub keyframe_interval: u32,
    /// Temporal layers to make, 1 or 2 (see [`EncodedUnit::temporal_layer`]); an encoder
    /// that cannot make them makes one.
    pub temporal_layers: u8,
}

/// Why an encoder could not be opened or could not encode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The backend exists but was not compiled into this build (a cargo feature is off).
    /// A configuration error.
    #[error(
        "{backend} encoding is not enabled in this build (rebuild with `--features {feature}`)"
    )]
    NotEnabled {
        /// The backend, as people call it (`V4L2 M2M`).
        backend: &'static str,
        /// The cargo feature that brings it.
        feature: &'static str,
    },
    /// The encoder could not be created with these settings. A configuration error: the
    /// same settings will fail again.
    #[error("cannot create {encoder} encoder: {reason}")]
    Create {
        /// The encoder's name.
        encoder: String,
        /// What it said.
        reason: String,
    },
    /// The picture does not have the size or pixel format the encoder was created for.
    /// Recoverable: that picture is lost.
    #[error("picture is {got:?} {got_format}, encoder expects {expected:?} {expected_format}")]
    WrongPicture {
        /// The picture's size.
        got: (u32, u32),
        /// The picture's pixel format.
        got_format: PixelFormat,
        /// The size the encoder was created for.
        expected: (u32, u32),
        /// The pixel format the encoder was created for.
        expected_format: PixelFormat,
    },
    /// The encoder rejected one picture. Recoverable: that picture is lost, the next one
    /// should be a keyframe.
    #[error("encoding failed: {0}")]
    Frame(String),
    /// The encoder or its device stopped working. Fatal: drop the encoder.
    #[error("encoder failed: {0}")]
    Device(String),
    /// A call after [`VideoEncoder::finish`]. Fatal.
    #[error("the encoder was finished")]
    Finished,
}

impl EncodeError {
    /// Whether the encoder cannot go on and must be dropped.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::WrongPicture { .. } | Self::Frame(_))
    }

    /// Whether this comes from configuration (restarting the process will not help).
    pub fn is_config(&self) -> bool {
        matches!(self, Self::NotEnabled { .. } | Self::Create { .. })
    }
}

/// Refuses a picture an encoder made for `size` and `format` cannot take, or any picture
/// after `finish`: the checks every backend makes first in `submit`.
pub(crate) fn check_picture(
    finished: bool,
    image: &Image,
    size: (u32, u32),
    format: PixelFormat,
) -> Result<(), EncodeError> {
    if finished {
        return Err(EncodeError::Finished);
    }
    if image.size() != size || image.format() != format {
        return Err(EncodeError::WrongPicture {
            got: image.size(),
            got_format: image.format(),
            expected: size,
            expected_format: format,
        });
    }
    Ok(())
}

/// One access unit out of [`VideoEncoder::poll`] (its bytes are in the caller's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedUnit {
    /// The access unit starts a new GOP (IDR with SPS/PPS): a decoder can start here.
    pub keyframe: bool,
    /// When the picture it was made from was captured.
    pub captured: CaptureTime,
    /// The temporal layer it belongs to: 0 for every unit of an encoder making one layer;
    /// with two, the units of layer 1 (every other picture) are referenced by no other
    /// unit, so a stream of layer 0 alone decodes at half the frame rate.
    pub temporal_layer: u8,
}

/// An H.264 encoder; see the [module docs](self) for the contract. Output is Annex B with
/// start codes, SPS/PPS in front of every IDR, constrained baseline, no B-frames.
pub trait VideoEncoder: Send {
    /// What this encoder is, e.g. `openh264` or `v4l2m2m:/dev/video11` (state JSON,
    /// registration, metrics).
    fn name(&self) -> &str;

    /// How many pictures may be in flight: an access unit comes out at most this many
    /// submits after its picture went in (0 for a software encoder).
    fn depth(&self) -> usize {
        0
    }

    /// Hands in one picture of the configured size and format (any strides), captured at
    /// `captured`; `keyframe` makes it an IDR.
    fn submit(
        &mut self,
        image: &Image,
        captured: CaptureTime,
        keyframe: bool,
    ) -> Result<(), EncodeError>;

    /// Takes the oldest finished access unit, appending its bytes to `out` (which the
    /// caller clears); `None` when none is ready. Never blocks.
    fn poll(&mut self, out: &mut Vec<u8>) -> Result<Option<EncodedUnit>, EncodeError>;

    /// Changes the target bitrate while running.
    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError>;

    /// Stops taking pictures and drains the access units still in flight, oldest first,
    /// each appended to `out` as one entry.
    fn finish(&mut self, out: &mut Vec<(EncodedUnit, Vec<u8>)>) -> Result<(), EncodeError>;
}

/// Jetson Orin NX / AGX's hardware encoder, reached through NVIDIA's GStreamer plugin.
pub const JETSON_ENCODER: &str = "nvv4l2h264enc";

/// What `auto` takes on this machine now, and why: a V4L2 M2M H.264 encoder (the Pi 4's),
/// else a Jetson's through GStreamer, else openh264.
pub fn resolve_auto() -> (EncoderSpec, String) {
    if let Some(device) = v4l2m2m::find() {
        return (
            EncoderSpec::V4l2M2m(Some(device)),
            "the hardware H.264 encoder (V4L2 M2M)".into(),
        );
    }
    if gst::has_element(JETSON_ENCODER) {
        return (
            EncoderSpec::Gst(JETSON_ENCODER.into()),
            format!("the hardware H.264 encoder (GStreamer {JETSON_ENCODER})"),
        );
    }
    let reason = if cfg!(feature = "v4l2-m2m") || cfg!(feature = "gstreamer") {
        "no hardware H.264 encoder found"
    } else {
        "no hardware encoder backend in this build"
    };
    (EncoderSpec::OpenH264, reason.into())
}

/// An encoder focusd can use here.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EncoderInfo {
    /// As `--encoder` takes it.
    pub spec: String,
    /// What it is and its limits.
    pub about: String,
}

/// The hardware encoders this build finds here.
pub fn hardware_encoders() -> Vec<EncoderInfo> {
    let mut found: Vec<_> = v4l2m2m::find()
        .map(|device| EncoderInfo {
            about: v4l2m2m::describe(&device),
            spec: EncoderSpec::V4l2M2m(Some(device)).to_string(),
        })
        .into_iter()
        .collect();
    if gst::has_element(JETSON_ENCODER) {
        found.push(EncoderInfo {
            spec: EncoderSpec::Gst(JETSON_ENCODER.into()).to_string(),
            about: "NVIDIA's hardware H.264 encoder through GStreamer (Jetson Orin NX / AGX)"
                .into(),
        });
    }
    found
}

/// Opens the encoder `spec` names for pictures of `settings`.
///
/// `auto` takes the board's hardware encoder when one of this build's backends finds it,
/// else openh264. A backend that is not compiled in, or a device that cannot be opened, is
/// an error (a configuration error: see [`EncodeError::is_config`]).
pub fn open(
    spec: &EncoderSpec,
    settings: &EncoderSettings,
) -> Result<Box<dyn VideoEncoder>, EncodeError> {
    match spec {
        EncoderSpec::Auto => {
            let (spec, reason) = resolve_auto();
            tracing::debug!(encoder = %spec, %reason, "encoder auto");
            open(&spec, settings)
        }
        EncoderSpec::OpenH264 => Ok(Box::new(OpenH264Encoder::new(settings)?)),
        EncoderSpec::V4l2M2m(device) => v4l2m2m::open(device.as_deref(), settings),
        EncoderSpec::Gst(element) => gst::open(element, settings),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_spec() {
        for (text, spec) in [
            ("auto", EncoderSpec::Auto),
            ("openh264", EncoderSpec::OpenH264),
            ("v4l2m2m", EncoderSpec::V4l2M2m(None)),
            (
                "v4l2m2m:/dev/video11",
                EncoderSpec::V4l2M2m(Some("/dev/video11".into())),
            ),
            ("gst:x264enc", EncoderSpec::Gst("x264enc".into())),
        ] {
            assert_eq!(text.parse(), Ok(spec.clone()));
            assert_eq!(spec.to_string(), text);
        }
    }

    #[test]
    fn rejects_bad_specs_with_reason() {
        assert!(
            "gst:"
                .parse::<EncoderSpec>()
                .unwrap_err()
                .contains("needs a value")
        );
        let err = "x265".parse::<EncoderSpec>().unwrap_err();
        assert!(err.contains("unknown encoder `x265`"), "{err}");
        assert!("openh264:fast".parse::<EncoderSpec>().is_err());
    }

    fn settings() -> EncoderSettings {
        EncoderSettings {
            width: 64,
            height: 64,
            format: PixelFormat::I420,
            fps: 30.0,
            bitrate_kbps: 100,
            keyframe_interval: 0,
            temporal_layers: 1,
        }
    }

    #[test]
    fn disabled_backends_say_how_to_enable_them() {
        let mut disabled = vec![];
        if cfg!(not(feature = "v4l2-m2m")) {
            disabled.push(("v4l2m2m", "v4l2-m2m"));
            disabled.push(("v4l2m2m:/dev/video11", "v4l2-m2m"));
        }
        if cfg!(not(feature = "gstreamer")) {
            disabled.push(("gst:x264enc", "gstreamer"));
        }
        for (spec, feature) in disabled {
            let err = open(&spec.parse().unwrap(), &settings())
                .err()
                .expect("not in this build");
            assert!(err.is_config() && err.is_fatal(), "{err:?}");
            let text = err.to_string();
            assert!(
                text.contains("not enabled in this build")
                    && text.contains(&format!("--features {feature}")),
                "{text}"
            );
        }
    }

    #[test]
    fn auto_without_hardware_is_openh264() {
        let enc = open(&EncoderSpec::Auto, &settings()).unwrap();
        assert_eq!(enc.name(), "openh264");
    }
}
