//! GStreamer sources (feature `gstreamer`): `gst:PIPELINE` ending in an appsink (a Jetson's
//! CSI camera through `nvarguscamerasrc`, anything GStreamer opens), `rtsp://` cameras,
//! files in any container and codec GStreamer decodes; and the pipeline runner that
//! libcamera's cameras ([`super::libcamera`]) use too.
//!
//! Each is a pipeline ending in an `appsink` that keeps one buffer and drops older ones
//! (the newest picture wins); a second appsink named [`LORES_SINK`] delivers the
//! low-resolution picture, when the pipeline makes one (libcamera's second ISP stream,
//! or a `gst:` pipeline's hardware scaler). Pictures arrive as I420 or NV12, in whatever
//! strides the decoder or camera chose, and are copied plane by plane into focusd's frames. A bus
//! error, an end of stream of a live source, or no picture for [`STALL`] is a capture
//! error: the pipeline is torn down and opened again with backoff by the capture thread,
//! which is how an RTSP camera that reboots comes back. Files loop.

use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;
use gstreamer_video::prelude::*;
use gstreamer_video::{VideoFormat, VideoFrameRef, VideoInfo};

use crate::frame::CaptureTime;
use crate::image::{Image, Layout, PixelFormat};
use crate::source::{FrameSource, SourceError};

/// A source that delivers no picture for this long is treated as gone.
pub const STALL: Duration = Duration::from_secs(3);

/// How long a pipeline may take to deliver its first picture (an RTSP camera's handshake,
/// a decoder's start); short enough that a reopen never outlasts half the systemd
/// watchdog (10 s in the unit).
const FIRST_PICTURE: Duration = Duration::from_secs(4);

/// The appsink that takes the main picture (any single appsink does).
pub const MAIN_SINK: &str = "focusd";

/// The appsink that takes a low-resolution picture the pipeline makes itself (an ISP's
/// second stream, a hardware scaler), so that focusd does not scale.
pub const LORES_SINK: &str = "lores";

/// Slices of a wait for a picture, between looks at the bus for an error.
const BUS_LOOK: Duration = Duration::from_millis(100);

/// `gst:PIPELINE`: the user's pipeline; its appsink is made to take I420 or NV12.
pub(in crate::source) fn open(pipeline: &str) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(Box::new(GstSource::launch(
        pipeline,
        format!("gst {pipeline}"),
        Playback::Live,
    )?))
}

/// `file:PATH` in any container GStreamer decodes, looped.
pub(in crate::source) fn open_file(
    path: &Path,
    scale_to: Option<(u32, u32)>,
) -> Result<Box<dyn FrameSource>, SourceError> {
    let absolute = std::fs::canonicalize(path).map_err(|source| SourceError::Open {
        path: path.to_owned(),
        source,
    })?;
    let uri = gst::glib::filename_to_uri(&absolute, None)
        .map_err(|e| SourceError::Format(format!("{}: {e}", path.display())))?;
    let description = format!(
        "uridecodebin uri=\"{uri}\" ! videoconvert ! videoscale{} ! appsink name=focusd",
        caps_for(scale_to)
    );
    Ok(Box::new(GstSource::launch(
        &description,
        format!("file {}", path.display()),
        Playback::Loop,
    )?))
}

/// `rtsp://...`: low-latency RTSP (no jitter buffer wait), decoded.
pub(in crate::source) fn open_rtsp(
    url: &str,
    scale_to: Option<(u32, u32)>,
) -> Result<Box<dyn FrameSource>, SourceError> {
    if url.contains('"') {
        return Err(SourceError::Format(format!("RTSP URL with a quote: {url}")));
    }
    let description = format!(
        "rtspsrc location=\"{url}\" latency=0 ! decodebin ! videoconvert ! videoscale{} ! appsink name=focusd",
        caps_for(scale_to)
    );
    Ok(Box::new(GstSource::launch(
        &description,
        format!("rtsp {}", redact(url)),
        Playback::Live,
    )?))
}

/// The caps after `videoscale`: a size when asked, the formats focusd takes.
fn caps_for(scale_to: Option<(u32, u32)>) -> String {
    match scale_to {
        Some((w, h)) => format!(" ! video/x-raw,format=I420,width={w},height={h}"),
        None => " ! video/x-raw,format=I420".to_string(),
    }
}

/// `url` without its password, for logs and the state.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn init() -> Result<(), SourceError> {
    gst::init().map_err(|e| SourceError::Format(format!("GStreamer cannot start: {e}")))
}

/// The video info of a sample's caps.
fn sample_info(sample: &gst::Sample) -> Result<VideoInfo, String> {
    let caps = sample.caps().ok_or("a picture without caps")?;
    VideoInfo::from_caps(caps).map_err(|e| e.to_string())
}

/// The layout focusd gives pictures of `info` (packed: they are copied plane by plane).
fn layout_of(info: &VideoInfo) -> Result<Layout, String> {
    let format = match info.format() {
        VideoFormat::I420 => PixelFormat::I420,
        VideoFormat::Nv12 => PixelFormat::Nv12,
        other => return Err(format!("delivers {other:?}, focusd takes I420 or NV12")),
    };
    let layout = Layout::packed(format, info.width(), info.height());
    layout.check().map_err(|e| e.to_string())?;
    Ok(layout)
}

/// Copies the picture of `sample` into `image`; an error when its size is not the
/// image's (the stream changed size: the source is reopened).
fn copy_sample(sample: &gst::Sample, image: &mut Image) -> Result<(), String> {
    let info = sample_info(sample)?;
    if (info.width(), info.height()) != image.size() {
        return Err(format!(
            "the picture changed size to {}x{}",
            info.width(),
            info.height()
        ));
    }
    let buffer = sample.buffer().ok_or("a sample without a buffer")?;
    let frame =
        VideoFrameRef::from_buffer_ref_readable(buffer, &info).map_err(|e| e.to_string())?;
    let strides = frame.plane_stride();
    let planes: Vec<(&[u8], usize)> = (0..frame.n_planes())
        .map(|i| {
            let data = frame.plane_data(i).map_err(|e| e.to_string())?;
            Ok((data, strides[i as usize] as usize))
        })
        .collect::<Result<_, String>>()?;
    image.copy_from_planes(&planes).map_err(|e| e.to_string())
}

/// What an end of stream means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Playback {
    /// A camera or a stream: the end is a failure (reopened with backoff).
    Live,
    /// A file: start again.
    Loop,
}

/// A running GStreamer pipeline and its appsink.
pub struct GstSource {
    pipeline: gst::Pipeline,
    sink: AppSink,
    layout: Layout,
    /// The low-resolution appsink and its layout, when the pipeline has one.
    lores: Option<(AppSink, Layout)>,
    fps: f64,
    description: String,
    playback: Playback,
    /// The first picture, pulled at open to learn the layout, delivered first.
    first: Option<gst::Sample>,
}

impl std::fmt::Debug for GstSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GstSource")
            .field("description", &self.description)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// The pipeline `description` says (`label` names it in errors), not started.
pub(super) fn parse(description: &str, label: &str) -> Result<gst::Pipeline, SourceError> {
    init()?;
    let bad = |what: String| SourceError::Format(format!("{label}: {what}"));
    let element = gst::parse::launch(description).map_err(|e| bad(e.to_string()))?;
    match element.downcast::<gst::Pipeline>() {
        Ok(p) => Ok(p),
        Err(single) => {
            let p = gst::Pipeline::new();
            p.add(&single).map_err(|e| bad(e.to_string()))?;
            Ok(p)
        }
    }
}

impl GstSource {
    /// Parses and starts `pipeline`, which ends in an appsink, and waits for its first
    /// picture to learn its size and format.
    fn launch(
        pipeline: &str,
        description: String,
        playback: Playback,
    ) -> Result<Self, SourceError> {
        Self::start(parse(pipeline, &description)?, description, playback)
    }

    /// Starts `pipeline`, which ends in an appsink (two: [`MAIN_SINK`] and
    /// [`LORES_SINK`]), and waits for its first picture to learn its size and format.
    pub(super) fn start(
        pipeline: gst::Pipeline,
        description: String,
        playback: Playback,
    ) -> Result<Self, SourceError> {
        let bad = |what: String| SourceError::Format(format!("{description}: {what}"));
        let sinks: Vec<AppSink> = pipeline
            .iterate_sinks()
            .into_iter()
            .flatten()
            .filter_map(|e| e.downcast::<AppSink>().ok())
            .collect();
        let named = |name: &str| sinks.iter().find(|s| s.name() == name).cloned();
        let lores_sink = named(LORES_SINK);
        let sink = match (named(MAIN_SINK), sinks.len()) {
            (Some(main), _) => main,
            (None, 1) if lores_sink.is_none() => sinks[0].clone(),
            _ => {
                return Err(bad(format!(
                    "the pipeline must end in an appsink (two: `{MAIN_SINK}` and `{LORES_SINK}`)"
                )));
            }
        };
        for sink in std::iter::once(&sink).chain(lores_sink.as_ref()) {
            // Keep one picture, drop older ones: the newest wins, nothing queues up.
            sink.set_max_buffers(1);
            sink.set_drop(true);
            sink.set_sync(playback == Playback::Loop);
            let caps = gst::Caps::builder("video/x-raw")
                .field("format", gst::List::new(["I420", "NV12"]))
                .build();
            sink.set_caps(Some(&caps));
        }
        let mut source = Self {
            pipeline,
            sink,
            lores: None,
            layout: Layout::packed(PixelFormat::I420, 2, 2),
            fps: 30.0,
            description: description.clone(),
            playback,
            first: None,
        };
        source
            .pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| source.failure("cannot start the pipeline"))?;
        let sample = source.pull(FIRST_PICTURE)?;
        let info = sample_info(&sample).map_err(&bad)?;
        let layout = layout_of(&info).map_err(&bad)?;
        if let Some(lores_sink) = lores_sink {
            let first = source.pull_lores(&lores_sink, FIRST_PICTURE)?;
            let lores = layout_of(&sample_info(&first).map_err(&bad)?).map_err(&bad)?;
            if lores.width > layout.width || lores.height > layout.height {
                return Err(bad(format!(
                    "the `{LORES_SINK}` picture ({}x{}) is larger than the main one",
                    lores.width, lores.height
                )));
            }
            source.lores = Some((lores_sink, lores));
        }
        let rate = info.fps();
        source.fps = if rate.numer() > 0 && rate.denom() > 0 {
            rate.numer() as f64 / rate.denom() as f64
        } else {
            30.0
        };
        source.layout = layout;
        source.first = Some(sample);
        tracing::info!(source = %source.description, ?layout, fps = source.fps, "GStreamer source open");
        Ok(source)
    }

    /// The error the pipeline reported, if any.
    fn bus_error(&self) -> Option<String> {
        let message = self
            .pipeline
            .bus()?
            .pop_filtered(&[gst::MessageType::Error])?;
        match message.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        }
    }

    /// The bus's error, if the pipeline reported one, else `what`.
    fn failure(&self, what: &str) -> SourceError {
        let error = self.bus_error().unwrap_or_else(|| what.to_string());
        SourceError::Io(std::io::Error::other(format!(
            "{}: {error}",
            self.description
        )))
    }

    /// A picture from `sink` within `within`, or `None` at its end or when none came.
    /// In slices, so that an error upstream (a refused connection, a decoder failing) ends
    /// the wait at once instead of after `within`.
    fn wait_for_sample(
        &self,
        sink: &AppSink,
        within: Duration,
    ) -> Result<Option<gst::Sample>, SourceError> {
        let slice = gst::ClockTime::from_nseconds(BUS_LOOK.as_nanos() as u64);
        let end = std::time::Instant::now() + within;
        while std::time::Instant::now() < end && !sink.is_eos() {
            if let Some(sample) = sink.try_pull_sample(slice) {
                return Ok(Some(sample));
            }
            if let Some(error) = self.bus_error() {
                return Err(SourceError::Io(std::io::Error::other(format!(
                    "{}: {error}",
                    self.description
                ))));
            }
        }
        Ok(None)
    }

    /// The next low-resolution picture within `within`.
    fn pull_lores(&self, sink: &AppSink, within: Duration) -> Result<gst::Sample, SourceError> {
        self.wait_for_sample(sink, within)?
            .ok_or_else(|| self.failure(&format!("no low-resolution picture for {within:?}")))
    }

    /// The next picture within `within`, looping a file at its end.
    fn pull(&mut self, within: Duration) -> Result<gst::Sample, SourceError> {
        let timeout = gst::ClockTime::from_nseconds(within.as_nanos() as u64);
        if let Some(sample) = self.wait_for_sample(&self.sink, within)? {
            return Ok(sample);
        }
        if self.sink.is_eos() {
            if self.playback == Playback::Loop {
                self.pipeline
                    .seek_simple(
                        gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                        gst::ClockTime::ZERO,
                    )
                    .map_err(|_| self.failure("cannot loop back to the start"))?;
                return self
                    .sink
                    .try_pull_sample(timeout)
                    .ok_or_else(|| self.failure("no picture after looping"));
            }
            return Err(self.failure("the stream ended"));
        }
        Err(self.failure(&format!("no picture for {within:?}")))
    }
}

impl Drop for GstSource {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl FrameSource for GstSource {
    fn describe(&self) -> String {
        let (w, h) = self.layout.size();
        format!("{} {}x{}@{:.0}", self.description, w, h, self.fps)
    }

    fn layout(&self) -> Layout {
        self.layout
    }

    fn fps(&self) -> f64 {
        self.fps
    }

    fn lores_layout(&self) -> Option<Layout> {
        self.lores.as_ref().map(|(_, layout)| *layout)
    }

    fn capture(
        &mut self,
        main: &mut Image,
        lores: Option<&mut Image>,
    ) -> Result<CaptureTime, SourceError> {
        let sample = match self.first.take() {
            Some(first) => first,
            None => self.pull(STALL)?,
        };
        let at = CaptureTime::now();
        // A size change needs a reopen (the pipeline checks the new layouts), like any
        // capture error.
        let failed = |what: String| {
            SourceError::Io(std::io::Error::other(format!(
                "{}: {what}",
                self.description
            )))
        };
        copy_sample(&sample, main).map_err(failed)?;
        if let (Some(image), Some((sink, _))) = (lores, &self.lores) {
            // Both streams come from one request, one after the other.
            let sample = self.pull_lores(sink, STALL)?;
            copy_sample(&sample, image).map_err(failed)?;
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_descriptions() {
        assert_eq!(
            redact("rtsp://admin:secret@cam:554/s1"),
            "rtsp://***@cam:554/s1"
        );
        assert_eq!(redact("rtsp://cam/s1"), "rtsp://cam/s1");
    }
}
