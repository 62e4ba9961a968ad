//! The MQTT control plane against a real mosquitto started by each test, with the daemon
//! as a process and, where the video matters, a str0m viewer in this process.

use std::time::{Duration, Instant};

use focusd::state::State;
use focusd::state::command::Mode;
use focusd::state::protocol::{CommandResult, Event, Info, Stats};
use focusd_testkit::TempDir;
use focusd_testkit::broker::{Mosquitto, Watcher};
use focusd_testkit::http;
use focusd_testkit::process::{Binary, DaemonProcess, metric, sigterm};
use focusd_testkit::receiver::{Receiver, ReceiverOptions};

const SECOND: Duration = Duration::from_secs(1);

/// The state JSON in `text` (an MQTT payload or an HTTP body).
fn state(text: impl AsRef<[u8]>) -> State {
    let text = text.as_ref();
    serde_json::from_slice(text)
        .unwrap_or_else(|e| panic!("state JSON {:?}: {e}", String::from_utf8_lossy(text)))
}

/// A daemon on the test source, talking to `broker` as device `id`, with `extra` config.
fn daemon(dir: &TempDir, broker: &Mosquitto, id: &str, extra: &str) -> DaemonProcess {
    let mqtt = format!(
        "url = \"{}\"\nstats_interval_s = 0.5\n{extra}\n",
        broker.url()
    );
    daemon_with(dir, id, &mqtt, "640x360")
}

/// A daemon on the test source at `size`, device `id`, with `mqtt` as its `[mqtt]` table.
fn daemon_with(dir: &TempDir, id: &str, mqtt: &str, size: &str) -> DaemonProcess {
    let conf = dir.path().join(format!("{id}.toml"));
    std::fs::write(&conf, format!("[mqtt]\n{mqtt}")).unwrap();
    DaemonProcess::start(
        &Binary::under_test(env!("CARGO_BIN_EXE_focusd")),
        dir.path(),
        &[
            "--config",
            conf.to_str().unwrap(),
            "--device-id",
            id,
            "--source",
            "test",
            "--size",
            size,
        ],
    )
}

#[test]
fn registration_availability_state_and_stats() {
    let dir = TempDir::new("mqtt-reg");
    let broker = Mosquitto::start(dir.path(), "");
    let d = daemon(&dir, &broker, "cam-a", "name = \"Front door\"");
    // A console that connects later still gets the retained messages.
    std::thread::sleep(Duration::from_millis(300));
    let mut w = Watcher::connect(broker.port, &["focusd/cam-a/#"]);
    let avail = w.wait_for("focusd/cam-a/available", 5 * SECOND, |_| true);
    assert_eq!(avail.payload, "online");
    assert!(avail.retain);
    let info = broker.retained("focusd/cam-a/info", 5 * SECOND);
    let info: Info = serde_json::from_str(&info.payload).expect("info as the contract says");
    assert_eq!(info.id, "cam-a");
    assert_eq!(info.name, "Front door");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.encoder, "openh264");
    assert!(
        !info.encoder_reason.is_empty(),
        "why this encoder: {info:?}"
    );
    let base = format!("http://{}", d.addr);
    assert_eq!(info.signaling_url, format!("{base}/offer"));
    assert_eq!(info.whep_url, format!("{base}/whep"));
    assert_eq!(info.viewer_url, format!("{base}/"));
    assert_eq!(info.tracks.source.width, 640);
    assert_eq!(info.tracks.context.width, 320);
    assert_eq!(info.tracks.source.kbps, 2500);
    assert_eq!(info.tracks.context.fps, 30.0);
    assert_eq!(info.modes, Mode::ALL);
    assert!(!info.board.is_empty());
    let state = broker.retained("focusd/cam-a/state", 5 * SECOND);
    let state: State = serde_json::from_str(&state.payload).expect("the state JSON");
    assert_eq!(state.mode, Mode::High);

    let mut w = Watcher::connect(broker.port, &["focusd/cam-a/stats", "focusd/cam-a/events"]);
    let stats = w.wait_for("focusd/cam-a/stats", 3 * SECOND, |_| true);
    let stats: Stats = serde_json::from_str(&stats.payload).expect("stats as the contract says");
    // The first message may come before the first once-a-second rate (fps 0): the
    // process's memory is there at once. Nobody watches, so nothing is encoded.
    assert!(stats.interval_s > 0.0, "{stats:?}");
    assert!(stats.encode_ms.context.is_none(), "{stats:?}");
    assert!(stats.rss_mb.unwrap() > 1.0, "{stats:?}");
    // The test source's shapes move: the detector reports them as events.
    let event = w.wait_for("focusd/cam-a/events", 5 * SECOND, |_| true);
    let Event::Roi(event) = serde_json::from_str(&event.payload).expect("an event") else {
        panic!("a roi event: {}", event.payload);
    };
    assert!(!event.roi.is_empty());
}

#[test]
fn a_command_over_mqtt_changes_the_video_the_retained_state_and_the_other_doors() {
    let dir = TempDir::new("mqtt-cmd");
    let broker = Mosquitto::start(dir.path(), "");
    let d = daemon(&dir, &broker, "cam-b", "");
    let viewer = Receiver::connect(
        d.addr,
        ReceiverOptions {
            decode: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        viewer
            .wait_for(5 * SECOND, |s| s.tracks.iter().all(|t| t.frames > 5))
            .1,
        "viewer receives both tracks"
    );
    let mut w = Watcher::connect(
        broker.port,
        &["focusd/cam-b/cmd/result", "focusd/cam-b/state"],
    );

    // LOW: the source track stops.
    w.publish("focusd/cam-b/cmd", r#"{"mode":"LOW","id":"m1"}"#);
    let sent = Instant::now();
    let r = w.wait_for("focusd/cam-b/cmd/result", 5 * SECOND, |_| true);
    assert_eq!(
        serde_json::from_str::<CommandResult>(&r.payload).unwrap(),
        CommandResult {
            id: Some("m1".into()),
            ok: true,
            error: None
        }
    );
    w.wait_for("focusd/cam-b/state", 2 * SECOND, |m| {
        state(&m.payload).mode == Mode::Low
    });
    // Frames already in flight may still arrive; then nothing more.
    std::thread::sleep(Duration::from_millis(300));
    let before = viewer.stats().tracks[1].frames;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        viewer.stats().tracks[1].frames,
        before,
        "no source frames in LOW"
    );
    println!("LOW applied within {:?} of the command", sent.elapsed());

    // The other doors see it: HTTP state and the viewer's DataChannel.
    let http_state = http::request(d.addr, "GET", "/api/state", None, b"").unwrap();
    assert_eq!(state(&http_state.body).mode, Mode::Low);
    assert!(
        viewer
            .wait_for(2 * SECOND, |s| s
                .messages
                .iter()
                .any(|m| m.contains("\"LOW\"")))
            .1,
        "DataChannel pushed the state"
    );

    // A change through HTTP is republished over MQTT as retained state.
    let r = http::request(
        d.addr,
        "POST",
        "/api/command",
        Some("application/json"),
        br#"{"mode":"HIGH"}"#,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    w.wait_for("focusd/cam-b/state", 2 * SECOND, |m| {
        state(&m.payload).mode == Mode::High
    });
    let later = broker.retained("focusd/cam-b/state", 2 * SECOND).payload;
    assert_eq!(state(&later).mode, Mode::High, "retained state follows");
    assert!(
        viewer
            .wait_for(3 * SECOND, |s| s.tracks[1].frames > before + 5)
            .1,
        "source resumes in HIGH"
    );
}

#[test]
fn malformed_and_oversized_commands_are_refused_and_change_nothing() {
    let dir = TempDir::new("mqtt-bad");
    let broker = Mosquitto::start(dir.path(), "");
    let mut d = daemon(&dir, &broker, "cam-c", "");
    let mut w = Watcher::connect(
        broker.port,
        &["focusd/cam-c/cmd/result", "focusd/cam-c/state"],
    );
    broker.retained("focusd/cam-c/state", 5 * SECOND);
    let big = format!(
        r#"{{"mode":"HIGH","id":"big","pad":"{}"}}"#,
        "x".repeat(5000)
    );
    for (payload, id, why) in [
        (
            r#"{"mode":"ULTRA","id":"u1"}"#.to_string(),
            Some("u1"),
            "unknown mode",
        ),
        ("{not json".to_string(), None, "not valid JSON"),
        (
            r#"{"hybrid_rect":{"x1":80,"y1":0,"x2":20,"y2":50},"id":"r1"}"#.to_string(),
            Some("r1"),
            "x1 < x2",
        ),
        (
            r#"{"hybrid_rect":{"x1":0,"y1":0,"x2":120,"y2":50},"id":"r2"}"#.to_string(),
            Some("r2"),
            "0 to 100",
        ),
        (big, None, "limit is 4096"),
        (r#"["mode","LOW"]"#.to_string(), None, "JSON object"),
    ] {
        w.publish("focusd/cam-c/cmd", payload.clone());
        let r = w.wait_for("focusd/cam-c/cmd/result", 3 * SECOND, |_| true);
        let r: CommandResult = serde_json::from_str(&r.payload).unwrap();
        assert!(!r.ok, "{payload:.60}");
        assert_eq!(r.id.as_deref(), id, "{payload:.60}");
        let error = r.error.unwrap();
        assert!(error.contains(why), "`{error}` should say {why}");
    }
    let now = state(
        http::request(d.addr, "GET", "/api/state", None, b"")
            .unwrap()
            .body,
    );
    assert_eq!(now.mode, Mode::High);
    assert_eq!(now.hybrid_rect, None);
    assert!(d.child.try_wait().unwrap().is_none(), "still running");
}

#[test]
fn the_picture_doors_open_and_close_over_mqtt_as_over_http() {
    let dir = TempDir::new("mqtt-streams");
    let broker = Mosquitto::start(dir.path(), "");
    let d = daemon(&dir, &broker, "cam-s", "");
    let mut w = Watcher::connect(
        broker.port,
        &["focusd/cam-s/streams", "focusd/cam-s/cmd/result"],
    );
    let doors = |payload: &str| -> serde_json::Value { serde_json::from_str(payload).unwrap() };
    let m = broker.retained("focusd/cam-s/streams", 5 * SECOND);
    assert_eq!(doors(&m.payload)["mjpeg"]["enabled"], true);

    w.publish("focusd/cam-s/streams/set", r#"{"mjpeg":{"enabled":false}}"#);
    let r = w.wait_for("focusd/cam-s/cmd/result", 3 * SECOND, |_| true);
    let r: CommandResult = serde_json::from_str(&r.payload).unwrap();
    assert!(r.ok, "{:?}", r.error);
    w.wait_for("focusd/cam-s/streams", 3 * SECOND, |m| {
        doors(&m.payload)["mjpeg"]["enabled"] == false
    });
    let get = http::request(d.addr, "GET", "/stream.mjpeg", None, b"").unwrap();
    assert_eq!(get.status, 503, "closed over MQTT: {}", get.text());

    // A bad change is refused with the field named; a change over HTTP is published.
    w.publish("focusd/cam-s/streams/set", r#"{"ws_jpeg":{"quality":0}}"#);
    let r = w.wait_for("focusd/cam-s/cmd/result", 3 * SECOND, |_| true);
    let r: CommandResult = serde_json::from_str(&r.payload).unwrap();
    assert!(!r.ok && r.error.unwrap().contains("ws_jpeg.quality"));
    let put = http::request(
        d.addr,
        "PUT",
        "/api/streams",
        Some("application/json"),
        br#"{"ws_frames":{"max_fps":5}}"#,
    )
    .unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
    w.wait_for("focusd/cam-s/streams", 3 * SECOND, |m| {
        doors(&m.payload)["ws_frames"]["max_fps"] == 5.0
    });
}

#[test]
fn megabyte_commands_are_answered_and_never_knock_the_device_offline() {
    let dir = TempDir::new("mqtt-huge");
    let broker = Mosquitto::start(dir.path(), "");
    let d = daemon(&dir, &broker, "cam-h", "");
    let mut w = Watcher::connect(
        broker.port,
        &["focusd/cam-h/cmd/result", "focusd/cam-h/available"],
    );
    w.wait_for("focusd/cam-h/available", 5 * SECOND, |m| {
        m.payload == "online"
    });
    // 1 MiB: received, refused with the reason on cmd/result.
    w.publish("focusd/cam-h/cmd", vec![b' '; 1024 * 1024]);
    let r = w.wait_for("focusd/cam-h/cmd/result", 5 * SECOND, |_| true);
    let r: CommandResult = serde_json::from_str(&r.payload).unwrap();
    assert!(!r.ok);
    let error = r.error.unwrap();
    assert!(error.contains("limit is 4096"), "{error}");
    // 3 MiB: over what the device told the broker it takes; the broker discards it.
    w.publish("focusd/cam-h/cmd", vec![b' '; 3 * 1024 * 1024]);
    // The connection is the same one: a command after them is answered at once.
    w.publish("focusd/cam-h/cmd", r#"{"mode":"LOW","id":"after"}"#);
    let mut seen = Vec::new();
    let end = Instant::now() + 5 * SECOND;
    let answered = loop {
        let Some(m) = w.next(end.saturating_duration_since(Instant::now())) else {
            break None;
        };
        seen.push(format!("{} {:.60}", m.topic, m.payload));
        if m.topic.ends_with("/cmd/result") {
            let r: CommandResult = serde_json::from_str(&m.payload).unwrap();
            if r.id.as_deref() == Some("after") {
                break Some(r);
            }
        }
    };
    let answered = answered.unwrap_or_else(|| panic!("no answer to `after`; saw {seen:#?}"));
    assert!(answered.ok, "{answered:?}");
    assert!(
        !seen.iter().any(|m| m.contains("/available offline")),
        "the device went offline: {seen:#?}"
    );
    assert_eq!(
        metric(d.addr, "focusd_mqtt_connects_total"),
        1.0,
        "never reconnected"
    );
    assert!(!d.log().contains("connection lost"), "{}", d.log());
}

#[test]
fn mode_names_in_any_case_on_every_door_and_unknown_ones_refused_alike() {
    let dir = TempDir::new("mqtt-case");
    let broker = Mosquitto::start(dir.path(), "");
    let d = daemon(&dir, &broker, "cam-k", "");
    let mut w = Watcher::connect(broker.port, &["focusd/cam-k/cmd/result"]);
    let viewer = Receiver::connect(
        d.addr,
        ReceiverOptions {
            decode: false,
            ..Default::default()
        },
    )
    .unwrap();
    let http_mode = |body: &str| {
        http::request(
            d.addr,
            "POST",
            "/api/command",
            Some("application/json"),
            body.as_bytes(),
        )
        .unwrap()
    };
    let mode_now = || {
        state(
            http::request(d.addr, "GET", "/api/state", None, b"")
                .unwrap()
                .body,
        )
        .mode
    };
    // HTTP.
    let r = http_mode(r#"{"mode":"vision"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mode_now(), Mode::Vision);
    // The DataChannel.
    viewer.send(r#"{"mode":"Hybrid","id":"dc"}"#);
    let (stats, answered) = viewer.wait_for(5 * SECOND, |s| {
        s.messages.iter().any(|m| m.contains("\"id\":\"dc\""))
    });
    assert!(answered, "{:?}", stats.messages);
    assert_eq!(mode_now(), Mode::Hybrid);
    // MQTT.
    w.publish("focusd/cam-k/cmd", r#"{"mode":"low","id":"m"}"#);
    let r = w.wait_for("focusd/cam-k/cmd/result", 5 * SECOND, |_| true);
    let r: CommandResult = serde_json::from_str(&r.payload).unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(mode_now(), Mode::Low);
    // An unknown name: the same reason from every door, nothing changed.
    let want = "unknown mode `ultra`: use LOW, HIGH, VISION or HYBRID";
    let r = http_mode(r#"{"mode":"ultra"}"#);
    assert_eq!(r.status, 400);
    assert!(r.text().contains(want), "{}", r.text());
    viewer.send(r#"{"mode":"ultra"}"#);
    let (stats, refused) =
        viewer.wait_for(5 * SECOND, |s| s.messages.iter().any(|m| m.contains(want)));
    assert!(refused, "{:?}", stats.messages);
    w.publish("focusd/cam-k/cmd", r#"{"mode":"ultra"}"#);
    let r = w.wait_for("focusd/cam-k/cmd/result", 5 * SECOND, |_| true);
    let r: CommandResult = serde_json::from_str(&r.payload).unwrap();
    assert_eq!(r.error.as_deref(), Some(want));
    assert_eq!(mode_now(), Mode::Low);
}

#[test]
fn sigkill_leaves_the_last_will_and_sigterm_says_stopped() {
    let dir = TempDir::new("mqtt-will");
    let broker = Mosquitto::start(dir.path(), "");
    let mut w = Watcher::connect(broker.port, &["focusd/+/available"]);

    let mut killed = daemon(&dir, &broker, "cam-k", "");
    w.wait_for("focusd/cam-k/available", 5 * SECOND, |m| {
        m.payload == "online"
    });
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let will = w.wait_for("focusd/cam-k/available", 3 * SECOND, |m| {
        m.payload != "online"
    });
    assert_eq!(
        will.payload, "offline",
        "the broker published the last will"
    );

    let mut stopped = daemon(&dir, &broker, "cam-t", "");
    w.wait_for("focusd/cam-t/available", 5 * SECOND, |m| {
        m.payload == "online"
    });
    let (status, took) = stopped.terminate(5 * SECOND);
    assert!(status.success(), "{status:?}: {}", stopped.log());
    assert!(took < 2 * SECOND, "SIGTERM to exit took {took:?}");
    let last = w.wait_for("focusd/cam-t/available", 2 * SECOND, |m| {
        m.payload != "online"
    });
    assert_eq!(last.payload, "stopped", "clean exit, not the will");
    // And it stays retained as `stopped`.
    let retained = broker
        .retained("focusd/cam-t/available", 2 * SECOND)
        .payload;
    assert_eq!(retained, "stopped");
}

#[test]
fn the_broker_restarting_loses_no_frames_and_everything_is_republished() {
    let dir = TempDir::new("mqtt-restart");
    let mut broker = Mosquitto::start(dir.path(), "");
    let d = daemon(&dir, &broker, "cam-r", "");
    let viewer = Receiver::connect(
        d.addr,
        ReceiverOptions {
            decode: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(viewer.wait_for(5 * SECOND, |s| s.tracks[0].frames > 10).1);
    Watcher::connect(broker.port, &["focusd/cam-r/available"]).wait_for(
        "focusd/cam-r/available",
        5 * SECOND,
        |m| m.payload == "online",
    );
    let connects = metric(d.addr, "focusd_mqtt_connects_total");

    // Count frames over a window that spans the outage.
    let enc0 = metric(d.addr, "focusd_frames_encoded_total{track=\"context\"}");
    let got0 = viewer.stats().tracks[0].frames;
    broker.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let health = http::request(d.addr, "GET", "/api/state", None, b"").unwrap();
    assert_eq!(health.status, 200, "HTTP serves while the broker is gone");
    broker.restart();
    let back = Instant::now();
    // The new broker knows nothing: the daemon must republish what is retained.
    let mut w = Watcher::connect(broker.port, &["focusd/cam-r/#"]);
    w.wait_for("focusd/cam-r/available", 10 * SECOND, |m| {
        m.payload == "online"
    });
    w.wait_for("focusd/cam-r/info", 2 * SECOND, |_| true);
    w.wait_for("focusd/cam-r/state", 2 * SECOND, |_| true);
    println!(
        "republished {:?} after the broker came back",
        back.elapsed()
    );
    assert!(metric(d.addr, "focusd_mqtt_connects_total") > connects);
    std::thread::sleep(Duration::from_millis(300));
    let enc1 = metric(d.addr, "focusd_frames_encoded_total{track=\"context\"}");
    let got1 = viewer.stats().tracks[0].frames;
    let (encoded, received) = (enc1 - enc0, (got1 - got0) as f64);
    println!("during the outage window: {encoded} encoded, {received} received");
    assert!(encoded > 30.0, "frames kept flowing: {encoded}");
    // Up to a couple of frames may be in flight at either end of the window.
    assert!(
        (encoded - received).abs() <= 3.0,
        "viewer lost frames: encoded {encoded}, received {received}"
    );
    let dropped = metric(
        d.addr,
        "focusd_frames_dropped_total{track=\"context\",reason=\"hub_busy\"}",
    );
    assert_eq!(dropped, 0.0, "no frame dropped for the hub");
}

/// Runs `focusd ctl` with `args`; (exit code, stdout, stderr).
fn ctl(args: &[&str]) -> (i32, String, String) {
    let out = Binary::under_test(env!("CARGO_BIN_EXE_focusd"))
        .command()
        .arg("ctl")
        .args(args)
        .output()
        .expect("focusd ctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ctl_lists_devices_and_changes_them_waiting_for_the_result() {
    let dir = TempDir::new("mqtt-ctl");
    let broker = Mosquitto::start(dir.path(), "");
    let d = daemon(&dir, &broker, "cam-x", "");
    let url = broker.url();
    let b = ["--broker", url.as_str()];
    Watcher::connect(broker.port, &["focusd/cam-x/info"]).wait_for(
        "focusd/cam-x/info",
        5 * SECOND,
        |_| true,
    );

    let (code, out, err) = ctl(&[&b[..], &["list"]].concat());
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("cam-x "))
        .unwrap_or_else(|| panic!("cam-x listed: {out}"));
    assert!(
        row.contains("online") && row.contains(&format!("http://{}/", d.addr)),
        "{row}"
    );

    let (code, out, err) = ctl(&[&b[..], &["mode", "cam-x", "vision"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("cam-x: ok"), "{out}");
    let now = state(
        http::request(d.addr, "GET", "/api/state", None, b"")
            .unwrap()
            .body,
    );
    assert_eq!(now.mode, Mode::Vision);

    let (code, _, err) = ctl(&[&b[..], &["rect", "cam-x", "10", "20", "60", "70"]].concat());
    assert_eq!(code, 0, "{err}");
    let now = state(
        http::request(d.addr, "GET", "/api/state", None, b"")
            .unwrap()
            .body,
    );
    assert_eq!(now.hybrid_rect.map(|r| r.x2), Some(60.0));

    // watch: live lines `topic payload`, starting with what is retained.
    let mut watch = Binary::under_test(env!("CARGO_BIN_EXE_focusd"))
        .command()
        .args(["ctl", "--broker", url.as_str(), "watch", "cam-x"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    let mut seen = std::collections::BTreeSet::new();
    for line in lines.map_while(Result::ok) {
        let topic = line.split(' ').next().unwrap_or("").to_string();
        if topic == "focusd/cam-x/state" {
            assert!(
                line.contains("\"mode\":\"HYBRID\"") || line.contains("\"mode\":\"VISION\""),
                "{line}"
            );
        }
        seen.insert(topic);
        if seen.contains("focusd/cam-x/stats") && seen.contains("focusd/cam-x/state") {
            break;
        }
    }
    sigterm(watch.id());
    let status = watch.wait().unwrap();
    assert!(seen.contains("focusd/cam-x/available"), "{seen:?}");
    assert_eq!(status.code(), Some(0), "watch ends cleanly on SIGTERM");

    // Refused before sending: an inverted rectangle, an unknown mode (exit 2).
    let (code, _, err) = ctl(&[&b[..], &["rect", "cam-x", "60", "0", "50", "50"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("x1 < x2"), "{err}");
    let (code, _, err) = ctl(&[&b[..], &["mode", "cam-x", "ULTRA"]].concat());
    assert_eq!(code, 2, "{err}");
    // No answer: a device that does not exist (exit 1, says so).
    let (code, _, err) = ctl(&[&b[..], &["--timeout", "0.5", "mode", "nobody", "HIGH"]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no answer from `nobody`"), "{err}");
    // No broker (exit 1), no broker given (exit 2).
    let (code, _, err) = ctl(&["--broker", "mqtt://127.0.0.1:1", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the broker"), "{err}");
    let (code, _, err) = ctl(&["list"]);
    assert_eq!(code, 2, "{err}");
}

/// `ctl list`, `watch` and `mode` end with status 0 and say nothing when the reader of
/// their stdout goes away: before they print, and after the first byte (20 times each;
/// the pipe tests of the other commands repeat it 200 times). `watch` stops at its next
/// line instead of running on.
#[test]
fn ctl_ends_quietly_when_the_reader_of_its_stdout_goes_away() {
    use focusd_testkit::process::ReaderGone;
    let dir = TempDir::new("mqtt-ctl-pipe");
    let broker = Mosquitto::start(dir.path(), "");
    let _d = daemon(&dir, &broker, "cam-p", "");
    Watcher::connect(broker.port, &["focusd/cam-p/info"]).wait_for(
        "focusd/cam-p/info",
        5 * SECOND,
        |_| true,
    );
    let bin = Binary::under_test(env!("CARGO_BIN_EXE_focusd"));
    let url = broker.url();
    let runs = if bin.is_emulated() { 2 } else { 20 };
    for action in [
        &["list"][..],
        &["watch"],
        &["watch", "cam-p"],
        &["mode", "cam-p", "HIGH"],
    ] {
        let args = [&["ctl", "--broker", url.as_str()][..], action].concat();
        for how in [ReaderGone::BeforeStart, ReaderGone::AfterFirstByte] {
            for run in 0..runs {
                let started = Instant::now();
                let ended = bin.run_reader_gone(&args, how);
                assert!(
                    ended.ended_quietly(),
                    "{action:?} {how:?} run {run}: {ended:?}"
                );
                // Retained messages follow each other at once: watch's next line comes
                // within the broker's round trip, not at the next stats interval.
                assert!(
                    started.elapsed() < bin.patience(5 * SECOND),
                    "{action:?} ran on"
                );
            }
        }
    }
}

/// The MQTT task panics (the test hook injects it 1 s into its first run): it is counted,
/// restarted with a new connection that publishes the registration again, and obeys
/// commands as before.
#[test]
fn an_mqtt_task_that_panics_reconnects_and_obeys() {
    let dir = TempDir::new("mqtt-panic");
    let broker = Mosquitto::start(dir.path(), "");
    let mut w = Watcher::connect(broker.port, &["focusd/cam-r/#"]);
    let conf = dir.path().join("cam-r.toml");
    std::fs::write(&conf, format!("[mqtt]\nurl = \"{}\"\n", broker.url())).unwrap();
    let bin =
        Binary::under_test(env!("CARGO_BIN_EXE_focusd")).with_env("FOCUSD_TEST_PANIC", "mqtt@1");
    let d = DaemonProcess::start(
        &bin,
        dir.path(),
        &[
            "--config",
            conf.to_str().unwrap(),
            "--device-id",
            "cam-r",
            "--source",
            "test",
            "--size",
            "320x240",
        ],
    );
    let patience = bin.patience(5 * SECOND);
    w.wait_for("focusd/cam-r/info", patience, |_| true);
    // Registered twice: once per connection.
    w.wait_for("focusd/cam-r/info", patience + 2 * SECOND, |_| true);
    assert_eq!(
        metric(d.addr, "focusd_task_panics_total{task=\"mqtt\"}"),
        1.0
    );
    assert!(metric(d.addr, "focusd_mqtt_connects_total") >= 2.0);
    w.publish("focusd/cam-r/cmd", r#"{"mode":"LOW","id":"after-panic"}"#);
    w.wait_for("focusd/cam-r/cmd/result", patience, |m| {
        m.payload.contains("after-panic") && m.payload.contains("\"ok\":true")
    });
    let now = state(
        http::request(d.addr, "GET", "/api/state", None, b"")
            .unwrap()
            .body,
    );
    assert_eq!(now.mode, Mode::Low);
}

#[test]
fn mqtts_with_a_private_ca_and_a_client_certificate() {
    let dir = TempDir::new("mqtt-tls");
    let (ca, server_cert, server_key) = focusd_testkit::pki::issue(dir.path(), "server", None);
    let ca_key = dir.path().join("server-ca.key");
    let (_, client_cert, client_key) =
        focusd_testkit::pki::issue(dir.path(), "client", Some((&ca, &ca_key)));
    let tls_port = focusd_testkit::free_port();
    let broker = Mosquitto::start(
        dir.path(),
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            ca.display(),
            server_cert.display(),
            server_key.display()
        ),
    );
    let mut w = Watcher::connect(broker.port, &["focusd/+/available"]);
    let tls = |id: &str, ca: &std::path::Path| {
        let mqtt = format!(
            "url = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            ca.display(),
            client_cert.display(),
            client_key.display()
        );
        daemon_with(&dir, id, &mqtt, "320x240")
    };
    let good = tls("cam-tls", &ca);
    w.wait_for("focusd/cam-tls/available", 5 * SECOND, |m| {
        m.payload == "online"
    });

    // A broker certificate from another CA is refused; video and HTTP carry on.
    let (other_ca, _, _) = focusd_testkit::pki::issue(dir.path(), "other", None);
    let bad = tls("cam-untrusted", &other_ca);
    assert!(
        w.next(2 * SECOND)
            .is_none_or(|m| m.topic != "focusd/cam-untrusted/available"),
        "an untrusted broker must not be used"
    );
    let health = http::request(bad.addr, "GET", "/healthz", None, b"").unwrap();
    assert_eq!(health.status, 200);
    assert!(bad.log().contains("MQTT: connection lost"), "{}", bad.log());
    drop(good);

    // A file that is not PEM is a configuration error: exit 2, the key named.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let conf = dir.path().join("junk.toml");
    std::fs::write(
        &conf,
        format!(
            "[mqtt]\nurl = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{}\"\n",
            junk.display()
        ),
    )
    .unwrap();
    let out = Binary::under_test(env!("CARGO_BIN_EXE_focusd"))
        .command()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--source",
            "test",
            "--config",
            conf.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqtt.ca_file"));
}
