#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what it needs, then runs
# formatting and lint checks, every unit and end-to-end test, the cross build for the
# boards (arm64; armhf with FOCUSD_BOARDS) with their packages, the board binaries' tests
# under qemu-user, and a short benchmark. Prints each step's wall time at the end.
# Usage: tests/run.sh            (from anywhere)
#
# Everything is built once per target with the one optimised profile (`release`): the
# tests, the packages, the systemd boot and the benchmark run the same binaries. The boards'
# build runs in the background at the lowest priority (in target/boards/, so that neither
# build waits for the other's lock) and fills the cores the x86 steps leave idle, the tests
# included; the benchmark runs beside it, and the boards' binaries are tested while their
# unit tests build.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=cross/env.sh
source cross/env.sh # focusd_deb_arch, focusd_cross_env

# The boards built, packaged and tested under qemu-user: arm64 (Pi 4/5 with a 64-bit OS,
# Jetson). armhf (32-bit Raspberry Pi OS) costs as much again and is left to
# FOCUSD_BOARDS="aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf" tests/run.sh.
read -r -a boards <<<"${FOCUSD_BOARDS:-aarch64-unknown-linux-gnu}"
# The hardware backends the x86 build here has: V4L2 capture, the V4L2 M2M encoder and
# GStreamer, with the end-to-end tests of the GStreamer backend (the root package's feature).
features=(--features focusd/v4l2,focusd/v4l2-m2m,focusd-testkit/gstreamer)
step_names=() step_secs=() step_busy=() step_started=$SECONDS
# The machine's CPU time so far, every process's (the background builds' too), in
# core-seconds: busy (user, nice, system, irq, softirq, steal) and idle.
clk_tck=$(getconf CLK_TCK)
cpu_ticks() {
  awk -v hz="$clk_tck" '/^cpu / { printf "%d %d\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz, ($5 + $6) / hz }' /proc/stat
}
read -r busy_started idle_started < <(cpu_ticks)
busy_at_start=$busy_started idle_at_start=$idle_started
# Closes the running step (its wall time and the cores' busy time are kept for the
# summary) and opens the next one.
step() {
  local busy idle
  read -r busy idle < <(cpu_ticks)
  if [ ${#step_names[@]} -gt 0 ]; then
    step_secs+=($((SECONDS - step_started)))
    step_busy+=("$((busy - busy_started)) $((idle - idle_started))")
  fi
  step_names+=("$*") step_started=$SECONDS busy_started=$busy idle_started=$idle
  printf '\n==> %s\n' "$*"
}

step "system packages"
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v nasm >/dev/null || need+=(nasm)
# The V4L2 backend's build: bindgen (libclang) for the kernel's headers, cmake for
# libjpeg-turbo.
[ -e /usr/lib/llvm-14/lib/libclang.so ] || need+=(libclang-dev)
command -v cmake >/dev/null || need+=(cmake)
# The GStreamer backend: its libraries and RTSP server (the RTSP door), Debian's plugins
# (x264enc, decodebin, RTSP), and GStreamer's RTSP server for the tests of the RTSP source
# (python3-gi, through Debian's own python3).
pkg-config --exists gstreamer-app-1.0 gstreamer-video-1.0 gstreamer-rtsp-server-1.0 2>/dev/null ||
  need+=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev)
gst-inspect-1.0 x264enc >/dev/null 2>&1 ||
  need+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav)
/usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null ||
  need+=(python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0)
# libcamera and its GStreamer element for the vimc camera in the VM (the VM mounts this
# machine's filesystem); `cam` to look at it by hand.
gst-inspect-1.0 libcamerasrc >/dev/null 2>&1 ||
  need+=(libcamera-tools libcamera-ipa gstreamer1.0-libcamera)
[ -x /usr/lib/chromium/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs npm)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mosquitto >/dev/null || need+=(mosquitto)
# The relay door's peer: Janus's Streaming plugin (each test starts its own).
command -v janus >/dev/null || need+=(janus)
command -v openssl >/dev/null || need+=(openssl)
# An HTTPS and HTTP/2 client for the TLS tests.
command -v curl >/dev/null || need+=(curl)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
# The boards' GStreamer comes from Debian sysroots (cross/sysroot.sh).
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v aarch64-linux-gnu-gcc >/dev/null ||
  need+=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross)
if [[ " ${boards[*]} " == *" armv7-unknown-linux-gnueabihf "* ]]; then
  command -v arm-linux-gnueabihf-gcc >/dev/null ||
    need+=(gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross)
fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add "${boards[@]}" >/dev/null
cargo fetch --locked >/dev/null

# Background work, each job in a process group of its own, ended with the script.
jobs_to_end=()
tmp=$(mktemp -d /tmp/focusd-run.XXXXXX)
log="$tmp/tests.log"
trap 'for j in "${jobs_to_end[@]}"; do kill -CONT -- "-$j" 2>/dev/null || true; kill -- "-$j" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT

# Background jobs run at the lowest priority, each in a session of its own (so that it
# can be ended as a group). With the kernel's autogroup scheduling (Debian's default) a
# new session is a new scheduling group, and `nice` counts only inside it: without
# lowering the group's own weight too (/proc/self/autogroup), each background job took
# an equal share of the two cores from the x86 build (its 1970 s cold, against 630 s
# alone).
lowest='echo 19 >/proc/self/autogroup 2>/dev/null || true; exec nice -n 19 "$@"'

# The boards' binaries, packages and unit-test binaries; a file says when the binaries
# and packages are done.
boards_dir=target/boards
binaries_built="$tmp/boards-binaries-built"
setsid bash -c "$lowest" lowest bash -c '
  set -e
  boards_dir=$1 binaries_built=$2; shift 2
  flags=(); for t in "$@"; do flags+=(--target "$t"); done
  export CARGO_TARGET_DIR=$boards_dir
  # The boards sysroots (GStreamer), and the environment every board build here shares.
  source cross/env.sh
  for t in "$@"; do
    read -r arch _ <<<"$(focusd_deb_arch "$t")"
    bash cross/sysroot.sh "$arch" "$boards_dir/sysroot/$arch"
  done
  focusd_cross_env "$boards_dir/sysroot" "$@"
  # The packaged build (every hardware backend), then the default one (none): only the
  # board crate differs, its disabled.rs stand-ins. Then the binaries can be tested while
  # the unit tests build.
  bash cross/build.sh "$@"
  cargo build --release --locked "${flags[@]}" -p focusd-board --lib
  touch "$binaries_built"
  # The unit-test binaries and their dev-dependencies, off the critical path, with the
  # packaged build'"'"'s features: with fewer (no GStreamer, whose glib changes smallvec'"'"'s
  # features), tract and a hundred crates under it were compiled a second time (529 s).
  cargo test --release --locked "${flags[@]}" --features focusd/v4l2,focusd/v4l2-m2m,focusd/gstreamer -p focusd-board -p focusd --lib --no-run
  echo "boards built in $SECONDS s (background); their CPU (user, system), the shell'"'"'s then its children'"'"'s:"
  times
' boards "$boards_dir" "$binaries_built" "${boards[@]}" >"$tmp/boards.log" 2>&1 &
boards_job=$!
jobs_to_end+=("$boards_job")

# The Debian root of the systemd boot test: the network and the disk, hardly any CPU.
bootroot="$tmp/bootroot"
mkdir "$bootroot"
setsid bash -c "$lowest" lowest bash tests/systemd-boot.sh --prepare "$bootroot" >"$tmp/bootroot.log" 2>&1 &
bootroot_job=$!
jobs_to_end+=("$bootroot_job")

# The VM of the V4L2 device tests: its kernel, QEMU and the drivers it builds (the
# network and one core, at the lowest priority), ready when the device tests start.
v4l2vm=${V4L2VM:-../shared/v4l2vm}
if [ -x "$v4l2vm/run-in-vm.sh" ]; then
  # Its settings list the installed kernel; on a machine with none yet, a placeholder
  # lets the setup start (it installs one).
  ls /lib/modules 2>/dev/null | grep -q -- '-amd64$' || vm_kver=none-yet
  KVER=${vm_kver:-} setsid bash -c "$lowest" lowest bash "$v4l2vm/setup.sh" >"$tmp/v4l2vm.log" 2>&1 &
  vm_job=$!
  jobs_to_end+=("$vm_job")
fi

step "test peers: playwright-core (Chromium driver, no browser download), aiortc (venv)"
npm ci --prefix tests --no-audit --no-fund --loglevel=error
[ -x tests/.venv/bin/python ] || /usr/bin/python3 -m venv tests/.venv
tests/.venv/bin/pip install -q --disable-pip-version-check -r tests/aiortc/requirements.txt

step "real footage (vtest.avi from Debian's opencv-doc)"
bash tests/media.sh

step "cargo fmt --check"
cargo fmt --all --check

status=0
# Runs a cargo test command, keeping its output for the summary; a failure is counted,
# and the remaining steps still run (each command with --no-fail-fast, so every test
# binary runs).
tests() {
  "$@" 2>&1 | grep -v '^\[OpenH264\]' | tee -a "$log" || status=1
}

step "build: x86_64 tests and binaries (release), linted: clippy -D warnings, with the backends and without"
# Every later x86 cargo command keeps this wrapper: it is part of the workspace crates'
# fingerprints, and without it they would be compiled again.
export RUSTC_WORKSPACE_WRAPPER=$PWD/tests/clippy-driver.sh
# The test build makes the binaries too (the tests run them); `--bins` only confirms it:
# the daemon's dependencies have the same features in both (see daemon/Cargo.toml).
cargo test --release --locked --workspace "${features[@]}" --no-run
cargo build --release --locked --workspace "${features[@]}" --bins
# Without features only the board crate differs (its disabled.rs stand-ins, the pure-Rust
# JPEG): built and linted the same way, on the dependencies just built.
cargo build --release --locked -p focusd-board --lib --tests

# The boards' build goes on beside the x86 tests, taking what they leave idle (half the
# two cores: most tests wait for timers, peers and processes); it pauses only for the
# topics that measure frame rates under load (below).
step "tests: x86_64 unit and end-to-end"
tests cargo test --release --locked --no-fail-fast --workspace "${features[@]}" \
  --lib --test binary --test backends
# The path of this build's test binary NAME, as cargo reports it (the newest file of that
# name may be another build's: the featureless board build makes a `backends` too, with
# none of the V4L2 tests).
test_binary() {
  cargo test --release --locked --workspace "${features[@]}" --no-run --message-format=json 2>/dev/null |
    /usr/bin/python3 -c 'import json, sys
for m in map(json.loads, sys.stdin):
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1] and "test" in m["target"]["kind"]:
        print(m["executable"])' "$1" | head -n 1
}
# The end-to-end tests one topic (module) at a time: a topic's tests run in parallel with
# each other, never beside another topic's (Chromium behind a 1 Mbit/s link next to the
# model detector's footage missed its frame counts). The topics that count frames of
# Chromium behind an impaired link and of the model detector on footage run with the
# boards' build paused: on a quiet machine, as the bench does.
quiet_topics=" browser vision "
end_to_end=$(test_binary end_to_end)
for topic in $("$end_to_end" --list --format terse | sed -n 's/::.*: test$//p' | sort -u); do
  if [[ $quiet_topics == *" $topic "* ]]; then
    kill -STOP -- "-$boards_job" 2>/dev/null || true
    tests "$end_to_end" "$topic::"
    kill -CONT -- "-$boards_job" 2>/dev/null || true
  else
    tests "$end_to_end" "$topic::"
  fi
done

step "tests: V4L2 capture against real drivers (vivid, an MJPEG webcam), libcamera on vimc, in a VM"
not_run=()
if [ -n "${vm_job:-}" ]; then
  wait "$vm_job" || { cat "$tmp/v4l2vm.log"; status=1; }
  tests bash tests/v4l2vm.sh "$(test_binary backends)" "$end_to_end" target/release/focusd
else
  not_run+=("V4L2 device tests: no VM tool at $v4l2vm (set V4L2VM)")
fi

step "the amd64 .deb under a real systemd (debootstrap root, systemd as PID 1 of a namespace)"
deb=$(bash packaging/deb/assemble.sh target/release/focusd amd64 target/debian)
boot_passed=0 boot_failed=0
if wait "$bootroot_job" &&
  bash tests/systemd-boot.sh --root "$bootroot" "$deb" 2>&1 | grep -v '^\[OpenH264\]'; then
  boot_passed=1
else
  cat "$tmp/bootroot.log" >&2
  boot_failed=1 status=1
fi

# The bench beside the boards' build, which takes only what the bench leaves idle (its
# lowest priority): the figures are informational here (the README's come from long
# quiet runs), and the build is most of what is left.
step "benchmark (short; figures only, no pass/fail; the boards' build beside it at the lowest priority)"
target/release/focusd-bench --seconds 2 --viewers 8 --footage tests/.media/vtest.y4m --annotations tests/data/vtest_people.json

# Each board's binary and package are tested as soon as they are built (the x86 test
# binary runs them under qemu-user), beside the build of the boards' unit tests; then the
# unit tests themselves.
step "waiting for the boards' binaries (background since the start; paused for two test topics)"
while [ ! -e "$binaries_built" ] && kill -0 "$boards_job" 2>/dev/null; do sleep 1; done
if [ -e "$binaries_built" ]; then
  for target in "${boards[@]}"; do
    read -r arch _ <<<"$(focusd_deb_arch "$target")"
    step "tests: $target binary and package tests (smoke, sd_notify, exit codes, .deb) under qemu-user"
    # The packaged binary links the board's GStreamer: qemu takes libraries from its sysroot.
    FOCUSD_TARGET=$target FOCUSD_BINARY=$PWD/$boards_dir/$target/release/focusd \
      FOCUSD_QEMU_PREFIX=$PWD/$boards_dir/sysroot/$arch \
      tests cargo test --release --locked --no-fail-fast --workspace "${features[@]}" --test binary -- cli:: service:: package::
  done
fi
step "waiting for the boards' unit-test build"
if wait "$boards_job"; then
  tail -n 3 "$tmp/boards.log"
  for target in "${boards[@]}"; do
    read -r arch _ <<<"$(focusd_deb_arch "$target")"
    step "tests: $target unit tests under qemu-user"
    # As the boards were built: their environment (it names only their targets), and not
    # the x86 build's wrapper.
    focusd_cross_env "$boards_dir/sysroot" "${boards[@]}"
    # They link the board's GStreamer: qemu takes every library from its sysroot, and
    # GStreamer scans its plugins in-process (no aarch64 plugin scanner to exec).
    case $arch in arm64) qemu=qemu-aarch64-static ;; armhf) qemu=qemu-arm-static ;; esac
    runner_var=CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$target")_RUNNER
    tests env -u RUSTC_WORKSPACE_WRAPPER CARGO_TARGET_DIR="$boards_dir" GST_REGISTRY_FORK=no \
      "$runner_var=$qemu -L $PWD/$boards_dir/sysroot/$arch" \
      cargo test --release --locked --no-fail-fast --target "$target" --features focusd/v4l2,focusd/v4l2-m2m,focusd/gstreamer -p focusd-board -p focusd --lib
  done
else
  cat "$tmp/boards.log"
  if [ -e "$binaries_built" ]; then
    echo "the boards' unit-test build failed: their unit tests did not run"
  else
    echo "the boards' build failed: their tests did not run"
  fi
  status=1
fi

step "summary"
passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed;?$/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed;?$/) s += $i } END { print s + 0 }' "$log")
passed=$((passed + boot_passed)) failed=$((failed + boot_failed))
# Busy and idle: core-seconds of the whole machine during the step (what ran beside it
# included), so a step that leaves cores idle shows, and the total tells whether the run
# is bound by its CPU.
echo "step times (wall clock; the cores' busy and idle core-seconds meanwhile):"
for i in "${!step_secs[@]}"; do
  read -r busy idle <<<"${step_busy[$i]}"
  printf '  %5d s  %5d busy %5d idle  %s\n' "${step_secs[$i]}" "$busy" "$idle" "${step_names[$i]}"
done
read -r busy idle < <(cpu_ticks)
printf '  %5d s  %5d busy %5d idle  total (%d cores)\n' "$SECONDS" \
  $((busy - busy_at_start)) $((idle - idle_at_start)) "$(nproc)"
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then
  echo "a test command failed before reporting results (see above)"
fi
echo "tests: $passed passed, $failed failed"
for n in "${not_run[@]}"; do echo "NOT RUN: $n"; done
exit "$status"
