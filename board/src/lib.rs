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
//! * [`probe::Board`] says at run time what board this is, so nothing is decided at build time;
//!   [`devices`] lists the V4L2 device nodes the backends and `probe` look at.
//!
//! Frames live in a [`frame::FramePool`] so that steady-state capture allocates nothing.
//! A backend that is not compiled in is still present with the same API, answering
//! "not enabled in this build" (see [`source::SourceError::NotEnabled`]).
//!
//! ## Layers
//! Each module uses only the modules on the lines below its own (`tests/house.rs` keeps
//! it so, and that no folder's modules import each other in a circle), top first:
//! ```text
//! probe                                what this machine has, what `auto` takes
//! encode                               pictures to H.264
//! source                               where pictures come from
//! devices, frame, jpeg, scale, stamp   device nodes, frames, JPEG, scaling, the stamp
//! image                                4:2:0 pictures in the layouts cameras use
//! ```

pub mod devices;
pub mod encode;
pub mod frame;
pub mod image;
pub mod jpeg;
pub mod probe;
pub mod scale;
pub mod source;
pub mod stamp;
