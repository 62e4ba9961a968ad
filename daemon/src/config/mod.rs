//! Configuration in two steps, as ripgrep does it: raw inputs ([`Flags`] from the command
//! line, [`FileConfig`] from TOML) are resolved into [`Settings`], where every value is
//! checked and defaulted. Nothing downstream sees a raw value.
//!
//! * [`flags`]: the command line (clap);
//! * [`file`]: the TOML schema, each value of its own type, and reading the file;
//! * [`resolve`]: one resolver per section, flags over the file over defaults;
//! * [`settings`]: what comes out;
//! * [`broker`]: `mqtt://` and `mqtts://` broker URLs.
//!
//! Precedence: command-line flag, then config file, then built-in default. Every error is
//! one line naming its key (exit status 2).

pub mod broker;
pub mod file;
pub mod flags;
pub mod resolve;
pub mod settings;

pub use broker::Broker;
pub use file::{FileConfig, MqttFile, read_file};
pub use flags::{CtlAction, CtlFlags, Flags, ProbeFlags, Subcmd, TokenFlags};
pub use resolve::resolve_mqtt;
pub use settings::{
    AuthMode, AuthSettings, DetectorKind, HttpSettings, MqttSettings, RelaySettings, RoiSettings,
    RtspSettings, Settings, VideoSettings, WebRtcSettings, WhipSettings,
};

/// A configuration value that cannot be used. Displays as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid config `{key}`: {reason}")]
pub struct ConfigError {
    /// The dotted key (`video.source_kbps`), or `config` for the file itself.
    pub key: String,
    /// What is wrong, in one line.
    pub reason: String,
}

fn bad<T>(key: &str, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        key: key.into(),
        reason: reason.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use focusd_board::encode::EncoderSpec;
    use focusd_board::source::SourceSpec;

    fn flags(args: &[&str]) -> Flags {
        Flags::parse_from(std::iter::once("focusd").chain(args.iter().copied()))
    }

    fn file(text: &str) -> FileConfig {
        file::parse(text).unwrap()
    }

    /// Settings from `args` over the config `text`, or the first error.
    fn settings(args: &[&str], text: &str) -> Result<Settings, ConfigError> {
        Settings::resolve(&flags(args), file::parse(text)?)
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
    fn rtsp_is_on_by_default_and_a_configured_port_needs_the_rtsp_server() {
        let s = Settings::default();
        assert_eq!((s.rtsp.port, s.rtsp.configured), (Some(8554), false));
        let off = settings(&[], "[rtsp]\nport = 0\n").unwrap();
        assert_eq!((off.rtsp.port, off.rtsp.configured), (None, true));
        for (toml, port) in [("9554", 9554), ("\"any\"", 0)] {
            let set = settings(&[], &format!("[rtsp]\nport = {toml}\n"));
            if cfg!(feature = "gstreamer") {
                assert_eq!(set.unwrap().rtsp.port, Some(port));
            } else {
                let e = set.unwrap_err();
                assert_eq!(e.key, "rtsp.port");
                assert!(e.to_string().contains("--features gstreamer"), "{e}");
            }
        }
        for bad in ["70000", "-1", "\"8554\"", "true"] {
            let e = settings(&[], &format!("[rtsp]\nport = {bad}\n")).unwrap_err();
            assert_eq!(e.key, "rtsp.port", "{bad}");
            assert!(e.to_string().contains("0 (off) or \"any\""), "{bad}: {e}");
        }
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
            let err = settings(&[], text).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
    }

    #[test]
    fn the_packaged_config_spells_out_the_built_in_defaults() {
        // The .deb installs this file as /etc/focusd/focusd.toml: it must parse, and it
        // must not change behaviour from a daemon started without it.
        let shipped = file(include_str!("../../../packaging/focusd.toml"));
        let s = Settings::resolve(&flags(&[]), shipped).unwrap();
        // Except the token file: it names the unit's state directory (the default under
        // systemd), so that `focusd token --config` run from a shell finds it too.
        let mut defaults = Settings::default();
        defaults.auth.token_file = "/var/lib/focusd/token".into();
        assert_eq!(s, defaults);
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
        let cases: [(&[&str], &str, &str); 31] = [
            (&["--size", "1280"], "", "size"),
            (&["--size", "1281x720"], "", "size"),
            (&["--fps", "0"], "", "fps"),
            (&["--listen", "localhost"], "", "listen"),
            (&["--source", "webcam"], "", "source"),
            (&["--encoder", "x265"], "", "video.encoder"),
            (&[], "[video]\nencoder = \"gst:\"\n", "video.encoder"),
            (&["--mqtt", "http://x"], "", "mqtt"),
            (&[], "[control]\nmode = \"ULTRA\"\n", "control.mode"),
            (&[], "listen = \"localhost\"\n", "listen"),
            (&[], "source = \"webcam\"\n", "source"),
            (&[], "size = \"1281x720\"\n", "size"),
            (&[], "[roi]\nkind = \"magic\"\n", "roi.kind"),
            (&[], "[roi]\ncpu_percent = 0\n", "roi.cpu_percent"),
            (&[], "[roi]\ncpu_percent = 150\n", "roi.cpu_percent"),
            (&[], "[roi]\nthreshold = 2\n", "roi.threshold"),
            (&[], "[mqtt]\nurl = \"http://x\"\n", "mqtt.url"),
            (&[], "[video]\nencoder = 7\n", "video.encoder"),
            (
                &[],
                "[video]\ntemporal_layers = 3\n",
                "video.temporal_layers",
            ),
            (
                &[],
                "[video]\ntemporal_layers = 0\n",
                "video.temporal_layers",
            ),
            (
                &[],
                "[webrtc]\nkeyframe_request_interval_s = 0.01\n",
                "webrtc.keyframe_request_interval_s",
            ),
            (
                &[],
                "[[webrtc.ice_servers]]\nurls = [\"http://x\"]\n",
                "webrtc.ice_servers",
            ),
            (
                &[],
                "[[webrtc.ice_servers]]\nurls = [\"turn:t.example:3478\"]\n",
                "webrtc.ice_servers",
            ),
            (&[], "[webrtc]\nadvertise = [\"a b\"]\n", "webrtc.advertise"),
            (
                &[],
                "[webrtc]\nstun_server = \"stun.example\"\n",
                "webrtc.stun_server",
            ),
            (&[], "[relay]\ncontext = \"janus\"\n", "relay.context"),
            (&[], "[relay]\nsource = \"janus:65535\"\n", "relay.source"),
            (&[], "[relay]\nstate = \"127.0.0.1:5008\"\n", "relay.state"),
            (&[], "[whip]\nurl = \"ftp://sfu/whip\"\n", "whip.url"),
            (&[], "[whip]\ntoken = \"abc\"\n", "whip.token"),
            (
                &[],
                "[whip]\nurl = \"http://sfu/whip\"\ntoken = \"a b\"\n",
                "whip.token",
            ),
        ];
        for (args, text, key) in cases {
            let err = settings(args, text).unwrap_err();
            assert_eq!(err.key, key, "{args:?} {text}");
            assert!(!err.to_string().contains('\n'));
        }
        let err = settings(&[], "[webrtc]\nmax_viewers = 0\n").unwrap_err();
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
