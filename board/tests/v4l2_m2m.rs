//! The V4L2 stateful encoder interface against a real kernel driver: `vicodec`'s encoder
//! (FWHT, not H.264, behind the interface the Pi 4's bcm2835-codec speaks), loaded with
//! `multiplanar=1` as bcm2835-codec is (its smallest picture is 640x360). There is no such device on a build machine:
//! `tests/v4l2vm.sh` runs these in a VM, which is why each is `#[ignore]`d here.
//!
//! What only bcm2835-codec has (H.264, its controls and limits) is unit-tested in
//! `encode::v4l2m2m::limits` and unverified here.
#![cfg(feature = "v4l2-m2m")]

use std::path::PathBuf;
use std::time::Duration;

use focusd_board::encode::v4l2m2m::V4l2M2mEncoder;
use focusd_board::encode::v4l2m2m::session::{FWHT, H264, M2mDevice, M2mSession, SessionConfig};
use focusd_board::encode::v4l2m2m::stream::M2mStream;
use focusd_board::encode::{EncodeError, EncoderSettings, EncoderSpec};
use focusd_board::frame::CaptureTime;
use focusd_board::image::{Image, Layout, PixelFormat};

/// vicodec's encoder node.
fn encoder_node() -> PathBuf {
    std::fs::read_dir("/sys/class/video4linux")
        .expect("no V4L2 devices: run this in tests/v4l2vm.sh")
        .filter_map(|e| e.ok())
        .find(|e| {
            std::fs::read_to_string(e.path().join("name"))
                .is_ok_and(|n| n.trim() == "stateful-encoder")
        })
        .map(|e| PathBuf::from("/dev").join(e.file_name()))
        .expect("no vicodec encoder node (load vicodec multiplanar=1)")
}

fn config(format: PixelFormat, width: u32, height: u32) -> SessionConfig {
    SessionConfig {
        coded: FWHT,
        coded_buffer_size: width * height * 2,
        format,
        width,
        height,
        fps: 30.0,
        output_buffers: 3,
        capture_buffers: 4,
    }
}

/// A picture that differs from frame to frame: a bright square moving over a gradient.
fn picture(layout: Layout, n: u32) -> Image {
    let mut img = Image::new(layout);
    let mut luma = img.luma_mut();
    for y in 0..luma.height() {
        let row = luma.row_mut(y);
        for (x, p) in row.iter_mut().enumerate() {
            let in_square = (x as u32).wrapping_sub(n * 8) < 32 && y < 32;
            *p = if in_square {
                235
            } else {
                (x + y) as u8 / 2 + 16
            };
        }
    }
    img
}

/// Whether a FWHT frame is intra coded: `FWHT_FL_I_FRAME` (bit 10) in its header's
/// big-endian flags word, the sixth (vicodec sets no keyframe flag on its buffers).
fn fwht_is_intra(frame: &[u8]) -> bool {
    let flags = u32::from_be_bytes(frame[20..24].try_into().unwrap());
    flags & (1 << 10) != 0
}

/// Queues `count` pictures, taking coded buffers as they come; returns (id, intra coded,
/// bytes) of each, in order.
fn encode(session: &mut M2mSession, layout: Layout, count: u64) -> Vec<(u64, bool, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = 1;
    while out.len() < count as usize {
        if next <= count && session.wait_for_output(Duration::from_secs(2)).unwrap() {
            assert!(
                session
                    .queue_picture(&picture(layout, next as u32), next)
                    .unwrap()
            );
            next += 1;
        }
        session.wait_for_coded(Duration::from_millis(500)).unwrap();
        let mut bytes = Vec::new();
        while let Some(coded) = session.dequeue_coded(&mut bytes).unwrap() {
            assert!(!coded.error && !coded.last, "{coded:?}");
            let intra = coded.keyframe || fwht_is_intra(&bytes);
            out.push((coded.id, intra, std::mem::take(&mut bytes)));
        }
    }
    out
}

#[test]
#[ignore = "needs the vicodec driver: run by tests/v4l2vm.sh"]
fn vicodec_encodes_each_picture_in_order_in_both_formats() {
    let node = encoder_node();
    for format in [PixelFormat::I420, PixelFormat::Nv12] {
        let device = M2mDevice::open(&node, FWHT).unwrap();
        assert_eq!(device.driver(), "vicodec");
        let mut session = device.start(&config(format, 640, 480)).unwrap();
        let layout = *session.layout();
        assert_eq!(
            (layout.format, layout.width, layout.height),
            (format, 640, 480)
        );
        let coded = encode(&mut session, layout, 12);
        let ids: Vec<u64> = coded.iter().map(|c| c.0).collect();
        assert_eq!(
            ids,
            (1..=12).collect::<Vec<_>>(),
            "{format}: each picture once, in order"
        );
        for (id, _, bytes) in &coded {
            // A FWHT frame: its header's magic, then a body smaller than the raw picture.
            assert_eq!(&bytes[..4], b"OOOO", "{format} #{id}");
            assert!(
                bytes.len() < layout.len(),
                "{format} #{id}: {} bytes",
                bytes.len()
            );
        }
        assert!(coded[0].1, "{format}: the first picture is a keyframe");
        assert!(!coded[1].1, "{format}: the second one is predicted");
    }
}

#[test]
#[ignore = "needs the vicodec driver: run by tests/v4l2vm.sh"]
fn a_picture_in_another_layout_is_copied_into_the_drivers() {
    let node = encoder_node();
    let encode_one = |img: &Image| {
        let device = M2mDevice::open(&node, FWHT).unwrap();
        let mut session = device.start(&config(PixelFormat::I420, 640, 480)).unwrap();
        assert!(session.queue_picture(img, 1).unwrap());
        assert!(session.wait_for_coded(Duration::from_secs(2)).unwrap());
        let mut bytes = Vec::new();
        session.dequeue_coded(&mut bytes).unwrap().expect("coded");
        bytes
    };
    let packed = picture(Layout::packed(PixelFormat::I420, 640, 480), 3);
    let mut padded = Image::new(Layout::aligned(PixelFormat::Nv12, 640, 480, 64, 32));
    padded.copy_from(&packed);
    assert_eq!(encode_one(&packed), encode_one(&padded));
}

#[test]
#[ignore = "needs the vicodec driver: run by tests/v4l2vm.sh"]
fn a_size_the_driver_rounds_up_is_cropped_back_to_the_picture() {
    // vicodec rounds a 640x360 raw format up to 640x368.
    let node = encoder_node();
    let mut session = M2mDevice::open(&node, FWHT)
        .unwrap()
        .start(&config(PixelFormat::I420, 640, 360))
        .unwrap();
    let layout = *session.layout();
    assert_eq!((layout.width, layout.height), (640, 360));
    assert!(layout.luma_rows >= 368, "{layout:?}");
    let coded = encode(&mut session, layout, 2);
    // The FWHT header's width and height (big-endian words 4 and 5): the visible picture.
    let word = |b: &[u8], i: usize| u32::from_be_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!((word(&coded[0].2, 3), word(&coded[0].2, 4)), (640, 360));
}

#[test]
#[ignore = "needs the vicodec driver: run by tests/v4l2vm.sh"]
fn the_gop_size_control_set_before_the_formats_makes_keyframes() {
    let node = encoder_node();
    let device = M2mDevice::open(&node, FWHT).unwrap();
    let gop = v4l::v4l_sys::V4L2_CID_MPEG_VIDEO_GOP_SIZE;
    assert!(device.control_range(gop).is_some());
    device.set_control(gop, 4).unwrap();
    // vicodec has no forced keyframe; bcm2835-codec has (unverified here).
    assert!(
        device
            .control_range(v4l::v4l_sys::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME)
            .is_none()
    );
    let mut session = device.start(&config(PixelFormat::I420, 640, 480)).unwrap();
    let layout = *session.layout();
    let keyframes: Vec<u64> = encode(&mut session, layout, 12)
        .into_iter()
        .filter(|c| c.1)
        .map(|c| c.0)
        .collect();
    assert_eq!(keyframes, [1, 5, 9]);
}

#[test]
#[ignore = "needs the vicodec driver: run by tests/v4l2vm.sh"]
fn a_drain_gives_back_every_picture_then_the_last_buffer() {
    let node = encoder_node();
    let mut session = M2mDevice::open(&node, FWHT)
        .unwrap()
        .start(&config(PixelFormat::I420, 640, 480))
        .unwrap();
    let layout = *session.layout();
    for id in 1..=3 {
        assert!(session.wait_for_output(Duration::from_secs(2)).unwrap());
        assert!(
            session
                .queue_picture(&picture(layout, id as u32), id)
                .unwrap()
        );
    }
    session.drain().unwrap();
    let mut ids = Vec::new();
    let mut last = false;
    while !last {
        assert!(
            session.wait_for_coded(Duration::from_secs(2)).unwrap(),
            "the drain ends with a LAST buffer"
        );
        let mut bytes = Vec::new();
        while let Some(coded) = session.dequeue_coded(&mut bytes).unwrap() {
            if !bytes.is_empty() {
                ids.push(coded.id);
            }
            bytes.clear();
            last |= coded.last;
        }
    }
    assert_eq!(ids, [1, 2, 3]);
    assert!(session.is_drained());
    let mut bytes = Vec::new();
    assert_eq!(session.dequeue_coded(&mut bytes).unwrap(), None);
}

#[test]
#[ignore = "needs the vicodec driver: run by tests/v4l2vm.sh"]
fn an_encoder_that_does_not_make_h264_is_refused_and_auto_passes_it_by() {
    let node = encoder_node();
    let settings = EncoderSettings {
        width: 640,
        height: 480,
        format: PixelFormat::I420,
        fps: 30.0,
        bitrate_kbps: 500,
        keyframe_interval: 30,
        temporal_layers: 1,
    };
    let err = V4l2M2mEncoder::open(&node, &settings).unwrap_err();
    assert!(err.is_config(), "{err:?}");
    assert!(err.to_string().contains("does not encode to H264"), "{err}");
    assert!(M2mDevice::open(&node, H264).is_err());
    // The capture node of a webcam or vivid is no encoder either.
    let (spec, reason) = focusd_board::encode::resolve_auto();
    assert_eq!(spec, EncoderSpec::OpenH264, "{reason}");
    assert!(
        reason.contains("no hardware H.264 encoder found"),
        "{reason}"
    );
}

#[test]
#[ignore = "needs the vicodec driver: run by tests/v4l2vm.sh"]
fn the_stream_pairs_each_unit_with_its_capture_time_and_drains_the_rest() {
    let node = encoder_node();
    let session = M2mDevice::open(&node, FWHT)
        .unwrap()
        .start(&config(PixelFormat::Nv12, 640, 480))
        .unwrap();
    let layout = *session.layout();
    let mut stream = M2mStream::new(session, 30.0, fwht_is_intra);
    let start = CaptureTime::now();
    let times: Vec<CaptureTime> = (0..10u64)
        .map(|n| CaptureTime {
            at: start.at + Duration::from_millis(33 * n),
            wallclock_ms: start.wallclock_ms + 33 * n,
        })
        .collect();
    let mut units = Vec::new();
    for (n, &captured) in times.iter().enumerate() {
        stream
            .submit(&picture(layout, n as u32), captured, |_| Ok(()))
            .unwrap();
        let mut bytes = Vec::new();
        while let Some(unit) = stream.poll(&mut bytes).unwrap() {
            units.push((unit, std::mem::take(&mut bytes)));
        }
    }
    let mut rest = Vec::new();
    stream.finish(&mut rest).unwrap();
    units.extend(rest);
    assert_eq!(stream.in_flight(), 0);
    let got: Vec<CaptureTime> = units.iter().map(|(u, _)| u.captured).collect();
    assert_eq!(
        got, times,
        "every picture once, in order, with its capture time"
    );
    assert!(units[0].0.keyframe && !units[1].0.keyframe);
    assert!(units.iter().all(|(_, b)| &b[..4] == b"OOOO"));
    let err = stream
        .submit(&picture(layout, 0), start, |_| Ok(()))
        .unwrap_err();
    assert!(matches!(err, EncodeError::Finished), "{err:?}");
}
