//! Inputs the fuzz targets of `fuzz/` once crashed on, kept as regression tests: each must
//! now give an error or a value, never a panic or a stack overflow.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

/// 823 nested one-element arrays (`0x81…`), found by the `cbor_to_json` target: a stack
/// overflow in the fuzz build.
#[test]
fn cbor_to_json_deep_arrays() {
    let bytes = include_bytes!("fuzz_regressions/cbor_to_json-deep-arrays.cbor");
    let _ = tspi_core::json::cbor_to_json(bytes);
    let _ = tspi_core::TelemetryRecord::from_cbor(bytes);
}

/// The same shape at every depth around the limit: the JSON form of what is accepted
/// parses back with serde_json (whose limit is 128 levels); deeper is refused.
#[test]
fn cbor_to_json_output_always_parses_back() {
    for levels in [1, 63, 64, 65, 127, 128, 129, 200, 255] {
        let mut bytes = vec![0x81; levels];
        bytes.push(0x00);
        match tspi_core::json::cbor_to_json(&bytes) {
            Ok(json) => {
                assert!(
                    levels <= tspi_core::json::MAX_NESTING,
                    "{levels} levels accepted"
                );
                let text = serde_json::to_string(&json).unwrap();
                serde_json::from_str::<serde_json::Value>(&text)
                    .unwrap_or_else(|e| panic!("{levels} levels: {e}"));
            }
            Err(e) => assert!(levels > tspi_core::json::MAX_NESTING, "{levels}: {e}"),
        }
    }
}

/// A tag whose `extra` nests too deep is refused as a whole, with a reason.
#[test]
fn tag_extra_nested_too_deep_is_refused() {
    let mut extra = serde_json::json!(0);
    for _ in 0..100 {
        extra = serde_json::json!([extra]);
    }
    let mut cbor = Vec::new();
    let tag = serde_json::json!({
        "id": "t1", "ts": "2025-09-28T11:00:00.000Z", "label": "deep", "status": "active",
        "updated_ts": "2025-09-28T11:00:00.000Z", "extra": extra,
    });
    ciborium::into_writer(&tag, &mut cbor).unwrap();
    let err = tspi_core::Tag::from_cbor(&cbor).unwrap_err();
    assert!(err.to_string().contains("levels"), "{err}");
}

/// 350 bytes with maps as keys of maps 33 levels deep, found by the `cbor_to_json` target:
/// each level's key text escaped the one inside it again, 2 GiB before the fix. Now
/// refused, in bounded memory.
#[test]
fn cbor_to_json_keys_in_keys() {
    let bytes = include_bytes!("fuzz_regressions/cbor_to_json-keys-in-keys.cbor");
    assert!(tspi_core::json::cbor_to_json(bytes).is_err());
    let _ = tspi_core::TelemetryRecord::from_cbor(bytes);
    // Within the limit, keys in keys still convert.
    // Maps of one entry whose key is the next map, finally `1: 2`, each level's value 0.
    let levels = tspi_core::json::MAX_KEY_NESTING;
    let mut nested_keys = vec![0xa1; levels];
    nested_keys.extend_from_slice(&[0x01, 0x02]);
    nested_keys.extend(std::iter::repeat_n(0x00, levels));
    let json = tspi_core::json::cbor_to_json(&nested_keys[..]);
    assert!(json.is_ok(), "{json:?}");
}
