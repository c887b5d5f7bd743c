//! The 37-byte datagram decoder on arbitrary bytes: an error or a datagram that encodes
//! back to the same bytes, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(d) = tspi_core::datagram::decode(bytes) {
        assert_eq!(&d.encode()[..], bytes, "decode then encode is the identity");
        let record = tspi_core::TelemetryRecord::from_datagram(&d, 0);
        let cbor = record.to_cbor();
        let back = tspi_core::TelemetryRecord::from_cbor(&cbor)
            .expect("a decoded datagram's record reads back");
        assert_eq!(back.to_cbor(), cbor);
    }
});
