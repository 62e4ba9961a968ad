//! The `stats` message: rates over the interval since the previous one, from the daemon's
//! counters and `/proc/self`.

use std::time::Instant;

use crate::service::metrics::Metrics;
use crate::service::procfs;
use crate::state::protocol::Stats;
use crate::state::{Control, LinkLevel};
use crate::track::{Track, TrackMap};

/// Counter values at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    cpu_ticks: u64,
    /// Per track: frames encoded, total encode seconds, frames dropped (any reason).
    encoded: TrackMap<u64>,
    encode_seconds: TrackMap<f64>,
    dropped: TrackMap<u64>,
    detector_runs: u64,
}

impl Sample {
    fn take(metrics: &Metrics) -> Sample {
        let mut s = Sample {
            // Without /proc (not Linux) CPU reads as 0 rather than failing the message.
            cpu_ticks: procfs::cpu_ticks("self").unwrap_or(0),
            detector_runs: metrics.detector_runs.get(),
            ..Sample::default()
        };
        for t in Track::ALL {
            let m = metrics.track(t);
            s.encoded[t] = m.encode_seconds.count();
            s.encode_seconds[t] = m.encode_seconds.sum_seconds();
            s.dropped[t] = m.dropped_encoder_busy.get() + m.dropped_hub_busy.get();
        }
        s
    }
}

/// Turns counters into the `stats` payload; remembers the previous sample.
#[derive(Debug)]
pub struct Telemetry {
    last: (Instant, Sample),
}

impl Telemetry {
    pub fn new(now: Instant, metrics: &Metrics) -> Telemetry {
        Telemetry {
            last: (now, Sample::take(metrics)),
        }
    }

    /// The payload for the interval ending `now`. `mqtt_dropped` counts messages this
    /// client could not queue since start.
    pub fn stats(
        &mut self,
        now: Instant,
        control: &Control,
        metrics: &Metrics,
        mqtt_dropped: u64,
    ) -> Stats {
        let cur = Sample::take(metrics);
        let (then, prev) = self.last;
        let dt = now.duration_since(then).as_secs_f64().max(1e-3);
        let round1 = |v: f64| (v * 10.0).round() / 10.0;
        let encode_ms = TrackMap::from_fn(|t| {
            let n = cur.encoded[t] - prev.encoded[t];
            (n > 0).then(|| {
                round1((cur.encode_seconds[t] - prev.encode_seconds[t]) * 1000.0 / n as f64)
            })
        });
        let dropped_frames = TrackMap::from_fn(|t| cur.dropped[t] - prev.dropped[t]);
        let state = control.snapshot();
        let rss_mb = procfs::memory_kib("self")
            .map(|(rss, _)| round1(rss as f64 / 1024.0))
            .ok();
        self.last = (now, cur);
        let viewers_where =
            |f: fn(LinkLevel) -> bool| state.delivery.viewers.iter().filter(|v| f(v.level)).count();
        Stats {
            interval_s: round1(dt),
            fps: state.fps,
            kbps: state.bitrate_kbps,
            viewers: state.viewers,
            mode: state.mode,
            encode_ms,
            dropped_frames,
            detector_fps: round1((cur.detector_runs - prev.detector_runs) as f64 / dt),
            cpu_percent: round1(
                (cur.cpu_ticks - prev.cpu_ticks) as f64 / procfs::TICKS_PER_SECOND / dt * 100.0,
            ),
            rss_mb,
            mqtt_dropped,
            target_kbps: state.delivery.target_kbps,
            viewers_context_only: viewers_where(|l| !l.has_source()),
            viewers_half_rate: viewers_where(LinkLevel::is_half_rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::Mode;
    use std::time::Duration;

    #[test]
    fn rates_cover_the_interval_since_the_previous_message() {
        let metrics = Metrics::default();
        let control = Control::new(Mode::Vision, None, "openh264".into(), "test".into());
        let t0 = Instant::now();
        let mut tele = Telemetry::new(t0, &metrics);
        for _ in 0..4 {
            metrics.track(Track::Source).encode_seconds.observe(0.005);
        }
        metrics.track(Track::Context).dropped_hub_busy.inc();
        for _ in 0..30 {
            metrics.detector_runs.inc();
        }
        let v = tele.stats(t0 + Duration::from_secs(2), &control, &metrics, 3);
        assert_eq!(v.encode_ms.source, Some(5.0));
        assert_eq!(v.encode_ms.context, None, "nothing encoded");
        assert_eq!(v.dropped_frames.context, 1);
        assert_eq!(v.detector_fps, 15.0);
        assert_eq!(v.mode, Mode::Vision);
        assert_eq!(v.mqtt_dropped, 3);
        assert!(v.rss_mb.unwrap() > 0.0);
        // The next interval starts from here.
        let v = tele.stats(t0 + Duration::from_secs(4), &control, &metrics, 3);
        assert_eq!(v.detector_fps, 0.0);
        assert_eq!(v.dropped_frames.context, 0);
    }
}
