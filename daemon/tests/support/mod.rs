//! The focusd binary these process-level tests run.
//!
//! By default it is this build's own binary. With `FOCUSD_TARGET` set to a cross target
//! (e.g. `aarch64-unknown-linux-gnu`), it is `target/<that>/release/focusd`, built by
//! `cross/build.sh` and run under qemu-user, so the same tests check the board binary.

#![allow(dead_code)] // each test file uses its own part of this

pub mod broker;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A focusd binary and how to run it.
pub struct Binary {
    /// The executable.
    pub path: PathBuf,
    /// The emulator and its arguments, for a binary of another architecture.
    runner: Vec<String>,
    /// Its Debian architecture (`amd64`, `arm64`, `armhf`).
    pub deb_arch: &'static str,
}

impl Binary {
    /// The binary named by `FOCUSD_TARGET`, or this build's.
    pub fn under_test() -> Binary {
        let native = PathBuf::from(env!("CARGO_BIN_EXE_focusd"));
        let target = std::env::var("FOCUSD_TARGET").unwrap_or_default();
        let (deb_arch, runner): (&'static str, &[&str]) = match target.as_str() {
            "" => (native_deb_arch(), &[]),
            "aarch64-unknown-linux-gnu" => (
                "arm64",
                &["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"],
            ),
            "armv7-unknown-linux-gnueabihf" => (
                "armhf",
                &["qemu-arm-static", "-L", "/usr/arm-linux-gnueabihf"],
            ),
            "x86_64-unknown-linux-gnu" => ("amd64", &[]),
            other => panic!("FOCUSD_TARGET={other} is not a target these tests know"),
        };
        let path = if target.is_empty() {
            native
        } else {
            // target/<profile>/focusd -> target/<triple>/release/focusd (cross/build.sh)
            let target_dir = native.ancestors().nth(2).expect("target/<profile>/focusd");
            target_dir.join(&target).join("release").join("focusd")
        };
        assert!(
            path.is_file(),
            "{} is missing: build it with cross/build.sh {target}",
            path.display()
        );
        Binary {
            path,
            runner: runner.iter().map(|s| s.to_string()).collect(),
            deb_arch,
        }
    }

    /// A command that runs the binary.
    pub fn command(&self) -> Command {
        match self.runner.split_first() {
            None => Command::new(&self.path),
            Some((emulator, args)) => {
                let mut c = Command::new(emulator);
                c.args(args).arg(&self.path);
                c
            }
        }
    }

    /// Whether it runs under an emulator (several times slower than native).
    pub fn is_emulated(&self) -> bool {
        !self.runner.is_empty()
    }

    /// `d` for a native run, stretched for an emulated one.
    pub fn patience(&self, d: Duration) -> Duration {
        if self.is_emulated() { d * 5 } else { d }
    }
}

fn native_deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        other => panic!("no Debian architecture known for {other}"),
    }
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = getrandom::u64().expect("randomness for a unique name");
        let path = std::env::temp_dir().join(format!("focusd-{tag}-{n:x}"));
        std::fs::create_dir(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends SIGTERM to `pid`.
pub fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {pid}");
}

/// A daemon process whose log goes to a file in the test's directory.
pub struct DaemonProcess {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    log: PathBuf,
}

impl DaemonProcess {
    /// Starts `bin` with `args` (plus `--listen 127.0.0.1:0`) and waits until it serves.
    pub fn start(bin: &Binary, dir: &Path, args: &[&str]) -> DaemonProcess {
        let log = dir.join(format!("focusd-{:x}.log", getrandom::u64().unwrap()));
        let child = bin
            .command()
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("focusd starts");
        // Owned at once, so that a failed start below still kills and reaps it.
        let mut me = DaemonProcess {
            child,
            addr: ([0, 0, 0, 0], 0).into(),
            log,
        };
        let end = std::time::Instant::now() + bin.patience(Duration::from_secs(5));
        loop {
            let text = me.log();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.split("viewer at http://").nth(1))
                .and_then(|rest| rest.split('/').next())
                .and_then(|a| a.parse().ok())
            {
                me.addr = addr;
                return me;
            }
            assert!(
                std::time::Instant::now() < end,
                "daemon did not start serving: {text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status and how long it took.
    pub fn terminate(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let started = std::time::Instant::now();
        sigterm(self.child.id());
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s, started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "still running {within:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the `/metrics` line that starts with `line_start` (name and labels).
pub fn metric(addr: std::net::SocketAddr, line_start: &str) -> f64 {
    let r = focusd::minihttp::request(addr, "GET", "/metrics", None, b"").expect("GET /metrics");
    String::from_utf8(r.body)
        .expect("UTF-8 metrics")
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{line_start}` in /metrics"))
}
