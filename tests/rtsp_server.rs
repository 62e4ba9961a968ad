//! The RTSP door read by real clients: ffprobe and ffmpeg (which decodes the stamp) and
//! GStreamer's rtspsrc, on both paths, over TCP and UDP, with the token as the password,
//! and refused without it.

#![cfg(feature = "gstreamer")]

use std::process::Command;

use focusd::state::unix_ms;
use focusd_board::stamp;
use focusd_testkit::TestDaemon;
use focusd_testkit::http::TEST_TOKEN;

fn daemon() -> (TestDaemon, String) {
    let d = TestDaemon::start_with_config(
        "[rtsp]\nport = \"any\"\n",
        &["--source", "test", "--size", "640x360"],
    );
    let addr = d.rtsp_addr().expect("RTSP listens");
    assert_ne!(addr.port(), 0, "the port the system picked");
    (d, format!("127.0.0.1:{}", addr.port()))
}

/// ffprobe's `width,height,codec` of a URL's video (over TCP), or its error output.
fn probe(url: &str) -> Result<String, String> {
    probe_over(url, "tcp")
}

/// The same over `transport` (`tcp` or `udp`).
fn probe_over(url: &str, transport: &str) -> Result<String, String> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-timeout",
            "10000000",
        ])
        .args([
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,codec_name",
        ])
        .args(["-of", "csv=p=0", url])
        .output()
        .expect("ffprobe runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn ffprobe_and_ffmpeg_read_both_tracks_with_the_token_and_are_refused_without() {
    let (d, host) = daemon();
    let with = |path: &str| format!("rtsp://focusd:{TEST_TOKEN}@{host}/{path}");
    assert_eq!(probe(&with("source")).as_deref(), Ok("h264,640,360"));
    assert_eq!(probe(&with("context")).as_deref(), Ok("h264,320,180"));
    assert_eq!(
        probe_over(&with("context"), "udp").as_deref(),
        Ok("h264,320,180"),
        "over UDP too"
    );
    // Any user name.
    let other_user = format!("rtsp://nvr:{TEST_TOKEN}@{host}/context");
    assert_eq!(probe(&other_user).as_deref(), Ok("h264,320,180"));
    for url in [
        format!("rtsp://{host}/source"),
        format!("rtsp://focusd:not-the-token-at-all@{host}/source"),
    ] {
        let e = probe(&url).expect_err("refused");
        assert!(e.contains("401"), "{url}: {e}");
    }
    let e = probe(&with("nothing")).expect_err("no such path");
    assert!(e.contains("404"), "{e}");

    // ffmpeg decodes the source; the newest picture's stamp is fresh.
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
            &with("source"),
        ])
        .args(["-frames:v", "15", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .expect("ffmpeg runs");
    let received = unix_ms();
    let frame = 640 * 360;
    assert!(
        out.stdout.len() >= frame * 15,
        "15 pictures decoded: {} bytes; {}",
        out.stdout.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    let last = &out.stdout[out.stdout.len() - frame..];
    let s = stamp::read(last, 640, 360, 640).expect("the stamp reads after RTSP");
    let age = stamp::age_ms(s, received);
    assert!(age < 2000, "the picture is {age} ms old");
    drop(d);
}

#[test]
fn gstreamer_rtspsrc_decodes_both_paths() {
    let (_d, host) = daemon();
    for (path, size) in [("source", "640x360"), ("context", "320x180")] {
        let out = Command::new("timeout")
            .arg("20")
            .arg("gst-launch-1.0")
            .args(["rtspsrc", &format!("location=rtsp://{host}/{path}")])
            .args([
                "user-id=focusd",
                &format!("user-pw={TEST_TOKEN}"),
                "protocols=tcp",
            ])
            .args(["!", "rtph264depay", "!", "h264parse", "!", "avdec_h264"])
            .args([
                "!",
                "video/x-raw",
                "!",
                "identity",
                "silent=false",
                "!",
                "fakesink",
                "num-buffers=10",
            ])
            .arg("-v")
            .output()
            .expect("gst-launch runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{path}: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (w, h) = size.split_once('x').unwrap();
        assert!(
            text.contains(&format!("width=(int){w}")) && text.contains(&format!("height=(int){h}")),
            "{path}: decoded at {size}: {text}"
        );
    }
}

#[test]
fn closing_the_door_ends_the_media_playing_and_refuses_new_clients() {
    let (d, host) = daemon();
    let url = format!("rtsp://focusd:{TEST_TOKEN}@{host}/source");
    let mut player = Command::new("ffmpeg")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-i", &url])
        .args(["-f", "null", "-"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("ffmpeg runs");
    d.wait_for_metric(
        "focusd_frames_encoded_total{track=\"source\"}",
        30.0,
        std::time::Duration::from_secs(10),
        "the RTSP client plays",
    );
    let put = |body: &str| d.streams(body);
    assert_eq!(put(r#"{"rtsp":{"enabled":false}}"#).status, 200);
    let closed_at = std::time::Instant::now();
    loop {
        if player.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            closed_at.elapsed() < std::time::Duration::from_secs(10),
            "the player is told the stream ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let e = probe(&url).expect_err("closed");
    assert!(e.contains("503"), "{e}");
    // Open again: served again.
    assert_eq!(put(r#"{"rtsp":{"enabled":true}}"#).status, 200);
    assert_eq!(probe(&url).as_deref(), Ok("h264,640,360"));
    let r = put(r#"{"rtsp":{"max_fps":5}}"#);
    assert_eq!(r.status, 400, "RTSP has no rate of its own: {}", r.text());
}
