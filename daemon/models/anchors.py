"""SSD anchors of MediaPipe's pose detector (its SsdAnchorsCalculator options: 5 layers,
strides 8, 16, 32, 32, 32, one aspect ratio plus the interpolated scale, fixed anchor size,
offset 0.5). Layers of equal stride share one grid. Returns [N, 2] centres in 0..1."""
import numpy as np

STRIDES = [8, 16, 32, 32, 32]


def pose_anchors(size=224):
    out, i = [], 0
    while i < len(STRIDES):
        j = i
        while j < len(STRIDES) and STRIDES[j] == STRIDES[i]:
            j += 1
        per_cell = 2 * (j - i)
        cells = -(-size // STRIDES[i])
        for y in range(cells):
            for x in range(cells):
                out += [((x + 0.5) / cells, (y + 0.5) / cells)] * per_cell
        i = j
    return np.array(out, np.float64)
