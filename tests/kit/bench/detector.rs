//! The ROI model's figures: inferences per second on one core (in this process, one
//! thread), and on real footage the daemon with the model against the daemon with motion
//! detection: added CPU, and each mode's source bitrate against HIGH's at the same encoder
//! settings (VISION / HIGH is the product's point: target <= 0.35), plus the context
//! track's share of HIGH.

use std::path::Path;
use std::time::{Duration, Instant};

use focusd_board::image::Image;

use focusd::roi::Model;
use focusd::roi::model::input::{Region, letterbox};

use super::{Lab, mode_bitrates, print_modes, stop};
use crate::process::try_metric;
use crate::receiver::{Receiver, ReceiverOptions};

/// Runs the detector benchmark and prints its report.
pub(super) fn run(lab: &Lab, secs: u64, footage: Option<&Path>) -> anyhow::Result<()> {
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
    let mut report = Vec::new();
    for kind in ["motion", "model"] {
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
        "ROI detectors on {} (VISION keeps only the ROI sharp)",
        footage.display()
    );
    println!(
        "{:<8} {:>10} {:>12} {:>14} {:>14} {:>14}",
        "detector", "CPU", "ms per run", "VISION/HIGH", "HYBRID/HIGH", "context/HIGH"
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
        "model: VISION / HIGH source bitrate {:.2} (target <= 0.35): {}; CPU added over motion {:+.1} points",
        vision(1),
        if vision(1) <= 0.35 { "ok" } else { "MISSED" },
        report[1].1 - report[0].1
    );
    Ok(())
}
