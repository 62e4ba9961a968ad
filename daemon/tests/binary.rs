//! The `focusd` binary itself, as operators and systemd run it: one test binary
//! (`--test binary`), a module per topic. `tests/run.sh` also runs `cli::`, `service::`
//! and `package::` against each board's binary under qemu-user (`FOCUSD_TARGET`).

mod cli;
mod detector;
mod mqtt;
mod package;
mod service;
