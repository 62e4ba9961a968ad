//! Delivery over impaired links: a str0m viewer reaches the daemon (720p30 test source)
//! through a user-space link ([`crate::netem`]: rate cap with a bounded queue, delay,
//! loss), with adaptive delivery and with fixed rates (`[webrtc] adaptive_delivery =
//! false`), in the same run. Per scenario: source frames decoded, time frozen (gaps over
//! 200 ms), stamp-to-decode latency. Then two viewers, one slow, one not; and how fast
//! the encoders follow a link that halves and comes back. The daemons make two temporal
//! layers (`[video] temporal_layers = 2`), so the half-rate levels are in play.

use std::sync::Arc;
use std::time::{Duration, Instant};

use focusd::state::LinkLevel;

use super::{Lab, stop, verdict};
use crate::netem::{Netem, Shape};
use crate::process::DaemonProcess;
use crate::receiver::{Receiver, ReceiverOptions, TrackStats};

/// Time a new viewer's estimate is given before measuring (the policy's settle time and
/// the first step).
const WARM_UP: Duration = Duration::from_millis(5000);

/// What one viewer saw of a track over a measured interval.
struct Seen {
    decoded: u64,
    freeze_ms: u64,
    p50: u32,
    p95: u32,
}

impl Seen {
    /// What `t` shows over `window`: a track that showed nothing was frozen throughout.
    fn of(t: &TrackStats, window: Duration) -> Seen {
        let mut l = t.latencies_ms.clone();
        l.sort_unstable();
        let at = |q: usize| l.get((l.len() * q / 100).min(l.len().saturating_sub(1)));
        Seen {
            decoded: t.decoded,
            freeze_ms: if t.decoded == 0 {
                window.as_millis() as u64
            } else {
                t.freeze_ms
            },
            p50: at(50).copied().unwrap_or(u32::MAX),
            p95: at(95).copied().unwrap_or(u32::MAX),
        }
    }

    fn show(&self) -> String {
        if self.decoded == 0 {
            return format!("   0 frames, frozen {:>4} ms", self.freeze_ms);
        }
        format!(
            "{:>4} frames, frozen {:>4} ms, {:>3} / {:>3} ms",
            self.decoded, self.freeze_ms, self.p50, self.p95
        )
    }
}

fn daemon(lab: &Lab, adaptive: bool) -> anyhow::Result<DaemonProcess> {
    lab.daemon_with_config(
        &format!("adaptive-{adaptive}"),
        // Two temporal layers: the half-rate steps are part of the policy measured.
        &format!("[video]\ntemporal_layers = 2\n[webrtc]\nadaptive_delivery = {adaptive}\n"),
        &["--source", "test", "--size", "1280x720", "--fps", "30"],
    )
}

fn through(net: &Arc<Netem>) -> ReceiverOptions {
    ReceiverOptions {
        commands: false,
        ..ReceiverOptions::through(net)
    }
}

/// One viewer through `shape` for `secs`, after the warm-up: what it saw of the context
/// and of the source.
fn one_viewer(lab: &Lab, shape: Shape, adaptive: bool, secs: u64) -> anyhow::Result<(Seen, Seen)> {
    let d = daemon(lab, adaptive)?;
    let net = Arc::new(Netem::start(shape)?);
    let viewer = Receiver::connect(d.addr, through(&net))?;
    std::thread::sleep(WARM_UP);
    viewer.reset_counters();
    std::thread::sleep(Duration::from_secs(secs));
    let s = viewer.stats();
    drop(viewer);
    stop(d)?;
    let window = Duration::from_secs(secs);
    Ok((
        Seen::of(&s.tracks[0], window),
        Seen::of(&s.tracks[1], window),
    ))
}

/// The daemon's encoder targets (kbit/s, both tracks together).
fn target_kbps(d: &DaemonProcess) -> anyhow::Result<f64> {
    Ok(d.metric("focusd_encoder_target_kbps{track=\"context\"}")
        + d.metric("focusd_encoder_target_kbps{track=\"source\"}"))
}

/// Polls until `f` holds (at most `within`); how long it took.
fn until(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub(super) fn run(lab: &Lab, secs: u64) -> anyhow::Result<()> {
    let secs = secs.clamp(3, 10);
    println!();
    println!(
        "over impaired links (a str0m viewer through a user-space link; {secs} s each after {:.1} s; \
         frames decoded, time frozen, latency p50 / p95):",
        WARM_UP.as_secs_f64()
    );
    println!(
        "  {:<12} {:<8} {:<40} {:<40}",
        "link", "track", "adaptive", "fixed rates"
    );
    let lossy = Shape {
        loss: 0.05,
        ..Shape::CLEAN
    };
    let far = Shape {
        delay: Duration::from_millis(150),
        ..Shape::CLEAN
    };
    // Fixed rates are measured where the target is a ratio against them (the 1 Mbit/s
    // link); elsewhere they would only lengthen the run.
    let mut capped_1m = None;
    for (name, shape, compare) in [
        ("1 Mbit/s", Shape::capped(1000), true),
        ("300 kbit/s", Shape::capped(300), false),
        ("5% loss", lossy, false),
        ("150 ms RTT", far, false),
    ] {
        let adaptive = one_viewer(lab, shape, true, secs)?;
        let fixed = compare
            .then(|| one_viewer(lab, shape, false, secs))
            .transpose()?;
        let show = |s: Option<&Seen>| s.map_or_else(|| "-".to_string(), Seen::show);
        println!(
            "  {name:<12} {:<8} {:<40} {:<40}",
            "context",
            adaptive.0.show(),
            show(fixed.as_ref().map(|f| &f.0))
        );
        println!(
            "  {:<12} {:<8} {:<40} {:<40}",
            "",
            "source",
            adaptive.1.show(),
            show(fixed.as_ref().map(|f| &f.1))
        );
        if let Some(fixed) = fixed {
            capped_1m = Some((adaptive.1, fixed.1));
        }
    }

    // Two viewers of one encoding: one behind 300 kbit/s, one on loopback.
    let d = daemon(lab, true)?;
    let fast = Receiver::connect(
        d.addr,
        ReceiverOptions {
            commands: false,
            ..Default::default()
        },
    )?;
    let net = Arc::new(Netem::start(Shape::capped(300))?);
    let slow = Receiver::connect(d.addr, through(&net))?;
    std::thread::sleep(WARM_UP);
    fast.reset_counters();
    slow.reset_counters();
    let captured = d.metric("focusd_frames_captured_total");
    std::thread::sleep(Duration::from_secs(secs));
    let captured = d.metric("focusd_frames_captured_total") - captured;
    let window = Duration::from_secs(secs);
    let fast_seen = Seen::of(&fast.stats().tracks[1], window);
    let slow_context = Seen::of(&slow.stats().tracks[0], window);
    let fast_target = d.metric("focusd_encoder_target_kbps{track=\"source\"}");
    // The lowest level the policy stepped a viewer to.
    let slow_level = LinkLevel::ALL
        .iter()
        .rev()
        .find(|l| {
            d.metric(&format!(
                "focusd_delivery_steps_total{{to=\"{}\"}}",
                l.name()
            )) >= 1.0
        })
        .map_or("never stepped", |l| l.name());
    drop((fast, slow));
    stop(d)?;

    // A link that halves and comes back.
    let d = daemon(lab, true)?;
    let net = Arc::new(Netem::start(Shape::capped(2000))?);
    let viewer = Receiver::connect(d.addr, through(&net))?;
    std::thread::sleep(WARM_UP);
    let before = target_kbps(&d)?;
    net.set_shape(Shape::capped(1000));
    let down = until(Duration::from_secs(6), || {
        target_kbps(&d).is_ok_and(|t| t <= 1000.0 * 0.9)
    });
    let low = target_kbps(&d)?;
    net.set_shape(Shape::capped(2000));
    let up = until(Duration::from_secs(10), || {
        target_kbps(&d).is_ok_and(|t| t >= before * 0.9)
    });
    drop(viewer);
    stop(d)?;

    let row = |name: &str, value: String, target: &str, ok: bool| verdict(name, &value, target, ok);
    if let Some((a, f)) = capped_1m {
        row(
            "1 Mbit/s: time frozen, adaptive / fixed",
            format!("{} / {} ms", a.freeze_ms, f.freeze_ms),
            "<= 1/5",
            a.freeze_ms * 5 <= f.freeze_ms,
        );
        row(
            "1 Mbit/s: latency p95, adaptive",
            format!("{} ms", a.p95),
            "<= 250 ms",
            a.p95 <= 250,
        );
    }
    let share = fast_seen.decoded as f64 / captured.max(1.0);
    row(
        "300 kbit/s + loopback: loopback's frames",
        format!("{:.0}%", share * 100.0),
        ">= 95%",
        share >= 0.95,
    );
    row(
        "  its source's target (configured 2500)",
        format!("{fast_target:.0} kbit/s"),
        "2500",
        fast_target >= 2500.0,
    );
    row(
        &format!("  the slow viewer's context (down to {slow_level})"),
        slow_context.show(),
        "-",
        true,
    );
    let secs_of =
        |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64()));
    row(
        &format!("2 -> 1 Mbit/s: encoders down ({before:.0} -> {low:.0} kbit/s)"),
        secs_of(down),
        "-",
        down.is_some(),
    );
    row(
        "1 -> 2 Mbit/s: encoders back to 90%",
        secs_of(up),
        "<= 5 s",
        up.is_some_and(|u| u <= Duration::from_secs(5)),
    );
    Ok(())
}
