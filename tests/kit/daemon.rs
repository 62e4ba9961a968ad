//! A daemon in this process, on its own runtime and a free loopback port: the end-to-end
//! tests drive it through its doors and look inside it.

use std::net::SocketAddr;
use std::time::Duration;

use focusd::config::{Flags, Settings};
use focusd::state::State;
use tokio_util::sync::CancellationToken;

use crate::http::{self, Response};

/// A daemon running on its own runtime, stopped when dropped.
pub struct TestDaemon {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
    daemon: Option<focusd::Daemon>,
}

impl TestDaemon {
    /// Starts a daemon with the given CLI flags on 127.0.0.1 with a free port (unless they
    /// name a `--listen` address).
    pub fn start(args: &[&str]) -> TestDaemon {
        Self::try_start(args).expect("daemon starts")
    }

    /// Starts a daemon with `args` and the config file `toml` (written to a temporary
    /// directory, read at start).
    pub fn start_with_config(toml: &str, args: &[&str]) -> TestDaemon {
        let dir = crate::TempDir::new("config");
        let path = dir.path().join("focusd.toml");
        std::fs::write(&path, toml).expect("write the config");
        let path = path.to_string_lossy().into_owned();
        let mut all = args.to_vec();
        all.extend(["--config", &path]);
        Self::start(&all)
    }

    pub fn try_start(args: &[&str]) -> Result<TestDaemon, focusd::StartError> {
        let mut all = vec!["focusd"];
        if !args.contains(&"--listen") {
            all.extend(["--listen", "127.0.0.1:0"]);
        }
        all.extend_from_slice(args);
        let flags = <Flags as clap::Parser>::parse_from(&all);
        let mut settings = Settings::load(&flags).expect("valid test settings");
        // The kit's token unless the test configures its own (never a kept file in the
        // user's state directory).
        settings
            .auth
            .token
            .get_or_insert_with(|| http::TEST_TOKEN.to_string());
        // RTSP only where a test configures it: the default port is one for the whole
        // machine, and the tests run side by side.
        if !settings.rtsp.configured {
            settings.rtsp.port = None;
        }
        let tls = settings.http.tls.is_some();
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
        me.wait_healthy(tls);
        Ok(me)
    }

    /// Until `/healthz` answers 200 (over HTTPS, which this client does not speak: until
    /// the pipeline beats).
    fn wait_healthy(&self, tls: bool) {
        // Seconds for a camera in a VM; the test source is healthy in milliseconds.
        for _ in 0..1000 {
            let healthy = if tls {
                self.liveness().beats() > 0
            } else {
                self.get("/healthz").status == 200
            };
            if healthy {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("daemon never became healthy");
    }

    pub fn get(&self, path: &str) -> Response {
        http::request(self.addr, "GET", path, None, b"").expect("GET")
    }

    pub fn post(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Response {
        http::request(self.addr, "POST", path, content_type, body).expect("POST")
    }

    /// The value of the `/metrics` line that starts with `line_start` (name and labels).
    pub fn metric(&self, line_start: &str) -> f64 {
        crate::process::metric(self.addr, line_start)
    }

    pub fn command(&self, json: &str) -> Response {
        self.post("/api/command", Some("application/json"), json.as_bytes())
    }

    /// `PUT /api/streams` with `json`: changes the picture doors' settings.
    pub fn streams(&self, json: &str) -> Response {
        http::request(
            self.addr,
            "PUT",
            "/api/streams",
            Some("application/json"),
            json.as_bytes(),
        )
        .expect("PUT")
    }

    /// Waits until the `/metrics` line starting `line_start` reads at least `at_least`;
    /// panics after `within`, saying what was awaited.
    pub fn wait_for_metric(&self, line_start: &str, at_least: f64, within: Duration, what: &str) {
        crate::wait::eventually(what, within, || {
            let now = self.metric(line_start);
            crate::wait::seen(
                now >= at_least,
                format!("{line_start} is {now} < {at_least}"),
            )
        });
    }

    /// `GET /api/state`, read as the contract's state JSON.
    pub fn state(&self) -> State {
        serde_json::from_slice(&self.get("/api/state").body).expect("state JSON")
    }

    /// Where RTSP listens, when the test configured it.
    pub fn rtsp_addr(&self) -> Option<SocketAddr> {
        self.daemon.as_ref().and_then(|d| d.rtsp_addr())
    }

    /// The pipeline's pulse: frames encoded, attempts to reopen a failed device.
    pub fn liveness(&self) -> focusd::service::liveness::Liveness {
        // Present from start until stop, which consumes `self`.
        self.daemon.as_ref().expect("running").liveness().clone()
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
