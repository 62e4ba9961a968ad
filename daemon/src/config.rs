//! Configuration in two steps, as ripgrep does it: raw inputs ([`Flags`] from the command
//! line, [`FileConfig`] from TOML) are resolved into [`Settings`], where every value is
//! checked and defaulted. Nothing downstream sees a raw value.
//!
//! Precedence: command-line flag, then config file, then built-in default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use focusd_board::encode::EncoderSpec;
use focusd_board::source::SourceSpec;
use serde::Deserialize;

use crate::doors::mqtt::Broker;
use crate::state::command::{Mode, Rect};

/// Edge camera daemon: captures a camera, finds the region of interest and streams it over
/// WebRTC as a low-res context track plus a high-res source track shaped by a mode.
#[derive(Debug, Parser)]
#[command(name = "focusd", version, about, long_about = None)]
pub struct Flags {
    /// TOML config file; flags override its values.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// HTTP address for signalling, API, viewer and metrics [default: 0.0.0.0:8888].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// What to capture: test, file:PATH.y4m, v4l2:/dev/videoN, libcamera[:ID], gst:PIPELINE
    /// or auto (first camera found, else test) [default: auto].
    #[arg(long, value_name = "SPEC")]
    pub source: Option<String>,
    /// H.264 encoder: auto (the board's hardware encoder when found, else openh264),
    /// openh264, v4l2m2m[:/dev/videoN] or gst:ELEMENT [default: auto].
    #[arg(long, value_name = "SPEC")]
    pub encoder: Option<String>,
    /// Main image size; a file is scaled to it when given, else kept at its native size
    /// [default: 1280x720].
    #[arg(long, value_name = "WxH")]
    pub size: Option<String>,
    /// Frames per second for the test source and encoders [default: 30].
    #[arg(long, value_name = "N")]
    pub fps: Option<u32>,
    /// MQTT broker URL: mqtt://[user[:pass]@]host[:port] or mqtts://... (TLS); MQTT is off
    /// unless set here or as mqtt.url in the config file.
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// Device id used in MQTT topics [default: the host name].
    #[arg(long, value_name = "ID")]
    pub device_id: Option<String>,
    #[command(subcommand)]
    pub command: Option<Subcmd>,
}

#[derive(Debug, Subcommand)]
pub enum Subcmd {
    /// Fleet console: list devices, watch them, change their mode or rectangle over MQTT.
    Ctl(CtlFlags),
}

#[derive(Debug, Args, Clone)]
pub struct CtlFlags {
    /// Broker URL (mqtt:// or mqtts://) [default: mqtt.url of --config].
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// CA certificate (PEM) for an mqtts:// broker [default: mqtt.ca_file of --config, else
    /// the system's roots].
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Topic prefix [default: mqtt.prefix of --config, else focusd].
    #[arg(long)]
    pub prefix: Option<String>,
    /// Seconds to wait for an answer (or, for `list`, for registrations).
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    pub timeout: f64,
    #[command(subcommand)]
    pub action: CtlAction,
}

#[derive(Debug, Subcommand, Clone)]
pub enum CtlAction {
    /// Devices known to the broker: retained registration and availability.
    List,
    /// Print state, stats, events and availability as they arrive (all devices, or one).
    Watch { id: Option<String> },
    /// Set a device's mode: LOW, HIGH, VISION or HYBRID.
    Mode { id: String, mode: String },
    /// Set a device's HYBRID rectangle, in percent of the frame.
    Rect {
        id: String,
        x1: f64,
        y1: f64,
        x2: f64,
        y2: f64,
    },
}

/// The config file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub source: Option<String>,
    pub size: Option<String>,
    pub fps: Option<u32>,
    pub device_id: Option<String>,
    #[serde(default)]
    pub video: VideoFile,
    #[serde(default)]
    pub webrtc: WebRtcFile,
    #[serde(default)]
    pub control: ControlFile,
    #[serde(default)]
    pub roi: RoiFile,
    #[serde(default)]
    pub mqtt: MqttFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoFile {
    pub encoder: Option<String>,
    pub context_width: Option<u32>,
    pub context_kbps: Option<u32>,
    pub source_kbps: Option<u32>,
    pub keyframe_interval_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebRtcFile {
    pub max_viewers: Option<usize>,
    pub udp_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlFile {
    pub mode: Option<String>,
    pub hybrid_rect: Option<Rect>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoiFile {
    pub kind: Option<String>,
    pub model: Option<PathBuf>,
    pub labels: Option<Vec<String>>,
    pub threshold: Option<f32>,
    pub fps: Option<f64>,
    pub margin_percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttFile {
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub prefix: Option<String>,
    pub name: Option<String>,
    pub advertise: Option<String>,
    pub keep_alive_s: Option<u64>,
    pub stats_interval_s: Option<f64>,
    pub home_assistant: Option<bool>,
}

/// Resolved, validated settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// What to capture.
    pub source: SourceSpec,
    /// Main image size.
    pub size: (u32, u32),
    /// Whether `size` was given (a file is then scaled to it).
    pub size_given: bool,
    /// Capture and encode rate for the test source.
    pub fps: u32,
    pub video: VideoSettings,
    pub webrtc: WebRtcSettings,
    /// Mode at start-up.
    pub mode: Mode,
    /// HYBRID rectangle at start-up.
    pub hybrid_rect: Option<Rect>,
    pub roi: RoiSettings,
    /// The MQTT control plane, when a broker URL is configured.
    pub mqtt: Option<MqttSettings>,
    /// Device id (MQTT topics, registration).
    pub device_id: String,
}

/// How to reach the MQTT broker and what to tell it (`[mqtt]`; off without a URL).
#[derive(Clone, Debug, PartialEq)]
pub struct MqttSettings {
    pub broker: Broker,
    /// TLS files (PEM); without `ca_file` the system's roots are trusted.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, both or neither.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    /// First level of every topic (`focusd`).
    pub prefix: String,
    /// Human name in the registration (the device id unless set).
    pub name: String,
    /// Host or address put into the URLs of the registration (first non-loopback address
    /// unless set).
    pub advertise: Option<String>,
    pub keep_alive: std::time::Duration,
    /// How often `stats` is published.
    pub stats_interval: std::time::Duration,
    /// Publish Home Assistant discovery messages.
    pub home_assistant: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VideoSettings {
    /// Which encoder both tracks use.
    pub encoder: EncoderSpec,
    /// Width of the context (lores) track; height follows the main aspect ratio.
    pub context_width: u32,
    /// Target bitrate of the context track, kbit/s.
    pub context_kbps: u32,
    /// Target bitrate of the source track, kbit/s.
    pub source_kbps: u32,
    /// Seconds between periodic keyframes.
    pub keyframe_interval_s: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WebRtcSettings {
    /// Viewers served at once; one more gets 503.
    pub max_viewers: usize,
    /// UDP port for media (0 = any free port).
    pub udp_port: u16,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RoiSettings {
    /// Which detector finds the ROI.
    pub kind: DetectorKind,
    /// Model file for `kind = model`; `None` is the built-in person detector.
    pub model: Option<PathBuf>,
    /// Model labels to keep.
    pub labels: Vec<String>,
    /// Score a model detection needs, 0–1.
    pub threshold: f32,
    /// How often the detector looks at a frame (its rate).
    pub fps: f64,
    /// Margin added around each detection, percent of the frame width.
    pub margin_percent: f64,
}

/// Which ROI detector runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectorKind {
    /// Background subtraction on the lores frame.
    Motion,
    /// Motion proposes, a detection model confirms.
    Model,
    /// No detector: the ROI stays empty (VISION sends only the stamp band).
    Off,
}

impl DetectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::Motion => "motion",
            DetectorKind::Model => "model",
            DetectorKind::Off => "off",
        }
    }
}

/// A configuration value that cannot be used. Displays as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid config `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

fn bad<T>(key: &str, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        key: key.into(),
        reason: reason.into(),
    })
}

impl Default for Settings {
    fn default() -> Self {
        Settings::resolve(&Flags::parse_from(["focusd"]), FileConfig::default())
            .expect("the built-in defaults are valid")
    }
}

impl Settings {
    /// Reads the config file named by `flags` (if any) and resolves.
    pub fn load(flags: &Flags) -> Result<Settings, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Settings::resolve(flags, file)
    }

    /// Resolves flags over file values over defaults, validating each.
    pub fn resolve(flags: &Flags, file: FileConfig) -> Result<Settings, ConfigError> {
        let listen = flags
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "0.0.0.0:8888".into());
        let listen: SocketAddr = match listen.parse() {
            Ok(a) => a,
            Err(_) => {
                return bad(
                    "listen",
                    format!("`{listen}` is not ADDR:PORT, e.g. 0.0.0.0:8888"),
                );
            }
        };
        let source = flags
            .source
            .clone()
            .or(file.source)
            .unwrap_or_else(|| "auto".into());
        let source: SourceSpec = match source.parse() {
            Ok(s) => s,
            Err(e) => return bad("source", e),
        };
        let size_text = flags.size.clone().or(file.size);
        let size_given = size_text.is_some();
        let size = parse_size(size_text.as_deref().unwrap_or("1280x720"))?;
        let fps = flags.fps.or(file.fps).unwrap_or(30);
        if !(1..=120).contains(&fps) {
            return bad("fps", format!("{fps} is outside 1..=120"));
        }
        let encoder = flags
            .encoder
            .clone()
            .or(file.video.encoder)
            .unwrap_or_else(|| "auto".into());
        let encoder: EncoderSpec = match encoder.parse() {
            Ok(e) => e,
            Err(e) => return bad("video.encoder", e),
        };
        let video = VideoSettings {
            encoder,
            context_width: file.video.context_width.unwrap_or(320),
            context_kbps: file.video.context_kbps.unwrap_or(300),
            source_kbps: file.video.source_kbps.unwrap_or(2500),
            keyframe_interval_s: file.video.keyframe_interval_s.unwrap_or(2.0),
        };
        if video.context_width < 16 || video.context_width % 2 == 1 || video.context_width > size.0
        {
            return bad(
                "video.context_width",
                format!(
                    "{} must be even, at least 16 and at most the main width {}",
                    video.context_width, size.0
                ),
            );
        }
        for (key, kbps) in [
            ("video.context_kbps", video.context_kbps),
            ("video.source_kbps", video.source_kbps),
        ] {
            if !(20..=100_000).contains(&kbps) {
                return bad(key, format!("{kbps} kbit/s is outside 20..=100000"));
            }
        }
        if !(0.1..=60.0).contains(&video.keyframe_interval_s) {
            return bad(
                "video.keyframe_interval_s",
                "must be between 0.1 and 60 seconds",
            );
        }
        let webrtc = WebRtcSettings {
            max_viewers: file.webrtc.max_viewers.unwrap_or(16),
            udp_port: file.webrtc.udp_port.unwrap_or(0),
        };
        if !(1..=256).contains(&webrtc.max_viewers) {
            return bad(
                "webrtc.max_viewers",
                format!("{} is outside 1..=256", webrtc.max_viewers),
            );
        }
        let mode = match file.control.mode.as_deref() {
            None => Mode::High,
            Some(m) => match Mode::parse(m) {
                Some(m) => m,
                None => {
                    return bad(
                        "control.mode",
                        format!("unknown mode `{m}`: use LOW, HIGH, VISION or HYBRID"),
                    );
                }
            },
        };
        let hybrid_rect = match file.control.hybrid_rect {
            None => None,
            Some(r) => match r.validated() {
                Ok(r) => Some(r),
                Err(e) => return bad("control.hybrid_rect", e.0),
            },
        };
        let kind = match file.roi.kind.as_deref() {
            None | Some("motion") => DetectorKind::Motion,
            Some("model") => DetectorKind::Model,
            Some("off") => DetectorKind::Off,
            Some(k) => {
                return bad(
                    "roi.kind",
                    format!("unknown kind `{k}`: use motion, model or off"),
                );
            }
        };
        let roi = RoiSettings {
            kind,
            model: file.roi.model,
            labels: file.roi.labels.unwrap_or_else(|| vec!["person".into()]),
            threshold: file.roi.threshold.unwrap_or(0.5),
            // The model costs tens of milliseconds a crop: 5 looks a second is plenty.
            fps: file.roi.fps.unwrap_or(if kind == DetectorKind::Model {
                5.0
            } else {
                15.0
            }),
            // A model's box already spans the person; motion's cells lag a moving object.
            margin_percent: file
                .roi
                .margin_percent
                .unwrap_or(if kind == DetectorKind::Model {
                    1.0
                } else {
                    4.0
                }),
        };
        if !(0.05..=1.0).contains(&roi.threshold) {
            return bad("roi.threshold", "must be between 0.05 and 1");
        }
        if roi.labels.is_empty() || roi.labels.iter().any(|l| l.trim().is_empty()) {
            return bad("roi.labels", "must list at least one non-empty label");
        }
        if let Some(model) = &roi.model
            && kind != DetectorKind::Model
        {
            return bad(
                "roi.model",
                format!("{} is set but roi.kind is not `model`", model.display()),
            );
        }
        if !(0.5..=120.0).contains(&roi.fps) {
            return bad("roi.fps", "must be between 0.5 and 120");
        }
        if !(0.0..=50.0).contains(&roi.margin_percent) {
            return bad("roi.margin_percent", "must be between 0 and 50");
        }
        let device_id = flags
            .device_id
            .clone()
            .or(file.device_id)
            .unwrap_or_else(default_device_id);
        if device_id.is_empty()
            || device_id.len() > 64
            || !device_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad(
                "device_id",
                format!("`{device_id}` must be 1-64 characters of A-Z a-z 0-9 - _"),
            );
        }
        let mqtt = resolve_mqtt(flags.mqtt.as_deref(), file.mqtt, &device_id)?;
        Ok(Settings {
            listen,
            source,
            size,
            size_given,
            fps,
            video,
            webrtc,
            mode,
            hybrid_rect,
            roi,
            mqtt,
            device_id,
        })
    }
}

pub(crate) fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return bad("config", format!("cannot read {}: {e}", path.display())),
    };
    toml::from_str(&text).or_else(|e: toml::de::Error| {
        // toml's message spans lines (it quotes the source); keep the first, name the key.
        let first = e
            .message()
            .lines()
            .next()
            .unwrap_or("parse error")
            .to_string();
        let key = e
            .span()
            .map(|s| key_at(&text, s.start))
            .unwrap_or_else(|| "config".into());
        bad(&key, first)
    })
}

/// The dotted key whose value starts at byte `pos` of `text` (best effort, for messages).
fn key_at(text: &str, pos: usize) -> String {
    let mut table = String::new();
    let mut key = String::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            table = trimmed
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            // An error on a table header is about the table, not the last key before it.
            key.clear();
        } else if let Some((k, _)) = trimmed.split_once('=') {
            key = k.trim().to_string();
        }
        offset += line.len();
        if offset > pos {
            break;
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "config".into(),
        (false, true) => table,
        (true, false) => key,
        (false, false) => format!("{table}.{key}"),
    }
}

fn parse_size(s: &str) -> Result<(u32, u32), ConfigError> {
    let parsed = s
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((w, h))
            if (16..=4096).contains(&w) && (16..=4096).contains(&h) && w % 2 == 0 && h % 2 == 0 =>
        {
            Ok((w, h))
        }
        Some(_) => bad(
            "size",
            format!("`{s}`: width and height must be even and within 16..=4096"),
        ),
        None => bad("size", format!("`{s}` is not WxH, e.g. 1280x720")),
    }
}

pub(crate) fn resolve_mqtt(
    flag_url: Option<&str>,
    file: MqttFile,
    device_id: &str,
) -> Result<Option<MqttSettings>, ConfigError> {
    let (key, url) = match (flag_url, file.url.as_deref()) {
        (Some(u), _) => ("mqtt", u),
        (None, Some(u)) => ("mqtt.url", u),
        (None, None) => return Ok(None),
    };
    let mut broker = Broker::parse(url).or_else(|e| bad(key, e))?;
    if file.username.is_some() {
        broker.username = file.username;
    }
    if file.password.is_some() {
        broker.password = file.password;
    }
    if broker.password.is_some() && broker.username.is_none() {
        return bad("mqtt.password", "a password needs a username");
    }
    for (key, path) in [
        ("mqtt.ca_file", &file.ca_file),
        ("mqtt.cert_file", &file.cert_file),
        ("mqtt.key_file", &file.key_file),
    ] {
        if let Some(path) = path {
            if !broker.tls {
                return bad(key, "TLS files need an mqtts:// URL");
            }
            if let Err(e) = std::fs::File::open(path) {
                return bad(key, format!("cannot read {}: {e}", path.display()));
            }
        }
    }
    let client_auth = match (file.cert_file, file.key_file) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return bad("mqtt.key_file", "cert_file needs key_file"),
        (None, Some(_)) => return bad("mqtt.cert_file", "key_file needs cert_file"),
    };
    let prefix = file.prefix.unwrap_or_else(|| "focusd".into());
    if prefix.is_empty() || prefix.contains(['+', '#']) || prefix.starts_with('/') {
        return bad(
            "mqtt.prefix",
            format!("`{prefix}` must be a topic level without + # or a leading /"),
        );
    }
    let keep_alive = file.keep_alive_s.unwrap_or(15);
    if !(5..=3600).contains(&keep_alive) {
        return bad("mqtt.keep_alive_s", "must be between 5 and 3600");
    }
    let stats = file.stats_interval_s.unwrap_or(10.0);
    if !(0.1..=3600.0).contains(&stats) {
        return bad("mqtt.stats_interval_s", "must be between 0.1 and 3600");
    }
    Ok(Some(MqttSettings {
        broker,
        ca_file: file.ca_file,
        client_auth,
        prefix: prefix.trim_end_matches('/').to_string(),
        name: file.name.unwrap_or_else(|| device_id.to_string()),
        advertise: file.advertise,
        keep_alive: std::time::Duration::from_secs(keep_alive),
        stats_interval: std::time::Duration::from_secs_f64(stats),
        home_assistant: file.home_assistant.unwrap_or(false),
    }))
}

fn default_device_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let id: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() { "focusd".into() } else { id }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::parse_from(std::iter::once("focusd").chain(args.iter().copied()))
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = Settings::default();
        assert_eq!(s.listen, "0.0.0.0:8888".parse().unwrap());
        assert_eq!(s.size, (1280, 720));
        assert!(!s.size_given);
        assert_eq!(s.fps, 30);
        assert_eq!(s.source, SourceSpec::Auto);
        assert_eq!(s.video.encoder, EncoderSpec::Auto);
        assert_eq!(s.video.context_width, 320);
        assert_eq!(s.mqtt, None);
    }

    #[test]
    fn a_repeated_table_is_named_not_the_key_before_it() {
        let dir = std::env::temp_dir().join(format!("focusd-dup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dup.toml");
        std::fs::write(
            &path,
            "[roi]\nfps = 10\n[video]\ncontext_kbps = 300\n[video]\n",
        )
        .unwrap();
        let err = read_file(&path).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(err.key, "video", "{err}");
    }

    #[test]
    fn mqtt_settings_resolve_and_name_the_bad_key() {
        let ok = Settings::resolve(
            &flags(&["--device-id", "cam-9"]),
            file("[mqtt]\nurl = \"mqtt://u:p@broker:1999\"\nstats_interval_s = 2\n"),
        )
        .unwrap();
        let m = ok.mqtt.unwrap();
        assert_eq!((m.broker.host.as_str(), m.broker.port), ("broker", 1999));
        assert_eq!(m.broker.username.as_deref(), Some("u"));
        assert_eq!((m.prefix.as_str(), m.name.as_str()), ("focusd", "cam-9"));
        assert_eq!(m.stats_interval, std::time::Duration::from_secs(2));
        assert!(!m.home_assistant);
        let flag_wins = Settings::resolve(
            &flags(&["--mqtt", "mqtts://other"]),
            file("[mqtt]\nurl = \"mqtt://broker\"\n"),
        )
        .unwrap();
        assert!(flag_wins.mqtt.unwrap().broker.tls);
        for (text, key) in [
            ("[mqtt]\nurl = \"tcp://b\"\n", "mqtt.url"),
            (
                "[mqtt]\nurl = \"mqtt://b\"\npassword = \"x\"\n",
                "mqtt.password",
            ),
            (
                "[mqtt]\nurl = \"mqtt://b\"\nca_file = \"/etc/hostname\"\n",
                "mqtt.ca_file",
            ),
            (
                "[mqtt]\nurl = \"mqtts://b\"\nca_file = \"/nonexistent.pem\"\n",
                "mqtt.ca_file",
            ),
            (
                "[mqtt]\nurl = \"mqtts://b\"\ncert_file = \"/etc/hostname\"\n",
                "mqtt.key_file",
            ),
            (
                "[mqtt]\nurl = \"mqtt://b\"\nprefix = \"a/#\"\n",
                "mqtt.prefix",
            ),
            (
                "[mqtt]\nurl = \"mqtt://b\"\nkeep_alive_s = 1\n",
                "mqtt.keep_alive_s",
            ),
            (
                "[mqtt]\nurl = \"mqtt://b\"\nstats_interval_s = 0\n",
                "mqtt.stats_interval_s",
            ),
        ] {
            let err = Settings::resolve(&flags(&[]), file(text)).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
    }

    #[test]
    fn the_packaged_config_spells_out_the_built_in_defaults() {
        // The .deb installs this file as /etc/focusd/focusd.toml: it must parse, and it
        // must not change behaviour from a daemon started without it.
        let shipped = file(include_str!("../../packaging/focusd.toml"));
        let s = Settings::resolve(&flags(&[]), shipped).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn flags_override_file() {
        let f = file("size = \"640x360\"\nfps = 15\n[video]\nsource_kbps = 900\n");
        let s = Settings::resolve(&flags(&["--fps", "25", "--source", "test"]), f).unwrap();
        assert_eq!(s.fps, 25);
        assert_eq!(s.size, (640, 360));
        assert!(s.size_given);
        assert_eq!(s.video.source_kbps, 900);
        assert_eq!(s.source, SourceSpec::Test);
        let f = file("[video]\nencoder = \"gst:x264enc\"\n");
        let s = Settings::resolve(&flags(&["--encoder", "openh264"]), f).unwrap();
        assert_eq!(s.video.encoder, EncoderSpec::OpenH264);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: [(&[&str], &str, &str); 9] = [
            (&["--size", "1280"], "", "size"),
            (&["--size", "1281x720"], "", "size"),
            (&["--fps", "0"], "", "fps"),
            (&["--listen", "localhost"], "", "listen"),
            (&["--source", "webcam"], "", "source"),
            (&["--encoder", "x265"], "", "video.encoder"),
            (&[], "[video]\nencoder = \"gst:\"\n", "video.encoder"),
            (&["--mqtt", "http://x"], "", "mqtt"),
            (&[], "[control]\nmode = \"ULTRA\"\n", "control.mode"),
        ];
        for (args, text, key) in cases {
            let err = Settings::resolve(&flags(args), file(text)).unwrap_err();
            assert_eq!(err.key, key, "{args:?} {text}");
            assert!(!err.to_string().contains('\n'));
        }
        let err = Settings::resolve(&flags(&[]), file("[webrtc]\nmax_viewers = 0\n")).unwrap_err();
        assert_eq!(err.key, "webrtc.max_viewers");
        let err = Settings::resolve(
            &flags(&[]),
            file("[control]\nhybrid_rect = { x1 = 50, y1 = 0, x2 = 10, y2 = 10 }\n"),
        )
        .unwrap_err();
        assert_eq!(err.key, "control.hybrid_rect");
    }

    #[test]
    fn file_errors_are_one_line_with_key() {
        let dir = std::env::temp_dir().join(format!("focusd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "fps = 30\n[video]\nsource_kbps = \"lots\"\n").unwrap();
        let err = Settings::load(&flags(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert_eq!(err.key, "video.source_kbps", "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
        std::fs::write(&path, "colour = \"blue\"\n").unwrap();
        let err = Settings::load(&flags(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = Settings::load(&flags(&["--config", "/nonexistent/focusd.toml"])).unwrap_err();
        assert_eq!(err.key, "config");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
