//! The V4L2 stateful encoder interface, for any coded format: a device node with an OUTPUT
//! queue that takes raw pictures and a CAPTURE queue that gives coded ones back (kernel
//! docs: "Memory-to-Memory Stateful Video Encoder Interface"). The H.264 encoder on top
//! ([`super::V4l2M2mEncoder`]) adds the codec's controls; this part is the same for the
//! Pi 4's `bcm2835-codec` and for `vicodec`, which is how it is tested without a Pi.
//!
//! The multi-planar API only (`V4L2_CAP_VIDEO_M2M_MPLANE`, what bcm2835-codec speaks), with
//! single-buffer raw formats (YU12, NV12). Both queues use mmap buffers: pictures are
//! copied into the driver's layout (its strides, its padded rows), so no size a driver
//! pads differently from us can corrupt a picture.
//!
//! The steps, in the order the interface requires them:
//! 1. [`M2mDevice::open`]: the node, checked to be an M2M encoder for the coded format;
//!    codec controls go here, before any format (bcm2835 sizes its buffers by the level);
//! 2. [`M2mDevice::start`]: coded format on CAPTURE, raw format on OUTPUT (cropped to the
//!    picture when the driver rounds its size up), the frame interval, buffers on both
//!    queues, streaming on;
//! 3. [`M2mSession::queue_picture`] and [`M2mSession::dequeue_coded`], interleaved;
//!    the timestamp of a picture comes back on its coded buffer, which pairs them;
//! 4. [`M2mSession::drain`]: `V4L2_ENC_CMD_STOP`, then coded buffers until the one marked
//!    `LAST`.
//!
//! Every call is made by the one thread that owns the session. The device node is
//! non-blocking; waits use `poll(2)` with an explicit timeout.

use std::io;
use std::os::raw::c_void;
use std::path::{Path, PathBuf};
use std::time::Duration;

use v4l::v4l_sys::*;
use v4l::v4l2;
use v4l::v4l2::vidioc;

use crate::image::{Image, Layout, PixelFormat};

/// A four-character code as V4L2 stores it.
pub const fn fourcc(code: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*code)
}

/// Coded formats this module is used with.
pub const H264: u32 = fourcc(b"H264");
/// vicodec's coded format.
pub const FWHT: u32 = fourcc(b"FWHT");

/// `VIDIOC_S_SELECTION`, which the `v4l` crate does not list: `_IOWR('V', 95, struct
/// v4l2_selection)`.
const VIDIOC_S_SELECTION: vidioc::_IOC_TYPE = ((3u64 << 30)
    | ((std::mem::size_of::<v4l2_selection>() as u64) << 16)
    | ((b'V' as u64) << 8)
    | 95) as vidioc::_IOC_TYPE;

const OUTPUT: u32 = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE;
const CAPTURE: u32 = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;
const MMAP: u32 = v4l2_memory_V4L2_MEMORY_MMAP;

/// Why a device could not be used or stopped working.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum M2mError {
    /// The node is not a stateful M2M encoder for the coded format, or refused the
    /// settings. A configuration error.
    #[error("{0}")]
    Unsuitable(String),
    /// An ioctl failed: the device is gone (unplugged, EIO) or in a state it cannot leave.
    #[error("{call}: {source}")]
    Io {
        /// The request, e.g. `VIDIOC_QBUF`.
        call: &'static str,
        source: io::Error,
    },
}

impl M2mError {
    fn io(call: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { call, source }
    }
}

/// Calls `request` on `fd` with `arg`.
fn ioctl<T>(fd: i32, request: vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
    loop {
        // SAFETY: every request passed here takes a pointer to exactly a `T` (the
        // request's size is `size_of::<T>()`, encoded in it), which `arg` is, valid and
        // writable for the call.
        match unsafe { v4l2::ioctl(fd, request, arg as *mut T as *mut c_void) } {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A zeroed V4L2 struct, as every request expects its unused fields.
fn zeroed<T>() -> T {
    // SAFETY: only called for the bindgen structs of videodev2.h, plain integers, arrays
    // and unions of them (and raw pointers), for which all zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// An opened M2M encoder node, before streaming: the place to set codec controls.
pub struct M2mDevice {
    device: v4l::Device,
    path: PathBuf,
    /// The driver's name (`bcm2835-codec`, `vicodec`).
    driver: String,
}

impl std::fmt::Debug for M2mDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("M2mDevice")
            .field("path", &self.path)
            .field("driver", &self.driver)
            .finish()
    }
}

/// Formats a queue offers, by fourcc.
fn formats(fd: i32, queue: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for index in 0..64 {
        let mut desc: v4l2_fmtdesc = zeroed();
        desc.index = index;
        desc.type_ = queue;
        if ioctl(fd, vidioc::VIDIOC_ENUM_FMT, &mut desc).is_err() {
            break;
        }
        out.push(desc.pixelformat);
    }
    out
}

/// Whether `path` is an M2M multi-planar node whose CAPTURE queue gives `coded`.
pub fn is_encoder(path: &Path, coded: u32) -> bool {
    M2mDevice::open(path, coded).is_ok()
}

impl M2mDevice {
    /// Opens `path` and checks it is a multi-planar M2M encoder whose CAPTURE queue gives
    /// `coded`.
    pub fn open(path: &Path, coded: u32) -> Result<Self, M2mError> {
        let device = v4l::Device::with_path(path)
            .map_err(|e| M2mError::Unsuitable(format!("cannot open {}: {e}", path.display())))?;
        let caps = device
            .query_caps()
            .map_err(M2mError::io("VIDIOC_QUERYCAP"))?;
        let unsuitable = |why: &str| {
            M2mError::Unsuitable(format!("{} ({}) {why}", path.display(), caps.driver.trim()))
        };
        if !caps
            .capabilities
            .contains(v4l::capability::Flags::VIDEO_M2M_MPLANE)
        {
            return Err(unsuitable("is not a multi-planar memory-to-memory device"));
        }
        let fd = device.handle().fd();
        if !formats(fd, CAPTURE).contains(&coded) {
            return Err(unsuitable(&format!(
                "does not encode to {}",
                fourcc_name(coded)
            )));
        }
        Ok(Self {
            path: path.to_owned(),
            driver: caps.driver.trim().to_owned(),
            device,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The raw formats the OUTPUT queue takes.
    pub fn raw_formats(&self) -> Vec<u32> {
        formats(self.device.handle().fd(), OUTPUT)
    }

    /// A control's range and default, `None` when the driver does not have it.
    pub fn control_range(&self, id: u32) -> Option<ControlRange> {
        let mut query: v4l2_queryctrl = zeroed();
        query.id = id;
        ioctl(
            self.device.handle().fd(),
            vidioc::VIDIOC_QUERYCTRL,
            &mut query,
        )
        .ok()?;
        if query.flags & V4L2_CTRL_FLAG_DISABLED != 0 {
            return None;
        }
        Some(ControlRange {
            min: query.minimum.into(),
            max: query.maximum.into(),
            default: query.default_value.into(),
        })
    }

    /// Sets an integer, boolean, menu or button control.
    pub fn set_control(&self, id: u32, value: i64) -> io::Result<()> {
        set_control(&self.device, id, value)
    }

    /// Sets the formats, allocates buffers on both queues and starts streaming.
    pub fn start(self, config: &SessionConfig) -> Result<M2mSession, M2mError> {
        M2mSession::start(self, config)
    }
}

fn set_control(device: &v4l::Device, id: u32, value: i64) -> io::Result<()> {
    device.set_control(v4l::Control {
        id,
        value: v4l::control::Value::Integer(value),
    })
}

/// A control's range, as the driver reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlRange {
    pub min: i64,
    pub max: i64,
    pub default: i64,
}

/// `H264` for a fourcc code.
pub fn fourcc_name(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

/// What a session is started with.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionConfig {
    /// The coded format on the CAPTURE queue.
    pub coded: u32,
    /// Bytes per coded buffer: the largest access unit expected.
    pub coded_buffer_size: u32,
    /// The raw format on the OUTPUT queue.
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Nominal frame rate, for the driver's rate control.
    pub fps: f64,
    /// Raw buffers: pictures that can be queued before the first comes back.
    pub output_buffers: u32,
    /// Coded buffers.
    pub capture_buffers: u32,
}

/// One mmap'd plane of a buffer.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory shared with the driver; the session that owns it is
// used by one thread at a time, and the pointer is valid until `Drop` unmaps it.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: i32, len: u32, offset: u32) -> io::Result<Self> {
        let len = len as usize;
        // SAFETY: a fresh shared mapping of `len` bytes of the device at the offset the
        // driver gave for this plane (VIDIOC_QUERYBUF); nothing else aliases it.
        let ptr = unsafe {
            v4l2::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )?
        };
        Ok(Self {
            ptr: ptr as *mut u8,
            len,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` writable bytes until drop; `&mut self` makes this the
        // only slice of it (the driver does not touch a buffer that is not queued).
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region `new` mapped, once; no slice of it outlives
        // `self`.
        if let Err(e) = unsafe { v4l2::munmap(self.ptr as *mut c_void, self.len) } {
            tracing::warn!("munmap of an encoder buffer failed: {e}");
        }
    }
}

/// One coded buffer out of [`M2mSession::dequeue_coded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coded {
    /// The id its picture was queued with.
    pub id: u64,
    /// The driver marked it a keyframe.
    pub keyframe: bool,
    /// The driver marked it failed: its bytes are not to be used.
    pub error: bool,
    /// The last buffer of a drain.
    pub last: bool,
}

/// A streaming encoder session; see the [module docs](self).
pub struct M2mSession {
    device: M2mDevice,
    /// The OUTPUT format as the driver set it: its strides and padded rows.
    layout: Layout,
    /// Bytes of one raw picture in the driver's layout (the plane's `sizeimage`).
    picture_len: usize,
    output: Vec<Mapping>,
    /// Raw buffers not queued on the device.
    output_free: Vec<u32>,
    capture: Vec<Mapping>,
    /// A picture converted to the driver's layout, when the caller's differs.
    staging: Option<Image>,
    /// The drain has ended (`LAST` seen): nothing more comes.
    drained: bool,
}

impl std::fmt::Debug for M2mSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("M2mSession")
            .field("device", &self.device)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

fn mplane_format(queue: u32) -> v4l2_format {
    let mut format: v4l2_format = zeroed();
    format.type_ = queue;
    format
}

/// Ids ride in the buffer timestamp, which the driver copies from each picture to its
/// coded buffer.
fn id_to_timeval(id: u64) -> timeval {
    let mut tv: timeval = zeroed();
    tv.tv_sec = (id / 1_000_000) as _;
    tv.tv_usec = (id % 1_000_000) as _;
    tv
}

fn timeval_to_id(tv: &timeval) -> u64 {
    tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64
}

impl M2mSession {
    fn start(device: M2mDevice, config: &SessionConfig) -> Result<Self, M2mError> {
        let fd = device.device.handle().fd();
        let raw = match config.format {
            PixelFormat::I420 => fourcc(b"YU12"),
            PixelFormat::Nv12 => fourcc(b"NV12"),
        };
        if !device.raw_formats().contains(&raw) {
            return Err(M2mError::Unsuitable(format!(
                "{} does not take {} pictures",
                device.path.display(),
                config.format
            )));
        }

        // The coded format first: the raw formats and sizes an encoder offers depend on it.
        let mut coded = mplane_format(CAPTURE);
        // SAFETY (union access): `pix_mp` is the member for multi-planar queues.
        let pix = unsafe { &mut coded.fmt.pix_mp };
        pix.width = config.width;
        pix.height = config.height;
        pix.pixelformat = config.coded;
        pix.field = v4l2_field_V4L2_FIELD_NONE;
        pix.num_planes = 1;
        pix.plane_fmt[0].sizeimage = config.coded_buffer_size;
        ioctl(fd, vidioc::VIDIOC_S_FMT, &mut coded).map_err(M2mError::io("VIDIOC_S_FMT"))?;

        let mut format = mplane_format(OUTPUT);
        // SAFETY (union access): as above.
        let pix = unsafe { &mut format.fmt.pix_mp };
        pix.width = config.width;
        pix.height = config.height;
        pix.pixelformat = raw;
        pix.field = v4l2_field_V4L2_FIELD_NONE;
        pix.num_planes = 1;
        ioctl(fd, vidioc::VIDIOC_S_FMT, &mut format).map_err(M2mError::io("VIDIOC_S_FMT"))?;
        // SAFETY (union access): the driver filled `pix_mp` for this multi-planar queue.
        let pix = unsafe { format.fmt.pix_mp };
        let (width, height, pixelformat, planes) =
            (pix.width, pix.height, pix.pixelformat, pix.num_planes);
        // A driver may round the size up to its macroblocks or alignment (the coded size);
        // the picture is then the top-left part of it, and the crop says so.
        if pixelformat != raw || planes != 1 || width < config.width || height < config.height {
            return Err(M2mError::Unsuitable(format!(
                "{} cannot take {}x{} {} pictures (it offers {}x{} {} in {planes} planes)",
                device.path.display(),
                config.width,
                config.height,
                config.format,
                width,
                height,
                fourcc_name(pixelformat),
            )));
        }
        if (width, height) != (config.width, config.height) {
            let mut crop: v4l2_selection = zeroed();
            crop.type_ = OUTPUT;
            crop.target = V4L2_SEL_TGT_CROP;
            crop.r.width = config.width;
            crop.r.height = config.height;
            ioctl(fd, VIDIOC_S_SELECTION, &mut crop).map_err(|e| {
                M2mError::Unsuitable(format!(
                    "{} pads {}x{} pictures to {width}x{height} and cannot crop them: {e}",
                    device.path.display(),
                    config.width,
                    config.height,
                ))
            })?;
        }
        let stride = pix.plane_fmt[0].bytesperline;
        let picture_len = pix.plane_fmt[0].sizeimage as usize;
        let layout =
            driver_layout(config.format, config.width, config.height, stride, picture_len)
                .ok_or_else(|| {
                    M2mError::Unsuitable(format!(
                        "{} reports a {}x{} {} plane of {picture_len} bytes with {stride}-byte rows, which cannot hold the picture",
                        device.path.display(),
                        width,
                        height,
                        config.format
                    ))
                })?;

        // The frame interval is a hint for rate control; drivers without it are fine.
        let mut parm: v4l2_streamparm = zeroed();
        parm.type_ = OUTPUT;
        // SAFETY (union access): `output` is the member for OUTPUT queues.
        let out = unsafe { &mut parm.parm.output };
        out.timeperframe.numerator = 1000;
        out.timeperframe.denominator = (config.fps * 1000.0).round().max(1.0) as u32;
        if let Err(e) = ioctl(fd, vidioc::VIDIOC_S_PARM, &mut parm) {
            tracing::debug!("{}: frame interval not set: {e}", device.path.display());
        }

        let output = map_buffers(fd, OUTPUT, config.output_buffers)?;
        if output.iter().any(|m| m.len < layout.len()) {
            return Err(M2mError::Unsuitable(format!(
                "{}'s raw buffers are smaller than a {}x{} picture",
                device.path.display(),
                width,
                height
            )));
        }
        let capture = map_buffers(fd, CAPTURE, config.capture_buffers)?;
        let mut session = Self {
            output_free: (0..output.len() as u32).rev().collect(),
            output,
            capture,
            layout,
            picture_len,
            device,
            staging: None,
            drained: false,
        };
        for index in 0..session.capture.len() as u32 {
            session.queue_capture(index)?;
        }
        for queue in [OUTPUT, CAPTURE] {
            let mut kind = queue as i32;
            ioctl(fd, vidioc::VIDIOC_STREAMON, &mut kind)
                .map_err(M2mError::io("VIDIOC_STREAMON"))?;
        }
        Ok(session)
    }

    fn fd(&self) -> i32 {
        self.device.device.handle().fd()
    }

    pub fn device(&self) -> &M2mDevice {
        &self.device
    }

    /// The raw pictures' layout on the device.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Sets a control while streaming (a bitrate, a keyframe request).
    pub fn set_control(&self, id: u32, value: i64) -> io::Result<()> {
        self.device.set_control(id, value)
    }

    fn queue_capture(&mut self, index: u32) -> Result<(), M2mError> {
        let mut plane: v4l2_plane = zeroed();
        let mut buf: v4l2_buffer = zeroed();
        buf.index = index;
        buf.type_ = CAPTURE;
        buf.memory = MMAP;
        buf.length = 1;
        buf.m.planes = &mut plane;
        ioctl(self.fd(), vidioc::VIDIOC_QBUF, &mut buf).map_err(M2mError::io("VIDIOC_QBUF"))
    }

    /// Takes back the raw buffers the device has finished with.
    fn reclaim_output(&mut self) -> Result<(), M2mError> {
        loop {
            let mut planes: [v4l2_plane; 1] = zeroed();
            let mut buf: v4l2_buffer = zeroed();
            buf.type_ = OUTPUT;
            buf.memory = MMAP;
            buf.length = 1;
            buf.m.planes = planes.as_mut_ptr();
            match ioctl(self.fd(), vidioc::VIDIOC_DQBUF, &mut buf) {
                Ok(()) => self.output_free.push(buf.index),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // Not streaming any more (after a drain): nothing to take back.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => return Ok(()),
                Err(e) => {
                    return Err(M2mError::Io {
                        call: "VIDIOC_DQBUF",
                        source: e,
                    });
                }
            }
        }
    }

    /// Whether a raw buffer is free for [`queue_picture`](Self::queue_picture), waiting up
    /// to `timeout` for the device to finish one.
    pub fn wait_for_output(&mut self, timeout: Duration) -> Result<bool, M2mError> {
        self.reclaim_output()?;
        if self.output_free.is_empty() && self.wait(libc::POLLOUT, timeout)? {
            self.reclaim_output()?;
        }
        Ok(!self.output_free.is_empty())
    }

    /// Queues one picture under `id` (which comes back on its coded buffer). Fails with
    /// `Ok(false)` when every raw buffer is still on the device.
    pub fn queue_picture(&mut self, image: &Image, id: u64) -> Result<bool, M2mError> {
        self.reclaim_output()?;
        let Some(index) = self.output_free.pop() else {
            return Ok(false);
        };
        let source: &Image = if image.layout() == &self.layout {
            image
        } else {
            let staging = self.staging.get_or_insert_with(|| Image::new(self.layout));
            staging.copy_from(image);
            staging
        };
        // Fits: `start` checked that every raw buffer holds a picture of `layout`.
        let bytes = source.as_bytes();
        self.output[index as usize].bytes_mut()[..bytes.len()].copy_from_slice(bytes);

        let mut plane: v4l2_plane = zeroed();
        plane.bytesused = self.picture_len as u32;
        plane.length = self.output[index as usize].len as u32;
        let mut buf: v4l2_buffer = zeroed();
        buf.index = index;
        buf.type_ = OUTPUT;
        buf.memory = MMAP;
        buf.field = v4l2_field_V4L2_FIELD_NONE;
        buf.timestamp = id_to_timeval(id);
        buf.flags = V4L2_BUF_FLAG_TIMESTAMP_COPY;
        buf.length = 1;
        buf.m.planes = &mut plane;
        if let Err(e) = ioctl(self.fd(), vidioc::VIDIOC_QBUF, &mut buf) {
            self.output_free.push(index);
            return Err(M2mError::Io {
                call: "VIDIOC_QBUF",
                source: e,
            });
        }
        Ok(true)
    }

    /// Takes one finished coded buffer, appending its bytes to `out`, without waiting;
    /// `None` when none is ready (or the drain has ended).
    pub fn dequeue_coded(&mut self, out: &mut Vec<u8>) -> Result<Option<Coded>, M2mError> {
        if self.drained {
            return Ok(None);
        }
        let mut plane: v4l2_plane = zeroed();
        let mut buf: v4l2_buffer = zeroed();
        buf.type_ = CAPTURE;
        buf.memory = MMAP;
        buf.length = 1;
        buf.m.planes = &mut plane;
        match ioctl(self.fd(), vidioc::VIDIOC_DQBUF, &mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            // The last buffer was taken already: the drain is over.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                self.drained = true;
                return Ok(None);
            }
            Err(e) => {
                return Err(M2mError::Io {
                    call: "VIDIOC_DQBUF",
                    source: e,
                });
            }
        }
        let coded = Coded {
            id: timeval_to_id(&buf.timestamp),
            keyframe: buf.flags & V4L2_BUF_FLAG_KEYFRAME != 0,
            error: buf.flags & V4L2_BUF_FLAG_ERROR != 0,
            last: buf.flags & V4L2_BUF_FLAG_LAST != 0,
        };
        let mapping = &self.capture[buf.index as usize];
        let end = (plane.bytesused as usize).min(mapping.len);
        let start = (plane.data_offset as usize).min(end);
        if !coded.error {
            out.extend_from_slice(&mapping.bytes()[start..end]);
        }
        if coded.last {
            self.drained = true;
        } else {
            self.queue_capture(buf.index)?;
        }
        Ok(Some(coded))
    }

    /// Waits up to `timeout` for a coded buffer; whether one is ready.
    pub fn wait_for_coded(&mut self, timeout: Duration) -> Result<bool, M2mError> {
        if self.drained {
            return Ok(false);
        }
        self.wait(libc::POLLIN, timeout)
    }

    /// Polls the node for `events`; an error condition (the device gone) is an error.
    fn wait(&self, events: i16, timeout: Duration) -> Result<bool, M2mError> {
        let mut fds = libc::pollfd {
            fd: self.fd(),
            events,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        loop {
            // SAFETY: one valid pollfd, for the duration of the call.
            let n = unsafe { libc::poll(&mut fds, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(M2mError::Io {
                    call: "poll",
                    source: e,
                });
            }
            if fds.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
                && fds.revents & events == 0
            {
                return Err(M2mError::Io {
                    call: "poll",
                    source: io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the device reports an error (gone, or not streaming)",
                    ),
                });
            }
            return Ok(fds.revents & events != 0);
        }
    }

    /// Starts a drain (`V4L2_ENC_CMD_STOP`): the device encodes what it holds, then marks
    /// its last coded buffer. Take them with [`dequeue_coded`](Self::dequeue_coded) until
    /// one is `last`.
    pub fn drain(&mut self) -> Result<(), M2mError> {
        let mut cmd: v4l2_encoder_cmd = zeroed();
        cmd.cmd = V4L2_ENC_CMD_STOP;
        ioctl(self.fd(), vidioc::VIDIOC_ENCODER_CMD, &mut cmd)
            .map_err(M2mError::io("VIDIOC_ENCODER_CMD"))
    }

    /// Whether the drain has ended.
    pub fn is_drained(&self) -> bool {
        self.drained
    }
}

impl Drop for M2mSession {
    fn drop(&mut self) {
        let fd = self.fd();
        for queue in [OUTPUT, CAPTURE] {
            let mut kind = queue as i32;
            // Best effort: a device that is gone has stopped already.
            let _ = ioctl(fd, vidioc::VIDIOC_STREAMOFF, &mut kind);
        }
        // Unmap before freeing the buffers; the file handle closes with `device`.
        self.output.clear();
        self.capture.clear();
        for queue in [OUTPUT, CAPTURE] {
            let mut req: v4l2_requestbuffers = zeroed();
            req.type_ = queue;
            req.memory = MMAP;
            let _ = ioctl(fd, vidioc::VIDIOC_REQBUFS, &mut req);
        }
    }
}

/// Allocates and maps `count` single-plane mmap buffers on `queue`.
fn map_buffers(fd: i32, queue: u32, count: u32) -> Result<Vec<Mapping>, M2mError> {
    let mut req: v4l2_requestbuffers = zeroed();
    req.count = count;
    req.type_ = queue;
    req.memory = MMAP;
    ioctl(fd, vidioc::VIDIOC_REQBUFS, &mut req).map_err(M2mError::io("VIDIOC_REQBUFS"))?;
    if req.count == 0 {
        return Err(M2mError::Unsuitable("the device gave no buffers".into()));
    }
    (0..req.count)
        .map(|index| {
            let mut plane: v4l2_plane = zeroed();
            let mut buf: v4l2_buffer = zeroed();
            buf.index = index;
            buf.type_ = queue;
            buf.memory = MMAP;
            buf.length = 1;
            buf.m.planes = &mut plane;
            ioctl(fd, vidioc::VIDIOC_QUERYBUF, &mut buf)
                .map_err(M2mError::io("VIDIOC_QUERYBUF"))?;
            // SAFETY (union access): `mem_offset` is the member for mmap buffers.
            let offset = unsafe { plane.m.mem_offset };
            Mapping::new(fd, plane.length, offset).map_err(M2mError::io("mmap"))
        })
        .collect()
}

/// The [`Layout`] of a single-buffer 4:2:0 plane of `len` bytes with `stride`-byte luma
/// rows: the rows below the picture that the driver pads (bcm2835 pads 1080 to 1088) come
/// from the plane's size. `None` when it cannot hold the picture.
pub fn driver_layout(
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: u32,
    len: usize,
) -> Option<Layout> {
    if stride < width || !stride.is_multiple_of(2) {
        return None;
    }
    // Both formats take 1.5 bytes per luma byte: chroma is half the luma rows, at the
    // luma stride (NV12) or two planes at half of it (I420).
    let rows = (len * 2 / (stride as usize * 3)) as u32;
    let layout = Layout {
        format,
        width,
        height,
        luma_stride: stride,
        chroma_stride: match format {
            PixelFormat::I420 => stride / 2,
            PixelFormat::Nv12 => stride,
        },
        luma_rows: (rows & !1).max(height),
    };
    (layout.check().is_ok() && layout.len() <= len).then_some(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_codes_read_as_written() {
        assert_eq!(fourcc_name(H264), "H264");
        assert_eq!(fourcc_name(FWHT), "FWHT");
        assert_eq!(fourcc(b"YU12"), 0x3231_5559);
    }

    #[test]
    fn the_selection_request_is_the_kernels() {
        // videodev2.h on a 64-bit kernel: _IOWR('V', 95, struct v4l2_selection), 64 bytes.
        assert_eq!(std::mem::size_of::<v4l2_selection>(), 64);
        assert_eq!(VIDIOC_S_SELECTION, 0xc040_565f);
        assert_eq!(vidioc::VIDIOC_S_FMT >> 30, 3, "the same direction bits");
    }

    #[test]
    fn ids_survive_the_timestamp() {
        for id in [0, 1, 999_999, 1_000_000, 123_456_789] {
            assert_eq!(timeval_to_id(&id_to_timeval(id)), id);
        }
    }

    #[test]
    fn driver_layouts_follow_the_plane() {
        // bcm2835-codec, 1920x1080 I420: 32-byte rows, luma padded to 1088 rows.
        let l = driver_layout(PixelFormat::I420, 1920, 1080, 1920, 1920 * 1088 * 3 / 2).unwrap();
        assert_eq!(
            (l.luma_stride, l.chroma_stride, l.luma_rows),
            (1920, 960, 1088)
        );
        // An odd width padded to 32-byte rows (what a packed buffer gets wrong).
        let l = driver_layout(PixelFormat::Nv12, 1296, 972, 1312, 1312 * 976 * 3 / 2).unwrap();
        assert_eq!(
            (l.luma_stride, l.chroma_stride, l.luma_rows),
            (1312, 1312, 976)
        );
        // vicodec: packed.
        let l = driver_layout(PixelFormat::I420, 640, 480, 640, 640 * 480 * 3 / 2).unwrap();
        assert_eq!(l, Layout::packed(PixelFormat::I420, 640, 480));
        // Too small a plane, too narrow a row.
        assert!(driver_layout(PixelFormat::I420, 640, 480, 640, 640 * 400).is_none());
        assert!(driver_layout(PixelFormat::I420, 640, 480, 320, 640 * 480 * 2).is_none());
    }
}
