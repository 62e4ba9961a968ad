#!/usr/bin/env bash
# RUSTC_WORKSPACE_WRAPPER of tests/run.sh: the workspace's crates are compiled by
# clippy-driver, which lints them as `cargo clippy --all-targets -- -D warnings` does and
# writes the real artifacts, so the release build is the lint run and the dependencies
# are compiled once (cargo clippy would compile them all again, in check mode).
# cargo calls it as `clippy-driver.sh RUSTC ARGS...`; clippy-driver takes the same form.
exec "$(rustc --print sysroot)/bin/clippy-driver" "$@" -D warnings
