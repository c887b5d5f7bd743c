//! The record's CBOR decoder: the fast path (`from_cbor`) and the general serde path must
//! agree on every input, accepted or refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tspi_core::TelemetryRecord;

fuzz_target!(|bytes: &[u8]| {
    let fast = TelemetryRecord::from_cbor(bytes);
    let general = TelemetryRecord::from_cbor_general(bytes);
    match (&fast, &general) {
        (Ok(a), Ok(b)) => assert_eq!(a.to_cbor(), b.to_cbor(), "both paths read the same record"),
        (Err(_), Err(_)) => {}
        _ => panic!("paths disagree: fast {fast:?}, general {general:?}"),
    }
    if let Ok(record) = fast {
        let mut json = Vec::new();
        record.write_json(&mut json);
        serde_json::from_slice::<serde_json::Value>(&json).expect("a record's JSON line parses");
    }
});
