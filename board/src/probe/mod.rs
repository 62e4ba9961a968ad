//! What this machine has, found at run time so that one binary serves every board of an
//! architecture: the board, its video devices, the backends this build has, and what
//! `auto` would take and why. `focusd probe` prints the [`Report`].

mod board;

use std::path::Path;

use serde::Serialize;

pub use self::board::{Board, l4t_release};
use crate::devices::VideoNode;
use crate::encode::{self, EncoderInfo, EncoderSpec};
use crate::source::{self, SourceSpec};

/// A backend and whether this build has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// What it does, e.g. `V4L2 capture`.
    pub name: &'static str,
    /// The cargo feature that builds it.
    pub feature: &'static str,
    /// Whether this build has it.
    pub enabled: bool,
}

/// Every optional backend, and whether this build has it.
pub fn backends() -> Vec<Backend> {
    vec![
        Backend {
            name: "V4L2 capture",
            feature: "v4l2",
            enabled: cfg!(feature = "v4l2"),
        },
        Backend {
            name: "GStreamer capture and encoders, libcamera",
            feature: "gstreamer",
            enabled: cfg!(feature = "gstreamer"),
        },
        Backend {
            name: "V4L2 M2M H.264 encoder",
            feature: "v4l2-m2m",
            enabled: cfg!(feature = "v4l2-m2m"),
        },
    ]
}

/// What `auto` would take, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Choice {
    pub spec: String,
    pub reason: String,
}

/// Everything `focusd probe` reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The board, e.g. `Raspberry Pi 4 Model B Rev 1.4`.
    pub board: String,
    /// `raspberry_pi`, `jetson` or `generic`.
    pub board_kind: &'static str,
    /// A Jetson's L4T release line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l4t: Option<String>,
    pub backends: Vec<Backend>,
    /// Cameras libcamera drives (empty without the GStreamer backend or `libcamerasrc`).
    pub cameras: Vec<source::Camera>,
    /// V4L2 device nodes (empty when the V4L2 backend is not in this build).
    pub video_nodes: Vec<VideoNode>,
    pub encoders: Vec<EncoderInfo>,
    /// The source focusd would open.
    pub source: Choice,
    /// The encoder focusd would open.
    pub encoder: Choice,
    /// What stands between this machine and a camera or hardware encoder, with the fix.
    pub problems: Vec<String>,
}

/// Why a board that has an H.264 encoder shows none, and the fix.
fn missing_encoder(board: &Board) -> String {
    let name = board.name();
    match board {
        Board::Jetson(_) if !cfg!(feature = "gstreamer") => format!(
            "{name} has a hardware H.264 encoder, reached through GStreamer, which this build does not have (rebuild with --features gstreamer); openh264 is used"
        ),
        Board::Jetson(_) => format!(
            "{name} has a hardware H.264 encoder but GStreamer has no {} (install nvidia-l4t-gstreamer); openh264 is used",
            encode::JETSON_ENCODER
        ),
        _ if !cfg!(feature = "v4l2-m2m") => format!(
            "{name} has a hardware H.264 encoder, which this build cannot drive (rebuild with --features v4l2-m2m); openh264 is used"
        ),
        _ => format!(
            "{name} has a hardware H.264 encoder but no V4L2 node offers it (bcm2835-codec is /dev/video11: is the bcm2835_codec module loaded? ls /dev/video1*); openh264 is used"
        ),
    }
}

/// Probes the machine. `source` and `encoder` are the configured specs: `auto` is resolved
/// as the daemon would, anything else is reported as configured.
pub fn probe(source: &SourceSpec, encoder: &EncoderSpec) -> Report {
    probe_in(Path::new("/"), source, encoder)
}

fn probe_in(root: &Path, source: &SourceSpec, encoder: &EncoderSpec) -> Report {
    let board = Board::detect_in(root);
    let video_nodes = source::video_nodes();
    let mut problems = Vec::new();
    for node in &video_nodes {
        if let Some(note) = &node.note
            && note.contains("ermission denied")
        {
            problems.push(format!(
                "cannot open {}: add the user to the group that owns it (sudo adduser $USER video)",
                node.path.display()
            ));
        }
    }
    let has_dev_video = std::fs::read_dir(root.join("dev")).is_ok_and(|d| {
        d.filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("video"))
    });
    if has_dev_video && !cfg!(feature = "v4l2") {
        problems.push(
            "this machine has V4L2 devices, this build cannot read them (rebuild with --features v4l2)"
                .into(),
        );
    }
    if matches!(board, Board::RaspberryPi(_)) && !cfg!(feature = "gstreamer") {
        problems.push(
            "Raspberry Pi cameras are reached through libcamera, which this build does not have (rebuild with --features gstreamer)"
                .into(),
        );
    }
    let mut encoders = vec![EncoderInfo {
        spec: "openh264".into(),
        about: "software (Cisco openh264), constrained baseline, any size".into(),
    }];
    let hardware = encode::hardware_encoders();
    if board.has_h264_encoder() == Some(true) && hardware.is_empty() {
        problems.push(missing_encoder(&board));
    }
    encoders.extend(hardware);
    let source = match source {
        SourceSpec::Auto => {
            let (spec, reason) = source::resolve_auto();
            Choice {
                spec: spec.to_string(),
                reason,
            }
        }
        other => Choice {
            spec: other.to_string(),
            reason: "configured".into(),
        },
    };
    let encoder = match encoder {
        EncoderSpec::Auto => {
            let (spec, reason) = encode::resolve_auto();
            let reason = match board.has_h264_encoder() {
                Some(false) if spec == EncoderSpec::OpenH264 => {
                    format!("{reason}; {} has no H.264 encoder", board.name())
                }
                _ => reason,
            };
            Choice {
                spec: spec.to_string(),
                reason,
            }
        }
        other => Choice {
            spec: other.to_string(),
            reason: "configured".into(),
        },
    };
    Report {
        board: board.name().to_string(),
        board_kind: board.kind(),
        l4t: l4t_release(root),
        backends: backends(),
        cameras: source::libcamera_cameras(),
        video_nodes,
        encoders,
        source,
        encoder,
        problems,
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "board: {}", self.board)?;
        if let Some(l4t) = &self.l4t {
            writeln!(f, "  L4T: {l4t}")?;
        }
        writeln!(f, "backends in this build:")?;
        for b in &self.backends {
            let state = if b.enabled { "yes" } else { "no" };
            writeln!(f, "  {:<44} {state:<3} (feature {})", b.name, b.feature)?;
        }
        writeln!(f, "libcamera cameras:")?;
        if self.cameras.is_empty() {
            writeln!(f, "  none seen")?;
        }
        for c in &self.cameras {
            writeln!(f, "  {}", c.spec)?;
            if !c.modes.is_empty() {
                writeln!(f, "    {}", c.modes.join(", "))?;
            }
        }
        writeln!(f, "video devices:")?;
        if self.video_nodes.is_empty() {
            writeln!(f, "  none seen")?;
        }
        for n in &self.video_nodes {
            writeln!(f, "  {}  {} ({})", n.path.display(), n.card, n.driver)?;
            if let Some(note) = &n.note {
                writeln!(f, "    {note}")?;
            }
            if !n.modes.is_empty() {
                writeln!(f, "    {}", n.modes.join(", "))?;
            }
        }
        writeln!(f, "encoders:")?;
        for e in &self.encoders {
            writeln!(f, "  {:<24} {}", e.spec, e.about)?;
        }
        writeln!(f, "focusd would use:")?;
        writeln!(
            f,
            "  source  {}  ({})",
            self.source.spec, self.source.reason
        )?;
        writeln!(
            f,
            "  encoder {}  ({})",
            self.encoder.spec, self.encoder.reason
        )?;
        if !self.problems.is_empty() {
            writeln!(f, "problems:")?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pi_4_without_the_backends_is_told_what_to_rebuild_with() {
        let root = std::env::temp_dir().join(format!("focusd-probe-{}", std::process::id()));
        std::fs::create_dir_all(root.join("proc/device-tree")).unwrap();
        std::fs::write(
            root.join("proc/device-tree/model"),
            "Raspberry Pi 4 Model B Rev 1.4\0",
        )
        .unwrap();
        let report = probe_in(&root, &SourceSpec::Test, &EncoderSpec::OpenH264);
        assert_eq!(report.board_kind, "raspberry_pi");
        assert_eq!(report.source.reason, "configured");
        let problems = report.problems.join("\n");
        if !cfg!(feature = "gstreamer") {
            assert!(problems.contains("--features gstreamer"), "{problems}");
        }
        // The test machine has no bcm2835-codec: either the feature or the node is missing.
        if cfg!(feature = "v4l2-m2m") {
            assert!(problems.contains("bcm2835_codec module"), "{problems}");
        } else {
            assert!(problems.contains("--features v4l2-m2m"), "{problems}");
        }
        let text = report.to_string();
        assert!(text.contains("focusd would use:"), "{text}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_pi_5_is_known_to_have_no_encoder() {
        let root = std::env::temp_dir().join(format!("focusd-probe5-{}", std::process::id()));
        std::fs::create_dir_all(root.join("proc/device-tree")).unwrap();
        std::fs::write(
            root.join("proc/device-tree/model"),
            "Raspberry Pi 5 Model B Rev 1.0\0",
        )
        .unwrap();
        let report = probe_in(&root, &SourceSpec::Test, &EncoderSpec::Auto);
        assert_eq!(report.encoder.spec, "openh264");
        assert!(
            report.encoder.reason.contains("has no H.264 encoder"),
            "{}",
            report.encoder.reason
        );
        assert!(
            !report.problems.iter().any(|p| p.contains("v4l2-m2m")),
            "nothing to rebuild for: {:?}",
            report.problems
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_jetson_reports_its_l4t_release() {
        let root = std::env::temp_dir().join(format!("focusd-probej-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/nv_tegra_release"),
            "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64\n",
        )
        .unwrap();
        let report = probe_in(&root, &SourceSpec::Auto, &EncoderSpec::Auto);
        assert_eq!(report.board_kind, "jetson");
        assert!(report.l4t.as_deref().unwrap().starts_with("R36 (release)"));
        // A Jetson (not an Orin Nano) has an encoder; this machine has no nvv4l2h264enc.
        let problems = report.problems.join("\n");
        if cfg!(feature = "gstreamer") {
            assert!(
                problems.contains("install nvidia-l4t-gstreamer"),
                "{problems}"
            );
        } else {
            assert!(problems.contains("--features gstreamer"), "{problems}");
        }
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["board_kind"], "jetson");
        assert!(json["source"]["reason"].is_string());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
