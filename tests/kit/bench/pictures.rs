//! Picture-door figures: the two JPEG encoders on one 720p frame; then at 720p30, what
//! open but idle doors cost against closed ones, and per door (and RTSP) one consumer's
//! CPU over that idle daemon, its pictures a second, bytes a picture and latency from
//! capture to received (RTSP: to decoded by rtspsrc), beside a WebRTC viewer's (stamp to
//! decoded) in the same run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use focusd::state::unix_ms;
use focusd_board::image::Image;
use focusd_board::jpeg::JpegEncoder;
use focusd_board::source::TestPattern;

use super::{Lab, SIZE, latencies, stop, verdict};
use crate::http::{self, TEST_TOKEN};
use crate::receiver::{Receiver, ReceiverOptions};

/// What one consumer got: bytes and capture-to-received latency of each picture, and
/// when it received the first and the last one counted.
#[derive(Default)]
struct Got {
    bytes: Vec<usize>,
    latency_ms: Vec<f64>,
    span: Option<(Instant, Instant)>,
}

impl Got {
    fn add(&mut self, bytes: usize, latency_ms: f64) {
        let now = Instant::now();
        self.span = Some((self.span.map_or(now, |s| s.0), now));
        self.bytes.push(bytes);
        self.latency_ms.push(latency_ms);
    }

    /// Pictures a second, bytes a picture, median latency.
    fn summary(&self) -> (f64, f64, f64) {
        let n = self.bytes.len().max(1) as f64;
        let mut l = self.latency_ms.clone();
        l.sort_by(f64::total_cmp);
        let p50 = l.get(l.len() / 2).copied().unwrap_or(f64::NAN);
        let rate = self.span.map_or(0.0, |(a, b)| {
            (self.bytes.len() as f64 - 1.0) / b.duration_since(a).as_secs_f64().max(1e-3)
        });
        (rate, self.bytes.iter().sum::<usize>() as f64 / n, p50)
    }
}

/// Measures and prints the picture doors' figures.
pub(super) fn run(lab: &Lab, secs: u64) -> anyhow::Result<()> {
    println!();
    jpeg_encoders()?;
    let rtsp_port = crate::free_port();
    let daemon = lab.daemon_with_config(
        "pictures",
        &format!("[rtsp]\nport = {rtsp_port}\n"),
        &["--source", "test", "--size", "1280x720", "--fps", "30"],
    )?;
    let addr = daemon.addr;
    let viewer = Receiver::connect(
        addr,
        ReceiverOptions {
            keep_frames: false,
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
    let doors = |enabled: bool| {
        let door = format!("{{\"enabled\":{enabled}}}");
        let body = format!(
            "{{\"snapshot\":{door},\"mjpeg\":{door},\"ws_jpeg\":{door},\"ws_frames\":{door}}}"
        );
        http::request(
            addr,
            "PUT",
            "/api/streams",
            Some("application/json"),
            body.as_bytes(),
        )
    };
    let window = Duration::from_secs(secs);
    doors(false)?;
    let closed = daemon.cpu_percent_over(window)?;
    doors(true)?;
    let open = daemon.cpu_percent_over(window)?;
    viewer.reset_counters();

    let mut rows = Vec::new();
    // MJPEG at 10 a second, quality 80.
    let (cpu, got) = consume(&daemon, window, move |stop| {
        mjpeg(addr, "/stream.mjpeg?fps=10&quality=80", stop)
    })?;
    rows.push(("MJPEG 10 fps q80", cpu - open, got.summary()));
    // Raw frames, zstd, through the README's Python client.
    let (cpu, got) = consume(&daemon, window, move |stop| {
        python_frames(addr, "codec=zstd", stop)
    })?;
    rows.push(("/ws/frames zstd 30 fps", cpu - open, got.summary()));
    // RTSP: the source's own H.264, decoded by GStreamer; bytes a picture are the
    // encoder's.
    let encoded = |what: &str| daemon.metric(&format!("focusd_{what}{{track=\"source\"}}"));
    let before = (
        encoded("bytes_encoded_total"),
        encoded("frames_encoded_total"),
    );
    let (cpu, mut got) = consume(&daemon, window, move |stop| rtsp(addr, rtsp_port, stop))?;
    let frames = encoded("frames_encoded_total") - before.1;
    let per_frame = (encoded("bytes_encoded_total") - before.0) / frames.max(1.0);
    got.bytes.iter_mut().for_each(|b| *b = per_frame as usize);
    rows.push(("RTSP source (rtspsrc, TCP)", cpu - open, got.summary()));
    // Snapshots back to back.
    let (cpu, got) = consume(&daemon, window, move |stop| snapshots(addr, stop))?;
    rows.push(("snapshots q80, back to back", cpu - open, got.summary()));
    let webrtc = latencies(&viewer.stats());
    drop(viewer);
    stop(daemon)?;

    println!("picture doors at 720p30 (one consumer each; CPU over the idle daemon)");
    println!(
        "{:<30} {:>10} {:>10} {:>12} {:>12}",
        "door", "CPU %", "pictures/s", "bytes/pic", "latency p50"
    );
    for (name, cpu, (rate, bytes, p50)) in &rows {
        println!("{name:<30} {cpu:>10.1} {rate:>10.1} {bytes:>12.0} {p50:>9.0} ms");
    }
    println!(
        "{:<30} {:>10} {:>10} {:>12} {:>9} ms  (stamp to decoded)",
        "WebRTC viewer (same run)", "-", "-", "-", webrtc.0
    );
    verdict(
        "open idle doors vs closed: daemon CPU",
        &format!("{open:.1} vs {closed:.1}%"),
        "within noise",
        open <= closed * 1.1 + 1.0,
    );
    Ok(())
}

/// Runs `consumer` (given a stop flag) on a thread while the daemon's CPU is measured over
/// `window` (after a second of warming up); what it got.
fn consume(
    daemon: &crate::process::DaemonProcess,
    window: Duration,
    consumer: impl FnOnce(Arc<AtomicBool>) -> anyhow::Result<Got> + Send + 'static,
) -> anyhow::Result<(f64, Got)> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let worker = std::thread::spawn(move || consumer(flag));
    std::thread::sleep(Duration::from_secs(1));
    let cpu = daemon.cpu_percent_over(window)?;
    stop.store(true, Ordering::Relaxed);
    let got = worker
        .join()
        .map_err(|_| anyhow::anyhow!("consumer panicked"))??;
    Ok((cpu, got))
}

/// Reads an MJPEG stream until `stop`: each part's size and latency.
fn mjpeg(addr: SocketAddr, path: &str, stop: Arc<AtomicBool>) -> anyhow::Result<Got> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\r\n"
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(s);
    let mut got = Got::default();
    let started = Instant::now();
    let (mut len, mut captured) = (None, None);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("the MJPEG stream ended");
        }
        let l = line.trim_end();
        if let Some(v) = l.strip_prefix("Content-Length: ") {
            len = Some(v.parse::<usize>()?);
        } else if let Some(v) = l.strip_prefix("X-Capture-Time-Ms: ") {
            captured = Some(v.parse::<u64>()?);
        } else if l.is_empty()
            && let (Some(n), Some(at)) = (len.take(), captured.take())
        {
            let mut jpeg = vec![0; n];
            r.read_exact(&mut jpeg)?;
            // Pictures of the first half second are the warm-up.
            if started.elapsed() > Duration::from_millis(500) {
                got.add(n, unix_ms().saturating_sub(at) as f64);
            }
        }
    }
    Ok(got)
}

/// Runs `docs/examples/frames.py` until `stop`: each frame's size and latency.
fn python_frames(addr: SocketAddr, query: &str, stop: Arc<AtomicBool>) -> anyhow::Result<Got> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let url = format!("ws://{addr}/ws/frames?{query}&token={TEST_TOKEN}");
    let mut child = Command::new(root.join("tests/.venv/bin/python"))
        .arg(root.join("docs/examples/frames.py"))
        .args([&url, "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("tests/.venv (tests/run.sh installs it)")?;
    let out = BufReader::new(child.stdout.take().context("stdout")?);
    let mut got = Got::default();
    let started = Instant::now();
    for line in out.lines() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        if started.elapsed() > Duration::from_millis(500) {
            got.add(
                v["bytes"].as_u64().unwrap_or(0) as usize,
                v["latency_ms"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(got)
}

/// Plays the source over RTSP with GStreamer's rtspsrc (no jitter buffer: `latency=0`),
/// decoding to grey pictures, until `stop`: each picture's latency from its stamp (its
/// size is left 0: the caller knows the encoder's). ffmpeg's RTSP client holds about 70 ms
/// more here.
fn rtsp(addr: SocketAddr, port: u16, stop: Arc<AtomicBool>) -> anyhow::Result<Got> {
    let url = format!("location=rtsp://{}:{port}/source", addr.ip());
    let mut child = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "rtspsrc",
            &url,
            "latency=0",
            "protocols=tcp",
            "user-id=focusd",
        ])
        .arg(format!("user-pw={TEST_TOKEN}"))
        .args([
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "!",
            "videoconvert",
        ])
        .args(["!", "video/x-raw,format=GRAY8", "!", "fdsink"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("gst-launch-1.0")?;
    let mut out = child.stdout.take().context("stdout")?;
    let (w, h) = SIZE;
    let mut picture = vec![0u8; (w * h) as usize];
    let mut got = Got::default();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        out.read_exact(&mut picture)?;
        if started.elapsed() > Duration::from_millis(500)
            && let Some(s) = focusd_board::stamp::read(&picture, w, h, w as usize)
        {
            got.add(0, focusd_board::stamp::age_ms(s, unix_ms()) as f64);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(got)
}

/// Asks for snapshots one after another until `stop`.
fn snapshots(addr: SocketAddr, stop: Arc<AtomicBool>) -> anyhow::Result<Got> {
    let mut got = Got::default();
    while !stop.load(Ordering::Relaxed) {
        let r = http::request(addr, "GET", "/snapshot.jpg", None, b"")?;
        if r.status != 200 {
            bail!("snapshot: {} {}", r.status, r.text());
        }
        let at: u64 = r.header("x-capture-time-ms").unwrap_or("0").parse()?;
        got.add(r.body.len(), unix_ms().saturating_sub(at) as f64);
    }
    Ok(got)
}

/// Both JPEG encoders on the same 720p test-pattern frame at quality 80.
fn jpeg_encoders() -> anyhow::Result<()> {
    let pattern = TestPattern::new(SIZE, 30.0);
    let mut image = Image::i420(SIZE.0, SIZE.1);
    pattern.draw(&mut image, 1_700_000_000_000);
    println!("JPEG of one 1280x720 frame at quality 80 (median of 30)");
    for mut encoder in [JpegEncoder::new(), JpegEncoder::pure()] {
        let mut out = Vec::new();
        let mut times: Vec<f64> = (0..30)
            .map(|_| {
                let t = Instant::now();
                encoder
                    .encode(&image, 80, &mut out)
                    .map(|()| t.elapsed().as_secs_f64() * 1000.0)
            })
            .collect::<Result<_, _>>()?;
        times.sort_by(f64::total_cmp);
        println!(
            "  {:<14} {:>6.2} ms {:>8} bytes",
            encoder.name(),
            times[15],
            out.len()
        );
    }
    Ok(())
}
