//! The end-to-end tests: one test binary (`--test end_to_end`), a module per topic, so
//! the daemon, tract and the media stack are linked once. Each runs the daemon (in this
//! process, or as the binary) against real peers: str0m, Chromium, aiortc, GStreamer,
//! ffmpeg, Janus, mosquitto, and in `tests/v4l2vm.sh` real kernel drivers.
//!
//! Run one topic with a filter: `cargo test --release --test end_to_end -- webrtc::`.

mod access;
mod aiortc;
mod browser;
mod gstreamer;
mod house;
mod http;
mod libcamera;
mod pictures;
mod roi;
mod rtsp_server;
mod v4l2;
mod vision;
mod webrtc;
