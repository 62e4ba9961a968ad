//! `GET /stream.mjpeg[?track=..][&fps=..][&quality=..]`: JPEG pictures as
//! `multipart/x-mixed-replace`, at most `fps` a second (10 unless asked, never above the
//! door's cap). A picture is made only when the connection has taken the previous one,
//! from the newest frame then: a slow reader gets fewer, fresh pictures.

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{
    Consumer, Jpeg, JpegWorker, Pacer, PictureQuery, Pictures, Refusal, Scale, encode_jpeg,
};
use crate::state::streams::Door;
use crate::track::Track;

/// The rate a client gets when it names none.
pub const DEFAULT_FPS: f64 = 10.0;

/// The multipart boundary.
const BOUNDARY: &str = "focusdframe";

/// One client's stream: the state the body's stream carries from picture to picture.
struct Stream {
    pictures: Pictures,
    consumer: Consumer,
    /// The newest frame, at the rate asked.
    pacer: Pacer,
    worker: JpegWorker,
    track: Track,
    quality: u8,
    /// The rate asked (the door's cap may lower it at any time).
    fps: f64,
}

impl Stream {
    /// The next part, or `None` to end the stream (door closed, shutdown, no frames).
    async fn next_part(&mut self) -> Option<Bytes> {
        loop {
            if !self.pictures.settings(Door::Mjpeg).enabled {
                return None;
            }
            self.pacer
                .set_fps(self.pictures.rate(Door::Mjpeg, Some(self.fps)));
            let Some(frame) = self.pacer.next(&self.pictures.shutdown).await else {
                if self.pictures.shutdown.is_cancelled() {
                    return None;
                }
                // The camera is away: the stream waits for it.
                continue;
            };
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
    query: Result<Query<PictureQuery>, QueryRejection>,
) -> Result<Response, Refusal> {
    let (asked, consumer) = pictures.open(Door::Mjpeg, query)?;
    let settings = pictures.settings(Door::Mjpeg);
    let fps = asked.fps.unwrap_or(DEFAULT_FPS);
    let state = Stream {
        pacer: Pacer::new(&pictures.feed, pictures.rate(Door::Mjpeg, Some(fps))),
        fps,
        quality: asked.quality.unwrap_or(settings.quality),
        pictures,
        consumer,
        worker: JpegWorker::default(),
        track: asked.track,
    };
    let parts = futures_util::stream::unfold(state, |mut s| async move {
        let part = s.next_part().await?;
        Some((Ok::<_, std::convert::Infallible>(part), s))
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(parts),
    )
        .into_response())
}
