//! The evaluator on made-up tracks: each rule kind raises, changes level and clears when
//! it should (persistence included), operators acknowledge and shelve, a restarted
//! evaluator carries on from the bus's last states, and the output is a function of the
//! input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tspi_alarms::{AlarmEvent, Evaluator, EventKind, Level, RuleSet, Sample};
use tspi_core::geo::{geodetic_to_ecef, Geodetic, LocalFrame};

const T0: i64 = 1_759_057_200_000;

fn rules(text: &str) -> Arc<RuleSet> {
    Arc::new(RuleSet::parse(text, None).unwrap())
}

/// A sample `e`, `n` metres east/north of the range origin at `alt` m, moving at `v`
/// (east, north, up).
fn at(sensor: u16, ms: i64, e: f64, n: f64, alt: f64, v: [f64; 3]) -> Sample {
    let origin = LocalFrame::new(34.9, -117.9, 0.0).unwrap();
    let [x, y, z] = origin.enu_to_ecef([e, n, 0.0]);
    let g = tspi_core::geo::ecef_to_geodetic(x, y, z).unwrap();
    let position = Geodetic { alt_m: alt, ..g };
    Sample {
        sensor,
        at_ms: ms,
        position: Some(position),
        ecef: Some(geodetic_to_ecef(position.lat_deg, position.lon_deg, alt)),
        speed_mps: (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt(),
        velocity: Some(v),
    }
}

fn run(ev: &mut Evaluator, samples: &[Sample]) -> Vec<AlarmEvent> {
    let mut out = Vec::new();
    for s in samples {
        ev.sample(s, &mut out);
    }
    out
}

fn summary(events: &[AlarmEvent]) -> Vec<(String, EventKind, Option<Level>, i64)> {
    events
        .iter()
        .map(|e| (e.id.clone(), e.event, e.level, e.at_ms))
        .collect()
}

#[test]
fn a_descent_through_the_floor_raises_each_level_then_clears() {
    let mut ev = Evaluator::new(rules(
        r#"[[limit]]
name = "floor"
sensors = ["7"]
field = "altitude_m"
below = { watch = 3000.0, warning = 2500.0, critical = 2000.0 }
persistence = { samples = 2 }
"#,
    ));
    // 10 Hz, descending 100 m a sample from 3300 m to 1700 m, then climbing back.
    let mut samples = Vec::new();
    for k in 0..17 {
        samples.push(at(
            7,
            T0 + 100 * k,
            0.0,
            0.0,
            3300.0 - 100.0 * k as f64,
            [0.0, 0.0, -1000.0],
        ));
    }
    for k in 0..17 {
        samples.push(at(
            7,
            T0 + 1700 + 100 * k,
            0.0,
            0.0,
            1700.0 + 100.0 * k as f64,
            [0.0, 0.0, 1000.0],
        ));
    }
    let out = run(&mut ev, &samples);
    let ms = |k: i64| T0 + 100 * k;
    // Below 3000 first at k=4 (2900 m): held by k=5. Below 2500 at k=9 (2400): k=10.
    // Below 2000 at k=14 (1900): k=15. Up again: 2000 at k=20 → back to warning at 21 …
    assert_eq!(
        summary(&out),
        vec![
            (
                "floor/7".into(),
                EventKind::Raised,
                Some(Level::Watch),
                ms(5)
            ),
            (
                "floor/7".into(),
                EventKind::Level,
                Some(Level::Warning),
                ms(10)
            ),
            (
                "floor/7".into(),
                EventKind::Level,
                Some(Level::Critical),
                ms(15)
            ),
            (
                "floor/7".into(),
                EventKind::Level,
                Some(Level::Warning),
                ms(21)
            ),
            (
                "floor/7".into(),
                EventKind::Level,
                Some(Level::Watch),
                ms(26)
            ),
            ("floor/7".into(), EventKind::Cleared, None, ms(31)),
        ]
    );
    assert_eq!(
        out.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(out[2].value, Some(1800.0));
    assert_eq!(out[2].threshold, Some(2000.0));
    assert_eq!(out[0].subject(), "tspi.alarm.event.floor.7");
}

#[test]
fn leaving_a_corridor_and_an_impact_point_outside_a_boundary() {
    // The corridor: 1 km either side of the north-south line through the origin.
    let origin = LocalFrame::new(34.9, -117.9, 0.0).unwrap();
    let corner = |e: f64, n: f64| {
        let [x, y, z] = origin.enu_to_ecef([e, n, 0.0]);
        let g = tspi_core::geo::ecef_to_geodetic(x, y, z).unwrap();
        format!("[{}, {}]", g.lat_deg, g.lon_deg)
    };
    let ring = [
        corner(-1000.0, -50_000.0),
        corner(1000.0, -50_000.0),
        corner(1000.0, 50_000.0),
        corner(-1000.0, 50_000.0),
        corner(-1000.0, -50_000.0),
    ]
    .join(", ");
    let mut ev = Evaluator::new(rules(&format!(
        "[[geofence]]\nname = \"corridor\"\nsensors = [\"*\"]\nkeep = \"inside\"\nlevel = \"critical\"\npolygon = [{ring}]\n\n[[impact]]\nname = \"iip\"\nsensors = [\"*\"]\nkeep = \"inside\"\npolygon = [{ring}]\n"
    )));
    // Flying east at 100 m/s, 1000 m up, from 0.5 km east: out of the corridor after 5 s;
    // its impact point (≈1.43 km further east) leaves it first.
    let samples: Vec<Sample> = (0..100)
        .map(|k| {
            at(
                3,
                T0 + 100 * k,
                500.0 + 10.0 * k as f64,
                0.0,
                1000.0,
                [100.0, 0.0, 0.0],
            )
        })
        .collect();
    let out = run(&mut ev, &samples);
    let s = summary(&out);
    assert_eq!(
        s[0],
        ("iip/3".into(), EventKind::Raised, Some(Level::Warning), T0)
    );
    assert_eq!(s[1].0, "corridor/3");
    // Position 500 + 10k m east passes 1000 m at k = 50 (the edge is inside: k = 51).
    assert_eq!(s[1].3, T0 + 5_100);
    assert_eq!(s[1].2, Some(Level::Critical));
    assert_eq!(s.len(), 2);
}

#[test]
fn silence_goes_stale_and_a_record_ends_it() {
    let mut ev = Evaluator::new(rules(
        "[[stale]]\nname = \"silent\"\nsensors = [\"*\"]\nafter = 3\nlevel = \"critical\"\n",
    ));
    let mut out = Vec::new();
    ev.sample(&at(1, T0, 0.0, 0.0, 100.0, [0.0; 3]), &mut out);
    ev.tick(T0 + 3_000, &mut out);
    assert!(out.is_empty(), "3 s is not more than 3 s");
    ev.tick(T0 + 3_500, &mut out);
    assert_eq!(
        summary(&out),
        vec![(
            "silent/1".into(),
            EventKind::Raised,
            Some(Level::Critical),
            T0 + 3_500
        )]
    );
    assert_eq!(out[0].value, Some(3.5));
    ev.sample(&at(1, T0 + 4_000, 0.0, 0.0, 100.0, [0.0; 3]), &mut out);
    assert_eq!(out[1].event, EventKind::Cleared);
    // A sensor never heard is never stale.
    ev.tick(T0 + 100_000, &mut out);
    assert_eq!(
        out.iter().filter(|e| e.event == EventKind::Raised).count(),
        2
    );
}

#[test]
fn two_tracks_closing_raise_a_pair_alarm_and_only_they_do() {
    let mut ev = Evaluator::new(rules(
        "[[separation]]\nname = \"close\"\nsensors = [\"*\"]\nbelow = { warning = 1000.0, critical = 500.0 }\n",
    ));
    // 1 and 2 head-on from 3 km apart, closing at 200 m/s (10 Hz); 3 far away.
    let mut samples = Vec::new();
    for k in 0..150 {
        let t = T0 + 100 * k;
        let half = 1500.0 - 10.0 * k as f64;
        samples.push(at(1, t, -half, 0.0, 1000.0, [100.0, 0.0, 0.0]));
        samples.push(at(2, t, half, 0.0, 1000.0, [-100.0, 0.0, 0.0]));
        samples.push(at(3, t, 0.0, 40_000.0, 1000.0, [0.0; 3]));
    }
    let out = run(&mut ev, &samples);
    let s = summary(&out);
    // Distance 3000 - 20k: below 1000 at k = 101 (980 m); below 500 at k = 126 (480 m).
    // Measured when 2 reports (1 has moved already): 1 km is crossed by 2's sample at k=100.
    assert_eq!(s[0].0, "close/1-2");
    assert_eq!(s[0].2, Some(Level::Warning));
    assert!((T0 + 10_000..=T0 + 10_100).contains(&s[0].3), "{s:?}");
    assert_eq!(s[1].2, Some(Level::Critical));
    assert!((T0 + 12_500..=T0 + 12_600).contains(&s[1].3), "{s:?}");
    assert!(out.iter().all(|e| e.sensors == [1, 2]));
    // They pass each other (k = 150) and separate again: back down and cleared.
    let mut more = Vec::new();
    for k in 150..300 {
        let t = T0 + 100 * k;
        let half = 1500.0 - 10.0 * k as f64;
        ev.sample(&at(1, t, -half, 0.0, 1000.0, [100.0, 0.0, 0.0]), &mut more);
        ev.sample(&at(2, t, half, 0.0, 1000.0, [-100.0, 0.0, 0.0]), &mut more);
    }
    assert_eq!(more.last().unwrap().event, EventKind::Cleared);
}

#[test]
fn operators_acknowledge_and_shelve_and_a_higher_level_wants_a_new_ack() {
    let mut ev = Evaluator::new(rules(
        "[[limit]]\nname = \"fast\"\nsensors = [\"*\"]\nfield = \"speed_mps\"\nabove = { warning = 200.0, critical = 300.0 }\n",
    ));
    let mut out = Vec::new();
    assert!(
        ev.acknowledge("fast/9", "ops1", T0).is_err(),
        "no such alarm yet"
    );
    ev.sample(&at(9, T0, 0.0, 0.0, 100.0, [250.0, 0.0, 0.0]), &mut out);
    let ack = ev.acknowledge("fast/9", "ops1", T0 + 1).unwrap();
    assert_eq!(
        (
            ack.event,
            ack.acknowledged,
            ack.operator.as_deref(),
            ack.seq
        ),
        (EventKind::Acknowledged, true, Some("ops1"), 2)
    );
    ev.sample(
        &at(9, T0 + 100, 0.0, 0.0, 100.0, [310.0, 0.0, 0.0]),
        &mut out,
    );
    assert_eq!(out[1].level, Some(Level::Critical));
    assert!(
        !out[1].acknowledged,
        "escalation wants a new acknowledgement"
    );
    let shelved = ev
        .shelve("fast/9", "ops2", Some(T0 + 60_000), T0 + 200)
        .unwrap();
    assert_eq!(shelved.event, EventKind::Shelved);
    assert_eq!(shelved.shelved_until_ms, Some(T0 + 60_000));
    ev.tick(T0 + 59_999, &mut out);
    assert_eq!(out.len(), 2);
    ev.tick(T0 + 60_000, &mut out);
    assert_eq!(out[2].event, EventKind::Unshelved);
    assert_eq!(ev.active().len(), 1);
    assert!(ev.acknowledge("fast/nine", "x", T0).is_err());
    assert!(ev.acknowledge("nope/9", "x", T0).is_err());
}

#[test]
fn a_restarted_evaluator_carries_on_from_the_last_states() {
    let text = "[[limit]]\nname = \"floor\"\nsensors = [\"*\"]\nfield = \"altitude_m\"\nbelow = { warning = 1000.0 }\n";
    let samples: Vec<Sample> = (0..20)
        .map(|k| {
            at(
                4,
                T0 + 100 * k,
                0.0,
                0.0,
                1500.0 - 50.0 * k as f64,
                [0.0; 3],
            )
        })
        .collect();
    // The same input: the same transitions.
    let (mut a, mut b) = (Evaluator::new(rules(text)), Evaluator::new(rules(text)));
    assert_eq!(run(&mut a, &samples), run(&mut b, &samples));
    // Restarted after the raise: it knows the alarm, and the next transition continues
    // its sequence.
    let first = run(&mut Evaluator::new(rules(text)), &samples[..12]);
    assert_eq!(first.len(), 1);
    let mut again = Evaluator::new(rules(text));
    again.restore(&first[0]);
    assert_eq!(again.active().len(), 1);
    let ack = again.acknowledge("floor/4", "ops", T0 + 5_000).unwrap();
    assert_eq!(ack.seq, 2);
    let up: Vec<Sample> = (0..3)
        .map(|k| at(4, T0 + 6_000 + 100 * k, 0.0, 0.0, 1500.0, [0.0; 3]))
        .collect();
    let cleared = run(&mut again, &up);
    assert_eq!(cleared[0].event, EventKind::Cleared);
    assert_eq!(cleared[0].seq, 3);
}

#[test]
fn persistence_in_seconds_waits_on_the_samples_clock() {
    let mut ev = Evaluator::new(rules(
        "[[limit]]\nname = \"low\"\nsensors = [\"*\"]\nfield = \"altitude_m\"\nbelow = { watch = 100.0 }\npersistence = { seconds = 1.0 }\n",
    ));
    let samples: Vec<Sample> = (0..30)
        .map(|k| at(5, T0 + 100 * k, 0.0, 0.0, 50.0, [0.0; 3]))
        .collect();
    let out = run(&mut ev, &samples);
    assert_eq!(
        summary(&out),
        vec![(
            "low/5".into(),
            EventKind::Raised,
            Some(Level::Watch),
            T0 + 1_000
        )]
    );
}

mod separation_against_every_pair {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The grid finds what comparing every pair finds: after each frame (every
        /// sensor once, in order) the active pair alarms are exactly the pairs whose
        /// latest positions are within the thresholds, at the level they give.
        #[test]
        fn the_grid_misses_no_pair(
            walks in proptest::collection::vec(
                proptest::collection::vec((-400.0f64..400.0, -400.0f64..400.0, -100.0f64..100.0), 6),
                2..12,
            ),
            start in proptest::collection::vec((-3000.0f64..3000.0, -3000.0f64..3000.0, 500.0f64..1500.0), 12),
        ) {
            let mut ev = Evaluator::new(rules(
                "[[separation]]\nname = \"close\"\nsensors = [\"*\"]\nbelow = { warning = 700.0, critical = 250.0 }\n",
            ));
            let n = walks.len();
            let mut pos: Vec<[f64; 3]> = start[..n].iter().map(|(e, n, u)| [*e, *n, *u]).collect();
            let mut out = Vec::new();
            for frame in 0..6 {
                let t = T0 + 100 * frame as i64;
                let mut ecef = Vec::new();
                for (k, walk) in walks.iter().enumerate() {
                    let d = walk[frame];
                    pos[k] = [pos[k][0] + d.0, pos[k][1] + d.1, pos[k][2] + d.2];
                    let s = at(k as u16 + 1, t, pos[k][0], pos[k][1], pos[k][2], [0.0; 3]);
                    ecef.push(s.ecef.unwrap());
                    ev.sample(&s, &mut out);
                }
                let mut want = Vec::new();
                for a in 0..n {
                    for b in a + 1..n {
                        let d = ((ecef[a][0] - ecef[b][0]).powi(2) + (ecef[a][1] - ecef[b][1]).powi(2)
                            + (ecef[a][2] - ecef[b][2]).powi(2)).sqrt();
                        let level = if d < 250.0 { Some(Level::Critical) } else if d < 700.0 { Some(Level::Warning) } else { None };
                        if let Some(l) = level {
                            want.push((format!("close/{}-{}", a + 1, b + 1), l));
                        }
                    }
                }
                want.sort();
                let mut got: Vec<(String, Level)> = ev
                    .active()
                    .into_iter()
                    .filter_map(|e| e.level.map(|l| (e.id, l)))
                    .collect();
                got.sort();
                prop_assert_eq!(got, want, "frame {}", frame);
            }
        }
    }
}
