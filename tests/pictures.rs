//! The picture doors, each read by a real client: `curl` and ffmpeg for the snapshot and
//! MJPEG, the README's Python client (websockets, numpy, zstandard, lz4) for raw frames;
//! the stamp is read after decoding, a file's frames compare pixel-exact, and stalled
//! readers on every door leave the WebRTC viewers' frame rate alone.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use focusd::state::unix_ms;
use focusd_board::stamp;
use focusd_testkit::http::TEST_TOKEN;
use focusd_testkit::receiver::{Receiver, ReceiverOptions};
use focusd_testkit::{TempDir, TestDaemon};

const WAIT: Duration = Duration::from_secs(10);

/// What `curl` fetched.
struct Fetched {
    /// `%{http_code}`; 0 when curl got no response.
    status: u16,
    /// The response body.
    body: Vec<u8>,
    /// The wall-clock time curl ended, in ms since the epoch: the ages of the stamps in
    /// the body are measured at it, not after the decoders ran (two more processes).
    done_ms: u64,
}

/// `curl` with the kit's token.
fn curl(url: &str, extra: &[&str]) -> Fetched {
    let dir = TempDir::new("curl");
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .args(["-sS", "-H", &format!("Authorization: Bearer {TEST_TOKEN}")])
        .args(extra)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}", url])
        .output()
        .expect("curl runs");
    let done_ms = unix_ms();
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Fetched {
        status,
        body: std::fs::read(&body).unwrap_or_default(),
        done_ms,
    }
}

/// Decodes a JPEG with ffmpeg into its luma plane; `(width, height, luma)`.
fn decode_jpeg(jpeg: &[u8]) -> (u32, u32, Vec<u8>) {
    let dir = TempDir::new("jpeg");
    let file = dir.path().join("in.jpg");
    std::fs::write(&file, jpeg).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=width,height", "-of", "csv=p=0"])
        .arg(&file)
        .output()
        .expect("ffprobe runs");
    let dims = String::from_utf8_lossy(&probe.stdout);
    let (w, h) = dims
        .trim()
        .split_once(',')
        .map(|(w, h)| (w.parse().unwrap(), h.parse().unwrap()))
        .unwrap_or_else(|| panic!("ffprobe reads a JPEG: {dims} {:?}", probe));
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .expect("ffmpeg runs");
    assert_eq!(
        out.stdout.len(),
        (w * h) as usize,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (w, h, out.stdout)
}

/// The age of the stamp in a decoded luma plane at `at_ms`, in ms.
fn stamp_age(w: u32, h: u32, luma: &[u8], at_ms: u64) -> u32 {
    let s = stamp::read(luma, w, h, w as usize).expect("the stamp is readable");
    stamp::age_ms(s, at_ms)
}

/// The JPEG parts of a `multipart/x-mixed-replace` body.
fn mjpeg_parts(body: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut at = 0;
    while let Some(start) = find(&body[at..], b"Content-Length: ") {
        let from = at + start + 16;
        let Some(end) = find(&body[from..], b"\r\n") else {
            break;
        };
        let len: usize = std::str::from_utf8(&body[from..from + end])
            .unwrap()
            .parse()
            .unwrap();
        let Some(head_end) = find(&body[from..], b"\r\n\r\n") else {
            break;
        };
        let data = from + head_end + 4;
        if data + len > body.len() {
            break;
        }
        parts.push(&body[data..data + len]);
        at = data + len;
    }
    parts
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A reader that asks for `path` and then never reads: its socket fills and stays full.
fn stalled_reader(addr: std::net::SocketAddr, path: &str, websocket: bool) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let upgrade = if websocket {
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    } else {
        ""
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TEST_TOKEN}\r\n{upgrade}\r\n"
    )
    .unwrap();
    s
}

#[test]
fn snapshot_is_a_jpeg_of_the_newest_frame_as_the_track_shows_it() {
    let d = TestDaemon::start(&["--source", "test", "--size", "640x360"]);
    let base = format!("http://{}", d.addr);
    let jpeg = curl(&format!("{base}/snapshot.jpg"), &[]);
    assert_eq!(jpeg.status, 200);
    let (w, h, luma) = decode_jpeg(&jpeg.body);
    assert_eq!((w, h), (640, 360));
    let age = stamp_age(w, h, &luma, jpeg.done_ms);
    assert!(age < 1000, "the newest frame: {age} ms old");

    let context = curl(
        &format!("{base}/snapshot.jpg?track=context&quality=30"),
        &[],
    );
    assert_eq!(context.status, 200);
    let (w, h, _) = decode_jpeg(&context.body);
    assert_eq!((w, h), (320, 180));
    let small = curl(&format!("{base}/snapshot.jpg?quality=10"), &[]).body;
    let large = curl(&format!("{base}/snapshot.jpg?quality=95"), &[]).body;
    assert!(
        small.len() * 2 < large.len(),
        "quality 10: {} B, 95: {} B",
        small.len(),
        large.len()
    );

    // HYBRID limited to the bottom-left corner: the rest of the source is black but for
    // the stamp.
    let hybrid = r#"{"mode":"HYBRID","hybrid_rect":{"x1":0,"y1":90,"x2":10,"y2":100}}"#;
    assert_eq!(d.command(hybrid).status, 200);
    let masked = curl(&format!("{base}/snapshot.jpg"), &[]);
    let (w, h, luma) = decode_jpeg(&masked.body);
    let right_half: Vec<u8> = luma[(w * h / 4) as usize..]
        .chunks(w as usize)
        .flat_map(|row| row[w as usize / 2..].to_vec())
        .collect();
    let mean = right_half.iter().map(|&p| p as u64).sum::<u64>() / right_half.len() as u64;
    assert!(mean < 8, "masked: mean luma {mean}");
    stamp::read(&luma, w, h, w as usize).expect("the stamp is left out of the mask");

    // Bad requests get a reason; LOW has no source picture.
    assert_eq!(d.command(r#"{"mode":"LOW"}"#).status, 200);
    let low = curl(&format!("{base}/snapshot.jpg"), &[]);
    let reason = String::from_utf8_lossy(&low.body);
    assert_eq!(low.status, 409, "{reason}");
    assert!(reason.contains("track=context"), "{reason}");
    for (query, words) in [
        ("track=side", "track"),
        ("quality=0", "quality"),
        ("quality=500", "quality"),
        ("nope=1", "nope"),
    ] {
        let r = d.get(&format!("/snapshot.jpg?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert!(r.text().contains(words), "{query}: {}", r.text());
    }
    let r = focusd_testkit::http::request_with(d.addr, "GET", "/snapshot.jpg", &[], b"").unwrap();
    assert_eq!(r.status, 401, "a snapshot needs the token");
}

/// An RTSP client (ffmpeg over TCP) that stops reading once it plays: SIGSTOPped.
#[cfg(feature = "gstreamer")]
struct StalledRtsp(std::process::Child);

#[cfg(feature = "gstreamer")]
impl StalledRtsp {
    fn start(d: &TestDaemon) -> StalledRtsp {
        let addr = d.rtsp_addr().expect("RTSP listens");
        let mut child = Command::new("ffmpeg")
            .args(["-v", "error", "-rtsp_transport", "tcp", "-i"])
            .arg(format!("rtsp://focusd:{TEST_TOKEN}@{addr}/source"))
            .args(["-f", "null", "-"])
            .stdin(Stdio::null())
            .spawn()
            .expect("ffmpeg runs");
        d.wait_for_metric(
            "focusd_frames_encoded_total{track=\"source\"}",
            1.0,
            WAIT,
            "the RTSP client plays",
        );
        std::thread::sleep(Duration::from_millis(300));
        let stopped = Command::new("kill")
            .args(["-STOP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(stopped.success());
        if let Ok(Some(s)) = child.try_wait() {
            panic!("ffmpeg ended: {s}");
        }
        StalledRtsp(child)
    }
}

#[cfg(feature = "gstreamer")]
impl Drop for StalledRtsp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mjpeg_keeps_its_rate_and_stalled_readers_of_every_door_slow_no_viewer() {
    // A 1 s header timeout: a stream of 3 s must not be taken for an idle connection.
    let mut config = "[http]\nheader_timeout_s = 1\n".to_string();
    if cfg!(feature = "gstreamer") {
        config += "[rtsp]\nport = \"any\"\n";
    }
    let d = TestDaemon::start_with_config(&config, &["--source", "test", "--size", "640x360"]);
    // An RTSP client that stops reading, before the viewer comes (the source's encoder
    // runs for it).
    #[cfg(feature = "gstreamer")]
    let _stalled_rtsp = StalledRtsp::start(&d);
    let viewer = Receiver::connect(
        d.addr,
        ReceiverOptions {
            decode: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(viewer.wait_for(WAIT, |s| s.tracks[1].frames > 10).1);

    // Readers that never read, on each door, and snapshots in a loop.
    let _stalled: Vec<TcpStream> = [
        ("/stream.mjpeg?fps=30&quality=100", false),
        ("/ws/jpeg?quality=100", true),
        ("/ws/frames?codec=none", true),
    ]
    .iter()
    .map(|(path, ws)| stalled_reader(d.addr, path, *ws))
    .collect();
    // One MJPEG reader at 5 a second for 3 s.
    viewer.reset_counters();
    let started = Instant::now();
    let mjpeg = curl(
        &format!("http://{}/stream.mjpeg?fps=5", d.addr),
        &["--max-time", "3"],
    );
    let took = started.elapsed();
    // curl's time limit ends the stream: the status is 0 when curl did not print it.
    assert!(mjpeg.status == 200 || mjpeg.status == 0, "{}", mjpeg.status);
    assert!(
        took >= Duration::from_millis(2900),
        "the stream lasts until its reader stops (curl --max-time 3): {took:?}"
    );
    let parts = mjpeg_parts(&mjpeg.body);
    let rate = parts.len() as f64 / took.as_secs_f64();
    assert!(
        (3.5..=6.0).contains(&rate),
        "{} parts in {took:?}",
        parts.len()
    );
    let (w, h, luma) = decode_jpeg(parts.last().unwrap());
    assert_eq!((w, h), (640, 360));
    let age = stamp_age(w, h, &luma, mjpeg.done_ms);
    assert!(
        age < 1000,
        "the last part: {age} ms old when the stream ended"
    );

    let s = viewer.stats();
    let fps = s.tracks[1].frames as f64 / took.as_secs_f64();
    println!(
        "WebRTC source beside stalled picture readers: {fps:.1} fps, frozen {} ms; door metrics: mjpeg {} ws_jpeg {} ws_frames {}",
        s.tracks[1].freeze_ms,
        d.metric("focusd_door_frames_total{door=\"mjpeg\"}"),
        d.metric("focusd_door_frames_total{door=\"ws_jpeg\"}"),
        d.metric("focusd_door_frames_total{door=\"ws_frames\"}"),
    );
    assert!(fps > 24.0, "the viewer keeps the camera's rate: {fps:.1}");
    assert_eq!(s.tracks[1].freeze_ms, 0, "no freeze");
    assert_eq!(d.metric("focusd_door_consumers{door=\"ws_frames\"}"), 1.0);
}

/// Runs the README's raw-frame client for `count` frames of `query`, dumping planes in
/// `dump`; the metadata of each frame.
fn frames_client(d: &TestDaemon, query: &str, count: usize, dump: &Path) -> Vec<serde_json::Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("tests/.venv/bin/python");
    assert!(
        python.exists(),
        "tests/.venv missing: run tests/run.sh (it installs it)"
    );
    let url = format!("ws://{}/ws/frames?{query}&token={TEST_TOKEN}", d.addr);
    let out = Command::new(python)
        .arg(root.join("docs/examples/frames.py"))
        .args([&url, &count.to_string(), "--dump"])
        .arg(dump)
        .stderr(Stdio::piped())
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// A y4m file of `n` distinct 320x240 frames (ffmpeg's testsrc2).
fn y4m(dir: &Path, n: usize) -> PathBuf {
    let file = dir.join("clip.y4m");
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
        ])
        .args(["-frames:v", &n.to_string(), "-pix_fmt", "yuv420p"])
        .arg(&file)
        .status()
        .expect("ffmpeg runs");
    assert!(ok.success());
    file
}

/// Frame `i` of a 320x240 y4m file: its Y, U and V planes.
fn y4m_frame(file: &Path, i: usize) -> [Vec<u8>; 3] {
    let data = std::fs::read(file).unwrap();
    let (w, h) = (320, 240);
    let size = w * h * 3 / 2;
    let mut at = find(&data, b"\n").unwrap() + 1;
    for _ in 0..i {
        at += find(&data[at..], b"\n").unwrap() + 1 + size;
    }
    at += find(&data[at..], b"\n").unwrap() + 1;
    let f = &data[at..at + size];
    [
        f[..w * h].to_vec(),
        f[w * h..w * h * 5 / 4].to_vec(),
        f[w * h * 5 / 4..].to_vec(),
    ]
}

#[test]
fn raw_frames_reach_python_pixel_exact_and_compressed_with_the_stamp() {
    let dir = TempDir::new("frames");
    let clip = y4m(dir.path(), 7);
    let source = format!("file:{}", clip.display());
    let d = TestDaemon::start(&["--source", &source]);
    let dump = dir.path().join("none");
    std::fs::create_dir(&dump).unwrap();
    let metas = frames_client(&d, "codec=none&track=source", 5, &dump);
    assert_eq!(metas.len(), 5);
    for m in &metas {
        assert_eq!(m["format"], "I420");
        assert_eq!(m["codec"], "none");
        assert_eq!(m["shapes"]["y"], serde_json::json!([240, 320]));
        assert_eq!(m["shapes"]["u"], serde_json::json!([120, 160]));
        let seq = m["seq"].as_u64().unwrap();
        let want = y4m_frame(&clip, seq as usize % 7);
        for (plane, want) in ["y", "u", "v"].iter().zip(&want) {
            let got = std::fs::read(dump.join(format!("{seq}.{plane}"))).unwrap();
            assert!(
                got == *want,
                "frame {seq} plane {plane} is the file's, pixel for pixel"
            );
        }
    }
    drop(d);

    let d = TestDaemon::start(&["--source", "test", "--size", "640x360"]);
    for codec in ["zstd", "lz4"] {
        let dump = dir.path().join(codec);
        std::fs::create_dir(&dump).unwrap();
        let metas = frames_client(&d, &format!("codec={codec}&track=context"), 3, &dump);
        let raw = 320 * 180 * 3 / 2;
        for m in &metas {
            assert_eq!(m["codec"], codec);
            assert_eq!(m["mode"], "HIGH");
            let bytes = m["bytes"].as_u64().unwrap();
            assert!(bytes < raw, "{codec}: {bytes} of {raw} bytes");
            let seq = m["seq"].as_u64().unwrap();
            let y = std::fs::read(dump.join(format!("{seq}.y"))).unwrap();
            let s = stamp::read(&y, 320, 180, 320).expect("the stamp reads after decompression");
            assert_eq!(
                s,
                m["captured_ms"].as_u64().unwrap() as u32,
                "{codec}: stamp = captured_ms"
            );
        }
        println!(
            "{codec}: {} bytes a 320x180 frame (raw {raw})",
            metas[0]["bytes"]
        );
    }
}

#[test]
fn doors_open_and_close_at_run_time() {
    let d = TestDaemon::start(&["--source", "test", "--size", "640x360"]);
    let r = d.get("/api/streams");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["doors"]["mjpeg"]["enabled"], true);
    assert_eq!(v["consumers"]["mjpeg"], 0);

    // A reader of MJPEG, ended when the door closes.
    let mut reader = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-H",
            &format!("Authorization: Bearer {TEST_TOKEN}"),
        ])
        .arg(format!("http://{}/stream.mjpeg", d.addr))
        .spawn()
        .unwrap();
    let mjpeg_consumers = "focusd_door_consumers{door=\"mjpeg\"}";
    d.wait_for_metric(mjpeg_consumers, 1.0, WAIT, "the reader joins");
    let put = |body: &str| d.streams(body);
    let r = put(r#"{"mjpeg":{"enabled":false}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let closed_at = Instant::now();
    let status = loop {
        if let Some(s) = reader.try_wait().unwrap() {
            break s;
        }
        assert!(closed_at.elapsed() < WAIT, "the reader is let go");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the stream ends cleanly");
    let r = d.get("/stream.mjpeg");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("closed"), "{}", r.text());

    // Limits: the second consumer of a one-consumer door is refused.
    assert_eq!(
        put(r#"{"mjpeg":{"enabled":true,"max_consumers":1}}"#).status,
        200
    );
    let _first = stalled_reader(d.addr, "/stream.mjpeg", false);
    d.wait_for_metric(mjpeg_consumers, 1.0, WAIT, "the first reader joins");
    let r = d.get("/stream.mjpeg");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("1 consumers"), "{}", r.text());

    // Bad settings are refused with the field named, and change nothing.
    for (body, words) in [
        (r#"{"mjpeg":{"max_fps":0}}"#, "mjpeg.max_fps"),
        (r#"{"ws_jpeg":{"quality":101}}"#, "ws_jpeg.quality"),
        (r#"{"mjpg":{}}"#, "mjpg"),
        ("not json", "expected"),
    ] {
        let r = put(body);
        assert_eq!(r.status, 400, "{body}");
        assert!(r.text().contains(words), "{body}: {}", r.text());
    }
    let v: serde_json::Value = serde_json::from_slice(&d.get("/api/streams").body).unwrap();
    assert_eq!(v["doors"]["mjpeg"]["max_consumers"], 1);
    assert_eq!(v["doors"]["ws_jpeg"]["quality"], 80);
    let r = focusd_testkit::http::request(d.addr, "PUT", "/api/streams", Some("text/plain"), b"{}")
        .unwrap();
    assert_eq!(r.status, 415);
}
