//! The pcap/pcapng reader and the UDP extraction on arbitrary capture files: errors or
//! frames, bounded allocations, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tspi_replayer::capture::{udp_payload, CaptureReader};

fuzz_target!(|bytes: &[u8]| {
    let Ok(mut reader) = CaptureReader::new(bytes) else {
        return;
    };
    // A capture of a few kB holds at most a few hundred frames; the bound keeps a reader
    // that never advanced from looping for ever (that would be a bug the fuzzer reports
    // as a timeout).
    for _ in 0..100_000 {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                let _ = udp_payload(frame.link_type, &frame.data);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
