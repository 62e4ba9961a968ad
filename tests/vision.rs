//! VISION mode with the model detector on real footage: vtest.avi's pedestrians, annotated
//! by hand in four frames (tests/data/vtest_people.json), stay visible in the source track
//! while the rest of the frame goes black.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use focusd_testkit::TestDaemon;
use focusd_testkit::picture::json_boxes;
use focusd_testkit::receiver::{Picture, Receiver, ReceiverOptions};

/// Every this many pixels in x and y are compared when matching a picture to a frame.
const STEP: usize = 4;

/// The luma of every frame of a y4m file, subsampled by [`STEP`], and in full for the
/// frames in `keep`.
fn footage_lumas(path: &Path, keep: &[usize]) -> (Vec<Vec<u8>>, BTreeMap<usize, Vec<u8>>) {
    let mut r = BufReader::new(std::fs::File::open(path).unwrap());
    let mut header = String::new();
    r.read_line(&mut header).unwrap();
    let field = |tag: char| -> usize {
        header
            .split_whitespace()
            .find_map(|f| f.strip_prefix(tag))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let (w, h) = (field('W'), field('H'));
    let mut frame = vec![0u8; w * h * 3 / 2];
    let mut out = Vec::new();
    let mut full = BTreeMap::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        r.read_exact(&mut frame).unwrap();
        if keep.contains(&out.len()) {
            full.insert(out.len(), frame[..w * h].to_vec());
        }
        out.push(subsample(&frame[..w * h], w, h));
    }
    (out, full)
}

fn subsample(y: &[u8], w: usize, h: usize) -> Vec<u8> {
    (0..h)
        .step_by(STEP)
        .flat_map(|row| (0..w).step_by(STEP).map(move |x| y[row * w + x]))
        .collect()
}

/// The footage frame a masked picture shows: least mean difference over its unmasked
/// pixels. Returns (frame index, mean difference).
fn which_frame(pic: &Picture, frames: &[Vec<u8>]) -> (usize, f64) {
    let small = subsample(&pic.y, pic.width as usize, pic.height as usize);
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (mut sum, mut n) = (0u64, 0u64);
            for (a, b) in small.iter().zip(f) {
                if *a > 16 {
                    sum += a.abs_diff(*b) as u64;
                    n += 1;
                }
            }
            (
                i,
                if n > 0 {
                    sum as f64 / n as f64
                } else {
                    f64::MAX
                },
            )
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap()
}

/// Share of a person's pixels that VISION masked: in the middle of the box (half its
/// width, 60% of its height, so slack in the hand annotation does not count), pixels
/// visible in the footage (luma > 40) that arrive black. Dark clothes stay out of it, and
/// so do `occluders`, things in front of the person.
fn masked_share(pic: &Picture, original: &[u8], b: [f64; 4], occluders: &[[f64; 4]]) -> f64 {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let (x0, x1) = ((b[0] + w * 0.25) as usize, (b[2] - w * 0.25) as usize);
    let (y0, y1) = ((b[1] + h * 0.2) as usize, (b[3] - h * 0.2) as usize);
    let (mut masked, mut n) = (0, 0);
    for y in y0..y1 {
        for x in x0..x1 {
            let i = y * pic.width as usize + x;
            let (fx, fy) = (x as f64, y as f64);
            let hidden = occluders
                .iter()
                .any(|o| fx >= o[0] && fx < o[2] && fy >= o[1] && fy < o[3]);
            if original[i] > 40 && !hidden {
                masked += usize::from(pic.y[i] <= 16);
                n += 1;
            }
        }
    }
    masked as f64 / n.max(1) as f64
}

/// One annotated frame: the people, and the things in front of them.
type Annotation = (Vec<[f64; 4]>, Vec<[f64; 4]>);

#[test]
fn vision_with_the_model_keeps_the_people_of_real_footage() {
    let path = focusd_testkit::picture::real_footage()
        .expect("tests/.media/vtest.y4m: run tests/media.sh first");
    let truth: serde_json::Value =
        serde_json::from_str(include_str!("data/vtest_people.json")).unwrap();
    let annotated: BTreeMap<usize, Annotation> = truth
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
        .map(|(k, v)| (k, (json_boxes(&v["people"]), json_boxes(&v["occluders"]))))
        .collect();
    let keys: Vec<usize> = annotated.keys().copied().collect();
    let (frames, originals) = footage_lumas(&path, &keys);

    let source = format!("file:{}", path.display());
    let d = TestDaemon::start_with_config("[roi]\nkind = \"model\"\n", &["--source", &source]);
    let r = Receiver::connect(
        d.addr,
        ReceiverOptions {
            keep_frames: true,
            ..Default::default()
        },
    )
    .unwrap();
    d.command(r#"{"mode":"VISION"}"#);
    // Once through the footage (15 s): the motion model learns the background, including
    // where people stood in the first frame, and the detector finds its first people.
    std::thread::sleep(Duration::from_secs(15));

    let mut checked: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut seen = 0;
    let end = Instant::now() + Duration::from_secs(25);
    while checked.len() < annotated.len() && Instant::now() < end {
        let before = r.stats().tracks[1].decoded;
        let (s, ok) = r.wait_for(Duration::from_secs(5), |s| s.tracks[1].decoded > before);
        assert!(ok, "source frames keep coming");
        let pic = s.tracks[1].last.clone().unwrap();
        seen += 1;
        let (k, diff) = which_frame(&pic, &frames);
        let Some((people, occluders)) = annotated.get(&k) else {
            continue;
        };
        if checked.contains_key(&k) || diff > 12.0 {
            continue;
        }
        let original = &originals[&k];
        checked.insert(
            k,
            people
                .iter()
                .map(|b| masked_share(&pic, original, *b, occluders))
                .collect(),
        );
        // Most of the frame is black: VISION is doing its job.
        let all_black = pic.y.iter().filter(|&&v| v <= 16).count() as f64 / pic.y.len() as f64;
        println!("frame {k}: {:.0}% black overall", all_black * 100.0);
        assert!(
            all_black > 0.6,
            "frame {k}: only {:.0}% black",
            all_black * 100.0
        );
    }
    println!("{seen} pictures looked at; masked share of each person: {checked:?}");
    // The state carries the tracks: who, which, where and how fast.
    let roi = d.state().roi;
    let people: Vec<_> = roi
        .iter()
        .filter(|b| b.label == "person" && b.state.as_deref() == Some("confirmed"))
        .collect();
    assert!(!people.is_empty(), "confirmed people in the state: {roi:?}");
    for b in &people {
        assert!(b.id.is_some() && b.velocity.is_some(), "{b:?}");
        assert_eq!(b.sub_label.as_deref(), Some("Person"), "{b:?}");
        let object = b.object.as_ref().expect("an object's own box");
        assert!(
            b.x1 <= object.x1 && object.x2 <= b.x2 && b.y1 <= object.y1 && object.y2 <= b.y2,
            "the kept area holds the object: {b:?}"
        );
    }
    let mut ids: Vec<u64> = roi.iter().filter_map(|b| b.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), roi.len(), "one box a track: {roi:?}");
    println!(
        "detector busy {:.1} s",
        focusd_testkit::process::metric(d.addr, "focusd_detector_busy_microseconds_total") / 1e6
    );
    assert!(
        checked.len() >= 3,
        "matched only {:?} of the annotated frames",
        checked.keys()
    );
    let (shown, total) = checked
        .values()
        .flatten()
        .fold((0, 0), |(s, t), &b| (s + usize::from(b < 0.2), t + 1));
    // Every person is shown in most looks; a newcomer may be caught a run late.
    assert!(
        shown as f64 >= 0.9 * total as f64,
        "people shown in {shown} of {total} looks: {checked:?}"
    );
}
