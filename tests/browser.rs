//! Headless Chromium (Debian's package, driven by playwright-core) loads the viewer page,
//! decodes both tracks, switches mode through the page, and the composite is checked.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use focusd_testkit::TestDaemon;
use focusd_testkit::netem::{Netem, Shape};

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
    assert!(
        r["boxes_shown"]["drawn"].as_u64() > Some(0)
            && r["boxes_shown"]["drawn"] == r["boxes_shown"]["roi"],
        "the page draws each ROI box: {}",
        r["boxes_shown"]
    );
    assert_eq!(
        r["boxes_hidden"]["drawn"], 0,
        "the toggle hides them: {}",
        r["boxes_hidden"]
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

/// The page through the daemon going away and coming back: it says why it reconnects and
/// when it tries next, waits twice as long after each failed attempt (the daemon stays
/// away for two), and shows video again from the new daemon, with that daemon's state
/// (the mode lives in the daemon). It also hands the configured ICE servers to Chromium.
#[test]
fn the_page_reconnects_when_the_daemon_comes_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let listen = format!("127.0.0.1:{}", focusd_testkit::free_port());
    // VISION, not the default HIGH: the page shows the state the new daemon sends it.
    let config = "[control]\nmode = \"VISION\"\n\n[[webrtc.ice_servers]]\nurls = [\"stun:stun.example.org:3478\"]\n";
    let args = ["--source", "test", "--size", "640x360", "--listen", &listen];
    let d = TestDaemon::start_with_config(config, &args);
    let mut node = Command::new("node")
        .arg(root.join("tests/browser/reconnect.mjs"))
        .arg(format!(
            "http://{listen}/#token={}",
            focusd_testkit::http::TEST_TOKEN
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    assert_eq!(first.trim(), "connected", "{first}");
    drop(d);
    // Down until the page has failed twice: its third attempt is announced.
    let mut messages = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        let third = line.contains("(attempt 3)");
        messages.push(line);
        if third {
            break;
        }
    }
    let d = TestDaemon::start_with_config(config, &args);
    let last = lines.map_while(Result::ok).last().unwrap_or_default();
    // Each failed attempt doubles the wait (0.5 s, 1 s, 2 s).
    for (attempt, wait) in [(1, "0.5 s"), (2, "1.0 s"), (3, "2.0 s")] {
        assert!(
            messages
                .iter()
                .any(|m| m.contains(&format!("reconnecting in {wait} (attempt {attempt})"))),
            "attempt {attempt} announced after {wait}: {messages:?}"
        );
    }
    let _ = node.wait();
    let r: serde_json::Value =
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"));
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    assert!(r.get("error").is_none(), "{}", r["error"]);
    assert_eq!(
        r["video_again"], true,
        "video again from the new daemon: {r}"
    );
    assert!(
        r["statuses"].to_string().contains("reconnecting"),
        "the page said it was reconnecting: {r}"
    );
    assert!(
        r["messages"].to_string().contains("reconnecting in"),
        "and why, and when it tries next: {r}"
    );
    assert_eq!(r["mode"], "VISION");
    assert_eq!(
        r["ice_servers"][0]["urls"][0], "stun:stun.example.org:3478",
        "the configured ICE servers reach the browser: {r}"
    );
    assert_eq!(d.state().viewers, 1, "one session: the page's new one");
}

/// The relay door end to end: the daemon sends both tracks as RTP to a real Janus
/// (Debian's), whose Streaming plugin serves two Chromium viewers; each decodes both
/// tracks at their sizes and gets the state on the data stream, while the daemon sends
/// each frame once and has no WebRTC viewer of its own.
#[test]
fn chromium_views_both_tracks_through_janus_while_the_board_sends_each_frame_once() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let janus = focusd_testkit::janus::Janus::start().expect("janus starts");
    let d = TestDaemon::start_with_config(&janus.relay_config(), &["--source", "test"]);
    let out = Command::new("node")
        .arg(root.join("tests/browser/janus.mjs"))
        .arg(&janus.api)
        .arg(focusd_testkit::janus::MOUNTPOINT.to_string())
        .arg("2")
        .arg("2")
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {stdout}\n{}\njanus: {}",
                String::from_utf8_lossy(&out.stderr),
                janus.log()
            )
        });
    assert!(r.get("error").is_none(), "{r}\njanus: {}", janus.log());
    let viewers = r["viewers"].as_array().expect("viewers");
    assert_eq!(viewers.len(), 2);
    for v in viewers {
        for (mid, width) in [("context", 320), ("source", 1280)] {
            let now = v["video"][mid]["framesDecoded"].as_u64().unwrap_or(0);
            let before = v["before"][mid]["framesDecoded"].as_u64().unwrap_or(0);
            assert!(
                now >= before + 30,
                "{mid} decodes on: {before} -> {now}: {v}"
            );
            assert_eq!(v["video"][mid]["width"], width, "{mid}: {v}");
        }
        let text = v["state"]
            .as_str()
            .unwrap_or_else(|| panic!("no state on the data stream: {v}\njanus: {}", janus.log()));
        let state: serde_json::Value = serde_json::from_str(text).expect("the state is JSON");
        assert_eq!(state["type"], "state", "{state}");
        assert_eq!(state["mode"], "HIGH", "{state}");
    }
    let metric = |name: &str| d.metric(name);
    // Both counters from one page: two requests would be frames apart.
    let page = focusd_testkit::process::scrape(d.addr).unwrap();
    for track in ["context", "source"] {
        let value = |name: &str| {
            focusd_testkit::process::metric_in(&page, &format!("{name}{{track=\"{track}\"}}"))
                .unwrap_or_else(|| panic!("{name} for {track} in /metrics"))
        };
        let encoded = value("focusd_frames_encoded_total");
        let relayed = value("focusd_relay_frames_total");
        // Each encoded frame once (a frame may be between the two counters, either way as
        // the page is written).
        assert!(
            relayed <= encoded + 1.0 && relayed + 3.0 >= encoded,
            "{track}: {relayed} frames relayed of {encoded} encoded"
        );
    }
    assert_eq!(
        metric("focusd_viewers"),
        0.0,
        "no WebRTC viewer on the board"
    );
    // Janus asks for a keyframe when a viewer starts, over the RTCP port it learnt from
    // the daemon's sender reports.
    assert!(
        metric("focusd_relay_keyframe_requests_total{track=\"source\"}") >= 1.0,
        "keyframe requests come back from Janus"
    );
}

/// Chromium reaches the daemon only through a 1 Mbit/s link (the kit's netem): its own
/// bandwidth estimate brings the encoders under the cap, and it keeps decoding both
/// tracks.
#[test]
fn chromium_behind_a_1_mbit_link_keeps_both_tracks_and_the_encoders_follow_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let udp_port = focusd_testkit::free_udp_pair();
    let link = Netem::start(Shape::capped(1000)).expect("the link");
    link.set_upstream(([127, 0, 0, 1], udp_port).into());
    let d = TestDaemon::start_with_config(
        &format!("[webrtc]\nudp_port = {udp_port}\n"),
        &["--source", "test"],
    );
    let out = Command::new("node")
        .arg(root.join("tests/browser/impaired.mjs"))
        .arg(format!("http://{}/", d.addr))
        .arg("127.0.0.1")
        .arg(link.addr().port().to_string())
        .arg("9")
        .env("FOCUSD_TOKEN", focusd_testkit::http::TEST_TOKEN)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    println!("{r}");
    assert!(r.get("error").is_none(), "{r}");
    let targets = d.metric("focusd_encoder_target_kbps{track=\"context\"}")
        + d.metric("focusd_encoder_target_kbps{track=\"source\"}");
    println!(
        "encoder targets: {targets} kbit/s; link: {:?}",
        link.counts()
    );
    assert!(
        targets < 1000.0,
        "the encoders follow Chromium's estimate: {targets} kbit/s"
    );
    for (track, width, frames) in [("context", 320, 60), ("source", 1280, 45)] {
        let t = &r["tracks"][track];
        assert_eq!(t["width"], width, "{track}: {r}");
        assert!(
            t["lastFrames"].as_u64() >= Some(frames),
            "{track} decodes through the link (of 90 in the last 3 s): {r}"
        );
    }
}

/// The median of `values` (an array of numbers in `r`).
fn median(values: &serde_json::Value) -> f64 {
    let mut v: Vec<f64> = values
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[test]
fn chromium_shows_mjpeg_and_both_websockets_and_a_slow_page_gets_lighter_pictures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = TestDaemon::start(&["--source", "test", "--size", "640x360"]);
    let out = Command::new("node")
        .arg(root.join("tests/browser/pictures.mjs"))
        .arg(format!("http://{}", d.addr))
        .arg("3")
        .env("FOCUSD_TOKEN", focusd_testkit::http::TEST_TOKEN)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(r.get("error").is_none(), "{r}");
    let (m, j, slow, f) = (
        &r["mjpeg"],
        &r["ws_jpeg"],
        &r["ws_jpeg_slow"],
        &r["ws_frames"],
    );
    println!(
        "Chromium, 3 s each: MJPEG {} pictures, {} ms old (median); /ws/jpeg {} frames, {} ms; \
         slow page: {} frames, qualities {}; /ws/frames {} frames, {} ms",
        m["pictures"],
        median(&m["ages"]),
        j["frames"],
        median(&j["ages"]),
        slow["frames"],
        slow["qualities"],
        f["frames"],
        median(&f["ages"])
    );
    // MJPEG at 10 a second, fresh.
    assert_eq!(
        (m["width"].as_u64(), m["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(m["pictures"].as_u64() >= Some(15), "{m}");
    assert!(median(&m["ages"]) < 500.0, "{m}");
    // JPEG over the WebSocket: near the camera's rate, each picture's stamp its meta's.
    assert!(j["error"].is_null(), "{j}");
    assert!(j["frames"].as_u64() >= Some(60), "{j}");
    assert!(median(&j["ages"]) < 300.0, "{j}");
    // A page that draws 10 a second is sent lighter pictures: quality steps down.
    assert!(slow["error"].is_null(), "{slow}");
    let qualities: Vec<u64> = slow["qualities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q.as_u64())
        .collect();
    assert_eq!(qualities.first(), Some(&80), "{slow}");
    assert!(
        qualities.last().is_some_and(|q| *q <= 70),
        "quality went down for a slow page: {qualities:?}"
    );
    // Raw planes: the context's I420, every byte there, the stamp in the Y plane.
    assert!(f["error"].is_null(), "{f}");
    assert_eq!(f["format"], "I420");
    assert_eq!(f["sizes"][0], serde_json::json!([320, 180]));
    assert!(f["frames"].as_u64() >= Some(60), "{f}");
    assert!(median(&f["ages"]) < 300.0, "{f}");
}
