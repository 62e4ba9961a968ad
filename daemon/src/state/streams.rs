//! Which picture doors (and RTSP) are open and what each may take: the runtime settings
//! behind `GET/PUT /api/streams` (and MQTT's `streams/set`). A door that is closed
//! refuses new consumers (503) and ends the ones it has at their next frame.

use serde::{Deserialize, Serialize};

/// A door that serves pictures rather than WebRTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Door {
    /// `GET /snapshot.jpg`.
    Snapshot,
    /// `GET /stream.mjpeg`.
    Mjpeg,
    /// `/ws/jpeg`: JPEG over a WebSocket, quality adapted to what the client renders.
    WsJpeg,
    /// `/ws/frames`: raw planes over a WebSocket, lz4, zstd or uncompressed.
    WsFrames,
}

impl Door {
    pub const ALL: [Door; 4] = [Door::Snapshot, Door::Mjpeg, Door::WsJpeg, Door::WsFrames];

    /// Its name in `/api/streams` and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Door::Snapshot => "snapshot",
            Door::Mjpeg => "mjpeg",
            Door::WsJpeg => "ws_jpeg",
            Door::WsFrames => "ws_frames",
        }
    }
}

/// One door's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoorSettings {
    /// Whether it takes consumers.
    pub enabled: bool,
    /// The most frames a second any one consumer gets (a request asking more gets this).
    pub max_fps: f64,
    /// The JPEG quality a consumer gets when it names none (the JPEG doors; the others
    /// ignore it); on `/ws/jpeg`, the most the adaptive policy goes up to.
    pub quality: u8,
    /// Consumers at once; one more is refused 503. For snapshots: pictures compressed at
    /// once.
    pub max_consumers: u32,
}

/// The RTSP door's settings: it serves the encoders' own H.264, so there is no rate or
/// quality of its own to set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RtspDoorSettings {
    /// Whether it takes clients (with `[rtsp] port` set; RTSP that does not listen stays
    /// off whatever this says).
    pub enabled: bool,
}

/// Every door's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Streams {
    pub snapshot: DoorSettings,
    pub mjpeg: DoorSettings,
    pub ws_jpeg: DoorSettings,
    pub ws_frames: DoorSettings,
    pub rtsp: RtspDoorSettings,
}

impl Default for Streams {
    fn default() -> Self {
        let door = |max_fps, max_consumers| DoorSettings {
            enabled: true,
            max_fps,
            quality: 80,
            max_consumers,
        };
        Streams {
            snapshot: door(30.0, 4),
            mjpeg: door(30.0, 8),
            ws_jpeg: door(30.0, 8),
            ws_frames: door(30.0, 4),
            rtsp: RtspDoorSettings { enabled: true },
        }
    }
}

impl Streams {
    pub fn door(&self, door: Door) -> &DoorSettings {
        match door {
            Door::Snapshot => &self.snapshot,
            Door::Mjpeg => &self.mjpeg,
            Door::WsJpeg => &self.ws_jpeg,
            Door::WsFrames => &self.ws_frames,
        }
    }

    fn door_mut(&mut self, door: Door) -> &mut DoorSettings {
        match door {
            Door::Snapshot => &mut self.snapshot,
            Door::Mjpeg => &mut self.mjpeg,
            Door::WsJpeg => &mut self.ws_jpeg,
            Door::WsFrames => &mut self.ws_frames,
        }
    }

    /// These settings with `patch` applied, or why it cannot be (the field named).
    pub fn patched(&self, patch: &StreamsPatch) -> Result<Streams, String> {
        let mut next = *self;
        if let Some(enabled) = patch.rtsp.as_ref().and_then(|r| r.enabled) {
            next.rtsp.enabled = enabled;
        }
        for door in Door::ALL {
            let Some(p) = patch.door(door) else { continue };
            let d = next.door_mut(door);
            let name = door.name();
            if let Some(enabled) = p.enabled {
                d.enabled = enabled;
            }
            if let Some(fps) = p.max_fps {
                if !(fps.is_finite() && (0.1..=120.0).contains(&fps)) {
                    return Err(format!("{name}.max_fps: {fps} is not within 0.1..=120"));
                }
                d.max_fps = fps;
            }
            if let Some(q) = p.quality {
                if !(1..=100).contains(&q) {
                    return Err(format!("{name}.quality: {q} is not within 1..=100"));
                }
                d.quality = q;
            }
            if let Some(n) = p.max_consumers {
                if !(1..=64).contains(&n) {
                    return Err(format!("{name}.max_consumers: {n} is not within 1..=64"));
                }
                d.max_consumers = n;
            }
        }
        Ok(next)
    }
}

/// A change to some doors' settings (`PUT /api/streams`): what is absent stays.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsPatch {
    pub snapshot: Option<DoorPatch>,
    pub mjpeg: Option<DoorPatch>,
    pub ws_jpeg: Option<DoorPatch>,
    pub ws_frames: Option<DoorPatch>,
    pub rtsp: Option<RtspDoorPatch>,
}

/// A change to the RTSP door: only whether it is open.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspDoorPatch {
    pub enabled: Option<bool>,
}

impl StreamsPatch {
    fn door(&self, door: Door) -> Option<&DoorPatch> {
        match door {
            Door::Snapshot => self.snapshot.as_ref(),
            Door::Mjpeg => self.mjpeg.as_ref(),
            Door::WsJpeg => self.ws_jpeg.as_ref(),
            Door::WsFrames => self.ws_frames.as_ref(),
        }
    }
}

/// A change to one door's settings.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorPatch {
    pub enabled: Option<bool>,
    pub max_fps: Option<f64>,
    /// An integer; a quality like 80.5 is refused by the schema.
    pub quality: Option<u8>,
    pub max_consumers: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str) -> Result<StreamsPatch, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let before = Streams::default();
        let after = before
            .patched(&patch(r#"{"mjpeg":{"enabled":false,"max_fps":5}}"#).unwrap())
            .unwrap();
        assert!(!after.mjpeg.enabled);
        assert_eq!(after.mjpeg.max_fps, 5.0);
        assert_eq!(after.mjpeg.quality, before.mjpeg.quality);
        assert_eq!(after.ws_jpeg, before.ws_jpeg);
    }

    #[test]
    fn out_of_range_and_unknown_fields_are_refused_with_the_field_named() {
        let s = Streams::default();
        for (json, field) in [
            (r#"{"mjpeg":{"max_fps":0}}"#, "mjpeg.max_fps"),
            (r#"{"ws_jpeg":{"quality":0}}"#, "ws_jpeg.quality"),
            (
                r#"{"snapshot":{"max_consumers":1000}}"#,
                "snapshot.max_consumers",
            ),
        ] {
            let e = s.patched(&patch(json).unwrap()).unwrap_err();
            assert!(e.starts_with(field), "{json}: {e}");
            assert_eq!(s, Streams::default());
        }
        assert!(patch(r#"{"mjpg":{}}"#).is_err());
        // RTSP has no rate or quality of its own.
        assert!(patch(r#"{"rtsp":{"max_fps":5}}"#).is_err());
        let closed = s
            .patched(&patch(r#"{"rtsp":{"enabled":false}}"#).unwrap())
            .unwrap();
        assert!(!closed.rtsp.enabled);
        assert!(patch(r#"{"mjpeg":{"fps":3}}"#).is_err());
        assert!(patch(r#"{"mjpeg":{"quality":80.5}}"#).is_err());
    }
}
