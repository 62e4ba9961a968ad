//! The V4L2 backend's pixel readers against ffmpeg: a real photo, turned by ffmpeg into
//! what webcams send (YUYV, MJPEG with 4:2:2 and 4:2:0 chroma), read by focusd, compared
//! with ffmpeg's own conversion of the same data to video-range I420. Also what each
//! conversion costs on a 720p frame.
#![cfg(feature = "v4l2")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use focusd_board::image::{Image, PixelFormat};
use focusd_board::source::v4l2::mode::Input;
use focusd_board::source::v4l2::read::Reader;

/// A photo from Debian's opencv-doc, as raw I420 (prepared by tests/media.sh).
fn photo() -> (PathBuf, u32, u32) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/.media/stills");
    let path = dir.join("basketball1_640x480.yuv");
    assert!(
        path.exists(),
        "{}: run tests/media.sh first",
        path.display()
    );
    (path, 640, 480)
}

/// Runs ffmpeg on a raw or encoded input; returns the bytes it wrote.
fn ffmpeg(input: &[&str], output: &[&str], dir: &Path, out_name: &str) -> Vec<u8> {
    let out = dir.join(out_name);
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y"])
        .args(input)
        .args(output)
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {input:?} {output:?}");
    std::fs::read(&out).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("focusd-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// PSNR in dB of `got`'s plane `index` against the same plane of a packed I420 buffer.
fn plane_psnr(got: &Image, want: &[u8], index: usize) -> f64 {
    let (w, h) = (got.width() as usize, got.height() as usize);
    let offsets = [0, w * h, w * h + w * h / 4];
    let plane = got.planes().nth(index).unwrap();
    let mut sum = 0.0;
    let mut n = 0.0;
    for y in 0..plane.height() {
        let row = plane.row(y);
        let reference = &want[offsets[index] + y * plane.width()..][..plane.width()];
        for (a, b) in row.iter().zip(reference) {
            sum += (*a as f64 - *b as f64).powi(2);
            n += 1.0;
        }
    }
    let mse = sum / n;
    if mse == 0.0 {
        99.0
    } else {
        10.0 * (255.0f64.powi(2) / mse).log10()
    }
}

fn raw_input(pix_fmt: &str, w: u32, h: u32, path: &Path) -> Vec<String> {
    [
        "-f",
        "rawvideo",
        "-pix_fmt",
        pix_fmt,
        "-s",
        &format!("{w}x{h}"),
        "-i",
        path.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn check(input: Input, data: &[u8], reference: &[u8], w: u32, h: u32, min_db: [f64; 3]) {
    let mut reader = Reader::new(input, w, h, 0).unwrap();
    assert_eq!(reader.layout().format, PixelFormat::I420);
    let mut img = Image::new(reader.layout());
    reader.read(data, &mut img).unwrap();
    for (index, min) in min_db.into_iter().enumerate() {
        let db = plane_psnr(&img, reference, index);
        assert!(db >= min, "{input} plane {index}: {db:.1} dB < {min}");
    }
}

#[test]
fn yuyv_reads_like_ffmpeg() {
    let (photo, w, h) = photo();
    let dir = temp_dir("yuyv");
    let i420 = raw_input("yuv420p", w, h, &photo);
    let i420: Vec<&str> = i420.iter().map(String::as_str).collect();
    let yuyv = ffmpeg(
        &i420,
        &["-f", "rawvideo", "-pix_fmt", "yuyv422"],
        &dir,
        "p.yuyv",
    );
    let yuyv_path = dir.join("p.yuyv");
    let back = raw_input("yuyv422", w, h, &yuyv_path);
    let back: Vec<&str> = back.iter().map(String::as_str).collect();
    let reference = ffmpeg(
        &back,
        &["-f", "rawvideo", "-pix_fmt", "yuv420p"],
        &dir,
        "r.yuv",
    );
    // Luma is copied; chroma is 4:2:2 to 4:2:0, where filters may differ by a level.
    check(Input::Yuyv, &yuyv, &reference, w, h, [99.0, 40.0, 40.0]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mjpeg_reads_like_ffmpeg_in_each_chroma_sampling() {
    let (photo, w, h) = photo();
    let dir = temp_dir("mjpeg");
    let i420 = raw_input("yuv420p", w, h, &photo);
    let i420: Vec<&str> = i420.iter().map(String::as_str).collect();
    for (sampling, chroma_db) in [("yuvj422p", 35.0), ("yuvj420p", 40.0), ("yuvj444p", 35.0)] {
        let name = format!("{sampling}.jpg");
        let jpeg = ffmpeg(
            &i420,
            &[
                "-frames:v",
                "1",
                "-pix_fmt",
                sampling,
                "-q:v",
                "2",
                "-f",
                "mjpeg",
            ],
            &dir,
            &name,
        );
        let jpeg_path = dir.join(&name);
        // ffmpeg's decode of the same JPEG, to video range like focusd.
        let reference = ffmpeg(
            &["-i", jpeg_path.to_str().unwrap()],
            &[
                "-vf",
                "scale=in_range=full:out_range=limited",
                "-pix_fmt",
                "yuv420p",
                "-f",
                "rawvideo",
            ],
            &dir,
            &format!("{sampling}.yuv"),
        );
        check(
            Input::Mjpeg,
            &jpeg,
            &reference,
            w,
            h,
            [40.0, chroma_db, chroma_db],
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_or_short_buffer_is_an_error_for_that_buffer_only() {
    let mut reader = Reader::new(Input::Mjpeg, 64, 48, 0).unwrap();
    let mut img = Image::new(reader.layout());
    let err = reader.read(b"\xff\xd8 not a jpeg", &mut img).unwrap_err();
    assert!(err.to_string().contains("MJPEG"), "{err}");
    let mut nv12 = Reader::new(Input::Nv12, 64, 48, 64).unwrap();
    let mut img = Image::new(nv12.layout());
    let err = nv12.read(&[0; 100], &mut img).unwrap_err();
    assert!(err.to_string().contains("needs 4608"), "{err}");
    let mut yuyv = Reader::new(Input::Yuyv, 64, 48, 128).unwrap();
    let err = yuyv
        .read(&[0; 100], &mut Image::new(yuyv.layout()))
        .unwrap_err();
    assert!(err.to_string().contains("needs 6144"), "{err}");
}

#[test]
fn driver_strides_are_kept_for_nv12_and_i420() {
    let mut reader = Reader::new(Input::Nv12, 640, 360, 704).unwrap();
    let layout = reader.layout();
    assert_eq!((layout.luma_stride, layout.chroma_stride), (704, 704));
    let buf: Vec<u8> = (0..layout.len()).map(|i| (i % 251) as u8).collect();
    let mut img = Image::new(layout);
    reader.read(&buf, &mut img).unwrap();
    assert_eq!(img.as_bytes(), &buf[..], "the buffer is the picture");
    let i420 = Reader::new(Input::I420, 640, 360, 704).unwrap().layout();
    assert_eq!((i420.luma_stride, i420.chroma_stride), (704, 352));
}

/// Prints what reading one 720p frame costs, per format (figures for the README).
#[test]
fn cost_per_720p_frame() {
    let (w, h) = (1280u32, 720u32);
    let dir = temp_dir("cost");
    let src = [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=1",
        "-frames:v",
        "1",
    ];
    let yuyv = ffmpeg(
        &src,
        &["-pix_fmt", "yuyv422", "-f", "rawvideo"],
        &dir,
        "f.yuyv",
    );
    let jpeg422 = ffmpeg(
        &src,
        &["-pix_fmt", "yuvj422p", "-q:v", "3", "-f", "mjpeg"],
        &dir,
        "f422.jpg",
    );
    let jpeg420 = ffmpeg(
        &src,
        &["-pix_fmt", "yuvj420p", "-q:v", "3", "-f", "mjpeg"],
        &dir,
        "f420.jpg",
    );
    for (name, input, data) in [
        ("YUYV", Input::Yuyv, &yuyv),
        ("MJPEG 4:2:2", Input::Mjpeg, &jpeg422),
        ("MJPEG 4:2:0", Input::Mjpeg, &jpeg420),
    ] {
        let mut reader = Reader::new(input, w, h, 0).unwrap();
        let mut img = Image::new(reader.layout());
        reader.read(data, &mut img).unwrap();
        let runs = 30;
        let started = Instant::now();
        for _ in 0..runs {
            reader.read(data, &mut img).unwrap();
        }
        let per = started.elapsed() / runs;
        println!(
            "read {name} 1280x720: {:.2} ms a frame",
            per.as_secs_f64() * 1e3
        );
        assert!(per.as_secs_f64() < 1.0, "{name} takes {per:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
