//! The soak (`focusd-bench --soak MINUTES`, not part of CI): one daemon at 720p30 for
//! that long with 3 steady viewers and 1 that leaves and comes back every few seconds,
//! while strangers open idle connections and abandon offers; its resident memory and
//! open files sampled throughout. Flat means the first and the last fifth of the run
//! agree within a margin. Also: how long an abandoned offer holds a viewer slot, and how
//! long the churning viewer takes from `POST /offer` to video on each return.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{Lab, stop};
use crate::http;
use crate::receiver::{ABANDONED_OFFER, Receiver, ReceiverOptions};

/// How long the churning viewer stays each time.
const CHURN_STAY: Duration = Duration::from_secs(5);
/// How often memory and files are sampled.
const SAMPLE: Duration = Duration::from_secs(10);
/// How much the last fifth may exceed the first: memory (MB) and open files.
const RSS_MARGIN_MB: f64 = 4.0;
const FILES_MARGIN: f64 = 4.0;

fn viewers(addr: std::net::SocketAddr) -> anyhow::Result<u64> {
    let r = http::request(addr, "GET", "/api/state", None, b"")?;
    let v: serde_json::Value = serde_json::from_slice(&r.body)?;
    Ok(v["viewers"].as_u64().unwrap_or(0))
}

/// Runs the soak for `minutes` and prints the figures.
pub fn run(lab: &Lab, minutes: u64) -> anyhow::Result<()> {
    let daemon = lab.daemon(&["--source", "test", "--size", "1280x720", "--fps", "30"])?;
    let addr = daemon.addr;
    println!("soak: {minutes} min, 720p30, 3 steady viewers and 1 churning every {CHURN_STAY:?}");

    // Abandoned offers: time until their slots are free again (no other viewer).
    let posted = Instant::now();
    for _ in 0..4 {
        let r = http::request(
            addr,
            "POST",
            "/offer",
            Some("application/sdp"),
            ABANDONED_OFFER.as_bytes(),
        )?;
        if r.status != 200 {
            bail!("abandoned offer refused: {} {}", r.status, r.text());
        }
    }
    while viewers(addr)? > 0 {
        if posted.elapsed() > Duration::from_secs(60) {
            bail!("abandoned offers still hold their slots after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let freed = posted.elapsed();

    let light = ReceiverOptions {
        decode: false,
        commands: false,
        ..Default::default()
    };
    let steady: Vec<Receiver> = (0..3)
        .map(|_| Receiver::connect(addr, light.clone()))
        .collect::<anyhow::Result<_>>()?;
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    let mut samples: Vec<(Duration, f64, f64)> = Vec::new();
    let mut returns: Vec<Duration> = Vec::new();
    let started = Instant::now();
    let mut next_sample = Instant::now();
    let mut strangers: Vec<TcpStream> = Vec::new();
    while Instant::now() < end {
        // The churning viewer: back, video, gone.
        let back = Instant::now();
        let churn = Receiver::connect(addr, light.clone())?;
        let (_, ok) = churn.wait_for(Duration::from_secs(10), |s| {
            s.tracks.iter().all(|t| t.frames > 0)
        });
        if !ok {
            bail!(
                "the churning viewer got no video after {} returns",
                returns.len()
            );
        }
        returns.push(back.elapsed());
        // Strangers: idle connections (cut at the header timeout) and an abandoned offer.
        strangers.retain(|s| s.peer_addr().is_ok());
        for _ in 0..20 {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.write_all(b"GET /api/state HTTP/1.1\r\n");
                strangers.push(s);
            }
        }
        strangers.drain(..strangers.len().saturating_sub(200));
        let _ = http::request(
            addr,
            "POST",
            "/offer",
            Some("application/sdp"),
            ABANDONED_OFFER.as_bytes(),
        );
        std::thread::sleep(CHURN_STAY);
        drop(churn);
        if Instant::now() >= next_sample {
            let (rss, _) = daemon.memory_kib()?;
            let files = daemon.open_files()? as f64;
            samples.push((started.elapsed(), rss as f64 / 1024.0, files));
            next_sample += SAMPLE;
        }
    }
    for (i, s) in steady.iter().enumerate() {
        if s.stats().tracks.iter().any(|t| t.frames == 0) {
            bail!("steady viewer {i} stopped receiving");
        }
    }
    let steady_frames: Vec<u64> = steady.iter().map(|s| s.stats().tracks[0].frames).collect();
    drop(steady);
    stop(daemon)?;

    let fifth = (samples.len() / 5).max(1);
    let mean = |xs: &[(Duration, f64, f64)], f: fn(&(Duration, f64, f64)) -> f64| {
        xs.iter().map(f).sum::<f64>() / xs.len().max(1) as f64
    };
    let (first, last) = (&samples[..fifth], &samples[samples.len() - fifth..]);
    let (rss0, rss1) = (mean(first, |s| s.1), mean(last, |s| s.1));
    let (fd0, fd1) = (mean(first, |s| s.2), mean(last, |s| s.2));
    returns.sort();
    let p = |q: f64| returns[((returns.len() - 1) as f64 * q) as usize].as_millis();
    println!();
    println!("{:<52} {:>16}  verdict", "soak figure", "measured");
    let row = |name: &str, value: String, ok: bool| {
        println!(
            "{name:<52} {value:>16}  {}",
            if ok { "ok" } else { "MISSED" }
        );
    };
    row(
        "abandoned offers' slots free again (no other viewer)",
        format!("{:.1} s", freed.as_secs_f64()),
        freed <= Duration::from_secs(20),
    );
    row(
        &format!("RSS first / last fifth (+{RSS_MARGIN_MB} MB allowed)"),
        format!("{rss0:.1} / {rss1:.1} MB"),
        rss1 <= rss0 + RSS_MARGIN_MB,
    );
    row(
        &format!("open files first / last fifth (+{FILES_MARGIN} allowed)"),
        format!("{fd0:.0} / {fd1:.0}"),
        fd1 <= fd0 + FILES_MARGIN,
    );
    row(
        &format!(
            "churning viewer back to video, p50 / p95 of {}",
            returns.len()
        ),
        format!("{} / {} ms", p(0.5), p(0.95)),
        true,
    );
    row(
        "steady viewers' context frames, min",
        format!("{}", steady_frames.iter().min().unwrap_or(&0)),
        true,
    );
    println!("samples (minute, RSS MB, open files):");
    for (t, rss, files) in samples.iter().step_by((samples.len() / 12).max(1)) {
        println!("  {:>6.1} {rss:>8.1} {files:>6.0}", t.as_secs_f64() / 60.0);
    }
    Ok(())
}
