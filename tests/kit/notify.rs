//! The service manager's end of the sd_notify protocol: the unix datagram socket that
//! `NOTIFY_SOCKET` names, as systemd binds it. A daemon started with it says when it is
//! ready and where it serves (`STATUS=serving http://ADDR/`).

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A bound notification socket.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    /// What `NOTIFY_SOCKET` must be set to.
    pub path: PathBuf,
}

impl NotifySocket {
    /// Binds `notify-<random>.sock` in `dir`.
    pub fn bind(dir: &Path) -> std::io::Result<NotifySocket> {
        let n = getrandom::u64().map_err(std::io::Error::other)?;
        let path = dir.join(format!("notify-{n:x}.sock"));
        let socket = UnixDatagram::bind(&path)?;
        Ok(NotifySocket { socket, path })
    }

    /// The next datagram within `within`, if any.
    pub fn next(&self, within: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(within.max(Duration::from_millis(1))))
            .expect("a positive timeout");
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
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
    pub fn collect(&self, d: Duration) -> Vec<String> {
        let end = Instant::now() + d;
        let mut got = vec![];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            got.extend(self.next(left));
        }
        got
    }

    /// Waits up to `within` for a datagram with a line starting with `line`; returns the
    /// datagram, or the ones seen instead.
    pub fn wait_for(&self, line: &str, within: Duration) -> Result<String, Vec<String>> {
        let end = Instant::now() + within;
        let mut seen = vec![];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(m) if m.lines().any(|l| l.starts_with(line)) => return Ok(m),
                Some(m) => seen.push(m),
                None => break,
            }
        }
        Err(seen)
    }

    /// [`Self::wait_for`], panicking with what was seen instead.
    pub fn expect(&self, line: &str, within: Duration) -> String {
        self.wait_for(line, within)
            .unwrap_or_else(|seen| panic!("no `{line}` within {within:?}; got {seen:?}"))
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The HTTP address in a `STATUS=serving http://ADDR/` line of `message`.
pub fn served_addr(message: &str) -> Option<SocketAddr> {
    message
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=serving http://"))?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// How many `WATCHDOG=1` pings `messages` hold.
pub fn pings(messages: &[String]) -> usize {
    messages
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}
