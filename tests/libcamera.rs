//! The daemon with a real libcamera camera: the kernel's `vimc` driver (two Bayer sensors,
//! a debayer, a scaler, capture nodes) driven by libcamera's vimc pipeline handler, in the
//! VM of `tests/v4l2vm.sh` (`-M vimc -u`: libcamera needs udev to see a camera). `focusd
//! probe` lists it; `--source libcamera` streams it (vimc offers one stream, in RGB, at
//! widths it rounds: focusd takes its nearest mode and scales the context picture itself);
//! both tracks decode to the sensor's colour bars; the driver unbound (the camera gone)
//! is a fault the viewer outlives, and bound again the pictures resume.

#![cfg(feature = "gstreamer")]

use std::time::Duration;

use focusd::state::Part;
use focusd_testkit::TestDaemon;
use focusd_testkit::process::metric;
use focusd_testkit::receiver::{Picture, Receiver, ReceiverOptions};
use focusd_testkit::wait::{eventually, seen};

/// Everything in the VM is about ten times slower than on the host.
const WAIT: Duration = Duration::from_secs(60);

/// The vimc device, as its platform driver knows it.
const VIMC: &str = "vimc.0";

/// Unbinds or binds the vimc device: the camera disappears (its media and video nodes
/// go, open ones fail) or comes back, as a USB camera unplugged and plugged in.
fn vimc_driver(action: &str) -> std::io::Result<()> {
    std::fs::write(format!("/sys/bus/platform/drivers/vimc/{action}"), VIMC)
}

/// The vimc device unbound until this is dropped: a failing test leaves the camera there
/// for the next.
struct Unbound;

impl Unbound {
    fn new() -> Self {
        vimc_driver("unbind")
            .unwrap_or_else(|e| panic!("unbind {VIMC}: {e} (run this in tests/v4l2vm.sh)"));
        Unbound
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        // Not a panic while a failed test unwinds; the next test says if the camera is gone.
        if let Err(e) = vimc_driver("bind") {
            eprintln!("bind {VIMC}: {e}");
        }
    }
}

/// The mean luma of the bottom rows in each eighth of the picture's width: the sensor's
/// 75% colour bars (white, yellow, cyan, green, magenta, red, blue, black) go darker from
/// left to right (vimc writes its text over the middle rows).
fn bars(p: &Picture) -> [u8; 8] {
    let (w, h) = (p.width as usize, p.height as usize);
    std::array::from_fn(|bar| {
        // The middle half of each bar, so that a scaled edge does not count.
        let x0 = bar * w / 8 + w / 32;
        let x1 = (bar + 1) * w / 8 - w / 32;
        let rows = h * 4 / 5..h * 19 / 20;
        let n = ((x1 - x0) * rows.len()) as u64;
        let sum: u64 = rows
            .flat_map(|y| p.y[y * w + x0..y * w + x1].iter().map(|&v| v as u64))
            .sum();
        (sum / n) as u8
    })
}

/// Whether `p` shows the colour bars: each bar darker than the one on its left (75% bars
/// step by 19-30 in luma; a little is left for the debayer and the encoder).
fn shows_colour_bars(p: &Picture) -> Result<(), String> {
    let b = bars(p);
    seen(
        b.windows(2)
            .all(|pair| pair[0] >= pair[1].saturating_add(8)),
        format!("{}x{} bars {b:?}", p.width, p.height),
    )
}

#[test]
#[ignore = "needs the vimc driver and udev: run by tests/v4l2vm.sh"]
fn probe_lists_the_vimc_camera_and_takes_it() {
    use focusd_board::encode::EncoderSpec;
    use focusd_board::source::SourceSpec;
    let report = focusd_board::probe::probe(&SourceSpec::Auto, &EncoderSpec::Auto);
    println!("{report}");
    let camera = report
        .cameras
        .iter()
        .find(|c| c.spec.to_string().contains("Sensor B"))
        .unwrap_or_else(|| panic!("vimc's Sensor B listed: {report}"));
    assert!(!camera.modes.is_empty(), "{camera:?}");
    assert!(
        camera.modes.iter().any(|m| m.starts_with("RGB 48x48-")),
        "vimc offers RGB in a range of sizes: {camera:?}"
    );
    assert_eq!(report.source.spec, camera.spec.to_string());
    assert_eq!(report.source.reason, "the first libcamera camera");
    // The same in the JSON `focusd probe --json` prints.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["cameras"][0]["spec"], camera.spec.to_string());
}

#[test]
#[ignore = "needs the vimc driver and udev: run by tests/v4l2vm.sh"]
fn the_vimc_camera_streams_both_tracks_and_survives_going_away() {
    // 640x360: vimc's sensor at 212x120, its scaler's 3x makes 636x360 (at 320x240 its
    // pictures are all zeros). libcamera runs in focusd's helper process
    // (FOCUSD_LIBCAMERA_HELPER names the focusd binary: this test binary has no helper).
    assert!(
        std::env::var_os(focusd_board::source::LIBCAMERA_HELPER_ENV).is_some(),
        "set {} to a focusd binary built with --features gstreamer",
        focusd_board::source::LIBCAMERA_HELPER_ENV
    );
    // The camera as libcamera lists it (after a test before this bound it again).
    eventually("vimc's camera listed", WAIT, || {
        let cameras = focusd_board::source::libcamera_cameras();
        seen(!cameras.is_empty(), cameras)
    });
    let d = TestDaemon::start(&["--source", "libcamera", "--size", "640x360", "--fps", "30"]);
    let state = d.state();
    println!("source: {}", state.source);
    assert!(state.source.starts_with("libcamera "), "{}", state.source);
    // vimc makes one stream and adjusts 640 wide to its own width: what focusd did is said.
    assert!(
        state
            .source
            .contains("(one stream, its nearest mode converted)"),
        "{}",
        state.source
    );
    assert!(state.source.contains("640x360"), "{}", state.source);

    let r = watch_the_bars(&d);
    survive_the_camera_going_away(&d, &r);
    survive_libcamera_crashing(&d, &r);
}

/// A viewer of `d`, once both tracks decode to vimc's colour bars.
fn watch_the_bars(d: &TestDaemon) -> Receiver {
    let r = Receiver::connect(
        d.addr,
        ReceiverOptions {
            keep_frames: true,
            ..ReceiverOptions::default()
        },
    )
    .unwrap();
    let (s, ok) = r.wait_for(WAIT, |s| s.tracks.iter().all(|t| t.decoded >= 5));
    assert!(
        ok,
        "both tracks decode: {:?}",
        s.tracks.each_ref().map(|t| t.decoded)
    );
    assert_eq!(s.tracks[0].size, Some((320, 180)), "context");
    assert_eq!(s.tracks[1].size, Some((640, 360)), "source");
    for (name, track) in ["context", "source"].into_iter().zip(&s.tracks) {
        let picture = track.last.as_ref().expect("a kept picture");
        shows_colour_bars(picture).unwrap_or_else(|saw| panic!("{name}: {saw}"));
        println!("{name}: bars {:?}", bars(picture));
    }
    r
}

/// The camera goes (the driver unbound) and comes back: a fault while it is away,
/// reopening all along, then pictures again with a keyframe first, on the same viewer.
fn survive_the_camera_going_away(d: &TestDaemon, r: &Receiver) {
    // The camera goes: capture stalls, the fault shows, reopening goes on.
    let unbound = Unbound::new();
    eventually("the fault in the state and /healthz", WAIT, || {
        let faults = d.state().faults;
        let health = d.get("/healthz").status;
        seen(
            health == 503 && faults.iter().any(|f| f.part == Part::Source),
            (health, faults),
        )
    });
    println!("fault: {:?}", d.state().faults);
    let retries = d.liveness().recovery_attempts();
    eventually("reopen attempts go on (the watchdog is fed)", WAIT, || {
        let now = d.liveness().recovery_attempts();
        seen(now > retries + 1, now)
    });
    assert!(r.stats().ended.is_none(), "the viewer stays connected");

    // And comes back: pictures resume, with a keyframe first, on the same viewer.
    let keyframes = |track: &str| {
        metric(
            d.addr,
            &format!("focusd_keyframes_total{{track=\"{track}\"}}"),
        )
    };
    let before = (keyframes("context"), keyframes("source"));
    drop(unbound);
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
    for track in &s.tracks {
        shows_colour_bars(track.last.as_ref().expect("a kept picture")).unwrap();
    }
    assert!(keyframes("context") > before.0, "a keyframe on context");
    assert!(keyframes("source") > before.1, "a keyframe on source");
    assert_eq!(d.get("/healthz").status, 200);
}

/// The helper killed, as a segfault in libcamera ends it: a new one, the same viewer.
fn survive_libcamera_crashing(d: &TestDaemon, r: &Receiver) {
    // A capture failure, not the daemon's end: the helper is started again.
    let helper = helper_pid();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &helper.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("a new helper", WAIT, || {
        let now = helper_pids();
        seen(now.iter().any(|&p| p != helper), now)
    });
    let (s, ok) = r.wait_for_more_decoded(5, WAIT);
    assert!(
        ok,
        "pictures resume after the helper died: {:?}",
        s.tracks.each_ref().map(|t| t.decoded)
    );
    eventually("no fault", WAIT, || {
        let faults = d.state().faults;
        seen(faults.is_empty(), faults)
    });
    assert!(r.stats().ended.is_none(), "the same viewer throughout");
}

/// The pids of libcamera helper processes (`focusd __libcamera-capture`).
fn helper_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|&b| b == 0)
                    .any(|arg| arg == focusd_board::source::LIBCAMERA_HELPER.as_bytes())
            })
        })
        .collect()
}

/// The one helper running (a moment without one is libcamera's race: its helper crashed
/// and the next is on its way).
fn helper_pid() -> u32 {
    eventually("one libcamera helper", WAIT, || match helper_pids()[..] {
        [pid] => Ok(pid),
        ref pids => Err(format!("{pids:?}")),
    })
}
