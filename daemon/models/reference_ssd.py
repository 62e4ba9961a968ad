#!/usr/bin/env python3
"""Checks the converted object detector against the model's own runtime (tflite-runtime) and
writes the reference data focusd's unit tests compare against.

usage: reference_ssd.py MODEL.tflite MODEL.onnx LABELS IMAGE OUTDIR

Writes OUTDIR/<image>.ssd.input.u8 (the 300x300 RGB input, letterboxed), <image>.ssd.output.f32
(tflite-runtime's raw outputs: box offsets [1917x4] then class logits [1917x24],
little-endian) and <image>.ssd.detections.json (their decoding by ssd.py: MediaPipe's
anchors and box coder, sigmoid scores >= 0.3; then greedy per-class NMS at IoU 0.5, in
input pixels, with the class names)."""
import json
import os
import sys

import numpy as np

import ssd
from reference import letterbox, overlap, run_both

SIZE = 300


def suppress(found, iou):
    """Greedy per-class NMS, strongest first (as focusd's `suppress`)."""
    kept = []
    for d in sorted(found, key=lambda d: -d[1]):
        if all(k[2] != d[2] or overlap(k[0], d[0]) <= iou for k in kept):
            kept.append(d)
    return kept


def main(tflite_path, onnx_path, labels_path, image, outdir):
    labels = open(labels_path).read().splitlines()
    pixels = letterbox(image, SIZE)
    x = pixels.astype(np.float32) / 127.5 - 1
    (boxes, logits), ours = run_both(tflite_path, onnx_path, x)
    if boxes.shape[-1] != 4:
        boxes, logits = logits, boxes
    diff = max(float(np.abs(a - b).max()) for a, b in zip((boxes, logits), ours))
    print(f"{os.path.basename(image)}: converted detector vs tflite-runtime, max |diff| {diff:.2e}")
    if diff > 0.01:
        raise SystemExit("the converted model does not match the original")
    stem = os.path.join(outdir, os.path.splitext(os.path.basename(image))[0] + ".ssd")
    pixels.tofile(stem + ".input.u8")
    np.concatenate([boxes[0].ravel(), logits[0].ravel()]).astype("<f4").tofile(stem + ".output.f32")
    found = suppress(ssd.decode(boxes[0], logits[0], SIZE, 0.3), 0.5)
    with open(stem + ".detections.json", "w") as f:
        json.dump([{"box": [round(float(v), 4) for v in b], "score": round(s, 6),
                    "class": c, "label": labels[c]} for b, s, c in found], f, indent=1)
        f.write("\n")
    print(f"  {len(found)} detections: " + ", ".join(f"{labels[c]} {s:.2f}" for _, s, c in found))


if __name__ == "__main__":
    if len(sys.argv) != 6:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
