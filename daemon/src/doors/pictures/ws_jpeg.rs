//! `/ws/jpeg[?track=..][&fps=..][&quality=..]`: JPEG pictures over a WebSocket, each after
//! a `frame_meta` text message (capture time, mode, ROI, quality). The client reports
//! what it renders (`{"type":"rendered","seq":N,"fps":F}`); the [`QualityPolicy`] steps
//! quality, then size, to hold the rate. Once a client has reported a frame, at most
//! [`WINDOW`] pictures are in flight unreported, so pictures never queue up in the
//! network and the latency stays one or two frames; a client that then reports nothing
//! for [`SEND_TIMEOUT`] is let go.

use std::collections::VecDeque;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use futures_util::StreamExt;

use super::quality::QualityPolicy;
use super::{
    Consumer, Jpeg, JpegWorker, Pacer, PictureQuery, Pictures, Refusal, SEND_TIMEOUT, encode_jpeg,
    refuse, send_frame,
};
use crate::state::protocol::JpegClientMessage;
use crate::state::streams::Door;
use crate::track::Track;

/// Pictures sent and not yet reported rendered, at most (once the client reports).
pub const WINDOW: usize = 2;

/// Largest message a client may send (reports are tiny).
const MAX_CLIENT_MESSAGE: usize = 4096;

pub async fn upgrade(
    State(pictures): State<Pictures>,
    query: Result<Query<PictureQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Refusal> {
    let ws = ws.map_err(|e| refuse(e.status(), e.body_text()))?;
    let (asked, consumer) = pictures.open(Door::WsJpeg, query)?;
    let track = asked.track;
    let settings = pictures.settings(Door::WsJpeg);
    let fps = pictures.rate(Door::WsJpeg, asked.fps);
    let policy = QualityPolicy::new(
        asked.quality.unwrap_or(settings.quality),
        settings.quality.max(asked.quality.unwrap_or(0)),
        fps,
    );
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, pictures, consumer, track, fps, policy)))
}

async fn serve(
    socket: WebSocket,
    pictures: Pictures,
    consumer: Consumer,
    track: Track,
    fps: f64,
    mut policy: QualityPolicy,
) {
    let (mut sink, mut incoming) = socket.split();
    let mut pacer = Pacer::new(&pictures.feed, fps);
    let mut worker = JpegWorker::default();
    // Frames sent and not reported yet; whether the client reports at all.
    let mut unreported: VecDeque<u64> = VecDeque::new();
    let mut reports = false;
    let shutdown = pictures.shutdown.clone();
    loop {
        let window_open = !reports || unreported.len() < WINDOW;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            message = incoming.next() => {
                let Some(Ok(message)) = message else { break };
                let text = match message {
                    Message::Text(t) => t,
                    Message::Close(_) => break,
                    _ => continue,
                };
                match serde_json::from_str::<JpegClientMessage>(&text) {
                    Ok(JpegClientMessage::Rendered { seq, fps }) => {
                        reports = true;
                        while unreported.front().is_some_and(|s| *s <= seq) {
                            unreported.pop_front();
                        }
                        policy.report(fps, std::time::Instant::now());
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "ignoring a bad /ws/jpeg message");
                        pictures.metrics.bad_requests.inc();
                    }
                }
            }
            // It reported before, and has stopped: gone, or stuck.
            _ = tokio::time::sleep(SEND_TIMEOUT), if !window_open => break,
            frame = pacer.next(&shutdown), if window_open => {
                let Some(frame) = frame else { continue };
                if !pictures.settings(Door::WsJpeg).enabled {
                    break;
                }
                let quality = policy.quality();
                let (w, result) = encode_jpeg(
                    worker,
                    frame.clone(),
                    track,
                    pictures.clone(),
                    quality,
                    policy.scale(),
                )
                .await;
                worker = w;
                let (width, height) = match result {
                    Ok(Jpeg::Picture(width, height)) => (width, height),
                    Ok(Jpeg::Nothing) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "JPEG failed; closing /ws/jpeg");
                        break;
                    }
                };
                let mut meta = pictures.meta(&frame, track, (width, height));
                meta.format = "JPEG".into();
                meta.codec = "jpeg".into();
                meta.quality = Some(quality);
                meta.bytes = worker.out.len();
                let payload = Bytes::copy_from_slice(&worker.out);
                if !send_frame(&mut sink, &meta, payload).await {
                    break;
                }
                consumer.sent(meta.bytes);
                unreported.push_back(frame.seq);
            }
        }
    }
}
