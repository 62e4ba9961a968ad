//! The command line, raw: what the user typed, before any check (see [`super::resolve`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// `FOCUSD_TOKEN` from the environment (never a flag: the process list would show
    /// it).
    #[arg(skip = env_secret("FOCUSD_TOKEN"))]
    pub token_env: Option<String>,
    /// `FOCUSD_VIEW_TOKEN` from the environment.
    #[arg(skip = env_secret("FOCUSD_VIEW_TOKEN"))]
    pub view_token_env: Option<String>,
    #[command(subcommand)]
    pub command: Option<Subcmd>,
}

/// A secret from the environment; unset and empty are the same.
fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[derive(Debug, Subcommand)]
pub enum Subcmd {
    /// Fleet console: list devices, watch them, change their mode or rectangle over MQTT.
    Ctl(CtlFlags),
    /// What this machine has: the board, video devices, encoders, the backends in this
    /// build, what focusd would use and why, and what is missing.
    Probe(ProbeFlags),
    /// Print the access token and the viewer URL with it (generating the token when
    /// there is none); `--rotate` replaces it. Without --config it reads
    /// /etc/focusd/focusd.toml when that exists (the service's token file).
    Token(TokenFlags),
}

#[derive(Debug, Args, Clone)]
pub struct TokenFlags {
    /// Generate a new token in place of the kept one: every client using the old one is
    /// refused from then on.
    #[arg(long)]
    pub rotate: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ProbeFlags {
    /// Print JSON, for scripts.
    #[arg(long)]
    pub json: bool,
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
