#!/usr/bin/env bash
# Assembles the focusd .deb from a release binary built for ARCH.
# Usage: packaging/deb/assemble.sh BINARY ARCH OUT_DIR
#   ARCH: the Debian architecture (amd64, arm64, armhf). Prints the .deb's path.
# Needs dpkg-deb and binutils (readelf; ARCH's strip, e.g. aarch64-linux-gnu-strip).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

die() { echo "assemble.sh: $*" >&2; exit 2; }
[ $# -eq 3 ] || die "usage: assemble.sh BINARY ARCH OUT_DIR"
binary=$1 arch=$2 out=$3
[ -x "$binary" ] || die "no executable at $binary (build it first: cross/build.sh)"

case "$arch" in
  amd64) strip_tool=x86_64-linux-gnu-strip machine="X86-64" ;;
  arm64) strip_tool=aarch64-linux-gnu-strip machine="AArch64" ;;
  armhf) strip_tool=arm-linux-gnueabihf-strip machine="ARM" ;;
  *) die "unknown architecture '$arch' (amd64, arm64 or armhf)" ;;
esac
command -v "$strip_tool" >/dev/null || die "$strip_tool not found (apt-get install binutils-${strip_tool%-strip})"
got=$(readelf -h "$binary" | awk -F: '/Machine:/ { gsub(/^ +/, "", $2); print $2 }')
case "$got" in
  *"$machine"*) ;;
  *) die "$binary is built for '$got', not $arch" ;;
esac

version=$(awk -F'"' '/^\[workspace.package\]/ { w = 1 } w && /^version *=/ { print $2; exit }' "$root/Cargo.toml")
[ -n "$version" ] || die "no version in [workspace.package] of Cargo.toml"

# Runtime dependencies from what the binary actually links.
depends=()
for lib in $(readelf -d "$binary" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
  case "$lib" in
    libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux*) ;;
    libgcc_s.so.1) depends+=("libgcc-s1") ;;
    libstdc++.so.6) depends+=("libstdc++6") ;;
    # The GStreamer backend (feature `gstreamer`).
    libgstreamer-1.0.so.0 | libgstbase-1.0.so.0 | libgstnet-1.0.so.0) depends+=("libgstreamer1.0-0") ;;
    libgstapp-1.0.so.0 | libgstvideo-1.0.so.0 | libgstrtsp-1.0.so.0 | libgstsdp-1.0.so.0 | libgstrtp-1.0.so.0) depends+=("libgstreamer-plugins-base1.0-0") ;;
    libgstrtspserver-1.0.so.0) depends+=("libgstrtspserver-1.0-0") ;;
    libglib-2.0.so.0 | libgobject-2.0.so.0 | libgmodule-2.0.so.0 | libgio-2.0.so.0) depends+=("libglib2.0-0") ;;
    *) die "the binary links $lib: add its Debian package to assemble.sh" ;;
  esac
done
glibc=$(readelf -V "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
mapfile -t depends < <(printf '%s\n' "${depends[@]}" | awk 'NF && !seen[$0]++')
depends=("libc6 (>= $glibc)" "${depends[@]}")
# With GStreamer linked, the plugins its sources and encoders use (RTSP, decoders,
# x264enc, libcamera on a Pi) are recommended: focusd runs without them.
recommends=""
if printf '%s\n' "${depends[@]}" | grep -qx libgstreamer1.0-0; then
  recommends="gstreamer1.0-plugins-base, gstreamer1.0-plugins-good, gstreamer1.0-plugins-bad, gstreamer1.0-plugins-ugly, gstreamer1.0-libav"
  # Raspberry Pi cameras (libcamerasrc) on the boards.
  case "$arch" in arm64 | armhf) recommends+=", gstreamer1.0-libcamera" ;; esac
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg="$stage/focusd"
install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" "$pkg/etc/focusd" \
  "$pkg/usr/lib/sysusers.d" "$pkg/usr/share/doc/focusd"
"$strip_tool" -o "$pkg/usr/bin/focusd" "$binary"
chmod 0755 "$pkg/usr/bin/focusd"
install -m 0644 "$root/systemd/focusd.service" "$pkg/lib/systemd/system/focusd.service"
# One unit per camera on a board: focusd@NAME.service reads /etc/focusd/NAME.toml,
# registers as device NAME and keeps its token in /var/lib/focusd/NAME; the same unit as
# focusd.service but for those three.
sed -e 's|^Description=.*|Description=focusd edge camera daemon, camera %i|' \
  -e 's|^ExecStart=.*|ExecStart=/usr/bin/focusd --config /etc/focusd/%i.toml --device-id %i|' \
  -e 's|^# focusd as a hardened system service\..*|# focusd for camera %i (its config: /etc/focusd/%i.toml), as focusd.service is.|' \
  -e 's|(`systemctl edit focusd`)|(`systemctl edit focusd@NAME`)|' \
  -e 's|^StateDirectory=focusd$|StateDirectory=focusd/%i|' \
  "$root/systemd/focusd.service" >"$pkg/lib/systemd/system/focusd@.service"
grep -q 'ExecStart=/usr/bin/focusd --config /etc/focusd/%i.toml' "$pkg/lib/systemd/system/focusd@.service" &&
  grep -q '^StateDirectory=focusd/%i$' "$pkg/lib/systemd/system/focusd@.service" ||
  die "focusd@.service: the ExecStart or StateDirectory line of focusd.service was not found"
chmod 0644 "$pkg/lib/systemd/system/focusd@.service"
install -m 0644 "$root/packaging/focusd.toml" "$pkg/etc/focusd/focusd.toml"
install -m 0644 "$here/focusd.sysusers" "$pkg/usr/lib/sysusers.d/focusd.conf"
install -m 0644 "$here/copyright" "$pkg/usr/share/doc/focusd/copyright"
install -m 0644 "$root/README.md" "$pkg/usr/share/doc/focusd/README.md"
for script in postinst prerm postrm; do
  install -m 0755 "$here/$script" "$pkg/DEBIAN/$script"
done
echo /etc/focusd/focusd.toml >"$pkg/DEBIAN/conffiles"
size_kb=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: focusd
Version: $version
Architecture: $arch
Maintainer: focusd developers <focusd@localhost>
Installed-Size: $size_kb
Depends: $(IFS=,; echo "${depends[*]}" | sed 's/,/, /g')
Recommends: systemd${recommends:+, $recommends}
Section: video
Priority: optional
Description: edge camera daemon streaming the region of interest over WebRTC
 focusd captures a camera, finds the region of interest on the device, encodes
 H.264 and serves two WebRTC tracks (a low-res context and a high-res source
 shaped by a mode) with a viewer page on port 8888. Runs as a hardened systemd
 service; settings live in /etc/focusd/focusd.toml.
CONTROL
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$pkg/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/focusd_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
