#!/usr/bin/env bash
# A Debian 12 sysroot holding a board's GStreamer development files, so that plain cargo
# cross-builds the `gstreamer` feature: pkg-config finds the board's libraries there and
# the host gets no foreign-architecture packages (installing libc6:arm64 on the host makes
# qemu-user hang). Also qemu-user's library prefix for running the result.
# Usage: cross/sysroot.sh ARCH DIR      (ARCH: arm64 | armhf; needs mmdebstrap and the
#                                        network; ~25 s and 420 MB each; another Debian
#                                        mirror: FOCUSD_DEBIAN_MIRROR=URL)
# A DIR this script made for the same packages is kept as it is.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: cross/sysroot.sh ARCH DIR" >&2; exit 2; }
arch=$1 dir=$2
# The base plugins (videotestsrc, videoconvert, appsink...) too: the unit tests of the
# gstreamer feature run under qemu-user against the board's GStreamer.
packages=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev gstreamer1.0-plugins-base)
want="bookworm $arch ${packages[*]} 1"
if [ "$(cat "$dir/.focusd-sysroot" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if ! command -v mmdebstrap >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "cross/sysroot.sh: install mmdebstrap" >&2; exit 2; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
# `extract`: the packages and their dependencies unpacked, nothing configured or run. From
# the main archive only: headers and link-time libraries need no security updates (the
# board's own apt brings those at run time), and one mirror is one thing less to fail.
mmdebstrap --quiet --arch="$arch" --variant=extract \
  --include="$(IFS=,; echo "${packages[*]}")" bookworm "$dir" \
  "deb ${FOCUSD_DEBIAN_MIRROR:-http://deb.debian.org/debian} bookworm main"
# Absolute symlinks would point into the host: make them relative inside the sysroot.
find "$dir" -type l -lname '/*' -print0 | while IFS= read -r -d '' link; do
  ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$dir$(readlink "$link")")" "$link"
done
# The cross toolchain brings its own C library: the sysroot's static archives and linker
# scripts (its libc.so names absolute paths) would be found first and shadow it.
find "$dir/lib" "$dir/usr/lib" -name '*.a' -delete
grep -rlZ --include='*.so' 'GNU ld script' "$dir/lib" "$dir/usr/lib" | xargs -0r rm -f
echo "$want" >"$dir/.focusd-sysroot"
