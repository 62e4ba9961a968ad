//! The daemon with its GStreamer backend (built with `--features gstreamer`): x264enc as
//! both tracks' encoder, and real footage in an mp4 through decodebin, each decoded by a
//! str0m viewer.
#![cfg(feature = "gstreamer")]

use std::time::Duration;

use focusd_testkit::picture::real_footage;
use focusd_testkit::receiver::{Receiver, ReceiverOptions};
use focusd_testkit::{TempDir, TestDaemon};

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn x264enc_encodes_both_tracks_for_a_viewer() {
    let d = TestDaemon::start(&["--source", "test", "--encoder", "gst:x264enc"]);
    assert_eq!(d.state().encoder, "gst:x264enc");
    let r = Receiver::connect(d.addr, ReceiverOptions::default()).unwrap();
    let (s, ok) = r.wait_for(WAIT, |s| s.tracks.iter().all(|t| t.decoded >= 15));
    assert!(
        ok,
        "both tracks decode: {:?}",
        s.tracks.each_ref().map(|t| t.decoded)
    );
    assert_eq!(s.tracks[0].size, Some((320, 180)));
    assert_eq!(s.tracks[1].size, Some((1280, 720)));
    for t in &s.tracks {
        assert_eq!(t.decode_errors, 0);
        let mut l = t.latencies_ms.clone();
        l.sort();
        assert!(l.len() >= 10, "the stamp is read on every track");
        println!("x264enc latency p50 {} ms", l[l.len() / 2]);
        assert!(l[l.len() / 2] < 500, "plausible latency {l:?}");
    }
}

#[test]
fn real_footage_in_an_mp4_plays_through_decodebin() {
    let footage = real_footage().expect("tests/.media/vtest.y4m: run tests/media.sh");
    let dir = TempDir::new("mp4");
    let mp4 = dir.path().join("vtest.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-t", "3", "-i"])
        .arg(&footage)
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(&mp4)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg makes an mp4 of the footage");
    let source = format!("file:{}", mp4.display());
    let d = TestDaemon::start(&["--source", &source]);
    assert!(
        d.state().source.starts_with("file "),
        "{}",
        d.state().source
    );
    let r = Receiver::connect(d.addr, ReceiverOptions::default()).unwrap();
    let (s, ok) = r.wait_for(WAIT, |s| s.tracks.iter().all(|t| t.decoded >= 20));
    assert!(
        ok,
        "both tracks decode: {:?}",
        s.tracks.each_ref().map(|t| t.decoded)
    );
    assert_eq!(s.tracks[1].size, Some((768, 576)), "the footage's own size");
    assert_eq!(s.tracks[0].size, Some((320, 240)));
}
