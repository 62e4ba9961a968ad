//! The GStreamer backend with Debian's plugins: a pipeline ending in an appsink, an mp4
//! through decodebin (looped), an RTSP camera served by GStreamer's rtsp-server that goes
//! away and comes back, and x264enc as an encoder whose output openh264 decodes.
#![cfg(feature = "gstreamer")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use focusd_board::encode::gst::GstEncoder;
use focusd_board::encode::{EncodeError, EncoderSettings, VideoEncoder};
use focusd_board::frame::CaptureTime;
use focusd_board::image::{Image, PixelFormat};
use focusd_board::source::{self, FrameSource, SourceError, SourceSpec, TestPattern};
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("focusd-gst-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open(spec: &str, size: Option<(u32, u32)>) -> Result<Box<dyn FrameSource>, SourceError> {
    let spec: SourceSpec = spec.parse().unwrap();
    source::open(
        &spec,
        source::Wanted {
            size: size.unwrap_or((2, 2)),
            fps: 30.0,
            scale_file: size.is_some(),
            lores_width: 320,
        },
    )
}

/// Takes `n` pictures; checks each is a picture, not a flat field.
fn capture(source: &mut dyn FrameSource, n: usize) -> Image {
    let mut img = Image::new(source.layout());
    for _ in 0..n {
        source.capture(&mut img, None).expect("a picture");
    }
    let luma = img.luma();
    let (lo, hi) = (0..luma.height())
        .flat_map(|y| luma.row(y).iter().copied())
        .fold((255u8, 0u8), |(lo, hi), p| (lo.min(p), hi.max(p)));
    assert!(hi - lo > 100, "a picture: luma {lo}..{hi}");
    img
}

#[test]
fn a_pipeline_ending_in_an_appsink() {
    let mut source = open(
        "gst:videotestsrc is-live=true pattern=smpte ! video/x-raw,width=320,height=240,framerate=30/1 ! appsink",
        None,
    )
    .unwrap();
    assert_eq!(source.layout().size(), (320, 240));
    assert_eq!(source.fps(), 30.0);
    capture(source.as_mut(), 5);
    assert!(
        source.describe().starts_with("gst videotestsrc"),
        "{}",
        source.describe()
    );

    let err = open("gst:videotestsrc ! fakesink", None)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("must end in an appsink"), "{err}");
    let err = open("gst:nosuchelement ! appsink", None)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("nosuchelement"), "{err}");
}

#[test]
fn a_pipeline_with_its_own_low_resolution_picture() {
    // Two appsinks, as libcamera's two ISP streams or a hardware scaler give them.
    let mut source = open(
        "gst:videotestsrc is-live=true pattern=smpte ! video/x-raw,width=640,height=360,framerate=30/1,format=NV12 ! tee name=t \
         t. ! queue ! appsink name=focusd \
         t. ! queue ! videoscale ! video/x-raw,width=320,height=180 ! appsink name=lores",
        None,
    )
    .unwrap();
    assert_eq!(source.layout().size(), (640, 360));
    let lores_layout = source
        .lores_layout()
        .expect("the pipeline's own lores picture");
    assert_eq!(lores_layout.size(), (320, 180));
    let mut main = Image::new(source.layout());
    let mut lores = Image::new(lores_layout);
    for _ in 0..5 {
        source.capture(&mut main, Some(&mut lores)).unwrap();
    }
    // The same picture at both sizes: the middle of each of SMPTE's seven bars.
    let (big, small) = (main.luma(), lores.luma());
    for (x, y) in (0..7).map(|bar| (46 + bar * 91, 100)) {
        let (a, b) = (big.row(y)[x], small.row(y / 2)[x / 2]);
        assert!(a.abs_diff(b) < 12, "({x},{y}): {a} vs {b}");
    }

    let err = open(
        "gst:videotestsrc ! tee name=t t. ! queue ! appsink name=a t. ! queue ! appsink name=b",
        None,
    )
    .err()
    .expect("two appsinks, neither named");
    assert!(err.to_string().contains("`focusd` and `lores`"), "{err}");
}

#[test]
fn an_mp4_through_decodebin_scaled_and_looped() {
    let dir = temp_dir("mp4");
    let mp4 = dir.join("clip.mp4");
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=640x480:rate=20:duration=0.5")
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(&mp4)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg makes an mp4");
    let mut source = open(&format!("file:{}", mp4.display()), Some((320, 240))).unwrap();
    assert_eq!(source.layout().size(), (320, 240), "scaled to --size");
    assert_eq!(source.fps(), 20.0);
    // 10 pictures in the file: 25 means it looped.
    let started = Instant::now();
    capture(source.as_mut(), 25);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "paced at the file's rate: {:?}",
        started.elapsed()
    );
    let native = open(&format!("file:{}", mp4.display()), None).unwrap();
    assert_eq!(
        native.layout().size(),
        (640, 480),
        "native size without --size"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// GStreamer's RTSP server on a free port, run by tests/rtsp/server.py.
struct RtspServer {
    child: Child,
    url: String,
}

impl RtspServer {
    fn start(port: u16) -> RtspServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/rtsp/server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the RTSP server starts");
        RtspServer {
            child,
            url: format!("rtsp://127.0.0.1:{port}/test"),
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_rtsp_camera_that_goes_away_and_comes_back() {
    let port = free_port();
    let server = RtspServer::start(port);
    let mut source = open(&server.url, None).unwrap();
    assert_eq!(source.layout().size(), (640, 360));
    capture(source.as_mut(), 10);
    // The camera goes away: a capture error within the stall time, not a hang.
    drop(server);
    let started = Instant::now();
    let mut img = Image::new(source.layout());
    let err = loop {
        match source.capture(&mut img, None) {
            Err(e) => break e,
            Ok(_) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "still capturing"
            ),
        }
    };
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "noticed in {:?}",
        started.elapsed()
    );
    println!("RTSP camera gone: {err}");
    drop(source);
    // Opening fails while it is away, and works once it is back.
    assert!(open(&format!("rtsp://127.0.0.1:{port}/test"), None).is_err());
    let server = RtspServer::start(port);
    let mut source = open(&server.url, Some((320, 180))).unwrap();
    assert_eq!(source.layout().size(), (320, 180));
    capture(source.as_mut(), 5);
}

fn settings(width: u32, height: u32, kbps: u32) -> EncoderSettings {
    EncoderSettings {
        width,
        height,
        format: PixelFormat::I420,
        fps: 30.0,
        bitrate_kbps: kbps,
        keyframe_interval: 0,
        temporal_layers: 1,
    }
}

#[test]
fn x264enc_encodes_what_openh264_decodes_with_keyframes_on_request() {
    let mut enc = GstEncoder::new("x264enc", &settings(320, 180, 800)).unwrap();
    assert_eq!(enc.name(), "gst:x264enc");
    let pattern = TestPattern::new((320, 180), 30.0);
    let mut img = Image::i420(320, 180);
    let mut dec = Decoder::new().unwrap();
    let mut kinds = Vec::new();
    let mut out = Vec::new();
    let start = CaptureTime::now();
    for i in 0..40u64 {
        let ms = 5_000_000 + i * 33;
        pattern.draw(&mut img, ms);
        let captured = CaptureTime {
            at: start.at + Duration::from_millis(i * 33),
            wallclock_ms: ms,
        };
        enc.submit(&img, captured, i == 0 || i == 30).unwrap();
        while let Some(unit) = {
            out.clear();
            enc.poll(&mut out).unwrap()
        } {
            assert!(out.starts_with(&[0, 0, 0, 1]), "Annex B");
            kinds.push((unit.captured.wallclock_ms, unit.keyframe));
            let picture = dec.decode(&out).unwrap().expect("a picture per unit");
            let (w, h) = picture.dimensions();
            assert_eq!((w, h), (320, 180));
            let stamp = focusd_board::stamp::read(picture.y(), 320, 180, picture.strides().0);
            assert_eq!(
                stamp,
                Some(unit.captured.wallclock_ms as u32),
                "its own capture time"
            );
        }
    }
    assert!(
        kinds.len() >= 38,
        "nearly every picture comes out: {}",
        kinds.len()
    );
    assert!(kinds[0].1, "the first is a keyframe");
    let requested = kinds.iter().find(|(ms, _)| *ms == 5_000_000 + 30 * 33);
    assert_eq!(
        requested.map(|k| k.1),
        Some(true),
        "a keyframe where asked: {kinds:?}"
    );
    assert!(
        kinds.iter().filter(|k| k.1).count() <= 3,
        "no keyframes but those asked for: {kinds:?}"
    );
    let mut rest = Vec::new();
    enc.finish(&mut rest).unwrap();
    assert!(matches!(
        enc.submit(&img, CaptureTime::now(), false),
        Err(EncodeError::Finished)
    ));
}

#[test]
fn x264enc_follows_a_live_bitrate_change() {
    let pattern = TestPattern::new((640, 360), 30.0);
    let mut img = Image::i420(640, 360);
    let mut enc = GstEncoder::new("x264enc", &settings(640, 360, 2000)).unwrap();
    let mut out = Vec::new();
    let start = CaptureTime::now();
    let mut run = |enc: &mut GstEncoder, from: u64| {
        let mut bytes = 0;
        for i in from..from + 30 {
            pattern.draw(&mut img, 5_000_000 + i * 33);
            let captured = CaptureTime {
                at: start.at + Duration::from_millis(i * 33),
                ..start
            };
            enc.submit(&img, captured, false).unwrap();
            out.clear();
            while enc.poll(&mut out).unwrap().is_some() {}
            bytes += out.len();
        }
        bytes
    };
    run(&mut enc, 0);
    let high = run(&mut enc, 30);
    enc.set_bitrate(100).unwrap();
    run(&mut enc, 60);
    let low = run(&mut enc, 90);
    assert!(
        low * 2 < high,
        "100 kbit/s spends less than half of 2000: {low} vs {high}"
    );
}

#[test]
fn a_missing_or_malformed_element_is_a_configuration_error() {
    for element in ["nosuchenc", "x264enc bitrate=5", "x264enc ! fakesink"] {
        let err = GstEncoder::new(element, &settings(320, 180, 500)).unwrap_err();
        assert!(err.is_config(), "{element}: {err}");
    }
}
