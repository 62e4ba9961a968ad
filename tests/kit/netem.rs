//! A network between a receiver and the daemon, in user space (this kernel has no
//! `netem`): a UDP relay whose downlink (daemon → receiver) has a rate cap with a bounded
//! queue (as `tbf` would: what does not fit is dropped), a fixed delay and random loss.
//! The uplink is forwarded as it comes. The shape can change while it runs, for a link
//! that drops and recovers.
//!
//! A receiver uses it through [`crate::receiver::ReceiverOptions::network`]: the daemon's
//! candidate in the answer is replaced by the relay's address, and the relay forwards to
//! the daemon; the daemon sees the relay's socket as the viewer (a peer-reflexive
//! candidate), as it would a viewer behind a NAT.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the downlink does to datagrams.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    /// Rate cap in kbit/s (`None`: no cap).
    pub rate_kbps: Option<u32>,
    /// The longest a datagram may wait in the cap's queue; beyond, it is dropped.
    pub queue: Duration,
    /// Added to every datagram (one way).
    pub delay: Duration,
    /// Share of datagrams lost at random, 0–1.
    pub loss: f64,
}

impl Shape {
    /// A clean link.
    pub const CLEAN: Shape = Shape {
        rate_kbps: None,
        queue: Duration::from_millis(100),
        delay: Duration::ZERO,
        loss: 0.0,
    };

    /// A clean link capped at `kbps`.
    pub fn capped(kbps: u32) -> Shape {
        Shape {
            rate_kbps: Some(kbps),
            ..Shape::CLEAN
        }
    }
}

/// What went through the downlink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounts {
    pub forwarded: u64,
    /// Dropped by the cap's full queue.
    pub dropped_queue: u64,
    /// Lost at random.
    pub lost: u64,
}

#[derive(Debug)]
struct Shared {
    shape: Mutex<Shape>,
    /// Where datagrams from the receiver go (the daemon's media socket).
    upstream: Mutex<Option<SocketAddr>>,
    counts: Mutex<LinkCounts>,
    stop: AtomicBool,
}

/// A running relay; stops when dropped.
#[derive(Debug)]
pub struct Netem {
    /// Where the receiver sends.
    near: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Netem {
    /// Starts a relay on loopback with `shape` on its downlink.
    pub fn start(shape: Shape) -> std::io::Result<Netem> {
        let near = UdpSocket::bind("127.0.0.1:0")?;
        let far = UdpSocket::bind("127.0.0.1:0")?;
        let shared = Arc::new(Shared {
            shape: Mutex::new(shape),
            upstream: Mutex::new(None),
            counts: Mutex::new(LinkCounts::default()),
            stop: AtomicBool::new(false),
        });
        let addr = near.local_addr()?;
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("netem".into())
            .spawn(move || relay(near, far, &s))?;
        Ok(Netem {
            near: addr,
            shared,
            thread: Some(thread),
        })
    }

    /// The address a receiver sends to.
    pub fn addr(&self) -> SocketAddr {
        self.near
    }

    /// Forwards the receiver's datagrams to `upstream` (the daemon's media socket).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = Some(upstream);
    }

    /// Changes the downlink's shape from now on.
    pub fn set_shape(&self, shape: Shape) {
        *lock(&self.shared.shape) = shape;
    }

    /// What went through the downlink so far.
    pub fn counts(&self) -> LinkCounts {
        *lock(&self.shared.counts)
    }
}

impl Drop for Netem {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The relay's loop: `near` faces the receiver, `far` the daemon.
fn relay(near: UdpSocket, far: UdpSocket, shared: &Shared) {
    let tick = Duration::from_millis(1);
    let _ = near.set_read_timeout(Some(tick));
    let _ = far.set_nonblocking(true);
    let mut receiver: Option<SocketAddr> = None;
    // Datagrams on their way down, with the time each leaves the relay.
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    // When the cap's queue is empty again.
    let mut busy_until = Instant::now();
    let mut buf = vec![0u8; 2048];
    while !shared.stop.load(Ordering::Relaxed) {
        // Up: as it comes.
        if let Ok((n, from)) = near.recv_from(&mut buf) {
            receiver = Some(from);
            if let Some(up) = *lock(&shared.upstream) {
                let _ = far.send_to(&buf[..n], up);
            }
        }
        // Down: into the shaped queue.
        while let Ok((n, _)) = far.recv_from(&mut buf) {
            let shape = *lock(&shared.shape);
            let now = Instant::now();
            let mut counts = lock(&shared.counts);
            if shape.loss > 0.0 && chance() < shape.loss {
                counts.lost += 1;
                continue;
            }
            let leaves = match shape.rate_kbps {
                Some(kbps) => {
                    let start = busy_until.max(now);
                    if start.saturating_duration_since(now) > shape.queue {
                        counts.dropped_queue += 1;
                        continue;
                    }
                    let serialise = Duration::from_secs_f64(
                        (n as f64 + 28.0) * 8.0 / (f64::from(kbps.max(1)) * 1000.0),
                    );
                    busy_until = start + serialise;
                    busy_until
                }
                None => now,
            };
            counts.forwarded += 1;
            queue.push_back((leaves + shape.delay, buf[..n].to_vec()));
        }
        let now = Instant::now();
        while queue.front().is_some_and(|(at, _)| *at <= now) {
            let (_, data) = queue.pop_front().expect("checked above");
            if let Some(r) = receiver {
                let _ = near.send_to(&data, r);
            }
        }
    }
}

/// A uniform number in [0, 1).
fn chance() -> f64 {
    (getrandom::u64().unwrap_or(0) >> 11) as f64 / (1u64 << 53) as f64
}
