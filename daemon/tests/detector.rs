//! The ROI detector as configured: a model that cannot be used is named in one clear log
//! line and the daemon keeps serving with the motion detector in its place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use focusd_testkit::TempDir;
use focusd_testkit::process::{Binary, DaemonProcess, metric};
use focusd_testkit::wait::{eventually, seen};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/testdata")
        .join(name)
}

fn config(dir: &Path, roi: &str) -> String {
    let path = dir.join("focusd.toml");
    std::fs::write(&path, format!("[roi]\n{roi}\n")).unwrap();
    path.to_string_lossy().into_owned()
}

fn state(addr: std::net::SocketAddr) -> serde_json::Value {
    let r = focusd_testkit::http::request(addr, "GET", "/api/state", None, b"").expect("GET state");
    serde_json::from_slice(&r.body).expect("state JSON")
}

/// Starts the daemon on the test pattern with `model` and checks the fallback.
fn falls_back_to_motion(model: &Path, reason: &str) {
    let bin = Binary::under_test(env!("CARGO_BIN_EXE_focusd"));
    let dir = TempDir::new("detector");
    let cfg = config(
        dir.path(),
        &format!("kind = \"model\"\nmodel = \"{}\"", model.display()),
    );
    let d = DaemonProcess::start(&bin, dir.path(), &["--config", &cfg, "--source", "test"]);
    let log = d.wait_for_log("falling back to motion detection", Duration::from_secs(20));
    let line = log
        .lines()
        .find(|l| l.contains("falling back"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&model.display().to_string()),
        "names the model: {line}"
    );
    assert!(line.contains(reason), "says why ({reason}): {line}");
    assert_eq!(metric(d.addr, "focusd_detector_fallback_total"), 1.0);
    // Motion runs instead: the test pattern's moving shapes become ROI boxes.
    let roi = eventually(
        "a motion ROI after the fallback",
        Duration::from_secs(10),
        || {
            let roi = state(d.addr)["roi"].clone();
            match roi.as_array().is_some_and(|r| !r.is_empty()) {
                true => Ok(roi),
                false => Err(roi.to_string()),
            }
        },
    );
    assert_eq!(roi[0]["label"], "motion");
    let health = focusd_testkit::http::request(d.addr, "GET", "/healthz", None, b"").unwrap();
    assert_eq!(health.status, 200);
}

#[test]
fn corrupt_model_falls_back_to_motion() {
    let dir = TempDir::new("corrupt-model");
    let path = dir.path().join("broken.onnx");
    // The start of a real model, cut off: what an interrupted copy leaves.
    let real = std::fs::read(testdata("wrong_input.onnx")).unwrap();
    std::fs::write(&path, &real[..real.len() / 2]).unwrap();
    falls_back_to_motion(&path, "not a valid ONNX model");
}

#[test]
fn model_with_an_unsupported_operator_falls_back_to_motion() {
    falls_back_to_motion(
        &testdata("unsupported_op.onnx"),
        "unsupported operator FancyUpsample",
    );
}

#[test]
fn model_with_the_wrong_input_shape_falls_back_to_motion() {
    falls_back_to_motion(&testdata("wrong_input.onnx"), "is not one image");
}

#[test]
fn missing_model_file_falls_back_to_motion() {
    falls_back_to_motion(Path::new("/nonexistent/model.onnx"), "cannot read");
}

#[test]
fn labels_the_model_does_not_know_fall_back_to_motion() {
    let bin = Binary::under_test(env!("CARGO_BIN_EXE_focusd"));
    let dir = TempDir::new("detector-labels");
    let cfg = config(dir.path(), "kind = \"model\"\nlabels = [\"toaster\"]");
    let d = DaemonProcess::start(&bin, dir.path(), &["--config", &cfg, "--source", "test"]);
    let log = d.wait_for_log("falling back to motion detection", Duration::from_secs(20));
    assert!(
        log.contains(r#"none of the labels ["toaster"] is among its classes ["???", "Bicycle""#),
        "{log}"
    );
    assert_eq!(metric(d.addr, "focusd_detector_fallback_total"), 1.0);
}

#[test]
fn default_model_runs_and_reports_its_load_time() {
    let bin = Binary::under_test(env!("CARGO_BIN_EXE_focusd"));
    let dir = TempDir::new("detector-default");
    let cfg = config(dir.path(), "kind = \"model\"");
    let d = DaemonProcess::start(&bin, dir.path(), &["--config", &cfg, "--source", "test"]);
    d.wait_for_log("ROI detector: model", Duration::from_secs(20));
    eventually("the model detector runs", Duration::from_secs(10), || {
        let runs = metric(d.addr, "focusd_detector_runs_total");
        seen(runs >= 3.0, runs)
    });
    assert!(metric(d.addr, "focusd_detector_busy_microseconds_total") > 0.0);
    assert_eq!(metric(d.addr, "focusd_detector_fallback_total"), 0.0);
    // The test pattern's shapes are not people: motion proposes, the model finds no one.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(d.addr)["roi"], serde_json::json!([]));
}

#[test]
fn bad_detector_settings_exit_2_naming_the_key() {
    let dir = TempDir::new("detector-config");
    for (roi, key) in [
        ("kind = \"yolo\"", "roi.kind"),
        ("kind = \"model\"\nthreshold = 2.0", "roi.threshold"),
        ("kind = \"model\"\nlabels = []", "roi.labels"),
        ("model = \"/tmp/x.onnx\"", "roi.model"),
    ] {
        let cfg = config(dir.path(), roi);
        let out = Binary::under_test(env!("CARGO_BIN_EXE_focusd"))
            .command()
            .args([
                "--config",
                &cfg,
                "--source",
                "test",
                "--listen",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{roi}: {err}");
        assert!(err.contains(key), "{roi}: {err}");
    }
}
