//! Operations messages (SPEC §3): client heartbeats on `tspi.ops.status`, group replay
//! control on `tspi.ops.ctrl`, and the channel directory.

use serde::{Deserialize, Serialize};

pub const STATUS_SUBJECT: &str = "tspi.ops.status";
pub const CTRL_SUBJECT: &str = "tspi.ops.ctrl";
pub const LIVESTREAM_SUBJECT: &str = "tspi.channel.livestream";
pub const CHANNEL_LIST_SUBJECT: &str = "tspi.channel.list.req";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientState {
    FollowingLivestream,
    FollowingGroupReplay,
    FollowingPrivateReplay,
    LiveOverride,
}

/// A client heartbeat: sent on every channel change and every 5 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub client_id: String,
    pub state: ClientState,
    pub channel_id: String,
    pub subject: String,
    #[serde(rename = "override")]
    pub live_override: bool,
    /// RFC 3339.
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_ms: Option<f64>,
}

/// `tspi.ops.ctrl` messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OpsControl {
    GroupReplayStart {
        channel_id: String,
        display_name: String,
        identifier: String,
        stream: String,
    },
    GroupReplayStop {
        channel_id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Livestream,
    GroupReplay,
    PrivateReplay,
}

/// One entry of the channel directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub channel_id: String,
    pub subject: String,
    pub display_name: String,
    pub kind: ChannelKind,
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
}

impl ChannelInfo {
    pub fn livestream() -> Self {
        ChannelInfo {
            channel_id: "livestream".into(),
            subject: LIVESTREAM_SUBJECT.into(),
            display_name: "Live".into(),
            kind: ChannelKind::Livestream,
            stream: "TSPI".into(),
            identifier: None,
        }
    }
}

/// The channel slug of a group replay identifier (SPEC §3): an RFC 3339 time becomes
/// `20250928T110000Z`; anything else lower-case with non-alphanumerics as `-`.
pub fn slug(identifier: &str) -> String {
    if let Some(ms) = crate::rfc3339::parse_epoch_ms(identifier) {
        let iso = crate::rfc3339::format_utc_millis(ms.div_euclid(1000) * 1000);
        // 2025-09-28T11:00:00.000Z → 20250928T110000Z
        return iso[..19].replace(['-', ':'], "") + "Z";
    }
    let mut out = String::with_capacity(identifier.len());
    for c in identifier.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// Encode any of these as CBOR (writing into a Vec cannot fail for them).
pub fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let _ = ciborium::into_writer(value, &mut out);
    out
}

/// Decode untrusted CBOR (or JSON, when it starts with `{`). CBOR goes through its JSON
/// form ([`crate::json`]), so what other encoders write — a datetime as tag 0, 12.0 as the
/// integer 12 — reads like the kit's own.
pub fn from_bytes<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    } else {
        serde_json::from_value(crate::json::cbor_to_json(bytes)?).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_spec() {
        assert_eq!(slug("2025-09-28T11:00:00Z"), "20250928T110000Z");
        assert_eq!(slug("2025-09-28T13:00:00.250+02:00"), "20250928T110000Z");
        assert_eq!(slug("Sortie 7 / Blue Flight"), "sortie-7-blue-flight");
        assert_eq!(slug("  --x--  "), "x");
    }

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let hb = Heartbeat {
            client_id: "p1".into(),
            state: ClientState::FollowingGroupReplay,
            channel_id: "20250928T110000Z".into(),
            subject: "tspi.channel.replay.20250928T110000Z".into(),
            live_override: false,
            ts: "2025-09-28T11:00:00.000Z".into(),
            operator: Some("ops".into()),
            source_ip: None,
            ping_ms: Some(1.5),
        };
        assert_eq!(from_bytes::<Heartbeat>(&to_cbor(&hb)).unwrap(), hb);
        let json = serde_json::to_vec(&hb).unwrap();
        assert!(String::from_utf8_lossy(&json).contains("\"state\":\"FOLLOWING_GROUP_REPLAY\""));
        assert!(String::from_utf8_lossy(&json).contains("\"override\":false"));
        let ctrl = OpsControl::GroupReplayStop {
            channel_id: "x".into(),
        };
        let v: serde_json::Value = ciborium::from_reader(&to_cbor(&ctrl)[..]).unwrap();
        assert_eq!(v["type"], "GroupReplayStop");
        assert!(from_bytes::<Heartbeat>(b"\xff\x00").is_err());
    }

    #[test]
    fn foreign_heartbeats_with_integer_ping_and_tagged_time_are_read() {
        // What cbor2 (ts: datetime → tag 0) or a JavaScript encoder (12.0 → 12) writes.
        use ciborium::Value as V;
        let text = |s: &str| V::Text(s.into());
        let heartbeat = |ping: V| {
            let mut fields = vec![
                (text("client_id"), text("js-1")),
                (text("state"), text("FOLLOWING_LIVESTREAM")),
                (text("channel_id"), text("livestream")),
                (text("subject"), text("tspi.channel.livestream")),
                (text("override"), V::Bool(false)),
                (
                    text("ts"),
                    V::Tag(0, Box::new(text("2026-11-29T09:00:00+00:00"))),
                ),
            ];
            fields.push((text("ping_ms"), ping));
            let mut out = Vec::new();
            ciborium::into_writer(&V::Map(fields), &mut out).unwrap();
            from_bytes::<Heartbeat>(&out)
        };
        let hb = heartbeat(V::Integer(12.into())).unwrap();
        assert_eq!(
            (hb.ping_ms, hb.ts.as_str()),
            (Some(12.0), "2026-11-29T09:00:00+00:00")
        );
        assert_eq!(heartbeat(V::Float(0.5)).unwrap().ping_ms, Some(0.5));
        assert_eq!(heartbeat(V::Null).unwrap().ping_ms, None);
        assert!(heartbeat(text("fast")).is_err());
        let json = br#"{"client_id":"a","state":"LIVE_OVERRIDE","channel_id":"livestream",
            "subject":"tspi.channel.livestream","override":true,"ts":"2026-11-29T09:00:00Z","ping_ms":7}"#;
        assert_eq!(from_bytes::<Heartbeat>(json).unwrap().ping_ms, Some(7.0));
    }
}
