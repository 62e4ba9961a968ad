//! MQTT figures: `focusd ctl mode` to the first frame in the new mode at a viewer, and
//! the daemon's CPU cost of the MQTT control plane with telemetry every second. Needs
//! `mosquitto` on PATH; it is started here on a free loopback port.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Lab, stop, verdict};
use crate::broker::Mosquitto;
use crate::http;
use crate::receiver::{Receiver, ReceiverOptions};

/// How many `ctl mode` round trips are timed.
const ROUNDS: usize = 5;

/// Measures and prints the MQTT figures.
pub(super) fn run(lab: &Lab, secs: u64) -> anyhow::Result<()> {
    println!();
    let broker = Mosquitto::try_start(lab.dir.path(), "")?;
    let conf = lab.dir.path().join("mqtt.toml");
    std::fs::write(
        &conf,
        format!("[mqtt]\nurl = \"{}\"\nstats_interval_s = 1\n", broker.url()),
    )?;
    let conf = conf.to_string_lossy().into_owned();
    let args = ["--source", "test", "--size", "1280x720", "--fps", "30"];
    let daemon = lab.daemon(&[&args[..], &["--config", &conf, "--device-id", "bench"]].concat())?;
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
        http::request(
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
        let mut ctl = lab
            .bin
            .command()
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
    stop(daemon)?;
    let with_args = [&args[..], &["--config", &conf, "--device-id", "bench"]].concat();
    let (mut with, mut without) = (0.0, 0.0);
    for _ in 0..2 {
        for (mqtt, sum) in [(true, &mut with), (false, &mut without)] {
            let d = lab.daemon(if mqtt { &with_args } else { &args })?;
            std::thread::sleep(Duration::from_millis(500));
            *sum += d.cpu_percent_over(Duration::from_secs(secs))? / 2.0;
            stop(d)?;
        }
    }

    println!("MQTT (local mosquitto, TCP_NODELAY)");
    println!(
        "{:<46} {:>14} {:>14}  verdict",
        "figure", "measured", "target"
    );
    let (p50, max) = (times[times.len() / 2], times[times.len() - 1]);
    verdict(
        &format!("`focusd ctl mode` to first frame, p50/max of {ROUNDS}"),
        &format!("{} / {} ms", p50.as_millis(), max.as_millis()),
        "<= 100 ms",
        max <= Duration::from_millis(100),
    );
    verdict(
        "daemon CPU, MQTT + stats every 1 s (mean of 2)",
        &format!("{with:.1}%"),
        "-",
        true,
    );
    verdict(
        "daemon CPU, no MQTT (mean of 2)",
        &format!("{without:.1}%"),
        "-",
        true,
    );
    Ok(())
}
