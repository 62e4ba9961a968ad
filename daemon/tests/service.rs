//! The binary under a service manager: the sd_notify protocol spoken to a real unix
//! datagram socket made by the test, with a real pipe as the camera, so the pipeline can
//! be made to stall and recover.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use focusd_testkit::TempDir;
use focusd_testkit::http;
use focusd_testkit::notify::{NotifySocket, pings, served_addr};
use focusd_testkit::process::{Binary, Reaped, metric, sigterm};
use focusd_testkit::wait::{eventually, seen};

/// Writer of a live y4m stream into a FIFO, which can be paused (the camera stalls).
struct Camera {
    /// 0 = flowing, 1 = stalled, 2 = finished.
    state: Arc<AtomicU8>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const FLOWING: u8 = 0;
const STALLED: u8 = 1;
const FINISHED: u8 = 2;

impl Camera {
    fn start(fifo: &Path, fps: u32) -> Camera {
        let made = std::process::Command::new("mkfifo")
            .arg(fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo");
        let state = Arc::new(AtomicU8::new(FLOWING));
        let thread = {
            let (fifo, state) = (fifo.to_owned(), state.clone());
            std::thread::spawn(move || {
                // Opening waits for the daemon to open the other end.
                let Ok(mut out) = File::create(&fifo) else {
                    return;
                };
                let (w, h) = (320, 240);
                if writeln!(out, "YUV4MPEG2 W{w} H{h} F{fps}:1 Ip C420jpeg").is_err() {
                    return;
                }
                let mut frame = vec![128u8; w * h * 3 / 2];
                let mut n = 0u8;
                loop {
                    match state.load(Ordering::Relaxed) {
                        FINISHED => return,
                        STALLED => {}
                        _ => {
                            n = n.wrapping_add(3);
                            frame[..w * h].fill(n);
                            let wrote = out
                                .write_all(b"FRAME\n")
                                .and_then(|()| out.write_all(&frame));
                            if wrote.is_err() {
                                return;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1000 / fps as u64));
                }
            })
        };
        Camera {
            state,
            thread: Some(thread),
        }
    }

    fn set(&self, s: u8) {
        self.state.store(s, Ordering::Relaxed);
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.set(FINISHED);
        // A writer still waiting for a reader (the daemon failed to start) is left to end
        // with the test process rather than hang the test.
        if let Some(t) = self.thread.take() {
            let end = Instant::now() + Duration::from_millis(500);
            while !t.is_finished() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("still running {within:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ready_after_the_first_frame_watchdog_only_while_frames_flow_stopping_on_sigterm() {
    let bin = Binary::under_test(env!("CARGO_BIN_EXE_focusd"));
    let dir = TempDir::new("service");
    let manager = NotifySocket::bind(dir.path()).expect("bind the notify socket");
    let fifo = dir.path().join("camera.y4m");
    let camera = Camera::start(&fifo, 20);
    // Pings every 250 ms; each one needs a frame encoded since the previous.
    let watchdog = bin.patience(Duration::from_millis(500));
    let mut child = bin
        .command()
        .args(["--listen", "127.0.0.1:0", "--source"])
        .arg(format!("file:{}", fifo.display()))
        .env("NOTIFY_SOCKET", &manager.path)
        .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Reaped)
        .expect("focusd starts");

    // READY=1 comes once HTTP listens and a frame has been captured (with nobody
    // watching, nothing is encoded, and the daemon is as ready).
    let ready = manager.expect("READY=1", bin.patience(Duration::from_secs(5)));
    let addr = served_addr(&ready).expect("a serving address");
    assert!(
        metric(addr, "focusd_frames_captured_total") >= 1.0,
        "a frame was captured before READY=1"
    );
    let health = http::request(addr, "GET", "/healthz", None, b"").unwrap();
    assert_eq!(health.status, 200);

    // Frames flow: WATCHDOG=1 about every 250 ms.
    let flowing = manager.collect(watchdog * 3);
    assert!(pings(&flowing) >= 3, "pings while frames flow: {flowing:?}");

    // The camera stalls: one status line, then no ping at all.
    camera.set(STALLED);
    let stalled = manager.expect("STATUS=stalled", watchdog * 4);
    assert_eq!(pings(&[stalled]), 0, "no ping with the stall status");
    let silent = manager.collect(watchdog * 3);
    assert_eq!(pings(&silent), 0, "pings while stalled: {silent:?}");
    // /healthz turns 503 once no frame came for 2 s.
    let body = eventually(
        "/healthz 503 while stalled",
        bin.patience(Duration::from_secs(3)),
        || {
            let health = http::request(addr, "GET", "/healthz", None, b"").unwrap();
            let body = String::from_utf8_lossy(&health.body).into_owned();
            match health.status {
                503 => Ok(body),
                status => Err(format!("{status} {body}")),
            }
        },
    );
    assert!(body.starts_with("no frame for"), "{body}");

    // It recovers: pings resume and the status says so.
    camera.set(FLOWING);
    manager.expect("WATCHDOG=1", watchdog * 4);

    // SIGTERM while the camera hangs again: STOPPING=1, then exit 0 within 2 s even
    // though the capture thread is stuck in a read.
    camera.set(STALLED);
    manager.expect("STATUS=stalled", watchdog * 4);
    sigterm(child.0.id());
    manager.expect("STOPPING=1", bin.patience(Duration::from_secs(2)));
    let (status, took) = wait_exit(&mut child.0, bin.patience(Duration::from_secs(5)));
    println!("SIGTERM to exit with a hung camera: {took:?}");
    assert!(status.success(), "exit status {status:?}");
    assert!(took < bin.patience(Duration::from_secs(2)), "took {took:?}");
    drop(camera);
}

#[test]
fn cold_start_to_ready_with_the_default_test_source() {
    let bin = Binary::under_test(env!("CARGO_BIN_EXE_focusd"));
    let dir = TempDir::new("coldstart");
    let manager = NotifySocket::bind(dir.path()).expect("bind the notify socket");
    let started = Instant::now();
    let mut child = bin
        .command()
        .args(["--listen", "127.0.0.1:0", "--source", "test"])
        .env("NOTIFY_SOCKET", &manager.path)
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Reaped)
        .expect("focusd starts");
    let ready = manager.expect("READY=1", bin.patience(Duration::from_secs(5)));
    let took = started.elapsed();
    println!("cold start to READY=1 (1280x720 test source): {took:?}");
    let addr = served_addr(&ready).expect("a serving address");
    let health = http::request(addr, "GET", "/healthz", None, b"").unwrap();
    assert_eq!(health.status, 200, "healthy once ready");
    // Without WATCHDOG_USEC there are no pings.
    let after = manager.collect(Duration::from_millis(300));
    assert_eq!(pings(&after), 0, "{after:?}");
    sigterm(child.0.id());
    manager.expect("STOPPING=1", bin.patience(Duration::from_secs(2)));
    let (status, _) = wait_exit(&mut child.0, bin.patience(Duration::from_secs(5)));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn a_bad_notify_socket_is_a_configuration_error() {
    let bin = Binary::under_test(env!("CARGO_BIN_EXE_focusd"));
    for (var, value, want) in [
        ("NOTIFY_SOCKET", "relative/notify.sock", "NOTIFY_SOCKET"),
        ("WATCHDOG_USEC", "soon", "WATCHDOG_USEC"),
    ] {
        let mut cmd = bin.command();
        cmd.args(["--listen", "127.0.0.1:0", "--source", "test"]);
        if var == "WATCHDOG_USEC" {
            cmd.env("NOTIFY_SOCKET", "/run/focusd-test-none.sock");
        }
        let out = cmd.env(var, value).output().expect("focusd runs");
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("focusd:"))
            .collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(want), "{}", lines[0]);
    }
}

#[test]
fn eleven_hundred_idle_connections_under_a_1024_file_limit_lock_no_one_out() {
    use std::io::Write;
    use std::net::TcpStream;
    // The test holds the other ends: it needs more than 1100 descriptors itself.
    rlimit::increase_nofile_limit(4096).expect("raise the test's own file limit");
    let bin = Binary::under_test(env!("CARGO_BIN_EXE_focusd")).with_file_limit(1024);
    let dir = TempDir::new("flood");
    let d = focusd_testkit::process::DaemonProcess::start(
        &bin,
        dir.path(),
        &["--source", "test", "--size", "640x360"],
    );
    // Connections that never finish their headers, as many as a systemd service's default
    // file limit and more.
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..1100 {
        match TcpStream::connect_timeout(&d.addr, Duration::from_secs(2)) {
            Ok(mut s) => {
                let _ = s.write_all(b"GET /api/state HTTP/1.1\r\n");
                idle.push(s);
            }
            Err(_) => refused += 1,
        }
    }
    println!("{} idle connections open, {refused} not taken", idle.len());
    // The daemon holds at most its connection limit of them, far under its file limit.
    // The ones it evicted to make room close on their own tasks: right after the flood a
    // busy machine still counts some of them (up to ~460 seen), so the count is read
    // until it settles.
    let first = d.open_files().expect("its open files");
    let settle = Instant::now();
    let mut files = first;
    while files > 256 + 160 && settle.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
        files = d.open_files().expect("its open files");
    }
    println!(
        "the daemon holds {files} open files ({first} right after the flood, settled in {:?})",
        settle.elapsed()
    );
    assert!(files <= 256 + 160, "{files} open files");
    // Health and a new viewer still get through.
    let started = Instant::now();
    let health = http::request(d.addr, "GET", "/healthz", None, b"").expect("GET /healthz");
    assert_eq!(health.status, 200, "{}", health.text());
    println!(
        "/healthz answered in {:?} past 1100 idle connections",
        started.elapsed()
    );
    let viewer = focusd_testkit::receiver::Receiver::connect(
        d.addr,
        focusd_testkit::receiver::ReceiverOptions {
            decode: false,
            ..Default::default()
        },
    )
    .expect("a new viewer signs up");
    assert!(
        viewer
            .wait_for(Duration::from_secs(10), |s| s.tracks[0].frames > 5)
            .1,
        "the new viewer receives video"
    );
    let evicted = metric(d.addr, "focusd_http_connections_total{outcome=\"evicted\"}");
    assert!(evicted >= 800.0, "idle connections made room: {evicted}");
    assert!(
        !d.log().contains("ERROR"),
        "no error under the flood:\n{}",
        d.log()
    );
    drop(idle);
}

#[test]
fn the_watchdog_stops_while_http_refuses_every_new_connection() {
    use std::io::Write;
    use std::net::TcpStream;
    let bin = Binary::under_test(env!("CARGO_BIN_EXE_focusd"));
    let dir = TempDir::new("http-watchdog");
    let config = dir.path().join("focusd.toml");
    // 8 connections at most; a body gets 4 s to arrive.
    std::fs::write(&config, "[http]\nmax_connections = 8\nbody_timeout_s = 4\n").unwrap();
    let manager = NotifySocket::bind(dir.path()).expect("bind the notify socket");
    let watchdog = bin.patience(Duration::from_millis(600));
    let mut child = bin
        .command()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--source",
            "test",
            "--size",
            "640x360",
        ])
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &manager.path)
        .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Reaped)
        .expect("focusd starts");
    let ready = manager.expect("READY=1", bin.patience(Duration::from_secs(5)));
    let addr = served_addr(&ready).expect("a serving address");
    assert!(
        pings(&manager.collect(watchdog * 2)) >= 2,
        "pings while serving"
    );
    // Every slot busy: 8 offers whose bodies never come.
    let head = format!(
        "POST /offer HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/sdp\r\nContent-Length: 500\r\n\r\n",
        http::TEST_TOKEN
    );
    let busy: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // New connections are refused; while that lasts a whole period, no ping.
    let knocking = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            let _ = TcpStream::connect(addr);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let stalled = manager.expect("STATUS=stalled: HTTP", watchdog * 4);
    assert_eq!(pings(&[stalled]), 0, "no ping with the refusing status");
    knocking.join().unwrap();
    // No one knocks: the pings resume. The slow bodies end in 408, their slots are free.
    manager.expect("WATCHDOG=1", bin.patience(Duration::from_secs(2)));
    for mut s in busy {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).expect("an answer to the slow body");
        assert_eq!(&head, b"HTTP/1.1 408");
    }
    let health = http::request(addr, "GET", "/healthz", None, b"").unwrap();
    assert_eq!(health.status, 200);
    assert!(metric(addr, "focusd_http_connections_total{outcome=\"refused\"}") >= 1.0);
    sigterm(child.0.id());
    let (status, _) = wait_exit(&mut child.0, bin.patience(Duration::from_secs(5)));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn a_viewer_that_closes_normally_leaves_no_error_in_the_log() {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/.venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/aiortc/receiver.py");
    assert!(
        Path::new(python).exists(),
        "aiortc missing: run tests/run.sh (it installs it into tests/.venv)"
    );
    let bin = Binary::under_test(env!("CARGO_BIN_EXE_focusd"));
    let dir = TempDir::new("goodbye");
    let d = focusd_testkit::process::DaemonProcess::start(
        &bin,
        dir.path(),
        &["--source", "test", "--size", "640x360"],
    );
    // aiortc closes its association with an SCTP ABORT, as browsers do.
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(format!("http://{}", d.addr))
        .arg("offer")
        .arg("2")
        .env("FOCUSD_TOKEN", http::TEST_TOKEN)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"frames\""), "{stdout}");
    d.wait_for_log("viewer gone", bin.patience(Duration::from_secs(15)));
    let log = d.log();
    assert!(
        !log.contains("ERROR"),
        "a normal close logged an error:\n{log}"
    );
}

/// A panic in the WebRTC server, the HTTP server's accept loop and the rates task (the
/// test hook `FOCUSD_TEST_PANIC` injects one into each first run): the daemon survives,
/// each panic is counted and a fault in the state and `/healthz` (503) until the restarted
/// task has run 10 s, and a viewer of the restarted WebRTC server reconnects, as after a
/// network loss.
#[test]
fn a_task_that_panics_is_reported_and_restarted_and_its_viewers_reconnect() {
    use focusd_testkit::receiver::{Receiver, ReceiverOptions};
    let dir = TempDir::new("supervised");
    // Late enough for the first viewer to be watching (under qemu too).
    let native = Binary::under_test(env!("CARGO_BIN_EXE_focusd"));
    let at = if native.is_emulated() { 20 } else { 4 };
    let bin = native.with_env(
        "FOCUSD_TEST_PANIC",
        &format!("webrtc@{at},http@{at},rates@{at}"),
    );
    let d = focusd_testkit::process::DaemonProcess::start(
        &bin,
        dir.path(),
        &["--source", "test", "--size", "640x360"],
    );
    let patience = |s: u64| bin.patience(Duration::from_secs(s));
    let before = Receiver::connect(d.addr, ReceiverOptions::default()).unwrap();
    let (_, receiving) = before.wait_for(patience(3), |s| s.tracks[0].decoded >= 10);
    assert!(
        receiving,
        "a viewer before the panics: {:?}",
        before.stats()
    );
    let panics = |task: &str| {
        metric(
            d.addr,
            &format!("focusd_task_panics_total{{task=\"{task}\"}}"),
        )
    };
    eventually(
        "the panics counted",
        patience(8) + Duration::from_secs(at),
        || {
            let counted = ["webrtc", "http", "rates"].map(panics);
            seen(counted.iter().all(|&n| n >= 1.0), (counted, d.log()))
        },
    );
    // Reported: each a fault, /healthz says which, the log says why.
    let health = http::request(d.addr, "GET", "/healthz", None, b"").unwrap();
    let health_text = String::from_utf8_lossy(&health.body).into_owned();
    assert_eq!(health.status, 503, "{health_text}");
    for task in ["webrtc", "http", "rates"] {
        assert!(
            health_text.contains(&format!("{task}: the task panicked and was restarted")),
            "{health_text}"
        );
    }
    let state = http::request(d.addr, "GET", "/api/state", None, b"").unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state.body).unwrap();
    let mut faulted: Vec<&str> = state["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["part"].as_str().unwrap())
        .collect();
    faulted.sort_unstable();
    assert_eq!(faulted, ["http", "rates", "webrtc"], "{state}");
    // The restarted rates count from their restart, not from the start.
    let fps = state["fps"].as_f64().unwrap();
    assert!(fps <= 40.0, "{state}");
    let log = d.log();
    assert!(
        log.contains("task panicked: FOCUSD_TEST_PANIC: injected panic in the webrtc task"),
        "{log}"
    );
    // The old viewer's session went with the hub; a new one is admitted and served.
    let decoded = before.stats().tracks[0].decoded;
    let after = Receiver::connect(d.addr, ReceiverOptions::default()).unwrap();
    let (stats, served) = after.wait_for(patience(3), |s| s.tracks[0].decoded >= 10);
    assert!(served, "a viewer after the restart: {stats:?}");
    assert!(
        before.stats().tracks[0].decoded <= decoded + 2,
        "the old session was gone with the hub that panicked"
    );
    assert_eq!(metric(d.addr, "focusd_viewers"), 1.0);
    // Healthy again once the restarted tasks have run for 10 s.
    eventually("healthy again", patience(14), || {
        let h = http::request(d.addr, "GET", "/healthz", None, b"").unwrap();
        seen(h.status == 200, String::from_utf8_lossy(&h.body))
    });
    for task in ["webrtc", "http", "rates"] {
        assert_eq!(panics(task), 1.0, "{task} panicked once, restarted once");
    }
}
