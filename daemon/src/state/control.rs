//! The one place the daemon's state lives. HTTP, the DataChannel and MQTT are doors to it;
//! the pipeline reads it every frame; the ROI detector writes the ROI into it.

use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::state::command::{Command, Mode, Rect, RectChange};
use crate::state::streams::{Streams, StreamsPatch};
use crate::track::TrackMap;

/// One region of interest, in percent of the frame: the area VISION keeps. An object the
/// detector tracks adds what it is (`label` in the small vocabulary, `sub_label` the model's
/// own class), its `id`, its box and its velocity; a motion region has none of these.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoiBox {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
    /// What it is: `motion`, or an object's category (`person`, `vehicle`, `bicycle`,
    /// `animal`, `object`).
    pub label: String,
    /// Confidence, 0–1.
    pub score: f32,
    /// The tracked object's id, the same while it stays in view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The model's own class (`Car` for a `vehicle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_label: Option<String>,
    /// The object's own box, predicted to now (the kept area is this grown by the margin
    /// and by how far it may move before the next detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Rect>,
    /// How fast its centre moves, percent of the frame per second, x then y.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub velocity: Option<[f64; 2]>,
    /// Whether it has hardly moved for a few seconds (a parked car).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stationary: Option<bool>,
    /// `tentative` (seen once: maybe a false detection), `confirmed`, or `lost` (not seen
    /// for a moment, predicted on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl RoiBox {
    pub fn rect(&self) -> Rect {
        Rect {
            x1: self.x1,
            y1: self.y1,
            x2: self.x2,
            y2: self.y2,
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch, the time published events carry (0 if the
/// clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A part of the daemon that failed and is being retried: a device of the pipeline, or a
/// long-running task that panicked and was restarted (see `service::supervisor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Part {
    /// The camera or other frame source.
    Source,
    /// The context track's encoder.
    ContextEncoder,
    /// The source track's encoder.
    SourceEncoder,
    /// The WebRTC server: the hub task that drives every viewer's session.
    Webrtc,
    /// The HTTP server's accept loop.
    Http,
    /// The MQTT client.
    Mqtt,
    /// The relay door (RTP to Janus).
    Relay,
    /// The WHIP door.
    Whip,
    /// The RTSP door's feeders (encoded tracks into GStreamer's RTSP server).
    Rtsp,
    /// The task that turns counters into the state's rates.
    Rates,
}

impl Part {
    /// Every part.
    pub const ALL: [Part; 10] = [
        Part::Source,
        Part::ContextEncoder,
        Part::SourceEncoder,
        Part::Webrtc,
        Part::Http,
        Part::Mqtt,
        Part::Relay,
        Part::Whip,
        Part::Rtsp,
        Part::Rates,
    ];

    /// The parts that are supervised tasks (a panic restarts them): all of [`Part::ALL`]
    /// after the pipeline's three devices.
    pub const TASKS: &[Part] = Part::ALL.split_at(3).1;

    /// The name in the state JSON, metrics and `/healthz`.
    pub fn name(self) -> &'static str {
        match self {
            Part::Source => "source",
            Part::ContextEncoder => "context_encoder",
            Part::SourceEncoder => "source_encoder",
            Part::Webrtc => "webrtc",
            Part::Http => "http",
            Part::Mqtt => "mqtt",
            Part::Relay => "relay",
            Part::Whip => "whip",
            Part::Rtsp => "rtsp",
            Part::Rates => "rates",
        }
    }

    /// Its position in [`Part::ALL`], for per-part counters.
    pub fn index(self) -> usize {
        // Every variant is in ALL (the test below checks it).
        Part::ALL
            .iter()
            .position(|p| *p == self)
            .expect("in Part::ALL")
    }

    /// The part named `name` ([`Part::name`]).
    pub fn from_name(name: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// A failure being retried: it stays in the state until the part works again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// What failed.
    pub part: Part,
    /// The last error, as the device or library said it.
    pub error: String,
    /// Failures since it began (the first error and each failed retry).
    pub failures: u32,
    /// When it began, in ms since the Unix epoch.
    pub since_ms: u64,
}

/// Measured rates per track.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bitrates {
    pub context: f64,
    pub source: f64,
}

/// What a viewer is sent, chosen by its link (see `doors::webrtc::delivery`); from the
/// most to the least. The half rates are every other frame of a track, where its encoder
/// makes two temporal layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkLevel {
    /// Both tracks, every frame.
    Full,
    /// Both tracks, the source at half its frame rate.
    SourceHalfRate,
    /// Only the context track: its link cannot carry the source as it is encoded now.
    ContextOnly,
    /// Only the context track, at half its frame rate: the last step.
    ContextHalfRate,
}

impl LinkLevel {
    /// Every level, from the most sent to the least.
    pub const ALL: [LinkLevel; 4] = [
        LinkLevel::Full,
        LinkLevel::SourceHalfRate,
        LinkLevel::ContextOnly,
        LinkLevel::ContextHalfRate,
    ];

    /// The name in the state JSON and metrics.
    pub fn name(self) -> &'static str {
        match self {
            LinkLevel::Full => "full",
            LinkLevel::SourceHalfRate => "source_half_rate",
            LinkLevel::ContextOnly => "context_only",
            LinkLevel::ContextHalfRate => "context_half_rate",
        }
    }

    /// Whether the source track is sent at this level.
    pub fn has_source(self) -> bool {
        self <= LinkLevel::SourceHalfRate
    }

    /// Whether a track is sent at half its frame rate at this level.
    pub fn is_half_rate(self) -> bool {
        matches!(self, LinkLevel::SourceHalfRate | LinkLevel::ContextHalfRate)
    }
}

/// One viewer's link, as the delivery policy sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerLink {
    /// The first 8 hex digits of its session id.
    pub session: String,
    /// Its bandwidth estimate (TWCC or REMB), kbit/s; `None` before the first.
    pub estimate_kbps: Option<u32>,
    /// What it is sent.
    pub level: LinkLevel,
}

/// How the tracks are delivered: the shared encoders' targets and each viewer's link.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The bitrate each encoder aims at now, kbit/s (the configured ones while adaptation
    /// is off or nobody has an estimate).
    pub target_kbps: TrackMap<u32>,
    /// Every viewer (connected or connecting).
    pub viewers: Vec<ViewerLink>,
}

/// The state JSON of the contract.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub mode: Mode,
    pub hybrid_rect: Option<Rect>,
    pub roi: Vec<RoiBox>,
    pub viewers: usize,
    pub fps: f64,
    pub bitrate_kbps: Bitrates,
    pub encoder: String,
    /// Why that encoder: `configured`, or what `auto` found (e.g. "no hardware H.264
    /// encoder found").
    #[serde(default)]
    pub encoder_reason: String,
    pub source: String,
    /// Parts failing now and being retried; empty when all is well.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// How the tracks are delivered to the viewers.
    #[serde(default)]
    pub delivery: Delivery,
}

/// What the pipeline needs each frame, cheap to copy out under the lock.
#[derive(Clone, Debug, PartialEq)]
pub struct Shaping {
    pub mode: Mode,
    pub hybrid_rect: Option<Rect>,
    pub roi: Vec<RoiBox>,
}

/// Shared, thread-safe owner of [`State`]. Cheap operations only: the lock is held for a
/// copy or an assignment, never across I/O.
#[derive(Debug)]
pub struct Control {
    state: Mutex<State>,
    /// Bumped on every change a viewer or console should hear about (mode, rectangle, ROI,
    /// viewers), not on the once-a-second rate updates.
    version: watch::Sender<u64>,
    /// The picture doors' settings (not part of the state JSON: `/api/streams`).
    streams: Mutex<Streams>,
}

impl Control {
    pub fn new(mode: Mode, hybrid_rect: Option<Rect>, encoder: String, source: String) -> Self {
        Self {
            state: Mutex::new(State {
                mode,
                hybrid_rect,
                roi: Vec::new(),
                viewers: 0,
                fps: 0.0,
                bitrate_kbps: Bitrates::default(),
                encoder,
                encoder_reason: String::new(),
                source,
                faults: Vec::new(),
                delivery: Delivery::default(),
            }),
            version: watch::Sender::new(0),
            streams: Mutex::new(Streams::default()),
        }
    }

    /// The picture doors' settings.
    pub fn streams(&self) -> Streams {
        // A plain copy in and out: poisoning cannot leave it torn.
        *self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `patch` to the picture doors' settings; the new settings, or why not.
    pub fn patch_streams(&self, patch: &StreamsPatch) -> Result<Streams, String> {
        let mut s = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        *s = s.patched(patch)?;
        let now = *s;
        drop(s);
        // The doors that publish settings (MQTT) hear of it.
        self.bump();
        Ok(now)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written (every
        // critical section is a single assignment), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// A copy of the whole state.
    pub fn snapshot(&self) -> State {
        self.lock().clone()
    }

    /// What the source encoder needs to shape the next frame.
    pub fn shaping(&self) -> Shaping {
        let s = self.lock();
        Shaping {
            mode: s.mode,
            hybrid_rect: s.hybrid_rect,
            roi: s.roi.clone(),
        }
    }

    /// Applies a validated command and returns the new state.
    pub fn apply(&self, cmd: &Command) -> State {
        let mut s = self.lock();
        let before = (s.mode, s.hybrid_rect);
        if let Some(mode) = cmd.mode {
            s.mode = mode;
        }
        match cmd.hybrid_rect {
            RectChange::Keep => {}
            RectChange::Clear => s.hybrid_rect = None,
            RectChange::Set(r) => s.hybrid_rect = Some(r),
        }
        let changed = before != (s.mode, s.hybrid_rect);
        let snapshot = s.clone();
        drop(s);
        if changed {
            tracing::info!(mode = %snapshot.mode, hybrid_rect = ?snapshot.hybrid_rect, "state changed by command");
            self.bump();
        }
        snapshot
    }

    /// Replaces the ROI (from the detector).
    pub fn set_roi(&self, roi: Vec<RoiBox>) {
        let mut s = self.lock();
        if s.roi != roi {
            s.roi = roi;
            drop(s);
            self.bump();
        }
    }

    pub fn set_viewers(&self, n: usize) {
        let mut s = self.lock();
        if s.viewers != n {
            s.viewers = n;
            drop(s);
            self.bump();
        }
    }

    /// Replaces the delivery figures; a notified change only when `notify` (a viewer's
    /// level changed), not for the estimates' steady movement.
    pub fn set_delivery(&self, delivery: Delivery, notify: bool) {
        let mut s = self.lock();
        s.delivery = delivery;
        drop(s);
        if notify {
            self.bump();
        }
    }

    /// Updates the measured rates (once a second; not a notified change).
    pub fn set_rates(&self, fps: f64, bitrate_kbps: Bitrates) {
        let mut s = self.lock();
        s.fps = fps;
        s.bitrate_kbps = bitrate_kbps;
    }

    /// Names the encoder (and why it) and the source actually in use, known once the
    /// pipeline has opened them.
    pub fn set_backends(&self, encoder: String, encoder_reason: String, source: String) {
        let mut s = self.lock();
        s.encoder = encoder;
        s.encoder_reason = encoder_reason;
        s.source = source;
    }

    /// Records a failure of `part`. A new fault, or a new error text, is a notified change;
    /// another failure of the same kind only counts.
    pub fn fault(&self, part: Part, error: String) {
        let mut s = self.lock();
        let changed = match s.faults.iter_mut().find(|f| f.part == part) {
            Some(f) => {
                f.failures = f.failures.saturating_add(1);
                std::mem::replace(&mut f.error, error.clone()) != error
            }
            None => {
                s.faults.push(Fault {
                    part,
                    error,
                    failures: 1,
                    since_ms: unix_ms(),
                });
                true
            }
        };
        drop(s);
        if changed {
            self.bump();
        }
    }

    /// `part` works again.
    pub fn recovered(&self, part: Part) {
        let mut s = self.lock();
        let before = s.faults.len();
        s.faults.retain(|f| f.part != part);
        let changed = s.faults.len() != before;
        drop(s);
        if changed {
            self.bump();
        }
    }

    /// A receiver that wakes on every notified change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_has_a_place_and_a_name() {
        for (i, p) in Part::ALL.into_iter().enumerate() {
            assert_eq!(p.index(), i);
            assert_eq!(Part::from_name(p.name()), Some(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
        }
        let tasks: Vec<&str> = Part::TASKS.iter().map(|p| p.name()).collect();
        assert_eq!(
            tasks,
            ["webrtc", "http", "mqtt", "relay", "whip", "rtsp", "rates"]
        );
    }

    #[test]
    fn a_fault_is_kept_until_recovered_and_notified_when_it_changes() {
        let c = Control::new(Mode::High, None, "openh264".into(), "test".into());
        let mut rx = c.subscribe();
        c.fault(Part::Source, "No such device".into());
        assert!(rx.has_changed().unwrap(), "a new fault is news");
        rx.mark_unchanged();
        c.fault(Part::Source, "No such device".into());
        assert!(
            !rx.has_changed().unwrap(),
            "the same error again only counts"
        );
        let faults = c.snapshot().faults;
        assert_eq!((faults.len(), faults[0].failures), (1, 2));
        for part in Part::ALL {
            assert_eq!(serde_json::to_value(part).unwrap(), part.name());
        }
        c.fault(Part::Source, "Input/output error".into());
        assert!(rx.has_changed().unwrap(), "another error is news");
        rx.mark_unchanged();
        c.recovered(Part::ContextEncoder);
        assert!(!rx.has_changed().unwrap(), "nothing to recover");
        c.recovered(Part::Source);
        assert!(rx.has_changed().unwrap());
        assert!(c.snapshot().faults.is_empty());
    }

    #[test]
    fn apply_changes_and_notifies_only_on_change() {
        let c = Control::new(Mode::High, None, "openh264".into(), "test".into());
        let mut rx = c.subscribe();
        let cmd = Command::parse(br#"{"mode":"VISION"}"#).unwrap();
        assert_eq!(c.apply(&cmd).mode, Mode::Vision);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        c.apply(&cmd);
        assert!(
            !rx.has_changed().unwrap(),
            "same mode again is not a change"
        );
        let rect = Command::parse(br#"{"hybrid_rect":{"x1":1,"y1":2,"x2":3,"y2":4}}"#).unwrap();
        let s = c.apply(&rect);
        assert_eq!(s.mode, Mode::Vision, "absent mode is kept");
        assert_eq!(s.hybrid_rect.unwrap().x2, 3.0);
        let clear = Command::parse(br#"{"hybrid_rect":null}"#).unwrap();
        assert_eq!(c.apply(&clear).hybrid_rect, None);
    }

    #[test]
    fn state_json_matches_contract() {
        let c = Control::new(
            Mode::Hybrid,
            None,
            "openh264".into(),
            "test 1280x720@30".into(),
        );
        c.set_roi(vec![RoiBox {
            x1: 1.0,
            y1: 2.0,
            x2: 3.0,
            y2: 4.0,
            label: "motion".into(),
            score: 0.5,
            ..RoiBox::default()
        }]);
        let v = serde_json::to_value(c.snapshot()).unwrap();
        for key in [
            "mode",
            "hybrid_rect",
            "roi",
            "viewers",
            "fps",
            "bitrate_kbps",
            "encoder",
            "encoder_reason",
            "source",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["mode"], "HYBRID");
        assert_eq!(v["roi"][0]["label"], "motion");
        assert!(v["bitrate_kbps"]["context"].is_number());
    }
}
