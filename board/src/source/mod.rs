//! Frame sources: where pictures come from.
//!
//! A [`FrameSource`] writes the next picture into a caller-owned [`Image`] and blocks
//! until that picture is due, so a source paces itself (a camera by its sensor, a file by
//! its frame rate, the test pattern by the configured rate). Open one from a [`SourceSpec`]
//! with [`open`].
//!
//! The source declares the [`Layout`] of its pictures (I420 or NV12, its strides), and the
//! caller allocates images in exactly that layout, so a camera's buffer is copied whole and
//! never converted on the capture thread. A source that produces a low-resolution picture
//! itself (an ISP's second output) declares it with [`FrameSource::lores_layout`]; the
//! pipeline then uses it for the context track instead of scaling the main picture.

mod disabled;
mod test_pattern;
mod y4m;

#[cfg(not(feature = "gstreamer"))]
use disabled::gst;
#[cfg(not(feature = "gstreamer"))]
use disabled::libcamera;
#[cfg(feature = "gstreamer")]
pub mod gst;
#[cfg(feature = "gstreamer")]
pub mod libcamera;
#[cfg(not(feature = "v4l2"))]
use disabled::v4l2;
#[cfg(feature = "v4l2")]
pub mod v4l2;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::frame::CaptureTime;
use crate::image::{Image, Layout};

pub use test_pattern::{SceneBox, TestPattern, scene_boxes};
pub use y4m::Y4mFile;

/// What to capture, as written on the command line (`--source`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// The first camera found, else the test pattern.
    Auto,
    /// Moving shapes with known boxes and the timestamp stamp.
    Test,
    /// A video file, looped and paced at its own frame rate: `.y4m` read directly, any
    /// other container and codec through GStreamer.
    File(PathBuf),
    /// An RTSP camera or server (`rtsp://` or `rtsps://`), through GStreamer.
    Rtsp(String),
    /// A V4L2 capture device such as `/dev/video0`.
    V4l2(PathBuf),
    /// A libcamera camera, by id or the first one.
    Libcamera(Option<String>),
    /// A GStreamer pipeline ending in an appsink.
    Gst(String),
}

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("rtsp://") || s.starts_with("rtsps://") {
            return Ok(Self::Rtsp(s.to_string()));
        }
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let need = |what: &str| match arg {
            Some(a) if !a.is_empty() => Ok(a.to_string()),
            _ => Err(format!("source `{s}` needs {what} after the colon")),
        };
        match kind {
            "auto" if arg.is_none() => Ok(Self::Auto),
            "test" if arg.is_none() => Ok(Self::Test),
            "file" => Ok(Self::File(need("a path to a video file")?.into())),
            "v4l2" => Ok(Self::V4l2(need("a device such as /dev/video0")?.into())),
            "libcamera" => Ok(Self::Libcamera(
                arg.filter(|a| !a.is_empty()).map(Into::into),
            )),
            "gst" => Ok(Self::Gst(need("a pipeline")?)),
            _ => Err(format!(
                "unknown source `{s}`: expected test, file:PATH, v4l2:/dev/videoN, libcamera[:ID], rtsp://URL, gst:PIPELINE or auto"
            )),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Test => write!(f, "test"),
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::Rtsp(url) => f.write_str(url),
            Self::V4l2(p) => write!(f, "v4l2:{}", p.display()),
            Self::Libcamera(None) => write!(f, "libcamera"),
            Self::Libcamera(Some(id)) => write!(f, "libcamera:{id}"),
            Self::Gst(p) => write!(f, "gst:{p}"),
        }
    }
}

/// Why a source could not open or deliver a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The backend exists but was not compiled into this build (a cargo feature is off).
    #[error("{backend} capture is not enabled in this build (rebuild with `--features {feature}`)")]
    NotEnabled {
        backend: &'static str,
        feature: &'static str,
    },
    /// A file or device could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The input is not in a format this source understands.
    #[error("{0}")]
    Format(String),
    /// Reading a frame failed.
    #[error("capture failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A source of pictures. Implementations pace themselves: `capture` returns when the next
/// picture is due.
///
/// One thread (the pipeline's capture thread) owns the source and calls every method; a
/// source may block in [`Self::capture`] for up to about two frame intervals. An error from
/// `capture` is never fatal to the caller: it backs off and opens the source again.
pub trait FrameSource: Send {
    /// A short human description, e.g. `test 1280x720@30` (shown in the state JSON).
    fn describe(&self) -> String;
    /// Layout of the main pictures `capture` writes (their size, format and strides); it
    /// passes [`Layout::check`] and does not change while the source is open.
    fn layout(&self) -> Layout;
    /// Layout of the low-resolution picture the source delivers itself, if it does (an
    /// ISP's second stream); `None` when the pipeline must scale the main picture.
    fn lores_layout(&self) -> Option<Layout> {
        None
    }
    /// Nominal frames per second.
    fn fps(&self) -> f64;
    /// Whether frames carry the timestamp stamp (see [`crate::stamp`]).
    fn has_stamp(&self) -> bool {
        false
    }
    /// Blocks until the next picture is due, writes it into `main` (in [`Self::layout`])
    /// and, when the source delivers one, its low-resolution picture into `lores` (in
    /// [`Self::lores_layout`]; the caller passes `Some` exactly then), and says when the
    /// picture was taken.
    fn capture(
        &mut self,
        main: &mut Image,
        lores: Option<&mut Image>,
    ) -> Result<CaptureTime, SourceError>;
}

/// What the pipeline asks of a source; each source takes what applies to it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wanted {
    /// The main picture's size: the test pattern is drawn at it, a camera's nearest mode
    /// is taken, libcamera's ISP scales to it, a file is scaled to it when `scale_file`.
    pub size: (u32, u32),
    /// Frames per second of the test pattern and of cameras.
    pub fps: f64,
    /// Whether a file or RTSP stream is scaled to `size` (`--size` was given) or kept
    /// at its native size.
    pub scale_file: bool,
    /// Width of the low-resolution picture, for a source that makes its own (libcamera's
    /// second ISP stream).
    pub lores_width: u32,
}

/// Opens the source described by `spec`, as `wanted` says.
pub fn open(spec: &SourceSpec, wanted: Wanted) -> Result<Box<dyn FrameSource>, SourceError> {
    let Wanted {
        size,
        fps,
        scale_file,
        lores_width,
    } = wanted;
    match spec {
        // libcamera first: on a Pi, the ISP's V4L2 nodes are not cameras to open directly.
        SourceSpec::Auto => {
            let (spec, reason) = resolve_auto();
            tracing::info!(source = %spec, %reason, "source auto");
            open(&spec, wanted)
        }
        SourceSpec::Test => Ok(Box::new(TestPattern::new(size, fps))),
        SourceSpec::File(path) if is_y4m(path) => {
            Ok(Box::new(Y4mFile::open(path, scale_file.then_some(size))?))
        }
        SourceSpec::File(path) => gst::open_file(path, scale_file.then_some(size)),
        SourceSpec::Rtsp(url) => gst::open_rtsp(url, scale_file.then_some(size)),
        SourceSpec::V4l2(dev) => v4l2::open(dev, size, fps),
        SourceSpec::Libcamera(id) => libcamera::open(id.as_deref(), size, fps, lores_width),
        SourceSpec::Gst(pipeline) => gst::open(pipeline),
    }
}

/// Whether `path` names a YUV4MPEG2 file or pipe, which focusd reads itself.
fn is_y4m(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("y4m"))
}

/// What `auto` opens on this machine now, and why: the first libcamera camera, else the
/// first V4L2 camera (on a Pi, the ISP's V4L2 nodes are not cameras to open directly), else
/// the test pattern.
pub fn resolve_auto() -> (SourceSpec, String) {
    if let Some(camera) = libcamera::first_camera() {
        return (camera, "the first libcamera camera".into());
    }
    if let Some(camera) = v4l2::first_camera() {
        return (camera, "the first V4L2 camera".into());
    }
    let missing: Vec<&str> = [
        (cfg!(feature = "gstreamer"), "libcamera"),
        (cfg!(feature = "v4l2"), "V4L2"),
    ]
    .into_iter()
    .filter_map(|(built, name)| (!built).then_some(name))
    .collect();
    let reason = if missing.is_empty() {
        "no camera found".to_string()
    } else {
        format!("no camera found ({} not in this build)", missing.join(", "))
    };
    (SourceSpec::Test, reason)
}

/// A camera that libcamera drives, as `focusd probe` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Camera {
    /// How `--source` names it: `libcamera:ID`.
    #[serde(serialize_with = "crate::source::serialize_spec")]
    pub spec: SourceSpec,
    /// What it offers for video, e.g. `NV12 1280x720` or `RGB 48x48-4096x2160`.
    pub modes: Vec<String>,
}

fn serialize_spec<S: serde::Serializer>(spec: &SourceSpec, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(spec)
}

/// The hidden subcommand that runs libcamera's helper process (`focusd
/// __libcamera-capture REQUEST`, see [`libcamera`]): the daemon's `main` hands the
/// arguments after it to [`run_libcamera_helper`].
pub const LIBCAMERA_HELPER: &str = "__libcamera-capture";

/// The binary that runs libcamera's helper, when not the running one (a test binary that
/// embeds the daemon has no such subcommand): the path of a `focusd` binary.
pub const LIBCAMERA_HELPER_ENV: &str = "FOCUSD_LIBCAMERA_HELPER";

/// Runs libcamera's helper process with the arguments after [`LIBCAMERA_HELPER`];
/// returns its exit status (2 when this build has no libcamera).
pub fn run_libcamera_helper(args: &[String]) -> u8 {
    libcamera::run_child(args)
}

/// The cameras libcamera drives (none without the GStreamer backend or `libcamerasrc`).
pub fn libcamera_cameras() -> Vec<Camera> {
    libcamera::cameras()
}

/// Every V4L2 device node and what it is to focusd (none without the V4L2 backend).
pub fn video_nodes() -> Vec<crate::devices::VideoNode> {
    v4l2::video_nodes()
}

/// Paces a source at a fixed rate without drifting: frame `n` is due at `start + n / fps`.
/// A source that falls more than a frame behind skips ahead instead of bursting.
#[derive(Debug)]
pub(crate) struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

impl Pacer {
    pub(crate) fn new(fps: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / fps.max(0.1)),
            next: None,
        }
    }

    /// Sleeps until the next frame is due.
    pub(crate) fn wait(&mut self) {
        let now = Instant::now();
        let due = *self.next.get_or_insert(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        let next = due + self.interval;
        self.next = Some(if next + self.interval < Instant::now() {
            Instant::now() + self.interval
        } else {
            next
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Wanted {
        Wanted {
            size: (64, 64),
            fps: 30.0,
            scale_file: false,
            lores_width: 32,
        }
    }

    #[test]
    fn parses_every_spec() {
        assert_eq!("test".parse(), Ok(SourceSpec::Test));
        assert_eq!("auto".parse(), Ok(SourceSpec::Auto));
        assert_eq!(
            "file:/tmp/a.y4m".parse(),
            Ok(SourceSpec::File("/tmp/a.y4m".into()))
        );
        assert_eq!(
            "v4l2:/dev/video0".parse(),
            Ok(SourceSpec::V4l2("/dev/video0".into()))
        );
        assert_eq!("libcamera".parse(), Ok(SourceSpec::Libcamera(None)));
        assert_eq!(
            "libcamera:cam1".parse(),
            Ok(SourceSpec::Libcamera(Some("cam1".into())))
        );
        assert_eq!(
            "gst:videotestsrc ! appsink".parse(),
            Ok(SourceSpec::Gst("videotestsrc ! appsink".into()))
        );
        assert_eq!(
            "rtsp://cam.local:8554/main".parse(),
            Ok(SourceSpec::Rtsp("rtsp://cam.local:8554/main".into()))
        );
        assert_eq!(
            "file:/media/clip.mp4".parse(),
            Ok(SourceSpec::File("/media/clip.mp4".into()))
        );
    }

    #[test]
    fn rejects_bad_specs_with_reason() {
        assert!("file:".parse::<SourceSpec>().unwrap_err().contains("needs"));
        assert!(
            "webcam"
                .parse::<SourceSpec>()
                .unwrap_err()
                .contains("unknown source")
        );
        assert!("test:1".parse::<SourceSpec>().is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "test",
            "auto",
            "file:x.y4m",
            "v4l2:/dev/video2",
            "libcamera:0",
            "rtsps://user:pw@cam/stream1",
        ] {
            assert_eq!(s.parse::<SourceSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn disabled_backends_say_how_to_enable_them() {
        let mut disabled = vec![];
        if cfg!(not(feature = "v4l2")) {
            disabled.push(("v4l2:/dev/video0", "v4l2"));
        }
        if cfg!(not(feature = "gstreamer")) {
            disabled.push(("libcamera", "gstreamer"));
            disabled.push(("gst:videotestsrc ! appsink", "gstreamer"));
            disabled.push(("rtsp://127.0.0.1:1/x", "gstreamer"));
            disabled.push(("file:/nonexistent/clip.mp4", "gstreamer"));
        }
        for (spec, feature) in disabled {
            let err = open(&spec.parse().unwrap(), tiny())
                .err()
                .expect("not in this build");
            let text = err.to_string();
            assert!(
                text.contains("not enabled in this build")
                    && text.contains(&format!("--features {feature}`")),
                "{text}"
            );
        }
    }

    #[cfg(feature = "v4l2")]
    #[test]
    fn a_missing_v4l2_device_is_named() {
        let err = open(&"v4l2:/dev/video99".parse().unwrap(), tiny())
            .err()
            .expect("no such device");
        assert!(
            err.to_string().contains("cannot open /dev/video99"),
            "{err}"
        );
    }
}
