//! GStreamer encoder elements (feature `gstreamer`), as `gst:ELEMENT`: `x264enc`,
//! `openh264enc`, `v4l2h264enc` (a V4L2 M2M encoder through GStreamer), `nvv4l2h264enc`
//! (Jetson Orin NX / AGX), or any H.264 encoder element.
//!
//! The pipeline is `appsrc ! [converter] ! ELEMENT ! h264parse ! appsink`: pictures go in
//! with their capture time as the buffer's timestamp, access units come out in Annex B
//! with SPS/PPS before every IDR (`h264parse config-interval=-1`), and the timestamp maps
//! each back to its capture time. `submit` waits up to a frame interval for its access
//! unit, so an encoder without lookahead (every one configured here) adds no frame of
//! delay. A keyframe is asked for with GStreamer's force-key-unit event; the bitrate is
//! the element's own property, in the unit that element uses.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::{AppSink, AppSrc};

use super::{EncodeError, EncodedUnit, EncoderSettings, VideoEncoder};
use crate::frame::CaptureTime;
use crate::image::{Image, Layout, PixelFormat};

/// How an element is configured: its bitrate property's unit and its low-latency settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `x264enc`: `bitrate` in kbit/s.
    X264,
    /// `openh264enc`: `bitrate` in bit/s.
    OpenH264,
    /// `v4l2h264enc`: bitrate through V4L2 controls (`extra-controls`).
    V4l2,
    /// `nvv4l2h264enc`: `bitrate` in bit/s, NVMM input through `nvvidconv`.
    Nvidia,
    /// Anything else: default settings, bitrate left to the element.
    Other,
}

impl Kind {
    fn of(element: &str) -> Self {
        match element {
            "x264enc" => Kind::X264,
            "openh264enc" => Kind::OpenH264,
            "v4l2h264enc" => Kind::V4l2,
            "nvv4l2h264enc" => Kind::Nvidia,
            _ => Kind::Other,
        }
    }
}

/// A GStreamer H.264 encoder.
pub struct GstEncoder {
    name: String,
    kind: Kind,
    pipeline: gst::Pipeline,
    src: AppSrc,
    sink: AppSink,
    encoder: gst::Element,
    size: (u32, u32),
    format: PixelFormat,
    /// How long `submit` waits for its access unit.
    interval: Duration,
    /// Capture times of pictures in flight, by timestamp.
    in_flight: VecDeque<(gst::ClockTime, CaptureTime)>,
    /// Access units `poll` has not taken yet.
    ready: VecDeque<(EncodedUnit, Vec<u8>)>,
    /// The first capture, the zero of timestamps.
    epoch: Option<Instant>,
    finished: bool,
}

impl std::fmt::Debug for GstEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GstEncoder")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Whether GStreamer has the element `name` (its plugin is installed).
pub(in crate::encode) fn has_element(name: &str) -> bool {
    gst::init().is_ok() && gst::ElementFactory::find(name).is_some()
}

/// Opens `element` for pictures of `settings`.
pub(in crate::encode) fn open(
    element: &str,
    settings: &EncoderSettings,
) -> Result<Box<dyn VideoEncoder>, EncodeError> {
    Ok(Box::new(GstEncoder::new(element, settings)?))
}

impl GstEncoder {
    pub fn new(element: &str, settings: &EncoderSettings) -> Result<Self, EncodeError> {
        let name = format!("gst:{element}");
        let create = |reason: String| EncodeError::Create {
            encoder: name.clone(),
            reason,
        };
        gst::init().map_err(|e| create(e.to_string()))?;
        if !element
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(create(
                "an element name, without properties or links".into(),
            ));
        }
        if gst::ElementFactory::find(element).is_none() {
            return Err(create(format!(
                "no element {element} (is its GStreamer plugin installed? gst-inspect-1.0 {element})"
            )));
        }
        let kind = Kind::of(element);
        let format = match settings.format {
            PixelFormat::Nv12 => "NV12",
            _ => "I420",
        };
        let fps = (settings.fps.round() as i32).max(1);
        let caps = format!(
            "video/x-raw,format={format},width={},height={},framerate={fps}/1",
            settings.width, settings.height
        );
        let convert = match kind {
            Kind::Nvidia => "nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! ",
            _ => "",
        };
        let description = format!(
            "appsrc name=src is-live=true format=time caps=\"{caps}\" ! {convert}{element} name=enc ! \
             h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au ! \
             appsink name=out sync=false"
        );
        let pipeline = gst::parse::launch(&description)
            .map_err(|e| create(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| create("not a pipeline".into()))?;
        let by_name = |n: &str| {
            pipeline
                .by_name(n)
                .ok_or_else(|| create(format!("no {n} in the pipeline")))
        };
        let src = by_name("src")?
            .downcast::<AppSrc>()
            .map_err(|_| create("src is not an appsrc".into()))?;
        let sink = by_name("out")?
            .downcast::<AppSink>()
            .map_err(|_| create("out is not an appsink".into()))?;
        let encoder = by_name("enc")?;
        // `submit` waits for each picture's access unit, so nothing queues in front of
        // the encoder; should it fall behind anyway, pushing never blocks the caller.
        src.set_property("block", false);
        configure(&encoder, kind, settings);
        let mut me = Self {
            name: name.clone(),
            kind,
            pipeline,
            src,
            sink,
            encoder,
            size: (settings.width, settings.height),
            format: settings.format,
            interval: Duration::from_secs_f64(1.0 / settings.fps.max(1.0)),
            in_flight: VecDeque::new(),
            ready: VecDeque::new(),
            epoch: None,
            finished: false,
        };
        me.set_bitrate(settings.bitrate_kbps)?;
        me.pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| create(me.bus_error().unwrap_or("cannot start".into())))?;
        Ok(me)
    }

    /// The error the pipeline reported, if any.
    fn bus_error(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        let message = bus.pop_filtered(&[gst::MessageType::Error])?;
        match message.view() {
            gst::MessageView::Error(e) => {
                Some(format!("{} ({})", e.error(), e.debug().unwrap_or_default()))
            }
            _ => None,
        }
    }

    /// Moves finished access units from the appsink to `ready`, waiting up to `wait` for
    /// the first.
    fn collect(&mut self, wait: Duration) -> Result<(), EncodeError> {
        let mut timeout = gst::ClockTime::from_nseconds(wait.as_nanos() as u64);
        while let Some(sample) = self.sink.try_pull_sample(timeout) {
            timeout = gst::ClockTime::ZERO;
            let Some(buffer) = sample.buffer() else {
                continue;
            };
            // Encoders may shift timestamps (x264enc adds 1000 hours so that DTS stays
            // positive) and say so in the segment: its running time is what went in.
            let pts = match (sample.segment(), buffer.pts()) {
                (Some(segment), Some(pts)) => segment
                    .downcast_ref::<gst::ClockTime>()
                    .and_then(|s| s.to_running_time(pts))
                    .or(Some(pts)),
                (_, pts) => pts,
            };
            // Capture times of pictures the encoder skipped are dropped on the way.
            let mut captured = None;
            while let Some((ts, at)) = self.in_flight.front().copied() {
                if pts.is_some_and(|p| ts > p) {
                    break;
                }
                self.in_flight.pop_front();
                if Some(ts) == pts {
                    captured = Some(at);
                    break;
                }
            }
            let Some(captured) = captured else {
                continue;
            };
            let map = buffer
                .map_readable()
                .map_err(|e| EncodeError::Frame(e.to_string()))?;
            let unit = EncodedUnit {
                keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                captured,
                temporal_layer: 0,
            };
            self.ready.push_back((unit, map.as_slice().to_vec()));
        }
        if let Some(error) = self.bus_error() {
            return Err(EncodeError::Device(error));
        }
        Ok(())
    }
}

/// Low-latency settings per element: no B-frames, no lookahead, a keyframe interval.
fn configure(encoder: &gst::Element, kind: Kind, settings: &EncoderSettings) {
    let interval = settings.keyframe_interval;
    match kind {
        Kind::X264 => {
            encoder.set_property_from_str("tune", "zerolatency");
            encoder.set_property_from_str("speed-preset", "ultrafast");
            encoder.set_property("bframes", 0u32);
            encoder.set_property("key-int-max", interval);
        }
        Kind::OpenH264 => {
            encoder.set_property_from_str("usage-type", "camera");
            encoder.set_property_from_str("rate-control", "bitrate");
            encoder.set_property("gop-size", interval);
        }
        Kind::Nvidia => {
            encoder.set_property("insert-sps-pps", true);
            encoder.set_property("iframeinterval", interval);
            encoder.set_property("idrinterval", interval);
            encoder.set_property("maxperf-enable", true);
        }
        Kind::V4l2 | Kind::Other => {}
    }
}

impl VideoEncoder for GstEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn depth(&self) -> usize {
        // Output can trail input by a picture when the element runs on its own thread.
        1
    }

    fn submit(
        &mut self,
        image: &Image,
        captured: CaptureTime,
        keyframe: bool,
    ) -> Result<(), EncodeError> {
        super::check_picture(self.finished, image, self.size, self.format)?;
        let epoch = *self.epoch.get_or_insert(captured.at);
        let pts = gst::ClockTime::from_nseconds(
            captured.at.saturating_duration_since(epoch).as_nanos() as u64,
        );
        // The picture, packed as the caps say: one copy, handed to GStreamer.
        let layout = Layout::packed(self.format, self.size.0, self.size.1);
        let mut packed = Image::new(layout);
        packed.copy_from(image);
        let mut buffer = gst::Buffer::from_mut_slice(packed.into_bytes());
        {
            // A new buffer has one owner.
            let b = buffer.get_mut().expect("a new buffer is writable");
            b.set_pts(pts);
            b.set_duration(gst::ClockTime::from_nseconds(
                self.interval.as_nanos() as u64
            ));
        }
        if keyframe {
            let event = gstreamer_video::DownstreamForceKeyUnitEvent::builder()
                .timestamp(pts)
                .all_headers(true)
                .build();
            self.src.send_event(event);
        }
        self.in_flight.push_back((pts, captured));
        self.src.push_buffer(buffer).map_err(|e| {
            EncodeError::Device(format!("{e:?}: {}", self.bus_error().unwrap_or_default()))
        })?;
        self.collect(self.interval)
    }

    fn poll(&mut self, out: &mut Vec<u8>) -> Result<Option<EncodedUnit>, EncodeError> {
        if self.ready.is_empty() {
            self.collect(Duration::ZERO)?;
        }
        Ok(self.ready.pop_front().map(|(unit, data)| {
            out.extend_from_slice(&data);
            unit
        }))
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError> {
        match self.kind {
            Kind::X264 => self.encoder.set_property("bitrate", kbps),
            Kind::OpenH264 | Kind::Nvidia => self
                .encoder
                .set_property("bitrate", kbps.saturating_mul(1000)),
            Kind::V4l2 => {
                let controls = gst::Structure::builder("controls")
                    .field("video_bitrate", kbps.saturating_mul(1000) as i32)
                    .field("repeat_sequence_header", 1i32)
                    .build();
                self.encoder.set_property("extra-controls", controls);
            }
            Kind::Other => {
                return Err(EncodeError::Frame(format!(
                    "{} has no known bitrate property",
                    self.name
                )));
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<(EncodedUnit, Vec<u8>)>) -> Result<(), EncodeError> {
        if !self.finished {
            self.finished = true;
            let _ = self.src.end_of_stream();
            let end = Instant::now() + Duration::from_secs(2);
            while !self.sink.is_eos() && Instant::now() < end {
                self.collect(Duration::from_millis(50))?;
            }
        }
        out.extend(self.ready.drain(..));
        Ok(())
    }
}

impl Drop for GstEncoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
