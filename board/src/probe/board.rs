//! What board this is, from files the kernel and vendors provide.

use std::path::Path;

/// The kind of board focusd runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Board {
    /// A Raspberry Pi; the string is the device-tree model, e.g. "Raspberry Pi 5 Model B Rev 1.0".
    RaspberryPi(String),
    /// An NVIDIA Jetson; the string is the device-tree model.
    Jetson(String),
    /// Anything else (a development machine).
    Generic(String),
}

impl Board {
    /// Probes the running machine.
    pub fn detect() -> Self {
        Self::detect_in(Path::new("/"))
    }

    /// Probes a machine whose root file system is at `root` (tests use a fake tree).
    pub fn detect_in(root: &Path) -> Self {
        let model = std::fs::read_to_string(root.join("proc/device-tree/model"))
            .map(|m| m.trim_end_matches('\0').trim().to_string())
            .unwrap_or_default();
        if model.starts_with("Raspberry Pi") {
            Board::RaspberryPi(model)
        } else if model.contains("Jetson") || root.join("etc/nv_tegra_release").exists() {
            Board::Jetson(if model.is_empty() {
                "NVIDIA Jetson".into()
            } else {
                model
            })
        } else {
            Board::Generic(format!(
                "{} {}",
                std::env::consts::OS,
                std::env::consts::ARCH
            ))
        }
    }

    /// A short human name.
    pub fn name(&self) -> &str {
        match self {
            Board::RaspberryPi(m) | Board::Jetson(m) | Board::Generic(m) => m,
        }
    }

    /// The family, for scripts: `raspberry_pi`, `jetson` or `generic`.
    pub fn kind(&self) -> &'static str {
        match self {
            Board::RaspberryPi(_) => "raspberry_pi",
            Board::Jetson(_) => "jetson",
            Board::Generic(_) => "generic",
        }
    }

    /// Whether this board has an H.264 encoder in hardware: a Pi 4 (and older) does, a Pi 5
    /// does not; Jetsons other than the Orin Nano do. `None` when unknown.
    pub fn has_h264_encoder(&self) -> Option<bool> {
        match self {
            Board::RaspberryPi(m) => Some(!m.starts_with("Raspberry Pi 5")),
            Board::Jetson(m) => Some(!m.contains("Orin Nano")),
            Board::Generic(_) => None,
        }
    }
}

/// The first line of `/etc/nv_tegra_release` under `root` (a Jetson's L4T release).
pub fn l4t_release(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("etc/nv_tegra_release")).ok()?;
    text.lines()
        .next()
        .map(|l| l.trim_start_matches('#').trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_from_device_tree() {
        let root = std::env::temp_dir().join(format!("focusd-board-{}", std::process::id()));
        std::fs::create_dir_all(root.join("proc/device-tree")).unwrap();
        std::fs::write(
            root.join("proc/device-tree/model"),
            "Raspberry Pi 5 Model B Rev 1.0\0",
        )
        .unwrap();
        assert_eq!(
            Board::detect_in(&root),
            Board::RaspberryPi("Raspberry Pi 5 Model B Rev 1.0".into())
        );
        std::fs::write(
            root.join("proc/device-tree/model"),
            "NVIDIA Jetson Orin Nano Developer Kit\0",
        )
        .unwrap();
        assert!(matches!(Board::detect_in(&root), Board::Jetson(_)));
        std::fs::remove_dir_all(&root).unwrap();
        assert!(matches!(Board::detect_in(&root), Board::Generic(_)));
    }
}
