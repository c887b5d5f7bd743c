//! The web display's WebSocket protocol (SPEC §5, player `--web`): JSON text frames.
//! The page sends requests (`{"op":…,"id":…}`, [`PageRequest`]); the server sends state
//! (`{"t":…}`, [`ServerMessage`]). Everything from the page is untrusted: parsed into
//! [`PageRequest`] or refused with a reason, never unwrapped. SPEC's list of server
//! messages and the page's handlers are checked against [`ServerMessage::KINDS`].

use axum::extract::ws::Message;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tspi_core::alarm::AlarmEvent;
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

/// What the server sends a page, `{"t": kind, …}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// First on every socket: who the tab is and how to draw.
    Hello {
        version: u32,
        client_id: String,
        operator: Option<String>,
        server_ms: i64,
        config: HelloConfig,
    },
    Settings {
        units: &'static str,
        colour: Option<String>,
        session: Option<SessionRef>,
    },
    Mode(Box<ModeMessage>),
    /// A new picture is coming: rows of `gen` build it until `ready`.
    Reset {
        gen: u64,
    },
    /// Rows of the picture's trails.
    Trail {
        gen: u64,
        u: &'a [Value],
    },
    /// Live rows, numbered for the page's acknowledgements.
    Tracks {
        gen: u64,
        seq: u64,
        u: &'a [Value],
    },
    /// The picture of `gen` is complete (`segment` of a replay; none live).
    Ready {
        gen: u64,
        segment: Option<u64>,
    },
    /// `full` replaces the page's list.
    Tags {
        full: bool,
        tags: Vec<PageTag>,
    },
    TagShown {
        tag: PageTag,
    },
    Groups {
        active: Vec<GroupRef>,
    },
    Coverage {
        start_ms: i64,
        end_ms: i64,
        bucket_ms: f64,
        counts: Value,
    },
    Clock {
        server_ms: i64,
    },
    /// The alarms in force at the cursor; `full` replaces the page's list.
    Alarms {
        full: bool,
        alarms: Vec<AlarmEvent>,
    },
    Alarm {
        alarm: AlarmEvent,
    },
    /// The alarmer's `rules` reply: the boundaries to draw.
    Overlays {
        rules: &'a Value,
    },
    Error {
        error: String,
    },
    /// The answer to a request: `ok`, the request's `id`, and its fields or `error`.
    Reply {
        id: Option<u64>,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(flatten)]
        body: Map<String, Value>,
    },
}

impl ServerMessage<'_> {
    /// Every kind, in SPEC's order.
    pub const KINDS: [&'static str; 17] = [
        "hello",
        "settings",
        "mode",
        "reset",
        "trail",
        "tracks",
        "ready",
        "tags",
        "tag_shown",
        "groups",
        "coverage",
        "clock",
        "alarms",
        "alarm",
        "overlays",
        "error",
        "reply",
    ];

    /// Its `t` (a match, so a new kind cannot be left out of [`Self::KINDS`] unnoticed:
    /// the tests serialize one of each).
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Hello { .. } => "hello",
            ServerMessage::Settings { .. } => "settings",
            ServerMessage::Mode(_) => "mode",
            ServerMessage::Reset { .. } => "reset",
            ServerMessage::Trail { .. } => "trail",
            ServerMessage::Tracks { .. } => "tracks",
            ServerMessage::Ready { .. } => "ready",
            ServerMessage::Tags { .. } => "tags",
            ServerMessage::TagShown { .. } => "tag_shown",
            ServerMessage::Groups { .. } => "groups",
            ServerMessage::Coverage { .. } => "coverage",
            ServerMessage::Clock { .. } => "clock",
            ServerMessage::Alarms { .. } => "alarms",
            ServerMessage::Alarm { .. } => "alarm",
            ServerMessage::Overlays { .. } => "overlays",
            ServerMessage::Error { .. } => "error",
            ServerMessage::Reply { .. } => "reply",
        }
    }

    /// The WebSocket frame.
    pub fn frame(&self) -> Message {
        match serde_json::to_string(self) {
            Ok(text) => Message::Text(text.into()),
            // Only a map with non-string keys fails, and none is built here; still, the
            // page hears that something went wrong instead of nothing.
            Err(e) => {
                tracing::error!(error = %e, kind = self.kind(), "message not serializable");
                Message::Text(
                    json!({"t": "error", "error": "internal: message lost"})
                        .to_string()
                        .into(),
                )
            }
        }
    }
}

/// The hello's drawing configuration.
#[derive(Debug, Clone, Serialize)]
pub struct HelloConfig {
    pub trail_s: f64,
    pub rate_hz: f64,
    /// A track not updated for this long is drawn stale.
    pub stale_s: f64,
    pub track_timeout_s: f64,
    pub origin: Option<Point>,
    pub sites: Vec<SitePoint>,
    /// The kit's unit factors, so the page converts SI as tspi-core does.
    pub units: Value,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
    pub alt: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct SitePoint {
    pub sensor_id: u16,
    #[serde(flatten)]
    pub at: Point,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionRef {
    pub name: String,
    pub id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupRef {
    pub id: String,
    pub name: String,
}

/// A tag for the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct PageTag {
    pub id: String,
    pub comment: String,
    pub at: String,
    pub status: String,
    pub creator: Option<String>,
}

/// The cursor as the page computes it (see [`mode`]).
#[derive(Debug, Clone, Serialize)]
pub struct ModeMessage {
    pub mode: &'static str,
    pub state: tspi_core::ops::ClientState,
    pub channel_id: String,
    pub channel: Option<GroupRef>,
    pub cursor: Value,
    pub cursor_kind: &'static str,
    pub cursor_ms: i64,
    pub speed: f64,
    pub paused: bool,
    pub server_ms: i64,
    pub gen: u64,
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

pub fn settings(s: &DisplaySettings) -> ServerMessage<'static> {
    ServerMessage::Settings {
        units: s.units.as_str(),
        colour: s.marker_color.clone(),
        session: s.session.as_ref().map(|(name, id)| SessionRef {
            name: name.clone(),
            id: id.clone(),
        }),
    }
}

/// The cursor as the page computes it: live (the server's clock), a replay (anchor,
/// speed, pause, end) or a followed group replay (the newest frame's time).
pub fn mode(session: &Session, now_ms: i64, generation: u64) -> ServerMessage<'static> {
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
        } => Some(GroupRef {
            id: channel_id.clone(),
            name: display_name.clone(),
        }),
        _ => None,
    };
    ServerMessage::Mode(Box::new(ModeMessage {
        mode: session.mode().name(),
        state: session.state(),
        channel_id: session.channel_id().to_owned(),
        channel,
        cursor,
        cursor_kind: kind,
        cursor_ms: session.cursor().at(now_ms),
        speed: session.cursor().speed(),
        paused: session.cursor().paused(),
        server_ms: now_ms,
        gen: generation,
    }))
}

/// A tag for the timeline: `{id, comment, at, status, creator}`.
pub fn tag(id: &str, comment: &str, at: &str, status: &str, creator: Option<&str>) -> PageTag {
    PageTag {
        id: id.to_owned(),
        comment: comment.to_owned(),
        at: at.to_owned(),
        status: status.to_owned(),
        creator: creator.map(str::to_owned),
    }
}

/// The reply to request `id`: `result`'s fields (an object) with `ok`, or its error.
pub fn reply(id: Option<u64>, result: Result<Value, String>) -> ServerMessage<'static> {
    match result {
        Ok(v) => ServerMessage::Reply {
            id,
            ok: true,
            error: None,
            body: match v {
                Value::Object(m) => m,
                _ => Map::new(),
            },
        },
        Err(e) => ServerMessage::Reply {
            id,
            ok: false,
            error: Some(e),
            body: Map::new(),
        },
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

    /// One message of each kind.
    fn one_of_each<'a>(rows: &'a [Value], rules: &'a Value) -> Vec<ServerMessage<'a>> {
        let alarm: AlarmEvent = serde_json::from_value(json!({
            "id": "ceiling/7", "rule": "ceiling", "kind": "limit", "sensors": [7],
            "event": "raised", "level": "warning", "active": true, "value": 1.0,
            "threshold": 0.5, "unit": "m", "at_ms": 0, "at": "1970-01-01T00:00:00Z",
            "acknowledged": false, "operator": null, "shelved_until_ms": null, "seq": 1,
            "text": "ceiling"
        }))
        .unwrap();
        let tag = tag(
            "t1",
            "launch",
            "2025-09-28T11:00:00Z",
            "active",
            Some("ops"),
        );
        vec![
            ServerMessage::Hello {
                version: 1,
                client_id: "c1".into(),
                operator: None,
                server_ms: 1,
                config: HelloConfig {
                    trail_s: 60.0,
                    rate_hz: 10.0,
                    stale_s: 2.0,
                    track_timeout_s: 30.0,
                    origin: Some(Point {
                        lat: 1.0,
                        lon: 2.0,
                        alt: 3.0,
                    }),
                    sites: vec![SitePoint {
                        sensor_id: 9,
                        at: Point {
                            lat: 1.0,
                            lon: 2.0,
                            alt: 3.0,
                        },
                    }],
                    units: json!({}),
                },
            },
            settings(&DisplaySettings::default()),
            ServerMessage::Mode(Box::new(ModeMessage {
                mode: "live",
                state: tspi_core::ops::ClientState::FollowingLivestream,
                channel_id: String::new(),
                channel: None,
                cursor: json!({}),
                cursor_kind: "live",
                cursor_ms: 1,
                speed: 1.0,
                paused: false,
                server_ms: 1,
                gen: 1,
            })),
            ServerMessage::Reset { gen: 1 },
            ServerMessage::Trail { gen: 1, u: rows },
            ServerMessage::Tracks {
                gen: 1,
                seq: 1,
                u: rows,
            },
            ServerMessage::Ready {
                gen: 1,
                segment: None,
            },
            ServerMessage::Tags {
                full: true,
                tags: vec![tag.clone()],
            },
            ServerMessage::TagShown { tag },
            ServerMessage::Groups {
                active: vec![GroupRef {
                    id: "g".into(),
                    name: "G".into(),
                }],
            },
            ServerMessage::Coverage {
                start_ms: 0,
                end_ms: 1,
                bucket_ms: 1.0,
                counts: json!([1]),
            },
            ServerMessage::Clock { server_ms: 1 },
            ServerMessage::Alarms {
                full: true,
                alarms: vec![alarm.clone()],
            },
            ServerMessage::Alarm { alarm },
            ServerMessage::Overlays { rules },
            ServerMessage::Error { error: "no".into() },
            reply(Some(1), Ok(json!({"mode": "live"}))),
        ]
    }

    #[test]
    fn every_kind_is_sent_as_its_t() {
        let (rows, rules) = ([json!([1, 2])], json!([]));
        let all = one_of_each(&rows, &rules);
        let kinds: Vec<&str> = all.iter().map(ServerMessage::kind).collect();
        assert_eq!(
            kinds,
            ServerMessage::KINDS,
            "one of each kind, in KINDS' order"
        );
        for m in &all {
            let Message::Text(text) = m.frame() else {
                panic!("a text frame")
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["t"], m.kind(), "{v}");
        }
        let Message::Text(text) = reply(Some(4), Err("why".into())).frame() else {
            panic!()
        };
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"t": "reply", "id": 4, "ok": false, "error": "why"})
        );
        let Message::Text(text) = reply(None, Ok(json!({"segment": 2}))).frame() else {
            panic!()
        };
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"t": "reply", "id": null, "ok": true, "segment": 2})
        );
    }

    /// SPEC §5's list of server messages, and the page's handlers, are these kinds.
    #[test]
    fn spec_and_page_know_every_kind() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let spec = std::fs::read_to_string(format!("{root}/docs/SPEC.md")).unwrap();
        let from = spec
            .find("The server sends `{\"t\": kind, …}` messages of these kinds")
            .expect("SPEC §5's list of server messages");
        let listed: Vec<&str> = spec[from..]
            .lines()
            .skip_while(|l| !l.starts_with("- `"))
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.strip_prefix("- `"))
            .map(|l| l.split(['`', ' ']).next().unwrap_or_default())
            .collect();
        assert_eq!(listed, ServerMessage::KINDS, "SPEC §5 server messages");
        let js = ["store.js", "socket.js"]
            .iter()
            .map(|f| std::fs::read_to_string(format!("{root}/bins/player/web/js/{f}")).unwrap())
            .collect::<String>();
        for kind in ServerMessage::KINDS {
            assert!(
                js.contains(&format!("case '{kind}'"))
                    || js.contains(&format!("msg.t === '{kind}'")),
                "the page does not handle {kind:?}"
            );
        }
    }
}
