//! The video path: capture, shaping by mode, encoding once per track.
//!
//! ```text
//! source ─► capture thread ─► [slot] ─► context encoder ─────────┐
//!                  │        ─► [slot] ─► mask ─► source encoder ──┼─► fan-out
//!                  ├──────────► [slot] ─► ROI detector            │
//!                  └──────────► picture feed (fan-out)
//! ```
//! * [`pipeline`]: opens the source and the encoders and starts the threads;
//! * [`capture`]: the capture thread;
//! * [`encoder`]: one encoder thread per track;
//! * [`reopen`]: the backoff both use to reopen a device that failed;
//! * [`slot`]: the one-frame "latest wins" hand-over between them;
//! * [`mask`]: what the source track shows in each mode;
//! * [`signals`]: keyframe requests, the demand for each track and the encoders' target
//!   bitrates, shared lock-free.
//!
//! Where the frames go next is [`crate::fanout`]; the pulse the threads mark is
//! [`crate::service::liveness`].

pub mod capture;
mod encoder;
pub mod mask;
pub mod pipeline;
mod reopen;
pub mod signals;
pub mod slot;
