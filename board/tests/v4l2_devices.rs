//! The V4L2 capture backend against real kernel drivers: `vivid` (a capture device with
//! many formats) and an MJPEG webcam made of `v4l2loopback` fed by ffmpeg. There are no
//! such devices on a build machine: `tests/v4l2vm.sh` runs these in a VM with Debian's
//! kernel and the drivers loaded, which is why each is `#[ignore]`d here.
#![cfg(feature = "v4l2")]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use focusd_board::image::{Image, PixelFormat};
use focusd_board::source::v4l2::V4l2Camera;
use focusd_board::source::v4l2::mode::Input;
use focusd_board::source::{FrameSource, SourceError, SourceSpec};

/// The capture node whose driver name (in sysfs) is `driver`.
fn node(driver: &str) -> PathBuf {
    let found = std::fs::read_dir("/sys/class/video4linux")
        .expect("no V4L2 devices: run this in tests/v4l2vm.sh")
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("name"))
                .is_ok_and(|n| n.trim().starts_with(driver))
        })
        .map(|e| PathBuf::from("/dev").join(e.file_name()))
        .filter(|p| focusd_board::source::v4l2::is_camera(p))
        .min();
    found.unwrap_or_else(|| panic!("no {driver} capture node"))
}

/// Takes `n` pictures and checks they are real ones: sized as the layout says, not flat,
/// with capture times that move forward.
fn capture(camera: &mut V4l2Camera, n: usize) -> Image {
    let mut img = Image::new(camera.layout());
    let mut last = None;
    for _ in 0..n {
        let at = camera.capture(&mut img, None).expect("a picture");
        if let Some(prev) = last {
            assert!(at.at > prev, "capture times move forward");
        }
        last = Some(at.at);
    }
    let luma = img.luma();
    let (min, max) = (0..luma.height())
        .flat_map(|y| luma.row(y).iter().copied())
        .fold((255u8, 0u8), |(lo, hi), p| (lo.min(p), hi.max(p)));
    assert!(max - min > 100, "a picture, not a flat field: {min}..{max}");
    img
}

#[test]
#[ignore = "needs the vivid driver: run by tests/v4l2vm.sh"]
fn vivid_in_each_raw_format() {
    let dev = node("vivid");
    for (input, format) in [
        (Input::Nv12, PixelFormat::Nv12),
        (Input::I420, PixelFormat::I420),
        (Input::Yuyv, PixelFormat::I420),
    ] {
        let mut camera = V4l2Camera::open_as(&dev, (640, 360), 30.0, Some(input)).unwrap();
        let mode = camera.mode();
        assert_eq!(
            (mode.input, mode.width, mode.height),
            (input, 640, 360),
            "{mode}"
        );
        assert_eq!(camera.layout().format, format, "{mode}");
        let img = capture(&mut camera, 5);
        // vivid's default picture is colour bars: the first bar is white, a later one is
        // strongly coloured.
        let (w, h) = (img.width() as usize, img.height() as usize);
        assert!(img.luma().row(h / 2)[w / 32] > 150, "{mode}: white bar");
        let (u, v) = img.chroma_at(w * 11 / 16, h / 2);
        assert!(
            u.abs_diff(128) > 30 || v.abs_diff(128) > 30,
            "{mode}: colour bar"
        );
        println!("{}: ok", camera.describe());
    }
}

#[test]
#[ignore = "needs the vivid driver: run by tests/v4l2vm.sh"]
fn the_nearest_mode_is_chosen_and_sizes_change_between_opens() {
    let dev = node("vivid");
    let mut small = V4l2Camera::open(&dev, (320, 180), 30.0).unwrap();
    assert_eq!(small.layout().size(), (320, 180));
    capture(&mut small, 3);
    drop(small);
    let mut big = V4l2Camera::open(&dev, (1280, 720), 30.0).unwrap();
    assert_eq!(big.layout().size(), (1280, 720));
    capture(&mut big, 2);
    // A camera streams to one reader at a time.
    drop(big);
    // Through the public entry point, as `--source v4l2:...` does.
    let spec = SourceSpec::V4l2(dev.clone());
    let wanted = focusd_board::source::Wanted {
        size: (640, 480),
        fps: 25.0,
        scale_file: false,
        lores_width: 320,
    };
    let source = focusd_board::source::open(&spec, wanted).unwrap();
    assert_eq!(source.layout().size(), (640, 480));
    assert!(
        source.describe().contains("640x480"),
        "{}",
        source.describe()
    );
}

#[test]
#[ignore = "needs the vivid driver: run by tests/v4l2vm.sh"]
fn an_unplugged_camera_is_an_error_and_it_opens_again_when_back() {
    let dev = node("vivid");
    let mut camera = V4l2Camera::open(&dev, (640, 360), 30.0).unwrap();
    capture(&mut camera, 2);
    // Unplug under the open stream: vivid's disconnect control does what a USB
    // disconnect does (every later call on the open file fails with ENODEV).
    let status = Command::new("v4l2-ctl")
        .args(["-d", dev.to_str().unwrap(), "--set-ctrl", "disconnect=1"])
        .status()
        .unwrap();
    assert!(status.success(), "vivid's disconnect control");
    let started = Instant::now();
    let mut img = Image::new(camera.layout());
    let err = loop {
        match camera.capture(&mut img, None) {
            Err(e) => break e,
            Ok(_) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "still capturing"
            ),
        }
    };
    assert!(matches!(err, SourceError::Io(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "noticed in {:?}",
        started.elapsed()
    );
    println!("unplugged: {err}");
    drop(camera);
    // Plug it back: a new device, as after a USB replug.
    let status = Command::new("modprobe")
        .args(["-r", "vivid"])
        .status()
        .unwrap();
    assert!(status.success(), "modprobe -r vivid");
    let status = Command::new("modprobe").arg("vivid").status().unwrap();
    assert!(status.success(), "modprobe vivid");
    let dev = node("vivid");
    let mut again = V4l2Camera::open(&dev, (640, 360), 30.0).unwrap();
    capture(&mut again, 2);
}

#[test]
#[ignore = "needs an MJPEG webcam (v4l2loopback fed by ffmpeg): run by tests/v4l2vm.sh"]
fn an_mjpeg_webcam() {
    let dev = node("Dummy video device");
    let mut camera = V4l2Camera::open(&dev, (640, 480), 15.0).unwrap();
    assert_eq!(camera.mode().input, Input::Mjpeg, "{}", camera.describe());
    assert_eq!(camera.layout().format, PixelFormat::I420);
    let img = capture(&mut camera, 5);
    // ffmpeg's testsrc: video-range levels after the JPEG's full range is mapped.
    let luma = img.luma();
    let max = (0..luma.height())
        .flat_map(|y| luma.row(y).iter().copied())
        .max()
        .unwrap();
    assert!((200..=235).contains(&max), "video-range luma, max {max}");
    println!("{}: ok", camera.describe());
}
