#!/usr/bin/env bash
# Rebuilds daemon/models/ from the packages they come from, each converted to ONNX
# (tflite_to_onnx.py) and checked against tflite-runtime, and the reference outputs the
# unit tests use:
# - the object detector from npm's @mediapipe/objectron 0.4.1675468480 (its packed assets
#   hold the label map and the fp16 SSD, at the offsets its loader script lists);
# - the built-in person detector, from PyPI's mediapipe 0.10.14 wheel.
# Needs python3 and network access to npm, PyPI and Debian (opencv-doc for the reference
# images). Run from anywhere.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
pip=("$work/venv/bin/pip" install -q --disable-pip-version-check)
"${pip[@]}" "numpy==1.26.4" "tflite==2.18.0" "onnx==1.17.0" "tflite-runtime==2.14.0" \
    "onnxruntime==1.20.1" "pillow==11.0.0"
"$work/venv/bin/pip" download -q --no-deps --only-binary=:all: -d "$work" \
    --platform manylinux_2_17_x86_64 --python-version 3.11 mediapipe==0.10.14
wheel=$(ls "$work"/mediapipe-0.10.14-*.whl)
(cd "$work" && python3 -m zipfile -e "$wheel" wheel >/dev/null)
tfl="$work/wheel/mediapipe/modules/pose_detection/pose_detection.tflite"
echo "$(cat "$here/pose_detection.tflite.sha256")  $tfl" | sha256sum -c --quiet

objectron=objectron-0.4.1675468480.tgz
curl -fsSL -o "$work/$objectron" "https://registry.npmjs.org/@mediapipe/objectron/-/$objectron"
echo "$(cat "$here/objectron.tgz.sha256")  $work/$objectron" | sha256sum -c --quiet
tar -xzf "$work/$objectron" -C "$work" package/objectron_solution_packed_assets.data
assets="$work/package/objectron_solution_packed_assets.data"
# Offsets from objectron_solution_packed_assets_loader.js.
head -c 184 "$assets" >"$here/object_detection.labels"
ssd="$work/object_detection_ssd_mobilenetv2_oidv4_fp16.tflite"
tail -c +185 "$assets" | head -c $((9987912 - 184)) >"$ssd"
echo "$(cat "$here/object_detection.tflite.sha256")  $ssd" | sha256sum -c --quiet

py="$work/venv/bin/python"
"$py" "$here/tflite_to_onnx.py" "$ssd" "$work/object_detection.onnx"
"$py" "$here/tflite_to_onnx.py" "$tfl" "$work/person_detection.onnx"
"$py" "$here/tflite_to_onnx.py" "$tfl" "$work/person_detection_yolo.onnx" --yolo-head
# -n: no name or time stamp in the gzip header, so the output is byte-for-byte repeatable.
gzip -9 -n -c "$work/object_detection.onnx" >"$here/object_detection.onnx.gz"
gzip -9 -n -c "$work/person_detection.onnx" >"$here/person_detection.onnx.gz"
gzip -9 -n -c "$work/person_detection_yolo.onnx" >"$here/testdata/person_detection_yolo.onnx.gz"

(cd "$work" && apt-get download opencv-doc >/dev/null 2>&1 && dpkg -x opencv-doc_*.deb doc)
data="$work/doc/usr/share/doc/opencv-doc/examples/data"
(cd "$here" && "$py" reference.py "$tfl" "$work/person_detection.onnx" "$data/basketball1.png" testdata)
for image in basketball1.png licenseplate_motion.jpg; do
  (cd "$here" && "$py" reference_ssd.py "$ssd" "$work/object_detection.onnx" \
    object_detection.labels "$data/$image" testdata)
done
"$py" "$here/test_models.py" "$here/testdata"
(cd "$here" && sha256sum object_detection.onnx.gz object_detection.labels person_detection.onnx.gz testdata/*)
