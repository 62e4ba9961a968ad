//! The daemon's one state and its schema.
//!
//! * [`control`]: [`Control`], the one owner of mode, rectangle, ROI and counters, which
//!   every door and the video path share;
//! * [`command`]: the one command schema and its validation, for every door;
//! * [`protocol`]: every message the doors send, typed once;
//! * [`streams`]: which picture doors are open and what each may take.

pub mod command;
pub mod control;
pub mod protocol;
pub mod streams;

pub use control::{
    Bitrates, Control, Delivery, Fault, LinkLevel, Part, RoiBox, Shaping, State, ViewerLink,
    unix_ms,
};
