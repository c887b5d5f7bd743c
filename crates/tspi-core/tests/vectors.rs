//! The reference vectors of `testdata/tspi_vectors.json` (copied from shared/vectors):
//! every valid case decodes to the expected fields (floats within 1e-9), every invalid
//! case fails with the expected message.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use serde_json::Value;
use tspi_core::{decode, msg_id, StreamPrefix, TelemetryRecord};

fn cases() -> Vec<Value> {
    let text = include_str!("../testdata/tspi_vectors.json");
    let doc: Value = serde_json::from_str(text).expect("vectors file is JSON");
    doc["cases"].as_array().expect("cases array").clone()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn assert_close(name: &str, field: &str, got: &Value, want: &Value) {
    let (g, w) = (got.as_f64().unwrap(), want.as_f64().unwrap());
    assert!((g - w).abs() <= 1e-9, "{name}: {field} = {g}, expected {w}");
}

#[test]
fn every_reference_vector() {
    let cases = cases();
    assert!(cases.len() >= 50, "vectors file looks truncated");
    let prefix = StreamPrefix::default();
    let (mut valid, mut invalid) = (0, 0);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let bytes = hex(case["hex"].as_str().unwrap());
        let result = decode(&bytes);
        if case["ok"].as_bool().unwrap() {
            valid += 1;
            let d = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            let exp = &case["expected"];
            let rec = TelemetryRecord::from_datagram(&d, 0);
            let got = serde_json::to_value(&rec).unwrap();
            for key in ["type", "sensor_id", "day", "status", "status_flags"] {
                assert_eq!(got[key], exp[key], "{name}: {key}");
            }
            assert_close(name, "time_s", &got["time_s"], &exp["time_s"]);
            assert_eq!(u64::from(d.time_ticks), exp["time_ticks"].as_u64().unwrap());
            let got_payload = got["payload"].as_object().unwrap();
            let exp_payload = exp["payload"].as_object().unwrap();
            assert_eq!(
                got_payload.len(),
                exp_payload.len(),
                "{name}: payload fields"
            );
            for (k, v) in exp_payload {
                assert_close(name, k, &got_payload[k], v);
            }
            assert_eq!(msg_id(&d), exp["dedup_id"].as_str().unwrap(), "{name}");
            assert_eq!(
                prefix.subject(d.kind(), d.sensor_id),
                exp["subject"].as_str().unwrap(),
                "{name}"
            );
            assert_eq!(d.encode().as_slice(), bytes.as_slice(), "{name}: re-encode");
        } else {
            invalid += 1;
            let err = result.expect_err(name);
            assert_eq!(err.to_string(), case["error"].as_str().unwrap(), "{name}");
        }
    }
    assert!(valid > 0 && invalid > 0);
}
