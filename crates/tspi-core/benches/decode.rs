//! Hot-path cost per datagram: decode alone, and what the producer does per datagram
//! (decode + record + CBOR + subject + msg id). A baseline (copying the 37 bytes) is
//! measured in the same run so figures can be reported as ratios on a noisy machine.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tspi_core::{decode, subject::write_msg_id, StreamPrefix, TelemetryRecord};

const GEOCENTRIC: &str =
    "c104006500c800002710ff00010001e240fff6040f000f424009c4f63c01f4000afff60000";

fn bytes() -> Vec<u8> {
    (0..GEOCENTRIC.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&GEOCENTRIC[i..i + 2], 16).unwrap_or(0))
        .collect()
}

fn benches(c: &mut Criterion) {
    let b = bytes();
    let prefix = StreamPrefix::default();
    let mut g = c.benchmark_group("datagram");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_copy", |bench| {
        bench.iter(|| black_box(black_box(b.as_slice()).to_vec()))
    });
    g.bench_function("decode", |bench| {
        bench.iter(|| black_box(decode(black_box(&b))))
    });
    g.bench_function("decode_cbor_encode", |bench| {
        let mut cbor = Vec::with_capacity(512);
        let mut subject = String::with_capacity(32);
        let mut id = String::with_capacity(32);
        bench.iter(|| {
            let Ok(d) = decode(black_box(&b)) else { return };
            let rec = TelemetryRecord::from_datagram(&d, 1_759_057_200_123);
            cbor.clear();
            rec.write_cbor(&mut cbor);
            subject.clear();
            prefix.write_subject(&mut subject, d.kind(), d.sensor_id);
            id.clear();
            write_msg_id(&mut id, d.sensor_id, d.day, d.time_ticks);
            black_box((&cbor, &subject, &id));
        })
    });
    // The archiver's per-message work: the bus record back from CBOR, then its JSON form.
    let cbor = match decode(&b) {
        Ok(d) => TelemetryRecord::from_datagram(&d, 1_759_057_200_123).to_cbor(),
        Err(e) => panic!("bench datagram: {e}"),
    };
    g.bench_function("record_from_cbor", |bench| {
        bench.iter(|| black_box(TelemetryRecord::from_cbor(black_box(&cbor))))
    });
    g.bench_function("record_from_cbor_to_json", |bench| {
        let mut json = Vec::with_capacity(512);
        bench.iter(|| {
            let Ok(rec) = TelemetryRecord::from_cbor(black_box(&cbor)) else {
                return;
            };
            json.clear();
            rec.write_json(&mut json);
            black_box(&json);
        })
    });
    g.finish();
}

criterion_group!(decode_benches, benches);
criterion_main!(decode_benches);
