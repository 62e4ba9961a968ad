//! Counters the daemon keeps about itself, rendered as Prometheus text at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::streams::Door;
use crate::state::{LinkLevel, Part, State};
use crate::track::{Track, TrackMap};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the encode-time histogram buckets.
const ENCODE_BUCKETS: [f64; 9] = [0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.066, 0.133, 0.5];

/// Encode-time histogram for one track.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; ENCODE_BUCKETS.len()],
    count: Counter,
    sum_micros: Counter,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        for (bound, bucket) in ENCODE_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.inc();
            }
        }
        self.count.inc();
        self.sum_micros.add((seconds * 1e6) as u64);
    }

    pub fn count(&self) -> u64 {
        self.count.get()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.get() as f64 / 1e6
    }
}

/// Per-track counters.
#[derive(Debug, Default)]
pub struct TrackMetrics {
    /// Access units the encoder produced.
    pub frames: Counter,
    /// Bytes the encoder produced.
    pub bytes: Counter,
    pub keyframes: Counter,
    /// Frames the encoder never saw because a newer one replaced it (encoder too slow).
    pub dropped_encoder_busy: Counter,
    /// Encoded frames not handed to the WebRTC hub because its queue was full.
    pub dropped_hub_busy: Counter,
    /// Frames written to viewers (one per viewer per frame).
    pub sent: Counter,
    /// Frames held back from a viewer that waits for a keyframe.
    pub held_for_keyframe: Counter,
    /// Frames sent to the relay (`[relay]`), once each whatever its viewers.
    pub relayed: Counter,
    /// RTP bytes (headers included) sent to the relay.
    pub relayed_bytes: Counter,
    /// Keyframe requests (PLI/FIR) that came back from the relay.
    pub relay_keyframe_requests: Counter,
    pub encode_seconds: Histogram,
}

/// What the HTTP server did with connections, and whom it refused.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Connections taken.
    pub accepted: Counter,
    /// Idle connections closed to make room for a new one.
    pub evicted: Counter,
    /// New connections closed at once (every slot was in the middle of a request), or
    /// not taken for want of descriptors or memory.
    pub refused: Counter,
    /// Connections closed for staying idle past the header timeout (slowloris, TLS
    /// handshakes that never finish, kept-alive connections no one uses).
    pub timed_out: Counter,
    /// Requests refused 401 or 403, by [`Refusal`].
    pub unauthorized: [Counter; Refusal::ALL.len()],
}

/// Why a request was refused by the access rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token with a request that needs one (401).
    MissingToken,
    /// A token that is not one of the configured ones (401).
    WrongToken,
    /// The view-only token on a request that changes state (403).
    ViewOnly,
    /// A state-changing request from a web page of an origin not allowed (403).
    Origin,
    /// A `Host` header naming no address or name of this device (421): DNS rebinding.
    Host,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::MissingToken,
        Refusal::WrongToken,
        Refusal::ViewOnly,
        Refusal::Origin,
        Refusal::Host,
    ];

    /// Its label in the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::WrongToken => "wrong_token",
            Refusal::ViewOnly => "view_only",
            Refusal::Origin => "origin",
            Refusal::Host => "host",
        }
    }
}

impl HttpMetrics {
    /// Counts a refusal.
    pub fn refused_access(&self, why: Refusal) {
        self.unauthorized[why as usize].inc();
    }
}

/// One picture door's counters.
#[derive(Debug, Default)]
pub struct DoorMetrics {
    /// Consumers admitted.
    pub joined: Counter,
    /// Consumers gone (their count now is `joined - left`).
    pub left: Counter,
    /// Pictures sent.
    pub frames: Counter,
    /// Bytes of pictures sent (JPEG or compressed planes, without framing).
    pub bytes: Counter,
}

/// All of the daemon's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub frames_captured: Counter,
    pub capture_errors: Counter,
    /// Encoders that failed and were opened again.
    pub encoder_failures: Counter,
    pub detector_runs: Counter,
    /// Time the ROI detector spent detecting, in microseconds.
    pub detector_busy_us: Counter,
    /// Configured models that could not be used (motion ran instead).
    pub detector_fallback: Counter,
    pub sessions_started: Counter,
    pub sessions_ended: Counter,
    pub bad_requests: Counter,
    /// Connections the MQTT broker accepted (1 + reconnections).
    pub mqtt_connects: Counter,
    /// MQTT messages dropped because the client's queue was full.
    pub mqtt_dropped: Counter,
    /// The HTTP server's connections and refusals.
    pub http: HttpMetrics,
    pub tracks: TrackMap<TrackMetrics>,
    /// Viewers' links stepped by the delivery policy, by the level they went to (indexed
    /// like [`LinkLevel::ALL`]; see [`Metrics::delivery_steps`]).
    pub steps_to: [Counter; 4],
    /// Datagrams to the relay the system refused to send (full buffer, unreachable).
    pub relay_send_errors: Counter,
    /// The picture doors, indexed like [`Door::ALL`] (see [`Metrics::door`]).
    pub doors: [DoorMetrics; Door::ALL.len()],
    /// Panics of each supervised task, indexed like [`Part::ALL`] (only [`Part::TASKS`]
    /// count).
    pub task_panics: [Counter; Part::ALL.len()],
}

impl Metrics {
    pub fn track(&self, t: Track) -> &TrackMetrics {
        &self.tracks[t]
    }

    /// A picture door's counters.
    pub fn door(&self, door: Door) -> &DoorMetrics {
        &self.doors[door as usize]
    }

    /// The counter of viewers' links stepped to `level`.
    pub fn delivery_steps(&self, level: LinkLevel) -> &Counter {
        &self.steps_to[level as usize]
    }

    /// Prometheus text exposition; `state` gives the viewers and what runs (the encoder's
    /// and the source's names, as the state JSON and the registration give them).
    pub fn render(&self, state: &State) -> String {
        let viewers = state.viewers;
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, values: &[(String, u64)]| {
            let _ = writeln!(
                out,
                "# HELP focusd_{name} {help}\n# TYPE focusd_{name} counter"
            );
            for (labels, v) in values {
                let _ = writeln!(out, "focusd_{name}{labels} {v}");
            }
        };
        let plain = |c: &Counter| vec![(String::new(), c.get())];
        let per_track = |f: &dyn Fn(&TrackMetrics) -> u64| {
            Track::ALL
                .iter()
                .map(|t| (format!("{{track=\"{}\"}}", t.name()), f(self.track(*t))))
                .collect::<Vec<_>>()
        };
        counter(
            "frames_captured_total",
            "Frames captured from the source.",
            &plain(&self.frames_captured),
        );
        counter(
            "capture_errors_total",
            "Failed captures (the source is reopened).",
            &plain(&self.capture_errors),
        );
        counter(
            "encoder_failures_total",
            "Encoders that failed for good (they are opened again).",
            &plain(&self.encoder_failures),
        );
        counter(
            "detector_runs_total",
            "ROI detector runs.",
            &plain(&self.detector_runs),
        );
        counter(
            "detector_busy_microseconds_total",
            "Time the ROI detector spent detecting.",
            &plain(&self.detector_busy_us),
        );
        counter(
            "detector_fallback_total",
            "Configured ROI models that could not be used; motion detection ran instead.",
            &plain(&self.detector_fallback),
        );
        counter(
            "sessions_started_total",
            "WebRTC sessions accepted.",
            &plain(&self.sessions_started),
        );
        counter(
            "sessions_ended_total",
            "WebRTC sessions closed or timed out.",
            &plain(&self.sessions_ended),
        );
        counter(
            "bad_requests_total",
            "Requests and commands rejected as invalid.",
            &plain(&self.bad_requests),
        );
        counter(
            "mqtt_connects_total",
            "Connections the MQTT broker accepted.",
            &plain(&self.mqtt_connects),
        );
        counter(
            "mqtt_dropped_total",
            "MQTT messages dropped because the client's queue was full.",
            &plain(&self.mqtt_dropped),
        );
        counter(
            "http_connections_total",
            "HTTP connections by what became of them: accepted, evicted (idle, closed to make room), refused (every slot busy, or out of descriptors), timed_out (idle past the header timeout).",
            &[
                ("accepted", &self.http.accepted),
                ("evicted", &self.http.evicted),
                ("refused", &self.http.refused),
                ("timed_out", &self.http.timed_out),
            ]
            .map(|(outcome, c)| (format!("{{outcome=\"{outcome}\"}}"), c.get())),
        );
        counter(
            "http_unauthorized_total",
            "HTTP requests refused by the access rules, by reason.",
            &Refusal::ALL.map(|r| {
                (
                    format!("{{reason=\"{}\"}}", r.name()),
                    self.http.unauthorized[r as usize].get(),
                )
            }),
        );
        counter(
            "frames_encoded_total",
            "Access units encoded per track.",
            &per_track(&|t| t.frames.get()),
        );
        counter(
            "bytes_encoded_total",
            "Encoded bytes per track.",
            &per_track(&|t| t.bytes.get()),
        );
        counter(
            "keyframes_total",
            "Keyframes encoded per track.",
            &per_track(&|t| t.keyframes.get()),
        );
        counter(
            "frames_sent_total",
            "Frames written to viewers (per viewer).",
            &per_track(&|t| t.sent.get()),
        );
        counter(
            "relay_frames_total",
            "Frames sent to the relay ([relay]), once each whatever the relay's viewers.",
            &per_track(&|t| t.relayed.get()),
        );
        counter(
            "relay_bytes_total",
            "RTP bytes (headers included) sent to the relay.",
            &per_track(&|t| t.relayed_bytes.get()),
        );
        counter(
            "relay_keyframe_requests_total",
            "Keyframe requests (RTCP PLI/FIR) from the relay.",
            &per_track(&|t| t.relay_keyframe_requests.get()),
        );
        counter(
            "relay_send_errors_total",
            "Datagrams to the relay the system would not send.",
            &plain(&self.relay_send_errors),
        );
        counter(
            "delivery_steps_total",
            "Viewers' links stepped by the delivery policy, by the level they went to.",
            &LinkLevel::ALL.map(|l| {
                (
                    format!("{{to=\"{}\"}}", l.name()),
                    self.delivery_steps(l).get(),
                )
            }),
        );
        let per_door = |f: &dyn Fn(&DoorMetrics) -> u64| {
            Door::ALL
                .iter()
                .map(|d| (format!("{{door=\"{}\"}}", d.name()), f(self.door(*d))))
                .collect::<Vec<_>>()
        };
        counter(
            "door_frames_total",
            "Pictures sent by the picture doors (snapshot, MJPEG, WebSockets).",
            &per_door(&|d| d.frames.get()),
        );
        counter(
            "door_bytes_total",
            "Bytes of pictures sent by the picture doors.",
            &per_door(&|d| d.bytes.get()),
        );
        counter(
            "door_consumers_total",
            "Consumers the picture doors admitted.",
            &per_door(&|d| d.joined.get()),
        );
        let mut dropped = Vec::new();
        for t in Track::ALL {
            let m = self.track(t);
            for (reason, v) in [
                ("encoder_busy", m.dropped_encoder_busy.get()),
                ("hub_busy", m.dropped_hub_busy.get()),
                ("awaiting_keyframe", m.held_for_keyframe.get()),
            ] {
                dropped.push((format!("{{track=\"{}\",reason=\"{reason}\"}}", t.name()), v));
            }
        }
        counter(
            "frames_dropped_total",
            "Frames dropped instead of queued, by reason.",
            &dropped,
        );
        let _ = writeln!(
            out,
            "# HELP focusd_viewers Connected WebRTC viewers.\n# TYPE focusd_viewers gauge\nfocusd_viewers {viewers}"
        );
        let _ = writeln!(
            out,
            "# HELP focusd_door_consumers Consumers of each picture door now.\n# TYPE focusd_door_consumers gauge"
        );
        for d in Door::ALL {
            let m = self.door(d);
            let now = m.joined.get().saturating_sub(m.left.get());
            let _ = writeln!(out, "focusd_door_consumers{{door=\"{}\"}} {now}", d.name());
        }
        let _ = writeln!(
            out,
            "# HELP focusd_info What runs: the version, the encoder and the source.\n\
             # TYPE focusd_info gauge\n\
             focusd_info{{version=\"{}\",encoder=\"{}\",source=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            label_value(&state.encoder),
            label_value(&state.source)
        );
        let _ = writeln!(
            out,
            "# HELP focusd_encoder_target_kbps The bitrate each encoder aims at now.\n# TYPE focusd_encoder_target_kbps gauge"
        );
        for (t, kbps) in state.delivery.target_kbps.iter() {
            let _ = writeln!(
                out,
                "focusd_encoder_target_kbps{{track=\"{}\"}} {kbps}",
                t.name()
            );
        }
        let _ = writeln!(
            out,
            "# HELP focusd_viewer_estimate_kbps Each viewer's bandwidth estimate, by the start of its session id and what it is sent.\n# TYPE focusd_viewer_estimate_kbps gauge"
        );
        for v in &state.delivery.viewers {
            if let Some(kbps) = v.estimate_kbps {
                let _ = writeln!(
                    out,
                    "focusd_viewer_estimate_kbps{{session=\"{}\",level=\"{}\"}} {kbps}",
                    label_value(&v.session),
                    v.level.name()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP focusd_fault Whether a part's device is failing and being retried.\n# TYPE focusd_fault gauge"
        );
        for part in Part::ALL {
            let failing = state.faults.iter().any(|f| f.part == part);
            let _ = writeln!(
                out,
                "focusd_fault{{part=\"{}\"}} {}",
                part.name(),
                u8::from(failing)
            );
        }
        let _ = writeln!(
            out,
            "# HELP focusd_task_panics_total Panics of each supervised task (each one restarted).\n# TYPE focusd_task_panics_total counter"
        );
        for part in Part::TASKS {
            let _ = writeln!(
                out,
                "focusd_task_panics_total{{task=\"{}\"}} {}",
                part.name(),
                self.task_panics[part.index()].get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP focusd_encode_seconds Time to encode one frame.\n# TYPE focusd_encode_seconds histogram"
        );
        for t in Track::ALL {
            let h = &self.track(t).encode_seconds;
            for (bound, bucket) in ENCODE_BUCKETS.iter().zip(&h.buckets) {
                let _ = writeln!(
                    out,
                    "focusd_encode_seconds_bucket{{track=\"{}\",le=\"{bound}\"}} {}",
                    t.name(),
                    bucket.get()
                );
            }
            let _ = writeln!(
                out,
                "focusd_encode_seconds_bucket{{track=\"{}\",le=\"+Inf\"}} {}",
                t.name(),
                h.count()
            );
            let _ = writeln!(
                out,
                "focusd_encode_seconds_sum{{track=\"{}\"}} {}",
                t.name(),
                h.sum_seconds()
            );
            let _ = writeln!(
                out,
                "focusd_encode_seconds_count{{track=\"{}\"}} {}",
                t.name(),
                h.count()
            );
        }
        out
    }
}

/// `s` as a Prometheus label value: backslash, double quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Control;
    use crate::state::command::Mode;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.frames_captured.add(3);
        m.track(Track::Source).bytes.add(1000);
        m.track(Track::Context).encode_seconds.observe(0.003);
        let control = Control::new(
            Mode::High,
            None,
            "openh264".into(),
            "file:/a \"b\".y4m".into(),
        );
        control.set_viewers(2);
        let text = m.render(&control.snapshot());
        assert!(
            text.contains(r#"encoder="openh264",source="file:/a \"b\".y4m"} 1"#),
            "{text}"
        );
        assert!(text.contains("focusd_frames_captured_total 3"));
        assert!(text.contains("focusd_bytes_encoded_total{track=\"source\"} 1000"));
        assert!(text.contains("focusd_viewers 2"));
        assert!(text.contains("focusd_encode_seconds_bucket{track=\"context\",le=\"0.002\"} 0"));
        assert!(text.contains("focusd_encode_seconds_bucket{track=\"context\",le=\"0.004\"} 1"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
