//! The HTTP server under the routes: accepts connections (TLS when configured), speaks
//! HTTP/1.1 and HTTP/2 (whichever the client offers), and holds every connection to the
//! limits of [`Connections`]: a connection cap that makes room by closing the longest
//! idle connection, an idle (header) timeout, and a reserve for the requests that must
//! always answer.
//!
//! It runs as one task accepting, plus one task per connection. The table of connections
//! is behind a mutex held only to update it, never across an await.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::connections::{Admission, ConnId, Connections};
use crate::config::HttpSettings;
use crate::service::metrics::Metrics;
use crate::service::sd_notify::Probe;
use crate::service::supervisor::Supervised;
use crate::state::Part;

/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How long the accept loop waits after the system refused a connection (out of file
/// descriptors), having closed an idle connection to make room.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Why HTTPS cannot be set up: a configuration problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid config `{key}`: {reason}")]
pub struct TlsError {
    /// `http.cert_file` or `http.key_file`.
    pub key: &'static str,
    pub reason: String,
}

/// Reads the PEM certificate chain and key into a TLS acceptor offering HTTP/2 and
/// HTTP/1.1.
pub fn tls_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError {
            key: "http.cert_file",
            reason: format!("{}: {e}", cert_file.display()),
        })?;
    if certs.is_empty() {
        return Err(TlsError {
            key: "http.cert_file",
            reason: format!("{} holds no certificate", cert_file.display()),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError {
        key: "http.key_file",
        reason: format!("{}: {e}", key_file.display()),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| TlsError {
            key: "http.key_file",
            reason: format!("does not fit the certificate: {e}"),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Descriptors kept for everything but HTTP connections: media sockets, devices and
/// their buffers, GStreamer, the runtime, MQTT.
pub const OTHER_FILES: u64 = 160;

/// Fits the connection limit to the open-file limit: raises the soft limit as far as
/// the hard one allows, and when that is still short, lowers `max_connections` (with a
/// warning) so that accepting can never run the daemon out of descriptors.
pub fn fit_to_file_limit(limits: &mut HttpSettings) {
    let needed = limits.max_connections as u64 + OTHER_FILES;
    let soft = match rlimit::increase_nofile_limit(needed) {
        Ok(soft) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return;
        }
    };
    if soft < needed {
        let fit = (soft.saturating_sub(OTHER_FILES) as usize).max(8);
        tracing::warn!(
            "the open-file limit is {soft}: HTTP connections limited to {fit} instead of {} (raise LimitNOFILE)",
            limits.max_connections
        );
        limits.max_connections = fit;
        limits.reserved_connections = limits.reserved_connections.min(fit / 2);
    }
}

/// Whether HTTP answers, for the watchdog: each check asks that the server took a new
/// connection in any period in which it refused one (out of slots or descriptors), and
/// that the routes answer `GET /healthz` in-process within a deadline (a handler stuck
/// behind a lock would not). Any answer counts, 503 too: frames are the heartbeat's
/// business.
pub struct HttpProbe {
    router: Router,
    metrics: Arc<Metrics>,
    /// Connections (accepted, refused) at the last check.
    seen: (u64, u64),
}

impl HttpProbe {
    /// A probe of the routes `router`, whose server counts into `metrics`.
    pub fn new(router: Router, metrics: Arc<Metrics>) -> HttpProbe {
        let seen = (metrics.http.accepted.get(), metrics.http.refused.get());
        HttpProbe {
            router,
            metrics,
            seen,
        }
    }

    /// Checks once, giving the routes `within` to answer; `Err` says why HTTP does not
    /// answer.
    async fn answers(&mut self, within: Duration) -> Result<(), String> {
        let taken = (
            self.metrics.http.accepted.get(),
            self.metrics.http.refused.get(),
        );
        let refusing = taken.1 > self.seen.1 && taken.0 == self.seen.0;
        self.seen = taken;
        if refusing {
            return Err("HTTP refused every new connection".into());
        }
        // A constant, valid request: building it cannot fail.
        let request = Request::get("/healthz")
            .body(Body::empty())
            .expect("a valid request");
        match tokio::time::timeout(within, self.router.clone().oneshot(request)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "HTTP did not answer /healthz within {:.1} s",
                within.as_secs_f64()
            )),
        }
    }
}

impl Probe for HttpProbe {
    fn check(&mut self, within: Duration) -> impl Future<Output = Result<(), String>> + Send {
        self.answers(within)
    }
}

/// The requests the reserve is kept for: health, metrics and signalling.
fn is_priority(path: &str) -> bool {
    matches!(path, "/healthz" | "/metrics" | "/offer" | "/whep") || path.starts_with("/whep/")
}

/// The table and the handle that closes each connection in it.
struct Shared {
    table: Connections,
    closers: HashMap<ConnId, CancellationToken>,
}

#[derive(Clone)]
struct SharedRef(Arc<Mutex<Shared>>);

impl SharedRef {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Held only for table updates, which cannot panic midway: a poisoned lock still
        // holds a consistent table.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the connection idle longest, if any.
    fn evict_one(&self) -> bool {
        let mut s = self.lock();
        let Some(id) = s.table.evict_longest_idle() else {
            return false;
        };
        if let Some(close) = s.closers.remove(&id) {
            close.cancel();
        }
        true
    }
}

/// The end of a request, however it ends (its answer's body sent, or dropped with its
/// connection).
struct RequestGuard {
    shared: SharedRef,
    id: ConnId,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.shared.lock().table.end(self.id, Instant::now());
    }
}

/// An answer's body that keeps its request in progress until the last byte is sent: a
/// long stream (MJPEG) keeps its connection busy, not idle (which the header timeout
/// would close, and the connection cap evict).
struct GuardedBody {
    inner: Body,
    _request: RequestGuard,
}

impl hyper::body::Body for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The HTTP server, ready to run.
pub struct Server {
    /// The bound listener.
    pub listener: TcpListener,
    /// TLS for every connection, when HTTPS is configured.
    pub tls: Option<TlsAcceptor>,
    /// The routes.
    pub router: Router,
    /// Connection limits and timeouts.
    pub limits: HttpSettings,
    /// Where connections are counted (the watchdog reads the accepted and refused).
    pub metrics: Arc<Metrics>,
}

/// Supervised: a panic of the accept loop restarts it on the same listener, with a new
/// connection table (the connections it had go on until they close).
impl Supervised for Server {
    fn part(&self) -> Part {
        Part::Http
    }

    fn run(
        &mut self,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.serve(shutdown)
    }
}

impl Server {
    /// Serves until `shutdown`, then gives requests in progress [`SHUTDOWN_GRACE`].
    pub async fn serve(&mut self, shutdown: CancellationToken) {
        let shared = SharedRef(Arc::new(Mutex::new(Shared {
            table: Connections::new(
                self.limits.max_connections,
                self.limits.reserved_connections,
                self.limits.header_timeout,
            ),
            closers: HashMap::new(),
        })));
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                // A connection that died in the backlog: the next one is fine.
                Err(e) if !is_out_of_resources(&e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
                Err(e) => {
                    // Out of descriptors or memory: make room and go on, never stop
                    // listening; the watchdog hears of it if it lasts.
                    self.metrics.http.refused.inc();
                    let made_room = shared.evict_one();
                    if made_room {
                        self.metrics.http.evicted.inc();
                    }
                    tracing::debug!(error = %e, made_room, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            };
            let (id, close) = {
                let mut s = shared.lock();
                match s.table.admit(Instant::now()) {
                    Admission::Refused => {
                        drop(s);
                        self.metrics.http.refused.inc();
                        continue;
                    }
                    Admission::Admitted { id, evicted } => {
                        if let Some(old) = evicted.and_then(|e| s.closers.remove(&e)) {
                            old.cancel();
                            self.metrics.http.evicted.inc();
                        }
                        let close = CancellationToken::new();
                        s.closers.insert(id, close.clone());
                        (id, close)
                    }
                }
            };
            self.metrics.http.accepted.inc();
            connections.spawn(serve_connection(
                stream,
                self.tls.clone(),
                self.router.clone(),
                shared.clone(),
                id,
                close,
                shutdown.clone(),
                self.metrics.clone(),
            ));
        }
        connections.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
            .await
            .is_err()
        {
            tracing::debug!("HTTP connections still open at shutdown were dropped");
        }
    }
}

/// Whether an accept failed for want of descriptors or memory (Linux's EMFILE, ENFILE,
/// ENOBUFS, ENOMEM; the same numbers on every architecture focusd runs on), as opposed
/// to one connection's trouble.
fn is_out_of_resources(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// One connection, from the TLS handshake to its close.
#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    router: Router,
    shared: SharedRef,
    id: ConnId,
    close: CancellationToken,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) {
    // Answers are small and latency matters more than packets.
    let _ = stream.set_nodelay(true);
    // A handler that panics ends its connection, not the server; the connection's place
    // in the table is given back below either way.
    let served = std::panic::AssertUnwindSafe(serve_stream(
        stream, tls, router, &shared, id, &close, &shutdown, &metrics,
    ))
    .catch_unwind()
    .await;
    if let Err(panic) = served {
        metrics.task_panics[Part::Http.index()].inc();
        let why = crate::service::supervisor::panic_message(panic.as_ref());
        tracing::error!("an HTTP connection's handler panicked: {why}; the connection was closed");
    }
    let mut s = shared.lock();
    s.table.close(id);
    s.closers.remove(&id);
}

/// Serves one connection's requests, over TLS when there is an acceptor.
#[allow(clippy::too_many_arguments)]
async fn serve_stream(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    router: Router,
    shared: &SharedRef,
    id: ConnId,
    close: &CancellationToken,
    shutdown: &CancellationToken,
    metrics: &Arc<Metrics>,
) {
    match tls {
        None => serve_io(stream, router, shared, id, close, shutdown, metrics).await,
        Some(acceptor) => {
            // The handshake counts as idle time: it must finish within the header
            // timeout like any request's headers.
            let deadline = shared.lock().table.idle_deadline(id);
            let handshake = tokio::select! {
                _ = close.cancelled() => None,
                _ = sleep_until(deadline) => {
                    metrics.http.timed_out.inc();
                    None
                }
                h = acceptor.accept(stream) => h.inspect_err(|e| {
                    tracing::debug!(error = %e, "TLS handshake failed");
                }).ok(),
            };
            if let Some(io) = handshake {
                serve_io(io, router, shared, id, close, shutdown, metrics).await;
            }
        }
    }
}

fn sleep_until(deadline: Option<Instant>) -> tokio::time::Sleep {
    // Without a deadline (a request in progress) look again after a while: the request
    // may end and the connection go idle.
    let at = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
    tokio::time::sleep_until(at.into())
}

async fn serve_io<I>(
    io: I,
    router: Router,
    shared: &SharedRef,
    id: ConnId,
    close: &CancellationToken,
    shutdown: &CancellationToken,
    metrics: &Metrics,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requests = shared.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let began = requests
            .lock()
            .table
            .begin(id, is_priority(req.uri().path()));
        let guard = began.then(|| RequestGuard {
            shared: requests.clone(),
            id,
        });
        let router = router.clone();
        async move {
            let Some(guard) = guard else {
                return Ok::<_, Infallible>(busy());
            };
            // The router's error type is `Infallible`.
            let response = router.oneshot(req).await?;
            Ok(response.map(|inner| {
                Body::new(GuardedBody {
                    inner,
                    _request: guard,
                })
            }))
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    // Upgrades for the WebSockets: once upgraded, a connection leaves this table (the
    // picture doors hold WebSockets to their own limits).
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = shared.lock().table.idle_deadline(id);
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            // Evicted to make room: it was idle, nothing is lost.
            _ = close.cancelled() => return,
            _ = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = sleep_until(deadline) => {
                let still = shared.lock().table.idle_deadline(id);
                if still.is_some_and(|d| d <= Instant::now()) {
                    metrics.http.timed_out.inc();
                    return;
                }
            }
        }
    }
}

/// The answer to an ordinary request while only the reserve is left.
fn busy() -> Response<Body> {
    let mut r = Response::new(Body::from("busy: too many requests in progress\n"));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_probe_tells_a_stuck_route_and_refused_connections() {
        let metrics = Arc::new(Metrics::default());
        let answering = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let mut probe = HttpProbe::new(answering, metrics.clone());
        assert_eq!(probe.check(Duration::from_millis(100)).await, Ok(()));
        // Refused and nothing taken since the last check: not answering.
        metrics.http.refused.inc();
        assert!(probe.check(Duration::from_millis(100)).await.is_err());
        // Refused but also taken: it makes room, so it answers.
        metrics.http.refused.inc();
        metrics.http.accepted.inc();
        assert_eq!(probe.check(Duration::from_millis(100)).await, Ok(()));
        // A handler that never returns (stuck behind a lock).
        let stuck =
            Router::new().route("/healthz", axum::routing::get(std::future::pending::<&str>));
        let mut probe = HttpProbe::new(stuck, metrics);
        let e = probe.check(Duration::from_millis(100)).await.unwrap_err();
        assert!(e.contains("did not answer"), "{e}");
    }
}
