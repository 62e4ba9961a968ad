//! Who may use the HTTP door, checked before any route runs:
//!
//! 1. **Host.** The `Host` must be an IP address, `localhost`, this machine's name (or
//!    `NAME.local`), the MQTT `advertise` host, or one of `[http] allowed_hosts`; else
//!    421. A web page on a foreign domain re-pointed at the device (DNS rebinding) sends
//!    its own name and is turned away.
//! 2. **Origin.** A request that changes state (`POST`, `PUT`, `PATCH`, `DELETE`) from a
//!    web page of another origin than the daemon's own and not in
//!    `[http] allowed_origins` is refused 403; CORS headers name allowed origins only, never
//!    `*`.
//! 3. **Token** (unless `[auth] mode = "off"`). Every request but `/healthz` and the static
//!    viewer page carries `Authorization: Bearer TOKEN` or `?token=TOKEN`; without → 401,
//!    a wrong one → 401. The view-only token may read, watch and sign up for video, not
//!    command (`POST /api/command` → 403; its viewers' DataChannel commands are refused).
//!    Tokens are compared in constant time. Each refusal is counted by reason.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::config::{AuthMode, AuthSettings, HttpSettings};
use crate::service::metrics::{Metrics, Refusal};
use crate::state::command::Access;

/// How often a kept token file is looked at again, so that `focusd token --rotate`
/// takes effect without a restart.
const TOKEN_FILE_RECHECK: Duration = Duration::from_secs(1);

/// Random bytes in a generated token (printed as hex).
const TOKEN_BYTES: usize = 24;

/// The access token cannot be read or kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token file or its directory cannot be read, created or written.
    #[error("token file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The token file holds something that is not a token.
    #[error("token file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// No randomness to generate one.
    #[error("cannot generate a token: no randomness ({0})")]
    NoRandomness(getrandom::Error),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A fresh random token.
fn generate() -> Result<String, TokenError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(TokenError::NoRandomness)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the token kept at `path`.
pub fn read_token_file(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    let token = text.trim().to_string();
    crate::config::resolve::check_token(&token).map_err(|reason| TokenError::Invalid {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(token)
}

/// The token kept at `path`, generated (and the directory created, private to its owner)
/// when there is none. `Ok((token, true))` when it was generated now.
pub fn load_or_create(path: &Path) -> Result<(String, bool), TokenError> {
    match read_token_file(path) {
        Ok(t) => return Ok((t, false)),
        Err(TokenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok((write_new(path)?, true))
}

/// Replaces the kept token with a new one; the file keeps its owner, so that a token
/// rotated by root stays readable by the service's user.
pub fn rotate(path: &Path) -> Result<String, TokenError> {
    write_new(path)
}

fn write_new(path: &Path) -> Result<String, TokenError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    let token = generate()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
    }
    let owner = std::fs::metadata(path).ok().map(|m| (m.uid(), m.gid()));
    // Written beside and renamed over: a reader sees the old token or the new, whole.
    let tmp = path.with_extension(format!("new{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format!("{token}\n").as_bytes())?;
        f.sync_all()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(path)(e));
    }
    Ok(token)
}

/// Where the full-access token comes from.
#[derive(Debug)]
enum FullToken {
    /// Configured: fixed for the daemon's life.
    Given(String),
    /// Kept in a file: read again when the file changes.
    File {
        path: PathBuf,
        cached: Mutex<CachedToken>,
    },
}

#[derive(Debug)]
struct CachedToken {
    token: String,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// The access rules of one daemon (see the module docs). Cheap to share.
#[derive(Debug)]
pub struct Gate {
    /// `None` when authentication is off.
    full: Option<FullToken>,
    view: Option<String>,
    /// Origins allowed besides the daemon's own.
    origins: Vec<String>,
    /// Host names allowed besides IP addresses and `localhost`; `*` allows any.
    hosts: Vec<String>,
    /// `https` or `http`, for the daemon's own origin.
    scheme: &'static str,
    metrics: Arc<Metrics>,
}

impl Gate {
    /// The rules for these settings: a kept token is loaded (or generated) now. Also
    /// returns whether it was generated now.
    pub fn new(
        auth: &AuthSettings,
        http: &HttpSettings,
        extra_hosts: &[String],
        metrics: Arc<Metrics>,
    ) -> Result<(Gate, bool), TokenError> {
        let mut generated = false;
        let full = match (auth.mode, &auth.token) {
            (AuthMode::Off, _) => None,
            (AuthMode::Token, Some(t)) => Some(FullToken::Given(t.clone())),
            (AuthMode::Token, None) => {
                let (token, new) = load_or_create(&auth.token_file)?;
                generated = new;
                let modified = std::fs::metadata(&auth.token_file)
                    .and_then(|m| m.modified())
                    .ok();
                Some(FullToken::File {
                    path: auth.token_file.clone(),
                    cached: Mutex::new(CachedToken {
                        token,
                        modified,
                        checked: Instant::now(),
                    }),
                })
            }
        };
        let mut hosts: Vec<String> = http.allowed_hosts.clone();
        hosts.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
        if let Some(name) = host_name() {
            hosts.push(format!("{name}.local"));
            hosts.push(name);
        }
        Ok((
            Gate {
                full,
                view: auth.view_token.clone(),
                origins: http.allowed_origins.clone(),
                hosts,
                scheme: if http.tls.is_some() { "https" } else { "http" },
                metrics,
            },
            generated,
        ))
    }

    /// Whether requests need a token.
    pub fn enabled(&self) -> bool {
        self.full.is_some()
    }

    /// The full-access token now (the kept file is read again if it changed).
    pub fn token(&self) -> Option<String> {
        match self.full.as_ref()? {
            FullToken::Given(t) => Some(t.clone()),
            FullToken::File { path, cached } => {
                // A poisoned lock still holds a whole token.
                let mut c = cached.lock().unwrap_or_else(|p| p.into_inner());
                if c.checked.elapsed() >= TOKEN_FILE_RECHECK {
                    c.checked = Instant::now();
                    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                    if modified != c.modified {
                        match read_token_file(path) {
                            Ok(t) => {
                                tracing::info!(file = %path.display(), "access token changed");
                                c.token = t;
                                c.modified = modified;
                            }
                            // Keep serving with the last good token, and say why.
                            Err(e) => tracing::warn!(error = %e, "keeping the last token"),
                        }
                    }
                }
                Some(c.token.clone())
            }
        }
    }

    /// What a presented token grants: `None` when it is no token of ours.
    pub fn grants(&self, presented: &str) -> Option<Access> {
        let same = |t: &str| bool::from(t.as_bytes().ct_eq(presented.as_bytes()));
        if self.token().is_some_and(|t| same(&t)) {
            return Some(Access::Full);
        }
        if self.view.as_deref().is_some_and(same) {
            return Some(Access::ViewOnly);
        }
        None
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_without_port(host).to_ascii_lowercase();
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || self.hosts.iter().any(|h| h == "*" || *h == name)
    }

    /// Whether `origin` may call us: our own (same scheme and host), or allowed.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.to_ascii_lowercase();
        host.is_some_and(|h| origin == format!("{}://{}", self.scheme, h.to_ascii_lowercase()))
            || self.origins.contains(&origin)
    }

    fn refuse(&self, why: Refusal, status: StatusCode, reason: &str) -> Response {
        self.metrics.http.refused_access(why);
        let mut r = (status, format!("{reason}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"focusd\""),
            );
        }
        r
    }
}

/// This machine's host name, lower case.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → the host alone (brackets removed).
fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // One colon: a port. More: a bare IPv6 address.
        Some((h, _)) if !h.contains(':') => h,
        _ => host,
    }
}

/// Paths anyone may ask for: liveness, and the static viewer page (it holds no state;
/// it reads its token from the link's `#token=` and sends it with every request).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/" | "/favicon.ico")
}

/// Requests that command the device (the view-only token may not).
fn commands(method: &Method, path: &str) -> bool {
    (method == Method::POST && path == "/api/command")
        || (method == Method::PUT && path == "/api/streams")
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The token a request presents: `Authorization: Bearer`, else `?token=`.
fn presented(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = v.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(str::to_string)
}

/// The middleware applying the rules; the access granted travels on as a request
/// extension ([`Access`]).
pub async fn guard(State(gate): State<Arc<Gate>>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    // HTTP/1.1 sends `Host`; HTTP/2 the URI's authority.
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if let Some(h) = &host
        && !gate.host_allowed(h)
    {
        return gate.refuse(
            Refusal::Host,
            StatusCode::MISDIRECTED_REQUEST,
            &format!(
                "this device does not answer to the name `{}`: add it to [http] allowed_hosts",
                host_without_port(h)
            ),
        );
    }
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let origin_ok = origin
        .as_deref()
        .is_none_or(|o| gate.origin_allowed(o, host.as_deref()));
    let method = req.method().clone();
    if method == Method::OPTIONS {
        // A CORS preflight carries no credentials: answered for allowed origins only.
        if !origin_ok {
            return gate.refuse(
                Refusal::Origin,
                StatusCode::FORBIDDEN,
                "this origin is not in [http] allowed_origins",
            );
        }
        return cors(
            StatusCode::NO_CONTENT.into_response(),
            origin.as_deref(),
            true,
        );
    }
    if changes_state(&method) && !origin_ok {
        return gate.refuse(
            Refusal::Origin,
            StatusCode::FORBIDDEN,
            "this origin is not in [http] allowed_origins",
        );
    }
    let path = req.uri().path().to_string();
    let access = if gate.enabled() && !is_public(&path) {
        match presented(headers, req.uri().query()) {
            None => {
                return gate.refuse(
                    Refusal::MissingToken,
                    StatusCode::UNAUTHORIZED,
                    "a token is needed: Authorization: Bearer TOKEN or ?token=TOKEN (`focusd token` prints it)",
                );
            }
            Some(t) => match gate.grants(&t) {
                None => {
                    return gate.refuse(
                        Refusal::WrongToken,
                        StatusCode::UNAUTHORIZED,
                        "the token is not valid",
                    );
                }
                Some(Access::ViewOnly) if commands(&method, &path) => {
                    return gate.refuse(
                        Refusal::ViewOnly,
                        StatusCode::FORBIDDEN,
                        "the view-only token may watch but not command",
                    );
                }
                Some(a) => a,
            },
        }
    } else {
        Access::Full
    };
    req.extensions_mut().insert(access);
    let response = next.run(req).await;
    if origin_ok {
        cors(response, origin.as_deref(), false)
    } else {
        response
    }
}

/// CORS headers for an allowed `origin` (none for a same-origin request without one).
fn cors(mut res: Response, origin: Option<&str>, preflight: bool) -> Response {
    let Some(origin) = origin.and_then(|o| HeaderValue::from_str(o).ok()) else {
        return res;
    };
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location"),
    );
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, PATCH, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_without_ports() {
        assert_eq!(host_without_port("cam.local:8888"), "cam.local");
        assert_eq!(host_without_port("[::1]:8888"), "::1");
        assert_eq!(host_without_port("[fe80::1]"), "fe80::1");
        assert_eq!(host_without_port("::1"), "::1");
        assert_eq!(host_without_port("10.0.0.2"), "10.0.0.2");
    }

    #[test]
    fn tokens_from_header_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h, Some("a=1&token=abc")), Some("abc".into()));
        assert_eq!(presented(&h, Some("a=1")), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer xyz"),
        );
        assert_eq!(presented(&h, Some("token=abc")), Some("xyz".into()));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eHl6"),
        );
        assert_eq!(presented(&h, None), None);
    }

    #[test]
    fn a_kept_token_is_generated_once_and_rotated_in_place() {
        let dir = std::env::temp_dir().join(format!("focusd-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("state/token");
        let (first, new) = load_or_create(&path).unwrap();
        assert!(new && first.len() == TOKEN_BYTES * 2);
        assert_eq!(load_or_create(&path).unwrap(), (first.clone(), false));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner reads the token");
        let second = rotate(&path).unwrap();
        assert_ne!(first, second);
        assert_eq!(read_token_file(&path).unwrap(), second);
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(TokenError::Invalid { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
