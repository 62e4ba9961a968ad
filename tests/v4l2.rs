//! The daemon with a real V4L2 camera (the vivid driver, in the VM of tests/v4l2vm.sh; the
//! daemon built with `--features v4l2`): a viewer decodes both tracks; the camera is
//! unplugged, and the fault shows in the state, `/healthz` and the metrics while the viewer
//! stays connected and the watchdog's progress goes on; the camera comes back, pictures
//! resume (with a keyframe on each track) and the fault clears.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use focusd::state::Part;
use focusd_testkit::TestDaemon;
use focusd_testkit::process::metric;
use focusd_testkit::receiver::{Receiver, ReceiverOptions};
use focusd_testkit::wait::{eventually, seen};

const WAIT: Duration = Duration::from_secs(30);

/// vivid's first video node, its capture device.
fn vivid() -> PathBuf {
    std::fs::read_dir("/sys/class/video4linux")
        .expect("no V4L2 devices: run this in tests/v4l2vm.sh")
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.starts_with("vivid"))
        })
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u32 = name.strip_prefix("video")?.parse().ok()?;
            Some((n, PathBuf::from("/dev").join(name)))
        })
        .min()
        .expect("a vivid video node")
        .1
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).status().unwrap();
    assert!(status.success(), "{cmd} {args:?}");
}

#[test]
#[ignore = "needs the vivid driver: run by tests/v4l2vm.sh"]
fn a_camera_unplugged_and_back_while_a_viewer_watches() {
    let dev = vivid();
    let source = format!("v4l2:{}", dev.display());
    let d = TestDaemon::start(&["--source", &source, "--size", "640x360", "--fps", "30"]);
    let state = d.state();
    assert!(state.source.starts_with("v4l2 "), "{}", state.source);
    assert!(state.source.contains("640x360"), "{}", state.source);

    let r = Receiver::connect(d.addr, ReceiverOptions::default()).unwrap();
    let (s, ok) = r.wait_for(WAIT, |s| s.tracks.iter().all(|t| t.decoded >= 5));
    assert!(
        ok,
        "both tracks decode: {:?}",
        s.tracks.each_ref().map(|t| t.decoded)
    );
    assert_eq!(s.tracks[1].size, Some((640, 360)));
    assert_eq!(s.tracks[0].size, Some((320, 180)));

    // Unplugged, as a USB camera is: the open device answers ENODEV from now on (vivid's
    // disconnect control) and its node disappears (moved aside, under the daemon).
    let away = dev.with_extension("unplugged");
    run(
        "v4l2-ctl",
        &["-d", dev.to_str().unwrap(), "--set-ctrl", "disconnect=1"],
    );
    std::fs::rename(&dev, &away).unwrap();
    eventually("the fault in the state", WAIT, || {
        let faults = d.state().faults;
        seen(faults.iter().any(|f| f.part == Part::Source), faults)
    });
    let fault = d.state().faults[0].clone();
    println!("fault: {fault:?}");
    eventually("/healthz says why", WAIT, || {
        let h = d.get("/healthz");
        let body = String::from_utf8_lossy(&h.body).into_owned();
        seen(
            h.status == 503 && body.contains("source: "),
            (h.status, body, d.state()),
        )
    });
    assert_eq!(metric(d.addr, "focusd_fault{part=\"source\"}"), 1.0);
    let retries = d.liveness().recovery_attempts();
    eventually("reopen attempts go on (the watchdog is fed)", WAIT, || {
        let now = d.liveness().recovery_attempts();
        seen(now > retries + 1, now)
    });
    assert!(r.stats().ended.is_none(), "the viewer stays connected");

    // Plugged back: the node is there again.
    let keyframes = |track: &str| {
        metric(
            d.addr,
            &format!("focusd_keyframes_total{{track=\"{track}\"}}"),
        )
    };
    let before = (keyframes("context"), keyframes("source"));
    std::fs::rename(&away, &dev).unwrap();
    eventually("the fault clears", WAIT, || {
        let faults = d.state().faults;
        seen(faults.is_empty(), faults)
    });
    let (s, ok) = r.wait_for_more_decoded(5, WAIT);
    assert!(
        ok,
        "pictures resume: {:?}",
        s.tracks.each_ref().map(|t| t.decoded)
    );
    assert!(
        s.tracks.iter().all(|t| t.decode_errors == 0),
        "every picture decodes"
    );
    assert!(
        keyframes("context") > before.0,
        "a keyframe first on the context track"
    );
    assert!(
        keyframes("source") > before.1,
        "a keyframe first on the source track"
    );
    assert_eq!(metric(d.addr, "focusd_fault{part=\"source\"}"), 0.0);
    assert_eq!(d.get("/healthz").status, 200);
    assert!(r.stats().ended.is_none(), "the same viewer throughout");
}

#[test]
#[ignore = "needs the vivid driver: run by tests/v4l2vm.sh"]
fn probe_lists_the_devices_and_takes_the_first_camera() {
    use focusd_board::encode::EncoderSpec;
    use focusd_board::source::SourceSpec;
    let report = focusd_board::probe::probe(&SourceSpec::Auto, &EncoderSpec::Auto);
    println!("{report}");
    let camera = vivid();
    let node = report
        .video_nodes
        .iter()
        .find(|n| n.path == camera)
        .expect("vivid listed");
    assert_eq!(node.driver, "vivid");
    assert!(node.note.is_none(), "{node:?}");
    assert!(
        node.modes.iter().any(|m| m.starts_with("NV12 640x360@")),
        "{:?}",
        node.modes
    );
    // vicodec, loaded beside vivid, is a codec, not a camera.
    assert!(
        report.video_nodes.iter().any(|n| n.driver == "vicodec"
            && n.note
                .as_deref()
                .is_some_and(|t| t.contains("memory-to-memory"))),
        "{report}"
    );
    assert_eq!(report.source.spec, format!("v4l2:{}", camera.display()));
    assert_eq!(report.source.reason, "the first V4L2 camera");
}
