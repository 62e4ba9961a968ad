//! libcamera in a helper process: the daemon's own binary run as `focusd
//! __libcamera-capture REQUEST` opens the camera ([`super::negotiate`]) and writes what it
//! captures to its stdout; the daemon reads it as a [`FrameSource`]. A crash in libcamera
//! (its 0.0.3 `libcamerasrc` has a race that dereferences a null request) ends the helper,
//! not the daemon: the capture thread sees a failed source and opens it again with
//! backoff, as for an unplugged camera.
//!
//! On the helper's stdout: one JSON line, the [`Header`] (what was opened, its layouts),
//! then each picture as its planes back to back (main, then low-resolution), packed, in
//! the header's layouts. Its stderr (libcamera's own log) goes to the daemon's log. A
//! helper whose reader goes away exits 0; one that cannot open the camera or loses it
//! says why on stderr and exits 1; a bad request exits 2. Its stdin is a pipe from the
//! daemon: when the daemon ends, even by SIGKILL, the helper ends too.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::frame::CaptureTime;
use crate::image::{Image, Layout, PixelFormat};
use crate::source::gst::STALL;
use crate::source::{FrameSource, SourceError};

use crate::source::{LIBCAMERA_HELPER as CHILD_COMMAND, LIBCAMERA_HELPER_ENV as HELPER_ENV};

/// How long the helper may take to open the camera and send its header: each of its
/// attempts waits up to 4 s for a first picture, and it makes up to four.
const OPENING: Duration = Duration::from_secs(20);

/// The most of the helper's stderr kept for an error message.
const LAST_WORDS: usize = 512;

/// What the daemon asks the helper for.
#[derive(Debug, Serialize, Deserialize)]
struct ChildRequest {
    /// The camera's id; the first camera when `None`.
    id: Option<String>,
    size: (u32, u32),
    fps: f64,
    lores_width: u32,
}

/// A picture layout on the wire (packed: its planes back to back).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct WireLayout {
    /// `NV12` or `I420`.
    format: WireFormat,
    width: u32,
    height: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum WireFormat {
    #[serde(rename = "NV12")]
    Nv12,
    #[serde(rename = "I420")]
    I420,
}

impl WireLayout {
    fn of(layout: &Layout) -> Self {
        let format = match layout.format {
            PixelFormat::Nv12 => WireFormat::Nv12,
            PixelFormat::I420 => WireFormat::I420,
        };
        Self {
            format,
            width: layout.width,
            height: layout.height,
        }
    }

    /// The packed layout, checked (the header comes from another process).
    fn layout(self) -> Result<Layout, String> {
        let format = match self.format {
            WireFormat::Nv12 => PixelFormat::Nv12,
            WireFormat::I420 => PixelFormat::I420,
        };
        let layout = Layout::packed(format, self.width, self.height);
        layout.check().map_err(|e| e.to_string())?;
        Ok(layout)
    }
}

/// The helper's first line.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    /// What was opened and how, e.g. `libcamera imx708 1280x720@30`.
    description: String,
    fps: f64,
    main: WireLayout,
    lores: Option<WireLayout>,
}

/// Runs the helper with the arguments after [`CHILD_COMMAND`]; returns its exit status.
pub fn run_child(args: &[String]) -> u8 {
    let [request] = args else {
        eprintln!("usage: focusd {CHILD_COMMAND} REQUEST-JSON (started by focusd itself)");
        return 2;
    };
    let request: ChildRequest = match serde_json::from_str(request) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("focusd {CHILD_COMMAND}: bad request: {e}");
            return 2;
        }
    };
    match serve(&request, &mut std::io::stdout().lock()) {
        Ok(()) => 0,
        Err(Ended::ReaderGone) => 0,
        Err(Ended::Camera(e)) => {
            eprintln!("focusd {CHILD_COMMAND}: {e}");
            1
        }
    }
}

/// Why the helper stops.
enum Ended {
    /// The daemon closed the pipe: nothing more to do.
    ReaderGone,
    /// The camera could not be opened or was lost.
    Camera(SourceError),
}

impl From<std::io::Error> for Ended {
    fn from(_: std::io::Error) -> Self {
        Ended::ReaderGone
    }
}

impl From<SourceError> for Ended {
    fn from(e: SourceError) -> Self {
        Ended::Camera(e)
    }
}

/// Opens the camera and writes the header and then each picture to `out`, until the
/// camera fails or the reader goes away. The pipeline is never torn down: the process
/// ends right after (libcamera 0.0.3 can crash or hang stopping a camera with requests in
/// flight, and the daemon must see the helper end promptly).
fn serve(request: &ChildRequest, out: &mut impl Write) -> Result<(), Ended> {
    // The daemon holds the other end of stdin: when it ends, however it ends, so does
    // this process, even while blocked in libcamera.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let mut source = std::mem::ManuallyDrop::new(super::negotiate(
        request.id.as_deref(),
        request.size,
        request.fps,
        request.lores_width,
    )?);
    let header = Header {
        description: source.describe(),
        fps: source.fps(),
        main: WireLayout::of(&source.layout()),
        lores: source.lores_layout().as_ref().map(WireLayout::of),
    };
    // Plain data: serializing it cannot fail.
    let line = serde_json::to_string(&header).expect("the header serializes");
    writeln!(out, "{line}")?;
    out.flush()?;
    let mut main = Image::new(source.layout());
    let mut lores = source.lores_layout().map(Image::new);
    loop {
        source.capture(&mut main, lores.as_mut())?;
        for image in std::iter::once(&main).chain(lores.as_ref()) {
            for plane in image.planes() {
                out.write_all(plane.data())?;
            }
        }
        out.flush()?;
    }
}

/// One picture read from the helper.
struct Received {
    at: CaptureTime,
    main: Image,
    lores: Option<Image>,
}

/// The helper binary: [`HELPER_ENV`], else this very binary.
fn helper() -> Result<PathBuf, SourceError> {
    match std::env::var_os(HELPER_ENV) {
        Some(path) => Ok(PathBuf::from(path)),
        None => std::env::current_exe().map_err(|e| {
            SourceError::Io(std::io::Error::other(format!(
                "cannot find focusd's own binary for the libcamera helper: {e} (set {HELPER_ENV})"
            )))
        }),
    }
}

/// Starts the helper for camera `id` and waits for its header; a helper that crashes
/// before it (libcamera's race can strike at once) is given a second try.
pub(in crate::source) fn open(
    id: Option<&str>,
    size: (u32, u32),
    fps: f64,
    lores_width: u32,
) -> Result<Box<dyn FrameSource>, SourceError> {
    let helper = helper()?;
    let camera = id.unwrap_or("(first camera)");
    let failed = |what: String| {
        SourceError::Io(std::io::Error::other(format!("libcamera {camera}: {what}")))
    };
    match start(&helper, id, size, fps, lores_width) {
        Ok(source) => Ok(Box::new(source)),
        Err(Refused { why, crashed: true }) => {
            tracing::warn!(camera, %why, "libcamera's helper crashed while opening the camera; once more");
            start(&helper, id, size, fps, lores_width)
                .map(|s| Box::new(s) as Box<dyn FrameSource>)
                .map_err(|r| failed(r.why))
        }
        Err(Refused { why, .. }) => Err(failed(why)),
    }
}

/// Why a helper did not deliver its header.
struct Refused {
    why: String,
    /// It died of a signal (a crash), not of its own accord or ours.
    crashed: bool,
}

/// One helper for camera `id`, once its header came.
fn start(
    helper: &std::path::Path,
    id: Option<&str>,
    size: (u32, u32),
    fps: f64,
    lores_width: u32,
) -> Result<ChildSource, Refused> {
    let request = ChildRequest {
        id: id.map(str::to_string),
        size,
        fps,
        lores_width,
    };
    // Plain data: serializing it cannot fail.
    let request = serde_json::to_string(&request).expect("the request serializes");
    let failed = |why: String| Refused {
        why,
        crashed: false,
    };
    // Its stdin is a pipe that nothing is written to: it ends when this process does, and
    // the helper with it.
    let mut child = Command::new(helper)
        .arg(CHILD_COMMAND)
        .arg(&request)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot start the helper {}: {e}", helper.display())))?;
    // Both were piped just above.
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let last_words = Arc::new(Mutex::new(String::new()));
    let logger = spawn_logger(stderr, last_words.clone());
    let (header_tx, header_rx) = sync_channel(1);
    // One picture in hand: the capture thread takes pictures as fast as the camera makes
    // them; when it is late, the newer picture waits for the next turn and this one is
    // kept, so nothing queues up behind it.
    let (frames_tx, frames) = sync_channel(1);
    let (recycle, recycled) = sync_channel(2);
    let reader = std::thread::Builder::new()
        .name("libcamera-child".into())
        .spawn(move || read_pictures(stdout, header_tx, frames_tx, recycled))
        .map_err(|e| failed(format!("cannot start the reader thread: {e}")))?;
    let mut source = ChildSource {
        child,
        reader: Some(reader),
        logger: Some(logger),
        frames,
        recycle,
        last_words,
        description: String::new(),
        layout: Layout::packed(PixelFormat::I420, 2, 2),
        lores: None,
        fps: 30.0,
    };
    let header = match header_rx.recv_timeout(OPENING) {
        Ok(Ok(header)) => header,
        Ok(Err(e)) => return Err(source.ended(&e)),
        Err(_) => return Err(source.ended(&format!("no picture within {OPENING:?}"))),
    };
    // The reader checked both layouts before sending the header.
    source.layout = header.main.layout().map_err(&failed)?;
    source.lores = header
        .lores
        .map(WireLayout::layout)
        .transpose()
        .map_err(&failed)?;
    source.description = header.description;
    source.fps = header.fps;
    Ok(source)
}

/// Logs each line of the helper's stderr (libcamera's log, the helper's reason for
/// ending), keeping the last ones for an error message.
fn spawn_logger(stderr: ChildStderr, last_words: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            tracing::debug!(target: "focusd_board::libcamera", "{line}");
            // A poisoned lock only means a reader panicked; the text is whole.
            let mut words = last_words.lock().unwrap_or_else(|e| e.into_inner());
            words.push_str(&line);
            words.push('\n');
            if words.len() > LAST_WORDS {
                let cut = words.len() - LAST_WORDS;
                let cut = (cut..words.len())
                    .find(|&i| words.is_char_boundary(i))
                    .unwrap_or(0);
                words.drain(..cut);
            }
        }
    })
}

/// Reads the header, then pictures until the helper ends or the source is dropped.
fn read_pictures(
    stdout: ChildStdout,
    header_tx: SyncSender<Result<Header, String>>,
    frames: SyncSender<Received>,
    recycled: Receiver<Received>,
) {
    let mut r = BufReader::with_capacity(1 << 20, stdout);
    let mut line = String::new();
    let header = match r.read_line(&mut line) {
        Ok(0) => Err("the helper ended before its first picture".to_string()),
        Ok(_) => serde_json::from_str::<Header>(&line)
            .map_err(|e| format!("bad header from the helper: {e}")),
        Err(e) => Err(format!("reading the helper: {e}")),
    };
    let layouts = header.as_ref().map_err(Clone::clone).and_then(|h| {
        Ok((
            h.main.layout()?,
            h.lores.map(WireLayout::layout).transpose()?,
        ))
    });
    let (main_layout, lores_layout) = match layouts {
        Ok(layouts) => layouts,
        Err(e) => {
            let _ = header_tx.send(Err(e));
            return;
        }
    };
    if header_tx.send(header).is_err() {
        return;
    }
    loop {
        let mut picture = recycled.try_recv().unwrap_or_else(|_| Received {
            at: CaptureTime::now(),
            main: Image::new(main_layout),
            lores: lores_layout.map(Image::new),
        });
        let Received { main, lores, .. } = &mut picture;
        for image in std::iter::once(main).chain(lores.as_mut()) {
            for mut plane in image.planes_mut() {
                if r.read_exact(plane.data_mut()).is_err() {
                    return;
                }
            }
        }
        picture.at = CaptureTime::now();
        match frames.try_send(picture) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// The helper's pictures, as a source.
struct ChildSource {
    child: Child,
    /// Reads the helper's stdout.
    reader: Option<JoinHandle<()>>,
    /// Logs the helper's stderr.
    logger: Option<JoinHandle<()>>,
    frames: Receiver<Received>,
    /// Pictures copied out, back to the reader for the next ones.
    recycle: SyncSender<Received>,
    /// The end of the helper's stderr.
    last_words: Arc<Mutex<String>>,
    description: String,
    layout: Layout,
    lores: Option<Layout>,
    fps: f64,
}

impl ChildSource {
    /// Why the helper stopped: how it ended and the last thing it said. Stops it if it
    /// still runs.
    fn ended(&mut self, what: &str) -> Refused {
        use std::os::unix::process::ExitStatusExt;
        // Whether it ends by itself (its stdout closes just before it exits), before it
        // is stopped here.
        let mut ended_by_itself = false;
        for _ in 0..10 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                ended_by_itself = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let status = self.child.wait();
        let crashed = ended_by_itself && status.as_ref().is_ok_and(|s| s.signal().is_some());
        let status = status
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        if let Some(logger) = self.logger.take() {
            let _ = logger.join();
        }
        let words = self.last_words.lock().unwrap_or_else(|e| e.into_inner());
        let said = words
            .lines()
            .rev()
            .find(|l| l.contains(CHILD_COMMAND) || l.contains("ERROR") || l.contains("CRITICAL"))
            .or(words.lines().last())
            .unwrap_or("")
            .trim();
        Refused {
            why: format!("{what}; the helper {status}: {said}"),
            crashed,
        }
    }
}

impl Drop for ChildSource {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipe is closed with the helper gone: both threads end.
        for thread in [self.reader.take(), self.logger.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
        }
    }
}

impl FrameSource for ChildSource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn layout(&self) -> Layout {
        self.layout
    }

    fn fps(&self) -> f64 {
        self.fps
    }

    fn lores_layout(&self) -> Option<Layout> {
        self.lores
    }

    fn capture(
        &mut self,
        main: &mut Image,
        lores: Option<&mut Image>,
    ) -> Result<CaptureTime, SourceError> {
        let failed = |what: String| SourceError::Io(std::io::Error::other(what));
        let picture = match self.frames.recv_timeout(STALL) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) => {
                return Err(failed(format!(
                    "{}: no picture for {STALL:?}",
                    self.description
                )));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let why = self.ended("the pictures stopped").why;
                return Err(failed(format!("{}: {why}", self.description)));
            }
        };
        let copy = |to: &mut Image, from: &Image| {
            let planes: Vec<(&[u8], usize)> =
                from.planes().map(|p| (p.into_data(), p.stride())).collect();
            to.copy_from_planes(&planes)
                .map_err(|e| failed(format!("{}: {e}", self.description)))
        };
        copy(main, &picture.main)?;
        if let (Some(to), Some(from)) = (lores, &picture.lores) {
            copy(to, from)?;
        }
        let at = picture.at;
        let _ = self.recycle.try_send(picture);
        Ok(at)
    }
}
