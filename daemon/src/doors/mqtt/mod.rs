//! The MQTT control plane: a fleet console reaches every device through one broker.
//!
//! Topics, under a prefix (`focusd`) and the device id:
//!
//! | topic | direction | retained | payload |
//! |---|---|---|---|
//! | `available` | out | yes | `online`, `offline` (the broker's last will), `stopped` |
//! | `info` | out | yes | registration: id, name, version, board, encoder, URLs, tracks, modes |
//! | `state` | out | yes | the state JSON: at once after a command, else at most every 500 ms |
//! | `cmd` | in | | the shared command JSON |
//! | `cmd/result` | out | | `{"id","ok","error"?}` |
//! | `stats` | out | | telemetry every `mqtt.stats_interval_s` |
//! | `events` | out | | ROI detections, at most one a second |
//!
//! The payloads are the typed messages of [`crate::state::protocol`].
//!
//! * [`Session`] decides what to publish and when; it is sans-IO (time comes in as an
//!   argument) so its rules are tested without a broker.
//! * [`client`] drives it with rumqttc: connects, reconnects with capped exponential
//!   backoff and jitter, republishes what is retained on every connect, and never blocks:
//!   requests go into a bounded queue, and what does not fit is counted and dropped (state
//!   is coalesced, so only its latest value matters).
//!
//! The broker's URL is part of the configuration: [`crate::config::Broker`].

pub mod client;
mod session;
pub mod telemetry;

pub use session::{Kind, Out, Session};
