#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what it needs, then runs
# formatting and lint checks, every unit and end-to-end test, the cross builds for the
# boards (arm64, armhf) with their packages, the board binaries' tests under qemu-user,
# and a short benchmark.
# Usage: tests/run.sh            (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v nasm >/dev/null || need+=(nasm)
[ -x /usr/lib/chromium/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs npm)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v openssl >/dev/null || need+=(openssl)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v aarch64-linux-gnu-gcc >/dev/null ||
  need+=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null ||
  need+=(gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross)

if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "browser driver (playwright-core, no browser download)"
npm ci --prefix tests --no-audit --no-fund --loglevel=error

step "real footage (vtest.avi from Debian's opencv-doc)"
bash tests/media.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --release -- -D warnings

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# Runs a cargo test command, keeping its output for the summary; a failure is counted,
# and the remaining steps still run.
tests() {
  "$@" 2>&1 | grep -v '^\[OpenH264\]' | tee -a "$log" || status=1
}

step "tests (unit + end-to-end, optimised build: profile ci)"
tests cargo test --workspace --profile ci

step "the release build (what ships; for the .deb, systemd and benchmark steps)"
cargo build --release --locked -p focusd

step "the amd64 .deb under a real systemd (debootstrap root, systemd as PID 1 of a namespace)"
deb=$(bash packaging/deb/assemble.sh target/release/focusd amd64 target/debian)
boot_passed=0 boot_failed=0
if bash tests/systemd-boot.sh "$deb" 2>&1 | grep -v '^\[OpenH264\]'; then
  boot_passed=1
else
  boot_failed=1 status=1
fi

boards=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
step "cross builds and .deb packages for the boards"
bash cross/build.sh "${boards[@]}"

for target in "${boards[@]}"; do
  step "$target: unit tests under qemu-user"
  tests cargo test --profile ci --target "$target" -p focusd-board -p focusd --lib
  step "$target: binary and package tests (smoke, sd_notify, exit codes, .deb) under qemu-user"
  FOCUSD_TARGET=$target tests cargo test --profile ci -p focusd --test cli --test service --test package
done

step "benchmark (short; figures only, no pass/fail)"
target/release/focusd bench --seconds 4 --viewers 8 --footage tests/.media/vtest.y4m

step "summary"
passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed;?$/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed;?$/) s += $i } END { print s + 0 }' "$log")
passed=$((passed + boot_passed)) failed=$((failed + boot_failed))
echo "tests: $passed passed, $failed failed"
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then
  echo "a test command failed before reporting results (see above)"
fi
exit "$status"
