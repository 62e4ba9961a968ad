//! The resolved settings: every value checked and defaulted. Nothing downstream sees a raw
//! value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use focusd_board::encode::EncoderSpec;
use focusd_board::source::SourceSpec;

use crate::config::Broker;
use crate::state::command::{Mode, Rect};
use crate::state::protocol::IceServer;

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
    /// The encoders (`[video]`).
    pub video: VideoSettings,
    /// The viewers (`[webrtc]`).
    pub webrtc: WebRtcSettings,
    /// Mode at start-up.
    pub mode: Mode,
    /// HYBRID rectangle at start-up.
    pub hybrid_rect: Option<Rect>,
    /// The ROI detector (`[roi]`).
    pub roi: RoiSettings,
    /// The MQTT control plane, when a broker URL is configured.
    pub mqtt: Option<MqttSettings>,
    /// Device id (MQTT topics, registration).
    pub device_id: String,
    /// The HTTP server's limits, TLS and the origins and hosts it answers (`[http]`).
    pub http: HttpSettings,
    /// Who may use the HTTP door (`[auth]`).
    pub auth: AuthSettings,
    /// Where the tracks are sent as RTP for a relay to fan out (`[relay]`); `None` when
    /// no destination is configured.
    pub relay: Option<RelaySettings>,
    /// Where both tracks are published by WHIP (`[whip]`); `None` without a URL.
    pub whip: Option<WhipSettings>,
    /// The RTSP door (`[rtsp]`).
    pub rtsp: RtspSettings,
}

/// The RTSP door (`[rtsp]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtspSettings {
    /// TCP port on the HTTP address's IP: `None` is off (`port = 0`), `Some(0)` a free
    /// port the system picks (`port = "any"`; [`crate::Daemon::rtsp_addr`] tells which).
    pub port: Option<u16>,
    /// Whether the port was configured: then a port that cannot be listened on stops the
    /// daemon; the default one only turns RTSP off, with a warning.
    pub configured: bool,
}

/// The RTSP door's port unless configured.
pub const DEFAULT_RTSP_PORT: u16 = 8554;

/// The WHIP door (`[whip]`): an SFU endpoint the daemon publishes both tracks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhipSettings {
    /// The endpoint (`http://` or `https://`), POSTed the offer.
    pub url: hyper::Uri,
    /// Sent as `Authorization: Bearer` when set.
    pub token: Option<String>,
}

/// The relay door (`[relay]`): each track's RTP destination as `host:port` (its RTCP on
/// the next port up), resolved when the daemon starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaySettings {
    /// Where the context track's RTP goes.
    pub context: Option<String>,
    /// Where the source track's RTP goes.
    pub source: Option<String>,
    /// Where the state messages go, one JSON text per datagram (a Janus data stream).
    pub state: Option<String>,
}

/// The HTTP server (`[http]`).
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSettings {
    /// Open connections at most; at the limit the longest idle one makes room.
    pub max_connections: usize,
    /// Of those, kept for `/healthz`, `/metrics` and signalling.
    pub reserved_connections: usize,
    /// How long a connection may take to send a request's headers (or stay idle between
    /// requests, or finish a TLS handshake) before it is closed.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive before 408.
    pub body_timeout: Duration,
    /// HTTPS: the certificate chain and the key (PEM); plain HTTP without.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Web origins (`https://dash.example:8443`) whose pages may call the API and
    /// signalling, besides the daemon's own pages.
    pub allowed_origins: Vec<String>,
    /// Host names the daemon answers to besides IP addresses, `localhost` and its host
    /// name (with `.local`); `*` answers any (behind a proxy that checks them).
    pub allowed_hosts: Vec<String>,
}

/// Who may use the HTTP door (`[auth]`).
#[derive(Clone, Debug, PartialEq)]
pub struct AuthSettings {
    /// `Token` unless the user switched it off.
    pub mode: AuthMode,
    /// The full-access token as configured (`[auth] token`, `FOCUSD_TOKEN`); `None`: the
    /// one kept in `token_file`, generated on first start.
    pub token: Option<String>,
    /// A second token that may watch and read but not command (`[auth] view_token`,
    /// `FOCUSD_VIEW_TOKEN`).
    pub view_token: Option<String>,
    /// Where the generated token is kept.
    pub token_file: PathBuf,
}

/// Whether requests need a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Every request but `/healthz` and the static viewer page needs a token.
    Token,
    /// Anyone who reaches the port may do anything (a warning says so at start).
    Off,
}

impl std::str::FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "token" => Ok(AuthMode::Token),
            "off" => Ok(AuthMode::Off),
            _ => Err(format!("unknown mode `{s}`: use token or off")),
        }
    }
}

/// How to reach the MQTT broker and what to tell it (`[mqtt]`; off without a URL).
#[derive(Clone, Debug, PartialEq)]
pub struct MqttSettings {
    /// Where the broker is, and the login.
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
    /// MQTT keep-alive: the broker says the last will after 1.5 times this in silence.
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
    /// Temporal layers the encoders make where they can (openh264), 1 or 2: with two, a
    /// viewer whose link cannot carry a track at full rate is sent every other frame of it
    /// (at the cost of ~0.3 dB and, in Chromium, a few ms of latency: one is the default).
    pub temporal_layers: u8,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WebRtcSettings {
    /// Viewers served at once; one more gets 503.
    pub max_viewers: usize,
    /// UDP port for media (0 = any free port).
    pub udp_port: u16,
    /// Whether viewers are asked to show each frame as soon as it is decoded (the
    /// `playout-delay` extension, at most 0.4 s), rather than smooth it out.
    pub low_latency_playout: bool,
    /// Whether the encoders follow the viewers' bandwidth estimates and a viewer whose
    /// link cannot carry the source is sent the context only (`doors::webrtc::delivery`).
    pub adaptive_delivery: bool,
    /// Viewers' keyframe requests (PLI/FIR) make a keyframe at most this often per track;
    /// a new viewer, or one stepped back up to the source, always gets one.
    pub keyframe_request_interval: Duration,
    /// STUN/TURN servers handed to the viewer page, for viewers behind NAT.
    pub ice_servers: Vec<IceServer>,
    /// Public addresses or names the media sockets are reached at (a port forward, a
    /// VPN), offered to viewers on each socket's port.
    pub advertise: Vec<String>,
    /// A STUN server (`host:port`) asked at start for the media sockets' public addresses.
    pub stun_server: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RoiSettings {
    /// Which detector finds the ROI.
    pub kind: DetectorKind,
    /// Model file for `kind = model`; `None` is the built-in object detector.
    pub model: Option<PathBuf>,
    /// Categories (`person`, `vehicle`...) or model classes to keep.
    pub labels: Vec<String>,
    /// Score a model detection needs, 0–1.
    pub threshold: f32,
    /// How often the detector looks at a frame (its rate).
    pub fps: f64,
    /// Margin added around each detection, percent of the frame width.
    pub margin_percent: f64,
    /// Share of one core the model may use, percent (it runs less often to stay within).
    pub cpu_percent: f64,
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
    /// Its name in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::Motion => "motion",
            DetectorKind::Model => "model",
            DetectorKind::Off => "off",
        }
    }
}

impl std::str::FromStr for DetectorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [DetectorKind::Motion, DetectorKind::Model, DetectorKind::Off]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind `{s}`: use motion, model or off"))
    }
}
