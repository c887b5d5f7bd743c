//! The replayer's playout protocol (SPEC §3, "Historical playout"): the headers on every
//! playout message, and the segment markers that tell a display where a replay picture
//! starts and when it is complete.
//!
//! A room's playout is a sequence of *segments*: each `play` and each `seek` starts one.
//! A segment opens with a `begin` marker, then the command state in force and the tags
//! before its start (phase `state`, or `skipped` after a forward seek), then — when asked
//! for — the picture at its start (`snapshot`: each track's last record and its trail),
//! then a `ready` marker, then the window at its original pace (`window`).

use serde::{Deserialize, Serialize};

pub const HEADER_REPLAY: &str = "Tspi-Replay";
pub const HEADER_ROOM: &str = "Tspi-Replay-Room";
pub const HEADER_SESSION: &str = "Tspi-Replay-Session";
pub const HEADER_PHASE: &str = "Tspi-Replay-Phase";
pub const HEADER_SEGMENT: &str = "Tspi-Replay-Segment";
pub const HEADER_ORIGINAL_SUBJECT: &str = "Tspi-Original-Subject";
pub const HEADER_ORIGINAL_SEQ: &str = "Tspi-Original-Seq";
pub const HEADER_ORIGINAL_TIME: &str = "Tspi-Original-Time";
pub const HEADER_ORIGINAL_MSG_ID: &str = "Tspi-Original-Msg-Id";

/// Where a segment's markers go, after `player.<room>.playout.` (never an archived
/// subject: those start with `tspi.` or `tags.`).
pub const BEGIN_SUBJECT: &str = "replay.begin";
pub const READY_SUBJECT: &str = "replay.ready";

/// The playout subject prefix of a room.
pub fn playout_prefix(room: &str) -> String {
    format!("player.{room}.playout.")
}

/// The control subject of a room (`replayer serve`).
pub fn control_subject(room: &str) -> String {
    format!("player.{room}.ctrl")
}

/// A request on `player.<room>.ctrl` (SPEC §4, `replayer serve`): JSON or CBOR maps with
/// `op`. Built by the displays and the player, read by the replayer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ControlRequest {
    Play {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
        /// Seconds around the tag.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        speed: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clock: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        paused: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        segment: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<SnapshotRequest>,
    },
    Pause,
    Resume,
    Seek {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        segment: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<SnapshotRequest>,
    },
    Speed {
        speed: f64,
    },
    Stop,
    Status,
    Coverage {
        start: String,
        end: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        buckets: Option<u32>,
    },
    Tags {
        start: String,
        end: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    Export(Box<ExportRequest>),
    #[serde(rename = "export_next")]
    ExportNext {
        id: String,
    },
}

impl ControlRequest {
    /// Its `op`, as sent.
    pub fn op(&self) -> &'static str {
        match self {
            ControlRequest::Play { .. } => "play",
            ControlRequest::Pause => "pause",
            ControlRequest::Resume => "resume",
            ControlRequest::Seek { .. } => "seek",
            ControlRequest::Speed { .. } => "speed",
            ControlRequest::Stop => "stop",
            ControlRequest::Status => "status",
            ControlRequest::Coverage { .. } => "coverage",
            ControlRequest::Tags { .. } => "tags",
            ControlRequest::Export(_) => "export",
            ControlRequest::ExportNext { .. } => "export_next",
        }
    }

    /// The segment a `play` or `seek` opens, when it names one.
    pub fn segment(&self) -> Option<u64> {
        match self {
            ControlRequest::Play { segment, .. } | ControlRequest::Seek { segment, .. } => *segment,
            _ => None,
        }
    }
}

/// `{"op":"export",…}`: which window, as which file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Seconds before and after the tag (30 each by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<f64>,
    pub format: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensors: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<String>,
    /// `LAT,LON[,ALT]`: east/north/up, spherical sensors' default site, tags on a map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// `ID=LAT,LON[,ALT]` per spherical sensor with its own site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// The wide CSV's step, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_port: Option<u16>,
    /// Only check that the export can be made (the window, the sensors): nothing starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<bool>,
}

/// The picture a segment starts with: each track's last record within `lookback`
/// seconds and its trail over `trail` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub trail: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Begin,
    /// The command state in force and the tags before the segment's start.
    State,
    /// The picture at the start: each track's last record and its trail, oldest first.
    Snapshot,
    /// After a forward seek: every command and tag skipped over, in stream order.
    Skipped,
    /// The window, at the original pace.
    Window,
    Ready,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Begin => "begin",
            Phase::State => "state",
            Phase::Snapshot => "snapshot",
            Phase::Skipped => "skipped",
            Phase::Window => "window",
            Phase::Ready => "ready",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "begin" => Phase::Begin,
            "state" => Phase::State,
            "snapshot" => Phase::Snapshot,
            "skipped" => Phase::Skipped,
            "window" => Phase::Window,
            "ready" => Phase::Ready,
            _ => return None,
        })
    }
}

/// Whether a segment starts a new timeline or continues the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentKind {
    /// `play`, or a seek backwards: the display starts over (state in force at the start).
    Restart,
    /// A seek forwards: what was skipped follows, the display carries on.
    Forward,
}

/// The payload (a CBOR map) of the `begin` and `ready` markers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMarker {
    pub segment: u64,
    pub kind: SegmentKind,
    /// Where the segment starts (RFC 3339).
    pub at: String,
    /// Where the window ends (RFC 3339).
    pub end: String,
    pub speed: f64,
    pub paused: bool,
    /// `ready` only: messages of the state (or skipped) and snapshot phases.
    #[serde(default)]
    pub state: u64,
    #[serde(default)]
    pub snapshot: u64,
}

impl SegmentMarker {
    pub fn to_cbor(&self) -> Vec<u8> {
        crate::ops::to_cbor(self)
    }

    /// Decode an untrusted marker (CBOR, or JSON text).
    pub fn from_bytes(bytes: &[u8]) -> Result<SegmentMarker, String> {
        crate::ops::from_bytes(bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_phases_parse() {
        let m = SegmentMarker {
            segment: 7,
            kind: SegmentKind::Forward,
            at: "2025-09-28T11:00:00.000Z".into(),
            end: "2025-09-28T11:10:00.000Z".into(),
            speed: 5.0,
            paused: true,
            state: 3,
            snapshot: 120,
        };
        assert_eq!(SegmentMarker::from_bytes(&m.to_cbor()).unwrap(), m);
        assert!(SegmentMarker::from_bytes(b"\xa1").is_err());
        for p in [
            Phase::Begin,
            Phase::State,
            Phase::Snapshot,
            Phase::Skipped,
            Phase::Window,
            Phase::Ready,
        ] {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Phase::parse("nope"), None);
        assert_eq!(playout_prefix("r1"), "player.r1.playout.");
        assert_eq!(control_subject("r1"), "player.r1.ctrl");
    }

    /// One request of each op.
    fn one_of_each() -> Vec<ControlRequest> {
        vec![
            ControlRequest::Play {
                start: Some("2025-09-28T11:00:00Z".into()),
                end: Some("2025-09-28T11:01:00Z".into()),
                tag: None,
                window: None,
                speed: Some(2.0),
                clock: None,
                paused: Some(true),
                segment: Some(3),
                snapshot: Some(SnapshotRequest {
                    trail: 60.0,
                    lookback: None,
                }),
            },
            ControlRequest::Pause,
            ControlRequest::Resume,
            ControlRequest::Seek {
                to: None,
                tag: Some("t1".into()),
                segment: Some(4),
                snapshot: None,
            },
            ControlRequest::Speed { speed: 0.5 },
            ControlRequest::Stop,
            ControlRequest::Status,
            ControlRequest::Coverage {
                start: "a".into(),
                end: "b".into(),
                buckets: Some(10),
            },
            ControlRequest::Tags {
                start: "a".into(),
                end: "b".into(),
                limit: None,
            },
            ControlRequest::Export(Box::new(ExportRequest {
                format: "csv".into(),
                sensors: vec![7],
                ..ExportRequest::default()
            })),
            ControlRequest::ExportNext { id: "e1".into() },
        ]
    }

    #[test]
    fn control_requests_round_trip_with_their_op_and_nothing_unset() {
        for r in one_of_each() {
            let v = serde_json::to_value(&r).unwrap();
            assert_eq!(v["op"], r.op(), "{v}");
            assert!(
                v.as_object().unwrap().values().all(|f| !f.is_null()),
                "unset fields are left out: {v}"
            );
            assert_eq!(serde_json::from_value::<ControlRequest>(v).unwrap(), r);
        }
        assert_eq!(one_of_each()[0].segment(), Some(3));
        assert_eq!(one_of_each()[3].segment(), Some(4));
        assert_eq!(ControlRequest::Stop.segment(), None);
    }

    #[test]
    fn spec_lists_every_control_op() {
        let spec = include_str!("../../../docs/SPEC.md");
        let from = spec
            .find("Its ops (tspi-core's `playout::ControlRequest`")
            .expect("SPEC's replayer ops sentence");
        let sentence = &spec[from..from + spec[from..].find(". `").unwrap_or(0)];
        let listed: Vec<&str> = sentence
            .split('`')
            .skip(3) // the type's name and the parenthesis around it
            .step_by(2)
            .collect();
        let ops: Vec<&str> = one_of_each().iter().map(ControlRequest::op).collect();
        assert_eq!(listed, ops, "SPEC §4 replayer: {sentence}");
    }
}
