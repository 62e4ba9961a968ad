//! aiortc (Python), an independent WebRTC stack with its own SDP and ICE habits, views
//! both tracks through `/offer` and through WHEP, decodes them and reads the stamp.

use std::path::Path;
use std::process::Command;

use focusd_testkit::TestDaemon;

/// Runs tests/aiortc/receiver.py against `d` through `door` and returns its report.
fn view(d: &TestDaemon, door: &str) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("tests/.venv/bin/python");
    assert!(
        python.exists(),
        "aiortc missing: run tests/run.sh (it installs it into tests/.venv)"
    );
    let out = Command::new(python)
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
