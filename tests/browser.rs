//! Headless Chromium (Debian's package, driven by playwright-core) loads the viewer page,
//! decodes both tracks, switches mode through the page, and the composite is checked.

use std::path::Path;
use std::process::Command;

use focusd_testkit::TestDaemon;

#[test]
fn chromium_views_both_tracks_and_controls_the_mode() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/node_modules/playwright-core").exists(),
        "playwright-core missing: run tests/run.sh (it installs it) or `npm ci --prefix tests`"
    );
    let d = TestDaemon::start(&["--source", "test"]);
    let shot = std::env::temp_dir().join(format!("focusd-composite-{}.png", std::process::id()));
    let out = Command::new("node")
        .arg(root.join("tests/browser/viewer.mjs"))
        // The link `focusd token` prints: the page takes the token from its fragment.
        .arg(format!(
            "http://{}/#token={}",
            d.addr,
            focusd_testkit::http::TEST_TOKEN
        ))
        .arg(&shot)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let r: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    assert!(
        r.get("error").is_none(),
        "browser script failed: {}",
        r["error"]
    );

    for track in ["context", "source"] {
        assert!(
            r["initial"][track]["framesDecoded"].as_u64().unwrap_or(0) > 0,
            "{track} decodes in Chromium"
        );
    }
    assert_eq!(r["initial"]["context"]["width"], 320);
    assert!(
        !r["url_after_load"]
            .as_str()
            .unwrap_or("token")
            .contains("token"),
        "the page takes the token out of its address bar: {}",
        r["url_after_load"]
    );
    assert_eq!(r["initial"]["source"]["width"], 1280);
    assert!(
        r["codecs"].to_string().contains("H264"),
        "H.264 negotiated: {}",
        r["codecs"]
    );
    assert_eq!(
        r["server_mode_after_click"], "VISION",
        "the page's button changed the daemon's mode"
    );
    assert!(
        r["after_vision"]["source"]["framesDecoded"].as_u64()
            > r["initial"]["source"]["framesDecoded"].as_u64(),
        "source keeps decoding in VISION"
    );
    let shot_stats = &r["screenshot"];
    assert!(
        shot_stats["width"].as_u64().unwrap() >= 640,
        "screenshot has the composite's size"
    );
    assert!(
        shot_stats["stddev"].as_f64().unwrap() > 15.0,
        "composite is a picture, not a flat fill: {shot_stats}"
    );
    assert!(
        shot_stats["mean"].as_f64().unwrap() > 30.0,
        "composite is not black: the context shows through: {shot_stats}"
    );
    assert!(
        shot_stats["bright_share"].as_f64().unwrap() > 0.01,
        "the bright shapes are visible: {shot_stats}"
    );
    let rect = &r["hybrid_rect"];
    assert!(
        (rect["x1"].as_f64().unwrap() - 10.0).abs() < 3.0
            && (rect["y2"].as_f64().unwrap() - 60.0).abs() < 3.0,
        "drawn rectangle: {rect}"
    );
    assert!(
        r["low_kbps"]["source"].as_f64().unwrap() < 5.0,
        "LOW: the page shows ~0 kbps source: {}",
        r["low_kbps"]
    );
    assert!(
        r["low_kbps"]["context"].as_f64().unwrap() > 20.0,
        "context still flowing: {}",
        r["low_kbps"]
    );
    assert!(r["status_text"].as_str().unwrap().contains("connected"));
    assert!(shot.exists());
    println!("screenshot: {}", shot.display());
}
