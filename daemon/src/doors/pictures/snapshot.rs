//! `GET /snapshot.jpg[?track=source|context][&quality=1..100]`: the newest frame as a JPEG,
//! as the track shows it in the current mode (the source masked to the ROI in VISION).

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Jpeg, JpegWorker, Pictures, Scale, encode_jpeg, next_frame, parse_track, refuse};
use crate::state::streams::Door;
use crate::video::track::Track;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotQuery {
    track: Option<String>,
    quality: Option<u8>,
    /// The access token (read by the access rules).
    #[allow(dead_code)]
    token: Option<String>,
}

pub async fn snapshot(
    State(pictures): State<Pictures>,
    query: Result<Query<SnapshotQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let track = match q.track.as_deref().map(parse_track).transpose() {
        Ok(t) => t.unwrap_or(Track::Source),
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let settings = pictures.settings(Door::Snapshot);
    let quality = match q.quality {
        Some(q) if !(1..=100).contains(&q) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("quality must be within 1..=100, not {q}"),
            );
        }
        Some(q) => q,
        None => settings.quality,
    };
    let consumer = match pictures.admit(Door::Snapshot) {
        Ok(c) => c,
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let mut rx = pictures.feed.subscribe();
    let Some(frame) = next_frame(&mut rx, None, &pictures.shutdown).await else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "no frame captured yet");
    };
    let (worker, result) = encode_jpeg(
        JpegWorker::default(),
        frame.clone(),
        track,
        pictures.clone(),
        quality,
        Scale::Full,
    )
    .await;
    match result {
        Ok(Jpeg::Picture(..)) => {
            consumer.sent(worker.out.len());
            (
                [
                    (header::CONTENT_TYPE, "image/jpeg".to_string()),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                    // When the picture was taken (ms since the Unix epoch), for clients
                    // that measure latency or order pictures.
                    (
                        header::HeaderName::from_static("x-capture-time-ms"),
                        frame.wallclock_ms.to_string(),
                    ),
                ],
                worker.out,
            )
                .into_response()
        }
        Ok(Jpeg::Nothing) => refuse(
            StatusCode::CONFLICT,
            "the source track shows nothing in LOW mode; ask for track=context",
        ),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
