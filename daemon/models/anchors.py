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


def person_box(hip, top):
    """The person box focusd builds from the pose detector's keypoints 0 (hips) and 1 (above
    the head, at the distance MediaPipe uses for the body's extent): from 0.9 d above the
    hips to d below, 0.7 d wide, d being their distance. Fitted by eye to opencv-doc's
    photos and vtest.avi's pedestrians."""
    import math
    d = math.hypot(top[0] - hip[0], top[1] - hip[1])
    return [hip[0] - 0.35 * d, hip[1] - 0.9 * d, hip[0] + 0.35 * d, hip[1] + d]
