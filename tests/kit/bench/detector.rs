//! The ROI detector's figures.
//!
//! * **The model alone**: one run (letterbox, inference, decoding) on one core.
//! * **A replay** of real footage through the detector the daemon builds for
//!   `[roi] kind = "model"` (its defaults: CPU budget, labels, tracker), in this process on
//!   the clip's own clock: each frame handed over at its time, the model's runs timed on
//!   this thread. It prints the detector's share of a core (its time over the clip's) and,
//!   where people are annotated by hand (`--annotations`), the recall: the share of them
//!   inside the kept ROI. The first pass teaches the motion model the scene; the figures
//!   are of the passes after it. The same replay of a still picture (the clip's first
//!   frame, over and over) gives the cost of a scene without motion.
//! * **The daemon** on the footage with no ROI, motion ROI and the model: its CPU, and each
//!   mode's source bitrate against HIGH's at the same encoder settings (VISION / HIGH is
//!   the product's point).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use focusd_board::image::Image;
use focusd_board::scale::{Scaler, lores_size};
use focusd_board::source::Y4mFile;

use focusd::config::{Flags, Settings};
use focusd::roi::model::input::{Region, letterbox};
use focusd::roi::{Detector, Model, ModelDetector, ModelOptions};
use focusd::state::RoiBox;

use super::{Lab, mode_bitrates, print_modes, stop};
use crate::process::try_metric;
use crate::receiver::{Receiver, ReceiverOptions};

/// A person counts as kept when at least this share of their box is inside the ROI (the
/// end-to-end test's criterion: at most a fifth masked).
const KEPT_SHARE: f64 = 0.8;
/// Passes over the clip in the replay, the first to learn the scene.
const PASSES: u32 = 3;
/// Frames a pass of the still picture (15 s at 10 fps).
const STILL_FRAMES: usize = 150;

/// People annotated in frames of a clip: `{"30": {"people": [[x1,y1,x2,y2], ...],
/// "far": [...]}, ...}` in pixels (`tests/data/vtest_people.json`). `far` people (too
/// small for the detector) are not counted.
type Annotations = BTreeMap<usize, Vec<[f64; 4]>>;

fn read_annotations(path: &Path) -> anyhow::Result<Annotations> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let mut out = Annotations::new();
    for (key, frame) in json.as_object().context("annotations: not a JSON object")? {
        let Ok(index) = key.parse::<usize>() else {
            continue; // `_comment`
        };
        let people: Vec<[f64; 4]> = serde_json::from_value(frame["people"].clone())
            .with_context(|| format!("{}: frame {key}: people", path.display()))?;
        out.insert(index, people);
    }
    Ok(out)
}

/// Runs the detector benchmark and prints its report.
pub(super) fn run(
    lab: &Lab,
    secs: u64,
    footage: Option<&Path>,
    annotations: Option<&Path>,
) -> anyhow::Result<()> {
    let model = Model::default_model()?;
    let (w, h) = model.input_size();
    // A real-looking input: the test pattern's frame, letterboxed as the detector does.
    let mut frame = Image::i420(768, 576);
    focusd_board::source::TestPattern::new((768, 576), 10.0).draw(&mut frame, 5_000_000);
    let mut rgb = Vec::new();
    let whole = Region::whole(&frame);
    let started = Instant::now();
    let mut runs = 0u32;
    while started.elapsed() < Duration::from_secs(secs.min(5)) || runs < 5 {
        letterbox(&frame, whole, (w, h), &mut rgb);
        model.detect(&rgb, 0.25)?;
        runs += 1;
    }
    let per = started.elapsed() / runs;
    println!();
    println!("ROI model: {} ({w}x{h} input)", model.name());
    println!(
        "  one core: {:.1} inferences/s, {:.1} ms each (letterbox + run + decode), over {runs}",
        1.0 / per.as_secs_f64(),
        per.as_secs_f64() * 1000.0
    );
    let Some(footage) = footage else {
        return Ok(());
    };
    let truth = annotations.map(read_annotations).transpose()?;
    replay_report(footage, truth.as_ref())?;
    daemon_report(lab, secs, footage)
}

/// What one replay measured, over the passes after the first.
struct Replay {
    /// The detector's time over the clip's time.
    cpu_share: f64,
    /// Model runs a second of clip, and their mean time.
    runs_per_second: f64,
    ms_per_run: f64,
    /// Annotated people inside the kept ROI, of those annotated.
    kept: usize,
    annotated: usize,
    /// Mean share of the frame inside the ROI, and inside the objects' own boxes.
    kept_area: f64,
    object_area: f64,
    /// Frames with ROI boxes, of all.
    frames_with_roi: usize,
    frames: usize,
}

fn replay_report(footage: &Path, truth: Option<&Annotations>) -> anyhow::Result<()> {
    let moving = replay(footage, truth, false)?;
    let still = replay(footage, None, true)?;
    println!();
    println!(
        "ROI model replayed on {} in process, the clip's own clock, defaults of [roi] kind = \"model\" ({} passes, the first to learn the scene)",
        footage.display(),
        PASSES
    );
    println!(
        "{:<14} {:>12} {:>10} {:>10} {:>12} {:>12} {:>14}",
        "scene", "CPU (core)", "runs/s", "ms/run", "ROI area", "objects", "frames w/ ROI"
    );
    for (name, r) in [("footage", &moving), ("still picture", &still)] {
        println!(
            "{name:<14} {:>11.1}% {:>10.1} {:>10.1} {:>11.1}% {:>11.1}% {:>8} of {}",
            r.cpu_share * 100.0,
            r.runs_per_second,
            r.ms_per_run,
            r.kept_area * 100.0,
            r.object_area * 100.0,
            r.frames_with_roi,
            r.frames
        );
    }
    if moving.annotated > 0 {
        let recall = moving.kept as f64 / moving.annotated as f64;
        println!(
            "recall: {} of {} annotated people inside the kept ROI ({:.1}%, goal >= 98%): {}",
            moving.kept,
            moving.annotated,
            recall * 100.0,
            if recall >= 0.98 { "ok" } else { "MISSED" }
        );
    }
    println!(
        "detector CPU on footage {:.1}% of a core (goal <= 15%): {}; still scene {:.2}% (goal <= 1 point): {}",
        moving.cpu_share * 100.0,
        if moving.cpu_share <= 0.15 {
            "ok"
        } else {
            "MISSED"
        },
        still.cpu_share * 100.0,
        if still.cpu_share <= 0.01 {
            "ok"
        } else {
            "MISSED"
        },
    );
    Ok(())
}

/// Replays `footage` (or, if `still`, its first frame over and over) through the default
/// model detector.
fn replay(footage: &Path, truth: Option<&Annotations>, still: bool) -> anyhow::Result<Replay> {
    let flags = Flags::try_parse_from(["focusd"])?;
    let file = focusd::config::file::parse("[roi]\nkind = \"model\"\n")?;
    let settings = Settings::resolve(&flags, file)?;
    let options = ModelOptions::from_settings(&settings.roi, 0);
    let mut detector = ModelDetector::new(Model::default_model()?, options);

    let mut clip = Y4mFile::open(footage, None)?;
    let main_size = focusd_board::source::FrameSource::layout(&clip).size();
    let fps = focusd_board::source::FrameSource::fps(&clip);
    let lores_dims = lores_size(main_size, settings.video.context_width);
    let scaler = Scaler::new(main_size, lores_dims);
    let mut main = Image::i420(main_size.0, main_size.1);
    let mut lores = Image::i420(lores_dims.0, lores_dims.1);
    // The daemon's ROI thread takes at most `roi.fps` frames a second.
    let every = Duration::from_secs_f64(1.0 / settings.roi.fps.min(fps));
    let frame_time = Duration::from_secs_f64(1.0 / fps);

    let t0 = Instant::now();
    let mut clock = t0;
    let mut next_look = t0;
    let mut out = Replay {
        cpu_share: 0.0,
        runs_per_second: 0.0,
        ms_per_run: 0.0,
        kept: 0,
        annotated: 0,
        kept_area: 0.0,
        object_area: 0.0,
        frames_with_roi: 0,
        frames: 0,
    };
    let mut busy = Duration::ZERO;
    let mut clip_time = Duration::ZERO;
    let mut runs_before = 0;
    let mut busy_before = Duration::ZERO;
    let mut area_sum = 0.0;
    let mut object_sum = 0.0;
    if still {
        clip.read_frame(&mut main)?;
    }
    for pass in 0..PASSES {
        let mut index = 0usize;
        loop {
            let more = if still {
                index < STILL_FRAMES
            } else {
                clip.read_frame(&mut main)?
            };
            if !more {
                break;
            }
            let at = clock;
            clock += frame_time;
            index += 1;
            if at < next_look {
                continue;
            }
            next_look += every;
            scaler.scale(&main, &mut lores);
            let begun = Instant::now();
            let boxes = detector.detect(at, &main, &lores);
            let took = begun.elapsed();
            if pass == 0 {
                continue;
            }
            busy += took;
            out.frames += 1;
            out.frames_with_roi += usize::from(!boxes.is_empty());
            area_sum += covered(&boxes, [0.0, 0.0, 100.0, 100.0]);
            let objects: Vec<RoiBox> = boxes
                .iter()
                .filter_map(|b| b.object.as_ref())
                .map(|r| RoiBox {
                    x1: r.x1,
                    y1: r.y1,
                    x2: r.x2,
                    y2: r.y2,
                    ..RoiBox::default()
                })
                .collect();
            object_sum += covered(&objects, [0.0, 0.0, 100.0, 100.0]);
            let people = truth.and_then(|t| t.get(&(index - 1)));
            for p in people.into_iter().flatten() {
                let pct = [
                    p[0] / main_size.0 as f64 * 100.0,
                    p[1] / main_size.1 as f64 * 100.0,
                    p[2] / main_size.0 as f64 * 100.0,
                    p[3] / main_size.1 as f64 * 100.0,
                ];
                out.annotated += 1;
                out.kept += usize::from(covered(&boxes, pct) >= KEPT_SHARE);
            }
        }
        if pass == 0 {
            (runs_before, busy_before) = detector.model_runs();
        } else {
            clip_time += frame_time * index as u32;
        }
        if !still {
            // From the start again.
            clip = Y4mFile::open(footage, None)?;
        }
    }
    let (runs, model_busy) = detector.model_runs();
    let runs = runs - runs_before;
    let secs = clip_time.as_secs_f64().max(1e-9);
    out.cpu_share = busy.as_secs_f64() / secs;
    out.runs_per_second = runs as f64 / secs;
    out.ms_per_run = (model_busy - busy_before).as_secs_f64() * 1000.0 / runs.max(1) as f64;
    out.kept_area = area_sum / out.frames.max(1) as f64;
    out.object_area = object_sum / out.frames.max(1) as f64;
    Ok(out)
}

/// The share of `target` (x1, y1, x2, y2 in percent) inside the union of `boxes`, on a
/// grid of a fifth of a percent.
fn covered(boxes: &[RoiBox], target: [f64; 4]) -> f64 {
    const STEP: f64 = 0.2;
    let (mut inside, mut all) = (0usize, 0usize);
    let mut y = target[1] + STEP / 2.0;
    while y < target[3] {
        let mut x = target[0] + STEP / 2.0;
        while x < target[2] {
            all += 1;
            inside += usize::from(
                boxes
                    .iter()
                    .any(|b| b.x1 <= x && x < b.x2 && b.y1 <= y && y < b.y2),
            );
            x += STEP;
        }
        y += STEP;
    }
    inside as f64 / all.max(1) as f64
}

/// The daemon on `footage` with each ROI detector: CPU and the modes' bitrates.
fn daemon_report(lab: &Lab, secs: u64, footage: &Path) -> anyhow::Result<()> {
    let mut report = Vec::new();
    for kind in ["off", "motion", "model"] {
        // The modes' bitrates compare the encoder's output at its configured rate: the
        // bench's viewer does not steer it.
        let source = format!("file:{}", footage.display());
        let daemon = lab.daemon_with_config(
            kind,
            &format!("[roi]\nkind = \"{kind}\"\n[webrtc]\nadaptive_delivery = false\n"),
            &["--source", &source],
        )?;
        let viewer = Receiver::connect(
            daemon.addr,
            ReceiverOptions {
                decode: false,
                ..Default::default()
            },
        )?;
        // Let the detector learn the scene before measuring.
        std::thread::sleep(Duration::from_secs(3));
        let cpu = daemon.cpu_percent_over(Duration::from_secs(secs))?;
        let rates = mode_bitrates(daemon.addr, &viewer, secs)?;
        let runs = try_metric(daemon.addr, "focusd_detector_runs_total")?;
        let busy = try_metric(daemon.addr, "focusd_detector_busy_microseconds_total")?;
        drop(viewer);
        stop(daemon)?;
        print_modes(
            &format!("real footage {}, ROI by {kind}", footage.display()),
            &rates,
        );
        report.push((kind, cpu, rates, busy / runs.max(1.0) / 1000.0));
    }
    println!();
    println!(
        "the daemon on {} with each ROI detector (VISION keeps only the ROI sharp)",
        footage.display()
    );
    println!(
        "{:<8} {:>10} {:>12} {:>14} {:>14} {:>14}",
        "ROI", "CPU", "ms per call", "VISION/HIGH", "HYBRID/HIGH", "context/HIGH"
    );
    let rate = |rates: &[(&str, f64, f64)], mode: &str, track: usize| {
        rates
            .iter()
            .find(|r| r.0 == mode)
            .map(|r| if track == 0 { r.1 } else { r.2 })
            .unwrap_or(0.0)
    };
    for (kind, cpu, rates, ms) in &report {
        let high = rate(rates, "HIGH", 1).max(1.0);
        println!(
            "{kind:<8} {:>9.1}% {ms:>12.1} {:>14.2} {:>14.2} {:>14.2}",
            cpu,
            rate(rates, "VISION", 1) / high,
            rate(rates, "HYBRID", 1) / high,
            rate(rates, "HIGH", 0) / high,
        );
    }
    let vision = |i: usize| {
        let (_, _, rates, _) = &report[i];
        rate(rates, "VISION", 1) / rate(rates, "HIGH", 1).max(1.0)
    };
    println!(
        "model: VISION / HIGH source bitrate {:.2} (goal <= 0.45): {}; daemon CPU over no ROI {:+.1} points, over motion ROI {:+.1}",
        vision(2),
        if vision(2) <= 0.45 { "ok" } else { "MISSED" },
        report[2].1 - report[0].1,
        report[2].1 - report[1].1
    );
    Ok(())
}
