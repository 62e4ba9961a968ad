//! The software encoders side by side on the source track's picture: openh264 and
//! GStreamer's `x264enc` (ultrafast, zerolatency: what go2rtc gets from ffmpeg), fed the
//! same 720p30 frames at the same bitrate, in this process: the test pattern, and real
//! footage scaled to 720p when the bench has some. CPU is the whole process's
//! (x264 and GStreamer run threads of their own); latency is `submit` to the access unit.
//!
//! Then each through the daemon (`--encoder`), with one viewer: time to the first frame,
//! glass-to-glass latency (the test source's stamp) and the daemon's CPU, in the same run.

use std::path::Path;
use std::time::{Duration, Instant};

use focusd_board::encode::{self, EncoderSettings, EncoderSpec};
use focusd_board::frame::CaptureTime;
use focusd_board::image::{Image, PixelFormat};
use focusd_board::source::{FrameSource, TestPattern, Y4mFile};

use super::{FPS, Lab, SIZE, latencies, stop};
use crate::receiver::{Receiver, ReceiverOptions};

/// The source track's bitrate in the daemon's defaults.
const KBPS: u32 = 2500;

/// One encoder's figures.
struct Figures {
    cpu_percent: f64,
    latency_p50: Duration,
    latency_p95: Duration,
    kbps: f64,
}

/// Runs every encoder this build has on the test pattern and on `footage`, and prints
/// their figures and CPU ratios to openh264.
pub(super) fn run(secs: u64, footage: Option<&Path>) -> anyhow::Result<()> {
    // Steady encoders need less time than a daemon with viewers to give stable figures.
    let secs = secs.min(3);
    let pattern = TestPattern::new(SIZE, FPS as f64);
    // Two seconds of frames, drawn before measuring: only encoding is on the clock.
    let drawn: Vec<Image> = (0..2 * FPS as u64)
        .map(|i| {
            let mut img = Image::i420(SIZE.0, SIZE.1);
            pattern.draw(&mut img, 1_700_000_000_000 + i * 1000 / FPS as u64);
            img
        })
        .collect();
    println!();
    println!(
        "software encoders, {}x{}@{FPS} at {KBPS} kbit/s, the same frames ({secs} s each):",
        SIZE.0, SIZE.1
    );
    compare("test pattern", &drawn, secs);
    let footage = match footage {
        Some(path) => {
            let frames = read_footage(path, 60)?;
            compare(&format!("{}, scaled", path.display()), &frames[..20], secs);
            Some(frames)
        }
        None => None,
    };
    println!();
    println!("openh264, two temporal layers against one, the same frames at {KBPS} kbit/s:");
    for (what, frames) in [
        ("test pattern", Some(&drawn[..])),
        ("footage", footage.as_deref()),
    ] {
        let Some(frames) = frames else { continue };
        match (layers_quality(frames, 1), layers_quality(frames, 2)) {
            (Ok(one), Ok(two)) => println!(
                "  {what:<12} 1 layer {:.1} dB, {:.0} kbit/s; 2 layers {:.1} dB ({:+.2} dB), {:.0} kbit/s; the base layer alone (15 fps) {:.0}% of the bytes",
                one.psnr_db,
                one.kbps,
                two.psnr_db,
                two.psnr_db - one.psnr_db,
                two.kbps,
                two.base_share * 100.0
            ),
            (Err(e), _) | (_, Err(e)) => println!("  {what:<12} not measured: {e:#}"),
        }
    }
    Ok(())
}

/// The [`SIZE`] luma plane in `data` with rows `stride` apart, rows back to back.
fn packed(data: &[u8], stride: usize) -> Vec<u8> {
    let w = SIZE.0 as usize;
    data.chunks(stride)
        .take(SIZE.1 as usize)
        .flat_map(|row| &row[..w])
        .copied()
        .collect()
}

/// What an encoding of some frames gave.
struct LayersQuality {
    /// Mean luma PSNR of the decoded pictures against the frames.
    psnr_db: f64,
    /// Its bitrate at 30 fps.
    kbps: f64,
    /// The share of its bytes in temporal layer 0.
    base_share: f64,
}

/// openh264 with `layers` temporal layers on `frames` (twice over, the second time
/// measured): the picture quality its bitrate buys.
fn layers_quality(frames: &[Image], layers: u8) -> anyhow::Result<LayersQuality> {
    let mut encoder = encode::open(&EncoderSpec::OpenH264, &settings(layers))?;
    let mut decoder = openh264::decoder::Decoder::new()?;
    let mut out = Vec::new();
    let (mut bytes, mut base, mut psnr, mut n) = (0usize, 0usize, 0.0, 0usize);
    for (i, img) in frames.iter().chain(frames).enumerate() {
        encoder.submit(img, CaptureTime::now(), false)?;
        out.clear();
        let Some(unit) = encoder.poll(&mut out)? else {
            continue;
        };
        let Some(picture) = decoder.decode(&out)? else {
            continue;
        };
        if i < frames.len() {
            continue;
        }
        use openh264::formats::YUVSource;
        let luma = img.planes().next().expect("an I420 image has planes");
        let (want, got) = (
            packed(luma.data(), luma.stride()),
            packed(picture.y(), picture.strides().0),
        );
        psnr += crate::picture::psnr(&got, &want, SIZE.0 as usize, 0);
        n += 1;
        bytes += out.len();
        if unit.temporal_layer == 0 {
            base += out.len();
        }
    }
    anyhow::ensure!(n > 0, "nothing decoded");
    Ok(LayersQuality {
        psnr_db: psnr / n as f64,
        kbps: bytes as f64 * 8.0 * FPS as f64 / n as f64 / 1000.0,
        base_share: base as f64 / bytes.max(1) as f64,
    })
}

/// Each encoder in a daemon with one viewer: first frame, latency, CPU.
pub(super) fn through_daemon(lab: &Lab, secs: u64) -> anyhow::Result<()> {
    let secs = secs.min(3);
    println!();
    println!("each encoder in the daemon, 720p30 test source, one viewer ({secs} s each):");
    for encoder in ["openh264", "gst:x264enc"] {
        match daemon_figures(lab, secs, encoder) {
            Ok((first, (p50, p95), cpu)) => println!(
                "  {encoder:<12} first frame {} ms, latency p50 {p50} / p95 {p95} ms, daemon {cpu:.1}% CPU",
                first.as_millis()
            ),
            Err(e) => println!("  {encoder:<12} not measured: {e:#}"),
        }
    }
    Ok(())
}

fn daemon_figures(
    lab: &Lab,
    secs: u64,
    encoder: &str,
) -> anyhow::Result<(Duration, (u32, u32), f64)> {
    let daemon = lab.daemon(&[
        "--source",
        "test",
        "--size",
        "1280x720",
        "--fps",
        "30",
        "--encoder",
        encoder,
    ])?;
    let viewer = Receiver::connect(daemon.addr, ReceiverOptions::default())?;
    let (first, ok) = viewer.wait_for(Duration::from_secs(10), |s| {
        s.tracks.iter().all(|t| t.first_frame.is_some())
    });
    if !ok {
        anyhow::bail!("no frames within 10 s");
    }
    let first = first
        .tracks
        .iter()
        .filter_map(|t| t.first_frame)
        .max()
        .unwrap_or_default();
    viewer.reset_counters();
    let cpu = daemon.cpu_percent_over(Duration::from_secs(secs))?;
    let latency = latencies(&viewer.stats());
    drop(viewer);
    stop(daemon)?;
    Ok((first, latency, cpu))
}

/// The first `n` frames of a .y4m file, scaled to [`SIZE`].
fn read_footage(path: &Path, n: usize) -> anyhow::Result<Vec<Image>> {
    let mut file = Y4mFile::open(path, Some(SIZE))?;
    (0..n)
        .map(|_| {
            let mut img = Image::new(file.layout());
            file.capture(&mut img, None)?;
            Ok(img)
        })
        .collect()
}

fn compare(what: &str, frames: &[Image], secs: u64) {
    println!("  {what}:");
    let mut baseline = None;
    for spec in [EncoderSpec::OpenH264, EncoderSpec::Gst("x264enc".into())] {
        match measure(&spec, frames, secs) {
            Ok(f) => {
                let ratio = baseline
                    .map(|b: f64| format!(", {:.2}x openh264's CPU", f.cpu_percent / b.max(0.1)))
                    .unwrap_or_default();
                println!(
                    "    {spec:<12} {:5.1}% CPU, submit to access unit p50 {:.1} ms / p95 {:.1} ms, {:.0} kbit/s{ratio}",
                    f.cpu_percent,
                    f.latency_p50.as_secs_f64() * 1000.0,
                    f.latency_p95.as_secs_f64() * 1000.0,
                    f.kbps
                );
                baseline.get_or_insert(f.cpu_percent);
            }
            Err(e) => println!("    {spec:<12} not measured: {e}"),
        }
    }
}

/// The source track's picture at [`KBPS`], a keyframe every 2 s, in `temporal_layers`.
fn settings(temporal_layers: u8) -> EncoderSettings {
    EncoderSettings {
        width: SIZE.0,
        height: SIZE.1,
        format: PixelFormat::I420,
        fps: FPS as f64,
        bitrate_kbps: KBPS,
        keyframe_interval: 2 * FPS,
        temporal_layers,
    }
}

fn measure(spec: &EncoderSpec, frames: &[Image], secs: u64) -> anyhow::Result<Figures> {
    let mut encoder = encode::open(spec, &settings(1))?;
    // Half a second of warm-up: GStreamer's pipeline and the rate controls settle.
    let mut out = Vec::with_capacity(1 << 18);
    for img in frames.iter().take(FPS as usize / 2) {
        encoder.submit(img, CaptureTime::now(), false)?;
        while encoder.poll(&mut out)?.is_some() {}
    }
    let interval = Duration::from_secs_f64(1.0 / FPS as f64);
    let mut latencies = Vec::new();
    let mut bytes = 0usize;
    let start_cpu = process_cpu_ticks()?;
    let start = Instant::now();
    let mut next = start;
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        let submitted = Instant::now();
        encoder.submit(&frames[i % frames.len()], CaptureTime::now(), i % 60 == 0)?;
        out.clear();
        while encoder.poll(&mut out)?.is_some() {
            latencies.push(submitted.elapsed());
        }
        bytes += out.len();
        i += 1;
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ticks = process_cpu_ticks()? - start_cpu;
    if latencies.is_empty() {
        anyhow::bail!("no access unit came out");
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok(Figures {
        cpu_percent: ticks as f64 / focusd::service::procfs::TICKS_PER_SECOND / elapsed * 100.0,
        latency_p50: at(0.5),
        latency_p95: at(0.95),
        kbps: bytes as f64 * 8.0 / 1000.0 / elapsed,
    })
}

/// utime + stime of this whole process, every thread (GStreamer's and x264's included).
fn process_cpu_ticks() -> anyhow::Result<u64> {
    Ok(focusd::service::procfs::cpu_ticks("self")?)
}
