//! V4L2 memory-to-memory stateful H.264 encoders (feature `v4l2-m2m`): the Pi 4's
//! `bcm2835-codec` at `/dev/video11`, or any driver behind the same interface.
//!
//! Opening one:
//! 1. the device is checked to be a multi-planar M2M encoder to H.264 ([`session`]);
//! 2. the settings are checked against what it can do ([`limits`]): size, macroblocks,
//!    bitrate, and the lowest H.264 level that fits, so a bad size is a configuration error
//!    now rather than a corrupt stream later;
//! 3. the codec controls are set before any format, as bcm2835 needs: constrained baseline
//!    (baseline where the driver lacks it), the level, constant bitrate, the bitrate, the
//!    I-frame period, and SPS/PPS repeated in front of every IDR;
//! 4. the formats, buffers and streaming ([`session::M2mDevice::start`]).
//!
//! A keyframe is asked for with `V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME` just before its
//! picture is queued; the bitrate changes with `V4L2_CID_MPEG_VIDEO_BITRATE` while
//! streaming. Pictures are copied into the driver's buffers (its strides, its padded rows);
//! importing a camera's DMA-BUF instead is left for when a source exports them (the V4L2
//! and libcamera sources here hand over mapped memory).
//!
//! `submit` waits up to one frame interval for its own access unit, so the hardware adds
//! no frame of delay; an access unit that comes later is taken by the next `poll`
//! ([`stream`]).

pub mod limits;
pub mod session;
pub mod stream;

use std::path::{Path, PathBuf};

use v4l::v4l_sys::*;

use self::limits::Limits;
use self::session::{H264, M2mDevice, SessionConfig};
use self::stream::M2mStream;
use super::{EncodeError, EncodedUnit, EncoderSettings, VideoEncoder};
use crate::frame::CaptureTime;
use crate::image::{Image, PixelFormat};

/// Raw buffers: one being encoded, one queued behind it, one being filled.
const OUTPUT_BUFFERS: u32 = 3;
/// Coded buffers: enough that the device never waits for `poll`.
const CAPTURE_BUFFERS: u32 = 4;
/// The largest access unit expected (what rpicam-apps gives bcm2835: 512 KiB).
const CODED_BUFFER_SIZE: u32 = 512 * 1024;

/// The first V4L2 M2M H.264 encoder on this machine.
pub(in crate::encode) fn find() -> Option<PathBuf> {
    crate::devices::dev_video_nodes()
        .into_iter()
        .find(|path| session::is_encoder(path, H264))
}

/// What this build finds of `path`: the driver and its limits, for `focusd probe`.
pub(in crate::encode) fn describe(path: &Path) -> String {
    match M2mDevice::open(path, H264) {
        Ok(device) => {
            let l = Limits::for_driver(device.driver());
            format!(
                "V4L2 stateful H.264 encoder ({}): up to {}x{}, {} macroblocks per picture, level {}, {} Mbit/s",
                device.driver(),
                l.max_width,
                l.max_height,
                l.max_mb_per_picture,
                l.max_level,
                l.max_kbps / 1000
            )
        }
        Err(e) => e.to_string(),
    }
}

pub(in crate::encode) fn open(
    device: Option<&Path>,
    settings: &EncoderSettings,
) -> Result<Box<dyn VideoEncoder>, EncodeError> {
    let path = match device {
        Some(path) => path.to_owned(),
        None => find().ok_or_else(|| EncodeError::Create {
            encoder: "v4l2m2m".into(),
            reason: "no V4L2 M2M H.264 encoder on this machine".into(),
        })?,
    };
    Ok(Box::new(V4l2M2mEncoder::open(&path, settings)?))
}

/// A V4L2 M2M H.264 encoder; see the [module docs](self).
pub struct V4l2M2mEncoder {
    /// `v4l2m2m:/dev/video11`.
    name: String,
    stream: M2mStream,
    /// The picture size and format it was opened for.
    size: (u32, u32),
    format: PixelFormat,
    /// The driver can change the bitrate while streaming.
    live_bitrate: bool,
}

impl std::fmt::Debug for V4l2M2mEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2M2mEncoder")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl V4l2M2mEncoder {
    /// Opens the encoder at `path` for pictures of `settings`.
    pub fn open(path: &Path, settings: &EncoderSettings) -> Result<Self, EncodeError> {
        let name = format!("v4l2m2m:{}", path.display());
        let create = |reason: String| EncodeError::Create {
            encoder: name.clone(),
            reason,
        };
        let device = M2mDevice::open(path, H264).map_err(|e| create(e.to_string()))?;
        let level = Limits::for_driver(device.driver())
            .check(settings)
            .map_err(&create)?;
        set_h264_controls(&device, settings, level.control).map_err(&create)?;
        let session = device
            .start(&SessionConfig {
                coded: H264,
                coded_buffer_size: CODED_BUFFER_SIZE,
                format: settings.format,
                width: settings.width,
                height: settings.height,
                fps: settings.fps,
                output_buffers: OUTPUT_BUFFERS,
                capture_buffers: CAPTURE_BUFFERS,
            })
            .map_err(|e| create(e.to_string()))?;
        tracing::info!(
            encoder = %name,
            level = level.name,
            layout = ?session.layout(),
            "hardware H.264 encoder open"
        );
        Ok(Self {
            name,
            stream: M2mStream::new(session, settings.fps, has_idr),
            size: (settings.width, settings.height),
            format: settings.format,
            live_bitrate: true,
        })
    }
}

/// The codec controls, set before any format: constrained baseline (baseline where the
/// driver lacks it), the level, the bitrate, SPS/PPS on every IDR, the I-frame period,
/// constant bitrate where offered; and a check that keyframes can be asked for.
fn set_h264_controls(
    device: &M2mDevice,
    settings: &EncoderSettings,
    level: i64,
) -> Result<(), String> {
    let profile = [
        v4l2_mpeg_video_h264_profile_V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE,
        v4l2_mpeg_video_h264_profile_V4L2_MPEG_VIDEO_H264_PROFILE_BASELINE,
    ]
    .into_iter()
    .find(|&p| {
        device
            .set_control(V4L2_CID_MPEG_VIDEO_H264_PROFILE, p.into())
            .is_ok()
    });
    if profile.is_none() {
        return Err("the encoder refuses the (constrained) baseline profile".into());
    }
    let required = |id: u32, value: i64, what: &str| {
        device
            .set_control(id, value)
            .map_err(|e| format!("cannot set {what} to {value}: {e}"))
    };
    required(V4L2_CID_MPEG_VIDEO_H264_LEVEL, level, "the level")?;
    required(
        V4L2_CID_MPEG_VIDEO_BITRATE,
        i64::from(settings.bitrate_kbps) * 1000,
        "the bitrate",
    )?;
    // Every IDR must carry SPS/PPS: a viewer joins at any keyframe.
    required(V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 1, "repeated SPS/PPS")?;
    if settings.keyframe_interval > 0 {
        required(
            V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
            settings.keyframe_interval.into(),
            "the I-frame period",
        )?;
    }
    if device
        .control_range(V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME)
        .is_none()
    {
        return Err(
            "the encoder cannot be asked for a keyframe (no FORCE_KEY_FRAME control), which new viewers need"
                .into(),
        );
    }
    // Constant bitrate where the driver offers it: a live stream's budget is a rate.
    if let Err(e) = device.set_control(
        V4L2_CID_MPEG_VIDEO_BITRATE_MODE,
        v4l2_mpeg_video_bitrate_mode_V4L2_MPEG_VIDEO_BITRATE_MODE_CBR.into(),
    ) {
        tracing::debug!(device = %device.path().display(), "constant bitrate mode not set: {e}");
    }
    Ok(())
}

/// Whether an Annex B access unit holds an IDR slice (NAL type 5).
fn has_idr(annex_b: &[u8]) -> bool {
    annex_b
        .windows(4)
        .any(|w| w[0] == 0 && w[1] == 0 && w[2] == 1 && w[3] & 0x1f == 5)
}

impl VideoEncoder for V4l2M2mEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn depth(&self) -> usize {
        OUTPUT_BUFFERS as usize
    }

    fn submit(
        &mut self,
        image: &Image,
        captured: CaptureTime,
        keyframe: bool,
    ) -> Result<(), EncodeError> {
        super::check_picture(self.stream.is_finished(), image, self.size, self.format)?;
        self.stream.submit(image, captured, |session| {
            if keyframe {
                session
                    .set_control(V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1)
                    .map_err(|e| EncodeError::Device(format!("keyframe request: {e}")))?;
            }
            Ok(())
        })
    }

    fn poll(&mut self, out: &mut Vec<u8>) -> Result<Option<EncodedUnit>, EncodeError> {
        self.stream.poll(out)
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError> {
        if !self.live_bitrate {
            return Ok(());
        }
        if let Err(e) = self
            .stream
            .session()
            .set_control(V4L2_CID_MPEG_VIDEO_BITRATE, i64::from(kbps) * 1000)
        {
            // Some drivers take the bitrate only before streaming: keep the first one.
            tracing::warn!(encoder = %self.name, "bitrate cannot change while streaming: {e}");
            self.live_bitrate = false;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<(EncodedUnit, Vec<u8>)>) -> Result<(), EncodeError> {
        self.stream.finish(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idr_slices_are_found_after_any_start_code() {
        let idr = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 9,
        ];
        assert!(has_idr(&idr));
        let p = [0, 0, 0, 1, 0x41, 0x9a, 0, 0, 1, 0x41];
        assert!(!has_idr(&p));
    }
}
