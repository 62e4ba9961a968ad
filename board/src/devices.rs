//! The machine's V4L2 device nodes (`/dev/videoN`): where cameras and codecs are, and
//! what each one is to focusd. The V4L2 capture and M2M encoder backends look here, and
//! `focusd probe` lists them.

use std::path::PathBuf;

use serde::Serialize;

/// One V4L2 device node and what it is to focusd.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VideoNode {
    pub path: PathBuf,
    /// The driver's name (`uvcvideo`, `bcm2835-codec`, `vivid`).
    pub driver: String,
    /// The device's name (`HD Pro Webcam C920`).
    pub card: String,
    /// A camera focusd can read: its modes, e.g. `MJPG 1280x720@30`.
    pub modes: Vec<String>,
    /// Why it is not a camera focusd reads (an encoder, an ISP node, unreadable).
    pub note: Option<String>,
}

/// The `/dev/videoN` nodes, by number: where V4L2 cameras and codecs are.
pub fn dev_video_nodes() -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}
