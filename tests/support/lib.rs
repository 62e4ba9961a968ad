//! Helpers for the end-to-end tests: a daemon on free loopback ports in this process, and
//! small checks on decoded pictures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use focusd::config::{Flags, Settings};
use focusd::minihttp::{self, Response};
use focusd_board::frame::I420Image;
use focusd_board::source::TestPattern;
use tokio_util::sync::CancellationToken;

/// A daemon running on its own runtime, stopped when dropped.
pub struct TestDaemon {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
    daemon: Option<focusd::Daemon>,
}

impl TestDaemon {
    /// Starts a daemon with the given CLI flags on 127.0.0.1 with a free port.
    pub fn start(args: &[&str]) -> TestDaemon {
        Self::try_start(args).expect("daemon starts")
    }

    pub fn try_start(args: &[&str]) -> Result<TestDaemon, focusd::StartError> {
        let mut all = vec!["focusd", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let flags = <Flags as clap::Parser>::parse_from(&all);
        let settings = Settings::load(&flags).expect("valid test settings");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let shutdown = CancellationToken::new();
        let daemon = runtime.block_on(focusd::Daemon::start(settings, shutdown.clone()))?;
        let addr = daemon.http_addr();
        let me = TestDaemon {
            addr,
            shutdown,
            runtime: Some(runtime),
            daemon: Some(daemon),
        };
        me.wait_healthy();
        Ok(me)
    }

    fn wait_healthy(&self) {
        for _ in 0..200 {
            if self.get("/healthz").status == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("daemon never became healthy");
    }

    pub fn get(&self, path: &str) -> Response {
        minihttp::request(self.addr, "GET", path, None, b"").expect("GET")
    }

    pub fn post(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Response {
        minihttp::request(self.addr, "POST", path, content_type, body).expect("POST")
    }

    pub fn command(&self, json: &str) -> Response {
        self.post("/api/command", Some("application/json"), json.as_bytes())
    }

    pub fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&self.get("/api/state").body).expect("state JSON")
    }

    /// Stops the daemon and says how long that took.
    pub fn stop(mut self) -> Duration {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Duration {
        let started = std::time::Instant::now();
        self.shutdown.cancel();
        if let (Some(rt), Some(d)) = (self.runtime.as_ref(), self.daemon.take()) {
            rt.block_on(d.wait());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        started.elapsed()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if self.runtime.is_some() {
            self.stop_inner();
        }
    }
}

/// PSNR (dB) of luma `got` against `want`, both `w` x `h`, over rows `from_row..`.
pub fn psnr(got: &[u8], want: &[u8], w: usize, from_row: usize) -> f64 {
    let (a, b) = (
        &got[from_row * w..],
        &want[from_row * w..want.len().min(got.len())],
    );
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        99.0
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// The test pattern's luma at wall-clock `ms`, `w` x `h`.
pub fn pattern_luma(w: u32, h: u32, ms: u32) -> Vec<u8> {
    let pattern = TestPattern::new((w, h), 30.0);
    let mut img = I420Image::new(w, h);
    // The stamp holds ms mod 2^32 and the scene is a function of that, so any epoch works.
    pattern.draw(&mut img, ms as u64);
    img.y().to_vec()
}

/// A y4m made from real footage: `vtest.avi` of Debian's opencv-doc, converted by
/// `tests/media.sh`. `None` when it has not been prepared.
pub fn real_footage() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.media/vtest.y4m");
    p.exists().then_some(p)
}

/// Boxes `[[x1, y1, x2, y2], ...]` of a hand annotation in tests/data/.
pub fn json_boxes(v: &serde_json::Value) -> Vec<[f64; 4]> {
    let num = |x: &serde_json::Value| x.as_f64().expect("a number");
    v.as_array()
        .expect("a list of boxes")
        .iter()
        .map(|b| {
            let b = b.as_array().expect("a box");
            [num(&b[0]), num(&b[1]), num(&b[2]), num(&b[3])]
        })
        .collect()
}
