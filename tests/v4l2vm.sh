#!/usr/bin/env bash
# The V4L2 backends against real kernel drivers, in throw-away VMs that boot Debian's own
# kernel (../shared/v4l2vm): capture from vivid (each raw format, size changes, an unplug
# and the camera back), an MJPEG webcam (v4l2loopback fed by ffmpeg) and libcamera's vimc
# camera (probe, both tracks, the driver unbound and bound again); the M2M encoder
# interface against vicodec (multi-planar, as the Pi 4's bcm2835-codec).
# Usage: tests/v4l2vm.sh BOARD_TESTS END_TO_END_TESTS FOCUSD
#   BOARD_TESTS: the board crate's test binary (board/tests/backends.rs: its modules
#   v4l2_devices and v4l2_m2m); END_TO_END_TESTS: the root package's (tests/end_to_end.rs:
#   its modules v4l2, the daemon with a camera unplugged and back, and libcamera, the
#   daemon on vimc through libcamera); built with --features v4l2,v4l2-m2m and
#   gstreamer. Their tests are #[ignore]d on machines without the drivers; here they run
#   with --ignored. FOCUSD: the daemon's binary (same features), libcamera's helper
#   process.
# Exit status: the tests'; 3 when the VM tool is not there.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1")
daemon_bin=$(realpath "$2")
focusd_bin=$(realpath "$3")
vm=${V4L2VM:-$(realpath -m ../shared/v4l2vm)}
if [ ! -x "$vm/run-in-vm.sh" ]; then
  echo "tests/v4l2vm.sh: no VM tool at $vm (set V4L2VM): V4L2 device tests not run" >&2
  exit 3
fi
# The tool lists the installed kernel when it loads its settings; on a machine that has
# none yet (its setup installs one), give it a placeholder so that the setup can start.
ls /lib/modules 2>/dev/null | grep -q -- '-amd64$' || export KVER=none-yet
bash "$vm/setup.sh"
unset KVER

echo "-- vivid: raw formats, size changes, unplug and back"
bash "$vm/run-in-vm.sh" -t 400 "$PWD" "$bin" --ignored --test-threads=1 v4l2_devices:: --skip an_mjpeg_webcam

echo "-- an MJPEG webcam: v4l2loopback fed by ffmpeg"
bash "$vm/run-in-vm.sh" -t 300 -M "v4l2loopback exclusive_caps=1 video_nr=10" "$PWD" "
  ffmpeg -v error -re -f lavfi -i testsrc=size=640x480:rate=15 -t 120 -c:v mjpeg -f v4l2 /dev/video10 &
  for i in \$(seq 60); do v4l2-ctl -d /dev/video10 --list-formats 2>/dev/null | grep -q MJPG && break; sleep 0.5; done
  '$bin' --ignored --exact v4l2_devices::an_mjpeg_webcam"

echo "-- the daemon with vivid: a viewer watches while the camera is unplugged and back"
bash "$vm/run-in-vm.sh" -t 400 -m 2G "$PWD" "ip link set lo up && '$daemon_bin' --ignored --test-threads=1 v4l2::"

echo "-- libcamera on vimc (a media-controller camera; udev for libcamera): probe, stream, the camera unbound and back"
bash "$vm/run-in-vm.sh" -t 400 -m 2G -M vimc -u -e "FOCUSD_LIBCAMERA_HELPER=$focusd_bin" "$PWD" \
  "ip link set lo up && '$daemon_bin' --ignored --test-threads=1 libcamera::"

echo "-- the M2M encoder interface against vicodec (multi-planar)"
bash "$vm/run-in-vm.sh" -t 200 -M "vicodec multiplanar=1" "$PWD" "$bin" --ignored --test-threads=1 v4l2_m2m::
