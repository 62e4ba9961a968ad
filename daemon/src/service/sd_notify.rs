//! The systemd notification protocol (`sd_notify(3)`): tells the service manager that the
//! daemon is ready, that its pipeline is alive, and that it is stopping.
//!
//! The protocol is one datagram per message on the unix socket named by `NOTIFY_SOCKET`
//! (a path, or an abstract name when it starts with `@`), holding newline-separated
//! `KEY=value` assignments. Without `NOTIFY_SOCKET` every call here is a no-op, so the
//! daemon behaves the same under systemd, in a shell and in tests.
//!
//! * [`Notifier`] is the socket and the watchdog interval read from the environment.
//! * [`Heartbeat`] decides what is due from the pipeline's beats so far and of
//!   attempts to reopen a failed device; it has no clock, so it is tested by feeding it
//!   counts.
//! * [`report`] drives both for a running daemon: `READY=1` once HTTP listens and the
//!   first frame is captured, `WATCHDOG=1` only while frames flow (captured, and encoded
//!   while anyone watches) or the pipeline is busy
//!   reopening a failed camera (a hung pipeline is then restarted by systemd's
//!   `WatchdogSec=`; an unplugged camera is not a reason to restart), `STOPPING=1` on
//!   shutdown.

use std::ffi::OsString;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::service::liveness::Liveness;

/// Why the notification environment cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor an abstract name (`@name`).
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor an abstract socket name")]
    BadSocket(OsString),
    /// `WATCHDOG_USEC` is not a positive whole number of microseconds.
    #[error("WATCHDOG_USEC={0:?} is not a positive number of microseconds")]
    BadWatchdog(String),
    /// The socket could not be created.
    #[error("cannot create the notification socket: {0}")]
    Io(#[from] std::io::Error),
}

/// One assignment sent to the service manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// `READY=1`: startup is complete; `systemctl start` returns.
    Ready,
    /// `WATCHDOG=1`: the service is alive; resets the `WatchdogSec=` timer.
    Watchdog,
    /// `STOPPING=1`: shutdown has begun.
    Stopping,
    /// `STATUS=...`: one line shown by `systemctl status`.
    Status(&'a str),
}

impl Message<'_> {
    fn write(&self, out: &mut String) {
        match self {
            Message::Ready => out.push_str("READY=1"),
            Message::Watchdog => out.push_str("WATCHDOG=1"),
            Message::Stopping => out.push_str("STOPPING=1"),
            Message::Status(text) => {
                out.push_str("STATUS=");
                // A newline would start another assignment.
                out.extend(text.chars().map(|c| if c == '\n' { ' ' } else { c }));
            }
        }
    }
}

/// The way to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    /// Unbound datagram socket and the manager's address; `None` when not under systemd.
    target: Option<(UnixDatagram, SocketAddr)>,
    /// How often systemd expects `WATCHDOG=1` at the latest (`WATCHDOG_USEC`), when it
    /// expects it from this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        Notifier::from_vars(
            std::env::var_os("NOTIFY_SOCKET"),
            std::env::var("WATCHDOG_USEC").ok(),
            std::env::var("WATCHDOG_PID").ok(),
            std::process::id(),
        )
    }

    /// Builds a notifier from the variables' values; `pid` is this process's id, which
    /// `WATCHDOG_PID` must name for the watchdog to apply here.
    pub fn from_vars(
        socket: Option<OsString>,
        watchdog_usec: Option<String>,
        watchdog_pid: Option<String>,
        pid: u32,
    ) -> Result<Notifier, NotifyError> {
        let Some(socket) = socket.filter(|s| !s.is_empty()) else {
            return Ok(Notifier::disabled());
        };
        let addr = socket_addr(&socket)?;
        let watchdog = match watchdog_usec {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(usec) if usec > 0 => Some(Duration::from_micros(usec)),
                _ => return Err(NotifyError::BadWatchdog(v)),
            },
        };
        // systemd sets WATCHDOG_PID to the main process; a child that inherited the
        // variables must not ping on its parent's behalf.
        let watchdog = watchdog.filter(|_| match &watchdog_pid {
            Some(p) => p.parse::<u32>() == Ok(pid),
            None => true,
        });
        Ok(Notifier {
            target: Some((UnixDatagram::unbound()?, addr)),
            watchdog,
        })
    }

    /// Whether a service manager is listening.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The interval at which systemd restarts the service unless it hears `WATCHDOG=1`.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `messages` as one datagram; a no-op without a service manager.
    pub fn send(&self, messages: &[Message]) -> std::io::Result<()> {
        let Some((socket, addr)) = &self.target else {
            return Ok(());
        };
        let mut text = String::new();
        for (i, m) in messages.iter().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            m.write(&mut text);
        }
        socket.send_to_addr(text.as_bytes(), addr).map(|_| ())
    }
}

fn socket_addr(socket: &OsString) -> Result<SocketAddr, NotifyError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'/') => Ok(SocketAddr::from_pathname(socket)?),
        #[cfg(target_os = "linux")]
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            Ok(SocketAddr::from_abstract_name(&bytes[1..])?)
        }
        _ => Err(NotifyError::BadSocket(socket.clone())),
    }
}

/// What is due at one tick of [`Heartbeat`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Send `READY=1`: the first frame has been encoded.
    pub ready: bool,
    /// Send `WATCHDOG=1`: frames were encoded, or a failed device was retried, since the
    /// previous tick.
    pub watchdog: bool,
    /// Frames stopped (`Some(false)`) or started again (`Some(true)`) since the previous
    /// tick; worth a `STATUS=` line.
    pub flowing: Option<bool>,
}

/// Decides readiness and liveness from the pipeline's beats so far (pictures captured
/// while the encoders kept up: see [`Liveness`]).
///
/// Ticks come at half the watchdog interval, so a pipeline that encodes nothing between
/// two ticks misses a ping, and systemd restarts it within one or two intervals.
#[derive(Debug, Default)]
pub struct Heartbeat {
    /// `READY=1` has been due once.
    ready: bool,
    /// Beats at the previous tick.
    seen: u64,
    /// Recovery attempts at the previous tick.
    seen_recoveries: u64,
    /// Whether frames were flowing at the previous tick.
    flowing: bool,
}

impl Heartbeat {
    /// Takes the current counts of beats and of attempts to reopen a failed device, and
    /// says what is due.
    pub fn tick(&mut self, beats: u64, recovery_attempts: u64) -> Due {
        let progressed = beats > self.seen;
        self.seen = beats;
        let recovering = recovery_attempts > self.seen_recoveries;
        self.seen_recoveries = recovery_attempts;
        let ready = progressed && !self.ready;
        self.ready |= progressed;
        let flowing = (self.ready && progressed != self.flowing && !ready).then_some(progressed);
        self.flowing = progressed;
        Due {
            ready,
            watchdog: progressed || (self.ready && recovering),
            flowing,
        }
    }

    /// Whether `READY=1` has been due.
    pub fn is_ready(&self) -> bool {
        self.ready
    }
}

/// Until ready, how often to look for the first frame: short, as it is start-up latency.
const READY_POLL: Duration = Duration::from_millis(5);
/// Without a watchdog, how often to look for a stall worth a status line.
const STATUS_POLL: Duration = Duration::from_secs(2);

/// A part of the daemon that the watchdog pings for besides the pipeline, checked once
/// ready at each tick: its HTTP (`doors::http::server::HttpProbe`). Called from the task
/// that runs [`report`] only; a check must end within the time it is given.
pub trait Probe: Send {
    /// Checks once, giving the part `within` to answer; `Err` says why it does not.
    fn check(&mut self, within: Duration) -> impl Future<Output = Result<(), String>> + Send;
}

/// Reports a running daemon to the service manager until `shutdown`, then says
/// `STOPPING=1`. `serving` is the status line once ready (e.g. the viewer's address).
pub async fn report(
    notifier: Notifier,
    liveness: Liveness,
    mut http: impl Probe,
    serving: String,
    shutdown: CancellationToken,
) {
    if !notifier.is_enabled() {
        return;
    }
    let period = notifier.watchdog().map_or(STATUS_POLL, |w| w / 2);
    let mut heartbeat = Heartbeat::default();
    let mut warned = false;
    let mut http_was_failing = false;
    loop {
        let wait = if heartbeat.is_ready() {
            period
        } else {
            READY_POLL
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        let due = heartbeat.tick(liveness.beats(), liveness.recovery_attempts());
        let mut messages = Vec::with_capacity(2);
        let stalled;
        if due.ready {
            messages.extend([Message::Ready, Message::Status(&serving)]);
        }
        match due.flowing {
            Some(true) => {
                tracing::info!("frames flow through the pipeline again");
                messages.push(Message::Status(&serving));
            }
            Some(false) => {
                stalled = format!(
                    "stalled: no frame through the pipeline for {:.1} s",
                    period.as_secs_f64()
                );
                messages.push(Message::Status(&stalled));
                tracing::warn!("no frame through the pipeline for {period:?}: it is stalled");
            }
            None => {}
        }
        // HTTP that does not answer is as dead as a stalled pipeline: no ping, and
        // systemd restarts the daemon. Checked once ready, given half a period.
        let http_failing = if heartbeat.is_ready() {
            http.check(period / 2).await.err()
        } else {
            None
        };
        let http_status;
        match (&http_failing, http_was_failing) {
            (Some(why), false) => {
                http_status = format!("stalled: {why}");
                messages.push(Message::Status(&http_status));
                tracing::warn!("{why}");
            }
            (None, true) => {
                tracing::info!("HTTP answers again");
                messages.push(Message::Status(&serving));
            }
            _ => {}
        }
        http_was_failing = http_failing.is_some();
        if due.watchdog && http_failing.is_none() && notifier.watchdog().is_some() {
            messages.push(Message::Watchdog);
        }
        if messages.is_empty() {
            continue;
        }
        if let Err(e) = notifier.send(&messages)
            && !warned
        {
            tracing::warn!(error = %e, "cannot notify the service manager");
            warned = true;
        }
    }
    if let Err(e) = notifier.send(&[Message::Stopping, Message::Status("stopping")]) {
        tracing::warn!(error = %e, "cannot notify the service manager of shutdown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (tempdir::Dir, UnixDatagram) {
        let dir = tempdir::Dir::new();
        let sock = UnixDatagram::bind(dir.path.join("notify")).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (dir, sock)
    }

    /// A directory removed when dropped.
    mod tempdir {
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Dir {
                let n: u64 = getrandom::u64().expect("randomness for a unique name");
                let path = std::env::temp_dir().join(format!("focusd-notify-{n:x}"));
                std::fs::create_dir(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn no_socket_means_a_silent_no_op() {
        let n = Notifier::from_vars(None, Some("1000000".into()), None, 1).unwrap();
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog(), None);
        n.send(&[Message::Ready]).unwrap();
        let empty = Notifier::from_vars(Some("".into()), None, None, 1).unwrap();
        assert!(!empty.is_enabled());
    }

    #[test]
    fn sends_newline_separated_assignments_to_a_path() {
        let (dir, sock) = listener();
        let path = dir.path.join("notify");
        let n = Notifier::from_vars(Some(path.into()), None, None, 1).unwrap();
        assert!(n.is_enabled());
        n.send(&[Message::Ready, Message::Status("serving\nhttp://x/")])
            .unwrap();
        assert_eq!(recv(&sock), "READY=1\nSTATUS=serving http://x/");
        n.send(&[Message::Watchdog]).unwrap();
        assert_eq!(recv(&sock), "WATCHDOG=1");
        n.send(&[Message::Stopping]).unwrap();
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_names_start_with_at() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("focusd-test-{:x}", getrandom::u64().unwrap());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = Notifier::from_vars(Some(format!("@{name}").into()), None, None, 1).unwrap();
        n.send(&[Message::Ready]).unwrap();
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(matches!(
            Notifier::from_vars(Some("relative/path".into()), None, None, 1),
            Err(NotifyError::BadSocket(_))
        ));
        for bad in ["0", "-5", "ten", ""] {
            assert!(
                matches!(
                    Notifier::from_vars(Some("/run/x".into()), Some(bad.into()), None, 1),
                    Err(NotifyError::BadWatchdog(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn watchdog_applies_only_to_the_named_process() {
        let us = Notifier::from_vars(
            Some("/run/x".into()),
            Some("4000000".into()),
            Some("42".into()),
            42,
        )
        .unwrap();
        assert_eq!(us.watchdog(), Some(Duration::from_secs(4)));
        let parent = Notifier::from_vars(
            Some("/run/x".into()),
            Some("4000000".into()),
            Some("41".into()),
            42,
        )
        .unwrap();
        assert_eq!(parent.watchdog(), None);
        let unnamed =
            Notifier::from_vars(Some("/run/x".into()), Some("500".into()), None, 42).unwrap();
        assert_eq!(unnamed.watchdog(), Some(Duration::from_micros(500)));
    }

    #[test]
    fn sending_to_a_missing_socket_is_an_error_not_a_panic() {
        let n = Notifier::from_vars(Some("/nonexistent/notify".into()), None, None, 1).unwrap();
        assert!(n.send(&[Message::Ready]).is_err());
    }

    #[test]
    fn heartbeat_is_ready_at_the_first_frame_and_pings_only_on_progress() {
        let mut h = Heartbeat::default();
        assert_eq!(
            h.tick(0, 0),
            Due::default(),
            "nothing before the first frame"
        );
        assert_eq!(h.tick(0, 0), Due::default());
        assert_eq!(
            h.tick(1, 0),
            Due {
                ready: true,
                watchdog: true,
                flowing: None
            }
        );
        assert_eq!(
            h.tick(9, 0),
            Due {
                ready: false,
                watchdog: true,
                flowing: None
            }
        );
        // The pipeline stalls: no ping, one status change.
        assert_eq!(
            h.tick(9, 0),
            Due {
                ready: false,
                watchdog: false,
                flowing: Some(false)
            }
        );
        assert_eq!(h.tick(9, 0), Due::default());
        // It recovers: pings again, one status change, never a second READY.
        assert_eq!(
            h.tick(12, 0),
            Due {
                ready: false,
                watchdog: true,
                flowing: Some(true)
            }
        );
        assert_eq!(
            h.tick(20, 0),
            Due {
                ready: false,
                watchdog: true,
                flowing: None
            }
        );
        assert!(h.is_ready());
    }

    #[test]
    fn a_camera_being_reopened_keeps_the_watchdog_fed_but_is_not_flowing() {
        let mut h = Heartbeat::default();
        assert!(!h.tick(0, 3).watchdog, "no ping before ready");
        assert!(h.tick(5, 3).ready);
        assert_eq!(
            h.tick(5, 4),
            Due {
                ready: false,
                watchdog: true,
                flowing: Some(false)
            },
            "no frames, but a retry: alive"
        );
        assert!(!h.tick(5, 4).watchdog, "neither: hung");
        assert_eq!(h.tick(8, 4).flowing, Some(true));
    }
}
