#!/usr/bin/env bash
# Builds focusd release binaries and .deb packages for boards, with plain cargo and
# Debian's cross toolchains (installed here when missing and running as root).
# Usage: cross/build.sh [TARGET...]     (default: aarch64-unknown-linux-gnu)
#   aarch64-unknown-linux-gnu       Pi 4/5 with 64-bit OS, Jetson      -> arm64 .deb
#   armv7-unknown-linux-gnueabihf   Pi with 32-bit Raspberry Pi OS     -> armhf .deb
#   x86_64-unknown-linux-gnu        PCs and servers                    -> amd64 .deb
# Output: target/TARGET/release/focusd and target/debian/focusd_VERSION_ARCH.deb
# (under $CARGO_TARGET_DIR instead of target/ when that is set)
# Hardware backends: $FOCUSD_FEATURES (default: v4l2,v4l2-m2m,gstreamer), each a cargo
# feature of focusd. The V4L2 backends need libclang-dev and cmake at build time; GStreamer
# needs the board's development files, which cross/sysroot.sh puts in a Debian sysroot
# under the target dir (mmdebstrap and the network, once); all installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "cross/build.sh: $*" >&2; exit 2; }
# shellcheck source=cross/env.sh
source cross/env.sh # focusd_deb_arch, focusd_cross_env
[ $# -gt 0 ] || set -- aarch64-unknown-linux-gnu

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "missing tools; install them with: sudo apt-get install $*"
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Toolchains first, then one cargo run for every target: on few cores, the targets'
# crates fill each other's gaps (a long single-threaded crate no longer idles a core).
cargo_targets=()
for target in "$@"; do
  case "$target" in
    aarch64-unknown-linux-gnu)
      gcc=aarch64-linux-gnu-gcc
      pkgs=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
    armv7-unknown-linux-gnueabihf)
      gcc=arm-linux-gnueabihf-gcc
      pkgs=(gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
    x86_64-unknown-linux-gnu)
      gcc=x86_64-linux-gnu-gcc
      pkgs=(gcc g++) ;;
    *) die "unknown target '$target' (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf, x86_64-unknown-linux-gnu)" ;;
  esac
  command -v "$gcc" >/dev/null || apt_install "${pkgs[@]}"
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
  cargo_targets+=(--target "$target")
done
command -v dpkg-deb >/dev/null || apt_install dpkg
features=${FOCUSD_FEATURES-v4l2,v4l2-m2m,gstreamer}
# Features are comma or space separated. Both V4L2 backends generate their kernel bindings
# with libclang; capture builds libjpeg-turbo with cmake.
case ",${features// /,}," in *,v4l2,* | *,v4l2-m2m,*)
  [ -e /usr/lib/llvm-14/lib/libclang.so ] || apt_install libclang-dev ;;
esac
case ",${features// /,}," in *,v4l2,*)
  command -v cmake >/dev/null || apt_install cmake ;;
esac

case ",${features// /,}," in *,gstreamer,*)
  sysroots="${CARGO_TARGET_DIR:-target}/sysroot"
  for target in "$@"; do
    read -r arch _ <<<"$(focusd_deb_arch "$target")"
    if [ "$arch" = "$(dpkg --print-architecture)" ]; then
      pkg-config --exists gstreamer-app-1.0 gstreamer-video-1.0 ||
        apt_install libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
    else
      bash cross/sysroot.sh "$arch" "$sysroots/$arch"
    fi
  done
  focusd_cross_env "$sysroots" "$@" ;;
esac

echo "==> cargo build --release ${cargo_targets[*]} --features \"$features\""
cargo build --release --locked "${cargo_targets[@]}" -p focusd --features "$features"

for target in "$@"; do
  read -r arch _ <<<"$(focusd_deb_arch "$target")"
  bin="${CARGO_TARGET_DIR:-target}/$target/release/focusd"
  deb=$(bash packaging/deb/assemble.sh "$bin" "$arch" "${CARGO_TARGET_DIR:-target}/debian")
  stripped=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/focusd | wc -c)
  awk -v t="$target" -v d="$deb" -v b="$stripped" \
    'BEGIN { printf "%s: %s (binary %.1f MB stripped)\n", t, d, b / 1048576 }'
done
