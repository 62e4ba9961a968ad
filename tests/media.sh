#!/usr/bin/env bash
# Prepares real footage for the tests: vtest.avi (768x576, 10 fps, pedestrians) from
# Debian's opencv-doc package, converted to y4m. Idempotent; output in tests/.media/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/.media"
mkdir -p "$out"
[ -s "$out/vtest.y4m" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download opencv-doc 2>/dev/null >/dev/null)
dpkg -x "$work"/opencv-doc_*.deb "$work/x"
avi=$(find "$work/x" -name vtest.avi | head -n 1)
[ -n "$avi" ] || { echo "vtest.avi not found in opencv-doc" >&2; exit 1; }
# 15 s of the scene is enough to loop and keeps the file near 100 MB.
ffmpeg -loglevel error -y -i "$avi" -frames:v 150 -pix_fmt yuv420p -f yuv4mpegpipe "$out/vtest.y4m.part"
mv "$out/vtest.y4m.part" "$out/vtest.y4m"
echo "prepared $out/vtest.y4m"
