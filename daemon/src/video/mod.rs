//! The video path: capture, shaping by mode, encoding once per track.
//!
//! ```text
//! source ─► capture thread ─► [slot] ─► context encoder ─┐
//!                  │        ─► [slot] ─► mask ─► source encoder ──┼─► hub queue
//!                  └──────────► [slot] ─► ROI detector            │
//! ```
//! * [`pipeline`]: the capture thread and one encoder thread per track;
//! * [`slot`]: the one-frame "latest wins" hand-over between them;
//! * [`mask`]: what the source track shows in each mode;
//! * [`feed`]: the newest frame, for the doors that serve pictures instead of H.264;
//! * [`taps`]: each track's encoded frames, for the doors that take H.264 beside the hub;
//! * [`signals`]: keyframe requests and the pipeline's pulse, shared lock-free;
//! * [`track`]: the two tracks and the encoded frames they carry.

pub mod feed;
pub mod mask;
pub mod pipeline;
pub mod signals;
pub mod slot;
pub mod taps;
pub mod track;
