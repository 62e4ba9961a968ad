"""SSD anchors and box decoding as MediaPipe's calculators do them, for the reference data.

The options are the Objectron 2-D detector's (ObjectDetectionOidV4Subgraph in the
@mediapipe/objectron wasm): SsdAnchorsCalculator with 6 layers, scales 0.2..0.95, strides
16..512, aspect ratios 1, 2, 0.5, 3, 1/3, the lowest layer reduced to three boxes; and
TensorsToDetectionsCalculator with box scales 10, 10, 5, 5 (y, x, h, w), exponential sizes,
sigmoid scores, class 0 ignored. focusd's Rust decoding (roi/model/decode.rs, Layout::Ssd) is
checked against what reference_ssd.py writes with it.
"""
import math

import numpy as np

STRIDES = [16, 32, 64, 128, 256, 512]
ASPECT_RATIOS = [1.0, 2.0, 0.5, 3.0, 0.3333]
MIN_SCALE, MAX_SCALE = 0.2, 0.95
SCALES = {"y": 10.0, "x": 10.0, "h": 5.0, "w": 5.0}


def scale(i, n):
    return MIN_SCALE + (MAX_SCALE - MIN_SCALE) * i / (n - 1)


def anchors(size):
    """[N, 4] anchors (x centre, y centre, width, height), normalised, in model order."""
    out = []
    n = len(STRIDES)
    for layer, stride in enumerate(STRIDES):
        if layer == 0:
            shapes = [(0.1, 1.0), (scale(0, n), 2.0), (scale(0, n), 0.5)]
        else:
            s = scale(layer, n)
            nxt = 1.0 if layer == n - 1 else scale(layer + 1, n)
            shapes = [(s, ar) for ar in ASPECT_RATIOS] + [(math.sqrt(s * nxt), 1.0)]
        cells = math.ceil(size / stride)
        for y in range(cells):
            for x in range(cells):
                for s, ar in shapes:
                    r = math.sqrt(ar)
                    out.append(((x + 0.5) / cells, (y + 0.5) / cells, s * r, s / r))
    return np.array(out, np.float32)


def decode(boxes, logits, size, min_score):
    """Detections [(x0, y0, x1, y1) in input pixels, score, class] before NMS."""
    a = anchors(size)
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100.0, 100.0)))
    scores[:, 0] = 0.0  # background
    cls = scores.argmax(1)
    best = scores[np.arange(len(cls)), cls]
    found = []
    for k in np.nonzero(best >= min_score)[0]:
        y, x, h, w = boxes[k]
        xc = x / SCALES["x"] * a[k, 2] + a[k, 0]
        yc = y / SCALES["y"] * a[k, 3] + a[k, 1]
        w = math.exp(w / SCALES["w"]) * a[k, 2]
        h = math.exp(h / SCALES["h"]) * a[k, 3]
        box = [(xc - w / 2) * size, (yc - h / 2) * size, (xc + w / 2) * size, (yc + h / 2) * size]
        found.append((box, float(best[k]), int(cls[k])))
    return found
