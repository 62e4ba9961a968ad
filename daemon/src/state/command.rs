//! The one command schema shared by the DataChannel, `POST /api/command` and MQTT `cmd`:
//! `{"mode":"LOW|HIGH|VISION|HYBRID", "hybrid_rect":{"x1":..,"y1":..,"x2":..,"y2":..}, "id":".."}`.
//!
//! Every door parses with [`Command::parse`], so they accept and reject exactly the same
//! things with the same messages.

use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// Largest command accepted, in bytes: a real command is well under 200.
pub const MAX_COMMAND_BYTES: usize = 4096;
/// Longest `id` accepted, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// What the sender of a command may do, as its door established it (the HTTP token it
/// presented; the broker's ACL for MQTT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// May watch and command.
    Full,
    /// May watch and read the state, not command.
    ViewOnly,
}

/// What the source track carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Mode {
    /// No source media at all.
    Low,
    /// The full high-resolution frame.
    High,
    /// High resolution only inside the detected ROI, black elsewhere.
    Vision,
    /// Like VISION, with the ROI limited to the user's `hybrid_rect`.
    Hybrid,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Low, Mode::High, Mode::Vision, Mode::Hybrid];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Low => "LOW",
            Mode::High => "HIGH",
            Mode::Vision => "VISION",
            Mode::Hybrid => "HYBRID",
        }
    }

    /// Parses a mode name, ignoring ASCII case.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    /// A mode name, ignoring ASCII case (the config file's `control.mode`).
    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::parse(s).ok_or_else(|| format!("unknown mode `{s}`: use LOW, HIGH, VISION or HYBRID"))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rectangle in percent (0–100) of the frame, `x1 < x2`, `y1 < y2`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rect {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

impl Rect {
    /// Validates a rectangle built elsewhere (config file) with the command rules.
    pub fn validated(self) -> Result<Rect, CommandError> {
        for (name, v) in [
            ("x1", self.x1),
            ("y1", self.y1),
            ("x2", self.x2),
            ("y2", self.y2),
        ] {
            if !v.is_finite() || !(0.0..=100.0).contains(&v) {
                return Err(CommandError(format!(
                    "hybrid_rect.{name} must be a number from 0 to 100, got {v}"
                )));
            }
        }
        if self.x1 >= self.x2 {
            return Err(CommandError(format!(
                "hybrid_rect needs x1 < x2, got x1={} x2={}",
                self.x1, self.x2
            )));
        }
        if self.y1 >= self.y2 {
            return Err(CommandError(format!(
                "hybrid_rect needs y1 < y2, got y1={} y2={}",
                self.y1, self.y2
            )));
        }
        Ok(self)
    }

    /// The intersection with `other`, if they overlap.
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let r = Rect {
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
            x2: self.x2.min(other.x2),
            y2: self.y2.min(other.y2),
        };
        (r.x1 < r.x2 && r.y1 < r.y2).then_some(r)
    }
}

/// What a command asks for to change.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RectChange {
    /// Leave `hybrid_rect` as it is (the field was absent).
    Keep,
    /// Clear it (`"hybrid_rect": null`).
    Clear,
    /// Set it.
    Set(Rect),
}

/// A validated command.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// New mode, if given.
    pub mode: Option<Mode>,
    /// Change to the HYBRID rectangle.
    pub hybrid_rect: RectChange,
    /// Caller's correlation id, echoed in replies.
    pub id: Option<String>,
}

/// Why a command was rejected: one line, meant for the person who sent it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, CommandError> {
    Err(CommandError(msg.into()))
}

impl Serialize for Command {
    /// The command JSON of the contract, which [`Command::parse`] reads back: absent
    /// fields are left out, a cleared rectangle is `null`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(mode) = self.mode {
            m.serialize_entry("mode", &mode)?;
        }
        match &self.hybrid_rect {
            RectChange::Keep => {}
            RectChange::Clear => m.serialize_entry("hybrid_rect", &None::<Rect>)?,
            RectChange::Set(r) => m.serialize_entry("hybrid_rect", r)?,
        }
        if let Some(id) = &self.id {
            m.serialize_entry("id", id)?;
        }
        m.end()
    }
}

impl Command {
    /// The command as JSON text (what `focusd ctl` sends).
    pub fn to_json(&self) -> String {
        // A map of strings and numbers: cannot fail.
        serde_json::to_string(self).expect("a command serializes")
    }

    /// Parses and validates a command. Unknown fields, wrong types, out-of-range or inverted
    /// rectangles, unknown modes and oversized input are all rejected with a reason.
    pub fn parse(bytes: &[u8]) -> Result<Command, CommandError> {
        if bytes.len() > MAX_COMMAND_BYTES {
            return err(format!(
                "command is {} bytes, the limit is {MAX_COMMAND_BYTES}",
                bytes.len()
            ));
        }
        let value: Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => return err(format!("command is not valid JSON: {e}")),
        };
        let Value::Object(fields) = value else {
            return err("command must be a JSON object");
        };
        Self::from_fields(&fields)
    }

    fn from_fields(fields: &Map<String, Value>) -> Result<Command, CommandError> {
        if let Some(unknown) = fields
            .keys()
            .find(|k| !matches!(k.as_str(), "mode" | "hybrid_rect" | "id"))
        {
            return err(format!(
                "unknown field `{unknown}`: a command has mode, hybrid_rect and id"
            ));
        }
        let mode = match fields.get("mode") {
            None => None,
            Some(Value::String(s)) => match Mode::parse(s) {
                Some(m) => Some(m),
                None => {
                    return err(format!(
                        "unknown mode `{s}`: use LOW, HIGH, VISION or HYBRID"
                    ));
                }
            },
            Some(_) => return err("mode must be a string: LOW, HIGH, VISION or HYBRID"),
        };
        let hybrid_rect = match fields.get("hybrid_rect") {
            None => RectChange::Keep,
            Some(Value::Null) => RectChange::Clear,
            Some(Value::Object(r)) => RectChange::Set(parse_rect(r)?),
            Some(_) => return err("hybrid_rect must be an object {x1,y1,x2,y2} or null"),
        };
        let id = match fields.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= MAX_ID_CHARS => Some(s.clone()),
            Some(Value::String(_)) => {
                return err(format!("id is longer than {MAX_ID_CHARS} characters"));
            }
            Some(_) => return err("id must be a string"),
        };
        Ok(Command {
            mode,
            hybrid_rect,
            id,
        })
    }
}

fn parse_rect(r: &Map<String, Value>) -> Result<Rect, CommandError> {
    if let Some(unknown) = r
        .keys()
        .find(|k| !matches!(k.as_str(), "x1" | "y1" | "x2" | "y2"))
    {
        return err(format!(
            "unknown field `hybrid_rect.{unknown}`: a rectangle has x1, y1, x2 and y2"
        ));
    }
    let coord = |name: &str| match r.get(name) {
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| {
            CommandError(format!("hybrid_rect.{name} must be a number from 0 to 100"))
        }),
        Some(_) => err(format!("hybrid_rect.{name} must be a number from 0 to 100")),
        None => err(format!("hybrid_rect is missing {name}")),
    };
    Rect {
        x1: coord("x1")?,
        y1: coord("y1")?,
        x2: coord("x2")?,
        y2: coord("y2")?,
    }
    .validated()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Command, String> {
        Command::parse(s.as_bytes()).map_err(|e| e.0)
    }

    #[test]
    fn accepts_valid_commands() {
        let c = parse(r#"{"mode":"VISION","id":"a1"}"#).unwrap();
        assert_eq!(c.mode, Some(Mode::Vision));
        assert_eq!(c.id.as_deref(), Some("a1"));
        assert_eq!(c.hybrid_rect, RectChange::Keep);
        let c = parse(r#"{"hybrid_rect":{"x1":10,"y1":20.5,"x2":90,"y2":100}}"#).unwrap();
        assert_eq!(
            c.hybrid_rect,
            RectChange::Set(Rect {
                x1: 10.0,
                y1: 20.5,
                x2: 90.0,
                y2: 100.0
            })
        );
        assert_eq!(
            parse(r#"{"mode":"hybrid"}"#).unwrap().mode,
            Some(Mode::Hybrid)
        );
        assert_eq!(
            parse(r#"{"hybrid_rect":null}"#).unwrap().hybrid_rect,
            RectChange::Clear
        );
        assert_eq!(parse("{}").unwrap().mode, None);
    }

    #[test]
    fn rejects_each_kind_of_bad_command_with_a_reason() {
        let cases = [
            ("not json", "not valid JSON"),
            ("[1,2]", "must be a JSON object"),
            (r#"{"mode":"ULTRA"}"#, "unknown mode `ULTRA`"),
            (r#"{"mode":3}"#, "mode must be a string"),
            (r#"{"mode":"LOW","extra":1}"#, "unknown field `extra`"),
            (r#"{"hybrid_rect":[1,2,3,4]}"#, "must be an object"),
            (r#"{"hybrid_rect":{"x1":0,"y1":0,"x2":50}}"#, "missing y2"),
            (
                r#"{"hybrid_rect":{"x1":0,"y1":0,"x2":150,"y2":50}}"#,
                "x2 must be a number from 0 to 100",
            ),
            (
                r#"{"hybrid_rect":{"x1":-1,"y1":0,"x2":50,"y2":50}}"#,
                "x1 must be",
            ),
            (
                r#"{"hybrid_rect":{"x1":60,"y1":0,"x2":50,"y2":50}}"#,
                "x1 < x2",
            ),
            (
                r#"{"hybrid_rect":{"x1":0,"y1":50,"x2":50,"y2":50}}"#,
                "y1 < y2",
            ),
            (
                r#"{"hybrid_rect":{"x1":"0","y1":0,"x2":50,"y2":50}}"#,
                "x1 must be a number",
            ),
            (
                r#"{"hybrid_rect":{"x1":0,"y1":0,"x2":50,"y2":50,"z":1}}"#,
                "hybrid_rect.z",
            ),
            (r#"{"id":5}"#, "id must be a string"),
        ];
        for (input, want) in cases {
            let got = parse(input).expect_err(input);
            assert!(got.contains(want), "{input}: got `{got}`, want `{want}`");
            assert!(!got.contains('\n'), "one line: {got}");
        }
        let long_id = format!(r#"{{"id":"{}"}}"#, "x".repeat(200));
        assert!(parse(&long_id).unwrap_err().contains("longer than"));
        let huge = format!(r#"{{"id":"{}"}}"#, "x".repeat(5000));
        assert!(parse(&huge).unwrap_err().contains("limit is 4096"));
    }

    #[test]
    fn serializes_to_what_parse_reads_back() {
        let rect = Rect {
            x1: 10.0,
            y1: 20.5,
            x2: 60.0,
            y2: 80.0,
        };
        for cmd in [
            Command {
                mode: Some(Mode::Vision),
                hybrid_rect: RectChange::Keep,
                id: Some("c1".into()),
            },
            Command {
                mode: None,
                hybrid_rect: RectChange::Set(rect),
                id: None,
            },
            Command {
                mode: Some(Mode::Hybrid),
                hybrid_rect: RectChange::Clear,
                id: Some("c2".into()),
            },
        ] {
            let text = cmd.to_json();
            assert_eq!(Command::parse(text.as_bytes()), Ok(cmd), "{text}");
        }
        let clear = Command {
            mode: None,
            hybrid_rect: RectChange::Clear,
            id: None,
        };
        assert_eq!(clear.to_json(), r#"{"hybrid_rect":null}"#);
    }

    #[test]
    fn intersect() {
        let a = Rect {
            x1: 0.0,
            y1: 0.0,
            x2: 50.0,
            y2: 50.0,
        };
        let b = Rect {
            x1: 25.0,
            y1: 25.0,
            x2: 75.0,
            y2: 75.0,
        };
        assert_eq!(
            a.intersect(&b),
            Some(Rect {
                x1: 25.0,
                y1: 25.0,
                x2: 50.0,
                y2: 50.0
            })
        );
        let c = Rect {
            x1: 60.0,
            y1: 60.0,
            x2: 70.0,
            y2: 70.0,
        };
        assert_eq!(a.intersect(&c), None);
    }
}
