//! The daemon as a service: what systemd and monitoring see of it.
//!
//! * [`sd_notify`]: readiness, the watchdog and the status line for systemd;
//! * [`liveness`]: the pipeline's pulse, which the watchdog and `/healthz` read;
//! * [`metrics`]: the counters behind `/metrics` and MQTT stats;
//! * [`procfs`]: the process's CPU and memory, from `/proc`;
//! * [`supervisor`]: long-running tasks restarted when they panic, and reported.

pub mod liveness;
pub mod metrics;
pub mod procfs;
pub mod sd_notify;
pub mod supervisor;
