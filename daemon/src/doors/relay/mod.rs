//! The relay door (`[relay]`): both tracks as plain RTP (H.264, RFC 6184) to a relay that
//! fans them out to many viewers, such as Janus's Streaming plugin (the pattern PiKVM
//! uses). The board sends each frame once, whatever the number of viewers there.
//!
//! Per track, one UDP socket sends RTP to the configured `host:port` and an RTCP sender
//! report every second to the port above it; the relay answers on that socket with
//! keyframe requests (PLI/FIR) when its viewers need one. Janus learns where to send them
//! from the reports (it latches the address they came from). The state messages the
//! `commands` channel carries go, one JSON text per datagram, to `state` (a Janus `data`
//! stream): viewers on the relay see the mode and the ROI. Commands do not flow back
//! through the relay; its viewers command over HTTP or MQTT.
//!
//! The relay sits between the encoders and the WebRTC hub: it sends each frame on (a UDP
//! send, never waiting) and hands it to the hub. While configured it claims its tracks,
//! so the encoders always run, and the hub keeps them at their configured rates
//! (`HubSettings::keep_configured_rates`): a relay's viewers are not known here.

mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::stream::{MTU, PAYLOAD_TYPE, RtpStream};
use crate::config::RelaySettings;
use crate::fanout::{HubReceiver, HubSender};
use crate::service::metrics::Metrics;
use crate::service::supervisor::{Supervised, Supervisor};
use crate::state::protocol::ViewerMessage;
use crate::state::{Control, Part};
use crate::track::{EncodedFrame, Track, TrackMap};
use crate::video::signals::{Claim, Demand, KeyframeRequests};

/// How often each stream sends an RTCP sender report.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The state is sent at most this often, and at least this often (a relay that restarted
/// learns it again).
const STATE_INTERVAL: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// Why the relay door could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A destination's name did not resolve (or resolved to nothing).
    #[error("relay destination `{0}` does not resolve: {1}")]
    Resolve(String, std::io::Error),
    /// No local UDP socket could be bound to send from.
    #[error("cannot bind a UDP socket for the relay: {0}")]
    Bind(std::io::Error),
}

/// One track's stream and where it goes.
struct Outlet {
    stream: RtpStream,
    socket: UdpSocket,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    /// Keeps the encoder of this track running.
    _claim: Claim,
}

/// Everything the relay task needs.
pub struct RelayTask {
    pub settings: RelaySettings,
    /// Encoded frames from the pipeline.
    pub frames: HubReceiver,
    /// The same frames, on to the WebRTC hub.
    pub hub: HubSender,
    pub keyframes: KeyframeRequests,
    /// Where the relay claims its tracks.
    pub demand: Demand,
    /// The relay's keyframe requests are honoured at most this often per track
    /// (`[webrtc] keyframe_request_interval_s`).
    pub keyframe_request_interval: Duration,
    pub control: Arc<Control>,
    pub metrics: Arc<Metrics>,
}

impl RelayTask {
    /// Resolves the destinations, binds the sockets and starts the task on `tracker`.
    pub async fn spawn(
        self,
        tracker: &TaskTracker,
        supervisor: &Supervisor,
        shutdown: CancellationToken,
    ) -> Result<(), RelayError> {
        let epoch = Instant::now();
        let mut outlets: TrackMap<Option<Outlet>> = TrackMap::default();
        for track in Track::ALL {
            let destination = match track {
                Track::Context => &self.settings.context,
                Track::Source => &self.settings.source,
            };
            let Some(destination) = destination else {
                continue;
            };
            let rtp = resolve(destination).await?;
            let socket = bind_for(rtp).await?;
            let [a, b, c, d, e, f, g, h, i, j] = random_bytes();
            let stream = RtpStream::new(
                u32::from_be_bytes([a, b, c, d]),
                u16::from_be_bytes([e, f]),
                u32::from_be_bytes([g, h, i, j]),
                epoch,
            );
            tracing::info!(track = track.name(), %rtp, ssrc = stream.ssrc(), "relaying as RTP");
            outlets[track] = Some(Outlet {
                stream,
                socket,
                rtp,
                rtcp: SocketAddr::new(rtp.ip(), rtp.port() + 1),
                _claim: self.demand.claim(track),
            });
        }
        let state = match &self.settings.state {
            Some(destination) => {
                let to = resolve(destination).await?;
                Some((bind_for(to).await?, to))
            }
            None => None,
        };
        let relay = Relay {
            outlets,
            state,
            keyframes: self.keyframes,
            keyframe_request_interval: self.keyframe_request_interval,
            control: self.control,
            metrics: self.metrics,
        };
        let service = RelayService {
            relay,
            frames: self.frames,
            hub: self.hub,
        };
        supervisor.spawn(tracker, service, shutdown);
        Ok(())
    }
}

async fn resolve(destination: &str) -> Result<SocketAddr, RelayError> {
    let fail = |e| RelayError::Resolve(destination.to_string(), e);
    tokio::net::lookup_host(destination)
        .await
        .map_err(fail)?
        .next()
        .ok_or_else(|| fail(std::io::ErrorKind::NotFound.into()))
}

async fn bind_for(destination: SocketAddr) -> Result<UdpSocket, RelayError> {
    let any: SocketAddr = if destination.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    UdpSocket::bind(any).await.map_err(RelayError::Bind)
}

/// SSRC, first sequence number and timestamp offset: random, as RFC 3550 asks. Without
/// randomness from the OS a clock-derived value does: these need not be secret.
fn random_bytes() -> [u8; 10] {
    let mut bytes = [0u8; 10];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes.copy_from_slice(&nanos.to_le_bytes()[..10]);
    }
    bytes
}

/// The relay under supervision: its sockets and streams (sequence numbers go on) and the
/// queues between the encoders and the hub outlive a panic.
struct RelayService {
    relay: Relay,
    frames: HubReceiver,
    hub: HubSender,
}

impl Supervised for RelayService {
    fn part(&self) -> Part {
        Part::Relay
    }

    fn run(
        &mut self,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.relay.run(&mut self.frames, &self.hub, shutdown)
    }
}

struct Relay {
    outlets: TrackMap<Option<Outlet>>,
    /// The state stream's socket and destination.
    state: Option<(UdpSocket, SocketAddr)>,
    keyframes: KeyframeRequests,
    keyframe_request_interval: Duration,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
}

impl Relay {
    async fn run(
        &mut self,
        frames: &mut HubReceiver,
        hub: &HubSender,
        shutdown: CancellationToken,
    ) {
        let mut reports = tokio::time::interval(REPORT_INTERVAL);
        let mut changes = self.control.subscribe();
        let mut state_sent = Instant::now();
        // The first state goes out at once.
        let mut state_pending = true;
        let mut buffers = TrackMap::from_fn(|_| vec![0u8; 1500]);
        loop {
            let TrackMap {
                context: context_buf,
                source: source_buf,
            } = &mut buffers;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                frame = frames.recv() => {
                    let Some(frame) = frame else { break };
                    self.send(&frame);
                    // The hub is the viewers' door: its back-pressure reaches the
                    // encoders as it did without a relay.
                    if hub.send(frame).await.is_err() {
                        break;
                    }
                }
                Some(n) = receive(&self.outlets.context, context_buf) => {
                    self.feedback(Track::Context, &buffers.context[..n]);
                }
                Some(n) = receive(&self.outlets.source, source_buf) => {
                    self.feedback(Track::Source, &buffers.source[..n]);
                }
                _ = reports.tick() => self.send_reports(),
                Ok(()) = changes.changed(), if self.state.is_some() && !state_pending => {
                    state_pending = true;
                }
                // A change goes out STATE_INTERVAL.0 after the last send at the earliest;
                // without changes the state is repeated every STATE_INTERVAL.1.
                _ = tokio::time::sleep_until(
                    (state_sent + if state_pending { STATE_INTERVAL.0 } else { STATE_INTERVAL.1 }).into()
                ), if self.state.is_some() => {
                    changes.mark_unchanged();
                    state_pending = false;
                    state_sent = Instant::now();
                    self.send_state();
                }
            }
        }
    }

    /// Sends one frame's packets; a datagram the system refuses is lost, never waited for.
    fn send(&mut self, frame: &EncodedFrame) {
        let Some(outlet) = self.outlets[frame.track].as_mut() else {
            return;
        };
        let packets = outlet.stream.packetize(frame);
        if packets.is_empty() {
            return;
        }
        let m = self.metrics.track(frame.track);
        m.relayed.inc();
        for p in packets {
            match outlet.socket.try_send_to(&p, outlet.rtp) {
                Ok(n) => m.relayed_bytes.add(n as u64),
                Err(e) => {
                    self.metrics.relay_send_errors.inc();
                    tracing::trace!(error = %e, to = %outlet.rtp, "relay send failed");
                }
            }
        }
    }

    fn send_reports(&mut self) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        for outlet in [&self.outlets.context, &self.outlets.source]
            .into_iter()
            .flatten()
        {
            if let Some(report) = outlet.stream.sender_report(now, wall)
                && outlet.socket.try_send_to(&report, outlet.rtcp).is_err()
            {
                self.metrics.relay_send_errors.inc();
            }
        }
    }

    /// RTCP from the relay: a keyframe request is honoured once per interval.
    fn feedback(&mut self, track: Track, datagram: &[u8]) {
        let Some(outlet) = self.outlets[track].as_mut() else {
            return;
        };
        if !outlet.stream.wants_keyframe(datagram) {
            return;
        }
        self.metrics.track(track).relay_keyframe_requests.inc();
        self.keyframes[track].repair(Instant::now(), self.keyframe_request_interval);
    }

    fn send_state(&self) {
        let Some((socket, to)) = &self.state else {
            return;
        };
        let text = ViewerMessage::State {
            state: Box::new(self.control.snapshot()),
            id: None,
        }
        .to_json();
        if socket.try_send_to(text.as_bytes(), *to).is_err() {
            self.metrics.relay_send_errors.inc();
        }
    }
}

/// A datagram on an outlet's socket (its length), or never when there is no outlet.
async fn receive(outlet: &Option<Outlet>, buf: &mut [u8]) -> Option<usize> {
    match outlet {
        Some(o) => o.socket.recv_from(buf).await.ok().map(|(n, _)| n),
        None => std::future::pending().await,
    }
}
