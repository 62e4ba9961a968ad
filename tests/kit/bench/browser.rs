//! What a Chromium viewer sees, side by side with another sender in the same run: for
//! each frame of the 720p track, ms from its stamp (the capture time) to its last packet's
//! arrival, to its hand-over to the compositor, and to its expected display (glass); the
//! first POST to the first frame shown; and how long offers take to be answered while that
//! viewer watches (`tests/browser/latency.mjs` measures, in the page).
//!
//! The senders: focusd (and focusd without the `playout-delay` request, what a browser
//! does by default) and an aiortc sender (`tests/aiortc/sender.py`: 720p30 through
//! libx264, the same stamp). Glass includes the wait for the compositor's next frame
//! (16.7 ms at 60 Hz): its phase against the camera's differs from run to run by up to
//! that much, the same for every sender, so "below every peer" is judged on the hand-over.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::{Lab, stop, verdict};
use crate::http::TEST_TOKEN;
use crate::process::Reaped;

/// One sender's figures, in ms.
#[derive(Debug)]
struct Seen {
    received: (f64, f64),
    presented: (f64, f64),
    glass: (f64, f64),
    first_frame: f64,
    answer: (f64, f64),
    frames: usize,
}

/// Offers answered while the measured viewer watches.
const ANSWERS: usize = 10;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the comparison and prints it; says why when Chromium or aiortc are missing.
pub(super) fn run(lab: &Lab, secs: u64) -> anyhow::Result<()> {
    let secs = secs.clamp(3, 10);
    println!();
    println!("Chromium viewing the 720p30 track ({secs} s each; ms from the stamp, p50 / p95):");
    if !root().join("tests/node_modules/playwright-core").exists() {
        println!("  not measured: no playwright-core (npm ci --prefix tests)");
        return Ok(());
    }
    let mut rows: Vec<(&str, anyhow::Result<Seen>)> = vec![
        ("focusd", focusd(lab, secs, true)),
        ("focusd, no playout-delay", focusd(lab, secs, false)),
        ("aiortc sender (libx264)", aiortc(secs)),
    ];
    println!(
        "  {:<26} {:>13} {:>13} {:>13} {:>8} {:>13}",
        "sender", "arrived", "handed over", "glass", "first", "answer"
    );
    let pair = |(a, b): (f64, f64)| format!("{a:.1} / {b:.1}");
    for (name, seen) in &rows {
        match seen {
            Ok(s) => println!(
                "  {name:<26} {:>13} {:>13} {:>13} {:>8.0} {:>13}   ({} frames)",
                pair(s.received),
                pair(s.presented),
                pair(s.glass),
                s.first_frame,
                pair(s.answer),
                s.frames
            ),
            Err(e) => println!("  {name:<26} not measured: {e:#}"),
        }
    }
    let Ok(ours) = rows.remove(0).1 else {
        return Ok(());
    };
    let peers: Vec<f64> = rows
        .iter()
        .filter(|(name, _)| !name.starts_with("focusd"))
        .filter_map(|(_, s)| s.as_ref().ok().map(|s| s.presented.0))
        .collect();
    let row = |name: &str, value: String, target: &str, ok: bool| verdict(name, &value, target, ok);
    row(
        "Chromium glass-to-glass p50",
        format!("{:.1} ms", ours.glass.0),
        "<= 25 ms",
        ours.glass.0 <= 25.0,
    );
    if let Some(best) = peers.iter().copied().reduce(f64::min) {
        row(
            "handed over p50, against the best peer",
            format!("{:.1} ms", ours.presented.0),
            &format!("< {best:.1} ms"),
            ours.presented.0 < best,
        );
    }
    row(
        "answer p95, a viewer watching",
        format!("{:.1} ms", ours.answer.1),
        "<= 20 ms",
        ours.answer.1 <= 20.0,
    );
    row(
        "POST to the first frame shown",
        format!("{:.0} ms", ours.first_frame),
        "<= 80 ms",
        ours.first_frame <= 80.0,
    );
    Ok(())
}

/// focusd with the test source at 720p30, idle until the page's offer.
fn focusd(lab: &Lab, secs: u64, low_latency_playout: bool) -> anyhow::Result<Seen> {
    let daemon = lab.daemon_with_config(
        &format!("playout-{low_latency_playout}"),
        &format!("[webrtc]\nlow_latency_playout = {low_latency_playout}\n"),
        &["--source", "test", "--size", "1280x720", "--fps", "30"],
    )?;
    let seen = measure(&format!("http://{}/", daemon.addr), "/whep", 2, 1, secs);
    stop(daemon)?;
    seen
}

/// The aiortc sender on a free port.
fn aiortc(secs: u64) -> anyhow::Result<Seen> {
    let python: PathBuf = root().join("tests/.venv/bin/python");
    if !python.exists() {
        bail!("no tests/.venv (tests/run.sh makes it)");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Reaped(
        Command::new(python)
            .arg(root().join("tests/aiortc/sender.py"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start the aiortc sender")?,
    );
    let stdout = child.0.stdout.take().context("sender's stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "listening" {
        bail!("the aiortc sender did not start: {line:?}");
    }
    measure(&format!("http://127.0.0.1:{port}/"), "/offer", 1, 0, secs)
}

/// Runs `latency.mjs` against a sender and reads its figures.
fn measure(
    base: &str,
    offer_path: &str,
    video_lines: usize,
    track: usize,
    secs: u64,
) -> anyhow::Result<Seen> {
    let out = Command::new("node")
        .arg(root().join("tests/browser/latency.mjs"))
        .args([
            base,
            offer_path,
            &video_lines.to_string(),
            &track.to_string(),
            &secs.to_string(),
            &ANSWERS.to_string(),
        ])
        .env("FOCUSD_TOKEN", TEST_TOKEN)
        .stderr(Stdio::inherit())
        .output()
        .context("run node")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or(""))
        .with_context(|| format!("latency.mjs printed {text:?}"))?;
    if let Some(e) = v.get("error") {
        bail!("{e}");
    }
    let series = |key: &str| -> (f64, f64) {
        let mut all: Vec<f64> = v[key]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default();
        all.sort_by(f64::total_cmp);
        percentiles(&all)
    };
    let glass = series("glass_ms");
    if glass.0.is_nan() {
        bail!("no frame with a readable stamp");
    }
    Ok(Seen {
        received: series("received_ms"),
        presented: series("presented_ms"),
        glass,
        first_frame: v["first_frame_ms"].as_f64().unwrap_or(f64::NAN),
        answer: series("answer_ms"),
        frames: v["glass_ms"].as_array().map_or(0, |a| a.len()),
    })
}

/// p50 and p95 of sorted values (NaN when there are none).
fn percentiles(sorted: &[f64]) -> (f64, f64) {
    if sorted.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let at = |q: usize| sorted[(sorted.len() * q / 100).min(sorted.len() - 1)];
    (at(50), at(95))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_sorted_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentiles(&v), (51.0, 96.0));
        assert!(percentiles(&[]).0.is_nan());
    }
}
