//! Running a detection model on the CPU with tract.
//!
//! [`Model::load`] reads an ONNX model (`.onnx`, or `.onnx.gz` as the default one ships)
//! with tract-onnx or a TFLite model (`.tflite`) with tract-tflite, checks that it takes
//! one image and that its outputs are in a [`Layout`] focusd can decode, and plans it for
//! that input size. [`Model::detect`] runs it on an RGB image of that size.
//!
//! fp16 TFLite models as MediaPipe ships them (weights behind `DEQUANTIZE`, often sparse
//! behind `DENSIFY`) do not load in tract-tflite: convert them once with
//! `daemon/models/tflite_to_onnx.py`, as the default model was (see `daemon/models/README.md`).

mod decode;
pub mod input;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

pub use decode::{Detection, Layout, pose_anchors, suppress};

/// The default detector, embedded: an SSD MobileNetV2 for 24 Open Images classes (people,
/// vehicles, bicycles, animals, things), MediaPipe Objectron's 2-D stage (see
/// `daemon/models/README.md`).
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../../../models/object_detection.onnx.gz");
/// Its class names, one a line, class 0 the background.
const DEFAULT_LABELS: &str = include_str!("../../../models/object_detection.labels");
/// Name the default model goes by in logs and errors.
pub const DEFAULT_MODEL_NAME: &str = "object_detection (built in)";

/// COCO's 80 class names, for YOLO models trained on it (the common case).
const COCO: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// Why a model cannot be used. Each message names the model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The file could not be read.
    #[error("model {model}: cannot read: {reason}")]
    Read { model: String, reason: String },
    /// The file name says neither ONNX nor TFLite.
    #[error("model {model}: unknown format (expected .onnx, .onnx.gz or .tflite)")]
    Format { model: String },
    /// The file does not parse as a model of its format.
    #[error("model {model}: not a valid {format} model: {reason}")]
    Corrupt {
        model: String,
        format: &'static str,
        reason: String,
    },
    /// The model uses an operator tract does not implement.
    #[error("model {model}: unsupported operator {operator}{hint}")]
    UnsupportedOperator {
        model: String,
        operator: String,
        /// Advice for the operators we know a way around, else empty.
        hint: &'static str,
    },
    /// The input is not one image.
    #[error(
        "model {model}: input {shape} is not one image ([1,3,H,W] or [1,H,W,3] with fixed H and W)"
    )]
    InputShape { model: String, shape: String },
    /// The outputs are in no layout focusd decodes.
    #[error(
        "model {model}: outputs {shapes} match no known layout (MediaPipe pose: [1,N,12] and [1,N,1]; SSD: [1,1917,4] and [1,1917,C]; YOLOv8: [1,4+C,N]; YOLOv5: [1,N,5+C])"
    )]
    OutputLayout { model: String, shapes: String },
    /// The labels file beside the model names more or fewer classes than it scores.
    #[error(
        "model {model}: its labels file {file} names {names} classes, the model scores {classes}"
    )]
    LabelCount {
        model: String,
        file: String,
        names: usize,
        classes: usize,
    },
    /// None of the labels to keep is one the model knows.
    #[error("model {model}: none of the labels {wanted:?} is among its classes {known:?}")]
    Labels {
        model: String,
        wanted: Vec<String>,
        known: Vec<String>,
    },
    /// tract could not plan or run the model.
    #[error("model {model}: {reason}")]
    Run { model: String, reason: String },
}

/// Where the channels are in the input tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Channels {
    First,
    Last,
}

/// A loaded, planned detection model.
#[derive(Debug)]
pub struct Model {
    /// Shown in logs and errors.
    name: String,
    plan: Arc<TypedSimplePlan>,
    /// Input width and height in pixels.
    size: (usize, usize),
    channels: Channels,
    layout: Layout,
    labels: Vec<String>,
}

impl Model {
    /// Loads the built-in detector.
    pub fn default_model() -> Result<Model, ModelError> {
        let labels = DEFAULT_LABELS.lines().map(str::to_string).collect();
        Model::from_bytes(
            DEFAULT_MODEL_NAME,
            "default.onnx.gz",
            DEFAULT_MODEL,
            Some(labels),
        )
    }

    /// Loads a model file; the format is taken from its name. Its class names come from a
    /// labels file beside it, if there is one (the model's name with `.labels` for its
    /// extension, a name a line: `yolo.onnx` → `yolo.labels`); else COCO's for a model
    /// with COCO's 80 classes, `class0`, `class1`... for others.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let name = path.display().to_string();
        let read_error = |e: std::io::Error| ModelError::Read {
            model: name.clone(),
            reason: e.to_string(),
        };
        let bytes = std::fs::read(path).map_err(read_error)?;
        let labels_file = labels_file(path);
        let labels = match std::fs::read_to_string(&labels_file) {
            Ok(text) => Some(text.lines().map(|l| l.trim().to_string()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ModelError::Read {
                    model: labels_file.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let model = Model::from_bytes(&name, &path.to_string_lossy(), &bytes, labels);
        match model {
            Err(ModelError::LabelCount {
                model,
                names,
                classes,
                ..
            }) => Err(ModelError::LabelCount {
                model,
                file: labels_file.display().to_string(),
                names,
                classes,
            }),
            other => other,
        }
    }

    fn from_bytes(
        name: &str,
        file_name: &str,
        bytes: &[u8],
        labels: Option<Vec<String>>,
    ) -> Result<Model, ModelError> {
        let model = name.to_string();
        let corrupt = |format, e: &dyn std::fmt::Display| ModelError::Corrupt {
            model: model.clone(),
            format,
            reason: e.to_string(),
        };
        let typed = if let Some(_stem) = file_name.strip_suffix(".onnx.gz") {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut raw)
                .map_err(|e| corrupt("gzip", &e))?;
            onnx_to_typed(&model, &raw)?
        } else if file_name.ends_with(".onnx") {
            onnx_to_typed(&model, bytes)?
        } else if file_name.ends_with(".tflite") {
            tflite_to_typed(&model, bytes)?
        } else {
            return Err(ModelError::Format { model });
        };
        Model::plan(model, typed, labels)
    }

    fn plan(
        name: String,
        typed: TypedModel,
        labels: Option<Vec<String>>,
    ) -> Result<Model, ModelError> {
        let run_error = |e: TractError| ModelError::Run {
            model: name.clone(),
            reason: format!("{e:#}"),
        };
        let input = typed.input_fact(0).map_err(run_error)?;
        let dims = input.shape.as_concrete().map(|d| d.to_vec());
        let input_shape = format!("{:?}", input.shape);
        let (size, channels) = match dims.as_deref() {
            Some([1, 3, h, w]) if *h >= 16 && *w >= 16 => ((*w, *h), Channels::First),
            Some([1, h, w, 3]) if *h >= 16 && *w >= 16 => ((*w, *h), Channels::Last),
            _ => {
                return Err(ModelError::InputShape {
                    model: name,
                    shape: input_shape,
                });
            }
        };
        if typed.inputs.len() != 1 || input.datum_type != f32::datum_type() {
            return Err(ModelError::InputShape {
                model: name,
                shape: format!(
                    "{input_shape} ({} inputs, {:?})",
                    typed.inputs.len(),
                    input.datum_type
                ),
            });
        }
        let mut shapes = Vec::new();
        for i in 0..typed.outputs.len() {
            let fact = typed.output_fact(i).map_err(run_error)?;
            shapes.push(
                fact.shape
                    .as_concrete()
                    .map(|d| d.to_vec())
                    .unwrap_or_default(),
            );
        }
        let Some(layout) = Layout::recognise(&shapes, size) else {
            return Err(ModelError::OutputLayout {
                model: name,
                shapes: format!("{shapes:?}"),
            });
        };
        let labels = match (labels, &layout) {
            (Some(mut names), l) => {
                // A trailing empty line is not a class.
                while names.len() > l.classes() && names.last().is_some_and(|n| n.is_empty()) {
                    names.pop();
                }
                if names.len() != l.classes() {
                    return Err(ModelError::LabelCount {
                        model: name,
                        file: String::new(),
                        names: names.len(),
                        classes: l.classes(),
                    });
                }
                names
            }
            (None, Layout::MediaPipePose { .. }) => vec!["person".to_string()],
            (None, l) if l.classes() == COCO.len() => COCO.iter().map(|s| s.to_string()).collect(),
            (None, l) => (0..l.classes()).map(|c| format!("class{c}")).collect(),
        };
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(run_error)?;
        Ok(Model {
            name,
            plan,
            size,
            channels,
            layout,
            labels,
        })
    }

    /// Name for logs: the path, or the built-in model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Input width and height in pixels.
    pub fn input_size(&self) -> (usize, usize) {
        self.size
    }

    /// Class names, indexed by [`Detection::class`].
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Runs the model on `rgb` (input width x height x 3, interleaved) and returns the
    /// boxes scoring at least `min_score`, in input pixels.
    pub fn detect(&self, rgb: &[u8], min_score: f32) -> Result<Vec<Detection>, ModelError> {
        let outputs = self.run(rgb)?;
        let views: Vec<&[f32]> = outputs
            .iter()
            .map(|t| floats(t))
            .collect::<TractResult<_>>()
            .map_err(|e| self.run_error(e))?;
        Ok(self.layout.decode(&views, min_score))
    }

    /// The raw output tensors for `rgb`.
    pub fn run(&self, rgb: &[u8]) -> Result<TVec<TValue>, ModelError> {
        let (w, h) = self.size;
        assert_eq!(rgb.len(), w * h * 3, "input image size");
        // MediaPipe's and TF's models want -1..1, YOLO exports 0..1.
        let (scale, offset) = if self.layout.signed_input() {
            (1.0 / 127.5, -1.0)
        } else {
            (1.0 / 255.0, 0.0)
        };
        let norm = |v: u8| v as f32 * scale + offset;
        let tensor: Tensor = match self.channels {
            Channels::Last => tract_ndarray::Array4::from_shape_fn((1, h, w, 3), |(_, y, x, c)| {
                norm(rgb[(y * w + x) * 3 + c])
            })
            .into(),
            Channels::First => {
                tract_ndarray::Array4::from_shape_fn((1, 3, h, w), |(_, c, y, x)| {
                    norm(rgb[(y * w + x) * 3 + c])
                })
                .into()
            }
        };
        self.plan
            .run(tvec!(tensor.into()))
            .map_err(|e| self.run_error(e))
    }

    fn run_error(&self, e: TractError) -> ModelError {
        ModelError::Run {
            model: self.name.clone(),
            reason: format!("{e:#}"),
        }
    }
}

/// Where the labels file of the model at `path` is: its name with `.labels` for its
/// extension (`.onnx.gz` counts as one).
fn labels_file(path: &Path) -> std::path::PathBuf {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = [".onnx.gz", ".onnx", ".tflite"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
        .unwrap_or(&file);
    path.with_file_name(format!("{stem}.labels"))
}

/// The f32 values of an output tensor.
fn floats(t: &TValue) -> TractResult<&[f32]> {
    t.try_as_plain_ram()?.as_slice::<f32>()
}

fn onnx_to_typed(model: &str, bytes: &[u8]) -> Result<TypedModel, ModelError> {
    let inference = tract_onnx::onnx()
        .model_for_read(&mut &*bytes)
        .map_err(|e| ModelError::Corrupt {
            model: model.to_string(),
            format: "ONNX",
            reason: format!("{e:#}"),
        })?;
    // tract-onnx stands an unknown operator in as Unimplemented(name): name it.
    if let Some(node) = inference
        .nodes()
        .iter()
        .find(|n| n.op().name().starts_with("Unimplemented("))
    {
        let op = node.op().name();
        return Err(ModelError::UnsupportedOperator {
            model: model.to_string(),
            operator: op["Unimplemented(".len()..op.len() - 1].to_string(),
            hint: "",
        });
    }
    inference.into_typed().map_err(|e| ModelError::Run {
        model: model.to_string(),
        reason: format!("{e:#}"),
    })
}

fn tflite_to_typed(model: &str, bytes: &[u8]) -> Result<TypedModel, ModelError> {
    let tflite = tract_tflite::tflite();
    let proto = tflite
        .proto_model_for_read(&mut &*bytes)
        .map_err(|e| ModelError::Corrupt {
            model: model.to_string(),
            format: "TFLite",
            reason: format!("{e:#}"),
        })?;
    tflite.model_for_proto_model(&proto).map_err(|e| {
        let text = format!("{e:#}");
        // tract-tflite says "Unsupported: DEQUANTIZE, inputs: ...".
        match text.split_once("Unsupported: ") {
            Some((_, rest)) => {
                let operator: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let hint = if operator == "DEQUANTIZE" || operator == "DENSIFY" {
                    " (an fp16 or sparse model: convert it with daemon/models/tflite_to_onnx.py)"
                } else {
                    ""
                };
                ModelError::UnsupportedOperator {
                    model: model.to_string(),
                    operator,
                    hint,
                }
            }
            None => ModelError::Run {
                model: model.to_string(),
                reason: text,
            },
        }
    })
}

/// The little-endian f32s of a reference file (the tests' raw outputs).
#[cfg(test)]
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// One detection of a reference run (`testdata/*.detections.json`, written by
/// `reference.py` and `reference_ssd.py`): its class name if the file has one, its score
/// and its box (x0, y0, x1, y1, input pixels).
#[cfg(test)]
struct ReferenceDetection {
    label: Option<String>,
    score: f32,
    bbox: [f32; 4],
}

#[cfg(test)]
fn reference_detections(json: &str) -> Vec<ReferenceDetection> {
    let all: Vec<serde_json::Value> = serde_json::from_str(json).expect("a JSON array");
    all.iter()
        .map(|w| {
            let b = w["box"].as_array().expect("a box");
            let f = |v: &serde_json::Value| v.as_f64().expect("a number") as f32;
            ReferenceDetection {
                label: w["label"].as_str().map(str::to_string),
                score: f(&w["score"]),
                bbox: [f(&b[0]), f(&b[1]), f(&b[2]), f(&b[3])],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_input() -> &'static [u8] {
        include_bytes!("../../../models/testdata/basketball1.input.u8")
    }

    /// The largest difference between tract's outputs and the reference runtime's.
    fn worst_difference(out: &TVec<TValue>, want: &[f32]) -> f32 {
        let got: Vec<f32> = out
            .iter()
            .flat_map(|t| floats(t).unwrap().to_vec())
            .collect();
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    }

    fn pose_model() -> Model {
        let bytes = include_bytes!("../../../models/person_detection.onnx.gz");
        Model::from_bytes("pose", "pose.onnx.gz", bytes, None).unwrap()
    }

    /// tract on the converted built-in detector gives what tflite-runtime gave on the
    /// original, and the detections are those of the reference decoding
    /// (`daemon/models/reference_ssd.py`), for a photo of people and one of a car.
    #[test]
    fn default_model_matches_its_own_runtime() {
        let model = Model::default_model().unwrap();
        assert_eq!(model.input_size(), (300, 300));
        assert_eq!(model.labels().len(), 24);
        assert_eq!(
            (model.labels()[4].as_str(), model.labels()[23].as_str()),
            ("Person", "Car")
        );
        for (input, output, detections) in [
            (
                &include_bytes!("../../../models/testdata/basketball1.ssd.input.u8")[..],
                &include_bytes!("../../../models/testdata/basketball1.ssd.output.f32")[..],
                include_str!("../../../models/testdata/basketball1.ssd.detections.json"),
            ),
            (
                &include_bytes!("../../../models/testdata/licenseplate_motion.ssd.input.u8")[..],
                &include_bytes!("../../../models/testdata/licenseplate_motion.ssd.output.f32")[..],
                include_str!("../../../models/testdata/licenseplate_motion.ssd.detections.json"),
            ),
        ] {
            let worst = worst_difference(&model.run(input).unwrap(), &f32s(output));
            assert!(worst < 0.05, "max |tract - tflite-runtime| = {worst}");
            let want = super::reference_detections(detections);
            let got = model.detect(input, 0.3).unwrap();
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(Some(&model.labels()[g.class]), w.label.as_ref());
                assert!((g.score - w.score).abs() < 0.01);
                for (x, y) in [g.x0, g.y0, g.x1, g.y1].iter().zip(&w.bbox) {
                    assert!((x - y).abs() < 1.0, "{g:?} vs {:?}", w.bbox);
                }
            }
        }
    }

    /// tract on the converted pose detector gives what tflite-runtime gave on the original.
    #[test]
    fn pose_model_matches_its_own_runtime() {
        let model = pose_model();
        assert_eq!(model.input_size(), (224, 224));
        let out = model.run(reference_input()).unwrap();
        let want = f32s(include_bytes!(
            "../../../models/testdata/basketball1.output.f32"
        ));
        let worst = worst_difference(&out, &want);
        assert!(worst < 0.05, "max |tract - tflite-runtime| = {worst}");
        let found = model.detect(reference_input(), 0.5).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
    }

    /// The same detector exported with a YOLOv8 head finds the same person.
    #[test]
    fn yolo_export_decodes_like_the_original() {
        let bytes = include_bytes!("../../../models/testdata/person_detection_yolo.onnx.gz");
        let yolo = Model::from_bytes("yolo", "yolo.onnx.gz", bytes, None).unwrap();
        assert_eq!(yolo.layout(), &Layout::YoloV8 { classes: 1 });
        assert_eq!(yolo.labels(), ["class0"]);
        let pose = pose_model();
        let want = pose.detect(reference_input(), 0.5).unwrap();
        let got = yolo.detect(reference_input(), 0.5).unwrap();
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        assert!(got[0].iou(&want[0]) > 0.98, "{got:?} vs {want:?}");
        assert!((got[0].score - want[0].score).abs() < 0.01);
    }

    /// A labels file beside a model names its classes; one of the wrong length is refused,
    /// naming the file.
    #[test]
    fn a_labels_file_beside_the_model_names_its_classes() {
        let dir = std::env::temp_dir().join(format!("focusd-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = dir.join("yolo.onnx.gz");
        std::fs::write(
            &model,
            include_bytes!("../../../models/testdata/person_detection_yolo.onnx.gz"),
        )
        .unwrap();
        assert_eq!(labels_file(&model), dir.join("yolo.labels"));
        std::fs::write(dir.join("yolo.labels"), "walker\n").unwrap();
        assert_eq!(Model::load(&model).unwrap().labels(), ["walker"]);
        std::fs::write(dir.join("yolo.labels"), "walker\ncar\n").unwrap();
        let err = Model::load(&model).unwrap_err();
        assert!(
            matches!(&err, ModelError::LabelCount { names: 2, classes: 1, file, .. } if file.ends_with("yolo.labels")),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn testdata(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/testdata")
            .join(name)
    }

    #[test]
    fn bad_models_are_named_clearly() {
        let err = Model::load(&testdata("unsupported_op.onnx")).unwrap_err();
        assert!(
            matches!(&err, ModelError::UnsupportedOperator { operator, .. } if operator == "FancyUpsample"),
            "{err}"
        );
        let err = Model::load(&testdata("wrong_input.onnx")).unwrap_err();
        assert!(matches!(err, ModelError::InputShape { .. }), "{err}");
        assert!(err.to_string().contains("not one image"), "{err}");
        let err = Model::load(&testdata("missing.onnx")).unwrap_err();
        assert!(matches!(err, ModelError::Read { .. }), "{err}");
        let err = Model::load(&testdata("basketball1.input.u8")).unwrap_err();
        assert!(matches!(err, ModelError::Format { .. }), "{err}");
        let err = Model::from_bytes("junk", "junk.onnx", b"\x08\x07not protobuf at all", None)
            .unwrap_err();
        assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
        let err = Model::from_bytes("junk", "junk.tflite", b"TFL3 nope", None).unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::Corrupt {
                    format: "TFLite",
                    ..
                }
            ),
            "{err}"
        );
        let half = &DEFAULT_MODEL[..DEFAULT_MODEL.len() / 2];
        let err = Model::from_bytes("half", "half.onnx.gz", half, None).unwrap_err();
        assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
    }
}
