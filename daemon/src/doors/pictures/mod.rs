//! The doors that serve pictures rather than WebRTC, all from the one capture and at once:
//! `GET /snapshot.jpg`, `GET /stream.mjpeg`, `/ws/jpeg` and `/ws/frames`.
//!
//! Every consumer reads the newest frame from the [`FrameFeed`] when it is ready for one,
//! so a slow consumer skips frames and delays no one: not the camera, not the WebRTC
//! viewers, not the other consumers. JPEG and compression run on tokio's blocking pool,
//! one picture at a time per consumer, and only while a consumer waits for one: an idle
//! or closed door costs nothing. Each door admits at most its `max_consumers`, and closing
//! a door (`PUT /api/streams`) ends its consumers at their next frame.
//!
//! * this module: [`Pictures`], what every door shares, and the picture of a frame;
//! * [`snapshot`], [`mjpeg`]: the HTTP doors;
//! * [`ws_jpeg`] with [`quality`] (the adaptive policy), [`ws_frames`]: the WebSockets.

pub mod mjpeg;
pub mod quality;
pub mod snapshot;
pub mod ws_frames;
pub mod ws_jpeg;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::Message;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use focusd_board::frame::PooledFrame;
use focusd_board::image::{Image, Layout};
use focusd_board::jpeg::{JpegEncoder, JpegError};
use focusd_board::scale::Scaler;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use ws_frames::Codec;

use crate::fanout::FrameFeed;
use crate::service::metrics::Metrics;
use crate::state::Control;
use crate::state::protocol::{FrameMeta, PictureMessage};
use crate::state::streams::{Door, DoorSettings};
use crate::track::Track;
use crate::video::mask;

/// How long a consumer waits for a frame before saying there is none.
pub const FRAME_WAIT: Duration = Duration::from_secs(2);

/// What every picture door shares.
#[derive(Clone, Debug)]
pub struct Pictures {
    /// The newest frame.
    pub feed: FrameFeed,
    /// Mode, ROI and the doors' settings.
    pub control: Arc<Control>,
    pub metrics: Arc<Metrics>,
    /// Rows of test stamp at the top of the main image (kept through masking).
    pub stamp_rows: u32,
    /// The source's frame rate.
    pub fps: f64,
    /// Consumers each door has now, indexed like [`Door::ALL`].
    consumers: Arc<[AtomicU32; Door::ALL.len()]>,
    /// Ends every consumer at shutdown (WebSockets outlive their HTTP connection).
    pub shutdown: CancellationToken,
}

/// Why a consumer cannot be admitted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// The door is closed (`/api/streams`).
    #[error("the {0} door is closed (PUT /api/streams to open it)")]
    Closed(&'static str),
    /// The door has `max_consumers` already.
    #[error("the {door} door has its {max} consumers already")]
    Full { door: &'static str, max: u32 },
}

/// A consumer admitted to a door; leaving when dropped.
#[derive(Debug)]
pub struct Consumer {
    door: Door,
    consumers: Arc<[AtomicU32; Door::ALL.len()]>,
    metrics: Arc<Metrics>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.consumers[self.door as usize].fetch_sub(1, Ordering::Relaxed);
        self.metrics.door(self.door).left.inc();
    }
}

impl Consumer {
    /// Counts a picture sent to this consumer.
    pub fn sent(&self, bytes: usize) {
        let m = self.metrics.door(self.door);
        m.frames.inc();
        m.bytes.add(bytes as u64);
    }
}

impl Pictures {
    pub fn new(
        feed: FrameFeed,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
        stamp_rows: u32,
        fps: f64,
        shutdown: CancellationToken,
    ) -> Pictures {
        Pictures {
            feed,
            control,
            metrics,
            stamp_rows,
            fps,
            consumers: Arc::new(Default::default()),
            shutdown,
        }
    }

    /// A request to `door` checked and admitted: what it asked and its place, or the
    /// answer that refuses it (400 for a bad query, 503 for a closed or full door).
    pub fn open(
        &self,
        door: Door,
        query: Result<Query<PictureQuery>, QueryRejection>,
    ) -> Result<(Asked, Consumer), Refusal> {
        let Query(q) = query.map_err(|e| refuse(StatusCode::BAD_REQUEST, e.body_text()))?;
        let asked = q
            .check(door)
            .map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
        let consumer = self
            .admit(door)
            .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e))?;
        Ok((asked, consumer))
    }

    /// `track`'s picture of `frame` as the mode shapes it now (see
    /// [`mask::track_picture`]); `None` for the source in LOW.
    pub fn picture<'a>(
        &self,
        frame: &'a PooledFrame,
        track: Track,
        scratch: &'a mut Option<Image>,
    ) -> Option<&'a Image> {
        mask::track_picture(
            track,
            frame,
            || self.control.shaping(),
            self.stamp_rows,
            scratch,
        )
    }

    /// The door's settings now.
    pub fn settings(&self, door: Door) -> DoorSettings {
        *self.control.streams().door(door)
    }

    /// Admits one more consumer to `door`, if it is open and has room.
    pub fn admit(&self, door: Door) -> Result<Consumer, AdmitError> {
        let settings = self.settings(door);
        if !settings.enabled {
            return Err(AdmitError::Closed(door.name()));
        }
        let count = &self.consumers[door as usize];
        count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < settings.max_consumers).then_some(n + 1)
            })
            .map_err(|_| AdmitError::Full {
                door: door.name(),
                max: settings.max_consumers,
            })?;
        self.metrics.door(door).joined.inc();
        Ok(Consumer {
            door,
            consumers: self.consumers.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// Consumers `door` has now.
    pub fn consumers(&self, door: Door) -> u32 {
        self.consumers[door as usize].load(Ordering::Relaxed)
    }

    /// The frame rate a consumer of `door` asking `wanted` gets: at most the door's cap
    /// and the source's rate.
    pub fn rate(&self, door: Door, wanted: Option<f64>) -> f64 {
        let cap = self.settings(door).max_fps.min(self.fps.max(0.1));
        wanted
            .filter(|f| f.is_finite() && *f > 0.0)
            .map_or(cap, |f| f.min(cap))
    }

    /// The metadata of `frame` as `track` shows it now (mode and ROI as of now).
    pub fn meta(&self, frame: &PooledFrame, track: Track, picture: (u32, u32)) -> FrameMeta {
        let shaping = self.control.shaping();
        FrameMeta {
            seq: frame.seq,
            track: track.name().into(),
            width: picture.0,
            height: picture.1,
            format: String::new(),
            codec: String::new(),
            quality: None,
            bytes: 0,
            planes: Vec::new(),
            captured_ms: frame.wallclock_ms,
            mode: shaping.mode,
            roi: shaping.roi,
        }
    }
}

/// A request refused: its status and one line of reason, answered as text.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    reason: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.reason),
        )
            .into_response()
    }
}

/// A refusal with `status` and `reason`.
pub(super) fn refuse(status: StatusCode, reason: impl std::fmt::Display) -> Refusal {
    Refusal {
        status,
        reason: reason.to_string(),
    }
}

/// The query of every picture door; each takes some of it (see [`PictureQuery::check`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PictureQuery {
    track: Option<String>,
    quality: Option<u8>,
    fps: Option<f64>,
    codec: Option<Codec>,
    /// The access token (read by the access rules).
    #[allow(dead_code)]
    token: Option<String>,
}

/// What a request asked for, checked.
#[derive(Debug)]
pub struct Asked {
    /// `source` unless asked.
    pub track: Track,
    /// 1..=100.
    pub quality: Option<u8>,
    /// Above 0.
    pub fps: Option<f64>,
    pub codec: Option<Codec>,
}

impl PictureQuery {
    /// The query checked for `door`: a parameter it does not take, or a value out of
    /// range, is refused 400 with the reason.
    fn check(self, door: Door) -> Result<Asked, String> {
        let (fps, quality, codec) = match door {
            Door::Snapshot => (false, true, false),
            Door::Mjpeg | Door::WsJpeg => (true, true, false),
            Door::WsFrames => (true, false, true),
        };
        for (given, takes, name) in [
            (self.fps.is_some(), fps, "fps"),
            (self.quality.is_some(), quality, "quality"),
            (self.codec.is_some(), codec, "codec"),
        ] {
            if given && !takes {
                return Err(format!(
                    "`{name}` is not a parameter of the {} door",
                    door.name()
                ));
            }
        }
        let track = match self.track.as_deref() {
            None => Track::Source,
            Some(name) => Track::ALL
                .into_iter()
                .find(|t| t.name() == name)
                .ok_or_else(|| format!("track must be source or context, not `{name}`"))?,
        };
        if let Some(q) = self.quality
            && !(1..=100).contains(&q)
        {
            return Err(format!("quality must be within 1..=100, not {q}"));
        }
        if let Some(f) = self.fps
            && !(f.is_finite() && f > 0.0)
        {
            return Err(format!("fps must be above 0, not {f}"));
        }
        Ok(Asked {
            track,
            quality: self.quality,
            fps: self.fps,
            codec: self.codec,
        })
    }
}

/// How large a JPEG picture is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scale {
    /// Half as wide and high (the last step of `/ws/jpeg`'s policy).
    Half,
    /// As the track has it.
    Full,
}

/// One consumer's JPEG work, moved to the blocking pool for each picture and back.
#[derive(Debug, Default)]
pub struct JpegWorker {
    encoder: JpegEncoder,
    /// The source picture masked by the mode.
    masked: Option<Image>,
    /// A scaler and its picture, for [`Scale::Half`].
    half: Option<(Scaler, Image)>,
    /// The last JPEG.
    pub out: Vec<u8>,
}

/// What [`JpegWorker::encode`] made.
#[derive(Debug)]
pub enum Jpeg {
    /// A picture of this size is in [`JpegWorker::out`].
    Picture(u32, u32),
    /// The track shows nothing (the source in LOW mode).
    Nothing,
}

impl JpegWorker {
    /// Compresses `track`'s picture of `frame` into `self.out` (runs on a blocking
    /// thread: tens of milliseconds for a 720p picture on a board).
    pub fn encode(
        &mut self,
        frame: &PooledFrame,
        track: Track,
        pictures: &Pictures,
        quality: u8,
        scale: Scale,
    ) -> Result<Jpeg, JpegError> {
        let Some(image) = pictures.picture(frame, track, &mut self.masked) else {
            return Ok(Jpeg::Nothing);
        };
        let image = match scale {
            Scale::Full => image,
            Scale::Half => {
                let size = (
                    (image.width() / 2).max(16) & !1,
                    (image.height() / 2).max(16) & !1,
                );
                let (scaler, small) = self.half.get_or_insert_with(|| {
                    (
                        Scaler::new(image.size(), size),
                        Image::new(Layout::packed(image.format(), size.0, size.1)),
                    )
                });
                scaler.scale(image, small);
                &*small
            }
        };
        let size = image.size();
        self.encoder.encode(image, quality, &mut self.out)?;
        Ok(Jpeg::Picture(size.0, size.1))
    }
}

/// Runs `worker.encode` on the blocking pool and gives the worker back.
pub async fn encode_jpeg(
    mut worker: JpegWorker,
    frame: Arc<PooledFrame>,
    track: Track,
    pictures: Pictures,
    quality: u8,
    scale: Scale,
) -> (JpegWorker, Result<Jpeg, JpegError>) {
    let joined = tokio::task::spawn_blocking(move || {
        let result = worker.encode(&frame, track, &pictures, quality, scale);
        (worker, result)
    })
    .await;
    match joined {
        Ok(done) => done,
        // The closure panicked (a bug in a library): this consumer ends, others go on.
        Err(e) => (
            JpegWorker::default(),
            Err(JpegError::Encoder(format!(
                "the encoding thread failed: {e}"
            ))),
        ),
    }
}

/// How long one message to a WebSocket consumer may take to be written before the
/// consumer is dropped (it stopped reading, or its link is far too slow).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `meta` then `payload` on a WebSocket, within [`SEND_TIMEOUT`] each; `false` when
/// the consumer is gone or stalled.
pub async fn send_frame<S>(sink: &mut S, meta: &FrameMeta, payload: Bytes) -> bool
where
    S: futures_util::Sink<Message> + Unpin,
{
    use futures_util::SinkExt;
    let text = match serde_json::to_string(&PictureMessage::FrameMeta(meta.clone())) {
        Ok(t) => t,
        // Plain data with string keys: serialising cannot fail.
        Err(_) => return false,
    };
    for message in [Message::Text(text.into()), Message::Binary(payload)] {
        match tokio::time::timeout(SEND_TIMEOUT, sink.send(message)).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
    true
}

/// A consumer's pace: the newest frame when it is due, at most `fps` a second (counted
/// from when each was taken), never the same frame twice.
#[derive(Debug)]
pub struct Pacer {
    rx: tokio::sync::watch::Receiver<Option<Arc<PooledFrame>>>,
    interval: Duration,
    next_at: tokio::time::Instant,
    last_seq: Option<u64>,
}

impl Pacer {
    pub fn new(feed: &FrameFeed, fps: f64) -> Pacer {
        Pacer {
            rx: feed.subscribe(),
            interval: Duration::from_secs_f64(1.0 / fps),
            next_at: tokio::time::Instant::now(),
            last_seq: None,
        }
    }

    /// Changes the rate from the next frame on.
    pub fn set_fps(&mut self, fps: f64) {
        self.interval = Duration::from_secs_f64(1.0 / fps);
    }

    /// The next frame once it is due; `None` at shutdown, or when none came within
    /// [`FRAME_WAIT`] (the camera is away). Cancel-safe: dropped before it returns, it
    /// has taken nothing.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<Arc<PooledFrame>> {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep_until(self.next_at) => {}
        }
        let frame = next_frame(&mut self.rx, self.last_seq, shutdown).await?;
        self.next_at = tokio::time::Instant::now() + self.interval;
        self.last_seq = Some(frame.seq);
        Some(frame)
    }
}

/// Waits for a frame newer than `after` (any frame when `None`), up to [`FRAME_WAIT`];
/// `None` at shutdown or when none came.
pub async fn next_frame(
    rx: &mut tokio::sync::watch::Receiver<Option<Arc<PooledFrame>>>,
    after: Option<u64>,
    shutdown: &CancellationToken,
) -> Option<Arc<PooledFrame>> {
    let wait = async {
        loop {
            {
                let latest = rx.borrow_and_update();
                if let Some(f) = latest.as_ref()
                    && after.is_none_or(|seq| f.seq != seq)
                {
                    return Some(f.clone());
                }
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => None,
        f = tokio::time::timeout(FRAME_WAIT, wait) => f.ok().flatten(),
    }
}
