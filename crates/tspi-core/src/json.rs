//! Any CBOR item as JSON, following RFC 8949 §6.1, for what the kit stores or prints
//! without knowing its shape (a command's or tag's generic form, a tag's `extra`).
//!
//! Other encoders write things serde's JSON model has no place for: tagged items (a Python
//! `datetime` becomes tag 0 around its RFC 3339 text), byte strings, non-text map keys,
//! NaN, integers beyond 64 bits. Decoding straight into `serde_json::Value` refuses all of
//! them; here each has a JSON form, so such a message is stored and shown, not rejected.

use ciborium::Value as Cbor;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value as Json};

/// Deepest nesting of arrays and maps a converted item may have. serde_json refuses to
/// parse more than 128 levels, so an item nested deeper (the CBOR decoder allows 256)
/// would turn into JSON that the kit's own readers, and many others, cannot read back;
/// the `cbor_to_json` fuzz target found that. 64 is far beyond any real message.
pub const MAX_NESTING: usize = 64;

/// Decode one CBOR item (untrusted bytes) and convert it. Refuses items nested deeper
/// than [`MAX_NESTING`].
pub fn cbor_to_json(bytes: &[u8]) -> Result<Json, String> {
    let value: Cbor = ciborium::from_reader(bytes).map_err(|e| format!("not CBOR: {e}"))?;
    check_nesting(&value)?;
    Ok(to_json(value))
}

/// How deep non-text map keys may sit inside non-text map keys. Each such key becomes the
/// JSON text of its converted form, and every level escapes the quotes and backslashes of
/// the one inside it again: the text doubles per level, so 33 levels in a 350-byte
/// message took 2 GiB (found by the `cbor_to_json` fuzz target).
pub const MAX_KEY_NESTING: usize = 4;

/// `Err` if arrays and maps (through tags) nest deeper than [`MAX_NESTING`], or non-text
/// map keys inside non-text map keys deeper than [`MAX_KEY_NESTING`].
pub fn check_nesting(value: &Cbor) -> Result<(), String> {
    /// (levels of arrays and maps, levels of non-text keys within keys)
    fn measure(value: &Cbor) -> (usize, usize) {
        match value {
            Cbor::Array(items) => items
                .iter()
                .map(measure)
                .fold((1, 0), |(n, k), (m, j)| (n.max(m + 1), k.max(j))),
            Cbor::Map(entries) => entries.iter().fold((1, 0), |(n, k), (key, v)| {
                let key_levels = match key {
                    Cbor::Text(_) => 0,
                    other => 1 + measure(other).1,
                };
                let (m, j) = measure(v);
                (n.max(m + 1), k.max(j).max(key_levels))
            }),
            Cbor::Tag(_, inner) => measure(inner),
            _ => (0, 0),
        }
    }
    // The decoder's own limit (256 levels) bounds this recursion.
    let (levels, key_levels) = measure(value);
    if levels > MAX_NESTING {
        return Err(format!(
            "nested {levels} levels deep; at most {MAX_NESTING} are accepted"
        ));
    }
    if key_levels > MAX_KEY_NESTING {
        return Err(format!(
            "map keys that are not text nested {key_levels} levels deep; at most \
             {MAX_KEY_NESTING} are accepted"
        ));
    }
    Ok(())
}

/// RFC 8949 §6.1: a tag converts as its content (tags 21–23 say how to encode a byte
/// string inside them), except tag 1, an epoch time, which becomes RFC 3339 text (UTC,
/// milliseconds; left a number outside 1970..=9999); byte strings become base64url without padding; NaN and the
/// infinities become null, as does `undefined` (unassigned simple values are refused by the
/// decoder); an integer that
/// does not fit 64 bits becomes its decimal text; a map key that is not text becomes the
/// JSON text of its converted form.
pub fn to_json(value: Cbor) -> Json {
    match value {
        Cbor::Integer(i) => {
            let wide = i128::from(i);
            if let Ok(v) = i64::try_from(wide) {
                Json::from(v)
            } else if let Ok(v) = u64::try_from(wide) {
                Json::from(v)
            } else {
                Json::String(wide.to_string())
            }
        }
        Cbor::Float(f) => Number::from_f64(f).map_or(Json::Null, Json::Number),
        Cbor::Text(s) => Json::String(s),
        Cbor::Bool(b) => Json::Bool(b),
        Cbor::Null => Json::Null,
        Cbor::Bytes(b) => Json::String(base64url(&b)),
        Cbor::Tag(tag, inner) => match (tag, *inner) {
            // Epoch-based date/time (what JavaScript encoders write for a Date): the kit's
            // times are RFC 3339 text, so it becomes that, to the millisecond.
            (1, inner) => epoch_text(&inner).unwrap_or_else(|| to_json(inner)),
            (22, Cbor::Bytes(b)) => Json::String(base64(&b)),
            (23, Cbor::Bytes(b)) => Json::String(hex(&b)),
            (_, inner) => to_json(inner),
        },
        Cbor::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Cbor::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (k, v) in entries {
                let key = match to_json(k) {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                map.insert(key, to_json(v));
            }
            Json::Object(map)
        }
        // `undefined` and the other simple values have no JSON counterpart.
        _ => Json::Null,
    }
}

fn epoch_text(seconds: &Cbor) -> Option<Json> {
    let seconds = match seconds {
        Cbor::Integer(i) => i128::from(*i) as f64,
        Cbor::Float(f) => *f,
        _ => return None,
    };
    let ms = (seconds * 1000.0).round();
    (ms.is_finite() && (0.0..=crate::record::MAX_EPOCH_MS as f64).contains(&ms))
        .then(|| Json::String(crate::rfc3339::format_utc_millis(ms as i64)))
}

/// `deserialize_with` for a free-form JSON field read from CBOR (or from JSON): goes
/// through [`ciborium::Value`], so tagged items and byte strings convert as [`to_json`]
/// says instead of failing the whole message.
pub fn deserialize_free_form<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Json>, D::Error> {
    match Option::<Cbor>::deserialize(d)? {
        Some(value) => {
            check_nesting(&value).map_err(serde::de::Error::custom)?;
            Ok(Some(to_json(value)))
        }
        None => Ok(None),
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        if pad {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn base64url(bytes: &[u8]) -> String {
    encode64(bytes, BASE64URL, false)
}

fn base64(bytes: &[u8]) -> String {
    encode64(bytes, BASE64, true)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cbor(v: &Cbor) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    }

    #[test]
    fn rfc4648_test_vectors() {
        for (input, b64, b64url) in [
            ("", "", ""),
            ("f", "Zg==", "Zg"),
            ("fo", "Zm8=", "Zm8"),
            ("foo", "Zm9v", "Zm9v"),
            ("foob", "Zm9vYg==", "Zm9vYg"),
            ("fooba", "Zm9vYmE=", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), b64);
            assert_eq!(base64url(input.as_bytes()), b64url);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }

    #[test]
    fn what_serde_json_value_refuses_converts() {
        // What cbor2 writes for {"ts": datetime(...), "blob": b"\x01\x02", 1: NaN, ...}.
        let v = Cbor::Map(vec![
            (
                Cbor::Text("ts".into()),
                Cbor::Tag(0, Box::new(Cbor::Text("2026-11-29T09:00:00+00:00".into()))),
            ),
            (
                Cbor::Text("epoch".into()),
                Cbor::Tag(1, Box::new(Cbor::Float(1_795_945_182.958))),
            ),
            (
                Cbor::Text("epoch_int".into()),
                Cbor::Tag(1, Box::new(Cbor::Integer(0.into()))),
            ),
            (
                Cbor::Text("before_1970".into()),
                Cbor::Tag(1, Box::new(Cbor::Integer((-1).into()))),
            ),
            (Cbor::Text("blob".into()), Cbor::Bytes(vec![1, 2, 0xff])),
            (
                Cbor::Text("b16".into()),
                Cbor::Tag(23, Box::new(Cbor::Bytes(vec![0xca, 0xfe]))),
            ),
            (
                Cbor::Text("b64".into()),
                Cbor::Tag(22, Box::new(Cbor::Bytes(vec![0xfb, 0xff]))),
            ),
            (Cbor::Integer(1.into()), Cbor::Float(f64::NAN)),
            (Cbor::Bool(true), Cbor::Float(f64::INFINITY)),
            (Cbor::Text("big".into()), Cbor::Integer(u64::MAX.into())),
            (Cbor::Text("neg".into()), Cbor::Integer((-5i64).into())),
            (
                Cbor::Text("list".into()),
                Cbor::Array(vec![Cbor::Null, Cbor::Bool(false), Cbor::Text("x".into())]),
            ),
        ]);
        assert!(ciborium::from_reader::<Json, _>(&cbor(&v)[..]).is_err());
        assert_eq!(
            cbor_to_json(&cbor(&v)).unwrap(),
            json!({
                "ts": "2026-11-29T09:00:00+00:00",
                "epoch": "2026-11-29T09:39:42.958Z",
                "epoch_int": "1970-01-01T00:00:00.000Z",
                "before_1970": -1,
                "blob": "AQL_",
                "b16": "cafe",
                "b64": "+/8=",
                "1": null,
                "true": null,
                "big": u64::MAX,
                "neg": -5,
                "list": [null, false, "x"],
            })
        );
    }

    #[test]
    fn integers_beyond_64_bits_and_simple_values() {
        // -2^64 (major type 1, argument 2^64 - 1): no i64 or u64 holds it.
        let bytes = [0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            cbor_to_json(&bytes).unwrap(),
            json!("-18446744073709551616")
        );
        assert_eq!(cbor_to_json(&[0xf7]).unwrap(), Json::Null, "undefined");
        // Unassigned simple values: the decoder refuses them, as an error.
        assert!(cbor_to_json(&[0xf0]).is_err(), "simple(16)");
    }

    #[test]
    fn indefinite_lengths_and_garbage() {
        // {_ "a": [_ 1, 2], "b": (_ "x", "y")}
        let bytes = [
            0xbf, 0x61, b'a', 0x9f, 0x01, 0x02, 0xff, 0x61, b'b', 0x7f, 0x61, b'x', 0x61, b'y',
            0xff, 0xff,
        ];
        assert_eq!(
            cbor_to_json(&bytes).unwrap(),
            json!({"a": [1, 2], "b": "xy"})
        );
        for garbage in [
            &[][..],
            &[0xa1, 0x61],
            &[0x1c],
            &[0x5f, 0x01, 0xff],
            &[0xff],
        ] {
            assert!(cbor_to_json(garbage).is_err(), "{garbage:02x?}");
        }
    }

    #[test]
    fn free_form_fields_accept_tags_from_cbor_and_plain_json() {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(default, deserialize_with = "deserialize_free_form")]
            extra: Option<Json>,
        }
        let v = Cbor::Map(vec![(
            Cbor::Text("extra".into()),
            Cbor::Map(vec![(
                Cbor::Text("at".into()),
                Cbor::Tag(0, Box::new(Cbor::Text("2026-11-29T09:00:00Z".into()))),
            )]),
        )]);
        let h: Holder = ciborium::from_reader(&cbor(&v)[..]).unwrap();
        assert_eq!(h.extra, Some(json!({"at": "2026-11-29T09:00:00Z"})));
        let h: Holder = serde_json::from_str(r#"{"extra": {"n": [1, 2.5, "x"]}}"#).unwrap();
        assert_eq!(h.extra, Some(json!({"n": [1, 2.5, "x"]})));
        let h: Holder = serde_json::from_str("{}").unwrap();
        assert_eq!(h.extra, None);
    }
}
