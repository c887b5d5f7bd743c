//! The web display's WebSocket protocol (SPEC §5, player `--web`): JSON text frames.
//! The page sends requests (`{"op":…,"id":…}`); the server sends state (`{"t":…}`).
//! Everything from the page is untrusted: parsed into [`PageRequest`] or refused with a
//! reason, never unwrapped.

use serde::Deserialize;
use serde_json::{json, Value};
use tspi_display::{Cursor, DisplaySettings, Session, TrackFix};

/// Largest request frame the server reads (larger ones close the socket).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Longest tag comment or operator name accepted from a page.
pub const MAX_TEXT: usize = 500;
pub const MAX_OPERATOR: usize = 64;

/// A page's request, as sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum PageRequest {
    /// Show a moment of the archive (a private replay), RFC 3339.
    Seek {
        #[serde(default)]
        id: Option<u64>,
        to: String,
    },
    /// Back to live.
    Live {
        #[serde(default)]
        id: Option<u64>,
    },
    Pause {
        #[serde(default)]
        id: Option<u64>,
    },
    Resume {
        #[serde(default)]
        id: Option<u64>,
    },
    Speed {
        #[serde(default)]
        id: Option<u64>,
        speed: f64,
    },
    /// Join the running group replay (or the one named).
    Join {
        #[serde(default)]
        id: Option<u64>,
        #[serde(default)]
        channel: Option<String>,
    },
    /// Tag a moment (the cursor when `at` is absent), as `console tag` does.
    Tag {
        #[serde(default)]
        id: Option<u64>,
        comment: String,
        #[serde(default)]
        at: Option<String>,
        #[serde(default)]
        notes: Option<String>,
    },
    /// The operator's name, for the roster.
    Operator {
        #[serde(default)]
        id: Option<u64>,
        name: String,
    },
    /// The trail behind each track, seconds (the replay picture asks for it).
    Trail {
        #[serde(default)]
        id: Option<u64>,
        seconds: f64,
    },
    /// A `tracks` batch applied (flow control; no reply).
    Ack { seq: u64 },
    /// Acknowledge, shelve (for `seconds`, default an hour) or unshelve an alarm, as the
    /// tab's operator (the alarmer does it and everyone sees it).
    Alarm {
        #[serde(default)]
        id: Option<u64>,
        action: String,
        alarm: String,
        #[serde(default)]
        seconds: Option<f64>,
    },
    /// Where the archive holds data over a span, and its tags (the timeline).
    Timeline {
        #[serde(default)]
        id: Option<u64>,
        start: String,
        end: String,
        #[serde(default)]
        buckets: Option<u32>,
    },
}

impl PageRequest {
    pub fn id(&self) -> Option<u64> {
        match self {
            PageRequest::Seek { id, .. }
            | PageRequest::Live { id }
            | PageRequest::Pause { id }
            | PageRequest::Resume { id }
            | PageRequest::Speed { id, .. }
            | PageRequest::Join { id, .. }
            | PageRequest::Tag { id, .. }
            | PageRequest::Operator { id, .. }
            | PageRequest::Trail { id, .. }
            | PageRequest::Timeline { id, .. }
            | PageRequest::Alarm { id, .. } => *id,
            PageRequest::Ack { .. } => None,
        }
    }

    pub fn op(&self) -> &'static str {
        match self {
            PageRequest::Seek { .. } => "seek",
            PageRequest::Live { .. } => "live",
            PageRequest::Pause { .. } => "pause",
            PageRequest::Resume { .. } => "resume",
            PageRequest::Speed { .. } => "speed",
            PageRequest::Join { .. } => "join",
            PageRequest::Tag { .. } => "tag",
            PageRequest::Operator { .. } => "operator",
            PageRequest::Trail { .. } => "trail",
            PageRequest::Timeline { .. } => "timeline",
            PageRequest::Ack { .. } => "ack",
            PageRequest::Alarm { .. } => "alarm",
        }
    }
}

/// Parse a text frame; the error says why it was refused, and the request id when the
/// frame had one, so the page can match the refusal to its promise.
pub fn parse(text: &str) -> Result<PageRequest, (Option<u64>, String)> {
    if text.len() > MAX_REQUEST_BYTES {
        return Err((None, format!("request over {MAX_REQUEST_BYTES} bytes")));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| (None, format!("not JSON: {e}")))?;
    let id = value.get("id").and_then(Value::as_u64);
    if !value.is_object() {
        return Err((id, "a request is a JSON object with \"op\"".into()));
    }
    serde_json::from_value(value).map_err(|e| (id, format!("bad request: {e}")))
}

/// A track as the page gets it: `[sensor_id, recv_ms, time_s, lat, lon, alt_m,
/// speed_mps, heading_deg, spherical, impact_lat, impact_lon]` (lat/lon/alt `null` when
/// it cannot be placed; the impact point `null` unless an impact rule watches it).
pub fn track_row(f: &TrackFix) -> Value {
    let (lat, lon, alt) = match f.position {
        Some(p) => (json!(p.lat_deg), json!(p.lon_deg), json!(p.alt_m)),
        None => (Value::Null, Value::Null, Value::Null),
    };
    json!([
        f.sensor_id,
        f.recv_ms,
        f.time_s,
        lat,
        lon,
        alt,
        finite(f.speed_mps),
        f.heading_deg.map_or(Value::Null, finite),
        u8::from(f.spherical),
        f.impact.map_or(Value::Null, |p| finite(p.lat_deg)),
        f.impact.map_or(Value::Null, |p| finite(p.lon_deg))
    ])
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

pub fn settings(s: &DisplaySettings) -> Value {
    json!({
        "t": "settings",
        "units": s.units.as_str(),
        "colour": s.marker_color,
        "session": s.session.as_ref().map(|(n, i)| json!({"name": n, "id": i})),
    })
}

/// The cursor as the page computes it: live (the server's clock), a replay (anchor,
/// speed, pause, end) or a followed group replay (the newest frame's time).
pub fn mode(session: &Session, now_ms: i64, generation: u64) -> Value {
    let (kind, cursor) = match session.cursor() {
        Cursor::Live => ("live", json!({})),
        Cursor::Replay {
            anchor_ms,
            anchor_wall_ms,
            speed,
            paused,
            started,
            end_ms,
        } => (
            "replay",
            json!({"anchor_ms": anchor_ms, "anchor_wall_ms": anchor_wall_ms, "speed": speed,
                   "paused": paused, "started": started, "end_ms": end_ms}),
        ),
        Cursor::Following {
            playhead_ms,
            at_wall_ms,
        } => (
            "following",
            json!({"playhead_ms": playhead_ms, "at_wall_ms": at_wall_ms,
                   "coast_ms": tspi_display::cursor::FOLLOW_COAST_MS}),
        ),
    };
    let channel = match session.mode() {
        tspi_display::Mode::Channel {
            channel_id,
            display_name,
        } => json!({"id": channel_id, "name": display_name}),
        _ => Value::Null,
    };
    json!({
        "t": "mode",
        "mode": session.mode().name(),
        "state": session.state(),
        "channel_id": session.channel_id(),
        "channel": channel,
        "cursor": cursor,
        "cursor_kind": kind,
        "cursor_ms": session.cursor().at(now_ms),
        "speed": session.cursor().speed(),
        "paused": session.cursor().paused(),
        "server_ms": now_ms,
        "gen": generation,
    })
}

/// A tag for the timeline: `{id, comment, at, status, creator}`.
pub fn tag(id: &str, comment: &str, at: &str, status: &str, creator: Option<&str>) -> Value {
    json!({"id": id, "comment": comment, "at": at, "status": status, "creator": creator})
}

pub fn reply(id: Option<u64>, result: Result<Value, String>) -> Value {
    match result {
        Ok(mut v) => {
            if !v.is_object() {
                v = json!({});
            }
            v["t"] = json!("reply");
            v["id"] = json!(id);
            v["ok"] = json!(true);
            v
        }
        Err(e) => json!({"t": "reply", "id": id, "ok": false, "error": e}),
    }
}

/// Operator names and comments from a page: trimmed, bounded, no control characters.
pub fn clean_text(text: &str, max: usize) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("must not be empty".into());
    }
    if t.chars().count() > max {
        return Err(format!("at most {max} characters"));
    }
    if t.chars().any(char::is_control) {
        return Err("no control characters".into());
    }
    Ok(t.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_garbage_is_refused_with_its_id() {
        assert_eq!(
            parse(r#"{"op":"seek","id":4,"to":"2025-09-28T11:00:00Z"}"#).unwrap(),
            PageRequest::Seek {
                id: Some(4),
                to: "2025-09-28T11:00:00Z".into()
            }
        );
        assert_eq!(parse(r#"{"op":"live"}"#).unwrap().op(), "live");
        let (id, e) = parse(r#"{"op":"fly","id":9}"#).unwrap_err();
        assert_eq!(id, Some(9));
        assert!(e.contains("bad request"), "{e}");
        assert!(parse(r#"{"op":"speed","speed":"fast"}"#).is_err());
        assert!(
            parse(r#"{"op":"live","extra":1}"#).is_err(),
            "unknown fields refused"
        );
        assert!(parse("[1,2]").is_err());
        assert!(parse("\u{0}\u{1}").is_err());
        assert!(parse(&"x".repeat(MAX_REQUEST_BYTES + 1)).is_err());
        // Deep nesting is refused by the parser's own limit, not a stack overflow.
        let deep = "[".repeat(100_000);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn text_from_pages_is_bounded() {
        assert_eq!(clean_text("  ops 1 ", 64).unwrap(), "ops 1");
        assert!(clean_text("   ", 64).is_err());
        assert!(clean_text("a\u{7}b", 64).is_err());
        assert!(clean_text(&"é".repeat(65), 64).is_err());
    }

    #[test]
    fn tracks_are_rows_and_unplaced_ones_have_no_position() {
        let f = TrackFix {
            sensor_id: 7,
            spherical: true,
            day: 1,
            time_s: 2.5,
            recv_ms: 1000,
            position: None,
            speed_mps: f64::NAN,
            heading_deg: None,
            impact: None,
        };
        assert_eq!(
            track_row(&f),
            json!([7, 1000, 2.5, null, null, null, null, null, 1, null, null])
        );
    }
}
