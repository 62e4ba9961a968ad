//! Bad input over HTTP gets the right 4xx with a one-line reason, and the daemon keeps
//! serving the viewers it has throughout.

use std::time::Duration;

use focusd::state::State;
use focusd::state::command::Mode;
use focusd_testkit::TestDaemon;
use focusd_testkit::http;
use focusd_testkit::receiver::{Receiver, ReceiverOptions};

const WAIT: Duration = Duration::from_secs(10);

fn one_line_reason(body: &str) {
    let trimmed = body.trim_end();
    assert!(!trimmed.is_empty(), "a reason is given");
    assert!(!trimmed.contains('\n'), "one line: {trimmed:?}");
}

/// A minimal offer with the given media sections (no ICE/DTLS lines).
const AUDIO_ONLY: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n";

/// Method, path, content type, body, expected status, words the reason must contain.
type BadRequest = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
);

/// Chromium's offer with a 40,017-character `a=ice-ufrag` in its first section.
fn long_ufrag_offer() -> Vec<u8> {
    let chrome = include_str!("data/chrome-offer.sdp");
    let long = format!("a=ice-ufrag:{}", "a".repeat(40_017));
    chrome.replacen("a=ice-ufrag:abcd", &long, 1).into_bytes()
}

/// Bad offers on `/offer`: each refused with its status and the words of its reason.
fn offer_cases() -> Vec<BadRequest> {
    vec![
        (
            "POST",
            "/offer",
            Some("application/sdp"),
            b"this is not SDP".to_vec(),
            400,
            "malformed SDP",
        ),
        (
            "POST",
            "/offer",
            Some("text/plain"),
            b"v=0\r\nm=video 9 X 96\r\nbroken\r\n".to_vec(),
            400,
            "SDP",
        ),
        (
            "POST",
            "/offer",
            Some("application/sdp"),
            AUDIO_ONLY.as_bytes().to_vec(),
            400,
            "no video m-line",
        ),
        (
            "POST",
            "/offer",
            Some("application/sdp"),
            vec![b'v'; 1 << 20],
            413,
            "64 KiB",
        ),
        (
            "POST",
            "/offer",
            Some("image/png"),
            b"v=0".to_vec(),
            415,
            "not accepted",
        ),
        ("POST", "/offer", None, b"v=0".to_vec(), 415, "not accepted"),
        (
            "POST",
            "/offer",
            Some("application/json"),
            b"{\"sdp\":1}".to_vec(),
            400,
            "expected",
        ),
        (
            "POST",
            "/offer",
            Some("application/json"),
            b"{\"sdp\":\"v=0\",\"type\":\"answer\"}".to_vec(),
            400,
            "must be \\\"offer\\\"",
        ),
        (
            "POST",
            "/offer",
            Some("application/sdp"),
            vec![0xff, 0xfe, 0x00],
            400,
            "UTF-8",
        ),
        // An HTTP fuzz's find: a 40,017-character ufrag made str0m's ICE agent panic and
        // took the WebRTC server down for every viewer after.
        (
            "POST",
            "/offer",
            Some("application/sdp"),
            long_ufrag_offer(),
            400,
            "a=ice-ufrag is 40017 characters long",
        ),
    ]
}

/// Bad WHEP requests: offers, sessions that do not exist, trickle.
fn whep_cases() -> Vec<BadRequest> {
    vec![
        (
            "POST",
            "/whep",
            Some("text/plain"),
            b"v=0".to_vec(),
            415,
            "application/sdp",
        ),
        (
            "POST",
            "/whep",
            Some("application/sdp"),
            AUDIO_ONLY.as_bytes().to_vec(),
            400,
            "no video",
        ),
        (
            "POST",
            "/whep",
            Some("application/sdp"),
            long_ufrag_offer(),
            400,
            "a=ice-ufrag is 40017 characters long",
        ),
        (
            "DELETE",
            "/whep/0123456789abcdef0123456789abcdef",
            None,
            vec![],
            404,
            "no such session",
        ),
        (
            "DELETE",
            "/whep/not-an-id",
            None,
            vec![],
            404,
            "no such session",
        ),
        (
            "PATCH",
            "/whep/0123456789abcdef0123456789abcdef",
            Some("application/trickle-ice-sdpfrag"),
            b"a=x".to_vec(),
            405,
            "trickle",
        ),
    ]
}

/// Bad commands on `/api/command` (JSON errors), and a route that does not exist.
fn api_cases() -> Vec<BadRequest> {
    vec![
        (
            "POST",
            "/api/command",
            Some("text/plain"),
            b"{\"mode\":\"LOW\"}".to_vec(),
            415,
            "application/json",
        ),
        (
            "POST",
            "/api/command",
            Some("application/json"),
            vec![b' '; 100 * 1024],
            413,
            "64 KiB",
        ),
        (
            "POST",
            "/api/command",
            Some("application/json"),
            b"{\"mode\":".to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "POST",
            "/api/command",
            Some("application/json"),
            b"{\"mode\":\"TURBO\"}".to_vec(),
            400,
            "unknown mode",
        ),
        (
            "POST",
            "/api/command",
            Some("application/json"),
            b"{\"mode\":\"LOW\",\"speed\":1}".to_vec(),
            400,
            "unknown field",
        ),
        (
            "POST",
            "/api/command",
            Some("application/json"),
            br#"{"hybrid_rect":{"x1":0,"y1":0,"x2":101,"y2":50}}"#.to_vec(),
            400,
            "from 0 to 100",
        ),
        (
            "POST",
            "/api/command",
            Some("application/json"),
            br#"{"hybrid_rect":{"x1":50,"y1":0,"x2":10,"y2":50}}"#.to_vec(),
            400,
            "x1 < x2",
        ),
        (
            "POST",
            "/api/command",
            Some("application/json"),
            br#"{"hybrid_rect":{"x1":0,"y1":60,"x2":10,"y2":50}}"#.to_vec(),
            400,
            "y1 < y2",
        ),
        (
            "POST",
            "/api/command",
            Some("application/json"),
            br#"{"hybrid_rect":{"x1":0,"y1":0,"x2":10}}"#.to_vec(),
            400,
            "missing y2",
        ),
        (
            "POST",
            "/api/command",
            Some("application/json"),
            br#"{"hybrid_rect":"all"}"#.to_vec(),
            400,
            "must be an object",
        ),
        (
            "POST",
            "/api/command",
            Some("application/json"),
            br#"{"id":["x"]}"#.to_vec(),
            400,
            "id must be a string",
        ),
        (
            "POST",
            "/api/command",
            Some("application/json"),
            br#"[]"#.to_vec(),
            400,
            "JSON object",
        ),
        ("GET", "/nope", None, vec![], 404, "not found"),
    ]
}

#[test]
fn bad_requests_get_clear_errors_while_viewers_keep_receiving() {
    let d = TestDaemon::start(&["--source", "test", "--size", "640x360"]);
    let viewer = Receiver::connect(
        d.addr,
        ReceiverOptions {
            decode: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(viewer.wait_for(WAIT, |s| s.tracks[0].frames > 5).1);

    let cases = [offer_cases(), whep_cases(), api_cases()].concat();
    for (method, path, ct, body, status, reason) in cases {
        let r = http::request(d.addr, method, path, ct, &body).unwrap();
        let text = r.text();
        assert_eq!(r.status, status, "{method} {path} {ct:?}: {text}");
        assert!(
            text.contains(reason),
            "{method} {path} {ct:?}: `{text}` should say `{reason}`"
        );
        one_line_reason(&text);
        if path == "/api/command" {
            let v: serde_json::Value = serde_json::from_str(&text).expect("API errors are JSON");
            assert!(v["error"].is_string());
        }
    }
    // Bodies that cannot be read are a bad request, not a large one.
    let offer = format!(
        "POST /offer HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/sdp\r\n",
        d.addr,
        http::TEST_TOKEN
    );
    for (what, request) in [
        (
            "a bad chunk size",
            format!("{offer}Transfer-Encoding: chunked\r\n\r\nZZ\r\nv=0\r\n0\r\n\r\n"),
        ),
        (
            "a body shorter than its length",
            format!("{offer}Content-Length: 100\r\n\r\nv=0\r\n"),
        ),
    ] {
        let r = http::raw(d.addr, request.as_bytes()).unwrap();
        let text = r.text();
        assert_eq!(r.status, 400, "{what}: {text}");
        assert!(text.contains("could not be read"), "{what}: {text}");
        one_line_reason(&text);
    }
    assert_eq!(
        d.state().mode,
        Mode::High,
        "no rejected command changed anything"
    );
    // The daemon kept serving the viewer through all of it.
    let before = viewer.stats().tracks[0].frames;
    assert!(
        viewer
            .wait_for(WAIT, |s| s.tracks[0].frames > before + 10)
            .1,
        "viewer still served"
    );
    assert_eq!(d.get("/healthz").status, 200);
    assert!(
        d.get("/metrics")
            .text()
            .contains("focusd_bad_requests_total")
    );
}

#[test]
fn json_offer_form_and_state_api() {
    let d = TestDaemon::start(&["--source", "test", "--size", "640x360"]);
    let r =
        d.command(r#"{"mode":"HYBRID","hybrid_rect":{"x1":10,"y1":10,"x2":60,"y2":70},"id":"c1"}"#);
    assert_eq!(r.status, 200);
    let s: State = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(s.mode, Mode::Hybrid);
    assert_eq!(s.hybrid_rect.map(|r| r.x2), Some(60.0));
    // The contract's keys, as any client reads them.
    let state: serde_json::Value = serde_json::from_slice(&d.get("/api/state").body).unwrap();
    for key in [
        "mode",
        "hybrid_rect",
        "roi",
        "viewers",
        "fps",
        "bitrate_kbps",
        "encoder",
        "encoder_reason",
        "source",
    ] {
        assert!(state.get(key).is_some(), "state has {key}");
    }
    // `auto` on a machine without a hardware encoder, and why.
    assert_eq!(state["encoder"], "openh264");
    assert!(
        state["encoder_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("no hardware")),
        "{state}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let state = d.state();
    assert!(state.fps > 20.0, "fps measured: {state:?}");
    assert_eq!(
        state.bitrate_kbps.context, 0.0,
        "nobody watches: nothing is encoded"
    );
    assert!(d.get("/").text().contains("<canvas"), "viewer page served");
    let metrics = d.get("/metrics").text();
    assert!(metrics.contains("focusd_encode_seconds_bucket{track=\"source\""));
    assert!(metrics.contains("focusd_frames_encoded_total{track=\"context\"}"));
    // The encoder in use, by the name the state and the registration give it.
    assert!(
        metrics.contains(&format!("encoder=\"{}\"", state.encoder)),
        "{metrics}"
    );
}

#[test]
fn whep_creates_and_deletes_a_session() {
    let d = TestDaemon::start(&["--source", "test", "--size", "640x360"]);
    // The receiver's offer, sent the WHEP way.
    let sdp = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/chrome-offer.sdp"
    ))
    .unwrap();
    let r = d.post("/whep", Some("application/sdp"), sdp.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    let location = r.header("location").expect("Location").to_string();
    assert!(location.starts_with("/whep/"));
    let answer = r.text();
    assert!(
        answer.contains("a=msid:focusd context") && answer.contains("a=msid:focusd source"),
        "{answer}"
    );
    assert!(
        answer.contains("H264/90000"),
        "answers H.264 although VP8 was offered first"
    );
    assert!(!answer.contains("VP8"));
    assert_eq!(d.state().viewers, 1);
    let del = http::request(d.addr, "DELETE", &location, None, b"").unwrap();
    assert_eq!(del.status, 200);
    assert_eq!(d.state().viewers, 0, "deleted session counted out");
    let again = http::request(d.addr, "DELETE", &location, None, b"").unwrap();
    assert_eq!(again.status, 404);
}

#[test]
fn too_many_viewers_get_503() {
    let d = TestDaemon::start_with_config(
        "[webrtc]\nmax_viewers = 1\n",
        &["--source", "test", "--size", "640x360"],
    );
    let first = Receiver::connect(
        d.addr,
        ReceiverOptions {
            decode: false,
            ..Default::default()
        },
    )
    .unwrap();
    let err = Receiver::connect(d.addr, ReceiverOptions::default())
        .err()
        .expect("second viewer refused");
    assert!(
        err.to_string().contains("503") && err.to_string().contains("too many viewers"),
        "{err}"
    );
    assert!(
        first.wait_for(WAIT, |s| s.tracks[0].frames > 5).1,
        "first viewer unaffected"
    );
}

/// A daemon with these `[http]` settings.
fn daemon_with_http(http_section: &str) -> TestDaemon {
    TestDaemon::start_with_config(
        &format!("[http]\n{http_section}"),
        &["--source", "test", "--size", "640x360"],
    )
}

/// Whether the server has closed `s` (reads 0 bytes or fails), waiting at most 10 ms.
fn closed(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn slow_and_silent_connections_are_cut_off_at_the_header_timeout() {
    use std::io::Write;
    let d = daemon_with_http("header_timeout_s = 1\n");
    let start = std::time::Instant::now();
    // 40 slowloris connections trickling a request line a byte every 100 ms, and 10 that
    // never send anything.
    let request = format!("GET /api/state HTTP/1.1\r\nHost: {}\r\nX-Slow: ", d.addr);
    let mut conns: Vec<(std::net::TcpStream, bool, Option<Duration>)> = (0..50)
        .map(|i| {
            let s = std::net::TcpStream::connect(d.addr).unwrap();
            (s, i < 40, None)
        })
        .collect();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(4) && conns.iter().any(|c| c.2.is_none()) {
        for (s, trickles, closed_at) in conns.iter_mut().filter(|c| c.2.is_none()) {
            if *trickles {
                let byte = request.as_bytes().get(sent).copied().unwrap_or(b'x');
                if s.write_all(&[byte]).is_err() {
                    *closed_at = Some(start.elapsed());
                    continue;
                }
            }
            if closed(s) {
                *closed_at = Some(start.elapsed());
            }
        }
        sent += 1;
        // Health answers all along.
        assert_eq!(d.get("/healthz").status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, (_, trickles, closed_at)) in conns.iter().enumerate() {
        let t = closed_at.unwrap_or_else(|| {
            panic!("connection {i} (trickling: {trickles}) still open after 4 s")
        });
        assert!(
            t >= Duration::from_millis(900),
            "connection {i} closed at {t:?}, before the header timeout"
        );
    }
    let last = conns.iter().filter_map(|c| c.2).max().unwrap();
    println!("50 slow or silent connections closed by {last:?} (header timeout 1 s)");
    let timed_out = d
        .get("/metrics")
        .text()
        .lines()
        .find_map(|l| {
            l.strip_prefix("focusd_http_connections_total{outcome=\"timed_out\"} ")
                .map(|v| v.parse::<f64>().unwrap())
        })
        .unwrap();
    assert!(timed_out >= 50.0, "timed out: {timed_out}");
}

#[test]
fn a_body_that_never_finishes_gets_408() {
    let d = daemon_with_http("body_timeout_s = 1\n");
    let head = format!(
        "POST /api/command HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n",
        d.addr,
        http::TEST_TOKEN
    );
    for (what, request) in [
        (
            "a body shorter than its length",
            format!("{head}Content-Length: 100\r\n\r\n{{\"mode\""),
        ),
        (
            "an unfinished chunked body",
            format!("{head}Transfer-Encoding: chunked\r\n\r\n6\r\n{{\"mode\r\n"),
        ),
    ] {
        // Sent, and the connection left open: the client just stops.
        use std::io::{Read, Write};
        let started = std::time::Instant::now();
        let mut s = std::net::TcpStream::connect(d.addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 1024];
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).expect("an answer before 10 s");
            assert!(n > 0, "{what}: closed without an answer");
            raw.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 408"), "{what}: {text}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "{what}: answered at {took:?}"
        );
        println!("{what}: 408 after {took:?}");
    }
    assert_eq!(d.state().mode, Mode::High, "nothing half-sent was applied");
}
