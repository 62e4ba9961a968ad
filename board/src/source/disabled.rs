//! Camera backends that are not compiled into this build. Each has the same shape as the
//! real backend and answers "not enabled in this build", so every caller compiles and the
//! default build runs on any x86 box.

use std::path::Path;

use super::{FrameSource, SourceError, SourceSpec};

/// The first camera a compiled-in backend can see. No camera backend is compiled in here.
pub(super) fn first_camera() -> Option<SourceSpec> {
    None
}

pub(super) fn v4l2(_device: &Path) -> Result<Box<dyn FrameSource>, SourceError> {
    Err(SourceError::NotEnabled {
        backend: "V4L2",
        feature: "v4l2",
    })
}

pub(super) fn libcamera(_id: Option<&str>) -> Result<Box<dyn FrameSource>, SourceError> {
    Err(SourceError::NotEnabled {
        backend: "libcamera",
        feature: "libcamera",
    })
}

pub(super) fn gst(_pipeline: &str) -> Result<Box<dyn FrameSource>, SourceError> {
    Err(SourceError::NotEnabled {
        backend: "GStreamer",
        feature: "gstreamer",
    })
}
