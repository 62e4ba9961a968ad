#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what it needs, then runs
# formatting and lint checks, every unit and end-to-end test, and a short benchmark.
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

step "tests (unit + end-to-end, release build)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --release 2>&1 | grep -v '^\[OpenH264\]' | tee "$log"
passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed;?$/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed;?$/) s += $i } END { print s + 0 }' "$log")

step "benchmark (short; figures only, no pass/fail)"
target/release/focusd bench --seconds 4 --viewers 8 --footage tests/.media/vtest.y4m

step "summary"
echo "tests: $passed passed, $failed failed"
