//! aiortc (Python), an independent WebRTC stack with its own SDP and ICE habits, views
//! both tracks through `/offer` and through WHEP, decodes them and reads the stamp; and,
//! as a WHIP endpoint, takes what the daemon publishes through `[whip]`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use focusd_testkit::process::Reaped;

use focusd_testkit::TestDaemon;

/// The venv's Python, which has aiortc.
fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python");
    assert!(
        python.exists(),
        "aiortc missing: run tests/run.sh (it installs it into tests/.venv)"
    );
    python
}

/// Runs tests/aiortc/receiver.py against `d` through `door` and returns its report.
fn view(d: &TestDaemon, door: &str) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg(root.join("tests/aiortc/receiver.py"))
        .arg(format!("http://{}", d.addr))
        .arg(door)
        .env("FOCUSD_TOKEN", focusd_testkit::http::TEST_TOKEN)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let r: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    println!("{door}: {r}");
    assert!(
        r.get("error").is_none(),
        "aiortc via {door}: {}",
        r["error"]
    );
    r
}

fn check_tracks(r: &serde_json::Value) {
    assert_eq!(r["ice"], "completed", "ICE completes: {r}");
    for (track, width, height) in [("context", 320, 180), ("source", 1280, 720)] {
        let t = &r[track];
        assert_eq!(t["frames"], 15, "{track}: frames decoded: {r}");
        assert_eq!(
            (t["width"].as_u64(), t["height"].as_u64()),
            (Some(width), Some(height))
        );
        // Same clock on both ends: what is read from the stamp is the capture time.
        let latency = t["latency_ms_p50"].as_f64().expect("a latency");
        assert!(
            latency < 1000.0,
            "{track}: stamp read as {latency} ms old: {r}"
        );
    }
}

#[test]
fn aiortc_views_both_tracks_through_offer_and_whep() {
    let d = TestDaemon::start(&["--source", "test"]);
    let offer = view(&d, "offer");
    assert_eq!(offer["status"], 200);
    check_tracks(&offer);

    let whep = view(&d, "whep");
    assert_eq!(whep["status"], 201);
    check_tracks(&whep);
    assert_eq!(whep["delete_status"], 200, "DELETE of the WHEP session");
}

/// tests/aiortc/whip_server.py, listening.
struct WhipServer {
    addr: SocketAddr,
    _process: Reaped,
}

const WHIP_TOKEN: &str = "whip-test-token";

impl WhipServer {
    fn start() -> WhipServer {
        let mut child = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aiortc/whip_server.py"))
            .arg(WHIP_TOKEN)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the server's port");
        let port: serde_json::Value = serde_json::from_str(&line).expect("{\"port\": N}");
        WhipServer {
            addr: (
                [127, 0, 0, 1],
                port["port"].as_u64().expect("a port") as u16,
            )
                .into(),
            _process: Reaped(child),
        }
    }

    fn stats(&self) -> serde_json::Value {
        let r = focusd_testkit::http::request(self.addr, "GET", "/stats", None, b"").expect("GET");
        serde_json::from_slice(&r.body).expect("JSON")
    }

    /// Polls the stats until `f` holds (at most 15 s); the last stats and whether it held.
    fn wait_for(&self, f: impl Fn(&serde_json::Value) -> bool) -> (serde_json::Value, bool) {
        let start = Instant::now();
        loop {
            let s = self.stats();
            if f(&s) || start.elapsed() > Duration::from_secs(15) {
                let held = f(&s);
                return (s, held);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn config(&self, token: &str) -> String {
        format!(
            "[whip]\nurl = \"http://{}/whip\"\ntoken = \"{token}\"\n",
            self.addr
        )
    }
}

/// The WHIP door publishes both tracks to an aiortc endpoint, which decodes them at their
/// sizes; the daemon DELETEs the resource when it stops.
#[test]
fn whip_publishes_both_tracks_to_aiortc_and_ends_the_resource_on_stop() {
    let server = WhipServer::start();
    let d = TestDaemon::start_with_config(&server.config(WHIP_TOKEN), &["--source", "test"]);
    let frames = |s: &serde_json::Value, i: usize| {
        s["sessions"][0]["video"][i]["frames"].as_u64().unwrap_or(0)
    };
    let (s, ok) = server.wait_for(|s| frames(s, 0) >= 30 && frames(s, 1) >= 30);
    assert!(ok, "both tracks decoded by the endpoint: {s}");
    assert_eq!(s["sessions"].as_array().map(Vec::len), Some(1), "{s}");
    assert_eq!(s["sessions"][0]["state"], "connected");
    for (i, (width, height)) in [(320, 180), (1280, 720)].into_iter().enumerate() {
        let v = &s["sessions"][0]["video"][i];
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(width), Some(height)),
            "{s}"
        );
    }
    d.stop();
    let (s, ok) = server.wait_for(|s| s["deleted"] == 1);
    assert!(ok, "the resource is deleted at shutdown: {s}");
}

/// The endpoint ends the session from its side: the daemon notices, deletes the old
/// resource and publishes again.
#[test]
fn a_whip_session_the_endpoint_ends_is_published_again() {
    let server = WhipServer::start();
    let _d = TestDaemon::start_with_config(&server.config(WHIP_TOKEN), &["--source", "test"]);
    let frames = |s: &serde_json::Value, n: usize, i: usize| {
        s["sessions"][n]["video"][i]["frames"].as_u64().unwrap_or(0)
    };
    let (s, ok) = server.wait_for(|s| frames(s, 0, 0) >= 10);
    assert!(ok, "published: {s}");
    let r = focusd_testkit::http::request(server.addr, "POST", "/kick/1", None, b"").unwrap();
    assert_eq!(r.status, 200);
    let kicked = Instant::now();
    let (s, ok) = server.wait_for(|s| frames(s, 1, 0) >= 10 && frames(s, 1, 1) >= 10);
    assert!(ok, "a new session after {:?}: {s}", kicked.elapsed());
    assert_eq!(s["deleted"], 1, "the old resource was deleted first: {s}");
    println!("published again {:?} after the kick", kicked.elapsed());
}

/// A wrong token is refused (401); the daemon says so, tries again with backoff, and
/// keeps serving its own viewers meanwhile.
#[test]
fn a_refused_whip_token_is_retried_with_backoff_while_the_daemon_serves() {
    let server = WhipServer::start();
    let d = TestDaemon::start_with_config(&server.config("wrong-token"), &["--source", "test"]);
    let (s, ok) = server.wait_for(|s| s["refused"].as_u64() >= Some(2));
    assert!(ok, "the offer is tried again: {s}");
    assert_eq!(s["sessions"].as_array().map(Vec::len), Some(0));
    // Retried with backoff, not in a loop: a few attempts in a second and a half.
    let before = server.stats()["refused"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(1500));
    let after = server.stats()["refused"].as_u64().unwrap_or(0);
    assert!(after - before <= 2, "{before} -> {after} attempts in 1.5 s");
    let v = view(&d, "whep");
    check_tracks(&v);
}
