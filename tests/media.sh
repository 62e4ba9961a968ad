#!/usr/bin/env bash
# Prepares real footage and photos for the tests, from Debian's opencv-doc package:
# vtest.avi (768x576, 10 fps, pedestrians) as y4m, and still photos with and without people
# as raw I420 (stills/NAME_WxH.yuv). Idempotent; output in tests/.media/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/.media"
stills="basketball1.png basketball2.png messi5.jpg fruits.jpg home.jpg baboon.jpg building.jpg"
mkdir -p "$out/stills"
have_stills=1
for s in $stills; do
    ls "$out/stills/${s%.*}"_*.yuv >/dev/null 2>&1 || have_stills=0
done
[ -s "$out/vtest.y4m" ] && [ "$have_stills" = 1 ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download opencv-doc 2>/dev/null >/dev/null)
dpkg -x "$work"/opencv-doc_*.deb "$work/x"
data=$(dirname "$(find "$work/x" -name vtest.avi | head -n 1)")
[ -f "$data/vtest.avi" ] || { echo "vtest.avi not found in opencv-doc" >&2; exit 1; }
if [ ! -s "$out/vtest.y4m" ]; then
    # 15 s of the scene is enough to loop and keeps the file near 100 MB.
    ffmpeg -loglevel error -y -i "$data/vtest.avi" -frames:v 150 -pix_fmt yuv420p \
        -f yuv4mpegpipe "$out/vtest.y4m.part"
    mv "$out/vtest.y4m.part" "$out/vtest.y4m"
fi
for s in $stills; do
    size=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=s=x:p=0 "$data/$s")
    ffmpeg -loglevel error -y -i "$data/$s" -pix_fmt yuv420p -f rawvideo \
        "$out/stills/${s%.*}_$size.yuv"
done
echo "prepared $out"
