//! The wire messages: every JSON message a door sends or a client reads, typed once, with
//! its shape in the contract (README "HTTP", "MQTT"). The server, the MQTT session, the
//! fleet console and the tests all use these types; the commands that come in are
//! [`crate::state::command::Command`].

use serde::{Deserialize, Serialize};

use crate::state::command::Mode;
use crate::state::{Bitrates, RoiBox, State};
use crate::track::TrackMap;

/// Daemon to viewer on the `commands` DataChannel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum ViewerMessage {
    /// The state: the answer to an accepted command (with its `id`), and sent to every
    /// viewer when it changes.
    State {
        /// The whole state (boxed: the other messages are small).
        #[serde(flatten)]
        state: Box<State>,
        /// The `id` of the command this answers, if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A command was refused; nothing changed.
    Error {
        /// Why, in one line.
        error: String,
    },
    /// The detections changed.
    Roi(RoiEvent),
}

impl ViewerMessage {
    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // Every field is a string, number, bool or a list or map of them: cannot fail.
        serde_json::to_string(self).expect("a ViewerMessage serializes")
    }
}

/// The regions of interest at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoiEvent {
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The boxes, in percent of the frame.
    pub roi: Vec<RoiBox>,
}

/// MQTT `events`: something happened on the device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Event {
    /// The detections changed (at most once a second).
    Roi(RoiEvent),
}

/// MQTT `cmd/result`: the answer to one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's `id` (`null` when it had none, or none could be read).
    pub id: Option<String>,
    /// Whether it was applied.
    pub ok: bool,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One track's shape, as registered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frame rate.
    pub fps: f64,
    /// Target bitrate of the track's encoder.
    pub kbps: u32,
}

/// MQTT `info`, retained: who the device is and where a viewer or console reaches it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// Device id (the topic level).
    pub id: String,
    /// Human name (`mqtt.name`, else the id).
    pub name: String,
    /// focusd's version.
    pub version: String,
    /// The board found at run time, e.g. `Raspberry Pi 5` or `linux x86_64`.
    pub board: String,
    /// The H.264 encoder in use.
    pub encoder: String,
    /// Why that encoder: `configured`, or what `auto` found.
    #[serde(default)]
    pub encoder_reason: String,
    /// The frame source in use.
    pub source: String,
    /// `POST` an SDP offer here (the `/offer` of the contract).
    pub signaling_url: String,
    /// WHEP endpoint.
    pub whep_url: String,
    /// The viewer page.
    pub viewer_url: String,
    /// Both tracks' shapes.
    pub tracks: TrackMap<TrackInfo>,
    /// Modes the `cmd` topic accepts.
    pub modes: Vec<Mode>,
}

/// A STUN or TURN server a viewer may use to reach the daemon (`[webrtc] ice_servers`),
/// in the shape of the browser's `RTCIceServer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// The TURN user name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The TURN password, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `GET /api/webrtc`: what the viewer page needs to connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebRtcConfig {
    /// Handed to `RTCPeerConnection` as `iceServers`.
    pub ice_servers: Vec<IceServer>,
}

/// MQTT `stats`: telemetry over the last interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Seconds the figures cover.
    pub interval_s: f64,
    /// Frames captured per second.
    pub fps: f64,
    /// Bitrate sent per track, kbit/s.
    pub kbps: Bitrates,
    /// Viewers held.
    pub viewers: usize,
    /// The mode.
    pub mode: Mode,
    /// Mean encode time per frame, ms (`null` for a track that encoded nothing).
    pub encode_ms: TrackMap<Option<f64>>,
    /// Frames dropped per track (encoder or hub busy).
    pub dropped_frames: TrackMap<u64>,
    /// ROI detector runs per second.
    pub detector_fps: f64,
    /// The process's CPU use, percent of one core.
    pub cpu_percent: f64,
    /// Resident memory, MB (`null` where `/proc` cannot tell).
    pub rss_mb: Option<f64>,
    /// MQTT messages dropped because the client's queue was full, this interval.
    pub mqtt_dropped: u64,
    /// The bitrate each encoder aims at now, kbit/s (the delivery policy's).
    #[serde(default)]
    pub target_kbps: TrackMap<u32>,
    /// Viewers sent the context only, their links too slow for both tracks.
    #[serde(default)]
    pub viewers_context_only: usize,
    /// Viewers sent a track at half its frame rate (the source, or the context of a
    /// context-only viewer).
    #[serde(default)]
    pub viewers_half_rate: usize,
}

/// A device's MQTT topics, `<prefix>/<id>/...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    /// `available`: `online`, `offline` (the last will), `stopped`.
    pub available: String,
    /// `info`: [`Info`], retained.
    pub info: String,
    /// `state`: the state JSON, retained.
    pub state: String,
    /// `cmd`: commands in.
    pub cmd: String,
    /// `cmd/result`: [`CommandResult`]s out.
    pub cmd_result: String,
    /// `stats`: [`Stats`].
    pub stats: String,
    /// `events`: [`Event`]s.
    pub events: String,
    /// Home Assistant's device discovery topic.
    pub discovery: String,
    /// `streams`: the picture doors' settings (as `GET /api/streams` has them under
    /// `doors`), retained.
    pub streams: String,
    /// `streams/set`: changes to them in (as `PUT /api/streams` takes them).
    pub streams_set: String,
}

impl Topics {
    /// The topics of device `id` under `prefix`.
    pub fn new(prefix: &str, id: &str) -> Topics {
        let t = |leaf: &str| format!("{prefix}/{id}/{leaf}");
        Topics {
            available: t("available"),
            info: t("info"),
            state: t("state"),
            cmd: t("cmd"),
            cmd_result: t("cmd/result"),
            stats: t("stats"),
            events: t("events"),
            discovery: format!("homeassistant/device/{id}/config"),
            streams: t("streams"),
            streams_set: t("streams/set"),
        }
    }

    /// The device id in a topic `<prefix>/<id>/<leaf>`, if it is one of this prefix.
    pub fn device_of<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(prefix)?
            .strip_prefix('/')?
            .split('/')
            .next()
    }
}

/// Server to client on the picture WebSockets (`/ws/jpeg`, `/ws/frames`): a text message
/// before each binary one, saying what the binary one holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PictureMessage {
    /// The next binary message is this frame.
    FrameMeta(FrameMeta),
}

/// What a picture door's next binary message holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameMeta {
    /// Capture sequence number (gaps: frames skipped for this consumer).
    pub seq: u64,
    /// `source` or `context`.
    pub track: String,
    /// Picture size (of the JPEG, after any size step).
    pub width: u32,
    pub height: u32,
    /// Pixel layout of the decompressed bytes: `I420` or `NV12`, planes tightly packed
    /// (see `planes`); `JPEG` on `/ws/jpeg`.
    pub format: String,
    /// `none`, `lz4` (block, 4-byte little-endian size first) or `zstd` (a frame), or
    /// `jpeg`.
    pub codec: String,
    /// JPEG quality (`/ws/jpeg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
    /// Length of the binary message.
    pub bytes: usize,
    /// The planes in the decompressed bytes, in order (`/ws/frames`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planes: Vec<PlaneMeta>,
    /// Capture time, milliseconds since the Unix epoch (what the test stamp encodes).
    pub captured_ms: u64,
    pub mode: Mode,
    /// The regions of interest when the frame was sent.
    pub roi: Vec<RoiBox>,
}

/// One plane of a raw frame, tightly packed: `width * height * channels` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaneMeta {
    /// `y`, `u`, `v`, or `uv` (NV12's interleaved chroma).
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Bytes per sample: 1, or 2 for `uv`.
    pub channels: u32,
}

/// Client to server on `/ws/jpeg`: what it rendered, so the server can hold the rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum JpegClientMessage {
    /// Frame `seq` was drawn; the client drew `fps` frames a second over its last second.
    Rendered { seq: u64, fps: f64 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::Rect;
    use crate::state::{Delivery, Fault, LinkLevel, Part, ViewerLink};

    fn state() -> State {
        State {
            mode: Mode::Hybrid,
            hybrid_rect: Some(Rect {
                x1: 10.0,
                y1: 20.0,
                x2: 60.0,
                y2: 80.0,
            }),
            roi: vec![RoiBox {
                x1: 1.0,
                y1: 2.0,
                x2: 30.5,
                y2: 40.0,
                label: "person".into(),
                score: 0.75,
                ..RoiBox::default()
            }],
            viewers: 2,
            fps: 29.9,
            bitrate_kbps: Bitrates {
                context: 301.5,
                source: 900.0,
            },
            encoder: "openh264".into(),
            encoder_reason: "no hardware H.264 encoder found".into(),
            source: "test 1280x720@30".into(),
            faults: vec![Fault {
                part: Part::Source,
                error: "capture failed: No such device (os error 19)".into(),
                failures: 3,
                since_ms: 1_700_000_000_000,
            }],
            delivery: Delivery {
                target_kbps: TrackMap {
                    context: 300,
                    source: 1200,
                },
                viewers: vec![ViewerLink {
                    session: "0123abcd".into(),
                    estimate_kbps: Some(1800),
                    level: LinkLevel::Full,
                }],
            },
        }
    }

    /// Each message reads back as itself, and has the contract's shape.
    fn round_trip<T>(message: &T, shape: &str) -> serde_json::Value
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let text = serde_json::to_string(message).unwrap();
        let back: T = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, message, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys.join(","), shape, "{text}");
        v
    }

    #[test]
    fn viewer_messages_round_trip() {
        let v = round_trip(
            &ViewerMessage::State {
                state: Box::new(state()),
                id: Some("c1".into()),
            },
            "bitrate_kbps,delivery,encoder,encoder_reason,faults,fps,hybrid_rect,id,mode,roi,source,type,viewers",
        );
        assert_eq!(v["type"], "state");
        assert_eq!(v["mode"], "HYBRID");
        assert_eq!(
            v["delivery"],
            serde_json::json!({
                "target_kbps": {"context": 300, "source": 1200},
                "viewers": [{"session": "0123abcd", "estimate_kbps": 1800, "level": "full"}]
            })
        );
        round_trip(
            &ViewerMessage::State {
                state: Box::new(state()),
                id: None,
            },
            "bitrate_kbps,delivery,encoder,encoder_reason,faults,fps,hybrid_rect,mode,roi,source,type,viewers",
        );
        let v = round_trip(&ViewerMessage::Error { error: "no".into() }, "error,type");
        assert_eq!(v["type"], "error");
        let roi = RoiEvent {
            at_ms: 1_700_000_000_123,
            roi: state().roi,
        };
        let v = round_trip(&ViewerMessage::Roi(roi.clone()), "at_ms,roi,type");
        assert_eq!(v["type"], "roi");
        // MQTT `events` carries the same shape.
        let e = round_trip(&Event::Roi(roi), "at_ms,roi,type");
        assert_eq!(e, v);
    }

    #[test]
    fn mqtt_messages_round_trip() {
        round_trip(
            &CommandResult {
                id: Some("a".into()),
                ok: true,
                error: None,
            },
            "id,ok",
        );
        let v = round_trip(
            &CommandResult {
                id: None,
                ok: false,
                error: Some("bad".into()),
            },
            "error,id,ok",
        );
        assert_eq!(v["id"], serde_json::Value::Null);
        let track = TrackInfo {
            width: 320,
            height: 180,
            fps: 30.0,
            kbps: 300,
        };
        let v = round_trip(
            &Info {
                id: "cam-1".into(),
                name: "Cam".into(),
                version: "0.1.0".into(),
                board: "linux x86_64".into(),
                encoder: "openh264".into(),
                encoder_reason: "configured".into(),
                source: "test".into(),
                signaling_url: "http://h:8888/offer".into(),
                whep_url: "http://h:8888/whep".into(),
                viewer_url: "http://h:8888/".into(),
                tracks: TrackMap {
                    context: track,
                    source: TrackInfo {
                        width: 1280,
                        height: 720,
                        ..track
                    },
                },
                modes: Mode::ALL.to_vec(),
            },
            "board,encoder,encoder_reason,id,modes,name,signaling_url,source,tracks,version,viewer_url,whep_url",
        );
        assert_eq!(
            v["modes"],
            serde_json::json!(["LOW", "HIGH", "VISION", "HYBRID"])
        );
        assert_eq!(v["tracks"]["source"]["width"], 1280);
        let v = round_trip(
            &Stats {
                interval_s: 10.0,
                fps: 30.0,
                kbps: Bitrates {
                    context: 300.0,
                    source: 0.0,
                },
                viewers: 1,
                mode: Mode::Low,
                encode_ms: TrackMap {
                    context: Some(1.5),
                    source: None,
                },
                dropped_frames: TrackMap::default(),
                detector_fps: 15.0,
                cpu_percent: 12.5,
                rss_mb: Some(30.1),
                mqtt_dropped: 0,
                target_kbps: TrackMap {
                    context: 300,
                    source: 1200,
                },
                viewers_context_only: 1,
                viewers_half_rate: 2,
            },
            "cpu_percent,detector_fps,dropped_frames,encode_ms,fps,interval_s,kbps,mode,mqtt_dropped,rss_mb,target_kbps,viewers,viewers_context_only,viewers_half_rate",
        );
        assert_eq!(v["encode_ms"]["source"], serde_json::Value::Null);
    }

    #[test]
    fn topics_name_the_device() {
        let t = Topics::new("focusd", "cam-1");
        assert_eq!(t.cmd_result, "focusd/cam-1/cmd/result");
        assert_eq!(Topics::device_of("focusd", &t.state), Some("cam-1"));
        assert_eq!(Topics::device_of("focusd", "other/cam-1/state"), None);
    }
}
