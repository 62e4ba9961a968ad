//! MQTT figures: `focusd ctl mode` to the first frame in the new mode at a viewer, and
//! the daemon's CPU cost of the MQTT control plane with telemetry every second. Needs
//! `mosquitto` on PATH; it is started here on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::DaemonProcess;
use crate::minihttp;
use crate::receiver::{Receiver, ReceiverOptions};

/// How many `ctl mode` round trips are timed.
const ROUNDS: usize = 5;

/// A throwaway mosquitto.
struct Broker {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Broker {
    fn start() -> anyhow::Result<Option<Broker>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("focusd-bench-mqtt-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("mosquitto.conf");
        // TCP_NODELAY on the broker too, as anyone who cares about command latency sets.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\nuser root\n"
            ),
        )?;
        let child = match Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("start mosquitto"),
        };
        let broker = Broker { child, port, dir };
        let end = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > end {
                bail!("mosquitto did not listen");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Some(broker))
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Measures and prints the MQTT figures.
pub(super) fn run(secs: u64) -> anyhow::Result<()> {
    println!();
    let Some(broker) = Broker::start()? else {
        println!("MQTT figures skipped: no `mosquitto` on PATH");
        return Ok(());
    };
    let conf = broker.dir.join("focusd.toml");
    std::fs::write(
        &conf,
        format!("[mqtt]\nurl = \"{}\"\nstats_interval_s = 1\n", broker.url()),
    )?;
    let conf = conf.to_string_lossy().into_owned();
    let args = ["--source", "test", "--size", "1280x720", "--fps", "30"];
    let daemon =
        DaemonProcess::spawn(&[&args[..], &["--config", &conf, "--device-id", "bench"]].concat())?;
    let viewer = Receiver::connect(
        daemon.addr,
        ReceiverOptions {
            decode: false,
            commands: false,
            ..Default::default()
        },
    )?;
    if !viewer
        .wait_for(Duration::from_secs(10), |s| {
            s.tracks.iter().all(|t| t.frames > 0)
        })
        .1
    {
        bail!("viewer got no frames");
    }
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        minihttp::request(
            daemon.addr,
            "POST",
            "/api/command",
            Some("application/json"),
            br#"{"mode":"LOW"}"#,
        )?;
        // Let frames already sent drain, so the next source frame is a HIGH one.
        std::thread::sleep(Duration::from_millis(400));
        let before = viewer.stats().tracks[1].frames;
        let started = Instant::now();
        let mut ctl = Command::new(std::env::current_exe()?)
            .args(["ctl", "--broker", &broker.url(), "mode", "bench", "HIGH"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("run focusd ctl")?;
        let (_, seen) = viewer.wait_for(Duration::from_secs(5), |s| s.tracks[1].frames > before);
        let took = started.elapsed();
        let ok = ctl.wait()?.success();
        if !seen || !ok {
            bail!("no HIGH frame after `focusd ctl mode` (ctl ok: {ok})");
        }
        times.push(took);
    }
    times.sort();
    drop(viewer);

    // The control plane's own cost: a daemon with MQTT (stats every second) and one
    // without, no viewers, measured in turn twice so that drift hits both alike.
    daemon.stop()?;
    let with_args = [&args[..], &["--config", &conf, "--device-id", "bench"]].concat();
    let (mut with, mut without) = (0.0, 0.0);
    for _ in 0..2 {
        for (mqtt, sum) in [(true, &mut with), (false, &mut without)] {
            let d = DaemonProcess::spawn(if mqtt { &with_args } else { &args })?;
            std::thread::sleep(Duration::from_millis(500));
            *sum += d.cpu_percent_over(Duration::from_secs(secs))? / 2.0;
            d.stop()?;
        }
    }

    println!("MQTT (local mosquitto, TCP_NODELAY)");
    println!(
        "{:<44} {:>12} {:>14}  verdict",
        "figure", "measured", "target"
    );
    let (p50, max) = (times[times.len() / 2], times[times.len() - 1]);
    println!(
        "{:<44} {:>12} {:>14}  {}",
        format!("`focusd ctl mode` to first frame, p50/max of {ROUNDS}"),
        format!("{} / {} ms", p50.as_millis(), max.as_millis()),
        "<= 100 ms",
        if max <= Duration::from_millis(100) {
            "ok"
        } else {
            "MISSED"
        }
    );
    println!(
        "{:<44} {:>12} {:>14}  -",
        "daemon CPU, MQTT + stats every 1 s (mean of 2)",
        format!("{with:.1}%"),
        "-"
    );
    println!(
        "{:<44} {:>12} {:>14}  -",
        "daemon CPU, no MQTT (mean of 2)",
        format!("{without:.1}%"),
        "-"
    );
    Ok(())
}
