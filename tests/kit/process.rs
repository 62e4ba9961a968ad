//! The focusd binary as a child process: which binary (this build's, or a board's under
//! qemu-user), a running daemon that says where it serves, its /metrics and its CPU.
//!
//! With `FOCUSD_TARGET` set to a cross target (e.g. `aarch64-unknown-linux-gnu`), the
//! binary is `target/<that>/release/focusd`, built by `cross/build.sh` (or the one the
//! absolute path `FOCUSD_BINARY` names), and runs under qemu-user (its libraries from
//! `FOCUSD_QEMU_PREFIX` when set: a board sysroot), so the same tests check
//! the board binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::http;
use crate::notify::{NotifySocket, served_addr};

/// A focusd binary and how to run it.
#[derive(Clone, Debug)]
pub struct Binary {
    /// The executable.
    pub path: PathBuf,
    /// The emulator and its arguments, for a binary of another architecture.
    runner: Vec<String>,
    /// Its Debian architecture (`amd64`, `arm64`, `armhf`).
    pub deb_arch: &'static str,
    /// An open-file limit to run it under (through `prlimit`).
    files: Option<u64>,
    /// Whether it is given the kit's token (else it finds or makes its own).
    kit_token: bool,
    /// More environment for every run.
    env: Vec<(String, String)>,
}

impl Binary {
    /// The binary named by `FOCUSD_TARGET` (at `FOCUSD_BINARY` when that is set), else
    /// `native`: the daemon's own tests pass `env!("CARGO_BIN_EXE_focusd")`.
    pub fn under_test(native: &str) -> Binary {
        let native = PathBuf::from(native);
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
        let mut runner: Vec<String> = runner.iter().map(|s| s.to_string()).collect();
        // A binary that links the board's libraries (GStreamer) takes them, and its C
        // library, from the board's sysroot (cross/sysroot.sh).
        if let (Some(prefix), 3) = (std::env::var_os("FOCUSD_QEMU_PREFIX"), runner.len()) {
            runner[2] = prefix.to_string_lossy().into_owned();
        }
        let path = if target.is_empty() {
            native
        } else if let Some(path) = std::env::var_os("FOCUSD_BINARY") {
            PathBuf::from(path)
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
            runner,
            deb_arch,
            files: None,
            kit_token: true,
            env: Vec::new(),
        }
    }

    /// The `focusd` beside the running executable (`target/release/focusd-bench` runs
    /// `target/release/focusd`).
    pub fn beside_current_exe() -> anyhow::Result<Binary> {
        let exe = std::env::current_exe().context("the running executable")?;
        let path = exe.with_file_name("focusd");
        if !path.is_file() {
            bail!(
                "{} is missing: build it with `cargo build --release -p focusd`",
                path.display()
            );
        }
        Ok(Binary {
            path,
            files: None,
            kit_token: true,
            env: Vec::new(),
            runner: Vec::new(),
            deb_arch: native_deb_arch(),
        })
    }

    /// A command running it, with the kit's access token in `FOCUSD_TOKEN` (see
    /// [`Binary::own_token`]).
    pub fn command(&self) -> Command {
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(n) = self.files {
            argv.extend([
                "prlimit".into(),
                format!("--nofile={n}:{n}").into(),
                "--".into(),
            ]);
        }
        argv.extend(self.runner.iter().map(Into::into));
        argv.push(self.path.clone().into());
        // `argv` holds at least the binary's path.
        let (program, args) = argv.split_first().expect("a program");
        let mut c = Command::new(program);
        c.args(args);
        // Every daemon the kit runs takes the kit's token (none generates one in the
        // home directory of whoever runs the tests), unless a test says otherwise.
        if self.kit_token {
            c.env("FOCUSD_TOKEN", http::TEST_TOKEN);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// The same binary, run with `name=value` in its environment.
    pub fn with_env(mut self, name: &str, value: &str) -> Binary {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// The same binary without the kit's token: it reads or generates its own (give it a
    /// config with `[auth] token_file` in a temporary directory).
    pub fn own_token(mut self) -> Binary {
        self.kit_token = false;
        self
    }

    /// The same binary, run with at most `n` open files (as a systemd unit's
    /// `LimitNOFILE=` does).
    pub fn with_file_limit(mut self, n: u64) -> Binary {
        self.files = Some(n);
        self
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

/// How the reader of a command's stdout goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReaderGone {
    /// Before the command starts: its first write meets a closed pipe, every time.
    BeforeStart,
    /// After the first byte, as `| head -c1` does: a race with the command's later writes,
    /// which needs repeating to be caught.
    AfterFirstByte,
}

/// How a command ended whose stdout's reader went away.
#[derive(Debug)]
pub struct EndedAfterReader {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it wrote on stderr.
    pub stderr: String,
}

impl EndedAfterReader {
    /// Whether it ended as a command should when its reader goes: status 0 and nothing on
    /// stderr about stdout (no panic, no "Broken pipe").
    pub fn ended_quietly(&self) -> bool {
        self.status.code() == Some(0)
            && !self.stderr.contains("panicked")
            && !self.stderr.to_ascii_lowercase().contains("broken pipe")
            && !self.stderr.contains("stdout")
    }
}

impl Binary {
    /// Runs it with `args`, the reader of its stdout going away as `how` says.
    pub fn run_reader_gone(&self, args: &[&str], how: ReaderGone) -> EndedAfterReader {
        use std::io::Read;
        let mut c = self.command();
        c.args(args).stdin(Stdio::null()).stderr(Stdio::piped());
        let child = match how {
            ReaderGone::BeforeStart => {
                let (reader, writer) = std::io::pipe().expect("a pipe");
                drop(reader);
                c.stdout(writer).spawn().expect("the command starts")
            }
            ReaderGone::AfterFirstByte => {
                let mut child = c
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("the command starts");
                let mut stdout = child.stdout.take().expect("stdout is piped");
                let mut first = [0u8; 1];
                // Nothing printed at all (EOF) is fine too: the reader just goes.
                let _ = stdout.read(&mut first);
                drop(stdout);
                child
            }
        };
        let out = child.wait_with_output().expect("the command ends");
        EndedAfterReader {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
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

/// Sends SIGTERM to `pid`.
pub fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {pid}");
}

/// A daemon process on a free loopback port, killed when dropped. Its log goes to a file
/// in the directory it was started with.
#[derive(Debug)]
pub struct DaemonProcess {
    /// The process.
    pub child: Child,
    /// Where it serves HTTP, as it told its notification socket.
    pub addr: SocketAddr,
    /// Its stderr.
    log: PathBuf,
}

impl DaemonProcess {
    /// Starts `bin` with `args` (plus `--listen 127.0.0.1:0`) and waits until it serves;
    /// panics if it does not.
    pub fn start(bin: &Binary, dir: &Path, args: &[&str]) -> DaemonProcess {
        Self::try_start(bin, dir, args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts `bin` with `args` (plus `--listen 127.0.0.1:0`) and waits until it serves:
    /// it sends `READY=1` with `STATUS=serving http://ADDR/` to a notification socket of
    /// ours once HTTP listens and the first frame is encoded, as it does for systemd.
    pub fn try_start(bin: &Binary, dir: &Path, args: &[&str]) -> anyhow::Result<DaemonProcess> {
        let n = getrandom::u64().context("randomness for a unique name")?;
        let log = dir.join(format!("focusd-{n:x}.log"));
        let notify = NotifySocket::bind(dir).context("bind a notification socket")?;
        let child = bin
            .command()
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("NOTIFY_SOCKET", &notify.path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).context("create the log file")?)
            .spawn()
            .context("start focusd")?;
        // Owned at once, so that a failed start below still kills and reaps it.
        let mut me = DaemonProcess {
            child,
            addr: ([0, 0, 0, 0], 0).into(),
            log,
        };
        let ready = notify.wait_for("READY=1", bin.patience(Duration::from_secs(10)));
        match ready.as_deref().map(served_addr) {
            Ok(Some(addr)) => {
                me.addr = addr;
                Ok(me)
            }
            Ok(None) => bail!("READY=1 without a serving address: {ready:?}"),
            Err(seen) => bail!(
                "focusd did not become ready (notifications {seen:?}); its log:\n{}",
                me.log()
            ),
        }
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `within` for a log line containing `text`; returns the whole log.
    pub fn wait_for_log(&self, text: &str, within: Duration) -> String {
        crate::wait::eventually(&format!("`{text}` in the log"), within, || {
            let log = self.log();
            match log.contains(text) {
                true => Ok(log),
                false => Err(format!("the log:\n{log}")),
            }
        })
    }

    /// SIGTERM, then the exit status and how long it took; panics after `within`.
    pub fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        sigterm(self.child.id());
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for focusd") {
                return (s, started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "still running {within:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The value of the `/metrics` line that starts with `line_start`; panics if absent.
    pub fn metric(&self, line_start: &str) -> f64 {
        metric(self.addr, line_start)
    }

    /// CPU time it used, in clock ticks.
    pub fn cpu_ticks(&self) -> anyhow::Result<u64> {
        Ok(focusd::service::procfs::cpu_ticks(
            &self.child.id().to_string(),
        )?)
    }

    /// Its CPU use over the next `d`, in percent of one core.
    pub fn cpu_percent_over(&self, d: Duration) -> anyhow::Result<f64> {
        let (t0, c0) = (Instant::now(), self.cpu_ticks()?);
        std::thread::sleep(d);
        let (t1, c1) = (Instant::now(), self.cpu_ticks()?);
        Ok(
            (c1 - c0) as f64 / focusd::service::procfs::TICKS_PER_SECOND / (t1 - t0).as_secs_f64()
                * 100.0,
        )
    }

    /// Its open file descriptors now.
    pub fn open_files(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .context("list its descriptors")?
            .count())
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        Ok(focusd::service::procfs::memory_kib(
            &self.child.id().to_string(),
        )?)
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed and reaped when dropped, so that a failing test leaves no
/// daemon running behind it.
#[derive(Debug)]
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the `/metrics` line of the daemon at `addr` that starts with
/// `line_start` (name and labels); panics if it is absent.
pub fn metric(addr: SocketAddr, line_start: &str) -> f64 {
    try_metric(addr, line_start).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The value of the `/metrics` line that starts with `line_start` (name and labels).
pub fn try_metric(addr: SocketAddr, line_start: &str) -> anyhow::Result<f64> {
    metric_in(&scrape(addr)?, line_start).with_context(|| format!("no `{line_start}` in /metrics"))
}

/// One `/metrics` page (several counters read from it are of the same moment).
pub fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let r = http::request(addr, "GET", "/metrics", None, b"").context("GET /metrics")?;
    String::from_utf8(r.body).context("UTF-8 metrics")
}

/// The value of the line of a `/metrics` page that starts with `line_start`.
pub fn metric_in(page: &str, line_start: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
