//! `GET /snapshot.jpg[?track=source|context][&quality=1..100]`: the newest frame as a JPEG,
//! as the track shows it in the current mode (the source masked to the ROI in VISION).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{
    Jpeg, JpegWorker, PictureQuery, Pictures, Refusal, Scale, encode_jpeg, next_frame, refuse,
};
use crate::state::streams::Door;

pub async fn snapshot(
    State(pictures): State<Pictures>,
    query: Result<Query<PictureQuery>, QueryRejection>,
) -> Result<Response, Refusal> {
    let (asked, consumer) = pictures.open(Door::Snapshot, query)?;
    let (track, quality) = (
        asked.track,
        asked
            .quality
            .unwrap_or(pictures.settings(Door::Snapshot).quality),
    );
    let mut rx = pictures.feed.subscribe();
    let Some(frame) = next_frame(&mut rx, None, &pictures.shutdown).await else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "no frame captured yet",
        ));
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
            Ok((
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
                .into_response())
        }
        Ok(Jpeg::Nothing) => Err(refuse(
            StatusCode::CONFLICT,
            "the source track shows nothing in LOW mode; ask for track=context",
        )),
        Err(e) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}
