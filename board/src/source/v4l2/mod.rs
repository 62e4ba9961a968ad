//! The `v4l2:` source: a V4L2 capture node (a USB webcam, an HDMI grabber, any single-planar
//! capture device), streamed through mmap buffers with the `v4l` crate.
//!
//! At open the device's formats, sizes and rates are enumerated and the mode closest to the
//! configured size and rate is set ([`mode::choose`]). NV12 and I420 are taken in the
//! driver's own layout (strides and all); YUYV and MJPEG become I420 ([`read`]).
//!
//! Capture keeps [`BUFFERS`] buffers queued. When the pipeline falls behind, the oldest
//! waiting buffers are skipped: the newest picture wins, as everywhere else in focusd.
//! A buffer the driver marks as failed, or a corrupt JPEG, is skipped too; a device that
//! delivers nothing for [`STALL`] or disappears (unplugged) is a capture error, and the
//! pipeline opens it again with backoff.

pub mod mode;
pub mod read;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use v4l::buffer::{Metadata, Type};
use v4l::device::Handle;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::video::capture::Parameters;
use v4l::{Device, FourCC, Fraction};

use self::mode::{Input, Mode};
use self::read::Reader;
use crate::frame::CaptureTime;
use crate::image::{Image, Layout};
use crate::source::{FrameSource, SourceError, SourceSpec};

/// Buffers queued on the device: one being read, one being filled, one spare so the driver
/// never waits for the reader.
pub const BUFFERS: u32 = 4;

/// A device that delivers no buffer for this long is treated as gone.
pub const STALL: Duration = Duration::from_secs(2);

/// Bad buffers in a row (driver errors, corrupt JPEGs) after which capture fails.
const MAX_BAD_IN_A_ROW: u32 = 30;

/// Capture drivers that are not cameras on their own: a Raspberry Pi's CSI receiver and ISP
/// nodes, which only libcamera can drive.
const NEEDS_LIBCAMERA: [&str; 4] = ["unicam", "bcm2835-isp", "rp1-cfe", "pispbe"];

/// Every V4L2 device node and what it is to focusd.
pub fn video_nodes() -> Vec<crate::devices::VideoNode> {
    use v4l::capability::Flags;
    crate::devices::dev_video_nodes()
        .into_iter()
        .map(|path| {
            let mut node = crate::devices::VideoNode {
                path: path.clone(),
                driver: String::new(),
                card: String::new(),
                modes: Vec::new(),
                note: None,
            };
            let caps = match Device::with_path(&path).and_then(|d| Ok((d.query_caps()?, d))) {
                Ok(caps) => caps,
                Err(e) => {
                    node.note = Some(format!("cannot open: {e}"));
                    return node;
                }
            };
            let (caps, device) = caps;
            node.driver = caps.driver.clone();
            node.card = caps.card.clone();
            node.note = if caps
                .capabilities
                .intersects(Flags::VIDEO_M2M | Flags::VIDEO_M2M_MPLANE)
            {
                Some("memory-to-memory device (an encoder, decoder or converter)".into())
            } else if NEEDS_LIBCAMERA.contains(&caps.driver.as_str()) {
                Some("part of a camera pipeline that libcamera drives".into())
            } else if !caps.capabilities.contains(Flags::VIDEO_CAPTURE) {
                Some("not a single-planar capture device".into())
            } else {
                match modes(&device) {
                    Ok(m) if !m.is_empty() => {
                        node.modes = m.iter().map(Mode::to_string).collect();
                        None
                    }
                    Ok(_) => Some(format!(
                        "offers no format focusd reads ({})",
                        Input::ALL.map(|i| i.to_string()).join(", ")
                    )),
                    Err(e) => Some(format!("cannot list its formats: {e}")),
                }
            };
            node
        })
        .collect()
}

/// The first V4L2 node on this machine that is a camera focusd can read: single-planar
/// capture, not memory-to-memory, not an ISP node, offering a format this backend reads.
pub(in crate::source) fn first_camera() -> Option<SourceSpec> {
    crate::devices::dev_video_nodes()
        .into_iter()
        .find(|path| is_camera(path))
        .map(SourceSpec::V4l2)
}

/// Whether `path` is a capture node this backend can stream from.
pub fn is_camera(path: &Path) -> bool {
    let Ok(device) = Device::with_path(path) else {
        return false;
    };
    let Ok(caps) = device.query_caps() else {
        return false;
    };
    use v4l::capability::Flags;
    caps.capabilities
        .contains(Flags::VIDEO_CAPTURE | Flags::STREAMING)
        && !caps.capabilities.contains(Flags::VIDEO_M2M)
        && !NEEDS_LIBCAMERA.contains(&caps.driver.as_str())
        && modes(&device).is_ok_and(|m| !m.is_empty())
}

/// Every format, size and rate `device` offers in a format this backend reads. Stepwise
/// ranges are listed by their common sizes (from 320x240 to 1920x1080) that fit.
pub fn modes(device: &Device) -> std::io::Result<Vec<Mode>> {
    const COMMON: [(u32, u32); 7] = [
        (320, 240),
        (640, 360),
        (640, 480),
        (800, 600),
        (1280, 720),
        (1600, 1200),
        (1920, 1080),
    ];
    let mut out = Vec::new();
    for desc in device.enum_formats()? {
        let Some(input) = Input::from_fourcc(desc.fourcc.repr) else {
            continue;
        };
        for size in device.enum_framesizes(desc.fourcc)? {
            let sizes: Vec<(u32, u32)> = match size.size {
                v4l::framesize::FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
                v4l::framesize::FrameSizeEnum::Stepwise(s) => COMMON
                    .iter()
                    .map(|&(w, h)| {
                        (
                            mode::nearest_step(w, s.min_width, s.max_width, s.step_width),
                            mode::nearest_step(h, s.min_height, s.max_height, s.step_height),
                        )
                    })
                    .collect(),
            };
            for (width, height) in sizes {
                let fps = fastest_rate(device, desc.fourcc, width, height).unwrap_or(30.0);
                out.push(Mode {
                    input,
                    width,
                    height,
                    fps,
                });
            }
        }
    }
    out.dedup();
    Ok(out)
}

/// The highest frame rate `device` offers for a format and size.
fn fastest_rate(device: &Device, fourcc: FourCC, width: u32, height: u32) -> Option<f64> {
    let rate = |f: &Fraction| f.denominator as f64 / f.numerator.max(1) as f64;
    device
        .enum_frameintervals(fourcc, width, height)
        .ok()?
        .iter()
        .map(|i| match &i.interval {
            v4l::frameinterval::FrameIntervalEnum::Discrete(f) => rate(f),
            v4l::frameinterval::FrameIntervalEnum::Stepwise(s) => rate(&s.min),
        })
        .reduce(f64::max)
}

/// Opens `path` and sets the mode closest to `size` at `fps`.
pub(in crate::source) fn open(
    path: &Path,
    size: (u32, u32),
    fps: f64,
) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(Box::new(V4l2Camera::open(path, size, fps)?))
}

/// A V4L2 camera, streaming.
pub struct V4l2Camera {
    path: PathBuf,
    /// The mode set on the device (as the driver confirmed it).
    mode: Mode,
    /// The device's handle, to look for more ready buffers without taking one.
    handle: Arc<Handle>,
    /// Mapped buffers, queued on the device.
    stream: Stream<'static>,
    reader: Reader,
}

impl std::fmt::Debug for V4l2Camera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Camera")
            .field("path", &self.path)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl V4l2Camera {
    /// Opens `path`, sets the mode closest to `size` at `fps`, and starts streaming.
    pub fn open(path: &Path, size: (u32, u32), fps: f64) -> Result<Self, SourceError> {
        Self::open_as(path, size, fps, None)
    }

    /// Like [`Self::open`], in pixel format `only` when given.
    pub fn open_as(
        path: &Path,
        size: (u32, u32),
        fps: f64,
        only: Option<Input>,
    ) -> Result<Self, SourceError> {
        let opened = |source| SourceError::Open {
            path: path.to_owned(),
            source,
        };
        let device = Device::with_path(path).map_err(opened)?;
        let mut offered = modes(&device).map_err(opened)?;
        offered.retain(|m| only.is_none_or(|i| m.input == i));
        let wanted = mode::choose(&offered, size, fps).ok_or_else(|| {
            SourceError::Format(format!(
                "{}: offers no format focusd reads ({})",
                path.display(),
                Input::ALL.map(|i| i.to_string()).join(", ")
            ))
        })?;
        let mut format = device.format().map_err(opened)?;
        format.width = wanted.width;
        format.height = wanted.height;
        format.fourcc = FourCC::new(&wanted.input.fourcc());
        let set = device.set_format(&format).map_err(opened)?;
        let input = Input::from_fourcc(set.fourcc.repr)
            .filter(|_| set.width % 2 == 0 && set.height % 2 == 0)
            .ok_or_else(|| {
                SourceError::Format(format!(
                    "{}: asked for {wanted}, the driver set {} {}x{}",
                    path.display(),
                    set.fourcc,
                    set.width,
                    set.height
                ))
            })?;
        // A driver may not support setting the rate; then it runs at its own.
        let rate = Fraction::new(1000, (wanted.fps.min(fps) * 1000.0).round() as u32);
        let fps = match device.set_params(&Parameters::new(rate)) {
            Ok(p) => p.interval.denominator as f64 / p.interval.numerator.max(1) as f64,
            Err(_) => wanted.fps,
        };
        let mode = Mode {
            input,
            width: set.width,
            height: set.height,
            fps,
        };
        let reader = Reader::new(input, set.width, set.height, set.stride)
            .map_err(|e| SourceError::Format(format!("{}: {e}", path.display())))?;
        let mut stream =
            Stream::with_buffers(&device, Type::VideoCapture, BUFFERS).map_err(opened)?;
        stream.set_timeout(STALL);
        tracing::info!(device = %path.display(), %mode, layout = ?reader.layout(), "V4L2 camera open");
        Ok(Self {
            path: path.to_owned(),
            mode,
            handle: device.handle(),
            stream,
            reader,
        })
    }

    /// The mode the device runs in.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

impl FrameSource for V4l2Camera {
    fn describe(&self) -> String {
        format!("v4l2 {} {}", self.path.display(), self.mode)
    }

    fn layout(&self) -> Layout {
        self.reader.layout()
    }

    fn fps(&self) -> f64 {
        self.mode.fps
    }

    fn capture(
        &mut self,
        main: &mut Image,
        _lores: Option<&mut Image>,
    ) -> Result<CaptureTime, SourceError> {
        let mut bad = 0;
        let mut skipped = 0;
        loop {
            let (buf, meta) =
                CaptureStream::next(&mut self.stream).map_err(|e| match e.kind() {
                    std::io::ErrorKind::TimedOut => SourceError::Io(std::io::Error::new(
                        e.kind(),
                        format!("{}: no picture for {STALL:?}", self.path.display()),
                    )),
                    _ => SourceError::Io(e),
                })?;
            // A newer picture is already waiting: this one is stale (at most a queue's worth).
            if skipped < BUFFERS && self.handle.poll(libc::POLLIN, 0).unwrap_or(0) > 0 {
                skipped += 1;
                continue;
            }
            let used = match meta.bytesused as usize {
                0 => buf.len(),
                n => n.min(buf.len()),
            };
            let result = if meta.flags.contains(v4l::buffer::Flags::ERROR) {
                Err("the driver marked the buffer as failed".to_string())
            } else {
                self.reader
                    .read(&buf[..used], main)
                    .map_err(|e| e.to_string())
            };
            match result {
                Ok(()) => return Ok(capture_time(meta)),
                Err(reason) => {
                    bad += 1;
                    tracing::debug!(device = %self.path.display(), %reason, "skipped a picture");
                    if bad >= MAX_BAD_IN_A_ROW {
                        return Err(SourceError::Format(format!(
                            "{}: {bad} bad pictures in a row, the last: {reason}",
                            self.path.display()
                        )));
                    }
                }
            }
        }
    }
}

/// When the driver says the picture was taken, as a [`CaptureTime`]; now when its
/// timestamp is not on the monotonic clock or makes no sense.
fn capture_time(meta: &Metadata) -> CaptureTime {
    const TIMESTAMP_MASK: u32 = 0xe000;
    const TIMESTAMP_MONOTONIC: u32 = 0x2000;
    let now = CaptureTime::now();
    if meta.flags.bits() & TIMESTAMP_MASK != TIMESTAMP_MONOTONIC {
        return now;
    }
    let taken = Duration::new(meta.timestamp.sec as u64, meta.timestamp.usec as u32 * 1000);
    let Some(age) = monotonic_now().checked_sub(taken) else {
        return now;
    };
    if age > Duration::from_secs(1) {
        return now;
    }
    CaptureTime {
        at: Instant::now().checked_sub(age).unwrap_or(now.at),
        wallclock_ms: (SystemTime::now() - age)
            .duration_since(UNIX_EPOCH)
            .map_or(now.wallclock_ms, |d| d.as_millis() as u64),
    }
}

/// The monotonic clock V4L2 stamps buffers with.
fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a pointer to a live local; the
    // monotonic clock always exists on Linux, so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
