//! The doors to the daemon: each turns a protocol into commands on the one state and
//! carries the video and the state out.
//!
//! * [`http`]: signalling (`/offer`, WHEP), the state API, the viewer page, metrics,
//!   health;
//! * [`webrtc`]: the viewers: a sans-IO hub over str0m and the server that drives it;
//! * [`pictures`]: snapshots, MJPEG and pictures over WebSockets, from the same frames;
//! * [`rtsp`]: both tracks' H.264 over RTSP for NVRs and players;
//! * [`mqtt`]: registration with a fleet broker, commands and telemetry;
//! * [`relay`]: both tracks as RTP to a relay (Janus) that fans them out;
//! * [`whip`]: both tracks published to an SFU by WHIP;

pub mod http;
pub mod mqtt;
pub mod pictures;
pub mod relay;
pub mod rtsp;
pub mod webrtc;
pub mod whip;
