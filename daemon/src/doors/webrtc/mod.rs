//! WebRTC for viewers: a sans-IO [`Hub`] that owns every viewer's str0m `Rtc` and fans the
//! encoded tracks out to them, and a [`server`] that drives it with real sockets and time.
//!
//! The hub is a state machine in str0m's style: feed it answered offers, datagrams, encoded
//! frames and timeouts; drain datagrams to send and [`HubEvent`]s. It reads no clock and
//! owns no socket, so tests can drive it with any time they like. Offers are answered
//! before they reach it, by a [`Negotiator`] on the caller's task.

pub mod delivery;
#[cfg(test)]
mod fuzz;
mod hub;
mod negotiate;
mod peer;
pub mod reflexive;
pub mod sdp;
pub mod server;

pub use hub::{Hub, HubEvent, HubSettings, SessionId};
pub use negotiate::{Admission, NegotiateError, Negotiator, SendOffer};

/// Why an offer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// The SDP cannot be parsed or is not an offer we can use.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// The offer has no video m-line to send the tracks on.
    #[error("offer has no video m-line")]
    NoVideo,
    /// No video m-line offers H.264 with packetization-mode 1.
    #[error("offer has no H.264 (packetization-mode=1) video codec")]
    NoH264,
    /// The configured maximum number of viewers is reached.
    #[error("too many viewers (limit {0})")]
    TooManyViewers(usize),
    /// The operating system could not provide randomness for a session id.
    #[error("no randomness available for a session id")]
    NoRandomness,
    /// The daemon is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}
