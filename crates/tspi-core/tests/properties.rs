//! Property tests, 10,000 cases each: arbitrary bytes never panic the decoder, valid
//! datagrams survive decode → encode unchanged, and records survive CBOR and JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use proptest::prelude::*;
use tspi_core::{decode, DatagramError, TelemetryRecord, DATAGRAM_LEN};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        ..ProptestConfig::default()
    }
}

/// 37 bytes with a valid header and anything in the status and payload bytes.
fn valid_datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(0xC1u8), Just(0xC2u8)],
        any::<u16>(),
        1u16..=366,
        0u32..864_000_000,
        proptest::collection::vec(any::<u8>(), 27),
    )
        .prop_map(|(ty, sensor, day, ticks, rest)| {
            let mut b = vec![ty, 4];
            b.extend_from_slice(&sensor.to_be_bytes());
            b.extend_from_slice(&day.to_be_bytes());
            b.extend_from_slice(&ticks.to_be_bytes());
            b.extend_from_slice(&rest);
            b
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        match decode(&bytes) {
            Ok(d) => prop_assert_eq!(&d.encode()[..], &bytes[..]),
            Err(DatagramError::BadLength { len }) => prop_assert_ne!(len, DATAGRAM_LEN),
            Err(_) => prop_assert_eq!(bytes.len(), DATAGRAM_LEN),
        }
    }

    #[test]
    fn arbitrary_37_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 37)) {
        if let Ok(d) = decode(&bytes) {
            prop_assert_eq!(&d.encode()[..], &bytes[..]);
        }
    }

    #[test]
    fn decode_then_encode_is_identity(bytes in valid_datagram()) {
        let d = decode(&bytes).expect("valid by construction");
        prop_assert_eq!(&d.encode()[..], &bytes[..]);
    }

    #[test]
    fn record_survives_cbor_and_json(bytes in valid_datagram(), ms in 0i64..4_102_444_800_000) {
        let d = decode(&bytes).expect("valid by construction");
        let rec = TelemetryRecord::from_datagram(&d, ms);
        let back = TelemetryRecord::from_cbor(&rec.to_cbor()).expect("own CBOR decodes");
        prop_assert_eq!(&back, &rec);
        // The hand-written encoder and serde/ciborium describe the same map.
        let ours: ciborium::Value = ciborium::from_reader(rec.to_cbor().as_slice()).expect("valid CBOR");
        let theirs = ciborium::Value::serialized(&rec).expect("serde form");
        prop_assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        let mut json = Vec::new();
        rec.write_json(&mut json);
        let from_json: TelemetryRecord = serde_json::from_slice(&json).expect("own JSON");
        prop_assert_eq!(from_json, rec);
    }

    #[test]
    fn direct_cbor_is_the_records_cbor(bytes in valid_datagram(), ms in -70_000_000_000_000i64..300_000_000_000_000) {
        let d = decode(&bytes).expect("valid by construction");
        let mut direct = vec![0xAA];
        TelemetryRecord::write_datagram_cbor(&d, ms, &mut direct);
        let mut via_record = vec![0xAA];
        TelemetryRecord::from_datagram(&d, ms).write_cbor(&mut via_record);
        prop_assert_eq!(direct, via_record);
    }

    #[test]
    fn fast_and_general_cbor_decoders_agree(
        bytes in valid_datagram(),
        ms in -1_000i64..4_102_444_800_000,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        serde_form in any::<bool>(),
    ) {
        let d = decode(&bytes).expect("valid by construction");
        let rec = TelemetryRecord::from_datagram(&d, ms);
        // Our writer's form, or serde/ciborium's (other float widths), then damaged a bit.
        let mut cbor = if serde_form {
            let mut out = Vec::new();
            ciborium::into_writer(&rec, &mut out).expect("serialise");
            out
        } else {
            rec.to_cbor()
        };
        for (at, byte) in &flips {
            let i = at.index(cbor.len());
            cbor[i] = *byte;
        }
        let fast = TelemetryRecord::from_cbor(&cbor).ok();
        let general = TelemetryRecord::from_cbor_general(&cbor).ok();
        prop_assert_eq!(fast, general);
    }

    #[test]
    fn arbitrary_cbor_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = TelemetryRecord::from_cbor(&bytes);
    }
}
