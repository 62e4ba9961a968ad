//! The test toolbox of focusd: everything the end-to-end tests (`tests/*.rs`), the
//! daemon's process tests (`daemon/tests/`) and the benchmark (`focusd-bench`) share, once.
//!
//! * [`daemon::TestDaemon`]: a daemon in this process, on a free loopback port;
//! * [`process`]: the focusd binary as a child process (natively or a board's binary
//!   under qemu-user), which tells its address through [`notify`], as it tells systemd;
//! * [`broker`]: a real mosquitto per test, and a small MQTT client;
//! * [`receiver`]: a headless WebRTC viewer (str0m) that decodes both tracks and reads
//!   the test stamp, over loopback or through a [`netem`] link (rate cap, delay, loss); [`http`]: a minimal HTTP/1.1 client that sends exactly what it is
//!   given, malformed or not;
//! * [`picture`]: the test pattern, PSNR, the real footage and its annotations;
//! * [`pki`]: a private CA and certificates for the TLS tests; [`stun`]: a STUN server;
//! * [`janus`]: a real Janus with a Streaming mountpoint for the relay door;
//! * [`bench`]: the benchmark behind the `focusd-bench` binary;
//! * [`wait::eventually`]: polls a check until it holds, saying what it last saw;
//! * [`TempDir`], [`free_port`] and [`free_udp_pair`].
//!
//! It is not shipped: the daemon's library and binary do not depend on it.

pub mod bench;
pub mod broker;
pub mod daemon;
pub mod http;
pub mod janus;
pub mod netem;
pub mod notify;
pub mod picture;
pub mod pki;
pub mod process;
pub mod receiver;
pub mod stun;
pub mod wait;

use std::path::{Path, PathBuf};

pub use daemon::TestDaemon;

/// A fresh directory under the system temp dir, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Makes `focusd-<tag>-<random>`; panics if it cannot.
    pub fn new(tag: &str) -> TempDir {
        let n = getrandom::u64().expect("randomness for a unique name");
        let path = std::env::temp_dir().join(format!("focusd-{tag}-{n:x}"));
        std::fs::create_dir(&path).expect("create temp dir");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback TCP port (the listener is closed before the caller binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A free loopback UDP port whose next port is free too (RTP and its RTCP).
pub fn free_udp_pair() -> u16 {
    loop {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        let port = a.local_addr().expect("bound").port();
        if port < 65534 && std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}
