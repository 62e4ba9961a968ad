//! The binary under a service manager: the sd_notify protocol spoken to a real unix
//! datagram socket made by the test, with a real pipe as the camera, so the pipeline can
//! be made to stall and recover.

mod support;

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use focusd::minihttp;
use support::{Binary, TempDir, metric, sigterm};

/// The service manager's end: the socket `NOTIFY_SOCKET` names.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Manager {
    fn bind(dir: &Path) -> Manager {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Manager { socket, path }
    }

    /// The next datagram within `within`, if any.
    fn next(&self, within: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(within.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8(buf[..n].to_vec()).expect("UTF-8 message")),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Every datagram that arrives during `d`.
    fn collect(&self, d: Duration) -> Vec<String> {
        let end = Instant::now() + d;
        let mut got = vec![];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if let Some(m) = self.next(left) {
                got.push(m);
            }
        }
        got
    }

    /// Waits up to `within` for a datagram holding the assignment `line`; returns it.
    fn wait_for(&self, line: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        let mut seen = vec![];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(m) if m.lines().any(|l| l.starts_with(line)) => return m,
                Some(m) => seen.push(m),
                None => break,
            }
        }
        panic!("no `{line}` within {within:?}; got {seen:?}");
    }
}

fn pings(messages: &[String]) -> usize {
    messages
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}

/// The HTTP address in the `STATUS=serving http://ADDR/` line.
fn served_addr(message: &str) -> std::net::SocketAddr {
    let status = message
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=serving http://"))
        .unwrap_or_else(|| panic!("a serving status in {message:?}"));
    status.trim_end_matches('/').parse().expect("an address")
}

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
    let bin = Binary::under_test();
    let dir = TempDir::new("service");
    let manager = Manager::bind(dir.path());
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
        .expect("focusd starts");

    // READY=1 comes once HTTP listens and a frame has been encoded.
    let ready = manager.wait_for("READY=1", bin.patience(Duration::from_secs(5)));
    let addr = served_addr(&ready);
    assert!(
        metric(addr, "focusd_frames_encoded_total{track=\"context\"}") >= 1.0,
        "a frame was encoded before READY=1"
    );
    let health = minihttp::request(addr, "GET", "/healthz", None, b"").unwrap();
    assert_eq!(health.status, 200);

    // Frames flow: WATCHDOG=1 about every 250 ms.
    let flowing = manager.collect(watchdog * 3);
    assert!(pings(&flowing) >= 3, "pings while frames flow: {flowing:?}");

    // The camera stalls: one status line, then no ping at all.
    camera.set(STALLED);
    let stalled = manager.wait_for("STATUS=stalled", watchdog * 4);
    assert_eq!(pings(&[stalled]), 0, "no ping with the stall status");
    let silent = manager.collect(watchdog * 3);
    assert_eq!(pings(&silent), 0, "pings while stalled: {silent:?}");
    // /healthz turns 503 once no frame came for 2 s.
    let end = Instant::now() + bin.patience(Duration::from_secs(3));
    loop {
        let health = minihttp::request(addr, "GET", "/healthz", None, b"").unwrap();
        if health.status == 503 {
            let body = String::from_utf8_lossy(&health.body).into_owned();
            assert!(body.starts_with("no frame for"), "{body}");
            break;
        }
        assert!(
            Instant::now() < end,
            "healthz still {} while stalled",
            health.status
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // It recovers: pings resume and the status says so.
    camera.set(FLOWING);
    manager.wait_for("WATCHDOG=1", watchdog * 4);

    // SIGTERM while the camera hangs again: STOPPING=1, then exit 0 within 2 s even
    // though the capture thread is stuck in a read.
    camera.set(STALLED);
    manager.wait_for("STATUS=stalled", watchdog * 4);
    sigterm(child.id());
    manager.wait_for("STOPPING=1", bin.patience(Duration::from_secs(2)));
    let (status, took) = wait_exit(&mut child, bin.patience(Duration::from_secs(5)));
    println!("SIGTERM to exit with a hung camera: {took:?}");
    assert!(status.success(), "exit status {status:?}");
    assert!(took < bin.patience(Duration::from_secs(2)), "took {took:?}");
    drop(camera);
}

#[test]
fn cold_start_to_ready_with_the_default_test_source() {
    let bin = Binary::under_test();
    let dir = TempDir::new("coldstart");
    let manager = Manager::bind(dir.path());
    let started = Instant::now();
    let mut child = bin
        .command()
        .args(["--listen", "127.0.0.1:0", "--source", "test"])
        .env("NOTIFY_SOCKET", &manager.path)
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("focusd starts");
    let ready = manager.wait_for("READY=1", bin.patience(Duration::from_secs(5)));
    let took = started.elapsed();
    println!("cold start to READY=1 (1280x720 test source): {took:?}");
    let addr = served_addr(&ready);
    let health = minihttp::request(addr, "GET", "/healthz", None, b"").unwrap();
    assert_eq!(health.status, 200, "healthy once ready");
    // Without WATCHDOG_USEC there are no pings.
    let after = manager.collect(Duration::from_millis(300));
    assert_eq!(pings(&after), 0, "{after:?}");
    sigterm(child.id());
    manager.wait_for("STOPPING=1", bin.patience(Duration::from_secs(2)));
    let (status, _) = wait_exit(&mut child, bin.patience(Duration::from_secs(5)));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn a_bad_notify_socket_is_a_configuration_error() {
    let bin = Binary::under_test();
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
