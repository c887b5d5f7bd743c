//! `cbor_to_json` (archiver, console, replayer requests) on arbitrary bytes: deep nesting,
//! huge length prefixes and odd tags give an error, never a panic or an unbounded
//! allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(json) = tspi_core::json::cbor_to_json(bytes) {
        let text = serde_json::to_string(&json).expect("the JSON form serialises");
        let _: serde_json::Value = serde_json::from_str(&text).expect("and parses back");
    }
});
