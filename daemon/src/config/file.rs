//! The config file's schema: every key optional, unknown keys refused, each value of its
//! own type, so a value that cannot be one is refused with the key named. The ranges and
//! the combinations are checked when resolving (see [`super::resolve`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use focusd_board::encode::EncoderSpec;
use focusd_board::source::SourceSpec;
use serde::{Deserialize, Deserializer};

use super::{ConfigError, DetectorKind, bad};
use crate::config::Broker;
use crate::state::command::{Mode, Rect};
use crate::state::protocol::IceServer;

/// Reads an optional string value through `T`'s `FromStr`, whose error becomes the
/// message (and the key is named by [`parse`]).
fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    Option::<String>::deserialize(d)?
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// An HTTP listen address, `ADDR:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen(pub SocketAddr);

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse()
            .map(Listen)
            .map_err(|_| format!("`{s}` is not ADDR:PORT, e.g. 0.0.0.0:8888"))
    }
}

/// A picture size, `WxH`: even, each side within 16..=4096.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u32, pub u32);

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = s.split_once(['x', 'X']).and_then(|(w, h)| {
            Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?))
        });
        match parsed {
            Some((w, h))
                if (16..=4096).contains(&w)
                    && (16..=4096).contains(&h)
                    && w % 2 == 0
                    && h % 2 == 0 =>
            {
                Ok(Size(w, h))
            }
            Some(_) => Err(format!(
                "`{s}`: width and height must be even and within 16..=4096"
            )),
            None => Err(format!("`{s}` is not WxH, e.g. 1280x720")),
        }
    }
}

/// The config file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default, deserialize_with = "parsed")]
    pub listen: Option<Listen>,
    #[serde(default, deserialize_with = "parsed")]
    pub source: Option<SourceSpec>,
    #[serde(default, deserialize_with = "parsed")]
    pub size: Option<Size>,
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
    #[serde(default)]
    pub http: HttpFile,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default)]
    pub relay: RelayFile,
    #[serde(default)]
    pub whip: WhipFile,
    #[serde(default)]
    pub rtsp: RtspFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspFile {
    /// A number (0 turns RTSP off) or `"any"` (a free port the system picks): read as any
    /// value so that a wrong one is told in the resolver's words.
    pub port: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    pub max_connections: Option<usize>,
    pub reserved_connections: Option<usize>,
    pub header_timeout_s: Option<f64>,
    pub body_timeout_s: Option<f64>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    #[serde(default, deserialize_with = "parsed")]
    pub mode: Option<super::AuthMode>,
    pub token: Option<String>,
    pub view_token: Option<String>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoFile {
    #[serde(default, deserialize_with = "parsed")]
    pub encoder: Option<EncoderSpec>,
    pub context_width: Option<u32>,
    pub context_kbps: Option<u32>,
    pub source_kbps: Option<u32>,
    pub keyframe_interval_s: Option<f64>,
    pub temporal_layers: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebRtcFile {
    pub max_viewers: Option<usize>,
    pub udp_port: Option<u16>,
    pub low_latency_playout: Option<bool>,
    pub adaptive_delivery: Option<bool>,
    pub keyframe_request_interval_s: Option<f64>,
    #[serde(default)]
    pub ice_servers: Vec<IceServer>,
    #[serde(default)]
    pub advertise: Vec<String>,
    pub stun_server: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipFile {
    pub url: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    pub context: Option<String>,
    pub source: Option<String>,
    pub state: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlFile {
    #[serde(default, deserialize_with = "parsed")]
    pub mode: Option<Mode>,
    pub hybrid_rect: Option<Rect>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoiFile {
    #[serde(default, deserialize_with = "parsed")]
    pub kind: Option<DetectorKind>,
    pub model: Option<PathBuf>,
    pub labels: Option<Vec<String>>,
    pub threshold: Option<f32>,
    pub fps: Option<f64>,
    pub margin_percent: Option<f64>,
    pub cpu_percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttFile {
    #[serde(default, deserialize_with = "parsed")]
    pub url: Option<Broker>,
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

/// Reads and parses the config file at `path`.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return bad("config", format!("cannot read {}: {e}", path.display())),
    };
    parse(&text)
}

/// Parses config text; an error names the key whose value is wrong.
pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).or_else(|e: toml::de::Error| {
        // toml's message spans lines (it quotes the source); keep the first, name the key.
        let first = e
            .message()
            .lines()
            .next()
            .unwrap_or("parse error")
            .to_string();
        let key = e
            .span()
            .map(|s| key_at(text, s.start))
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
