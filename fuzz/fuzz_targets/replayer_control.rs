//! The replayer's control requests (JSON or CBOR, from any client on the bus).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tspi_replayer::control;

fuzz_target!(|bytes: &[u8]| {
    let (encoding, request) = control::decode(bytes);
    let reply = match request {
        Ok(_) => control::Reply::ok(None),
        Err(e) => control::Reply::error(e),
    };
    let _ = reply.encode(encoding);
});
