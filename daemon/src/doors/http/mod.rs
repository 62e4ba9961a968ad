//! The HTTP door: signalling (`/offer`, `/whep`), the API, the viewer page, metrics and
//! health. Every bad request gets a 4xx with a one-line reason; nothing here can stop video.
//!
//! * this module: the routes and their handlers;
//! * [`auth`]: who may call them (token, origin, host), applied before any route;
//! * [`server`]: the connections under them: limits, timeouts, TLS, HTTP/2;
//! * [`connections`]: the connection table and its policy, as a plain state machine.

pub mod auth;
pub mod connections;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use crate::doors::pictures::{self, Pictures};
use crate::doors::webrtc::OfferError;
use crate::doors::webrtc::server::WebRtcHandle;
use crate::service::liveness::Liveness;
use crate::service::metrics::Metrics;
use crate::state::command::{Access, Command};
use crate::state::protocol::WebRtcConfig;
use crate::state::streams::StreamsPatch;
use crate::state::{Control, Part};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The viewer page, embedded in the binary.
const VIEWER_HTML: &str = include_str!("../../../assets/viewer.html");

/// The viewer's URL for a daemon listening on `listen`, with the access token in its
/// fragment (never sent to a server, kept by the page) when there is one.
pub fn viewer_url(listen: SocketAddr, tls: bool, token: Option<&str>) -> String {
    let ip = listen.ip();
    let host = if ip.is_loopback() || ip.is_unspecified() {
        "localhost".to_string()
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    let scheme = if tls { "https" } else { "http" };
    match token {
        Some(t) => format!("{scheme}://{host}:{}/#token={t}", listen.port()),
        None => format!("{scheme}://{host}:{}/", listen.port()),
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub control: Arc<Control>,
    pub metrics: Arc<Metrics>,
    pub webrtc: WebRtcHandle,
    pub liveness: Liveness,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// What the viewer page needs to connect (`GET /api/webrtc`).
    pub webrtc_config: Arc<WebRtcConfig>,
    /// The picture doors (snapshot, MJPEG, WebSockets).
    pub pictures: Pictures,
}

impl FromRef<AppState> for Pictures {
    fn from_ref(s: &AppState) -> Pictures {
        s.pictures.clone()
    }
}

/// The routes of the contract, behind the access rules of `gate`.
pub fn router(state: AppState, gate: Arc<auth::Gate>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(VIEWER_HTML) }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/state", get(api_state))
        .route("/api/webrtc", get(api_webrtc))
        .route("/api/command", post(api_command))
        .route("/api/streams", get(api_streams).put(api_streams_put))
        .route("/snapshot.jpg", get(pictures::snapshot::snapshot))
        .route("/stream.mjpeg", get(pictures::mjpeg::stream))
        .route("/ws/jpeg", get(pictures::ws_jpeg::upgrade))
        .route("/ws/frames", get(pictures::ws_frames::upgrade))
        .route("/offer", post(offer))
        .route("/whep", post(whep))
        .route("/whep/{id}", delete(whep_delete).patch(whep_patch))
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(gate, auth::guard))
}

/// A rejected request: status plus one line of reason.
#[derive(Debug)]
struct Reject {
    status: StatusCode,
    reason: String,
    json: bool,
}

impl Reject {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            json: true,
        }
    }
    fn text(mut self) -> Self {
        self.json = false;
        self
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        if self.json {
            (
                self.status,
                axum::Json(serde_json::json!({ "error": self.reason })),
            )
                .into_response()
        } else {
            (
                self.status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{}\n", self.reason),
            )
                .into_response()
        }
    }
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] with 413, a body that cannot be
/// read (a bad chunk, a connection closed before its length) with 400, and one that does
/// not arrive within `timeout` with 408.
async fn read_body(headers: &HeaderMap, body: Body, timeout: Duration) -> Result<Bytes, Reject> {
    let too_big = || {
        Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is over {} KiB", MAX_BODY_BYTES / 1024),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_big());
    }
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY_BYTES));
    let Ok(read) = read.await else {
        return Err(Reject::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {:.0} s",
                timeout.as_secs_f64()
            ),
        ));
    };
    read.map_err(|e| {
        let e = e.into_inner();
        if e.is::<http_body_util::LengthLimitError>() {
            too_big()
        } else {
            Reject::new(
                StatusCode::BAD_REQUEST,
                format!("the body could not be read: {e}"),
            )
        }
    })
}

/// Counts a rejected request in the metrics and passes the result on.
fn counted(metrics: &Metrics, result: Result<Response, Reject>) -> Result<Response, Reject> {
    if result.is_err() {
        metrics.bad_requests.inc();
    }
    result
}

fn utf8(bytes: Bytes) -> Result<String, Reject> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Reject::new(StatusCode::BAD_REQUEST, "body is not UTF-8"))
}

/// 200 while frames are captured and no supervised task is settling after a panic; else
/// 503 with why (`no frame for 4.2 s; source: capture failed: ...`).
async fn healthz(State(s): State<AppState>) -> Response {
    let stalled = match (s.liveness.since_last_beat(), s.liveness.stuck_encoder()) {
        (Some(age), _) if age < Duration::from_secs(2) => None,
        (_, Some((track, age))) => Some(format!(
            "the {} encoder has not come back for {:.1} s",
            track.name(),
            age.as_secs_f64()
        )),
        (Some(age), None) => Some(format!("no frame for {:.1} s", age.as_secs_f64())),
        (None, None) => Some("no frame captured yet".to_string()),
    };
    let faults = s.control.snapshot().faults;
    let restarted = faults.iter().any(|f| Part::TASKS.contains(&f.part));
    if stalled.is_none() && !restarted {
        return (StatusCode::OK, "ok\n").into_response();
    }
    let reasons: Vec<String> = stalled
        .into_iter()
        .chain(
            faults
                .iter()
                .map(|f| format!("{}: {} ({} failures)", f.part.name(), f.error, f.failures)),
        )
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{}\n", reasons.join("; ")),
    )
        .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(&s.control.snapshot()),
    )
        .into_response()
}

async fn api_state(State(s): State<AppState>) -> Response {
    axum::Json(s.control.snapshot()).into_response()
}

async fn api_webrtc(State(s): State<AppState>) -> Response {
    axum::Json(s.webrtc_config.as_ref()).into_response()
}

async fn api_command(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Reject> {
    counted(
        &s.metrics,
        async {
            let body = json_body(&s, &headers, body, "the command").await?;
            let cmd =
                Command::parse(&body).map_err(|e| Reject::new(StatusCode::BAD_REQUEST, e.0))?;
            Ok(axum::Json(s.control.apply(&cmd)).into_response())
        }
        .await,
    )
}

/// A JSON request body (`what` it is, for the reason of a 415), read within the limits.
async fn json_body(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
    what: &str,
) -> Result<Bytes, Reject> {
    if media_type(headers).as_deref() != Some("application/json") {
        return Err(Reject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("send {what} as Content-Type: application/json"),
        ));
    }
    read_body(headers, body, s.body_timeout).await
}

/// `GET /api/streams`: the picture doors' settings and their consumers now.
async fn api_streams(State(s): State<AppState>) -> Response {
    streams_answer(&s)
}

fn streams_answer(s: &AppState) -> Response {
    use crate::state::streams::Door;
    let consumers: serde_json::Map<String, serde_json::Value> = Door::ALL
        .iter()
        .map(|d| (d.name().to_string(), s.pictures.consumers(*d).into()))
        .collect();
    axum::Json(serde_json::json!({
        "doors": s.control.streams(),
        "consumers": consumers,
    }))
    .into_response()
}

/// `PUT /api/streams`: changes some doors' settings (what is absent stays); answers as
/// `GET` does.
async fn api_streams_put(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Reject> {
    counted(
        &s.metrics,
        async {
            let body = json_body(&s, &headers, body, "the settings").await?;
            let patch: StreamsPatch = serde_json::from_slice(&body)
                .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, e.to_string()))?;
            s.control
                .patch_streams(&patch)
                .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, e))?;
            Ok(streams_answer(&s))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonOffer {
    sdp: String,
    #[serde(rename = "type")]
    kind: String,
}

fn offer_reject(e: OfferError) -> Reject {
    let status = match e {
        OfferError::TooManyViewers(_) | OfferError::ShuttingDown | OfferError::NoRandomness => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    Reject::new(status, e.to_string())
}

/// `POST /offer`: SDP in, SDP out (text), or `{"sdp","type":"offer"}` in, JSON out.
async fn offer(
    State(s): State<AppState>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Reject> {
    counted(&s.metrics, async {
        let json = match media_type(&headers).as_deref() {
            Some("application/json") => true,
            Some("text/plain" | "application/sdp") => false,
            other => {
                return Err(Reject::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("content type {} is not accepted: use application/sdp, text/plain or application/json", other.unwrap_or("(none)")),
                )
                .text());
            }
        };
        let body = read_body(&headers, body, s.body_timeout).await.map_err(|r| if json { r } else { r.text() })?;
        let sdp = if json {
            let o: JsonOffer = serde_json::from_slice(&body)
                .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, format!("expected {{\"sdp\":..,\"type\":\"offer\"}}: {e}")))?;
            if o.kind != "offer" {
                return Err(Reject::new(StatusCode::BAD_REQUEST, format!("type must be \"offer\", got \"{}\"", o.kind)));
            }
            o.sdp
        } else {
            utf8(body).map_err(Reject::text)?
        };
        let (_, answer) = s.webrtc.offer(sdp, access).await.map_err(|e| {
            let r = offer_reject(e);
            if json { r } else { r.text() }
        })?;
        Ok(if json {
            axum::Json(serde_json::json!({ "sdp": answer, "type": "answer" })).into_response()
        } else {
            ([(header::CONTENT_TYPE, "application/sdp")], answer).into_response()
        })
    }
    .await)
}

/// `POST /whep` (RFC 9725): `application/sdp` offer → 201 + `Location` + answer.
async fn whep(
    State(s): State<AppState>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Reject> {
    counted(
        &s.metrics,
        async {
            if media_type(&headers).as_deref() != Some("application/sdp") {
                return Err(Reject::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "WHEP offers must be Content-Type: application/sdp",
                )
                .text());
            }
            let body = read_body(&headers, body, s.body_timeout)
                .await
                .map_err(Reject::text)?;
            let sdp = utf8(body).map_err(Reject::text)?;
            let (id, answer) = s
                .webrtc
                .offer(sdp, access)
                .await
                .map_err(|e| offer_reject(e).text())?;
            Ok((
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_string()),
                    (header::LOCATION, format!("/whep/{id}")),
                ],
                answer,
            )
                .into_response())
        }
        .await,
    )
}

async fn whep_delete(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    if s.webrtc.close(&id).await {
        StatusCode::OK.into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such session\n").into_response()
    }
}

/// Trickle ICE and ICE restarts are not supported: offers are complete (non-trickle).
async fn whep_patch() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "DELETE")],
        "trickle ICE is not supported; send a complete offer\n",
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}
