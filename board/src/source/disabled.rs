//! Camera backends that are not compiled into this build. Each has the same API as the
//! real backend and answers "not enabled in this build", so every caller compiles and the
//! default build runs on any x86 box.

/// V4L2 capture (feature `v4l2`).
#[cfg(not(feature = "v4l2"))]
pub(super) mod v4l2 {
    use std::path::Path;

    use crate::source::{FrameSource, SourceError, SourceSpec};

    /// The first V4L2 camera on this machine: none without the backend.
    pub(in crate::source) fn first_camera() -> Option<SourceSpec> {
        None
    }

    /// V4L2 device nodes: none seen without the backend.
    pub(in crate::source) fn video_nodes() -> Vec<crate::devices::VideoNode> {
        Vec::new()
    }

    pub(in crate::source) fn open(
        _device: &Path,
        _size: (u32, u32),
        _fps: f64,
    ) -> Result<Box<dyn FrameSource>, SourceError> {
        Err(SourceError::NotEnabled {
            backend: "V4L2",
            feature: "v4l2",
        })
    }
}

/// GStreamer capture (feature `gstreamer`).
#[cfg(not(feature = "gstreamer"))]
pub(super) mod gst {
    use std::path::Path;

    use crate::source::{FrameSource, SourceError};

    pub(in crate::source) fn open(_pipeline: &str) -> Result<Box<dyn FrameSource>, SourceError> {
        Err(SourceError::NotEnabled {
            backend: "GStreamer",
            feature: "gstreamer",
        })
    }

    pub(in crate::source) fn open_file(
        _path: &Path,
        _scale_to: Option<(u32, u32)>,
    ) -> Result<Box<dyn FrameSource>, SourceError> {
        Err(SourceError::NotEnabled {
            backend: "GStreamer (files other than .y4m)",
            feature: "gstreamer",
        })
    }

    pub(in crate::source) fn open_rtsp(
        _url: &str,
        _scale_to: Option<(u32, u32)>,
    ) -> Result<Box<dyn FrameSource>, SourceError> {
        Err(SourceError::NotEnabled {
            backend: "GStreamer (RTSP)",
            feature: "gstreamer",
        })
    }
}

/// libcamera through GStreamer's `libcamerasrc` (feature `gstreamer`).
#[cfg(not(feature = "gstreamer"))]
pub(super) mod libcamera {
    use crate::source::{Camera, FrameSource, SourceError, SourceSpec};

    /// The helper process: nothing to run without the backend.
    pub(in crate::source) fn run_child(_args: &[String]) -> u8 {
        eprintln!("focusd: libcamera is not in this build (rebuild with --features gstreamer)");
        2
    }

    /// libcamera's cameras: none seen without the backend.
    pub(in crate::source) fn cameras() -> Vec<Camera> {
        Vec::new()
    }

    /// The first libcamera camera on this machine: none without the backend.
    pub(in crate::source) fn first_camera() -> Option<SourceSpec> {
        None
    }

    pub(in crate::source) fn open(
        _id: Option<&str>,
        _size: (u32, u32),
        _fps: f64,
        _lores_width: u32,
    ) -> Result<Box<dyn FrameSource>, SourceError> {
        Err(SourceError::NotEnabled {
            backend: "libcamera (through GStreamer)",
            feature: "gstreamer",
        })
    }
}
