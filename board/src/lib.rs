//! Hardware seams of focusd: where frames come from and how they become H.264.
//!
//! The daemon sees three small interfaces and nothing board specific:
//!
//! * [`source::FrameSource`] yields 4:2:0 pictures at a pace (the `test` pattern, a looping
//!   `.y4m` file, and, behind cargo features, V4L2 / libcamera / GStreamer capture), in the
//!   [`image::Layout`] it declares (I420 or NV12, its own strides), and optionally its own
//!   low-resolution picture so the pipeline scales only when the source cannot;
//! * [`encode::VideoEncoder`] turns pictures into H.264 access units, pipelined as hardware
//!   is (openh264 in software; hardware encoders join behind features);
//! * [`probe::Board`] says at run time what board this is, so nothing is decided at build time.
//!
//! Frames live in a [`frame::FramePool`] so that steady-state capture allocates nothing.
//! A backend that is not compiled in is still present with the same API, answering
//! "not enabled in this build" (see [`source::SourceError::NotEnabled`]).

pub mod encode;
pub mod frame;
pub mod image;
pub mod jpeg;
pub mod probe;
pub mod scale;
pub mod source;
pub mod stamp;
