//! `/ws/frames[?codec=zstd|lz4|none][&track=..][&fps=..]`: raw pictures over a WebSocket
//! for software that wants pixels, not video. Each frame is a `frame_meta` text message
//! (size, format, planes, capture time, mode, ROI) and then one binary message: the
//! picture's planes tightly packed (no stride padding) in the source's own format, I420
//! or NV12, compressed by `codec` (zstd level 1 by default; lz4 is faster and larger).
//! The README has a Python client that turns them into numpy arrays.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use focusd_board::frame::PooledFrame;
use focusd_board::image::{Image, PixelFormat};
use futures_util::StreamExt;
use serde::Deserialize;

use super::{Consumer, Pacer, PictureQuery, Pictures, Refusal, refuse, send_frame};
use crate::state::protocol::PlaneMeta;
use crate::state::streams::Door;
use crate::track::Track;

/// How the planes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// As they are.
    None,
    /// LZ4 block, with its 4-byte little-endian decompressed size first (what Python's
    /// `lz4.block.decompress` reads).
    Lz4,
    /// A zstd frame, level 1, decompressed size in its header.
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

pub async fn upgrade(
    State(pictures): State<Pictures>,
    query: Result<Query<PictureQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Refusal> {
    let ws = ws.map_err(|e| refuse(e.status(), e.body_text()))?;
    let (asked, consumer) = pictures.open(Door::WsFrames, query)?;
    let track = asked.track;
    let fps = pictures.rate(Door::WsFrames, asked.fps);
    let codec = asked.codec.unwrap_or(Codec::Zstd);
    // Nothing is asked of the client: what it may send is small.
    Ok(ws
        .max_message_size(4096)
        .on_upgrade(move |socket| serve(socket, pictures, consumer, track, fps, codec)))
}

/// One consumer's buffers, moved to the blocking pool for each frame and back.
#[derive(Default)]
struct Packer {
    masked: Option<Image>,
    packed: Vec<u8>,
}

/// What [`pack`] made: the payload and the planes in it.
struct Packed {
    payload: Bytes,
    planes: Vec<PlaneMeta>,
    format: PixelFormat,
    size: (u32, u32),
}

/// The planes of `image` without stride padding, in buffer order.
fn pack_planes(image: &Image, out: &mut Vec<u8>) -> Vec<PlaneMeta> {
    out.clear();
    let names: &[&str] = match image.format() {
        PixelFormat::I420 => &["y", "u", "v"],
        _ => &["y", "uv"],
    };
    image
        .planes()
        .zip(names)
        .map(|(plane, name)| {
            for r in 0..plane.height() {
                out.extend_from_slice(&plane.row(r)[..plane.row_bytes()]);
            }
            PlaneMeta {
                name: (*name).into(),
                width: plane.width() as u32,
                height: plane.height() as u32,
                channels: plane.channels() as u32,
            }
        })
        .collect()
}

/// Shapes, packs and compresses `track`'s picture of `frame` (on a blocking thread);
/// `None` when the track shows nothing (the source in LOW mode).
fn pack(
    packer: &mut Packer,
    frame: &PooledFrame,
    track: Track,
    pictures: &Pictures,
    codec: Codec,
) -> Result<Option<Packed>, String> {
    let Some(image) = pictures.picture(frame, track, &mut packer.masked) else {
        return Ok(None);
    };
    let planes = pack_planes(image, &mut packer.packed);
    let raw = &packer.packed;
    let payload = match codec {
        Codec::None => Bytes::copy_from_slice(raw),
        Codec::Lz4 => Bytes::from(lz4_flex::block::compress_prepend_size(raw)),
        Codec::Zstd => Bytes::from(zstd::bulk::compress(raw, 1).map_err(|e| format!("zstd: {e}"))?),
    };
    Ok(Some(Packed {
        payload,
        planes,
        format: image.format(),
        size: image.size(),
    }))
}

async fn serve(
    socket: WebSocket,
    pictures: Pictures,
    consumer: Consumer,
    track: Track,
    fps: f64,
    codec: Codec,
) {
    let (mut sink, mut incoming) = socket.split();
    let mut pacer = Pacer::new(&pictures.feed, fps);
    let mut packer = Packer::default();
    let shutdown = pictures.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                // Nothing is asked of the client; what it sends is ignored.
                Some(Ok(_)) => continue,
            },
            frame = pacer.next(&shutdown) => {
                let Some(frame) = frame else { continue };
                if !pictures.settings(Door::WsFrames).enabled {
                    break;
                }
                let p = pictures.clone();
                let f = frame.clone();
                let joined = tokio::task::spawn_blocking(move || {
                    let packed = pack(&mut packer, &f, track, &p, codec);
                    (packer, packed)
                })
                .await;
                let packed = match joined {
                    Ok((back, packed)) => {
                        packer = back;
                        packed
                    }
                    Err(_) => break,
                };
                let packed = match packed {
                    Ok(Some(p)) => p,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "packing a frame failed; closing /ws/frames");
                        break;
                    }
                };
                let mut meta = pictures.meta(&frame, track, packed.size);
                meta.format = packed.format.name().into();
                meta.codec = codec.name().into();
                meta.bytes = packed.payload.len();
                meta.planes = packed.planes;
                if !send_frame(&mut sink, &meta, packed.payload).await {
                    break;
                }
                consumer.sent(meta.bytes);
            }
        }
    }
}
