//! Who may use the HTTP door: the token on every endpoint but `/healthz` and the viewer
//! page, the view-only token, foreign origins and host names, `[auth] mode = "off"`,
//! and the counts of refusals.

use std::time::Duration;

use focusd::state::command::Mode;
use focusd_testkit::http::{self, Response, TEST_TOKEN};
use focusd_testkit::receiver::{Receiver, ReceiverOptions};
use focusd_testkit::{TempDir, TestDaemon};

const WAIT: Duration = Duration::from_secs(10);
const VIEW_TOKEN: &str = "view-only-token-0123456789";

/// A daemon with `config` (TOML) on the test source.
fn daemon_with(config: &str) -> TestDaemon {
    TestDaemon::start_with_config(config, &["--source", "test", "--size", "640x360"])
}

fn send(
    d: &TestDaemon,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    http::request_with(d.addr, method, path, headers, body.as_bytes()).unwrap()
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[test]
fn every_endpoint_but_health_and_the_page_needs_the_token() {
    let d = TestDaemon::start(&["--source", "test", "--size", "640x360"]);
    let bearer = format!("Bearer {TEST_TOKEN}");
    let wrong = "Bearer not-the-token-at-all-0000";
    // (method, path, content type, body, status with the token)
    let endpoints: [(&str, &str, Option<&str>, &str, u16); 8] = [
        ("GET", "/api/state", None, "", 200),
        // TURN credentials are for viewers, not strangers.
        ("GET", "/api/webrtc", None, "", 200),
        ("GET", "/metrics", None, "", 200),
        (
            "POST",
            "/api/command",
            Some("application/json"),
            r#"{"mode":"LOW"}"#,
            200,
        ),
        ("POST", "/offer", Some("application/sdp"), "not sdp", 400),
        ("POST", "/whep", Some("application/sdp"), "not sdp", 400),
        (
            "DELETE",
            "/whep/00000000000000000000000000000000",
            None,
            "",
            404,
        ),
        ("GET", "/no-such-page", None, "", 404),
    ];
    for (method, path, ct, body, with_token) in endpoints {
        let mut headers: Vec<(&str, &str)> = ct.map(|c| ("Content-Type", c)).into_iter().collect();
        let none = send(&d, method, path, &headers, body);
        assert_eq!(none.status, 401, "{method} {path} without a token");
        assert!(
            none.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{method} {path}: 401 names the scheme"
        );
        assert!(none.text().contains("focusd token"), "{}", none.text());
        headers.push(("Authorization", wrong));
        assert_eq!(
            send(&d, method, path, &headers, body).status,
            401,
            "{method} {path} with a wrong token"
        );
        headers.pop();
        headers.push(("Authorization", &bearer));
        assert_eq!(
            send(&d, method, path, &headers, body).status,
            with_token,
            "{method} {path} with the token"
        );
    }
    // Where a header cannot be set (a plain URL, an <img>), the query carries it.
    let query = send(
        &d,
        "GET",
        &format!("/api/state?token={TEST_TOKEN}"),
        &[],
        "",
    );
    assert_eq!(query.status, 200);
    assert_eq!(
        send(&d, "GET", "/api/state?token=wrong-token-0000000", &[], "").status,
        401
    );
    // Nothing changed without the token: the one accepted command did.
    assert_eq!(d.state().mode, Mode::Low);
    // Liveness and the static page need nothing (the page reads its token from the link).
    assert_eq!(send(&d, "GET", "/healthz", &[], "").status, 200);
    let page = send(&d, "GET", "/", &[], "");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<html"), "the viewer page");
    // Refusals are counted by reason.
    let metrics = d.get("/metrics").text();
    let count = |reason: &str| -> f64 {
        let line = format!("focusd_http_unauthorized_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in {metrics}"))
            .parse()
            .unwrap()
    };
    // Each endpoint once without a token; once with a wrong one, and once by query.
    assert_eq!(count("missing_token"), endpoints.len() as f64);
    assert_eq!(count("wrong_token"), endpoints.len() as f64 + 1.0);
}

#[test]
fn the_view_only_token_watches_but_does_not_command() {
    let d = daemon_with(&format!(
        "[auth]\ntoken = \"{TEST_TOKEN}\"\nview_token = \"{VIEW_TOKEN}\"\n"
    ));
    let view = format!("Bearer {VIEW_TOKEN}");
    assert_eq!(
        send(&d, "GET", "/api/state", &[("Authorization", &view)], "").status,
        200
    );
    assert_eq!(
        send(&d, "GET", "/api/webrtc", &[("Authorization", &view)], "").status,
        200,
        "a viewer with the view-only token needs the ICE servers too"
    );
    let refused = send(
        &d,
        "POST",
        "/api/command",
        &[("Authorization", &view), JSON],
        r#"{"mode":"LOW"}"#,
    );
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("view-only"), "{}", refused.text());
    // It may watch: both tracks arrive...
    let viewer = Receiver::connect(
        d.addr,
        ReceiverOptions {
            decode: false,
            token: VIEW_TOKEN.into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        viewer
            .wait_for(WAIT, |s| s.tracks.iter().all(|t| t.frames > 3))
            .1,
        "a view-only viewer receives both tracks"
    );
    // ...but its DataChannel commands are refused with a reason.
    viewer.send(r#"{"mode":"VISION"}"#);
    let (stats, answered) = viewer.wait_for(WAIT, |s| {
        s.messages
            .iter()
            .any(|m| m.contains("watch but not command"))
    });
    assert!(answered, "messages: {:?}", stats.messages);
    assert_eq!(
        d.state().mode,
        Mode::High,
        "nothing a view-only viewer sent changed the mode"
    );
    // The full token still commands.
    assert_eq!(d.command(r#"{"mode":"LOW"}"#).status, 200);
    assert_eq!(d.state().mode, Mode::Low);
}

#[test]
fn foreign_pages_and_foreign_host_names_cannot_change_anything() {
    let d = daemon_with(&format!(
        "[auth]\ntoken = \"{TEST_TOKEN}\"\n[http]\nallowed_origins = [\"https://dash.example\"]\nallowed_hosts = [\"cam-1.example\"]\n"
    ));
    let bearer = format!("Bearer {TEST_TOKEN}");
    let own = format!("http://{}", d.addr);
    let command = |origin: &str| {
        send(
            &d,
            "POST",
            "/api/command",
            &[("Authorization", &bearer), ("Origin", origin), JSON],
            r#"{"mode":"VISION"}"#,
        )
    };
    // A page elsewhere (even one holding the token) may not command.
    let foreign = command("http://evil.example");
    assert_eq!(foreign.status, 403, "{}", foreign.text());
    assert!(foreign.header("access-control-allow-origin").is_none());
    assert_eq!(d.state().mode, Mode::High);
    // Its preflight is refused too, and no answer says `*`.
    let preflight = send(
        &d,
        "OPTIONS",
        "/api/command",
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    );
    assert_eq!(preflight.status, 403);
    // The daemon's own page and an allowed dashboard may.
    for origin in [own.as_str(), "https://dash.example"] {
        let r = command(origin);
        assert_eq!(r.status, 200, "{origin}: {}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    }
    let preflight = send(
        &d,
        "OPTIONS",
        "/offer",
        &[
            ("Origin", "https://dash.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://dash.example")
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .is_some_and(|h| h.contains("Authorization"))
    );
    // A name that is not this device's (DNS rebinding) is turned away, even for reads.
    for (host, status) in [
        ("attacker.example:8888", 421),
        ("cam-1.example:8888", 200),
        ("localhost:8888", 200),
        ("[::1]:8888", 200),
    ] {
        let r = send(
            &d,
            "GET",
            "/api/state",
            &[("Authorization", &bearer), ("Host", host)],
            "",
        );
        assert_eq!(r.status, status, "Host: {host}: {}", r.text());
    }
}

#[test]
fn auth_off_needs_no_token_but_keeps_foreign_pages_out() {
    let d = daemon_with("[auth]\nmode = \"off\"\n");
    assert_eq!(send(&d, "GET", "/api/state", &[], "").status, 200);
    assert_eq!(
        send(&d, "POST", "/api/command", &[JSON], r#"{"mode":"HIGH"}"#).status,
        200
    );
    // Foreign pages still may not change state.
    assert_eq!(
        send(
            &d,
            "POST",
            "/api/command",
            &[JSON, ("Origin", "http://evil.example")],
            r#"{"mode":"LOW"}"#
        )
        .status,
        403
    );
}

#[test]
fn https_with_http2_and_http1_and_the_same_rules() {
    let dir = TempDir::new("https");
    let (ca, cert, key) = focusd_testkit::pki::issue(dir.path(), "focusd", None);
    let d = daemon_with(&format!(
        "[auth]\ntoken = \"{TEST_TOKEN}\"\n[http]\nheader_timeout_s = 1\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let port = d.addr.port();
    let curl = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
            .args(extra)
            .output()
            .expect("curl runs (tests/run.sh installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let url = format!("https://localhost:{port}/api/state");
    let bearer = format!("Authorization: Bearer {TEST_TOKEN}");
    assert_eq!(curl(&["--http2", "-H", &bearer, &url]), "200 2");
    assert_eq!(curl(&["--http1.1", "-H", &bearer, &url]), "200 1.1");
    assert_eq!(
        curl(&["--http2", &url]),
        "401 2",
        "the token is needed over HTTPS too"
    );
    // A TLS handshake that never finishes is cut at the header timeout.
    {
        use std::io::{Read, Write};
        let started = std::time::Instant::now();
        let mut s = std::net::TcpStream::connect(d.addr).unwrap();
        s.write_all(&[0x16, 0x03, 0x01]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "a stalled handshake closed after {took:?}"
        );
    }
    // Plain HTTP to the TLS port gets no answer, and the daemon keeps serving.
    assert!(http::request(d.addr, "GET", "/healthz", None, b"").is_err());
    assert_eq!(
        curl(&["--http2", &format!("https://localhost:{port}/healthz")]),
        "200 2"
    );
}
