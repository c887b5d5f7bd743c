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
}
