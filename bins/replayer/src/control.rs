//! The `player.<room>.ctrl` request-reply protocol of `replayer serve`.
//!
//! Requests are maps — JSON text (`nats req player.r1.ctrl '{"op":"pause"}'`) or CBOR like
//! every other payload on the bus; the reply uses the request's encoding:
//! `{"op":"play","start":T,"end":T}` or `{"op":"play","tag":ID,"window":S}` (plus optional
//! `"speed"`, `"clock"`), `{"op":"pause"}`, `{"op":"resume"}`, `{"op":"seek","to":T}` or
//! `{"op":"seek","tag":ID}`, `{"op":"speed","speed":X}`, `{"op":"stop"}`, `{"op":"status"}`.
//! Reply: `{"ok":true,"status":{…}}` or `{"ok":false,"error":"…"}`.

use serde::{Deserialize, Serialize};

use crate::session::{Clock, SessionStatus};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Play {
        #[serde(default)]
        start: Option<String>,
        #[serde(default)]
        end: Option<String>,
        #[serde(default)]
        tag: Option<String>,
        /// Seconds around the tag.
        #[serde(default)]
        window: Option<f64>,
        #[serde(default)]
        speed: Option<f64>,
        #[serde(default)]
        clock: Option<String>,
    },
    Pause,
    Resume,
    Seek {
        #[serde(default)]
        to: Option<String>,
        #[serde(default)]
        tag: Option<String>,
    },
    Speed {
        speed: f64,
    },
    Stop,
    Status,
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

#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<SessionStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn ok(status: Option<SessionStatus>) -> Self {
        Reply {
            ok: true,
            status,
            error: None,
        }
    }

    pub fn error(e: impl Into<String>) -> Self {
        Reply {
            ok: false,
            status: None,
            error: Some(e.into()),
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
                tag: None
            }
        );
    }
}
