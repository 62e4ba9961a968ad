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
#[cfg(test)]
mod virtual_time;

use std::fmt;

pub use hub::{Hub, HubEvent, HubSettings};
pub use negotiate::{Admission, NegotiateError, Negotiator, SendOffer};

/// A viewer session id: 128 random bits in hex, used in WHEP resource URLs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh id, or `None` when the OS cannot provide randomness: a guessable id would
    /// let anyone end another viewer's session through its WHEP URL.
    pub(crate) fn random() -> Option<Self> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).ok()?;
        Some(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    pub(crate) fn from_string(s: String) -> Self {
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
