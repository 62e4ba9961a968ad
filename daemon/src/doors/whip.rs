//! The WHIP door (`[whip]`): the daemon publishes both tracks to an SFU that speaks WHIP
//! (RFC 9725: LiveKit, MediaMTX, Cloudflare, Janus behind simple-whip-server), which fans
//! them out. It POSTs an SDP offer (`application/sdp`, `Authorization: Bearer` with the
//! token), takes the `201 Created` answer and the resource `Location`, and hands the
//! session to the WebRTC hub, where it is one more viewer: its bandwidth estimate steers
//! the encoders as a viewer's does, NACKs and keyframe requests are answered the same way.
//! When the session ends (the SFU went away, ICE failed) the resource is DELETEd and
//! published again, with capped exponential backoff (1 s to 30 s, jitter); at shutdown it
//! is DELETEd. No DataChannel is offered: commands stay with HTTP and MQTT.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, LOCATION};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::config::WhipSettings;
use crate::doors::webrtc::server::WebRtcHandle;
use crate::doors::webrtc::{OfferError, SessionId};
use crate::service::supervisor::{Supervised, Supervisor};
use crate::state::Part;

/// A request to the endpoint that takes longer is given up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Ending a resource waits this long at most: at shutdown the daemon must stop within
/// systemd's patience (and the tests' 2 s) even with the SFU unreachable.
const DELETE_TIMEOUT: Duration = Duration::from_secs(1);

/// An answer larger than this is not an SDP answer.
const MAX_ANSWER: usize = 64 * 1024;

/// A session that lasted this long was a success: the next failure starts the backoff
/// from its first step.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Why publishing failed; every one is retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WhipError {
    /// The endpoint could not be reached or the exchange broke off.
    #[error("cannot reach the WHIP endpoint: {0}")]
    Io(String),
    /// The endpoint did not answer in time ([`REQUEST_TIMEOUT`], [`DELETE_TIMEOUT`]).
    #[error("the WHIP endpoint did not answer within {0:?}")]
    Timeout(Duration),
    /// The endpoint refused the offer (401/403: the token; other statuses: the SFU).
    #[error("the WHIP endpoint answered {status}: {body}")]
    Refused { status: StatusCode, body: String },
    /// Its answer could not be used.
    #[error("the WHIP endpoint's answer: {0}")]
    Answer(#[from] OfferError),
}

/// A published session: the hub's id and the resource that ends it.
#[derive(Debug)]
struct Published {
    id: SessionId,
    /// The resource URL from `Location`, resolved against the endpoint.
    resource: Option<Uri>,
}

impl Supervised for WhipTask {
    fn part(&self) -> Part {
        Part::Whip
    }

    fn run(
        &mut self,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.publishing(shutdown)
    }
}

/// Everything the WHIP task needs.
pub struct WhipTask {
    pub settings: WhipSettings,
    /// Where offers are made and sessions admitted.
    pub webrtc: WebRtcHandle,
}

impl WhipTask {
    /// Starts publishing on `tracker`, supervised (a panic starts publishing again);
    /// runs until `shutdown`, then ends the session.
    pub fn spawn(
        self,
        tracker: &TaskTracker,
        supervisor: &Supervisor,
        shutdown: CancellationToken,
    ) {
        supervisor.spawn(tracker, self, shutdown);
    }

    async fn publishing(&self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            let started = Instant::now();
            let published = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = self.publish() => p,
            };
            match published {
                Ok(session) => {
                    tracing::info!(endpoint = %logged(&self.settings.url), "publishing by WHIP");
                    let ended = self.watch(&session, &shutdown).await;
                    self.delete(&session).await;
                    if !ended {
                        return;
                    }
                    if started.elapsed() >= STABLE_AFTER {
                        backoff.reset();
                    }
                    tracing::warn!(endpoint = %logged(&self.settings.url), "WHIP session ended; publishing again");
                }
                Err(e) => {
                    tracing::warn!(endpoint = %logged(&self.settings.url), error = %e, "WHIP publishing failed");
                }
            }
            let wait = backoff.next(getrandom::u64().unwrap_or(0));
            tracing::info!(retry_in_ms = wait.as_millis() as u64, "WHIP: next attempt");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One offer, its answer, and the session handed to the hub.
    async fn publish(&self) -> Result<Published, WhipError> {
        let offer = self.webrtc.send_offer();
        let (status, location, body) = exchange(
            Method::POST,
            &self.settings.url,
            self.settings.token.as_deref(),
            Some(offer.sdp.clone()),
            REQUEST_TIMEOUT,
        )
        .await?;
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(WhipError::Refused {
                status,
                body: body
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
        let admission = offer.accept(&body)?;
        let (id, _) = self.webrtc.admit(admission).await?;
        let resource = location.and_then(|l| resolve(&self.settings.url, &l));
        Ok(Published { id, resource })
    }

    /// Waits while the session lives: `true` when it ended, `false` at shutdown.
    async fn watch(&self, session: &Published, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            // The hub ends its sessions at shutdown too: that is not the session failing.
            biased;
            _ = shutdown.cancelled() => false,
            () = self.webrtc.ended(&session.id) => true,
        }
    }

    /// Ends the resource on the endpoint (best effort: it may be gone).
    async fn delete(&self, session: &Published) {
        let Some(resource) = &session.resource else {
            return;
        };
        let token = self.settings.token.as_deref();
        match exchange(Method::DELETE, resource, token, None, DELETE_TIMEOUT).await {
            Ok((status, _, _)) => {
                tracing::info!(endpoint = %logged(resource), %status, "WHIP resource deleted")
            }
            Err(e) => {
                tracing::info!(endpoint = %logged(resource), error = %e, "WHIP resource not deleted")
            }
        }
    }
}

/// A URL as the log shows it: scheme, host and port only. Some SFUs put the stream key in
/// the path (Cloudflare) or credentials before the host, and logs travel further than the
/// config file.
fn logged(uri: &Uri) -> String {
    format!("{}://{}", uri.scheme_str().unwrap_or("?"), host_port(uri))
}

/// `host[:port]` of a URL, without any user info (the `Host` header, the logs).
fn host_port(uri: &Uri) -> String {
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}{port}", uri.host().unwrap_or("?"))
}

/// The `Location` of a resource, made absolute against the endpoint's URL.
fn resolve(endpoint: &Uri, location: &str) -> Option<Uri> {
    if location.contains("://") {
        return location.parse().ok();
    }
    let scheme = endpoint.scheme_str()?;
    let authority = endpoint.authority()?;
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        // Relative to the endpoint's directory.
        let base = endpoint.path();
        format!("{}/{location}", &base[..base.rfind('/').unwrap_or(0)])
    };
    format!("{scheme}://{authority}{path}").parse().ok()
}

/// One HTTP/1.1 request (over TLS for `https`), given up after `within`: its status,
/// `Location` and body.
async fn exchange(
    method: Method,
    uri: &Uri,
    token: Option<&str>,
    sdp: Option<String>,
    within: Duration,
) -> Result<(StatusCode, Option<String>, String), WhipError> {
    tokio::time::timeout(within, request(method, uri, token, sdp))
        .await
        .map_err(|_| WhipError::Timeout(within))?
}

async fn request(
    method: Method,
    uri: &Uri,
    token: Option<&str>,
    sdp: Option<String>,
) -> Result<(StatusCode, Option<String>, String), WhipError> {
    let io = |e: std::io::Error| WhipError::Io(e.to_string());
    // The config's resolver checked both.
    let host = uri.host().ok_or_else(|| WhipError::Io("no host".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let mut req = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(HOST, host_port(uri));
    if let Some(token) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    if sdp.is_some() {
        req = req.header(CONTENT_TYPE, "application/sdp");
    }
    let req = req
        .body(Full::new(Bytes::from(sdp.unwrap_or_default())))
        .map_err(|e| WhipError::Io(e.to_string()))?;
    let tcp = TcpStream::connect((host, port)).await.map_err(io)?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| WhipError::Io(e.to_string()))?;
        let tls = tls_connector().connect(name, tcp).await.map_err(io)?;
        send(TokioIo::new(tls), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<I>(
    io: TokioIo<I>,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Option<String>, String), WhipError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let broke = |e: hyper::Error| WhipError::Io(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(broke)?;
    // Drives the connection until the response is read; ends with it.
    tokio::spawn(connection);
    let response = sender.send_request(req).await.map_err(broke)?;
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| WhipError::Io(format!("the answer: {e}")))?
        .to_bytes();
    Ok((
        status,
        location,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// TLS with the Mozilla root certificates (webpki-roots).
fn tls_connector() -> tokio_rustls::TlsConnector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_no_path_where_a_stream_key_may_be() {
        let uri: Uri = "https://customer-1.cloudflarestream.com/SECRETKEY/webRTC/publish"
            .parse()
            .unwrap();
        assert_eq!(logged(&uri), "https://customer-1.cloudflarestream.com");
        let uri: Uri = "http://user:pass@sfu:8889/cam/whip".parse().unwrap();
        assert_eq!(logged(&uri), "http://sfu:8889");
    }

    #[test]
    fn resource_locations_are_made_absolute() {
        let endpoint: Uri = "https://sfu.example:8443/rtc/v1/whip?app=cam"
            .parse()
            .unwrap();
        let at = |l| resolve(&endpoint, l).map(|u| u.to_string());
        assert_eq!(
            at("/rtc/v1/whip/resource/42").as_deref(),
            Some("https://sfu.example:8443/rtc/v1/whip/resource/42")
        );
        assert_eq!(
            at("resource/42").as_deref(),
            Some("https://sfu.example:8443/rtc/v1/resource/42")
        );
        assert_eq!(
            at("http://other.example/r/1").as_deref(),
            Some("http://other.example/r/1")
        );
    }
}
