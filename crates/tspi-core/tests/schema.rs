//! The shipped JSON Schema (docs/telemetry.schema.json) accepts what we produce and
//! rejects what breaks the contract, so it can be trusted by other clients and by the
//! end-to-end test that validates receiver output against it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use serde_json::{json, Value};
use tspi_core::{decode, TelemetryRecord};

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(include_str!("../../../docs/telemetry.schema.json")).unwrap();
    jsonschema::draft202012::new(&schema).unwrap()
}

fn sample(hex: &str) -> Value {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let rec = TelemetryRecord::from_datagram(&decode(&bytes).unwrap(), 1_759_057_200_123);
    serde_json::to_value(rec).unwrap()
}

#[test]
fn produced_records_are_valid() {
    let v = validator();
    let geo = sample("c104006500c800002710ff00010001e240fff6040f000f424009c4f63c01f4000afff60000");
    let sph = sample("c20400ca002d000013880f00010016e36002aea54000bebc200064ff9c00fa0001ffff0000");
    for doc in [&geo, &sph] {
        let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
}

#[test]
fn contract_breaks_are_rejected() {
    let v = validator();
    let good = sample("c104006500c800002710ff00010001e240fff6040f000f424009c4f63c01f4000afff60000");
    let mut extra = good.clone();
    extra["time_ticks"] = json!(10000);
    let mut wrong_payload = good.clone();
    wrong_payload["type"] = json!("spherical");
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("recv_iso");
    let mut bad_day = good.clone();
    bad_day["day"] = json!(0);
    for doc in [extra, wrong_payload, missing, bad_day] {
        assert!(!v.is_valid(&doc), "accepted {doc}");
    }
}
