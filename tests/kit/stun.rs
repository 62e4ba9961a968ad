//! A STUN server on loopback for the tests: it answers every binding request as a NAT's
//! public side would see it (the client's port, on the address it is given), or, made
//! silent, never answers (RFC 8489: a binding success with an XOR-MAPPED-ADDRESS).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The magic cookie of every STUN message.
const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// The success response to `request` if it is a binding request: an XOR-MAPPED-ADDRESS
/// of `mapped` (IPv4).
fn binding_success(request: &[u8], mapped: SocketAddr) -> Option<Vec<u8>> {
    let (SocketAddr::V4(mapped), Some(header)) = (mapped, request.get(..20)) else {
        return None;
    };
    if header[..2] != [0x00, 0x01] || header[4..8] != COOKIE {
        return None;
    }
    let mut out = vec![0x01, 0x01, 0x00, 12];
    out.extend_from_slice(&COOKIE);
    out.extend_from_slice(&header[8..20]);
    let port = mapped.port() ^ 0x2112;
    let ip = u32::from(*mapped.ip()) ^ u32::from_be_bytes(COOKIE);
    out.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&ip.to_be_bytes());
    Some(out)
}

/// A running server; stops when dropped.
#[derive(Debug)]
pub struct StunServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StunServer {
    /// Maps every client to `public` (its own port kept); `None`: never answers.
    pub fn start(public: Option<IpAddr>) -> std::io::Result<StunServer> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("stun-server".into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                while !s.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let Some(public) = public else { continue };
                    if let Some(reply) =
                        binding_success(&buf[..n], SocketAddr::new(public, from.port()))
                    {
                        let _ = socket.send_to(&reply, from);
                    }
                }
            })?;
        Ok(StunServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
