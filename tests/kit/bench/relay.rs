//! The relay door past one board: Chromium viewers on a real Janus (its Streaming plugin
//! fed by the daemon's `[relay]`), one and then eight; the daemon's CPU and upload while
//! they watch. The board sends each frame once, so both should stay where one viewer
//! puts them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Lab, stop, verdict};
use crate::janus::{Janus, MOUNTPOINT};
use crate::process::{DaemonProcess, Reaped};

/// What the daemon spent while `viewers` watched through Janus.
struct Load {
    cpu_percent: f64,
    upload_kbps: f64,
    /// The slowest viewer's source frames per second.
    min_fps: f64,
}

fn relay_bytes(d: &DaemonProcess) -> f64 {
    d.metric("focusd_relay_bytes_total{track=\"context\"}")
        + d.metric("focusd_relay_bytes_total{track=\"source\"}")
}

fn watch(d: &DaemonProcess, janus: &Janus, viewers: usize, secs: u64) -> anyhow::Result<Load> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/janus.mjs");
    let mut node = Reaped(
        Command::new("node")
            .arg(script)
            .arg(&janus.api)
            .arg(MOUNTPOINT.to_string())
            .arg(viewers.to_string())
            .arg(secs.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = node.0.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    if !first.contains("watching") {
        anyhow::bail!("the viewers did not start: {first}");
    }
    let (bytes, start) = (relay_bytes(d), Instant::now());
    // A little less than the viewers watch, so the window lies inside theirs.
    let cpu_percent = d.cpu_percent_over(Duration::from_secs(secs) - Duration::from_millis(300))?;
    let upload_kbps = (relay_bytes(d) - bytes) * 8.0 / 1000.0 / start.elapsed().as_secs_f64();
    let last = lines.next().transpose()?.unwrap_or_default();
    let r: serde_json::Value = serde_json::from_str(&last)?;
    let mut min_fps = f64::MAX;
    for v in r["viewers"].as_array().into_iter().flatten() {
        let frames = |at: &serde_json::Value| at["source"]["framesDecoded"].as_f64().unwrap_or(0.0);
        min_fps = min_fps.min((frames(&v["video"]) - frames(&v["before"])) / secs as f64);
    }
    if min_fps == f64::MAX {
        anyhow::bail!("no viewer figures: {last}");
    }
    Ok(Load {
        cpu_percent,
        upload_kbps,
        min_fps,
    })
}

pub(super) fn run(lab: &Lab, secs: u64) -> anyhow::Result<()> {
    let secs = secs.clamp(3, 10);
    println!();
    println!("through a relay (Janus Streaming, 720p30 test source; {secs} s of watching):");
    let janus = match Janus::start() {
        Ok(j) => j,
        Err(e) => {
            println!("  not measured: {e:#}");
            return Ok(());
        }
    };
    let d = lab.daemon_with_config(
        "relay",
        &janus.relay_config(),
        &["--source", "test", "--size", "1280x720", "--fps", "30"],
    )?;
    let one = watch(&d, &janus, 1, secs);
    let eight = watch(&d, &janus, 8, secs);
    stop(d)?;
    let (one, eight) = match (one, eight) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            for e in [a.err(), b.err()].into_iter().flatten() {
                println!("  not measured: {e:#}");
            }
            return Ok(());
        }
    };
    println!(
        "  {:<10} {:>12} {:>14} {:>22}",
        "viewers", "daemon CPU", "upload", "slowest viewer's fps"
    );
    for (n, l) in [(1, &one), (8, &eight)] {
        println!(
            "  {n:<10} {:>11.1}% {:>9.0} kbit/s {:>22.1}",
            l.cpu_percent, l.upload_kbps, l.min_fps
        );
    }
    let upload = eight.upload_kbps / one.upload_kbps.max(1.0);
    verdict(
        "relay: upload, 8 viewers / 1",
        &format!("{upload:.2}x"),
        "<= 1.1x",
        upload <= 1.1,
    );
    let cpu = eight.cpu_percent / one.cpu_percent.max(0.1);
    verdict(
        "relay: daemon CPU, 8 viewers / 1",
        &format!("{cpu:.2}x"),
        "<= 1.2x",
        cpu <= 1.2,
    );
    Ok(())
}
