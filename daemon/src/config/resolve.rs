//! Flags over file values over built-in defaults, one resolver per section, each value
//! checked; an error names its key.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use focusd_board::encode::EncoderSpec;
use focusd_board::source::SourceSpec;

use super::file::{
    AuthFile, ControlFile, HttpFile, Listen, MqttFile, RelayFile, RoiFile, RtspFile, Size,
    VideoFile, WebRtcFile, WhipFile,
};
use super::settings::DEFAULT_RTSP_PORT;
use super::{
    AuthMode, AuthSettings, ConfigError, DetectorKind, FileConfig, Flags, HttpSettings,
    MqttSettings, RelaySettings, RoiSettings, RtspSettings, Settings, VideoSettings,
    WebRtcSettings, WhipSettings, bad, read_file,
};
use crate::config::Broker;
use crate::state::command::{Mode, Rect};

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
}

impl Settings {
    /// Resolves flags over file values over defaults, section by section.
    pub fn resolve(flags: &Flags, file: FileConfig) -> Result<Settings, ConfigError> {
        let listen = match &flags.listen {
            Some(text) => from_flag::<Listen>("listen", text)?,
            None => file.listen.unwrap_or(Listen(([0, 0, 0, 0], 8888).into())),
        };
        let source = match &flags.source {
            Some(text) => from_flag("source", text)?,
            None => file.source.unwrap_or(SourceSpec::Auto),
        };
        let size = match &flags.size {
            Some(text) => Some(from_flag::<Size>("size", text)?),
            None => file.size,
        };
        let fps = flags.fps.or(file.fps).unwrap_or(30);
        if !(1..=120).contains(&fps) {
            return bad("fps", format!("{fps} is outside 1..=120"));
        }
        let Size(width, height) = size.unwrap_or(Size(1280, 720));
        let encoder = match &flags.encoder {
            Some(text) => Some(from_flag("video.encoder", text)?),
            None => None,
        };
        let device_id = device_id(flags.device_id.clone().or(file.device_id))?;
        let mqtt = resolve_mqtt(flags.mqtt.as_deref(), file.mqtt, &device_id)?;
        let (mode, hybrid_rect) = control(file.control)?;
        Ok(Settings {
            listen: listen.0,
            source,
            size: (width, height),
            size_given: size.is_some(),
            fps,
            video: video(encoder, file.video, width)?,
            webrtc: webrtc(file.webrtc)?,
            mode,
            hybrid_rect,
            roi: roi(file.roi)?,
            mqtt,
            device_id,
            http: http(file.http)?,
            auth: auth(flags, file.auth)?,
            relay: relay(file.relay)?,
            whip: whip(file.whip)?,
            rtsp: rtsp(file.rtsp)?,
        })
    }
}

/// A flag's text read as `T`; an error names `key`.
fn from_flag<T>(key: &str, text: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    text.parse().or_else(|e: T::Err| bad(key, e.to_string()))
}

/// `[video]`, with `--encoder` over `video.encoder`; the context is at most `main_width`.
fn video(
    encoder: Option<EncoderSpec>,
    file: VideoFile,
    main_width: u32,
) -> Result<VideoSettings, ConfigError> {
    let video = VideoSettings {
        encoder: encoder.or(file.encoder).unwrap_or_default(),
        context_width: file.context_width.unwrap_or(320),
        context_kbps: file.context_kbps.unwrap_or(300),
        source_kbps: file.source_kbps.unwrap_or(2500),
        keyframe_interval_s: file.keyframe_interval_s.unwrap_or(2.0),
        temporal_layers: file.temporal_layers.unwrap_or(1),
    };
    if video.context_width < 16 || video.context_width % 2 == 1 || video.context_width > main_width
    {
        return bad(
            "video.context_width",
            format!(
                "{} must be even, at least 16 and at most the main width {main_width}",
                video.context_width
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
    if !(1..=2).contains(&video.temporal_layers) {
        return bad(
            "video.temporal_layers",
            format!("{} is not 1 or 2", video.temporal_layers),
        );
    }
    Ok(video)
}

/// `[relay]`: each destination `host:port` with a port below 65535 (its RTCP goes one
/// up); a state stream alone relays nothing worth watching.
fn relay(file: RelayFile) -> Result<Option<RelaySettings>, ConfigError> {
    for (key, value) in [
        ("relay.context", &file.context),
        ("relay.source", &file.source),
        ("relay.state", &file.state),
    ] {
        let Some(value) = value else { continue };
        let port = value
            .rsplit_once(':')
            .map(|(host, p)| (host, p.parse::<u16>()));
        if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && (1..65535).contains(&p)) {
            return bad(key, format!("`{value}` is not host:port (port 1..65534)"));
        }
    }
    match file {
        RelayFile {
            context: None,
            source: None,
            state: None,
        } => Ok(None),
        RelayFile {
            context: None,
            source: None,
            state: Some(_),
        } => bad(
            "relay.state",
            "a state stream needs a context or source track",
        ),
        RelayFile {
            context,
            source,
            state,
        } => Ok(Some(RelaySettings {
            context,
            source,
            state,
        })),
    }
}

/// `[rtsp]`: a port, `0` (off) or `"any"`; a port other than off needs a build with the
/// RTSP server.
fn rtsp(file: RtspFile) -> Result<RtspSettings, ConfigError> {
    let port = match &file.port {
        None => Some(DEFAULT_RTSP_PORT),
        Some(toml::Value::Integer(0)) => None,
        Some(toml::Value::String(word)) if word == "any" => Some(0),
        Some(value) => match value.as_integer().map(u16::try_from) {
            Some(Ok(port)) => Some(port),
            _ => {
                return bad(
                    "rtsp.port",
                    format!("{value} is not a port: 1 to 65535, 0 (off) or \"any\""),
                );
            }
        },
    };
    if port.is_some() && file.port.is_some() && !cfg!(feature = "gstreamer") {
        return bad(
            "rtsp.port",
            "RTSP is not enabled in this build (rebuild with --features gstreamer), or set 0",
        );
    }
    Ok(RtspSettings {
        port,
        configured: file.port.is_some(),
    })
}

/// `[whip]`: an `http://` or `https://` URL with a host; a token of visible characters.
fn whip(file: WhipFile) -> Result<Option<WhipSettings>, ConfigError> {
    let Some(url) = file.url else {
        if file.token.is_some() {
            return bad("whip.token", "a token without a url");
        }
        return Ok(None);
    };
    let uri: hyper::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return bad("whip.url", format!("`{url}`: {e}")),
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return bad(
            "whip.url",
            format!("`{url}` is not an http:// or https:// URL"),
        );
    }
    if let Some(token) = &file.token
        && (token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()))
    {
        return bad("whip.token", "must be visible ASCII characters, no spaces");
    }
    Ok(Some(WhipSettings {
        url: uri,
        token: file.token,
    }))
}

/// `[webrtc]`.
fn webrtc(file: WebRtcFile) -> Result<WebRtcSettings, ConfigError> {
    let keyframe_request_interval_s = file.keyframe_request_interval_s.unwrap_or(1.0);
    if !(0.1..=60.0).contains(&keyframe_request_interval_s) {
        return bad(
            "webrtc.keyframe_request_interval_s",
            format!("{keyframe_request_interval_s} is outside 0.1..=60"),
        );
    }
    let webrtc = WebRtcSettings {
        max_viewers: file.max_viewers.unwrap_or(16),
        udp_port: file.udp_port.unwrap_or(0),
        low_latency_playout: file.low_latency_playout.unwrap_or(true),
        adaptive_delivery: file.adaptive_delivery.unwrap_or(true),
        keyframe_request_interval: Duration::from_secs_f64(keyframe_request_interval_s),
        ice_servers: file.ice_servers,
        advertise: file.advertise,
        stun_server: file.stun_server,
    };
    for name in &webrtc.advertise {
        let plausible = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !plausible {
            return bad(
                "webrtc.advertise",
                format!("`{name}` is neither an IP address nor a host name"),
            );
        }
    }
    if let Some(server) = &webrtc.stun_server {
        let port = server.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
        if !matches!(port, Some(Ok(p)) if p > 0) {
            return bad("webrtc.stun_server", format!("`{server}` is not host:port"));
        }
    }
    for server in &webrtc.ice_servers {
        if server.urls.is_empty() {
            return bad("webrtc.ice_servers", "a server without urls".to_string());
        }
        for url in &server.urls {
            let scheme = url.split(':').next().unwrap_or_default();
            if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
                return bad(
                    "webrtc.ice_servers",
                    format!("`{url}` is not a stun:, stuns:, turn: or turns: URL"),
                );
            }
            if scheme.starts_with("turn") && server.username.is_none() {
                return bad(
                    "webrtc.ice_servers",
                    format!("`{url}` is a TURN server without a username and credential"),
                );
            }
        }
    }
    if !(1..=256).contains(&webrtc.max_viewers) {
        return bad(
            "webrtc.max_viewers",
            format!("{} is outside 1..=256", webrtc.max_viewers),
        );
    }
    Ok(webrtc)
}

/// `[http]`.
fn http(file: HttpFile) -> Result<HttpSettings, ConfigError> {
    let max_connections = file.max_connections.unwrap_or(256);
    if !(8..=8192).contains(&max_connections) {
        return bad(
            "http.max_connections",
            format!("{max_connections} is outside 8..=8192"),
        );
    }
    let reserved_connections = file.reserved_connections.unwrap_or(max_connections / 8);
    if reserved_connections >= max_connections {
        return bad(
            "http.reserved_connections",
            format!(
                "{reserved_connections} must be below http.max_connections ({max_connections})"
            ),
        );
    }
    let seconds = |key: &str, v: Option<f64>| match v.unwrap_or(10.0) {
        s if (0.5..=600.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        s => bad(key, format!("{s} s is outside 0.5..=600")),
    };
    let tls = match (file.cert_file, file.key_file) {
        (Some(c), Some(k)) => {
            for (key, path) in [("http.cert_file", &c), ("http.key_file", &k)] {
                if let Err(e) = std::fs::File::open(path) {
                    return bad(key, format!("cannot read {}: {e}", path.display()));
                }
            }
            Some((c, k))
        }
        (None, None) => None,
        (Some(_), None) => return bad("http.key_file", "cert_file needs key_file"),
        (None, Some(_)) => return bad("http.cert_file", "key_file needs cert_file"),
    };
    let mut allowed_origins = Vec::new();
    for origin in file.allowed_origins.unwrap_or_default() {
        allowed_origins.push(origin_of(&origin).or_else(|e| bad("http.allowed_origins", e))?);
    }
    let mut allowed_hosts = Vec::new();
    for host in file.allowed_hosts.unwrap_or_default() {
        let valid = host == "*"
            || (!host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        if !valid {
            return bad(
                "http.allowed_hosts",
                format!("`{host}` is not a host name (without port) or *"),
            );
        }
        allowed_hosts.push(host.to_ascii_lowercase());
    }
    Ok(HttpSettings {
        max_connections,
        reserved_connections,
        header_timeout: seconds("http.header_timeout_s", file.header_timeout_s)?,
        body_timeout: seconds("http.body_timeout_s", file.body_timeout_s)?,
        tls,
        allowed_origins,
        allowed_hosts,
    })
}

/// A web origin as browsers send it: `scheme://host[:port]`, lower case, no path.
fn origin_of(text: &str) -> Result<String, String> {
    let origin = text.trim_end_matches('/').to_ascii_lowercase();
    let valid = match origin.split_once("://") {
        Some(("http" | "https", rest)) => {
            !rest.is_empty() && !rest.contains(['/', '?', '#', '@', '*', ' '])
        }
        _ => false,
    };
    if valid {
        Ok(origin)
    } else {
        Err(format!(
            "`{text}` is not an origin like https://dash.example:8443 (no wildcards: name each)"
        ))
    }
}

/// `[auth]`, with `FOCUSD_TOKEN` / `FOCUSD_VIEW_TOKEN` over the file.
fn auth(flags: &Flags, file: AuthFile) -> Result<AuthSettings, ConfigError> {
    // Every value given is checked, also one the environment overrides.
    for (key, t) in [
        ("auth.token", &file.token),
        ("auth.view_token", &file.view_token),
        ("FOCUSD_TOKEN", &flags.token_env),
        ("FOCUSD_VIEW_TOKEN", &flags.view_token_env),
    ] {
        if let Some(t) = t {
            check_token(t).or_else(|e| bad(key, e))?;
        }
    }
    let token = flags.token_env.clone().or(file.token);
    let view_token = flags.view_token_env.clone().or(file.view_token);
    if view_token.is_some() && view_token == token {
        return bad("auth.view_token", "must differ from auth.token");
    }
    Ok(AuthSettings {
        mode: file.mode.unwrap_or(AuthMode::Token),
        token,
        view_token,
        token_file: file.token_file.unwrap_or_else(default_token_file),
    })
}

/// A token goes into headers and URLs: 16 to 256 URL-safe characters.
pub fn check_token(t: &str) -> Result<(), String> {
    let safe = t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'));
    if (16..=256).contains(&t.len()) && safe {
        Ok(())
    } else {
        Err("a token must be 16 to 256 characters of A-Z a-z 0-9 - _ . ~".into())
    }
}

/// The state directory systemd gives the service (`StateDirectory=`), else the user's
/// (`$XDG_STATE_HOME/focusd`, `~/.local/state/focusd`).
fn default_token_file() -> PathBuf {
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = if let Some(dirs) = std::env::var("STATE_DIRECTORY")
        .ok()
        .filter(|v| !v.is_empty())
    {
        // Several directories are separated by colons; the first is ours.
        PathBuf::from(dirs.split(':').next().unwrap_or(&dirs))
    } else if let Some(state) = env("XDG_STATE_HOME") {
        state.join("focusd")
    } else if let Some(home) = env("HOME") {
        home.join(".local/state/focusd")
    } else {
        PathBuf::from("focusd-state")
    };
    dir.join("token")
}

/// `[control]`: the mode and rectangle at start-up.
fn control(file: ControlFile) -> Result<(Mode, Option<Rect>), ConfigError> {
    let hybrid_rect = match file.hybrid_rect {
        None => None,
        Some(r) => match r.validated() {
            Ok(r) => Some(r),
            Err(e) => return bad("control.hybrid_rect", e.0),
        },
    };
    Ok((file.mode.unwrap_or(Mode::High), hybrid_rect))
}

/// `[roi]`: the detector, with defaults that depend on its kind.
fn roi(file: RoiFile) -> Result<RoiSettings, ConfigError> {
    let kind = file.kind.unwrap_or(DetectorKind::Motion);
    let model = kind == DetectorKind::Model;
    let roi = RoiSettings {
        kind,
        model: file.model,
        labels: file.labels.unwrap_or_else(|| {
            ["person", "vehicle", "bicycle", "animal"]
                .map(String::from)
                .to_vec()
        }),
        // The built-in detector scores the people of a street scene and of photos 0.35-0.6.
        threshold: file.threshold.unwrap_or(0.35),
        // The model runs within its CPU budget; between its runs the tracker's predictions
        // move the boxes on, at this rate.
        fps: file.fps.unwrap_or(if model { 10.0 } else { 15.0 }),
        // A model's box already spans the object; motion's cells lag a moving object.
        margin_percent: file.margin_percent.unwrap_or(if model { 1.0 } else { 4.0 }),
        cpu_percent: file.cpu_percent.unwrap_or(20.0),
    };
    if !(0.05..=1.0).contains(&roi.threshold) {
        return bad("roi.threshold", "must be between 0.05 and 1");
    }
    if roi.labels.is_empty() || roi.labels.iter().any(|l| l.trim().is_empty()) {
        return bad("roi.labels", "must list at least one non-empty label");
    }
    if let Some(path) = &roi.model
        && !model
    {
        return bad(
            "roi.model",
            format!("{} is set but roi.kind is not `model`", path.display()),
        );
    }
    if !(0.5..=120.0).contains(&roi.fps) {
        return bad("roi.fps", "must be between 0.5 and 120");
    }
    if !(0.0..=50.0).contains(&roi.margin_percent) {
        return bad("roi.margin_percent", "must be between 0 and 50");
    }
    if !(1.0..=100.0).contains(&roi.cpu_percent) {
        return bad(
            "roi.cpu_percent",
            "must be between 1 and 100 (percent of one core)",
        );
    }
    Ok(roi)
}

/// The device id: given, else the host name made safe for a topic level.
fn device_id(given: Option<String>) -> Result<String, ConfigError> {
    let id = given.unwrap_or_else(default_device_id);
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return bad(
            "device_id",
            format!("`{id}` must be 1-64 characters of A-Z a-z 0-9 - _"),
        );
    }
    Ok(id)
}

/// `[mqtt]`, with `flag_url` (`--mqtt`, `ctl --broker`) over `mqtt.url`: off without
/// either. `device_id` names the device when `mqtt.name` does not.
pub fn resolve_mqtt(
    flag_url: Option<&str>,
    file: MqttFile,
    device_id: &str,
) -> Result<Option<MqttSettings>, ConfigError> {
    let mut broker = match (flag_url, file.url) {
        (Some(u), _) => from_flag::<Broker>("mqtt", u)?,
        (None, Some(b)) => b,
        (None, None) => return Ok(None),
    };
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
