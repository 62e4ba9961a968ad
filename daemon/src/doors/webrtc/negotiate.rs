//! Answering a viewer's offer, and offering to a peer that answers (WHIP): everything a
//! new session needs before the hub takes it in.
//!
//! A [`Negotiator`] is shared by the HTTP handlers and runs on the caller's task, so that an
//! answer never waits behind the hub's frame fan-out; the hub only admits the result
//! ([`super::Hub::admit`]). Its DTLS certificate is made once, when the daemon starts:
//! making one per viewer cost a key generation on every offer. Sharing it is what browsers
//! do for every connection of a page; each DTLS session still has its own keys.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::rtp::Extension;
use str0m::{Candidate, Rtc};

use super::OfferError;
use super::SessionId;
use super::peer::{Outgoing, Peer};
use super::reflexive::Reflexive;
use super::sdp;
use crate::state::command::Access;
use crate::track::{Track, TrackMap};

/// The RTP header extension id str0m starts `playout-delay` at (unused by its standard
/// map); the offer's own id replaces it.
const PLAYOUT_DELAY_ID: u8 = 12;

/// Why the negotiator could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiateError {
    /// The crypto provider could not make a DTLS certificate.
    #[error("cannot make a DTLS certificate")]
    Certificate,
}

/// Answers viewers' offers and makes offers to peers that answer (WHIP); cheap to share
/// behind an `Arc`, callable from any thread.
pub struct Negotiator {
    /// Offered to every viewer: a host candidate per bound socket, then the sockets'
    /// public addresses as server-reflexive ones.
    candidates: Vec<Candidate>,
    /// The DTLS certificate every viewer's session uses.
    cert: DtlsCert,
    /// Whether viewers are asked for no playout delay (`playout-delay`).
    low_latency_playout: bool,
    /// Where each viewer's bandwidth estimate starts: what both tracks are configured to.
    initial_estimate: Bitrate,
}

impl std::fmt::Debug for Negotiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Negotiator")
            .field("candidates", &self.candidates)
            .finish_non_exhaustive()
    }
}

/// A viewer whose offer was answered, for the hub to admit.
#[derive(Debug)]
pub struct Admission {
    pub(super) id: SessionId,
    pub(super) rtc: Rtc,
    pub(super) tracks: TrackMap<Option<Outgoing>>,
    pub(super) access: Access,
    /// When the offer was answered: the connect timeout runs from here.
    pub(super) created: Instant,
    /// The SDP answer, for the viewer.
    pub(super) answer: String,
    /// Whether each frame asks the viewer for no playout delay.
    pub(super) low_latency_playout: bool,
}

impl Admission {
    /// The session id the viewer will be known by.
    pub fn id(&self) -> &SessionId {
        &self.id
    }
}

impl Negotiator {
    /// An negotiator offering `candidates`, with a fresh DTLS certificate, asking viewers
    /// for no playout delay when `low_latency_playout`, their bandwidth estimates starting
    /// at `initial_kbps`. Installs str0m's crypto provider for the process.
    pub fn new(
        candidates: Vec<SocketAddr>,
        reflexive: Vec<Reflexive>,
        low_latency_playout: bool,
        initial_kbps: u32,
    ) -> Result<Negotiator, NegotiateError> {
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or(NegotiateError::Certificate)?;
        provider.install_process_default();
        let host = candidates.iter().map(|a| (*a, Candidate::host(*a, "udp")));
        let reflexive = reflexive.iter().map(|r| {
            (
                r.public,
                Candidate::server_reflexive(r.public, r.base, "udp"),
            )
        });
        let candidates = host
            .chain(reflexive)
            .filter_map(|(addr, c)| {
                c.inspect_err(|e| tracing::warn!(%addr, error = %e, "unusable candidate"))
                    .ok()
            })
            .collect();
        Ok(Negotiator {
            candidates,
            cert,
            low_latency_playout,
            initial_estimate: Bitrate::kbps(u64::from(initial_kbps)),
        })
    }

    /// Answers `offer` for a viewer whose DataChannel commands get `access`.
    pub fn answer(
        &self,
        now: Instant,
        offer: &str,
        access: Access,
    ) -> Result<Admission, OfferError> {
        let (video_mids, mut rtc, answer) = refuse_panics("the offer", || {
            let checked = sdp::check_offer(offer)?;
            let mut rtc = self.rtc(now);
            let answer = rtc.sdp_api().accept_offer(checked.offer).map_err(|e| {
                OfferError::Malformed(e.to_string().lines().next().unwrap_or("").to_string())
            })?;
            Ok((checked.video_mids, rtc, answer))
        })?;

        let mut tracks: TrackMap<Option<Outgoing>> = TrackMap::default();
        for (track, mid) in Track::ALL.iter().zip(&video_mids) {
            let mid = Mid::from(mid.as_str());
            let Some(pt) = Peer::h264_pt(&mut rtc, mid) else {
                continue;
            };
            tracks[*track] = Some(Outgoing {
                mid,
                pt,
                awaiting_keyframe: true,
            });
        }
        if tracks.context.is_none() {
            return Err(OfferError::NoH264);
        }
        let id = SessionId::random().ok_or(OfferError::NoRandomness)?;
        let answer = sdp::finish_answer(&answer.to_sdp_string(), &["context", "source"]);
        Ok(Admission {
            id,
            rtc,
            tracks,
            access,
            created: now,
            answer,
            low_latency_playout: self.low_latency_playout,
        })
    }

    /// An offer to send both tracks to a peer that answers (a WHIP endpoint): no
    /// DataChannel (WHIP servers differ on them), commands stay with HTTP and MQTT.
    pub fn offer(&self, now: Instant) -> SendOffer {
        let mut rtc = self.rtc(now);
        let mut api = rtc.sdp_api();
        let mids = TrackMap::from_fn(|t| {
            api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some("focusd".into()),
                Some(t.name().into()),
                None,
            )
        });
        // Two media were added, so there is a change to offer.
        let (offer, pending) = api.apply().expect("an offer with two media");
        SendOffer {
            sdp: offer.to_sdp_string(),
            rtc,
            pending,
            mids,
            created: now,
            low_latency_playout: self.low_latency_playout,
        }
    }

    /// A viewer's `Rtc`, on the shared certificate and candidates.
    fn rtc(&self, now: Instant) -> Rtc {
        // TWCC feedback from the viewer feeds a bandwidth estimate per viewer, which the
        // delivery policy reads; it also paces what is sent (at 1.1× the estimate), so a
        // keyframe does not leave in one burst.
        let mut config = Rtc::builder()
            .clear_codecs()
            .set_dtls_cert(self.cert.clone())
            .enable_bwe(Some(self.initial_estimate));
        if self.low_latency_playout {
            // Lets the browser render each frame as soon as it is decoded (see
            // `peer::PLAYOUT_DELAY`).
            config = config.set_extension(PLAYOUT_DELAY_ID, Extension::PlayoutDelay);
        }
        // Constrained baseline first (what we encode), plain baseline as a fallback for
        // browsers that only list 42001f; both decode our stream.
        config
            .codec_config()
            .add_h264(108.into(), Some(109.into()), true, 0x42e01f);
        config
            .codec_config()
            .add_h264(127.into(), Some(121.into()), true, 0x42001f);
        // STUN retries back off to at most 1.5 s (str0m's default is 3 s), so a viewer that
        // vanished is noticed and counted out after ~11 s instead of ~21 s.
        config.set_max_stun_rto(Duration::from_millis(1500));
        let mut rtc = config.build(now);
        for c in &self.candidates {
            rtc.add_local_candidate(c.clone());
        }
        rtc
    }
}

/// An offer made to send both tracks ([`Negotiator::offer`]), waiting for its answer.
pub struct SendOffer {
    /// The SDP to send.
    pub sdp: String,
    rtc: Rtc,
    pending: SdpPendingOffer,
    mids: TrackMap<Mid>,
    created: Instant,
    low_latency_playout: bool,
}

impl std::fmt::Debug for SendOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendOffer").finish_non_exhaustive()
    }
}

impl SendOffer {
    /// Takes the peer's answer: the session, ready for the hub to admit. Its commands
    /// channel, were one opened, could only watch.
    pub fn accept(mut self, answer: &str) -> Result<Admission, OfferError> {
        sdp::check_ice(answer).map_err(|e| match e {
            OfferError::Malformed(why) => OfferError::Malformed(format!("answer: {why}")),
            other => other,
        })?;
        let (rtc, pending) = (&mut self.rtc, self.pending);
        refuse_panics("the answer", move || {
            let answer = SdpAnswer::from_sdp_string(answer)
                .map_err(|e| OfferError::Malformed(format!("answer: {e}")))?;
            rtc.sdp_api()
                .accept_answer(pending, answer)
                .map_err(|e| OfferError::Malformed(format!("answer: {e}")))
        })?;
        let mut tracks: TrackMap<Option<Outgoing>> = TrackMap::default();
        for track in Track::ALL {
            let mid = self.mids[track];
            if let Some(pt) = Peer::h264_pt(&mut self.rtc, mid) {
                tracks[track] = Some(Outgoing {
                    mid,
                    pt,
                    awaiting_keyframe: true,
                });
            }
        }
        if tracks.context.is_none() && tracks.source.is_none() {
            return Err(OfferError::NoH264);
        }
        Ok(Admission {
            id: SessionId::random().ok_or(OfferError::NoRandomness)?,
            rtc: self.rtc,
            tracks,
            access: Access::ViewOnly,
            created: self.created,
            answer: String::new(),
            low_latency_playout: self.low_latency_playout,
        })
    }
}

/// Runs str0m's handling of a peer's SDP, a panic inside it (the property test in
/// `fuzz.rs` found offers that trip its assertions) becoming a refusal of that SDP: the
/// half-made session is thrown away, and the caller answers 400.
fn refuse_panics<T>(
    what: &str,
    handle: impl FnOnce() -> Result<T, OfferError>,
) -> Result<T, OfferError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(handle)).unwrap_or_else(|panic| {
        let why = crate::service::supervisor::panic_message(panic.as_ref());
        tracing::warn!("{what} made the WebRTC stack panic: {why}");
        Err(OfferError::Malformed(format!(
            "{what} made the WebRTC stack fail: {}",
            why.chars().take(120).collect::<String>()
        )))
    })
}

/// An negotiator on one loopback candidate, for the hub's tests and these.
#[cfg(test)]
pub(super) fn test_negotiator(low_latency_playout: bool) -> Negotiator {
    Negotiator::new(
        vec!["127.0.0.1:5000".parse().expect("an address")],
        Vec::new(),
        low_latency_playout,
        2800,
    )
    .expect("a certificate")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chromium's offer for two recvonly video transceivers and a DataChannel, as the
    /// viewer page makes it (every codec and header extension it has).
    const CHROMIUM_OFFER: &str = include_str!("../../../../tests/data/chromium-offer.sdp");

    #[test]
    fn answers_share_the_certificate_and_carry_playout_delay() {
        let negotiator = test_negotiator(true);
        let a = negotiator
            .answer(Instant::now(), CHROMIUM_OFFER, Access::Full)
            .unwrap();
        let b = negotiator
            .answer(Instant::now(), CHROMIUM_OFFER, Access::Full)
            .unwrap();
        let fingerprint = |sdp: &str| {
            sdp.lines()
                .find(|l| l.starts_with("a=fingerprint:"))
                .map(str::to_owned)
        };
        assert!(fingerprint(&a.answer).is_some(), "{}", a.answer);
        assert_eq!(fingerprint(&a.answer), fingerprint(&b.answer));
        assert_ne!(a.id, b.id);
        assert!(
            a.answer.contains("rtp-hdrext/playout-delay"),
            "the answer accepts Chromium's playout-delay: {}",
            a.answer
        );
        let plain = test_negotiator(false);
        let c = plain
            .answer(Instant::now(), CHROMIUM_OFFER, Access::Full)
            .unwrap();
        assert!(!c.answer.contains("playout-delay"), "{}", c.answer);
    }
}
