//! What the players, the console and the archiver read from `display.*`, `tags.*` and
//! `tspi.ops.*`: display commands, tags, heartbeats, ops control and channel messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tspi_core::ops::{self, ChannelInfo, Heartbeat, OpsControl};
use tspi_core::{DisplayCommand, Tag};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(c) = DisplayCommand::from_cbor(bytes) {
        let again = DisplayCommand::from_cbor(&c.to_cbor()).expect("a command re-reads");
        assert_eq!(again.to_cbor(), c.to_cbor());
    }
    if let Ok(t) = Tag::from_cbor(bytes) {
        let again = Tag::from_cbor(&t.to_cbor()).expect("a tag re-reads");
        assert_eq!(again.to_cbor(), t.to_cbor());
    }
    let _ = ops::from_bytes::<Heartbeat>(bytes);
    let _ = ops::from_bytes::<OpsControl>(bytes);
    let _ = ops::from_bytes::<ChannelInfo>(bytes);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let _ = DisplayCommand::from_json(v.clone());
        let _ = Tag::from_json(v);
    }
});
