//! Encoder backends that are not compiled into this build. Each has the same API as the
//! real backend and answers "not enabled in this build", so every caller compiles and the
//! default build runs on any x86 box.

/// The V4L2 M2M stateful encoder (feature `v4l2-m2m`).
#[cfg(not(feature = "v4l2-m2m"))]
pub(super) mod v4l2m2m {
    use std::path::{Path, PathBuf};

    use crate::encode::{EncodeError, EncoderSettings, VideoEncoder};

    /// The first V4L2 M2M H.264 encoder on this machine: none without the backend.
    pub(in crate::encode) fn find() -> Option<PathBuf> {
        None
    }

    /// What the device is: never asked without the backend.
    pub(in crate::encode) fn describe(_device: &Path) -> String {
        String::new()
    }

    pub(in crate::encode) fn open(
        _device: Option<&Path>,
        _settings: &EncoderSettings,
    ) -> Result<Box<dyn VideoEncoder>, EncodeError> {
        Err(EncodeError::NotEnabled {
            backend: "V4L2 M2M",
            feature: "v4l2-m2m",
        })
    }
}

/// GStreamer encoder elements (feature `gstreamer`).
#[cfg(not(feature = "gstreamer"))]
pub(super) mod gst {
    use crate::encode::{EncodeError, EncoderSettings, VideoEncoder};

    /// Whether GStreamer has an element: no GStreamer without the backend.
    pub(in crate::encode) fn has_element(_name: &str) -> bool {
        false
    }

    pub(in crate::encode) fn open(
        _element: &str,
        _settings: &EncoderSettings,
    ) -> Result<Box<dyn VideoEncoder>, EncodeError> {
        Err(EncodeError::NotEnabled {
            backend: "GStreamer",
            feature: "gstreamer",
        })
    }
}
