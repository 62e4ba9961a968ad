//! The board crate's backends against real software and drivers: one test binary
//! (`--test backends`), a module per backend. The V4L2 devices' tests need kernel drivers
//! and run in `tests/v4l2vm.sh`'s VM (`v4l2_devices::`, `v4l2_m2m::`).

mod gst;
mod v4l2_devices;
mod v4l2_m2m;
mod v4l2_read;
