//! A real Janus (Debian's `janus`) per test, with one Streaming mountpoint shaped for
//! focusd's relay: two H.264 video streams (context, source), each with an RTCP port for
//! keyframe requests, and a text data stream for the state. Only the Streaming plugin and
//! the HTTP transport are loaded; everything listens on loopback and free ports.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::process::Reaped;
use crate::{TempDir, free_port, free_udp_pair};

/// The mountpoint's id in the Streaming plugin.
pub const MOUNTPOINT: u32 = 1;

/// A running Janus.
pub struct Janus {
    /// Its HTTP API (`http://127.0.0.1:PORT/janus`).
    pub api: String,
    /// Where the mountpoint takes each track's RTP (RTCP on the port above) and the state.
    pub context_port: u16,
    pub source_port: u16,
    pub state_port: u16,
    _process: Reaped,
    dir: TempDir,
}

/// Where Debian keeps Janus's plugins and transports (a multiarch directory).
fn library_dir() -> anyhow::Result<PathBuf> {
    let found = std::fs::read_dir("/usr/lib")?
        .flatten()
        .map(|e| e.path().join("janus"))
        .find(|p| p.join("plugins/libjanus_streaming.so").exists());
    found.context("Janus is not installed (apt-get install janus; tests/run.sh does)")
}

impl Janus {
    /// Writes the configuration and starts Janus; returns once its API answers.
    pub fn start() -> anyhow::Result<Janus> {
        let lib = library_dir()?;
        let dir = TempDir::new("janus");
        let http_port = free_port();
        let (context_port, source_port, state_port) =
            (free_udp_pair(), free_udp_pair(), free_udp_pair());
        let loaded = |kind: &str, keep: &str| -> anyhow::Result<String> {
            let mut others = Vec::new();
            for e in std::fs::read_dir(lib.join(kind))? {
                let name = e?.file_name().to_string_lossy().into_owned();
                if name.ends_with(".so") && name != keep {
                    others.push(name);
                }
            }
            Ok(others.join(","))
        };
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("janus.jcfg"),
            format!(
                "general: {{ configs_folder = \"{d}\", plugins_folder = \"{plugins}\", \
                 transports_folder = \"{transports}\", events_folder = \"{d}/none\", \
                 loggers_folder = \"{d}/none\", debug_level = 4 }}\n\
                 media: {{ }}\n\
                 nat: {{ ice_ignore_list = \"vmnet\" }}\n\
                 plugins: {{ disable = \"{no_plugins}\" }}\n\
                 transports: {{ disable = \"{no_transports}\" }}\n",
                plugins = lib.join("plugins").display(),
                transports = lib.join("transports").display(),
                no_plugins = loaded("plugins", "libjanus_streaming.so")?,
                no_transports = loaded("transports", "libjanus_http.so")?,
            ),
        )?;
        std::fs::write(
            dir.path().join("janus.transport.http.jcfg"),
            format!(
                "general: {{ http = true, port = {http_port}, https = false, \
                 base_path = \"/janus\", ip = \"127.0.0.1\" }}\n\
                 admin: {{ admin_http = false }}\n"
            ),
        )?;
        let video = |mid: &str, port: u16| {
            format!(
                "{{ type = \"video\", mid = \"{mid}\", label = \"{mid}\", port = {port}, \
                 rtcpport = {}, iface = \"127.0.0.1\", pt = 96, codec = \"h264\", \
                 fmtp = \"profile-level-id=42e01f;packetization-mode=1\" }}",
                port + 1
            )
        };
        std::fs::write(
            dir.path().join("janus.plugin.streaming.jcfg"),
            format!(
                "general: {{ }}\n\
                 focusd: {{ type = \"rtp\", id = {MOUNTPOINT}, description = \"focusd\", \
                 media = ( {}, {}, {{ type = \"data\", mid = \"state\", label = \"state\", \
                 port = {state_port}, iface = \"127.0.0.1\", datatype = \"text\", \
                 databuffermsg = true }} ) }}\n",
                video("context", context_port),
                video("source", source_port),
            ),
        )?;
        let child = Command::new("janus")
            .arg("--configs-folder")
            .arg(dir.path())
            .arg("--config")
            .arg(dir.path().join("janus.jcfg"))
            .stdout(std::fs::File::create(dir.path().join("janus.log"))?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting janus")?;
        let janus = Janus {
            api: format!("http://127.0.0.1:{http_port}/janus"),
            context_port,
            source_port,
            state_port,
            _process: Reaped(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let addr = ([127, 0, 0, 1], http_port).into();
            if crate::http::request(addr, "GET", "/janus/info", None, b"")
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(janus);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("Janus did not answer within 10 s: {}", janus.log())
    }

    /// The daemon's `[relay]` section that sends to this Janus's mountpoint.
    pub fn relay_config(&self) -> String {
        format!(
            "[relay]\ncontext = \"127.0.0.1:{}\"\nsource = \"127.0.0.1:{}\"\nstate = \"127.0.0.1:{}\"\n",
            self.context_port, self.source_port, self.state_port
        )
    }

    /// What Janus logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("janus.log")).unwrap_or_default()
    }
}
