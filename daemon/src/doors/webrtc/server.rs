//! Drives the [`Hub`] with real UDP sockets, encoded frames from the pipeline, requests from
//! HTTP, and the clock. One task owns the hub; everything else talks to it by message.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::delivery::Bounds;
use super::reflexive::Reflexive;
use super::{Admission, Hub, HubEvent, HubSettings, Negotiator, OfferError, SendOffer, SessionId};
use crate::config::WebRtcSettings;
use crate::fanout::HubReceiver;
use crate::service::metrics::{Metrics, Refusal};
use crate::service::supervisor::{Supervised, Supervisor};
use crate::state::command::{Access, Command};
use crate::state::protocol::{RoiEvent, ViewerMessage};
use crate::state::{Control, Part, unix_ms};
use crate::video::signals::{Demand, EncoderTargets, KeyframeRequests};

/// Viewers are told of state changes at most this often.
const STATE_PUSH_INTERVAL: Duration = Duration::from_millis(100);

enum Request {
    Admit {
        admission: Box<Admission>,
        reply: oneshot::Sender<Result<(SessionId, String), OfferError>>,
    },
    Close {
        id: SessionId,
        reply: oneshot::Sender<bool>,
    },
    /// `ended` is dropped when the session ends (at once if it is not held).
    WatchEnd {
        id: SessionId,
        ended: oneshot::Sender<()>,
    },
}

/// How HTTP handlers reach the hub.
#[derive(Clone, Debug)]
pub struct WebRtcHandle {
    requests: mpsc::Sender<Request>,
    /// Answers offers on the caller's task: the hub only admits the result.
    negotiator: Arc<Negotiator>,
}

impl WebRtcHandle {
    /// Negotiates a new viewer whose DataChannel commands get `access`; returns its
    /// session id and the SDP answer.
    pub async fn offer(
        &self,
        sdp: String,
        access: Access,
    ) -> Result<(SessionId, String), OfferError> {
        let admission = self.negotiator.answer(Instant::now(), &sdp, access)?;
        self.admit(admission).await
    }

    /// An offer to send both tracks to a peer that answers (WHIP); its accepted answer
    /// goes to [`WebRtcHandle::admit`].
    pub fn send_offer(&self) -> SendOffer {
        self.negotiator.offer(Instant::now())
    }

    /// Hands a negotiated session to the hub; returns its id and the SDP answer (empty
    /// for a session this side offered).
    pub async fn admit(&self, admission: Admission) -> Result<(SessionId, String), OfferError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Admit {
                admission: Box::new(admission),
                reply,
            })
            .await
            .map_err(|_| OfferError::ShuttingDown)?;
        rx.await.map_err(|_| OfferError::ShuttingDown)?
    }

    /// Returns once the hub no longer holds the session (it ended, or the hub stopped).
    pub async fn ended(&self, id: &SessionId) {
        let (ended, rx) = oneshot::channel();
        let request = Request::WatchEnd {
            id: id.clone(),
            ended,
        };
        if self.requests.send(request).await.is_ok() {
            // Nothing is ever sent: the sender is dropped when the session ends.
            let _ = rx.await;
        }
    }

    /// Ends a session; `false` if there was none with that id.
    pub async fn close(&self, id: &str) -> bool {
        let (reply, rx) = oneshot::channel();
        let id = SessionId::from_hex(id);
        let Some(id) = id else { return false };
        if self
            .requests
            .send(Request::Close { id, reply })
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

impl SessionId {
    fn from_hex(s: &str) -> Option<SessionId> {
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| SessionId::from_string(s.to_ascii_lowercase()))
    }
}

/// Binds one UDP socket per local IPv4 address that `listen` covers (all interfaces for
/// an unspecified address), so every datagram leaves from the address its candidate names.
pub async fn bind_sockets(listen: IpAddr, port: u16) -> std::io::Result<Vec<UdpSocket>> {
    let addrs: Vec<IpAddr> = match listen {
        IpAddr::V4(v4) if v4.is_unspecified() => {
            let mut found: Vec<IpAddr> = if_addrs::get_if_addrs()?
                .into_iter()
                .map(|i| i.ip())
                .filter(|ip| ip.is_ipv4())
                .collect();
            if found.is_empty() {
                found.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            found
        }
        IpAddr::V6(v6) if v6.is_unspecified() => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        other => vec![other],
    };
    let mut sockets = Vec::new();
    for ip in addrs {
        match UdpSocket::bind(SocketAddr::new(ip, port)).await {
            Ok(s) => sockets.push(s),
            Err(e) => tracing::warn!(%ip, error = %e, "cannot bind a media socket on this address"),
        }
    }
    if sockets.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("no UDP media socket could be bound for {listen} port {port}"),
        ));
    }
    Ok(sockets)
}

/// Everything the hub task needs.
pub struct HubTask {
    pub sockets: Vec<UdpSocket>,
    /// `[webrtc]`: the viewer limit and what viewers are asked for.
    pub settings: WebRtcSettings,
    /// The encoders' configured bitrates (`[video]`), which delivery stays within.
    pub bounds: Bounds,
    /// Where the delivery policy sets the encoders' bitrates.
    pub targets: EncoderTargets,
    /// The sockets' public addresses, offered as server-reflexive candidates.
    pub reflexive: Vec<Reflexive>,
    pub frames: HubReceiver,
    pub control: Arc<Control>,
    pub keyframes: KeyframeRequests,
    /// Where viewers claim the tracks they receive.
    pub demand: Demand,
    /// Whether the relay door takes the tracks at their configured rates (the encoders
    /// then stay there whatever the viewers' links).
    pub keep_configured_rates: bool,
    pub metrics: Arc<Metrics>,
}

struct Datagram {
    at: Instant,
    source: SocketAddr,
    destination: SocketAddr,
    data: Vec<u8>,
}

impl HubTask {
    /// Starts the hub task (supervised: a panic restarts it with no sessions) and one
    /// reader task per socket on `tracker`.
    pub fn spawn(
        self,
        tracker: &TaskTracker,
        supervisor: &Supervisor,
        shutdown: CancellationToken,
    ) -> std::io::Result<WebRtcHandle> {
        let (req_tx, req_rx) = mpsc::channel(32);
        let (dgram_tx, dgram_rx) = mpsc::channel(1024);
        let mut sockets = Vec::new();
        for socket in self.sockets {
            let socket = Arc::new(socket);
            let local = socket.local_addr()?;
            tracing::info!(%local, "media socket bound");
            sockets.push((local, socket.clone()));
            let tx = dgram_tx.clone();
            let token = shutdown.clone();
            tracker.spawn(async move {
                let mut buf = vec![0u8; 2048];
                loop {
                    tokio::select! {
                        _ = token.cancelled() => break,
                        r = socket.recv_from(&mut buf) => match r {
                            Ok((n, source)) => {
                                // A full queue means the hub is behind: shed the datagram
                                // (RTCP and STUN are retried by design).
                                let _ = tx.try_send(Datagram { at: Instant::now(), source, destination: local, data: buf[..n].to_vec() });
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "udp receive error");
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                }
            });
        }
        let negotiator = Negotiator::new(
            sockets.iter().map(|(a, _)| *a).collect(),
            self.reflexive,
            self.settings.low_latency_playout,
            self.bounds.initial_estimate_kbps(),
        )
        .map_err(std::io::Error::other)?;
        let hub_settings = HubSettings {
            max_viewers: self.settings.max_viewers,
            bounds: self.bounds,
            adaptive: self.settings.adaptive_delivery,
            keep_configured_rates: self.keep_configured_rates,
        };
        let hub = Hub::new(
            hub_settings,
            self.metrics.clone(),
            self.demand.clone(),
            Instant::now(),
        );
        let driver = Driver {
            hub,
            hub_settings,
            demand: self.demand,
            sockets,
            control: self.control,
            keyframes: self.keyframes,
            keyframe_request_interval: self.settings.keyframe_request_interval,
            end_watchers: Vec::new(),
            targets: self.targets,
            metrics: self.metrics,
        };
        let inputs = Inputs {
            requests: req_rx,
            datagrams: dgram_rx,
            frames: self.frames,
        };
        supervisor.spawn(tracker, HubService { driver, inputs }, shutdown);
        Ok(WebRtcHandle {
            requests: req_tx,
            negotiator: Arc::new(negotiator),
        })
    }
}

/// The hub task under supervision: the driver, and the queues that feed it, which keep
/// their consumer across a restart.
struct HubService {
    driver: Driver,
    inputs: Inputs,
}

/// What the hub task receives.
struct Inputs {
    requests: mpsc::Receiver<Request>,
    datagrams: mpsc::Receiver<Datagram>,
    frames: HubReceiver,
}

impl Supervised for HubService {
    fn part(&self) -> Part {
        Part::Webrtc
    }

    fn run(
        &mut self,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.driver.run(&mut self.inputs, shutdown)
    }

    /// A hub that panicked may be anywhere in a session's state: it starts again empty.
    /// Its viewers see their connection fail and reconnect, as after a network loss.
    fn reset(&mut self) {
        let d = &mut self.driver;
        d.hub = Hub::new(
            d.hub_settings,
            d.metrics.clone(),
            d.demand.clone(),
            Instant::now(),
        );
        d.end_watchers.clear();
        d.control.set_viewers(0);
    }
}

struct Driver {
    hub: Hub,
    /// What a new hub is made of after a panic.
    hub_settings: HubSettings,
    /// Where the hub's viewers claim the tracks.
    demand: Demand,
    sockets: Vec<(SocketAddr, Arc<UdpSocket>)>,
    control: Arc<Control>,
    keyframes: KeyframeRequests,
    /// Viewers' requests to repair a loss make a keyframe at most this often per track.
    keyframe_request_interval: Duration,
    /// Who waits for which session to end ([`WebRtcHandle::ended`]).
    end_watchers: Vec<(SessionId, oneshot::Sender<()>)>,
    targets: EncoderTargets,
    metrics: Arc<Metrics>,
}

impl Driver {
    async fn run(&mut self, inputs: &mut Inputs, shutdown: CancellationToken) {
        let Inputs {
            requests,
            datagrams,
            frames,
        } = inputs;
        let mut changes = self.control.subscribe();
        let mut last_push = Instant::now();
        let mut push_pending = false;
        let mut sent_roi = Vec::new();
        loop {
            let now = Instant::now();
            let wake = self.hub.poll_timeout(now);
            let push_at = last_push + STATE_PUSH_INTERVAL;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.hub.close_all(Instant::now());
                    self.flush();
                    break;
                }
                Some(req) = requests.recv() => self.on_request(req),
                Some(frame) = frames.recv() => self.hub.handle_frame(Instant::now(), &frame),
                Some(d) = datagrams.recv() => self.hub.handle_datagram(d.at, d.source, d.destination, &d.data),
                Ok(()) = changes.changed(), if !push_pending => push_pending = true,
                _ = tokio::time::sleep_until(push_at.into()), if push_pending => {
                    push_pending = false;
                    last_push = Instant::now();
                    changes.mark_unchanged();
                    let state = self.control.snapshot();
                    let roi = state.roi.clone();
                    let text = ViewerMessage::State {
                        state: Box::new(state),
                        id: None,
                    }
                    .to_json();
                    self.hub.broadcast_text(last_push, &text);
                    if roi != sent_roi {
                        let event = RoiEvent { at_ms: unix_ms(), roi: roi.clone() };
                        self.hub.broadcast_text(last_push, &ViewerMessage::Roi(event).to_json());
                        sent_roi = roi;
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => self.hub.handle_timeout(Instant::now()),
            }
            self.flush();
        }
    }

    fn on_request(&mut self, req: Request) {
        match req {
            Request::Admit { admission, reply } => {
                let _ = reply.send(self.hub.admit(Instant::now(), *admission));
            }
            Request::Close { id, reply } => {
                let _ = reply.send(self.hub.close(Instant::now(), &id));
            }
            Request::WatchEnd { id, ended } => {
                if self.hub.is_open(&id) {
                    self.end_watchers.push((id, ended));
                }
            }
        }
    }

    /// Sends what the hub wants sent and acts on its events.
    fn flush(&mut self) {
        loop {
            while let Some(t) = self.hub.poll_transmit() {
                let socket = self
                    .sockets
                    .iter()
                    .find(|(a, _)| *a == t.source)
                    .or(self.sockets.first());
                if let Some((_, s)) = socket
                    && let Err(e) = s.try_send_to(&t.contents, t.destination)
                {
                    // UDP: a full socket buffer or an unreachable viewer loses this datagram,
                    // never the others.
                    tracing::trace!(error = %e, dest = %t.destination, "udp send failed");
                }
            }
            let Some(event) = self.hub.poll_event() else {
                break;
            };
            match event {
                HubEvent::KeyframeWanted(track) => self.keyframes[track].request(Instant::now()),
                HubEvent::KeyframeRepair(track) => {
                    self.keyframes[track].repair(Instant::now(), self.keyframe_request_interval);
                }
                HubEvent::Viewers(n) => self.control.set_viewers(n),
                HubEvent::Ended(id) => self.end_watchers.retain(|(w, _)| *w != id),
                HubEvent::EncoderTargets(kbps) => self.targets.set(kbps),
                HubEvent::Delivery(delivery, stepped) => {
                    self.control.set_delivery(delivery, stepped)
                }
                HubEvent::CommandsOpen(id) => {
                    let state = self.control.snapshot();
                    let text = ViewerMessage::State {
                        state: Box::new(state),
                        id: None,
                    }
                    .to_json();
                    self.hub.send_text(Instant::now(), &id, &text);
                }
                HubEvent::Command(id, access, data) => {
                    let reply = match Command::parse(&data) {
                        Ok(_) if access == Access::ViewOnly => {
                            self.metrics.http.refused_access(Refusal::ViewOnly);
                            ViewerMessage::Error {
                                error: "this viewer's token may watch but not command".into(),
                            }
                        }
                        Ok(cmd) => ViewerMessage::State {
                            state: Box::new(self.control.apply(&cmd)),
                            id: cmd.id,
                        },
                        Err(e) => {
                            self.metrics.bad_requests.inc();
                            ViewerMessage::Error { error: e.0 }
                        }
                    };
                    self.hub.send_text(Instant::now(), &id, &reply.to_json());
                }
            }
        }
    }
}
