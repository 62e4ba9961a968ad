//! `GET /stream.mjpeg[?track=..][&fps=..][&quality=..]`: JPEG pictures as
//! `multipart/x-mixed-replace`, at most `fps` a second (10 unless asked, never above the
//! door's cap). A picture is made only when the connection has taken the previous one,
//! from the newest frame then: a slow reader gets fewer, fresh pictures.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::time::Instant;

use super::{
    Consumer, Jpeg, JpegWorker, Pictures, Scale, encode_jpeg, next_frame, parse_track, refuse,
};
use crate::state::streams::Door;
use crate::video::track::Track;

/// The rate a client gets when it names none.
pub const DEFAULT_FPS: f64 = 10.0;

/// The multipart boundary.
const BOUNDARY: &str = "focusdframe";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MjpegQuery {
    track: Option<String>,
    fps: Option<f64>,
    quality: Option<u8>,
    /// The access token (read by the access rules).
    #[allow(dead_code)]
    token: Option<String>,
}

/// One client's stream: the state the body's stream carries from picture to picture.
struct Stream {
    pictures: Pictures,
    consumer: Consumer,
    rx: tokio::sync::watch::Receiver<Option<std::sync::Arc<focusd_board::frame::PooledFrame>>>,
    worker: JpegWorker,
    track: Track,
    quality: u8,
    fps: f64,
    /// When the next picture may be taken.
    next_at: Instant,
    /// The last frame sent, so that no frame goes twice.
    last_seq: Option<u64>,
}

impl Stream {
    /// The next part, or `None` to end the stream (door closed, shutdown, no frames).
    async fn next_part(&mut self) -> Option<Bytes> {
        loop {
            tokio::select! {
                _ = self.pictures.shutdown.cancelled() => return None,
                _ = tokio::time::sleep_until(self.next_at) => {}
            }
            if !self.pictures.settings(Door::Mjpeg).enabled {
                return None;
            }
            let frame = next_frame(&mut self.rx, self.last_seq, &self.pictures.shutdown).await?;
            let started = Instant::now();
            // Pictures at most `fps` a second, counted from when each was taken.
            let fps = self
                .fps
                .min(self.pictures.rate(Door::Mjpeg, Some(self.fps)));
            self.next_at = started + Duration::from_secs_f64(1.0 / fps);
            self.last_seq = Some(frame.seq);
            let worker = std::mem::take(&mut self.worker);
            let (worker, result) = encode_jpeg(
                worker,
                frame.clone(),
                self.track,
                self.pictures.clone(),
                self.quality,
                Scale::Full,
            )
            .await;
            self.worker = worker;
            match result {
                Ok(Jpeg::Picture(..)) => {
                    let jpeg = &self.worker.out;
                    let mut part = Vec::with_capacity(jpeg.len() + 160);
                    part.extend_from_slice(
                        format!(
                            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nX-Capture-Time-Ms: {}\r\n\r\n",
                            jpeg.len(),
                            frame.wallclock_ms
                        )
                        .as_bytes(),
                    );
                    part.extend_from_slice(jpeg);
                    part.extend_from_slice(b"\r\n");
                    self.consumer.sent(jpeg.len());
                    return Some(Bytes::from(part));
                }
                // LOW mode on the source: nothing to show until the mode changes.
                Ok(Jpeg::Nothing) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "MJPEG picture failed; ending the stream");
                    return None;
                }
            }
        }
    }
}

pub async fn stream(
    State(pictures): State<Pictures>,
    query: Result<Query<MjpegQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let track = match q.track.as_deref().map(parse_track).transpose() {
        Ok(t) => t.unwrap_or(Track::Source),
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    if let Some(f) = q.fps
        && !(f.is_finite() && f > 0.0)
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("fps must be above 0, not {f}"),
        );
    }
    if let Some(q) = q.quality
        && !(1..=100).contains(&q)
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("quality must be within 1..=100, not {q}"),
        );
    }
    let consumer = match pictures.admit(Door::Mjpeg) {
        Ok(c) => c,
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let settings = pictures.settings(Door::Mjpeg);
    let state = Stream {
        rx: pictures.feed.subscribe(),
        fps: pictures.rate(Door::Mjpeg, Some(q.fps.unwrap_or(DEFAULT_FPS))),
        quality: q.quality.unwrap_or(settings.quality),
        pictures,
        consumer,
        worker: JpegWorker::default(),
        track,
        next_at: Instant::now(),
        last_seq: None,
    };
    let parts = futures_util::stream::unfold(state, |mut s| async move {
        let part = s.next_part().await?;
        Some((Ok::<_, std::convert::Infallible>(part), s))
    });
    (
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(parts),
    )
        .into_response()
}
