//! The hub: every viewer's WebRTC state, and the fan-out of each encoded frame to them.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::Input;
use str0m::bwe::Bitrate;
use str0m::net::{Protocol, Receive, Transmit};

use super::delivery::{self, Bounds, Ladder, LayerMeter, Link};
use super::negotiate::Admission;
use super::peer::{CONNECT_TIMEOUT, Peer, PeerNote};
use super::{OfferError, SessionId};
use crate::service::metrics::Metrics;
use crate::state::command::Access;
use crate::state::{Delivery, ViewerLink};
use crate::track::{EncodedFrame, Track, TrackMap};
use crate::video::signals::Demand;

/// What the hub asks of its driver.
#[derive(Debug, PartialEq)]
#[non_exhaustive]
pub enum HubEvent {
    /// The encoder of this track should make a keyframe soon: a viewer starts on it.
    KeyframeWanted(Track),
    /// A viewer asked for a keyframe on this track to repair a loss (PLI/FIR): worth one
    /// if none was made in the last `[webrtc] keyframe_request_interval_s`
    /// (`video::signals::KeyframeRequest::repair`, shared with the other doors).
    KeyframeRepair(Track),
    /// A viewer's `commands` channel opened; it should get the current state.
    CommandsOpen(SessionId),
    /// A message arrived on a viewer's `commands` channel; the [`Access`] its viewer
    /// signed up with says whether it may command.
    Command(SessionId, Access, Vec<u8>),
    /// A session ended (closed, failed, timed out or shut down).
    Ended(SessionId),
    /// The number of viewers changed.
    Viewers(usize),
    /// The encoders should aim at these bitrates (kbit/s) from now on.
    EncoderTargets(TrackMap<u32>),
    /// The delivery figures, every [`delivery::INTERVAL`]; `true` when a viewer's level
    /// changed (worth telling the viewers).
    Delivery(Delivery, bool),
}

/// What the hub is told once, at start.
#[derive(Clone, Copy, Debug)]
pub struct HubSettings {
    /// Viewers held at once (connecting or connected); one more is refused.
    pub max_viewers: usize,
    /// The encoders' configured bitrates, which the delivery policy stays within.
    pub bounds: Bounds,
    /// Whether the encoders follow the viewers' estimates and slow links are stepped
    /// down (`[webrtc] adaptive_delivery`); estimates are kept either way.
    pub adaptive: bool,
    /// A consumer outside the hub (the relay door) takes both tracks at their configured
    /// rates: the encoders stay there, and only the viewers' own links step.
    pub keep_configured_rates: bool,
}

impl HubSettings {
    /// The daemon's defaults (300 and 2500 kbit/s, adaptive) for `max_viewers`, for the
    /// hub's tests, the fuzz target and the virtual-time test.
    #[cfg(test)]
    pub(super) fn for_tests(max_viewers: usize) -> HubSettings {
        HubSettings {
            max_viewers,
            bounds: Bounds {
                context_kbps: 300,
                source_kbps: 2500,
            },
            adaptive: true,
            keep_configured_rates: false,
        }
    }
}

/// All viewers.
pub struct Hub {
    peers: Vec<Peer>,
    /// The limits and policies it was started with.
    settings: HubSettings,
    /// Time zero of RTP timestamps.
    epoch: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<HubEvent>,
    metrics: Arc<Metrics>,
    viewers_reported: usize,
    /// Where each viewer claims the tracks it receives, from its offer on: encoders run
    /// while someone is connecting or watching.
    demand: Demand,
    /// The encoders' targets last asked for.
    targets: TrackMap<u32>,
    /// How each track's bytes split between its temporal layers.
    layers: TrackMap<LayerMeter>,
    /// When the delivery policy runs next.
    next_delivery: Instant,
    /// Runs of the delivery policy so far: every [`PROBE_EVERY`] runs each viewer's
    /// BWE is asked to probe again.
    delivery_runs: u64,
}

/// Every this many runs of the delivery policy (2 s) the viewers' BWE is asked to probe
/// for their desired rate again: an estimate that fell with its link would otherwise
/// climb back only as fast as its additive increase.
const PROBE_EVERY: u64 = 8;

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("viewers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(settings: HubSettings, metrics: Arc<Metrics>, demand: Demand, now: Instant) -> Self {
        Self {
            peers: Vec::new(),
            settings,
            epoch: now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            metrics,
            viewers_reported: 0,
            demand,
            targets: settings.bounds.configured(),
            layers: TrackMap::default(),
            next_delivery: now,
            delivery_runs: 0,
        }
    }

    /// Viewers currently held (connecting or connected).
    pub fn viewers(&self) -> usize {
        self.peers.len()
    }

    /// Admits a viewer whose offer was answered (by a [`Negotiator`]): returns its
    /// session id and the SDP answer, or refuses it when the hub is full.
    pub fn admit(
        &mut self,
        now: Instant,
        admission: Admission,
    ) -> Result<(SessionId, String), OfferError> {
        if self.peers.len() >= self.settings.max_viewers {
            return Err(OfferError::TooManyViewers(self.settings.max_viewers));
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
        let claims = TrackMap::from_fn(|t| tracks[t].is_some().then(|| self.demand.claim(t)));
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
            claims,
            link: Link::new(self.settings.bounds.initial_estimate_kbps()),
        });
        self.drive(now);
        Ok((id, answer))
    }

    /// Whether a session is held (connecting or connected).
    pub fn is_open(&self, id: &SessionId) -> bool {
        self.peers.iter().any(|p| &p.id == id)
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
        self.layers[frame.track].record(frame.temporal_layer, frame.data.len());
        for peer in &mut self.peers {
            if !peer.is_sent(frame.track, frame.temporal_layer) {
                continue;
            }
            match peer.write(frame, self.epoch) {
                Some(true) => m.sent.inc(),
                Some(false) if peer.connected => m.held_for_keyframe.inc(),
                _ => {}
            }
        }
        self.drive(now);
    }

    /// Time passed: drives retransmits, keep-alives, timeouts and the delivery policy.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_delivery {
            self.next_delivery = now + delivery::INTERVAL;
            self.deliver(now);
        }
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
        let delivery = if self.peers.is_empty() {
            idle
        } else {
            self.next_delivery
        };
        self.peers
            .iter()
            .map(Peer::deadline)
            .min()
            .unwrap_or(idle)
            .min(idle)
            .min(delivery)
    }

    /// Applies the delivery policy (see [`delivery`]): the encoders' targets from the
    /// connected viewers' best estimate, each viewer's level, what each viewer's BWE
    /// looks for; reports the figures.
    fn deliver(&mut self, now: Instant) {
        self.delivery_runs += 1;
        let bounds = self.settings.bounds;
        let shares = self.layers.map(LayerMeter::base_share);
        let best = self
            .peers
            .iter_mut()
            .filter(|p| p.connected)
            .filter_map(|p| Some((p.link.settled_kbps(now)?, p.link.level())))
            .max_by_key(|(estimate, _)| *estimate);
        // The encoders follow the best viewer, unless something outside the hub takes
        // the tracks at their configured rates.
        let following = self.settings.adaptive && !self.settings.keep_configured_rates;
        let targets = if following {
            bounds.targets(best, shares)
        } else {
            bounds.configured()
        };
        // Small moves are not worth an encoder reconfiguration.
        let moved = |a: u32, b: u32| a.abs_diff(b) * 20 > b;
        if moved(targets.context, self.targets.context)
            || moved(targets.source, self.targets.source)
        {
            self.targets = targets;
            self.events.push_back(HubEvent::EncoderTargets(targets));
        }
        // The encoders come down to their floors for the viewer they follow; any other
        // viewer pays what they send now.
        let followed = Ladder::new(bounds.floors(), shares);
        let current = Ladder::new(self.targets, shares);
        let mut stepped = false;
        for peer in self.peers.iter_mut().filter(|p| p.connected) {
            let own = peer.link.settled_kbps(now);
            let ladder = if following && own.is_some() && own == best.map(|(e, _)| e) {
                &followed
            } else {
                &current
            };
            let before = peer.link.level();
            if self.settings.adaptive
                && let Some(level) = peer.link.step(now, ladder)
            {
                stepped = true;
                self.metrics.delivery_steps(level).inc();
                tracing::info!(session = %peer.id, level = level.name(), estimate_kbps = ?peer.link.estimate_kbps(), "viewer's link stepped");
                if before.has_source() && !level.has_source() {
                    peer.claims.source = None;
                } else if !before.has_source()
                    && level.has_source()
                    && let Some(out) = peer.tracks.source.as_mut()
                {
                    out.awaiting_keyframe = true;
                    peer.claims.source = Some(self.demand.claim(Track::Source));
                    self.events
                        .push_back(HubEvent::KeyframeWanted(Track::Source));
                }
            }
            // A viewer sent everything looks for what the encoders would send at their
            // configured rates; any other for what the level above would cost it.
            // Sending less than that, its estimate can only climb back through probes:
            // raising the desired rate by 1 kbit/s asks str0m for a new one (a short
            // burst; padding the link continuously instead congested it).
            let nudge = u32::from(self.delivery_runs.is_multiple_of(PROBE_EVERY));
            let desired = peer
                .link
                .desired_kbps(ladder, bounds.initial_estimate_kbps())
                + nudge;
            peer.rtc
                .bwe()
                .set_bitrate(Bitrate::ZERO, Bitrate::kbps(u64::from(desired)));
        }
        let viewers = self
            .peers
            .iter()
            .map(|p| ViewerLink {
                session: p.id.as_str().chars().take(8).collect(),
                estimate_kbps: p.link.estimate_kbps(),
                level: p.link.level(),
            })
            .collect();
        self.events.push_back(HubEvent::Delivery(
            Delivery {
                target_kbps: self.targets,
                viewers,
            },
            stepped,
        ));
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
                            self.events.push_back(HubEvent::KeyframeWanted(t));
                        }
                    }
                    PeerNote::KeyframeRequest(t) => {
                        self.events.push_back(HubEvent::KeyframeRepair(t))
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
        let events = &mut self.events;
        self.peers.retain(|p| {
            let alive = p.is_alive();
            if !alive {
                tracing::info!(session = %p.id, "viewer gone");
                events.push_back(HubEvent::Ended(p.id.clone()));
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

    /// An offer as Chromium makes it for two recvonly video transceivers and a DataChannel.
    const CHROME_OFFER: &str = include_str!("../../../../tests/data/chrome-offer.sdp");

    /// Offers that never start ICE, and no connected viewer: the driver, woken by a frame
    /// every 33 ms and otherwise sleeping until `poll_timeout`, must still drop them at
    /// the connect timeout (they used to stay, holding viewer slots, for as long as no
    /// connected viewer had a timer due).
    #[test]
    fn offers_that_never_connect_are_dropped_at_the_connect_timeout_with_no_one_else() {
        let start = Instant::now();
        let negotiator = crate::doors::webrtc::negotiate::test_negotiator(true);
        let settings = HubSettings::for_tests(16);
        let metrics = Arc::new(Metrics::default());
        let mut hub = Hub::new(settings, metrics, Demand::new(), start);
        for _ in 0..3 {
            let admission = negotiator
                .answer(start, CHROME_OFFER, Access::Full)
                .unwrap();
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
