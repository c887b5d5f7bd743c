//! Display commands (SPEC §3): `tspi.cmd.display.<setting>` carrying
//! `{cmd_id, name, ts, sender, payload}`.
//!
//! Validation happens here, once, so the console refuses bad input before anything is
//! sent and the archiver and players reject the same things.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::units::UnitSystem;

/// Subject prefix every display command is published under.
pub const DISPLAY_COMMAND_PREFIX: &str = "tspi.cmd.display";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("not a CBOR command map: {0}")]
    NotCbor(String),
    #[error("unknown command name {0:?}: expected display.units, display.marker_color or display.session_metadata")]
    UnknownName(String),
    #[error("payload does not match {name}: {reason}")]
    BadPayload { name: &'static str, reason: String },
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("ts {0:?} is not an RFC 3339 time")]
    BadTime(String),
}

/// What a display command sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplaySetting {
    Units(UnitSystem),
    MarkerColor(String),
    SessionMetadata { name: String, id: String },
}

impl DisplaySetting {
    /// The command's `name` field.
    pub fn name(&self) -> &'static str {
        match self {
            DisplaySetting::Units(_) => "display.units",
            DisplaySetting::MarkerColor(_) => "display.marker_color",
            DisplaySetting::SessionMetadata { .. } => "display.session_metadata",
        }
    }

    /// The last subject token: `units`, `marker_color`, `session_metadata`.
    pub fn subject_token(&self) -> &'static str {
        match self {
            DisplaySetting::Units(_) => "units",
            DisplaySetting::MarkerColor(_) => "marker_color",
            DisplaySetting::SessionMetadata { .. } => "session_metadata",
        }
    }

    fn check(&self) -> Result<(), CommandError> {
        match self {
            DisplaySetting::Units(_) => Ok(()),
            DisplaySetting::MarkerColor(c) if c.trim().is_empty() => {
                Err(CommandError::Empty("marker colour"))
            }
            DisplaySetting::MarkerColor(_) => Ok(()),
            DisplaySetting::SessionMetadata { name, .. } if name.trim().is_empty() => {
                Err(CommandError::Empty("session name"))
            }
            DisplaySetting::SessionMetadata { id, .. } if id.trim().is_empty() => {
                Err(CommandError::Empty("session id"))
            }
            DisplaySetting::SessionMetadata { .. } => Ok(()),
        }
    }
}

/// A validated display command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayCommand {
    pub cmd_id: String,
    /// RFC 3339 UTC.
    pub ts: String,
    pub sender: String,
    pub setting: DisplaySetting,
}

#[derive(Serialize, Deserialize)]
struct SessionWire {
    name: String,
    id: String,
}

#[derive(Serialize, Deserialize)]
struct PayloadWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    units: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    marker_color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_metadata: Option<SessionWire>,
}

#[derive(Serialize, Deserialize)]
struct CommandWire {
    cmd_id: String,
    name: String,
    ts: String,
    #[serde(default)]
    sender: String,
    payload: PayloadWire,
}

impl DisplayCommand {
    /// Build and validate.
    pub fn new(
        cmd_id: String,
        ts: String,
        sender: String,
        setting: DisplaySetting,
    ) -> Result<Self, CommandError> {
        let cmd = DisplayCommand {
            cmd_id,
            ts,
            sender,
            setting,
        };
        cmd.check()?;
        Ok(cmd)
    }

    pub fn check(&self) -> Result<(), CommandError> {
        if self.cmd_id.trim().is_empty() {
            return Err(CommandError::Empty("cmd_id"));
        }
        if crate::rfc3339::parse_epoch_ms(&self.ts).is_none() {
            return Err(CommandError::BadTime(self.ts.clone()));
        }
        self.setting.check()
    }

    /// `tspi.cmd.display.<setting>`.
    pub fn subject(&self) -> String {
        format!("{DISPLAY_COMMAND_PREFIX}.{}", self.setting.subject_token())
    }

    pub fn to_cbor(&self) -> Vec<u8> {
        let payload = match &self.setting {
            DisplaySetting::Units(u) => PayloadWire {
                units: Some(u.as_str().to_owned()),
                marker_color: None,
                session_metadata: None,
            },
            DisplaySetting::MarkerColor(c) => PayloadWire {
                units: None,
                marker_color: Some(c.clone()),
                session_metadata: None,
            },
            DisplaySetting::SessionMetadata { name, id } => PayloadWire {
                units: None,
                marker_color: None,
                session_metadata: Some(SessionWire {
                    name: name.clone(),
                    id: id.clone(),
                }),
            },
        };
        let wire = CommandWire {
            cmd_id: self.cmd_id.clone(),
            name: self.setting.name().to_owned(),
            ts: self.ts.clone(),
            sender: self.sender.clone(),
            payload,
        };
        let mut out = Vec::with_capacity(160);
        // Writing into a Vec cannot fail for these plain types.
        let _ = ciborium::into_writer(&wire, &mut out);
        out
    }

    /// Decode and validate untrusted bytes.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, CommandError> {
        // Through the JSON form: a time written as a CBOR date/time tag reads as its text.
        Self::from_json(crate::json::cbor_to_json(bytes).map_err(CommandError::NotCbor)?)
    }

    /// Decode and validate the JSON form of a command ([`crate::json::cbor_to_json`]).
    pub fn from_json(value: serde_json::Value) -> Result<Self, CommandError> {
        let wire: CommandWire =
            serde_json::from_value(value).map_err(|e| CommandError::NotCbor(e.to_string()))?;
        let p = wire.payload;
        let setting = match wire.name.as_str() {
            "display.units" => {
                let units = p.units.ok_or_else(|| CommandError::BadPayload {
                    name: "display.units",
                    reason: "missing units".into(),
                })?;
                DisplaySetting::Units(units.parse().map_err(|reason| CommandError::BadPayload {
                    name: "display.units",
                    reason,
                })?)
            }
            "display.marker_color" => {
                DisplaySetting::MarkerColor(p.marker_color.ok_or_else(|| {
                    CommandError::BadPayload {
                        name: "display.marker_color",
                        reason: "missing marker_color".into(),
                    }
                })?)
            }
            "display.session_metadata" => {
                let s = p.session_metadata.ok_or_else(|| CommandError::BadPayload {
                    name: "display.session_metadata",
                    reason: "missing session_metadata {name, id}".into(),
                })?;
                DisplaySetting::SessionMetadata {
                    name: s.name,
                    id: s.id,
                }
            }
            other => return Err(CommandError::UnknownName(other.to_owned())),
        };
        let cmd = DisplayCommand {
            cmd_id: wire.cmd_id,
            ts: wire.ts,
            sender: wire.sender,
            setting,
        };
        cmd.check()?;
        Ok(cmd)
    }

    /// The `payload` object as JSON (for the archive and JSON output).
    pub fn payload_json(&self) -> serde_json::Value {
        match &self.setting {
            DisplaySetting::Units(u) => serde_json::json!({ "units": u.as_str() }),
            DisplaySetting::MarkerColor(c) => serde_json::json!({ "marker_color": c }),
            DisplaySetting::SessionMetadata { name, id } => {
                serde_json::json!({ "session_metadata": { "name": name, "id": id } })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(setting: DisplaySetting) -> Result<DisplayCommand, CommandError> {
        DisplayCommand::new(
            "5f0c6b7e-1d2a-4c1e-9d49-0a4d2f7c9e11".into(),
            "2025-09-28T11:00:00.000Z".into(),
            "console@ops1".into(),
            setting,
        )
    }

    #[test]
    fn round_trips_every_setting() {
        for s in [
            DisplaySetting::Units(UnitSystem::Imperial),
            DisplaySetting::MarkerColor("#ff8800".into()),
            DisplaySetting::SessionMetadata {
                name: "Sortie 7".into(),
                id: "S7".into(),
            },
        ] {
            let c = cmd(s).unwrap();
            assert_eq!(DisplayCommand::from_cbor(&c.to_cbor()).unwrap(), c);
        }
    }

    #[test]
    fn subject_and_name_follow_the_setting() {
        let c = cmd(DisplaySetting::MarkerColor("red".into())).unwrap();
        assert_eq!(c.subject(), "tspi.cmd.display.marker_color");
        assert_eq!(c.setting.name(), "display.marker_color");
    }

    #[test]
    fn refuses_empty_and_bad_values() {
        assert_eq!(
            cmd(DisplaySetting::MarkerColor("  ".into())).unwrap_err(),
            CommandError::Empty("marker colour")
        );
        assert!(cmd(DisplaySetting::SessionMetadata {
            name: "x".into(),
            id: String::new()
        })
        .is_err());
        let bad_time = DisplayCommand::new(
            "id".into(),
            "yesterday".into(),
            "s".into(),
            DisplaySetting::Units(UnitSystem::Metric),
        );
        assert!(matches!(bad_time, Err(CommandError::BadTime(_))));
    }

    #[test]
    fn rejects_unknown_units_and_garbage() {
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &serde_json::json!({"cmd_id": "a", "name": "display.units", "ts": "2025-01-01T00:00:00Z",
                                "sender": "s", "payload": {"units": "furlongs"}}),
            &mut bytes,
        )
        .unwrap();
        assert!(matches!(
            DisplayCommand::from_cbor(&bytes),
            Err(CommandError::BadPayload { .. })
        ));
        assert!(matches!(
            DisplayCommand::from_cbor(b"\xff\x00garbage"),
            Err(CommandError::NotCbor(_))
        ));
    }

    #[test]
    fn a_time_as_a_cbor_date_tag_is_read() {
        use ciborium::Value as V;
        let text = |s: &str| V::Text(s.into());
        let map = V::Map(vec![
            (text("cmd_id"), text("c-js")),
            (text("name"), text("display.units")),
            (
                text("ts"),
                V::Tag(1, Box::new(V::Integer(1_759_057_200.into()))),
            ),
            (text("sender"), text("js")),
            (
                text("payload"),
                V::Map(vec![(text("units"), text("imperial"))]),
            ),
        ]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&map, &mut bytes).unwrap();
        let cmd = DisplayCommand::from_cbor(&bytes).unwrap();
        assert_eq!(cmd.ts, "2025-09-28T11:00:00.000Z");
        assert_eq!(cmd.setting, DisplaySetting::Units(UnitSystem::Imperial));
    }
}
