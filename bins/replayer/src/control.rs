//! The `player.<room>.ctrl` request-reply protocol of `replayer serve`.
//!
//! Requests are maps — JSON text (`nats req player.r1.ctrl '{"op":"pause"}'`) or CBOR like
//! every other payload on the bus; the reply uses the request's encoding:
//! `{"op":"play","start":T,"end":T}` or `{"op":"play","tag":ID,"window":S}` (plus optional
//! `"speed"`, `"clock"`), `{"op":"pause"}`, `{"op":"resume"}`, `{"op":"seek","to":T}` or
//! `{"op":"seek","tag":ID}`, `{"op":"speed","speed":X}`, `{"op":"stop"}`, `{"op":"status"}`.
//! `play` and `seek` also take `"segment"` (the number the segment's messages and markers
//! carry) and `"snapshot":{"trail":S,"lookback":S}` (the picture at the start: each track's
//! last record and its trail); `play` takes `"paused":true`.
//! Archive questions (answered without a session): `{"op":"coverage","start":T,"end":T,
//! "buckets":N}` → `"coverage":{…,"counts":[…]}`; `{"op":"tags","start":T,"end":T}` →
//! `"tags":[…]`.
//! Exports (a window as a file, pulled in chunks; `crate::serve_export`):
//! `{"op":"export","start":T,"end":T | "tag":ID,"before":S,"after":S,"format":F,
//! "sensors":[…],"clock":C,"origin":"LAT,LON,ALT","sites":["ID=LAT,LON,ALT"],"step":S}` →
//! `"export":{"id","format","content_type","filename"}`; then `{"op":"export_next","id":…}`
//! until a reply says `Tspi-Export-State: done`.
//! Reply: `{"ok":true,"status":{…}}` or `{"ok":false,"error":"…"}`.

use serde::Serialize;

use crate::session::{Clock, SessionStatus};

pub use tspi_core::playout::{ControlRequest as Request, ExportRequest, SnapshotRequest};

/// Longest trail or lookback a snapshot covers.
pub const SNAPSHOT_MAX_S: f64 = 3_600.0;
/// Most trail points per track in a snapshot.
pub const SNAPSHOT_POINTS: f64 = 60.0;
/// Most coverage buckets and tags in one reply (a reply must fit a NATS message).
pub const MAX_BUCKETS: u32 = 4_000;
pub const MAX_TAGS: u32 = 2_000;

/// What a [`SnapshotRequest`] asks of the store.
pub trait SnapshotPicture {
    /// The store's picture spec at `at`, checked: trail and lookback within an hour.
    fn picture(&self, at: time::OffsetDateTime) -> Result<tspi_store::PictureSpec, String>;
}

impl SnapshotPicture for SnapshotRequest {
    fn picture(&self, at: time::OffsetDateTime) -> Result<tspi_store::PictureSpec, String> {
        let ok = |v: f64| v.is_finite() && (0.0..=SNAPSHOT_MAX_S).contains(&v);
        let lookback = self.lookback.unwrap_or(self.trail.max(60.0));
        if !ok(self.trail) || !ok(lookback) {
            return Err(format!(
                "snapshot trail and lookback must be 0 to {SNAPSHOT_MAX_S} seconds"
            ));
        }
        let trail = std::time::Duration::from_secs_f64(self.trail);
        Ok(tspi_store::PictureSpec {
            at,
            lookback: std::time::Duration::from_secs_f64(lookback),
            trail,
            step: std::time::Duration::from_secs_f64((self.trail / SNAPSHOT_POINTS).max(0.1)),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Cbor,
}

/// Decode a request; JSON when it starts with `{` (after whitespace), CBOR otherwise.
pub fn decode(bytes: &[u8]) -> (Encoding, Result<Request, String>) {
    let json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if json {
        (
            Encoding::Json,
            serde_json::from_slice(bytes).map_err(|e| format!("bad request: {e}")),
        )
    } else {
        // Through the JSON form: a datetime written as tag 0 reads as its text.
        let request = tspi_core::json::cbor_to_json(bytes)
            .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
            .map_err(|e| format!("bad request: {e}"));
        (Encoding::Cbor, request)
    }
}

/// Where the archive holds data: telemetry messages per bucket.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    pub start: String,
    pub end: String,
    pub bucket_s: f64,
    pub counts: Vec<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<SessionStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<tspi_store::TagSummary>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<crate::serve_export::Started>,
}

impl Reply {
    pub fn ok(status: Option<SessionStatus>) -> Self {
        Reply {
            ok: true,
            status,
            ..Default::default()
        }
    }

    pub fn error(e: impl Into<String>) -> Self {
        Reply {
            ok: false,
            error: Some(e.into()),
            ..Default::default()
        }
    }

    pub fn encode(&self, encoding: Encoding) -> Vec<u8> {
        match encoding {
            Encoding::Json => serde_json::to_vec(self).unwrap_or_default(),
            Encoding::Cbor => {
                let mut out = Vec::new();
                let _ = ciborium::into_writer(self, &mut out);
                out
            }
        }
    }
}

/// A room name is one subject token: letters, digits, `-` and `_`.
pub fn check_room(room: &str) -> Result<(), String> {
    if room.is_empty()
        || room.len() > 64
        || !room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "room {room:?} must be 1-64 letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

/// A speed is a positive, finite factor up to 1000.
pub fn check_speed(speed: f64) -> Result<f64, String> {
    if speed.is_finite() && speed > 0.0 && speed <= 1000.0 {
        Ok(speed)
    } else {
        Err(format!("speed {speed} must be > 0 and ≤ 1000"))
    }
}

pub fn parse_clock(clock: Option<&str>) -> Result<Clock, String> {
    clock.map_or(Ok(Clock::Receive), str::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_cbor_requests_decode_alike() {
        let (enc, req) = decode(br#" {"op":"seek","to":"2025-09-28T11:00:00Z"}"#);
        assert_eq!(enc, Encoding::Json);
        let req = req.unwrap();
        let mut cbor = Vec::new();
        ciborium::into_writer(
            &serde_json::json!({"op": "seek", "to": "2025-09-28T11:00:00Z"}),
            &mut cbor,
        )
        .unwrap();
        let (enc, again) = decode(&cbor);
        assert_eq!(enc, Encoding::Cbor);
        assert_eq!(again.unwrap(), req);
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        for bad in [&b""[..], b"{", b"{\"op\":\"fly\"}", b"\xff\xfe"] {
            assert!(decode(bad).1.is_err(), "{bad:?}");
        }
        assert!(check_room("r1").is_ok());
        assert!(check_room("a.b").is_err());
        assert!(check_room("").is_err());
        assert!(check_speed(0.0).is_err());
        assert!(check_speed(f64::NAN).is_err());
        assert!(check_speed(10.0).is_ok());
        assert!(parse_clock(Some("wall")).is_err());
    }

    #[test]
    fn foreign_cbor_requests_decode() {
        // What cbor2 or a JavaScript encoder writes: integral numbers as integers, a
        // datetime as tag 0 around its text.
        use ciborium::Value as V;
        let cbor = |fields: Vec<(&str, V)>| {
            let map = fields
                .into_iter()
                .map(|(k, v)| (V::Text(k.into()), v))
                .collect();
            let mut out = Vec::new();
            ciborium::into_writer(&V::Map(map), &mut out).unwrap();
            out
        };
        let speed = cbor(vec![
            ("op", V::Text("speed".into())),
            ("speed", V::Integer(2.into())),
        ]);
        assert_eq!(decode(&speed).1.unwrap(), Request::Speed { speed: 2.0 });
        let play = cbor(vec![
            ("op", V::Text("play".into())),
            ("tag", V::Text("t1".into())),
            ("window", V::Integer(30.into())),
        ]);
        assert!(matches!(
            decode(&play).1.unwrap(),
            Request::Play { window: Some(w), .. } if w == 30.0
        ));
        let seek = cbor(vec![
            ("op", V::Text("seek".into())),
            (
                "to",
                V::Tag(0, Box::new(V::Text("2025-09-28T11:00:00+00:00".into()))),
            ),
        ]);
        assert_eq!(
            decode(&seek).1.unwrap(),
            Request::Seek {
                to: Some("2025-09-28T11:00:00+00:00".into()),
                tag: None,
                segment: None,
                snapshot: None,
            }
        );
    }

    #[test]
    fn display_requests_decode_and_snapshots_are_bounded() {
        let (_, req) = decode(
            br#"{"op":"play","start":"a","end":"b","paused":true,"segment":3,"snapshot":{"trail":60}}"#,
        );
        let Request::Play {
            paused,
            segment,
            snapshot,
            ..
        } = req.unwrap()
        else {
            panic!("not play")
        };
        assert_eq!((paused, segment), (Some(true), Some(3)));
        let at = time::OffsetDateTime::UNIX_EPOCH;
        let spec = snapshot.unwrap().picture(at).unwrap();
        assert_eq!(spec.trail.as_secs(), 60);
        assert_eq!(
            spec.lookback.as_secs(),
            60,
            "lookback defaults to the trail (≥ 60 s)"
        );
        assert_eq!(spec.step.as_millis(), 1000, "60 points a trail");
        for bad in [-1.0, f64::NAN, 3_601.0] {
            let r = SnapshotRequest {
                trail: bad,
                lookback: None,
            };
            assert!(r.picture(at).is_err(), "{bad}");
        }
        assert!(matches!(
            decode(br#"{"op":"coverage","start":"a","end":"b","buckets":5}"#).1,
            Ok(Request::Coverage {
                buckets: Some(5),
                ..
            })
        ));
        assert!(matches!(
            decode(br#"{"op":"tags","start":"a","end":"b"}"#).1,
            Ok(Request::Tags { limit: None, .. })
        ));
        assert!(decode(br#"{"op":"coverage","start":"a"}"#).1.is_err());
    }
}
