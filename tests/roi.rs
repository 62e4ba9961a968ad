//! The default detector on real photos (opencv-doc's examples, prepared by
//! tests/media.sh) against people annotated by hand in tests/data/people.json.

use std::path::Path;

use focusd::roi::model::input::Region;
use focusd::roi::{Model, ModelDetector, ModelOptions};
use focusd_board::image::Image;
use focusd_testkit::picture::json_boxes;

/// Whether detection `d` finds annotated person `p`. The model's person box is built from
/// hip and head keypoints, not fitted to the outline, and the annotation spans outstretched
/// arms and legs: so either they overlap well (IoU >= 0.3), or the detection lies mostly
/// within the person (70% of it) and still overlaps (IoU >= 0.2).
fn finds(d: [f64; 4], p: [f64; 4]) -> bool {
    let w = d[2].min(p[2]) - d[0].max(p[0]);
    let h = d[3].min(p[3]) - d[1].max(p[1]);
    let inter = w.max(0.0) * h.max(0.0);
    let area = |r: [f64; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    let iou = inter / (area(d) + area(p) - inter);
    iou >= 0.3 || (iou >= 0.2 && inter >= 0.7 * area(d))
}

fn load_still(name: &str) -> Image {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.media/stills");
    let file = std::fs::read_dir(&dir)
        .expect("tests/.media/stills: run tests/media.sh first")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}_")))
        })
        .unwrap_or_else(|| panic!("{name} not prepared: run tests/media.sh"));
    let stem = file.file_stem().unwrap().to_str().unwrap();
    let (w, h) = stem.rsplit_once('_').unwrap().1.split_once('x').unwrap();
    let mut img = Image::i420(w.parse().unwrap(), h.parse().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len(), img.as_bytes().len(), "{}", file.display());
    img.as_bytes_mut().copy_from_slice(&bytes);
    img
}

#[test]
fn default_model_finds_the_annotated_people_and_no_one_else() {
    let people: serde_json::Value = serde_json::from_str(include_str!("data/people.json")).unwrap();
    let options = ModelOptions {
        labels: vec!["person".into()],
        threshold: 0.4,
        margin_percent: 0.0,
        cpu_budget: 1.0,
        ignore_top: 0,
    };
    let mut detector = ModelDetector::new(Model::default_model().unwrap(), options);
    for (name, truth) in people.as_object().unwrap() {
        if name.starts_with('_') {
            continue;
        }
        let img = load_still(name);
        let whole = Region {
            x: 0.0,
            y: 0.0,
            w: img.width() as f64,
            h: img.height() as f64,
        };
        let found: Vec<([f64; 4], f32)> = detector
            .look(&img, whole, 0.3)
            .iter()
            .map(|d| ([d.rect.x0, d.rect.y0, d.rect.x1, d.rect.y1], d.score))
            .collect();
        let (required, optional) = (
            json_boxes(&truth["required"]),
            json_boxes(&truth["optional"]),
        );
        println!("{name}: found {found:?}");
        for person in &required {
            assert!(
                found.iter().any(|f| finds(f.0, *person)),
                "{name}: person {person:?} not found: {found:?}"
            );
        }
        for (f, score) in &found {
            assert!(
                required.iter().chain(&optional).any(|p| finds(*f, *p)),
                "{name}: {f:?} (score {score}) is no annotated person"
            );
        }
    }
}
