//! The hub: every viewer's WebRTC state, and the fan-out of each encoded frame to them.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::Input;
use str0m::net::{Protocol, Receive, Transmit};

use super::OfferError;
use super::answer::Admission;
use super::peer::{CONNECT_TIMEOUT, Peer, PeerNote};
use crate::service::metrics::Metrics;
use crate::state::command::Access;
use crate::video::signals::Demand;
use crate::video::track::{EncodedFrame, Track, TrackMap};

/// A viewer session id: 128 random bits in hex, used in WHEP resource URLs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh id, or `None` when the OS cannot provide randomness: a guessable id would
    /// let anyone end another viewer's session through its WHEP URL.
    pub(super) fn random() -> Option<Self> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).ok()?;
        Some(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    pub(super) fn from_string(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the hub asks of its driver.
#[derive(Debug, PartialEq)]
#[non_exhaustive]
pub enum HubEvent {
    /// The encoder of this track should make a keyframe soon.
    KeyframeWanted(Track),
    /// A viewer's `commands` channel opened; it should get the current state.
    CommandsOpen(SessionId),
    /// A message arrived on a viewer's `commands` channel; the [`Access`] its viewer
    /// signed up with says whether it may command.
    Command(SessionId, Access, Vec<u8>),
    /// The number of viewers changed.
    Viewers(usize),
}

/// Keyframe requests from viewers (PLI/FIR) are honoured at most this often per track;
/// a new viewer's request is always honoured.
const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// All viewers.
pub struct Hub {
    peers: Vec<Peer>,
    max_viewers: usize,
    /// Time zero of RTP timestamps.
    epoch: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<HubEvent>,
    last_keyframe_request: TrackMap<Option<Instant>>,
    metrics: Arc<Metrics>,
    viewers_reported: usize,
    /// Where each viewer claims the tracks it receives, from its offer on: encoders run
    /// while someone is connecting or watching.
    demand: Demand,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("viewers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(max_viewers: usize, metrics: Arc<Metrics>, demand: Demand, now: Instant) -> Self {
        Self {
            peers: Vec::new(),
            max_viewers,
            epoch: now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            last_keyframe_request: TrackMap::default(),
            metrics,
            viewers_reported: 0,
            demand,
        }
    }

    /// Viewers currently held (connecting or connected).
    pub fn viewers(&self) -> usize {
        self.peers.len()
    }

    /// Admits a viewer whose offer was answered (by an [`Answerer`]): returns its
    /// session id and the SDP answer, or refuses it when the hub is full.
    pub fn admit(
        &mut self,
        now: Instant,
        admission: Admission,
    ) -> Result<(SessionId, String), OfferError> {
        if self.peers.len() >= self.max_viewers {
            return Err(OfferError::TooManyViewers(self.max_viewers));
        }
        let Admission {
            id,
            rtc,
            tracks,
            access,
            created,
            answer,
            low_latency_playout,
        } = admission;
        tracing::info!(session = %id, tracks = tracks.iter().filter(|(_, t)| t.is_some()).count(), "viewer offer accepted");
        self.metrics.sessions_started.inc();
        // Claimed now, so that the encoders are warm (and a keyframe is on its way) by the
        // time ICE and DTLS are done.
        let claims = Track::ALL
            .into_iter()
            .filter(|t| tracks[*t].is_some())
            .map(|t| self.demand.claim(t))
            .collect();
        self.peers.push(Peer {
            id: id.clone(),
            rtc,
            tracks,
            commands: None,
            access,
            created,
            connected: false,
            timeout: created,
            stun_sources: Vec::new(),
            low_latency_playout,
            _claims: claims,
        });
        self.drive(now);
        Ok((id, answer))
    }

    /// Ends a session (WHEP DELETE). Returns whether it existed.
    pub fn close(&mut self, now: Instant, id: &SessionId) -> bool {
        let Some(peer) = self.peers.iter_mut().find(|p| &p.id == id) else {
            return false;
        };
        peer.rtc.disconnect();
        self.drive(now);
        true
    }

    /// Ends every session (shutdown).
    pub fn close_all(&mut self, now: Instant) {
        for p in &mut self.peers {
            p.rtc.disconnect();
        }
        self.drive(now);
    }

    /// A datagram arrived on a local socket.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        let is_stun = matches!(data.first(), Some(0..=3));
        // str0m accepts DTLS only from addresses whose ICE pair it has verified itself. A
        // viewer that is DTLS client may send its ClientHello before our own check of that
        // pair returns; dropping it costs a ~1 s retransmit, so route it by the address the
        // viewer's STUN already came from.
        let found = self
            .peers
            .iter()
            .position(|p| p.rtc.accepts(&input))
            .or_else(|| {
                (!is_stun)
                    .then(|| {
                        self.peers
                            .iter()
                            .position(|p| p.stun_sources.contains(&source))
                    })
                    .flatten()
            });
        if let Some(i) = found {
            let peer = &mut self.peers[i];
            if is_stun && !peer.stun_sources.contains(&source) && peer.stun_sources.len() < 8 {
                peer.stun_sources.push(source);
            }
            if let Err(e) = peer.rtc.handle_input(input) {
                tracing::info!(session = %peer.id, error = %e, "viewer input failed");
                peer.rtc.disconnect();
            }
        }
        self.drive(now);
    }

    /// Sends an encoded frame to every viewer that can take it.
    pub fn handle_frame(&mut self, now: Instant, frame: &EncodedFrame) {
        let m = self.metrics.track(frame.track);
        for peer in &mut self.peers {
            match peer.write(frame, self.epoch) {
                Some(true) => m.sent.inc(),
                Some(false) if peer.connected => m.held_for_keyframe.inc(),
                _ => {}
            }
        }
        self.drive(now);
    }

    /// Time passed: drives retransmits, keep-alives and timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        for p in &mut self.peers {
            if !p.connected && now.saturating_duration_since(p.created) >= CONNECT_TIMEOUT {
                tracing::info!(session = %p.id, "viewer never connected; dropping it");
                p.rtc.disconnect();
            } else if p.timeout <= now
                && let Err(e) = p.rtc.handle_input(Input::Timeout(now))
            {
                tracing::info!(session = %p.id, error = %e, "viewer failed");
                p.rtc.disconnect();
            }
        }
        self.drive(now);
    }

    /// Sends `text` on one viewer's `commands` channel.
    pub fn send_text(&mut self, now: Instant, id: &SessionId, text: &str) {
        if let Some(p) = self.peers.iter_mut().find(|p| &p.id == id) {
            p.send_text(text);
        }
        self.drive(now);
    }

    /// Sends `text` on every viewer's `commands` channel.
    pub fn broadcast_text(&mut self, now: Instant, text: &str) {
        for p in &mut self.peers {
            p.send_text(text);
        }
        self.drive(now);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing the driver must act on.
    pub fn poll_event(&mut self) -> Option<HubEvent> {
        self.events.pop_front()
    }

    /// When [`Hub::handle_timeout`] must be called next: the earliest peer deadline (an
    /// absolute time, so a driver woken often by frames still reaches it), at most half
    /// a second away.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        let idle = now + Duration::from_millis(500);
        self.peers
            .iter()
            .map(Peer::deadline)
            .min()
            .unwrap_or(idle)
            .min(idle)
    }

    /// Drains every peer's output and removes the dead ones.
    fn drive(&mut self, now: Instant) {
        let mut notes = Vec::new();
        for peer in &mut self.peers {
            let transmits = &mut self.transmits;
            peer.drain(&mut |t| transmits.push_back(t), &mut notes);
            for note in notes.drain(..) {
                match note {
                    PeerNote::Connected => {
                        tracing::info!(session = %peer.id, after = ?now.saturating_duration_since(peer.created), "viewer connected");
                        for t in Track::ALL {
                            self.last_keyframe_request[t] = Some(now);
                            self.events.push_back(HubEvent::KeyframeWanted(t));
                        }
                    }
                    PeerNote::KeyframeRequest(t) => {
                        let last = &mut self.last_keyframe_request[t];
                        if last.is_none_or(|l| now.saturating_duration_since(l) >= PLI_INTERVAL) {
                            *last = Some(now);
                            self.events.push_back(HubEvent::KeyframeWanted(t));
                        }
                    }
                    PeerNote::CommandsOpen => self
                        .events
                        .push_back(HubEvent::CommandsOpen(peer.id.clone())),
                    PeerNote::Command(data) => {
                        self.events
                            .push_back(HubEvent::Command(peer.id.clone(), peer.access, data))
                    }
                }
            }
        }
        let before = self.peers.len();
        self.peers.retain(|p| {
            let alive = p.is_alive();
            if !alive {
                tracing::info!(session = %p.id, "viewer gone");
            }
            alive
        });
        self.metrics
            .sessions_ended
            .add((before - self.peers.len()) as u64);
        if self.peers.len() != self.viewers_reported {
            self.viewers_reported = self.peers.len();
            self.events.push_back(HubEvent::Viewers(self.peers.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doors::webrtc::Answerer;

    /// An offer as Chromium makes it for two recvonly video transceivers and a DataChannel.
    const CHROME_OFFER: &str = include_str!("../../../../tests/data/chrome-offer.sdp");

    /// Offers that never start ICE, and no connected viewer: the driver, woken by a frame
    /// every 33 ms and otherwise sleeping until `poll_timeout`, must still drop them at
    /// the connect timeout (they used to stay, holding viewer slots, for as long as no
    /// connected viewer had a timer due).
    #[test]
    fn offers_that_never_connect_are_dropped_at_the_connect_timeout_with_no_one_else() {
        let start = Instant::now();
        let answerer = Answerer::new(vec!["127.0.0.1:5000".parse().unwrap()], true).unwrap();
        let mut hub = Hub::new(16, Arc::new(Metrics::default()), Demand::new(), start);
        for _ in 0..3 {
            let admission = answerer.answer(start, CHROME_OFFER, Access::Full).unwrap();
            hub.admit(start, admission).unwrap();
        }
        assert_eq!(hub.viewers(), 3);
        let frame_interval = Duration::from_millis(33);
        let mut now = start;
        // Bounded: a driver that never reaches the deadline must fail, not hang.
        for _ in 0..10_000 {
            if hub.viewers() == 0 || now > start + CONNECT_TIMEOUT + Duration::from_secs(5) {
                break;
            }
            let wake = hub.poll_timeout(now);
            let next_frame = now + frame_interval;
            if wake <= next_frame {
                now = wake.max(now);
                hub.handle_timeout(now);
            } else {
                now = next_frame;
            }
        }
        assert_eq!(hub.viewers(), 0, "still held at {:?}", now - start);
        let took = now - start;
        assert!(
            took >= CONNECT_TIMEOUT && took <= CONNECT_TIMEOUT + Duration::from_millis(100),
            "dropped after {took:?}"
        );
    }
}
