//! `focusd-bench`: measures a real daemon process on loopback against an encoder-only
//! baseline measured in the same run, and prints the figures with the targets.
//!
//! * **baseline**: the same two encoders (`encoder = auto`), fed the same test-pattern frames at the
//!   same rate, in a thread of this process — the least any implementation must spend;
//! * **daemon**: `focusd --source test` as a child process, its CPU and memory read from
//!   `/proc`, viewed by headless str0m receivers in this process (viewer 1 decodes and reads
//!   the stamp for latency; the others only receive);
//! * **idle**: the same daemon with nobody watching (nothing is encoded);
//! * **Chromium** ([`browser`]): what a browser viewer sees of focusd and of an aiortc
//!   sender in the same run: glass-to-glass latency, first frame, answer time;
//! * **links** ([`links`]): delivery over impaired links, adaptive against fixed rates;
//! * **relay** ([`relay`]): Chromium viewers on a real Janus fed by `[relay]`, one and
//!   eight: the daemon's CPU and upload;
//! * **cold start**: the daemon started afresh, timed from exec to `READY=1` on a
//!   notification socket of the bench's own, as systemd would see it;
//! * **ROI model** ([`detector`]): the model's runs on one core; on real footage, a replay
//!   through the default detector (its CPU, recall on annotated people, a still scene's
//!   cost), and the daemon with no ROI, motion and the model: CPU and VISION's source
//!   bitrate against HIGH's;
//! * **software encoders** ([`encoders`]): openh264 against GStreamer's x264enc on the
//!   same frames at the same bitrate: CPU and latency;
//! * **pictures** ([`pictures`]): the JPEG encoders side by side, and each picture door's
//!   CPU, bytes and latency per consumer beside a WebRTC viewer;
//! * **MQTT** ([`mqtt`]): `focusd ctl mode` to the first frame in the new mode, and the
//!   control plane's CPU cost;
//! * **soak** ([`soak`], only with `--soak MINUTES`): memory and open files over a long
//!   run with churning viewers and strangers.
//!
//! The daemon is the `focusd` beside the bench's own executable (`target/release/`).

mod browser;
mod detector;
mod encoders;
mod links;
mod mqtt;
mod pictures;
mod relay;
mod soak;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use focusd_board::encode::{self, EncoderSettings, EncoderSpec};
use focusd_board::frame::CaptureTime;
use focusd_board::image::{Image, PixelFormat};
use focusd_board::scale::{Scaler, lores_size};
use focusd_board::source::TestPattern;

use crate::TempDir;
use crate::http;
use crate::notify::NotifySocket;
use crate::process::{Binary, DaemonProcess, sigterm};
use crate::receiver::{Receiver, ReceiverOptions, ReceiverStats};

/// `focusd-bench` flags.
#[derive(Debug, Parser, Clone)]
#[command(
    name = "focusd-bench",
    about = "Measure latency, time to first frame, CPU and memory of focusd against an \
             encoder-only baseline, on loopback with the test source"
)]
pub struct BenchFlags {
    /// Seconds to measure each phase.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Viewer count of the multi-viewer phase.
    #[arg(long, default_value_t = 8)]
    pub viewers: usize,
    /// Also measure the bitrate of each mode on this real footage (a .y4m file).
    #[arg(long, value_name = "PATH.y4m")]
    pub footage: Option<PathBuf>,
    /// People annotated by hand in frames of the footage (`tests/data/vtest_people.json`
    /// for vtest): the detector's recall is measured on them.
    #[arg(long, value_name = "PATH.json", requires = "footage")]
    pub annotations: Option<PathBuf>,
    /// Run only the soak, for this many minutes: 4 viewers (1 churning), strangers,
    /// memory and open files sampled throughout.
    #[arg(long, value_name = "MINUTES")]
    pub soak: Option<u64>,
    /// Run only this phase: `links` (impaired links), `relay` (viewers through Janus),
    /// `encoders` (the software encoders side by side), `chromium` (Chromium's latency
    /// against the other senders), `pictures` (the picture doors) or `detector` (the ROI
    /// detector).
    #[arg(long, value_name = "PHASE")]
    pub only: Option<String>,
}

/// What every phase runs its daemons with.
struct Lab {
    /// The daemon binary.
    bin: Binary,
    /// Logs, configs and notification sockets.
    dir: TempDir,
}

impl Lab {
    /// A daemon with `args`, serving.
    fn daemon(&self, args: &[&str]) -> anyhow::Result<DaemonProcess> {
        DaemonProcess::try_start(&self.bin, self.dir.path(), args)
    }

    /// A daemon with `args` and the config file `toml` (kept as `NAME.toml` beside the
    /// logs).
    fn daemon_with_config(
        &self,
        name: &str,
        toml: &str,
        args: &[&str],
    ) -> anyhow::Result<DaemonProcess> {
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml)?;
        let path = path.to_string_lossy().into_owned();
        let mut all = vec!["--config", path.as_str()];
        all.extend(args);
        self.daemon(&all)
    }
}

/// SIGTERM, then how long the exit took; an error unless it exits 0 within 5 s.
fn stop(mut daemon: DaemonProcess) -> anyhow::Result<Duration> {
    let (status, took) = daemon.terminate(Duration::from_secs(5));
    if !status.success() {
        bail!("daemon exited with {status}");
    }
    Ok(took)
}

pub(super) const SIZE: (u32, u32) = (1280, 720);
const FPS: u32 = 30;

/// Runs the benchmark and prints the report.
pub fn run(flags: &BenchFlags) -> anyhow::Result<()> {
    let lab = Lab {
        bin: Binary::beside_current_exe()?,
        dir: TempDir::new("bench"),
    };
    if let Some(minutes) = flags.soak {
        return soak::run(&lab, minutes.max(1));
    }
    let secs = flags.seconds.max(2);
    println!(
        "focusd-bench: {}x{}@{FPS}, test source, loopback, {secs} s per phase",
        SIZE.0, SIZE.1
    );

    match flags.only.as_deref() {
        Some("links") => return links::run(&lab, secs),
        Some("relay") => return relay::run(&lab, secs),
        Some("encoders") => return encoders::run(secs, flags.footage.as_deref()),
        Some("chromium") => return browser::run(&lab, secs),
        Some("pictures") => return pictures::run(&lab, secs),
        Some("detector") => {
            return detector::run(
                &lab,
                secs,
                flags.footage.as_deref(),
                flags.annotations.as_deref(),
            );
        }
        Some(other) => anyhow::bail!(
            "--only {other}: the phases run alone are links, relay, encoders, chromium, pictures and detector"
        ),
        None => {}
    }
    let baseline = encoder_only_cpu(secs)?;
    println!("  baseline (encoder only, both tracks): {baseline:.1}% CPU");
    encoders::run(secs, flags.footage.as_deref())?;
    let starts = cold_starts(&lab, COLD_STARTS)?;

    // At the configured rates: the modes' bitrates compare the encoder's output, which the
    // viewers' links do not steer here ([`links`] measures adaptive delivery).
    let daemon = lab.daemon_with_config(
        "fixed-rates",
        "[webrtc]\nadaptive_delivery = false\n",
        &["--source", "test", "--size", "1280x720", "--fps", "30"],
    )?;
    let idle = daemon.cpu_percent_over(Duration::from_secs(secs))?;
    let one = Receiver::connect(
        daemon.addr,
        ReceiverOptions {
            keep_frames: false,
            ..Default::default()
        },
    )?;
    let (first, ok) = one.wait_for(Duration::from_secs(10), |s| {
        s.tracks.iter().all(|t| t.first_frame.is_some())
    });
    if !ok {
        bail!("viewer got no frames within 10 s");
    }
    let first_frame = first
        .tracks
        .iter()
        .filter_map(|t| t.first_frame)
        .max()
        .unwrap_or_default();
    std::thread::sleep(Duration::from_secs(1));
    one.reset_counters();
    let cpu1 = daemon.cpu_percent_over(Duration::from_secs(secs))?;
    let s1 = one.stats();
    let (rss1, hwm1) = daemon.memory_kib()?;
    let lat = latencies(&s1);

    let mode_rates = mode_bitrates(daemon.addr, &one, secs)?;
    http::request(
        daemon.addr,
        "POST",
        "/api/command",
        Some("application/json"),
        br#"{"mode":"HIGH"}"#,
    )?;
    std::thread::sleep(Duration::from_millis(500));

    let light = ReceiverOptions {
        decode: false,
        commands: false,
        ..Default::default()
    };
    let others: Vec<Receiver> = (1..flags.viewers.max(2))
        .map(|_| Receiver::connect(daemon.addr, light.clone()))
        .collect::<anyhow::Result<_>>()?;
    for o in &others {
        if !o
            .wait_for(Duration::from_secs(10), |s| {
                s.tracks.iter().all(|t| t.frames > 0)
            })
            .1
        {
            bail!("one of {} viewers got no frames", flags.viewers);
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    for o in &others {
        o.reset_counters();
    }
    one.reset_counters();
    let cpu_n = daemon.cpu_percent_over(Duration::from_secs(secs))?;
    let min_frames = others
        .iter()
        .chain(std::iter::once(&one))
        .map(|r| r.stats().tracks[0].frames)
        .min()
        .unwrap_or(0);
    let lat_n = latencies(&one.stats());
    let (rss_n, _) = daemon.memory_kib()?;
    drop(others);
    drop(one);
    let stop = stop(daemon)?;

    let n = flags.viewers.max(2);
    println!();
    println!(
        "{:<46} {:>14} {:>14}  verdict",
        "figure", "measured", "target"
    );
    let row = |name: &str, value: String, target: &str, ok: bool| verdict(name, &value, target, ok);
    row(
        "latency p50, glass to glass (1 viewer)",
        format!("{} ms", lat.0),
        "<= 30 ms",
        lat.0 <= 30,
    );
    row("latency p95 (1 viewer)", format!("{} ms", lat.1), "-", true);
    row(
        &format!("latency p50 / p95 ({n} viewers)"),
        format!("{} / {} ms", lat_n.0, lat_n.1),
        "-",
        true,
    );
    row(
        "POST /offer to first frame on both tracks",
        format!("{} ms", first_frame.as_millis()),
        "<= 80 ms",
        first_frame <= Duration::from_millis(80),
    );
    row(
        "daemon CPU, nobody watching",
        format!("{idle:.1}%"),
        "<= 3%",
        idle <= 3.0,
    );
    row("daemon CPU, 1 viewer", format!("{cpu1:.1}%"), "-", true);
    row(
        &format!("daemon CPU, {n} viewers"),
        format!("{cpu_n:.1}%"),
        "-",
        true,
    );
    let viewers_ratio = cpu_n / cpu1.max(0.1);
    row(
        &format!("CPU {n} viewers / 1 viewer"),
        format!("{viewers_ratio:.2}x"),
        "<= 1.25x",
        viewers_ratio <= 1.25,
    );
    let base_ratio = cpu1 / baseline.max(0.1);
    row(
        "daemon CPU / encoder-only CPU",
        format!("{base_ratio:.2}x"),
        "<= 1.3x",
        base_ratio <= 1.3,
    );
    row(
        "RSS, 1 viewer (peak so far)",
        format!("{:.1} MB", hwm1 as f64 / 1024.0),
        "<= 40 MB",
        hwm1 as f64 / 1024.0 <= 40.0,
    );
    row(
        "RSS now, 1 viewer",
        format!("{:.1} MB", rss1 as f64 / 1024.0),
        "-",
        true,
    );
    row(
        &format!("RSS, {n} viewers"),
        format!("{:.1} MB", rss_n as f64 / 1024.0),
        "-",
        true,
    );
    row(
        &format!("slowest of {n} viewers, context frames"),
        format!("{min_frames}"),
        &format!(">= {}", secs * FPS as u64 * 8 / 10),
        min_frames >= secs * FPS as u64 * 8 / 10,
    );
    let (start_p50, start_max) = (starts[starts.len() / 2], starts[starts.len() - 1]);
    row(
        &format!("cold start to READY=1, p50 / max of {COLD_STARTS}"),
        format!("{} / {} ms", start_p50.as_millis(), start_max.as_millis()),
        "<= 300 ms",
        start_max <= Duration::from_millis(300),
    );
    row(
        "SIGTERM to exit",
        format!("{} ms", stop.as_millis()),
        "<= 2000 ms",
        stop <= Duration::from_secs(2),
    );
    print_modes(
        "test pattern (static background: HIGH's P-frames are nearly free)",
        &mode_rates,
    );

    browser::run(&lab, secs)?;
    links::run(&lab, secs)?;
    relay::run(&lab, secs)?;
    encoders::through_daemon(&lab, secs)?;
    detector::run(
        &lab,
        secs,
        flags.footage.as_deref(),
        flags.annotations.as_deref(),
    )?;
    pictures::run(&lab, secs)?;
    mqtt::run(&lab, secs)
}

/// Prints one figure of a table: its name, what was measured, the target and whether it was
/// met (`-` for a figure without one).
fn verdict(name: &str, value: &str, target: &str, ok: bool) {
    let verdict = match (target, ok) {
        ("-", _) => "-",
        (_, true) => "ok",
        (_, false) => "MISSED",
    };
    println!("{name:<46} {value:>14} {target:>14}  {verdict}");
}

fn print_modes(title: &str, rates: &[(&str, f64, f64)]) {
    println!();
    println!("bitrate per mode, {title}");
    println!(
        "{:<10} {:>14} {:>14} {:>12}",
        "mode", "context kbps", "source kbps", "vs HIGH"
    );
    let high = rates
        .iter()
        .find(|r| r.0 == "HIGH")
        .map(|r| r.2)
        .unwrap_or(0.0);
    for (mode, c, s) in rates {
        let share = if high > 0.0 {
            format!("{:.0}%", s / high * 100.0)
        } else {
            "-".into()
        };
        println!("{mode:<10} {c:>14.0} {s:>14.0} {share:>12}");
    }
}

/// Received kbps per track in each mode, as one viewer sees it.
fn mode_bitrates(
    addr: SocketAddr,
    viewer: &Receiver,
    secs: u64,
) -> anyhow::Result<Vec<(&'static str, f64, f64)>> {
    let mut rates = Vec::new();
    for (mode, cmd) in [
        ("LOW", r#"{"mode":"LOW"}"#),
        ("HIGH", r#"{"mode":"HIGH"}"#),
        ("VISION", r#"{"mode":"VISION"}"#),
        (
            "HYBRID",
            r#"{"mode":"HYBRID","hybrid_rect":{"x1":0,"y1":0,"x2":50,"y2":100}}"#,
        ),
    ] {
        let r = http::request(
            addr,
            "POST",
            "/api/command",
            Some("application/json"),
            cmd.as_bytes(),
        )?;
        if r.status != 200 {
            bail!("mode {mode}: {}", r.text());
        }
        std::thread::sleep(Duration::from_millis(1500));
        viewer.reset_counters();
        let window = Duration::from_secs(secs.max(2));
        std::thread::sleep(window);
        let s = viewer.stats();
        let kbps = |i: usize| s.tracks[i].bytes as f64 * 8.0 / 1000.0 / window.as_secs_f64();
        rates.push((mode, kbps(0), kbps(1)));
    }
    Ok(rates)
}

/// p50 and p95 stamp latency over both tracks.
fn latencies(s: &ReceiverStats) -> (u32, u32) {
    let mut all: Vec<u32> = s
        .tracks
        .iter()
        .flat_map(|t| t.latencies_ms.iter().copied())
        .filter(|&l| l < 10_000)
        .collect();
    if all.is_empty() {
        return (u32::MAX, u32::MAX);
    }
    all.sort_unstable();
    (
        all[all.len() / 2],
        all[(all.len() * 95 / 100).min(all.len() - 1)],
    )
}

/// CPU% of a thread that encodes both tracks of the test pattern at 30 fps, like the daemon.
fn encoder_only_cpu(secs: u64) -> anyhow::Result<f64> {
    let lores = lores_size(SIZE, 320);
    let pattern = TestPattern::new(SIZE, FPS as f64);
    let scaler = Scaler::new(SIZE, lores);
    // One second of frames, made before measuring: only encoding is on the clock.
    let frames: Vec<(Image, Image)> = (0..FPS as u64)
        .map(|i| {
            let mut main = Image::i420(SIZE.0, SIZE.1);
            pattern.draw(&mut main, 1_700_000_000_000 + i * 1000 / FPS as u64);
            let mut small = Image::i420(lores.0, lores.1);
            scaler.scale(&main, &mut small);
            (main, small)
        })
        .collect();
    let settings = |(width, height), bitrate_kbps| EncoderSettings {
        width,
        height,
        format: PixelFormat::I420,
        fps: FPS as f64,
        bitrate_kbps,
        keyframe_interval: 2 * FPS,
        temporal_layers: 1,
    };
    // The encoder the daemon under test opens (`auto`: openh264 on this machine).
    let mut main_enc = encode::open(&EncoderSpec::Auto, &settings(SIZE, 2500))?;
    let mut lores_enc = encode::open(&EncoderSpec::Auto, &settings(lores, 300))?;
    std::thread::spawn(move || -> anyhow::Result<f64> {
        let mut out = Vec::with_capacity(1 << 18);
        let interval = Duration::from_secs_f64(1.0 / FPS as f64);
        let start_cpu = thread_cpu_ticks()?;
        let start = Instant::now();
        let mut next = start;
        let mut i = 0;
        while start.elapsed() < Duration::from_secs(secs) {
            let (main, small) = &frames[i % frames.len()];
            for (encoder, image) in [(&mut lores_enc, small), (&mut main_enc, main)] {
                encoder.submit(image, CaptureTime::now(), false)?;
                out.clear();
                encoder.poll(&mut out)?;
            }
            i += 1;
            next += interval;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let ticks = thread_cpu_ticks()? - start_cpu;
        Ok(
            ticks as f64
                / focusd::service::procfs::TICKS_PER_SECOND
                / start.elapsed().as_secs_f64()
                * 100.0,
        )
    })
    .join()
    .map_err(|_| anyhow::anyhow!("baseline thread panicked"))?
}

/// utime + stime of a /proc stat line (fields 14 and 15; the command name may hold spaces).
fn thread_cpu_ticks() -> anyhow::Result<u64> {
    Ok(focusd::service::procfs::cpu_ticks("thread-self")?)
}

/// The daemon under test, as a child process.
/// How many cold starts are timed.
const COLD_STARTS: usize = 5;

/// Times `runs` starts of the daemon (720p test source, as systemd starts it) from exec to
/// `READY=1` on a notification socket of our own; sorted, shortest first.
fn cold_starts(lab: &Lab, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let notify = NotifySocket::bind(lab.dir.path()).context("bind a notification socket")?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let mut child = lab
            .bin
            .command()
            .args(["--source", "test", "--size", "1280x720"])
            .args(["--listen", "127.0.0.1:0"])
            .env("NOTIFY_SOCKET", &notify.path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the daemon")?;
        let ready = notify
            .wait_for("READY=1", Duration::from_secs(10))
            .map(|_| started.elapsed());
        sigterm(child.id());
        child.wait()?;
        // Drain STOPPING=1 so that it is not read by the next run.
        notify.collect(Duration::from_millis(50));
        times.push(ready.map_err(|seen| anyhow::anyhow!("no READY=1 within 10 s: {seen:?}"))?);
    }
    times.sort();
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut s = ReceiverStats::default();
        s.tracks[0].latencies_ms = (1..=100).collect();
        assert_eq!(latencies(&s), (51, 96));
    }
}
