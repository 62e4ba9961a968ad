//! One viewer: its str0m `Rtc`, which mid carries which track, and its `commands` channel.

use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{MediaTime, Mid, Pt};
use str0m::{Event, IceConnectionState, Output, Rtc};

use super::SessionId;
use super::delivery::{self, Link};
use crate::state::command::Access;
use crate::track::{EncodedFrame, Track, TrackMap};
use crate::video::signals::Claim;

/// A viewer that has not connected by then is dropped.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The playout delay asked of the viewer, in hundredths of a second (the extension's
/// unit): at least none, so that Chromium renders each frame as soon as it is decoded, at
/// most 0.4 s, which its low-latency renderer needs (at most 0.5 s) and which leaves room
/// for a retransmission over a slow link.
const PLAYOUT_DELAY: (u64, u64) = (0, 40);

/// A track this viewer receives.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub mid: Mid,
    pub pt: Pt,
    /// Nothing is sent until a keyframe: a decoder cannot start on a P-frame.
    pub awaiting_keyframe: bool,
}

/// What a peer tells the hub after it was polled.
#[derive(Debug)]
pub(super) enum PeerNote {
    /// ICE and DTLS are up: the viewer needs a keyframe on each track.
    Connected,
    /// The viewer asked for a keyframe (PLI/FIR) on a track.
    KeyframeRequest(Track),
    /// The `commands` channel opened.
    CommandsOpen,
    /// A message arrived on the `commands` channel.
    Command(Vec<u8>),
}

#[derive(Debug)]
pub(super) struct Peer {
    pub id: SessionId,
    pub rtc: Rtc,
    /// Indexed by [`Track`]; `None` when the offer had fewer video m-lines.
    pub tracks: TrackMap<Option<Outgoing>>,
    pub commands: Option<ChannelId>,
    /// What its `commands` channel may do (the token it signed up with).
    pub access: Access,
    pub created: Instant,
    pub connected: bool,
    /// When str0m next wants a timeout.
    pub timeout: Instant,
    /// Addresses this viewer's STUN requests came from (a few at most).
    pub stun_sources: Vec<std::net::SocketAddr>,
    /// Whether each frame asks it for no playout delay.
    pub low_latency_playout: bool,
    /// Its claims on the tracks it is sent, released when it is dropped (or, for the
    /// source, while its link carries the context only).
    pub claims: TrackMap<Option<Claim>>,
    /// Its bandwidth estimate and what it is sent.
    pub link: Link,
}

impl Peer {
    /// When the hub must next act on this peer: str0m's next timer, and for a viewer not
    /// connected yet its connect deadline (str0m sets no timer for a peer that never
    /// starts ICE).
    pub fn deadline(&self) -> Instant {
        if self.connected {
            self.timeout
        } else {
            self.timeout.min(self.created + CONNECT_TIMEOUT)
        }
    }

    /// Finds the H.264 payload type negotiated on `mid`, preferring constrained baseline.
    pub fn h264_pt(rtc: &mut Rtc, mid: Mid) -> Option<Pt> {
        let writer = rtc.writer(mid)?;
        let mut best: Option<(u8, Pt)> = None;
        for p in writer.payload_params() {
            let spec = p.spec();
            if spec.codec != Codec::H264 || spec.format.packetization_mode != Some(1) {
                continue;
            }
            let rank = match spec.format.profile_level_id {
                Some(0x42e01f) => 0,
                Some(id) if id >> 16 == 0x42 => 1,
                _ => 2,
            };
            if best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, p.pt()));
            }
        }
        best.map(|(_, pt)| pt)
    }

    pub fn is_alive(&self) -> bool {
        self.rtc.is_alive()
    }

    /// Whether its link lets it be sent a frame of `track` in temporal layer `layer` now.
    pub fn is_sent(&self, track: Track, layer: u8) -> bool {
        delivery::sends(self.link.level(), track, layer)
    }

    /// Writes one frame if this viewer has the track and can decode from here.
    /// Returns `Some(sent)`: whether it was written; `None` if the viewer lacks the track.
    pub fn write(&mut self, frame: &EncodedFrame, epoch: Instant) -> Option<bool> {
        if !self.connected {
            return Some(false);
        }
        let out = self.tracks[frame.track].as_mut()?;
        if out.awaiting_keyframe && !frame.keyframe {
            return Some(false);
        }
        let (mid, pt) = (out.mid, out.pt);
        let ticks = frame
            .captured_at
            .saturating_duration_since(epoch)
            .as_micros() as u64
            * 9
            / 100;
        let mut writer = self.rtc.writer(mid)?;
        if self.low_latency_playout {
            writer = writer.playout_delay(
                MediaTime::from_hundredths(PLAYOUT_DELAY.0),
                MediaTime::from_hundredths(PLAYOUT_DELAY.1),
            );
        }
        match writer.write(
            pt,
            frame.captured_at,
            MediaTime::from_90khz(ticks),
            frame.data.clone(),
        ) {
            Ok(()) => {
                if let Some(out) = self.tracks[frame.track].as_mut() {
                    out.awaiting_keyframe = false;
                }
                Some(true)
            }
            Err(e) => {
                tracing::debug!(session = %self.id, error = %e, "write failed");
                Some(false)
            }
        }
    }

    /// Sends text on the `commands` channel, if open.
    pub fn send_text(&mut self, text: &str) {
        let Some(cid) = self.commands else { return };
        if let Some(mut ch) = self.rtc.channel(cid)
            && let Err(e) = ch.write(false, text.as_bytes())
        {
            tracing::debug!(session = %self.id, error = %e, "datachannel write failed");
        }
    }

    fn track_of(&self, mid: Mid) -> Option<Track> {
        Track::ALL
            .into_iter()
            .find(|t| self.tracks[*t].as_ref().is_some_and(|o| o.mid == mid))
    }

    /// Drains str0m's output until it asks for a timeout. Datagrams go to `transmit`,
    /// things the hub must act on go to `notes`.
    pub fn drain(
        &mut self,
        transmit: &mut impl FnMut(str0m::net::Transmit),
        notes: &mut Vec<PeerNote>,
    ) {
        while self.rtc.is_alive() {
            let output = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::info!(session = %self.id, error = %e, "viewer failed");
                    self.rtc.disconnect();
                    break;
                }
            };
            match output {
                Output::Timeout(t) => {
                    self.timeout = t;
                    break;
                }
                Output::Transmit(t) => transmit(t),
                Output::Event(event) => self.on_event(event, notes),
            }
        }
    }

    fn on_event(&mut self, event: Event, notes: &mut Vec<PeerNote>) {
        match event {
            Event::Connected => {
                self.connected = true;
                for out in [&mut self.tracks.context, &mut self.tracks.source]
                    .into_iter()
                    .flatten()
                {
                    out.awaiting_keyframe = true;
                }
                notes.push(PeerNote::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::info!(session = %self.id, "viewer unreachable (ICE disconnected)");
                self.rtc.disconnect();
            }
            Event::Closed => self.rtc.disconnect(),
            Event::KeyframeRequest(req) => {
                if let Some(track) = self.track_of(req.mid) {
                    notes.push(PeerNote::KeyframeRequest(track));
                }
            }
            Event::ChannelOpen(cid, label) if label == "commands" => {
                self.commands = Some(cid);
                notes.push(PeerNote::CommandsOpen);
            }
            Event::ChannelData(data) if Some(data.id) == self.commands => {
                notes.push(PeerNote::Command(data.data));
            }
            Event::ChannelClose(cid) if Some(cid) == self.commands => self.commands = None,
            Event::EgressBitrateEstimate(
                BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. },
            ) => self.link.set_estimate((estimate.as_u64() / 1000) as u32),
            _ => {}
        }
    }
}
