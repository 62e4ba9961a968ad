#!/usr/bin/env python3
"""Checks the converted model against the model's own runtime (tflite-runtime) and writes the
reference data focusd's unit tests compare against.

usage: reference.py MODEL.tflite MODEL.onnx IMAGE OUTDIR

Writes OUTDIR/<image>.input.u8 (the 224x224 RGB input, letterboxed), <image>.output.f32
(tflite-runtime's raw outputs: regressors [2254x12] then logits [2254], little-endian) and
<image>.detections.json (the decoding of those outputs below: sigmoid scores >= 0.5, person
boxes around the hips (anchors.person_box), greedy NMS at IoU 0.3, in input pixels)."""
import json
import os
import sys

import numpy as np
import onnxruntime
import tflite_runtime.interpreter as tfl
from PIL import Image

from anchors import person_box, pose_anchors

SIZE = 224


def letterbox(path, size=SIZE):
    """The image at `path` scaled to fit `size` x `size`, centred, black bars (as focusd)."""
    img = Image.open(path).convert("RGB")
    scale = size / max(img.size)
    w, h = round(img.width * scale), round(img.height * scale)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(img.resize((w, h), Image.BILINEAR), ((size - w) // 2, (size - h) // 2))
    return np.asarray(canvas, np.uint8)


def decode(reg, logits, threshold=0.5, iou=0.3):
    anchors = pose_anchors(SIZE) * SIZE
    scores = 1 / (1 + np.exp(-np.clip(logits.astype(np.float64), -100, 100)))
    boxes = []
    for k in np.flatnonzero(scores >= threshold):
        hip = reg[k, 4:6] + anchors[k]
        top = reg[k, 6:8] + anchors[k]
        boxes.append((float(scores[k]), [float(v) for v in person_box(hip, top)]))
    boxes.sort(key=lambda b: -b[0])
    kept = []
    for score, b in boxes:
        if all(overlap(b, k["box"]) <= iou for k in kept):
            kept.append({"score": score, "box": b})
    return kept


def overlap(a, b):
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    area = lambda r: max(r[2] - r[0], 0) * max(r[3] - r[1], 0)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def run_both(tflite_path, onnx_path, x):
    """The outputs of the original model (tflite-runtime, in its output order) and of the
    conversion (onnxruntime) for the HWC input `x`."""
    it = tfl.Interpreter(model_path=tflite_path)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x[None])
    it.invoke()
    theirs = [it.get_tensor(d["index"]) for d in it.get_output_details()]
    ours = onnxruntime.InferenceSession(onnx_path).run(None, {"image": x.transpose(2, 0, 1)[None]})
    return theirs, ours


def main(tflite_path, onnx_path, image, outdir):
    pixels = letterbox(image)
    x = pixels.astype(np.float32) / 127.5 - 1
    (reg, logits), ours = run_both(tflite_path, onnx_path, x)
    diff = max(float(np.abs(a - b).max()) for a, b in zip((reg, logits), ours))
    print(f"{os.path.basename(image)}: converted model vs tflite-runtime, max |diff| {diff:.2e}")
    if diff > 0.01:
        raise SystemExit("the converted model does not match the original")
    stem = os.path.join(outdir, os.path.splitext(os.path.basename(image))[0])
    pixels.tofile(stem + ".input.u8")
    np.concatenate([reg[0].ravel(), logits[0].ravel()]).astype("<f4").tofile(stem + ".output.f32")
    with open(stem + ".detections.json", "w") as f:
        json.dump(decode(reg[0], logits[0, :, 0]), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
