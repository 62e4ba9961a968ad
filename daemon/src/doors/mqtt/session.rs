//! What to publish and when: a sans-IO state machine. The driver ([`super::client`])
//! tells it about connections, commands, state changes and time, and carries out the
//! [`Out`]s it returns.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::state::command::{Command, Mode};
use crate::state::protocol::{CommandResult, Event, Info, RoiEvent, Stats, Topics};
use crate::state::streams::{Streams, StreamsPatch};
use crate::state::{Control, RoiBox, State};

/// State is republished at most this often when only the ROI churns; a command's result
/// is followed by the state at once.
pub const STATE_INTERVAL: Duration = Duration::from_millis(500);
/// ROI events are published at most this often; the latest ROI wins.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// Which message a publish is, for accounting when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// `available`: online / stopped.
    Availability,
    /// `info`, the registration.
    Info,
    /// `state`: coalesced, so a dropped one is republished with the next change.
    State,
    /// `cmd/result`.
    Result,
    /// `stats`.
    Stats,
    /// `events`.
    Event,
    /// `streams`, retained.
    Streams,
    /// Home Assistant discovery.
    Discovery,
}

/// Something the driver must send.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Out {
    /// Subscribe to a topic (QoS 1).
    Subscribe(String),
    /// Publish (QoS 1).
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
        kind: Kind,
    },
}

/// The publishing rules of one device.
#[derive(Debug)]
pub struct Session {
    topics: Topics,
    /// Serialized registration, sent on every connect.
    info: Vec<u8>,
    /// Home Assistant discovery payload, when enabled.
    discovery: Option<Vec<u8>>,
    connected: bool,
    /// The state changed since it was last published.
    state_dirty: bool,
    last_state: Option<Instant>,
    /// The last state published, so that an unchanged one is not sent twice.
    last_state_payload: Vec<u8>,
    /// ROI waiting to be published as an event, and the last one published.
    pending_roi: Option<Vec<RoiBox>>,
    published_roi: Vec<RoiBox>,
    last_event: Option<Instant>,
    stats_interval: Duration,
    next_stats: Option<Instant>,
}

impl Session {
    pub fn new(
        topics: Topics,
        info: &Info,
        stats_interval: Duration,
        home_assistant: bool,
    ) -> Session {
        let discovery = home_assistant.then(|| discovery(&topics, info));
        Session {
            // Serializing plain structs of strings and numbers cannot fail.
            info: serde_json::to_vec(info).expect("info serializes"),
            discovery,
            topics,
            connected: false,
            state_dirty: false,
            last_state: None,
            last_state_payload: Vec::new(),
            pending_roi: None,
            published_roi: Vec::new(),
            last_event: None,
            stats_interval,
            next_stats: None,
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The broker accepted the connection: subscribe, and publish everything retained
    /// afresh (a new session starts from nothing).
    pub fn connected(&mut self, now: Instant, state: &State) -> Vec<Out> {
        self.connected = true;
        let mut out = vec![
            Out::Subscribe(self.topics.cmd.clone()),
            self.publish(
                &self.topics.available,
                b"online".to_vec(),
                true,
                Kind::Availability,
            ),
            self.publish(&self.topics.info, self.info.clone(), true, Kind::Info),
        ];
        if let Some(d) = &self.discovery {
            out.push(self.publish(&self.topics.discovery, d.clone(), true, Kind::Discovery));
        }
        out.push(self.state_now(now, state));
        self.next_stats = Some(now + self.stats_interval);
        out
    }

    /// The connection is gone: publish nothing until the next [`Session::connected`].
    pub fn disconnected(&mut self) {
        self.connected = false;
    }

    /// A command arrived on `cmd`: validate, apply, answer, and publish the new state.
    pub fn command(&mut self, now: Instant, payload: &[u8], control: &Control) -> Vec<Out> {
        let (result, state) = match Command::parse(payload) {
            Ok(cmd) => {
                let state = control.apply(&cmd);
                let result = CommandResult {
                    id: cmd.id,
                    ok: true,
                    error: None,
                };
                (result, Some(state))
            }
            Err(e) => {
                let result = CommandResult {
                    id: id_of(payload),
                    ok: false,
                    error: Some(e.0),
                };
                (result, None)
            }
        };
        // Plain data: serializing cannot fail.
        let result = serde_json::to_vec(&result).expect("a result serializes");
        let mut out = vec![self.publish(&self.topics.cmd_result, result, false, Kind::Result)];
        if let Some(state) = state {
            out.push(self.state_now(now, &state));
        }
        out
    }

    /// The picture doors' settings to publish (retained), after connecting and whenever
    /// they change; with a subscription to their changes on connecting.
    pub fn streams(&mut self, streams: &Streams, subscribe: bool) -> Vec<Out> {
        let mut out = Vec::new();
        if subscribe {
            out.push(Out::Subscribe(self.topics.streams_set.clone()));
        }
        // Plain data: serializing cannot fail.
        let payload = serde_json::to_vec(streams).expect("streams serialize");
        out.push(self.publish(&self.topics.streams, payload, true, Kind::Streams));
        out
    }

    /// A change to the picture doors arrived on `streams/set`: applied, its result on
    /// `cmd/result`, the new settings on `streams`.
    pub fn streams_command(&mut self, payload: &[u8], control: &Control) -> Vec<Out> {
        let applied = serde_json::from_slice::<StreamsPatch>(payload)
            .map_err(|e| e.to_string())
            .and_then(|patch| control.patch_streams(&patch));
        let result = CommandResult {
            id: None,
            ok: applied.is_ok(),
            error: applied.as_ref().err().cloned(),
        };
        // Plain data: serializing cannot fail.
        let result = serde_json::to_vec(&result).expect("a result serializes");
        let mut out = vec![self.publish(&self.topics.cmd_result, result, false, Kind::Result)];
        if let Ok(streams) = applied {
            out.extend(self.streams(&streams, false));
        }
        out
    }

    /// The state changed (mode, rectangle, ROI or viewers): it will be published by
    /// [`Session::poll`], at most every [`STATE_INTERVAL`]; a changed ROI becomes an event.
    pub fn state_changed(&mut self, state: &State) {
        self.state_dirty = true;
        let settled = self.pending_roi.as_ref().unwrap_or(&self.published_roi);
        if *settled != state.roi && !(settled.is_empty() && state.roi.is_empty()) {
            self.pending_roi = Some(state.roi.clone());
        }
    }

    /// The state may have been published but could not be queued: try again later.
    pub fn state_dropped(&mut self) {
        self.state_dirty = true;
    }

    /// What is due at `now`: coalesced state, a rate-limited ROI event.
    pub fn poll(&mut self, now: Instant, state: &State, unix_ms: u64) -> Vec<Out> {
        let mut out = Vec::new();
        if !self.connected {
            return out;
        }
        let state_due = self
            .last_state
            .is_none_or(|t| now.duration_since(t) >= STATE_INTERVAL);
        if self.state_dirty && state_due {
            // Serializing plain data cannot fail.
            let payload = serde_json::to_vec(state).expect("state serializes");
            if payload == self.last_state_payload {
                self.state_dirty = false;
            } else {
                out.push(self.state_payload(now, payload));
            }
        }
        let event_due = self
            .last_event
            .is_none_or(|t| now.duration_since(t) >= EVENT_INTERVAL);
        if event_due && let Some(roi) = self.pending_roi.take() {
            let event = Event::Roi(RoiEvent {
                at_ms: unix_ms,
                roi: roi.clone(),
            });
            // Plain data: serializing cannot fail.
            let event = serde_json::to_vec(&event).expect("an event serializes");
            out.push(self.publish(&self.topics.events, event, false, Kind::Event));
            self.published_roi = roi;
            self.last_event = Some(now);
        }
        out
    }

    /// Whether `stats` is due; if so, the next one is scheduled.
    pub fn stats_due(&mut self, now: Instant) -> bool {
        match self.next_stats {
            Some(t) if self.connected && now >= t => {
                self.next_stats = Some(now + self.stats_interval);
                true
            }
            _ => false,
        }
    }

    /// The `stats` message carrying `stats`.
    pub fn stats(&self, stats: &Stats) -> Out {
        // Plain data: serializing cannot fail.
        let payload = serde_json::to_vec(stats).expect("stats serialize");
        self.publish(&self.topics.stats, payload, false, Kind::Stats)
    }

    /// The earliest time something may become due (for the driver's timer).
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.connected {
            return None;
        }
        let state = self
            .state_dirty
            .then(|| self.last_state.map(|t| t + STATE_INTERVAL))
            .flatten();
        let event = self
            .pending_roi
            .is_some()
            .then(|| self.last_event.map(|t| t + EVENT_INTERVAL))
            .flatten();
        [state, event, self.next_stats].into_iter().flatten().min()
    }

    /// Clean shutdown: `available` becomes `stopped` (the last will says `offline`).
    pub fn stopping(&mut self) -> Out {
        self.publish(
            &self.topics.available,
            b"stopped".to_vec(),
            true,
            Kind::Availability,
        )
    }

    fn state_now(&mut self, now: Instant, state: &State) -> Out {
        // State is plain data: serializing cannot fail.
        let payload = serde_json::to_vec(state).expect("state serializes");
        self.state_payload(now, payload)
    }

    /// Publishes an already serialized state and remembers it.
    fn state_payload(&mut self, now: Instant, payload: Vec<u8>) -> Out {
        self.state_dirty = false;
        self.last_state = Some(now);
        self.last_state_payload = payload;
        self.publish(
            &self.topics.state,
            self.last_state_payload.clone(),
            true,
            Kind::State,
        )
    }

    fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool, kind: Kind) -> Out {
        Out::Publish {
            topic: topic.to_string(),
            payload,
            retain,
            kind,
        }
    }
}

/// The `id` of a command that failed validation, when it has a readable one.
fn id_of(payload: &[u8]) -> Option<String> {
    if payload.len() > crate::state::command::MAX_COMMAND_BYTES {
        return None;
    }
    let v: Value = serde_json::from_slice(payload).ok()?;
    let id = v.get("id")?.as_str()?;
    (id.chars().count() <= crate::state::command::MAX_ID_CHARS).then(|| id.to_string())
}

/// Home Assistant device discovery: the camera as a device with its mode as a select, and
/// viewers and frame rate as sensors, available while `available` says `online`.
fn discovery(topics: &Topics, info: &Info) -> Vec<u8> {
    let uid = |what: &str| format!("focusd_{}_{what}", info.id);
    let payload = json!({
        "dev": {
            "ids": [format!("focusd_{}", info.id)],
            "name": info.name,
            "mf": "focusd",
            "mdl": info.board,
            "sw": info.version,
            "cu": info.viewer_url,
        },
        "o": {"name": "focusd", "sw": info.version},
        "avty_t": topics.available,
        "avty_tpl": "{{ 'online' if value == 'online' else 'offline' }}",
        "cmps": {
            "mode": {
                "p": "select",
                "name": "Mode",
                "uniq_id": uid("mode"),
                "options": Mode::ALL.map(Mode::as_str),
                "cmd_t": topics.cmd,
                "cmd_tpl": "{\"mode\":\"{{ value }}\"}",
                "stat_t": topics.state,
                "val_tpl": "{{ value_json.mode }}",
            },
            "viewers": {
                "p": "sensor",
                "name": "Viewers",
                "uniq_id": uid("viewers"),
                "stat_t": topics.state,
                "val_tpl": "{{ value_json.viewers }}",
            },
            "fps": {
                "p": "sensor",
                "name": "Frame rate",
                "uniq_id": uid("fps"),
                "unit_of_meas": "fps",
                "stat_t": topics.stats,
                "val_tpl": "{{ value_json.fps }}",
            },
        },
    });
    payload.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::Mode;
    use crate::state::protocol::TrackInfo;
    use crate::track::TrackMap;

    fn info() -> Info {
        let t = TrackInfo {
            width: 320,
            height: 180,
            fps: 30.0,
            kbps: 300,
        };
        Info {
            id: "cam-1".into(),
            name: "Cam 1".into(),
            version: "0.1.0".into(),
            board: "generic".into(),
            encoder: "openh264".into(),
            encoder_reason: "configured".into(),
            source: "test".into(),
            signaling_url: "http://10.0.0.5:8888/offer".into(),
            whep_url: "http://10.0.0.5:8888/whep".into(),
            viewer_url: "http://10.0.0.5:8888/".into(),
            tracks: TrackMap {
                context: t,
                source: t,
            },
            modes: Mode::ALL.to_vec(),
        }
    }

    fn session(ha: bool) -> Session {
        Session::new(
            Topics::new("focusd", "cam-1"),
            &info(),
            Duration::from_secs(10),
            ha,
        )
    }

    fn control() -> Control {
        Control::new(Mode::High, None, "openh264".into(), "test".into())
    }

    fn published(out: &[Out]) -> Vec<(&str, String, bool)> {
        out.iter()
            .filter_map(|o| match o {
                Out::Publish {
                    topic,
                    payload,
                    retain,
                    ..
                } => Some((
                    topic.as_str(),
                    String::from_utf8_lossy(payload).into_owned(),
                    *retain,
                )),
                Out::Subscribe(_) => None,
            })
            .collect()
    }

    fn roi(x: f64) -> RoiBox {
        RoiBox {
            x1: x,
            y1: 10.0,
            x2: x + 10.0,
            y2: 20.0,
            label: "motion".into(),
            score: 1.0,
            ..RoiBox::default()
        }
    }

    #[test]
    fn every_connect_subscribes_and_republishes_what_is_retained() {
        let mut s = session(false);
        let c = control();
        let t0 = Instant::now();
        for _ in 0..2 {
            let out = s.connected(t0, &c.snapshot());
            assert_eq!(out[0], Out::Subscribe("focusd/cam-1/cmd".into()));
            let p = published(&out);
            let topics: Vec<&str> = p.iter().map(|x| x.0).collect();
            assert_eq!(
                topics,
                [
                    "focusd/cam-1/available",
                    "focusd/cam-1/info",
                    "focusd/cam-1/state"
                ]
            );
            assert!(p.iter().all(|x| x.2), "all retained");
            assert_eq!(p[0].1, "online");
            let registered: Info = serde_json::from_str(&p[1].1).unwrap();
            assert_eq!(registered, info());
            s.disconnected();
            assert!(s.poll(t0, &c.snapshot(), 0).is_empty(), "silent while down");
        }
        assert_eq!(
            published(&[s.stopping()]),
            [("focusd/cam-1/available", "stopped".to_string(), true)]
        );
    }

    #[test]
    fn commands_are_answered_and_followed_by_the_state() {
        let mut s = session(false);
        let c = control();
        let t0 = Instant::now();
        s.connected(t0, &c.snapshot());
        let out = s.command(t0, br#"{"mode":"VISION","id":"a1"}"#, &c);
        let p = published(&out);
        assert_eq!(p[0].0, "focusd/cam-1/cmd/result");
        assert_eq!(
            serde_json::from_str::<CommandResult>(&p[0].1).unwrap(),
            CommandResult {
                id: Some("a1".into()),
                ok: true,
                error: None
            }
        );
        assert_eq!(p[1].0, "focusd/cam-1/state");
        assert!(p[1].1.contains("\"mode\":\"VISION\""));
        assert_eq!(c.snapshot().mode, Mode::Vision);
        // The command's own change notification does not publish the same state again.
        s.state_changed(&c.snapshot());
        assert!(s.poll(t0 + STATE_INTERVAL, &c.snapshot(), 0).is_empty());

        for (bad, id) in [
            (br#"{"mode":"ULTRA","id":"b2"}"#.to_vec(), Some("b2")),
            (b"{not json".to_vec(), None),
            (
                br#"{"hybrid_rect":{"x1":50,"y1":0,"x2":10,"y2":9},"id":"c3"}"#.to_vec(),
                Some("c3"),
            ),
            (vec![b' '; 5000], None),
        ] {
            let out = s.command(t0, &bad, &c);
            assert_eq!(out.len(), 1, "no state after a rejected command");
            let r: CommandResult = serde_json::from_str(&published(&out)[0].1).unwrap();
            assert!(!r.ok);
            assert_eq!(r.id.as_deref(), id);
            assert!(!r.error.unwrap().is_empty());
        }
        assert_eq!(c.snapshot().mode, Mode::Vision, "nothing changed");
    }

    #[test]
    fn roi_churn_is_coalesced_and_events_are_rate_limited() {
        let mut s = session(false);
        let c = control();
        let t0 = Instant::now();
        s.connected(t0, &c.snapshot());
        let ms = Duration::from_millis;
        let mut state = c.snapshot();
        state.roi = vec![roi(1.0)];
        s.state_changed(&state);
        // The first detection is an event at once; the state waits for its interval
        // after the one the connect published.
        let p = s.poll(t0 + ms(50), &state, 1);
        let p = published(&p);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "focusd/cam-1/events");
        assert!(p[0].1.contains("\"type\":\"roi\""));
        assert_eq!(s.next_deadline(), Some(t0 + STATE_INTERVAL));
        let p = s.poll(t0 + STATE_INTERVAL, &state, 2);
        let p = published(&p);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "focusd/cam-1/state");
        // Three more ROI changes within a second: one event, with the latest.
        for x in [2.0, 3.0, 4.0] {
            state.roi = vec![roi(x)];
            s.state_changed(&state);
        }
        let p = s.poll(t0 + ms(1000), &state, 3);
        assert_eq!(published(&p).len(), 1, "state only");
        let p = s.poll(t0 + ms(1200), &state, 4);
        let p = published(&p);
        assert_eq!(p.len(), 1, "event only: {p:?}");
        assert!(p[0].1.contains("\"x1\":4.0"), "{}", p[0].1);
        // An unchanged empty ROI is no event.
        state.roi.clear();
        s.state_changed(&state);
        s.poll(t0 + ms(2500), &state, 5);
        s.state_changed(&state);
        let p = s.poll(t0 + ms(4000), &state, 6);
        assert!(published(&p).iter().all(|x| x.0 != "focusd/cam-1/events"));
    }

    #[test]
    fn stats_every_interval_only_while_connected() {
        let mut s = session(false);
        let t0 = Instant::now();
        assert!(!s.stats_due(t0 + Duration::from_secs(60)));
        s.connected(t0, &control().snapshot());
        assert!(!s.stats_due(t0 + Duration::from_secs(9)));
        assert!(s.stats_due(t0 + Duration::from_secs(10)));
        assert!(!s.stats_due(t0 + Duration::from_secs(11)));
        assert!(s.stats_due(t0 + Duration::from_secs(20)));
        s.disconnected();
        assert!(!s.stats_due(t0 + Duration::from_secs(40)));
    }

    #[test]
    fn home_assistant_discovery_is_retained_and_wires_mode_and_availability() {
        let mut s = session(true);
        let out = s.connected(Instant::now(), &control().snapshot());
        let p = published(&out);
        let d = p
            .iter()
            .find(|x| x.0 == "homeassistant/device/cam-1/config")
            .expect("discovery published");
        assert!(d.2, "retained");
        let v: Value = serde_json::from_str(&d.1).unwrap();
        assert_eq!(v["avty_t"], "focusd/cam-1/available");
        assert_eq!(v["cmps"]["mode"]["p"], "select");
        assert_eq!(v["cmps"]["mode"]["cmd_t"], "focusd/cam-1/cmd");
        assert_eq!(v["cmps"]["mode"]["options"][3], "HYBRID");
        assert!(
            published(&session(false).connected(Instant::now(), &control().snapshot()))
                .iter()
                .all(|x| !x.0.starts_with("homeassistant/")),
            "off by default"
        );
    }
}
