//! The `file:` source: a YUV4MPEG2 (`.y4m`) file with 4:2:0 frames, looped forever and
//! paced at the frame rate in its header.
//!
//! A pipe (e.g. a FIFO fed by `ffmpeg ... -f yuv4mpegpipe`) is read as a live stream: it
//! cannot be looped, so its end is a capture error and the source is opened again, which
//! waits for the next writer.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{FrameSource, Pacer, SourceError};
use crate::frame::CaptureTime;
use crate::image::{Image, Layout, PixelFormat};
use crate::scale::Scaler;

/// A looping y4m reader.
#[derive(Debug)]
pub struct Y4mFile {
    path: PathBuf,
    reader: BufReader<File>,
    /// Byte offset of the first `FRAME` header, where a loop starts again.
    data_start: u64,
    fps: f64,
    /// Present when frames are scaled to another size; holds the native-size frame.
    scaling: Option<(Scaler, Image)>,
    out_size: (u32, u32),
    pacer: Pacer,
    frames_read: u64,
    /// Whether the input can be rewound (a regular file), so that it loops.
    seekable: bool,
    /// From a pipe, the frame read at open to check the format, delivered first.
    first: Option<Image>,
}

/// The parts of a y4m stream header that matter here.
#[derive(Debug, PartialEq)]
struct Header {
    width: u32,
    height: u32,
    fps: f64,
}

fn parse_header(line: &str) -> Result<Header, String> {
    let mut words = line.split_ascii_whitespace();
    if words.next() != Some("YUV4MPEG2") {
        return Err("not a YUV4MPEG2 (.y4m) file".into());
    }
    let (mut width, mut height, mut fps) = (None, None, 30.0);
    for word in words {
        let (tag, value) = word.split_at(1);
        match tag {
            "W" => width = value.parse().ok(),
            "H" => height = value.parse().ok(),
            "F" => {
                let (n, d) = value
                    .split_once(':')
                    .ok_or("bad frame rate in y4m header")?;
                let (n, d): (f64, f64) = (
                    n.parse().map_err(|_| "bad frame rate in y4m header")?,
                    d.parse().map_err(|_| "bad frame rate in y4m header")?,
                );
                if n <= 0.0 || d <= 0.0 {
                    return Err("bad frame rate in y4m header".into());
                }
                fps = n / d;
            }
            "C" if !value.starts_with("420") => {
                return Err(format!(
                    "y4m colour space C{value} is not supported: convert to 4:2:0 (ffmpeg -pix_fmt yuv420p)"
                ));
            }
            "I" if value != "p" && value != "?" => {
                return Err("interlaced y4m is not supported".into());
            }
            _ => {}
        }
    }
    let (width, height) = (
        width.ok_or("y4m header has no width")?,
        height.ok_or("y4m header has no height")?,
    );
    if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
        return Err(format!(
            "y4m frame size {width}x{height} is not supported: width and height must be even"
        ));
    }
    Ok(Header { width, height, fps })
}

impl Y4mFile {
    /// Opens `path`; frames are scaled to `size` when given.
    pub fn open(path: &Path, size: Option<(u32, u32)>) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|source| SourceError::Open {
            path: path.to_owned(),
            source,
        })?;
        let seekable = file.metadata()?.is_file();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = String::new();
        // The header is one short text line; cap it so a binary file is not read whole.
        (&mut reader).take(1024).read_line(&mut line)?;
        let header = parse_header(line.trim_end())
            .map_err(|e| SourceError::Format(format!("{}: {e}", path.display())))?;
        let native = (header.width, header.height);
        let out_size = size.unwrap_or(native);
        let scaling = (out_size != native).then(|| {
            (
                Scaler::new(native, out_size),
                Image::i420(native.0, native.1),
            )
        });
        let mut me = Self {
            path: path.to_owned(),
            data_start: line.len() as u64,
            reader,
            fps: header.fps,
            scaling,
            out_size,
            pacer: Pacer::new(header.fps),
            frames_read: 0,
            seekable,
            first: None,
        };
        // Fail now, not on the first capture, if the file holds no whole frame.
        let mut probe = Image::i420(native.0, native.1);
        if !me.read_frame(&mut probe)? {
            return Err(SourceError::Format(format!(
                "{}: no complete frame in file",
                path.display()
            )));
        }
        if seekable {
            me.reader.seek(SeekFrom::Start(me.data_start))?;
            me.frames_read = 0;
        } else {
            me.first = Some(probe);
        }
        Ok(me)
    }

    /// Reads the next frame at native size, at once (not paced: for a replay on its own
    /// clock); `false` at a clean end of file, where the file stays (`capture` loops).
    pub fn read_frame(&mut self, into: &mut Image) -> Result<bool, SourceError> {
        let mut line = Vec::with_capacity(16);
        let n = (&mut self.reader).take(256).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(false);
        }
        if !line.starts_with(b"FRAME") {
            return Err(SourceError::Format(format!(
                "{}: expected FRAME header at frame {}",
                self.path.display(),
                self.frames_read
            )));
        }
        match self.reader.read_exact(into.as_bytes_mut()) {
            Ok(()) => {}
            // A truncated last frame ends the loop like a clean end of file.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.frames_read += 1;
        Ok(true)
    }

    fn next_into(&mut self, native: &mut Image) -> Result<(), SourceError> {
        if let Some(first) = self.first.take() {
            native.as_bytes_mut().copy_from_slice(first.as_bytes());
            return Ok(());
        }
        if self.read_frame(native)? {
            return Ok(());
        }
        if !self.seekable {
            return Err(SourceError::Format(format!(
                "{}: the stream ended",
                self.path.display()
            )));
        }
        self.reader.seek(SeekFrom::Start(self.data_start))?;
        self.frames_read = 0;
        if self.read_frame(native)? {
            Ok(())
        } else {
            Err(SourceError::Format(format!(
                "{}: file no longer holds a complete frame",
                self.path.display()
            )))
        }
    }
}

impl FrameSource for Y4mFile {
    fn describe(&self) -> String {
        format!(
            "file {} {}x{}@{:.0}",
            self.path.display(),
            self.out_size.0,
            self.out_size.1,
            self.fps
        )
    }

    fn layout(&self) -> Layout {
        // A y4m frame is packed I420: it is read straight into the image.
        Layout::packed(PixelFormat::I420, self.out_size.0, self.out_size.1)
    }

    fn fps(&self) -> f64 {
        self.fps
    }

    fn capture(
        &mut self,
        main: &mut Image,
        _lores: Option<&mut Image>,
    ) -> Result<CaptureTime, SourceError> {
        self.pacer.wait();
        match self.scaling.take() {
            Some((scaler, mut native)) => {
                let result = self.next_into(&mut native);
                if result.is_ok() {
                    scaler.scale(&native, main);
                }
                self.scaling = Some((scaler, native));
                result?;
            }
            None => self.next_into(main)?,
        }
        Ok(CaptureTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_y4m(path: &Path, w: u32, h: u32, frames: u8) {
        let mut f = File::create(path).unwrap();
        writeln!(f, "YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg").unwrap();
        for i in 0..frames {
            f.write_all(b"FRAME\n").unwrap();
            f.write_all(&vec![i * 10 + 20; (w * h * 3 / 2) as usize])
                .unwrap();
        }
    }

    #[test]
    fn header_parsing() {
        assert_eq!(
            parse_header("YUV4MPEG2 W768 H576 F10:1 Ip A0:0 C420jpeg XYSCSS=420JPEG"),
            Ok(Header {
                width: 768,
                height: 576,
                fps: 10.0
            })
        );
        assert!(
            parse_header("YUV4MPEG2 W768 H576 F10:1 C444")
                .unwrap_err()
                .contains("4:2:0")
        );
        assert!(
            parse_header("RIFF....")
                .unwrap_err()
                .contains("not a YUV4MPEG2")
        );
        assert!(
            parse_header("YUV4MPEG2 W767 H576")
                .unwrap_err()
                .contains("even")
        );
        assert!(parse_header("YUV4MPEG2 W64 H64 F0:1").is_err());
    }

    #[test]
    fn loops_and_scales() {
        let dir = std::env::temp_dir().join(format!("focusd-y4m-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("three.y4m");
        write_y4m(&path, 16, 8, 3);
        let mut src = Y4mFile::open(&path, None).unwrap();
        src.pacer = Pacer::new(10_000.0);
        let mut img = Image::new(src.layout());
        let mut seen = vec![];
        for _ in 0..5 {
            src.capture(&mut img, None).unwrap();
            seen.push(img.luma().row(0)[0]);
        }
        assert_eq!(seen, vec![20, 30, 40, 20, 30]);

        let mut scaled = Y4mFile::open(&path, Some((32, 16))).unwrap();
        assert_eq!(scaled.layout().size(), (32, 16));
        let mut big = Image::new(scaled.layout());
        scaled.capture(&mut big, None).unwrap();
        assert!(big.luma().data().iter().all(|&p| p == 20));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_or_missing_file_is_a_clear_error() {
        let missing = Y4mFile::open(Path::new("/nonexistent/x.y4m"), None).unwrap_err();
        assert!(missing.to_string().contains("cannot open"), "{missing}");
        let dir = std::env::temp_dir().join(format!("focusd-y4m-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.y4m");
        write_y4m(&path, 16, 8, 0);
        let err = Y4mFile::open(&path, None).unwrap_err();
        assert!(err.to_string().contains("no complete frame"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pipe_is_read_once_as_a_live_stream() {
        let dir = std::env::temp_dir().join(format!("focusd-y4m-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("live.y4m");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let writer = {
            let fifo = fifo.clone();
            // Opening a FIFO for writing waits for the reader, so write from a thread.
            std::thread::spawn(move || write_y4m(&fifo, 16, 8, 3))
        };
        let mut src = Y4mFile::open(&fifo, None).unwrap();
        src.pacer = Pacer::new(10_000.0);
        let mut img = Image::new(src.layout());
        let mut seen = vec![];
        for _ in 0..3 {
            src.capture(&mut img, None).unwrap();
            seen.push(img.luma().row(0)[0]);
        }
        assert_eq!(
            seen,
            vec![20, 30, 40],
            "every frame once, the probed one first"
        );
        writer.join().unwrap();
        let end = src.capture(&mut img, None).unwrap_err();
        assert!(end.to_string().contains("the stream ended"), "{end}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
