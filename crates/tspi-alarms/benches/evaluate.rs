//! Evaluation cost per message (issue 25): 1,000 tracks at 10 Hz against 100 rules — 20
//! of them boundaries of 100 vertices (geofences and impact points), a separation rule,
//! stale rules, the rest altitude, speed and climb limits — every rule selecting every
//! track; against decoding the same messages (the CBOR record off the bus, what the
//! `alarmer` does before it evaluates), measured in the same run, alternating.
//!
//! `cargo bench -p tspi-alarms --bench evaluate` (`TSPI_BENCH_QUICK=1`: fewer rounds).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use tspi_alarms::{Evaluator, RuleSet, Sample};
use tspi_core::geo::LocalFrame;
use tspi_core::{Datagram, GeocentricRaw, Payload, TelemetryRecord};
use tspi_display::Placement;

const TRACKS: usize = 1000;
const FRAMES: usize = 20;
const T0: i64 = 1_759_057_200_000;

fn rules() -> String {
    let origin = LocalFrame::new(34.9, -117.9, 0.0).unwrap();
    let mut text = String::new();
    // 20 boundaries of 100 vertices: wavy rings 10-48 km across around the range.
    for k in 0..20 {
        let r0 = 5_000.0 + 1_000.0 * k as f64;
        let ring: Vec<String> = (0..=100)
            .map(|i| {
                let a = (i % 100) as f64 / 100.0 * std::f64::consts::TAU;
                let r = r0 * (1.0 + 0.1 * (7.0 * a + k as f64).sin());
                let [x, y, z] = origin.enu_to_ecef([r * a.cos(), r * a.sin(), 0.0]);
                let g = tspi_core::geo::ecef_to_geodetic(x, y, z).unwrap();
                format!("[{}, {}]", g.lat_deg, g.lon_deg)
            })
            .collect();
        let table = if k % 2 == 0 { "geofence" } else { "impact" };
        text.push_str(&format!(
            "[[{table}]]\nname = \"area{k}\"\nsensors = [\"*\"]\nkeep = \"{}\"\npolygon = [{}]\n\n",
            if k % 3 == 0 { "outside" } else { "inside" },
            ring.join(", ")
        ));
    }
    text.push_str("[[separation]]\nname = \"close\"\nsensors = [\"*\"]\nbelow = { warning = 300.0, critical = 100.0 }\n\n");
    for k in 0..4 {
        text.push_str(&format!(
            "[[stale]]\nname = \"silent{k}\"\nsensors = [\"*\"]\nafter = {}\n\n",
            2 + k
        ));
    }
    for k in 0..75 {
        let (field, below, above) = match k % 3 {
            0 => ("altitude_m", 500.0 + 20.0 * k as f64, 12_000.0),
            1 => ("speed_mps", 50.0, 280.0 + k as f64),
            _ => ("climb_mps", -80.0 - k as f64, 80.0),
        };
        text.push_str(&format!(
            "[[limit]]\nname = \"limit{k}\"\nsensors = [\"*\"]\nfield = \"{field}\"\nbelow = {{ watch = {below} }}\nabove = {{ watch = {above} }}\npersistence = {{ samples = 2 }}\n\n"
        ));
    }
    text
}

fn messages() -> Vec<Vec<u8>> {
    let origin = LocalFrame::new(34.9, -117.9, 0.0).unwrap();
    let mut out = Vec::with_capacity(TRACKS * FRAMES);
    for f in 0..FRAMES {
        for t in 0..TRACKS {
            let a = t as f64 * 2.399;
            let r = 2_000.0 + 40.0 * t as f64;
            let e = r * a.cos() + 15.0 * f as f64;
            let n = r * a.sin();
            let [x, y, z] = origin.enu_to_ecef([e, n, 1_000.0 + 9.0 * t as f64]);
            let d = Datagram {
                sensor_id: 10_000 + t as u16,
                day: 271,
                time_ticks: 396_000_000 + 1_000 * f as u32,
                status: 0xff,
                status_flags: 1,
                payload: Payload::Geocentric(GeocentricRaw {
                    x: (x * 100.0) as i32,
                    y: (y * 100.0) as i32,
                    z: (z * 100.0) as i32,
                    vx: 15_000,
                    vy: -2_000,
                    vz: 500,
                    ..Default::default()
                }),
            };
            out.push(
                TelemetryRecord::from_datagram(&d, T0 + 100 * f as i64 + t as i64 / 10).to_cbor(),
            );
        }
    }
    out
}

fn main() {
    let rules = Arc::new(RuleSet::parse(&rules(), None).unwrap());
    assert_eq!(rules.rules.len(), 100);
    let messages = messages();
    let records: Vec<TelemetryRecord> = messages
        .iter()
        .map(|m| TelemetryRecord::from_cbor(m).unwrap())
        .collect();
    let placement = Placement::new(LocalFrame::new(34.9, -117.9, 0.0), Default::default());
    let rounds = if std::env::var_os("TSPI_BENCH_QUICK").is_some() {
        3
    } else {
        10
    };
    let (mut decode_ns, mut eval_ns) = (Vec::new(), Vec::new());
    // One evaluator throughout: round 0 (not counted) makes every track's slots.
    let mut ev = Evaluator::new(rules.clone());
    for round in 0..=rounds {
        let t = Instant::now();
        for m in &messages {
            black_box(TelemetryRecord::from_cbor(black_box(m)).unwrap());
        }
        let d = t.elapsed().as_nanos() as f64 / messages.len() as f64;
        let mut out = Vec::new();
        let t = Instant::now();
        for r in &records {
            ev.sample(black_box(&Sample::from_record(r, &placement)), &mut out);
            out.clear();
        }
        let e = t.elapsed().as_nanos() as f64 / records.len() as f64;
        if round > 0 {
            decode_ns.push(d);
            eval_ns.push(e);
            eprintln!(
                "round {round}: decode {d:.0} ns/msg, evaluate {e:.0} ns/msg, ratio {:.2}",
                e / d
            );
        }
    }
    // Where the time goes (`TSPI_BENCH_PARTS=1`): placement alone, then each kind of
    // rule alone.
    if std::env::var_os("TSPI_BENCH_PARTS").is_some() {
        let t = Instant::now();
        for r in &records {
            black_box(Sample::from_record(black_box(r), &placement));
        }
        eprintln!(
            "part: placing the record {:.0} ns/msg",
            t.elapsed().as_nanos() as f64 / records.len() as f64
        );
        let all: &RuleSet = &rules;
        for kind in ["limit", "geofence", "impact", "separation", "stale"] {
            let subset = RuleSet {
                rules: all
                    .rules
                    .iter()
                    .filter(|r| format!("{:?}", r.kind()).to_lowercase() == kind)
                    .cloned()
                    .collect(),
                ground_alt_m: all.ground_alt_m,
            };
            let n = subset.rules.len();
            let mut ev = Evaluator::new(Arc::new(subset));
            let samples: Vec<Sample> = records
                .iter()
                .map(|r| Sample::from_record(r, &placement))
                .collect();
            let mut out = Vec::new();
            for s in &samples {
                ev.sample(s, &mut out);
            }
            let t = Instant::now();
            for s in &samples {
                ev.sample(black_box(s), &mut out);
                out.clear();
            }
            eprintln!(
                "part: {n} {kind} rules {:.0} ns/msg",
                t.elapsed().as_nanos() as f64 / samples.len() as f64
            );
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut ratios: Vec<f64> = eval_ns.iter().zip(&decode_ns).map(|(e, d)| e / d).collect();
    let ratio = median(&mut ratios);
    let (d, e) = (median(&mut decode_ns), median(&mut eval_ns));
    eprintln!(
        "{TRACKS} tracks × {FRAMES} frames, {} rules (20 boundaries of 100 vertices): decode {d:.0} ns/msg, \
         evaluate {e:.0} ns/msg → {ratio:.2}× decode (median of {rounds} rounds' ratios, each \
         round decoding then evaluating the same messages); {} alarms active at the end",
        rules.rules.len(),
        ev.active().len()
    );
    let mut by_kind = std::collections::BTreeMap::new();
    for a in ev.active() {
        *by_kind
            .entry(format!("{:?}", a.kind).to_lowercase())
            .or_insert(0) += 1;
    }
    eprintln!("active at the end by kind: {by_kind:?}");
}
