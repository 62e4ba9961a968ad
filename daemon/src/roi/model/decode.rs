//! Turning a detector's raw output tensors into boxes: the output layouts focusd knows,
//! score decoding and non-maximum suppression. Pure functions over slices, so they are
//! tested against the reference outputs of the model's own runtime.

/// One detection in the model's input pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    /// Confidence, 0–1.
    pub score: f32,
    /// Index into the model's labels.
    pub class: usize,
}

impl Detection {
    fn area(&self) -> f32 {
        (self.x1 - self.x0).max(0.0) * (self.y1 - self.y0).max(0.0)
    }

    /// Intersection over union.
    pub fn iou(&self, o: &Detection) -> f32 {
        let w = self.x1.min(o.x1) - self.x0.max(o.x0);
        let h = self.y1.min(o.y1) - self.y0.max(o.y0);
        let inter = w.max(0.0) * h.max(0.0);
        let union = self.area() + o.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }
}

/// How a model's outputs are laid out.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Layout {
    /// MediaPipe's pose (person) detector: `[1, N, 12]` offsets of a face box and four
    /// keypoints from SSD anchors, and `[1, N, 1]` logits. The person box is built around
    /// keypoint 0 (hips) from its distance d to keypoint 1 (above the head): 0.9 d above
    /// the hips to d below, 0.7 d wide.
    MediaPipePose {
        /// Anchor centres in input pixels, one per row.
        anchors: Vec<[f32; 2]>,
    },
    /// YOLOv8/v11 exports: one `[1, 4 + C, N]` output, `cx, cy, w, h` in input pixels then
    /// one score per class.
    YoloV8 { classes: usize },
    /// YOLOv5/v7 exports: one `[1, N, 5 + C]` output, `cx, cy, w, h`, objectness, then
    /// one score per class.
    YoloV5 { classes: usize },
    /// SSD detectors as the TF Object Detection API and MediaPipe make them (the built-in
    /// detector is one): `[1, N, 4]` offsets from N anchors (y, x, h, w, scaled by 10, 10,
    /// 5, 5, sizes exponential) and `[1, N, C]` class logits, class 0 the background.
    Ssd {
        /// The anchors ([`ssd_anchors`]).
        anchors: Vec<SsdAnchor>,
        /// Classes with the background.
        classes: usize,
        /// The input's side in pixels (boxes are decoded in input pixels).
        side: usize,
    },
}

/// One SSD anchor, normalised to the input (0..1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SsdAnchor {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// Strides of the SSD anchor layers (MobileNet SSDs at 300x300: 19, 10, 5, 3, 2 and 1 cells
/// a side).
const SSD_STRIDES: [usize; 6] = [16, 32, 64, 128, 256, 512];
/// Aspect ratios of the anchors of a cell, above the lowest layer.
const SSD_ASPECT_RATIOS: [f32; 5] = [1.0, 2.0, 0.5, 3.0, 0.3333];
/// Anchor scales of the lowest and the highest layer; the layers between are evenly spaced.
const SSD_SCALES: (f32, f32) = (0.2, 0.95);
/// Box offsets are scaled by these (y, x, h, w): the TF Object Detection API's box coder.
const SSD_BOX_SCALES: [f32; 4] = [10.0, 10.0, 5.0, 5.0];

/// The anchors of a square SSD input of `size` pixels, in the model's order, as MediaPipe's
/// SsdAnchorsCalculator makes them with the Objectron detector's options (the TF Object
/// Detection API's `ssd_anchor_generator` for MobileNet SSDs): per layer, per cell row by
/// row, three anchors a cell in the lowest layer (scale 0.1 at 1:1, then 2:1 and 1:2),
/// six above (five aspect ratios, and 1:1 between this layer's scale and the next's).
pub fn ssd_anchors(size: usize) -> Vec<SsdAnchor> {
    let layers = SSD_STRIDES.len();
    let scale =
        |i: usize| SSD_SCALES.0 + (SSD_SCALES.1 - SSD_SCALES.0) * i as f32 / (layers - 1) as f32;
    let mut out = Vec::new();
    for (layer, stride) in SSD_STRIDES.iter().enumerate() {
        let shapes: Vec<(f32, f32)> = if layer == 0 {
            vec![(0.1, 1.0), (scale(0), 2.0), (scale(0), 0.5)]
        } else {
            let next = if layer + 1 == layers {
                1.0
            } else {
                scale(layer + 1)
            };
            SSD_ASPECT_RATIOS
                .iter()
                .map(|&ar| (scale(layer), ar))
                .chain(std::iter::once(((scale(layer) * next).sqrt(), 1.0)))
                .collect()
        };
        let cells = size.div_ceil(*stride);
        for y in 0..cells {
            for x in 0..cells {
                for &(s, ar) in &shapes {
                    let r = ar.sqrt();
                    out.push(SsdAnchor {
                        x: (x as f32 + 0.5) / cells as f32,
                        y: (y as f32 + 0.5) / cells as f32,
                        w: s * r,
                        h: s / r,
                    });
                }
            }
        }
    }
    out
}

/// Strides of MediaPipe's pose detector anchor layers (its SsdAnchorsCalculator options).
const POSE_STRIDES: [usize; 5] = [8, 16, 32, 32, 32];

/// SSD anchor centres of MediaPipe's pose detector for a square input of `size` pixels:
/// layers of equal stride share a grid, two anchors per layer per cell.
pub fn pose_anchors(size: usize) -> Vec<[f32; 2]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < POSE_STRIDES.len() {
        let same = POSE_STRIDES[i..]
            .iter()
            .take_while(|&&s| s == POSE_STRIDES[i])
            .count();
        let cells = size.div_ceil(POSE_STRIDES[i]);
        for y in 0..cells {
            for x in 0..cells {
                let centre = [
                    (x as f32 + 0.5) / cells as f32 * size as f32,
                    (y as f32 + 0.5) / cells as f32 * size as f32,
                ];
                out.extend(std::iter::repeat_n(centre, 2 * same));
            }
        }
        i += same;
    }
    out
}

impl Layout {
    /// Recognises a layout from the output shapes and the input size, if any fits.
    pub fn recognise(outputs: &[Vec<usize>], input: (usize, usize)) -> Option<Layout> {
        match outputs {
            [a, b]
                if a.len() == 3
                    && b.len() == 3
                    && a[0] == 1
                    && b[0] == 1
                    && a[2] == 4
                    && b[2] >= 2
                    && b[2] != 4 =>
            {
                let anchors = ssd_anchors(input.0);
                let fits = input.0 == input.1 && a[1] == anchors.len() && b[1] == anchors.len();
                fits.then_some(Layout::Ssd {
                    anchors,
                    classes: b[2],
                    side: input.0,
                })
            }
            [a, b] if a.len() == 3 && b.len() == 3 && a[0] == 1 && b[0] == 1 => {
                let anchors = pose_anchors(input.0);
                let fits = input.0 == input.1
                    && a[1] == anchors.len()
                    && b[1] == anchors.len()
                    && a[2] >= 8
                    && b[2] == 1;
                fits.then_some(Layout::MediaPipePose { anchors })
            }
            [o] if o.len() == 3 && o[0] == 1 => {
                if o[1] < o[2] && o[1] > 4 {
                    Some(Layout::YoloV8 { classes: o[1] - 4 })
                } else if o[2] < o[1] && o[2] > 5 {
                    Some(Layout::YoloV5 { classes: o[2] - 5 })
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Number of classes the model scores.
    pub fn classes(&self) -> usize {
        match self {
            Layout::MediaPipePose { .. } => 1,
            Layout::YoloV8 { classes }
            | Layout::YoloV5 { classes }
            | Layout::Ssd { classes, .. } => *classes,
        }
    }

    /// Whether the model takes pixels scaled to -1..1 (MediaPipe's and TF's detectors) rather
    /// than 0..1 (YOLO exports).
    pub fn signed_input(&self) -> bool {
        matches!(self, Layout::MediaPipePose { .. } | Layout::Ssd { .. })
    }

    /// IoU above which the weaker of two same-class boxes is suppressed.
    fn nms_iou(&self) -> f32 {
        match self {
            // Its anchors are dense and its boxes are large: neighbours fire together.
            Layout::MediaPipePose { .. } => 0.3,
            Layout::YoloV8 { .. } | Layout::YoloV5 { .. } => 0.45,
            // As MediaPipe's Objectron graph.
            Layout::Ssd { .. } => 0.5,
        }
    }

    /// Decodes the outputs (flattened, in the order the model declares them) into boxes
    /// scoring at least `min_score`, after non-maximum suppression.
    pub fn decode(&self, outputs: &[&[f32]], min_score: f32) -> Vec<Detection> {
        let mut found = Vec::new();
        match self {
            Layout::MediaPipePose { anchors } => {
                let (raw, logits) = (outputs[0], outputs[1]);
                let stride = raw.len() / anchors.len();
                for (k, anchor) in anchors.iter().enumerate() {
                    let score = sigmoid(logits[k].clamp(-100.0, 100.0));
                    if score < min_score {
                        continue;
                    }
                    let r = &raw[k * stride..];
                    let hip = [r[4] + anchor[0], r[5] + anchor[1]];
                    let top = [r[6] + anchor[0], r[7] + anchor[1]];
                    // From 0.9 d above the hips to d below, 0.7 d wide (as
                    // daemon/models/anchors.py's person_box).
                    let d = (top[0] - hip[0]).hypot(top[1] - hip[1]);
                    found.push(Detection {
                        x0: hip[0] - 0.35 * d,
                        y0: hip[1] - 0.9 * d,
                        x1: hip[0] + 0.35 * d,
                        y1: hip[1] + d,
                        score,
                        class: 0,
                    });
                }
            }
            Layout::YoloV8 { classes } => {
                let out = outputs[0];
                let n = out.len() / (4 + classes);
                for k in 0..n {
                    let at = |row: usize| out[row * n + k];
                    let (class, score) = best((0..*classes).map(|c| at(4 + c)));
                    if score >= min_score {
                        found.push(centred(at(0), at(1), at(2), at(3), score, class));
                    }
                }
            }
            Layout::Ssd {
                anchors,
                classes,
                side,
            } => {
                let (raw, logits) = (outputs[0], outputs[1]);
                let size = *side as f32;
                for (k, a) in anchors.iter().enumerate() {
                    // Class 0 is the background; the best of the others, scored.
                    let row = &logits[k * classes..(k + 1) * classes];
                    let (class, logit) = best(row[1..].iter().copied());
                    let score = sigmoid(logit.clamp(-100.0, 100.0));
                    if score < min_score {
                        continue;
                    }
                    let r = &raw[k * 4..k * 4 + 4];
                    let [sy, sx, sh, sw] = SSD_BOX_SCALES;
                    let cy = r[0] / sy * a.h + a.y;
                    let cx = r[1] / sx * a.w + a.x;
                    let h = (r[2] / sh).clamp(-10.0, 10.0).exp() * a.h;
                    let w = (r[3] / sw).clamp(-10.0, 10.0).exp() * a.w;
                    found.push(centred(
                        cx * size,
                        cy * size,
                        w * size,
                        h * size,
                        score,
                        class + 1,
                    ));
                }
            }
            Layout::YoloV5 { classes } => {
                let out = outputs[0];
                for r in out.chunks_exact(5 + classes) {
                    let (class, score) = best(r[5..].iter().copied());
                    let score = score * r[4];
                    if score >= min_score {
                        found.push(centred(r[0], r[1], r[2], r[3], score, class));
                    }
                }
            }
        }
        suppress(found, self.nms_iou())
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn best(scores: impl Iterator<Item = f32>) -> (usize, f32) {
    scores
        .enumerate()
        .fold((0, f32::MIN), |b, (i, s)| if s > b.1 { (i, s) } else { b })
}

fn centred(cx: f32, cy: f32, w: f32, h: f32, score: f32, class: usize) -> Detection {
    Detection {
        x0: cx - w / 2.0,
        y0: cy - h / 2.0,
        x1: cx + w / 2.0,
        y1: cy + h / 2.0,
        score,
        class,
    }
}

/// Greedy non-maximum suppression per class: strongest first, dropping any box that
/// overlaps a kept one of its class by more than `iou`.
pub fn suppress(mut found: Vec<Detection>, iou: f32) -> Vec<Detection> {
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in found {
        if kept.iter().all(|k| k.class != d.class || k.iou(&d) <= iou) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_outputs() -> Vec<f32> {
        super::super::f32s(include_bytes!(
            "../../../models/testdata/basketball1.output.f32"
        ))
    }

    #[test]
    fn pose_anchors_match_the_model() {
        let a = pose_anchors(224);
        assert_eq!(a.len(), 2254, "28x28x2 + 14x14x2 + 7x7x6");
        assert_eq!(a[0], [4.0, 4.0]);
        assert_eq!(a[1568], [8.0, 8.0], "first 16-pixel cell");
        assert_eq!(a[2253], [208.0, 208.0]);
    }

    /// The decoding of tflite-runtime's raw outputs for basketball1.png matches the
    /// reference decoding written with them (`daemon/models/reference.py`).
    #[test]
    fn decodes_reference_outputs_like_the_reference() {
        let raw = reference_outputs();
        let (reg, logits) = raw.split_at(2254 * 12);
        let layout = Layout::recognise(&[vec![1, 2254, 12], vec![1, 2254, 1]], (224, 224))
            .expect("pose layout");
        let got = layout.decode(&[reg, logits], 0.5);
        let want = super::super::reference_detections(include_str!(
            "../../../models/testdata/basketball1.detections.json"
        ));
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g.score - w.score).abs() < 1e-5);
            for (x, y) in [g.x0, g.y0, g.x1, g.y1].iter().zip(&w.bbox) {
                assert!((x - y).abs() < 1e-3, "{g:?} vs {:?}", w.bbox);
            }
        }
        // Lower thresholds keep more, but NMS leaves few: the anchors fire in clusters.
        let loose = layout.decode(&[reg, logits], 0.1);
        let before_nms = logits.iter().filter(|&&l| sigmoid(l) >= 0.1).count();
        assert!(
            loose.len() < before_nms / 3,
            "{} of {before_nms}",
            loose.len()
        );
    }

    #[test]
    fn ssd_anchors_match_the_model() {
        let a = ssd_anchors(300);
        assert_eq!(
            a.len(),
            1917,
            "19x19x3 + (10x10 + 5x5 + 3x3 + 2x2 + 1x1) x 6"
        );
        let first = a[0];
        assert!((first.x - 0.5 / 19.0).abs() < 1e-6 && (first.y - first.x).abs() < 1e-6);
        assert!((first.w - 0.1).abs() < 1e-6 && (first.h - 0.1).abs() < 1e-6);
        // The lowest layer's 2:1 anchor at scale 0.2.
        assert!((a[1].w - 0.2 * 2f32.sqrt()).abs() < 1e-6, "{:?}", a[1]);
        // The last layer: one cell, six anchors centred, the last between 0.95 and 1.
        let last = a[1916];
        assert_eq!((last.x, last.y), (0.5, 0.5));
        assert!((last.w - 0.95f32.sqrt()).abs() < 1e-6, "{last:?}");
        assert_eq!(
            Layout::recognise(&[vec![1, 1917, 4], vec![1, 1917, 24]], (300, 300)),
            Some(Layout::Ssd {
                anchors: a,
                classes: 24,
                side: 300
            })
        );
        assert_eq!(
            Layout::recognise(&[vec![1, 1900, 4], vec![1, 1900, 24]], (300, 300)),
            None,
            "the anchor count must fit"
        );
    }

    /// An SSD box is decoded around its anchor, class 0 (the background) never wins.
    #[test]
    fn ssd_boxes_decode_around_their_anchors() {
        let anchors = vec![SsdAnchor {
            x: 0.5,
            y: 0.25,
            w: 0.2,
            h: 0.4,
        }];
        let layout = Layout::Ssd {
            anchors,
            classes: 3,
            side: 100,
        };
        // Centre moved by 0.1 anchor widths right (1.0 / 10), size e^(5/5) = e times.
        let raw = [0.0, 1.0, 0.0, 5.0];
        let logits = [10.0, 0.0, 2.0];
        let got = layout.decode(&[&raw, &logits], 0.5);
        assert_eq!(got.len(), 1);
        let d = got[0];
        assert_eq!(
            d.class, 2,
            "the background's logit is higher but never counts"
        );
        assert!((d.score - sigmoid(2.0)).abs() < 1e-6);
        let w = 0.2 * std::f32::consts::E * 100.0;
        assert!(((d.x0 + d.x1) / 2.0 - 52.0).abs() < 1e-3, "{d:?}");
        assert!(((d.x1 - d.x0) - w).abs() < 1e-3, "{d:?}");
        assert!(((d.y1 - d.y0) - 40.0).abs() < 1e-3, "{d:?}");
        assert!(layout.decode(&[&raw, &[10.0, -1.0, -2.0]], 0.5).is_empty());
    }

    #[test]
    fn yolo_layouts_are_told_apart_and_decoded() {
        assert_eq!(
            Layout::recognise(&[vec![1, 84, 8400]], (640, 640)),
            Some(Layout::YoloV8 { classes: 80 })
        );
        assert_eq!(
            Layout::recognise(&[vec![1, 25200, 85]], (640, 640)),
            Some(Layout::YoloV5 { classes: 80 })
        );
        assert_eq!(Layout::recognise(&[vec![1, 1000]], (224, 224)), None);
        assert_eq!(
            Layout::recognise(&[vec![1, 100, 12], vec![1, 100, 1]], (224, 224)),
            None,
            "pose layout needs the anchor count"
        );
        // v8: two classes, three candidates (rows: cx, cy, w, h, class0, class1).
        let v8 = Layout::YoloV8 { classes: 2 };
        #[rustfmt::skip]
        let out = [
            50.0, 52.0, 200.0,
            50.0, 50.0, 100.0,
            20.0, 20.0, 10.0,
            40.0, 40.0, 10.0,
            0.9, 0.8, 0.1,
            0.1, 0.1, 0.7,
        ];
        let got = v8.decode(&[&out], 0.5);
        assert_eq!(got.len(), 2, "the second overlaps the first: {got:?}");
        assert_eq!((got[0].x0, got[0].y1, got[0].class), (40.0, 70.0, 0));
        assert_eq!((got[1].class, got[1].score), (1, 0.7));
        // v5: objectness multiplies the class score.
        let v5 = Layout::YoloV5 { classes: 1 };
        let out = [
            10.0, 10.0, 4.0, 4.0, 0.5, 0.9, 30.0, 30.0, 4.0, 4.0, 0.9, 0.9,
        ];
        let got = v5.decode(&[&out], 0.5);
        assert_eq!(got.len(), 1);
        assert!((got[0].score - 0.81).abs() < 1e-6);
    }
}
