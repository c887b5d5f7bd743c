//! Alarms and range-safety boundaries end to end (issue 25), with the real programs —
//! producer, archiver, `replayer serve`, alarmer, `player --web`, console — and Chromium:
//!
//! 1. scripted aircraft (`generator --script`) descend through a floor and climb back,
//!    leave a corridor and come back, carry their impact point out of a boundary and
//!    back, and close on each other and part: every transition the alarmer publishes is
//!    the one an independent computation of the script expects, at its frame ±1 sample;
//!    silence after the flight raises the stale alarms; a paused replay of the window
//!    shows each alarm at the cursor times it happened (one sample before: the state
//!    before; one sample after: the state after);
//! 2. an acknowledgement clicked in one tab reaches the other tab and the console, and
//!    a restarted display still shows it;
//! 3. the filter, altitude colouring, the ruler and the plot, through
//!    `window.tspiDisplay.state()` and the DOM, with screenshots.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod range;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tspi_core::alarm::{AlarmEvent, EventKind, Level};
use tspi_core::geo::{ecef_to_geodetic, Geodetic, LocalFrame};
use tspi_core::TelemetryRecord;

use range::{block, screenshot_path, Range, RangeOptions, ORIGIN};

const RATE: f64 = 10.0;
const FLIGHT_S: u32 = 18;
/// The ground impact points are found at (`ground_alt_m`), the range origin's height.
const GROUND_M: f64 = 700.0;

/// One scripted aircraft: start and velocity in the origin's east/north/up plane, then
/// new velocities at given times.
struct Flight {
    sensor: u16,
    start: [f64; 3],
    velocity: [f64; 3],
    legs: &'static [(f64, [f64; 3])],
}

/// Messages the TSPI stream holds on subjects matching `filter`.
async fn stored(js: &async_nats::jetstream::Context, filter: &str) -> usize {
    let stream = js.get_stream("TSPI").await.unwrap();
    let mut subjects = stream.info_with_subjects(filter).await.unwrap();
    let mut total = 0;
    while let Some(subject) = subjects.next().await {
        total += subject.unwrap().1;
    }
    total
}

const FLIGHTS: [Flight; 5] = [
    // Down through the floor's three levels at 100 m/s, then back up.
    Flight {
        sensor: 20001,
        start: [0.0, 2000.0, 1005.0],
        velocity: [0.0, 0.0, -100.0],
        legs: &[(8.0, [0.0, 0.0, 100.0])],
    },
    // East out of the corridor (|east| ≤ 1 km) and back.
    Flight {
        sensor: 20002,
        start: [-510.0, 0.0, 2320.0],
        velocity: [200.0, 0.0, 0.0],
        legs: &[(9.0, [-200.0, 0.0, 0.0])],
    },
    // North until its impact point leaves the boundary, then it turns round.
    Flight {
        sensor: 20003,
        start: [0.0, 1500.0, 1800.0],
        velocity: [0.0, 150.0, 0.0],
        legs: &[(13.0, [0.0, -150.0, 0.0])],
    },
    // Head-on, closing at 300 m/s, passing at 13.4 s.
    Flight {
        sensor: 20004,
        start: [-2010.0, -3000.0, 2320.0],
        velocity: [150.0, 0.0, 0.0],
        legs: &[],
    },
    Flight {
        sensor: 20005,
        start: [2010.0, -3000.0, 2320.0],
        velocity: [-150.0, 0.0, 0.0],
        legs: &[],
    },
];

impl Flight {
    fn at(&self, t: f64) -> ([f64; 3], [f64; 3]) {
        let (mut t0, mut p, mut v) = (0.0, self.start, self.velocity);
        for &(at, next) in self.legs {
            if at <= t {
                p = [
                    p[0] + v[0] * (at - t0),
                    p[1] + v[1] * (at - t0),
                    p[2] + v[2] * (at - t0),
                ];
                (t0, v) = (at, next);
            }
        }
        let dt = t - t0;
        ([p[0] + v[0] * dt, p[1] + v[1] * dt, p[2] + v[2] * dt], v)
    }

    fn toml(&self) -> String {
        let legs: Vec<String> = self
            .legs
            .iter()
            .map(|(at, v)| format!("{{ at = {at:?}, velocity = {v:?} }}"))
            .collect();
        format!(
            "[[aircraft]]\nsensor = {}\nstart = {:?}\nvelocity = {:?}\nlegs = [{}]\n\n",
            self.sensor,
            self.start,
            self.velocity,
            legs.join(", ")
        )
    }
}

fn origin() -> LocalFrame {
    LocalFrame::new(34.9, -117.9, 700.0).unwrap()
}

fn geodetic(enu: [f64; 3]) -> Geodetic {
    let [x, y, z] = origin().enu_to_ecef(enu);
    ecef_to_geodetic(x, y, z).unwrap()
}

/// A rectangle in latitude and longitude around east/north corners of the origin's
/// plane: [[lat_min, lon_min], [lat_max, lon_max]].
fn rectangle(east: [f64; 2], north: [f64; 2]) -> [[f64; 2]; 2] {
    let corners: Vec<Geodetic> = [
        [east[0], north[0]],
        [east[1], north[0]],
        [east[1], north[1]],
        [east[0], north[1]],
    ]
    .iter()
    .map(|[e, n]| geodetic([*e, *n, 0.0]))
    .collect();
    let lat = corners.iter().map(|g| g.lat_deg);
    let lon = corners.iter().map(|g| g.lon_deg);
    [
        [
            lat.clone().fold(f64::MAX, f64::min),
            lon.clone().fold(f64::MAX, f64::min),
        ],
        [lat.fold(f64::MIN, f64::max), lon.fold(f64::MIN, f64::max)],
    ]
}

fn inside(r: &[[f64; 2]; 2], g: &Geodetic) -> bool {
    (r[0][0]..=r[1][0]).contains(&g.lat_deg) && (r[0][1]..=r[1][1]).contains(&g.lon_deg)
}

fn ring(r: &[[f64; 2]; 2]) -> String {
    let [[a, b], [c, d]] = *r;
    format!("[[{a}, {b}], [{a}, {d}], [{c}, {d}], [{c}, {b}], [{a}, {b}]]")
}

fn corridor() -> [[f64; 2]; 2] {
    rectangle([-1000.0, 1000.0], [-6000.0, 6000.0])
}

fn impact_area() -> [[f64; 2]; 2] {
    rectangle([-6000.0, 6000.0], [-6000.0, 6000.0])
}

fn rules() -> String {
    format!(
        "ground_alt_m = {GROUND_M}\n\n\
         [[limit]]\nname = \"floor\"\nsensors = [\"20001\"]\nfield = \"altitude_m\"\n\
         below = {{ watch = 1500.0, warning = 1200.0, critical = 1000.0 }}\n\n\
         [[geofence]]\nname = \"corridor\"\nsensors = [\"20002\"]\nkeep = \"inside\"\nlevel = \"critical\"\npolygon = {}\n\n\
         [[impact]]\nname = \"impact-area\"\nsensors = [\"20003\"]\nkeep = \"inside\"\nlevel = \"warning\"\npolygon = {}\n\n\
         [[separation]]\nname = \"separation\"\nsensors = [\"20004-20005\"]\nbelow = {{ warning = 1000.0, critical = 300.0 }}\n\n\
         [[stale]]\nname = \"silent\"\nsensors = [\"20001-20005\"]\nafter = 2.0\nlevel = \"warning\"\n",
        ring(&corridor()),
        ring(&impact_area())
    )
}

/// What the script makes each alarm do, frame by frame, computed here from the flights
/// alone: (alarm id, level after, frame) for every change.
fn expected_transitions() -> Vec<(String, Option<Level>, i64)> {
    let frames = (FLIGHT_S as f64 * RATE) as i64;
    let t = |k: i64| k as f64 / RATE;
    let mut out = Vec::new();
    let mut track = |id: &str, level_at: &dyn Fn(i64) -> Option<Level>| {
        let mut was = None;
        for k in 0..frames {
            let now = level_at(k);
            if now != was {
                out.push((id.to_owned(), now, k));
                was = now;
            }
        }
    };
    track("floor/20001", &|k| {
        let alt = geodetic(FLIGHTS[0].at(t(k)).0).alt_m;
        [
            (1000.0, Level::Critical),
            (1200.0, Level::Warning),
            (1500.0, Level::Watch),
        ]
        .into_iter()
        .find(|(floor, _)| alt < *floor)
        .map(|(_, l)| l)
    });
    let c = corridor();
    track("corridor/20002", &|k| {
        (!inside(&c, &geodetic(FLIGHTS[1].at(t(k)).0))).then_some(Level::Critical)
    });
    let a = impact_area();
    track("impact-area/20003", &|k| {
        let (p, v) = FLIGHTS[2].at(t(k));
        let h = geodetic(p).alt_m - GROUND_M;
        let fall = (v[2] + (v[2] * v[2] + 2.0 * 9.806_65 * h).sqrt()) / 9.806_65;
        let iip = geodetic([p[0] + v[0] * fall, p[1] + v[1] * fall, 0.0]);
        (!inside(&a, &iip)).then_some(Level::Warning)
    });
    track("separation/20004-20005", &|k| {
        let ecef = |f: &Flight| origin().enu_to_ecef(f.at(t(k)).0);
        let (p, q) = (ecef(&FLIGHTS[3]), ecef(&FLIGHTS[4]));
        let d = ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt();
        if d < 300.0 {
            Some(Level::Critical)
        } else if d < 1000.0 {
            Some(Level::Warning)
        } else {
            None
        }
    });
    out
}

fn iso(ms: i64) -> String {
    tspi_core::rfc3339::format_utc_millis(ms)
}

/// The display's alarms as the page states them: id → (level, acknowledged, operator).
fn page_alarms(state: &Value) -> HashMap<String, (Value, bool, Value)> {
    state["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                (
                    a["level"].clone(),
                    a["acknowledged"] == true,
                    a["operator"].clone(),
                ),
            )
        })
        .collect()
}

fn level_json(l: Option<Level>) -> Value {
    l.map_or(Value::Null, |l| json!(l.as_str()))
}

/// The altitude bands of the page's colouring (tools.js), metres → colour.
fn altitude_colour(alt: f64) -> &'static str {
    const BANDS: [(f64, &str); 9] = [
        (f64::NEG_INFINITY, "#ff8c1a"),
        (500.0, "#ffd21a"),
        (1000.0, "#c6f21a"),
        (2000.0, "#4ef21a"),
        (3000.0, "#1af2a0"),
        (4500.0, "#1acbf2"),
        (6000.0, "#1a7cf2"),
        (9000.0, "#7a4ef2"),
        (12000.0, "#e04ef2"),
    ];
    BANDS.iter().rev().find(|(from, _)| alt >= *from).unwrap().1
}

fn alarm_colour(level: &str) -> &'static str {
    match level {
        "watch" => "#f2d03b",
        "warning" => "#ff8c1a",
        _ => "#ff3b3b",
    }
}

fn track(state: &Value, sensor: u16) -> &Value {
    state["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["sensor_id"] == sensor)
        .unwrap_or_else(|| panic!("no track {sensor} in {}", state["tracks"]))
}

/// Until the page's alarm `id` satisfies `condition` (JavaScript on `a`, the alarm).
fn until_alarm(tab: &tspi_test_support::Browser, id: &str, condition: &str, what: &str) {
    tab.until(
        &format!(
            "(a => !!a && ({condition}))(tspiDisplay.state().alarms.find(a => a.id === '{id}'))"
        ),
        Duration::from_secs(10),
        what,
    );
}

/// Start `player --web` as the range does, after the first one stopped: its address.
async fn restart_display(range: &mut Range) -> String {
    assert!(range.player.stop(Duration::from_secs(20)).await.success());
    let mut player = range.programs.start(
        "player-web-2",
        "player",
        &["--web", "127.0.0.1:0", "--origin", ORIGIN],
    );
    player.first_line(Duration::from_secs(30)).await;
    let line: Value = serde_json::from_str(player.stdout().lines().next().unwrap()).unwrap();
    range.player = player;
    line["url"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_flights_raise_the_expected_alarms_and_operators_work_them() {
    let dir = tempfile::tempdir().unwrap();
    let rules_path = dir.path().join("rules.toml");
    std::fs::write(&rules_path, rules()).unwrap();
    let script_path = dir.path().join("flights.toml");
    std::fs::write(
        &script_path,
        FLIGHTS.iter().map(Flight::toml).collect::<String>(),
    )
    .unwrap();
    let mut range = Range::start(RangeOptions {
        archive: true,
        alarm_rules: Some(&rules_path),
        player_args: &[],
    })
    .await;

    // Everything on the bus, as it happens: the alarm transitions and each record's
    // receive time (to find the frame that caused a transition).
    let client = async_nats::connect(range.nats.url()).await.unwrap();
    let mut alarm_sub = client.subscribe("tspi.alarm.event.>").await.unwrap();
    let mut records_sub = client.subscribe("tspi.geocentric.>").await.unwrap();
    client.flush().await.unwrap();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<AlarmEvent>::new()));
    let records = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TelemetryRecord>::new()));
    let collect_events = {
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(m) = alarm_sub.next().await {
                events
                    .lock()
                    .unwrap()
                    .push(AlarmEvent::from_cbor(&m.payload).unwrap());
            }
        })
    };
    let collect_records = {
        let records = records.clone();
        tokio::spawn(async move {
            while let Some(m) = records_sub.next().await {
                records
                    .lock()
                    .unwrap()
                    .push(TelemetryRecord::from_cbor(&m.payload).unwrap());
            }
        })
    };

    let tab_a = block(|| range.tab("?operator=ops-a&view=range&zoom=13"));
    let tab_b = block(|| range.tab("?operator=ops-b"));
    block(|| {
        tab_a.until(
            "tspiDisplay.state().overlays.length === 2",
            Duration::from_secs(20),
            "the boundaries are drawn",
        )
    });

    let mut generator = {
        let mut cmd = Command::new(tspi_test_support::workspace_bin("generator"));
        cmd.args(["--udp-target", &format!("127.0.0.1:{}", range.udp_port)])
            .args(["--script", script_path.to_str().unwrap()])
            .args(["--rate", "10", "--duration", &FLIGHT_S.to_string()])
            .args([
                "--origin-lat",
                "34.9",
                "--origin-lon",
                "-117.9",
                "--origin-alt",
                "700",
            ]);
        range.programs.spawn("generator", cmd)
    };

    // 3. The operators' tools, while the aircraft fly (the first seconds: the floor
    // alarm is up, nothing else).
    block(|| {
        tab_a.until(
            "tspiDisplay.state().tracks.filter(t => !t.stale).length === 5",
            Duration::from_secs(20),
            "five tracks on the display",
        );
        // Filter: an id range, then an altitude band (metres: the units are metric).
        let s = tab_a.wait("tspiDisplay.setFilter('20004-20005')").unwrap();
        let shown: Vec<u64> = s["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["shown"] == true)
            .map(|t| t["sensor_id"].as_u64().unwrap())
            .collect();
        assert_eq!(shown, [20004, 20005], "{}", s["tracks"]);
        tab_a.until(
            "document.getElementById('track-count').textContent.startsWith('2 of 5 tracks')",
            Duration::from_secs(5),
            "the table counts what the filter shows",
        );
        let s = tab_a.wait("tspiDisplay.setFilter('alt:2000-')").unwrap();
        for t in s["tracks"].as_array().unwrap() {
            let high = t["alt_m"].as_f64().unwrap() >= 2000.0;
            assert_eq!(t["shown"] == true, high, "alt:2000- and {t}");
        }
        assert_eq!(s["filter"], "alt:2000-");
        assert!(
            tab_a.wait("tspiDisplay.setFilter('alt:x')").is_err(),
            "a bad filter is refused"
        );
        tab_a.wait("tspiDisplay.setFilter('')").unwrap();

        // Altitude colours, with the alarm's colour winning.
        tab_a.until(
            "tspiDisplay.state().tracks.some(t => t.sensor_id === 20001 && t.alarm_level === 'watch')",
            Duration::from_secs(10),
            "the floor's watch alarm colours 20001",
        );
        let s = tab_a.wait("tspiDisplay.setColourBy('altitude')").unwrap();
        assert_eq!(s["colour_by"], "altitude");
        for t in s["tracks"].as_array().unwrap() {
            let want = match t["alarm_level"].as_str() {
                Some(level) => alarm_colour(level),
                None => altitude_colour(t["alt_m"].as_f64().unwrap()),
            };
            assert_eq!(t["colour"], want, "{t}");
        }
        assert_eq!(track(&s, 20001)["colour"], alarm_colour("watch"));
        tab_a.until(
            "document.querySelector('#tracks tr.alarm-watch') !== null",
            Duration::from_secs(5),
            "the table shows 20001 in the alarm's colour",
        );

        // The ruler: between the two closing aircraft, and from one to the origin.
        let s = tab_a.wait("tspiDisplay.setRuler(20004, 20005)").unwrap();
        let (a, b) = (track(&s, 20004), track(&s, 20005));
        let ecef = |t: &Value| {
            tspi_core::geo::geodetic_to_ecef(
                t["lat_deg"].as_f64().unwrap(),
                t["lon_deg"].as_f64().unwrap(),
                t["alt_m"].as_f64().unwrap(),
            )
        };
        let (p, q) = (ecef(a), ecef(b));
        let d = ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt();
        let ruler = &s["ruler"];
        assert_eq!(
            (ruler["from"].clone(), ruler["to"].clone()),
            (json!(20004), json!(20005))
        );
        assert!(
            (ruler["range_m"].as_f64().unwrap() - d).abs() < 1.0,
            "{ruler} vs {d}"
        );
        assert!(
            (ruler["bearing_deg"].as_f64().unwrap() - 90.0).abs() < 1.0,
            "due east: {ruler}"
        );
        let s = tab_a.wait("tspiDisplay.setRuler(20002, 'origin')").unwrap();
        let g = track(&s, 20002);
        let p = ecef(g);
        let o = tspi_core::geo::geodetic_to_ecef(34.9, -117.9, 700.0);
        let d = ((p[0] - o[0]).powi(2) + (p[1] - o[1]).powi(2) + (p[2] - o[2]).powi(2)).sqrt();
        assert!(
            (s["ruler"]["range_m"].as_f64().unwrap() - d).abs() < 1.0,
            "{}",
            s["ruler"]
        );

        // The plot of the followed track's altitude: it is descending.
        tab_a.wait("tspiDisplay.follow(20001)").unwrap();
        tab_a.until(
            "(p => p && p.sensor === 20001 && p.points >= 10)(tspiDisplay.state().plot)",
            Duration::from_secs(10),
            "the plot fills",
        );
        let s = tab_a.wait("tspiDisplay.setPlot('alt')").unwrap();
        let plot = &s["plot"];
        let series = plot["series"].as_array().unwrap();
        assert_eq!(plot["points"].as_u64(), Some(series.len() as u64));
        let values: Vec<f64> = series.iter().map(|p| p[1].as_f64().unwrap()).collect();
        assert!(
            values.windows(2).all(|w| w[1] <= w[0] + 0.5),
            "descending: {values:?}"
        );
        // The newest point is the track's altitude of a moment ago (10 m a sample).
        let last = plot["last"].as_f64().unwrap();
        assert_eq!(Some(last), values.last().copied());
        assert!(
            (last - track(&s, 20001)["altitude"].as_f64().unwrap()).abs() < 25.0,
            "{plot}"
        );
        assert_eq!(
            plot["min"].as_f64().unwrap(),
            values.iter().copied().fold(f64::MAX, f64::min)
        );
        assert_eq!(plot["unit"], "m");
        tab_a.screenshot(&screenshot_path("alarms-tools.png"));
    });

    // The impact point is drawn for the track an impact rule watches, and only there.
    block(|| {
        tab_b.until(
            "tspiDisplay.state().tracks.some(t => t.sensor_id === 20003 && t.iip !== null)",
            Duration::from_secs(10),
            "20003's impact point",
        );
        let s = tab_b.eval("tspiDisplay.state()");
        for t in s["tracks"].as_array().unwrap() {
            assert_eq!(t["iip"].is_null(), t["sensor_id"] != 20003, "{t}");
        }
    });

    // 1. The flight ends; silence raises the stale alarms two seconds later.
    assert!(
        generator.wait(Duration::from_secs(60)).await.success(),
        "{}",
        generator.stderr()
    );
    let js = async_nats::jetstream::new(client.clone());
    let silent = || {
        let n = events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.rule == "silent")
            .count();
        async move { n >= 5 }
    };
    if tspi_test_support::wait_until(Duration::from_secs(30), silent)
        .await
        .is_none()
    {
        panic!("stale alarms: {:?}", events.lock().unwrap());
    }
    // Everything the stream stored has reached the collectors (a retried publish is
    // seen twice and stored once, so at least as many).
    let all_seen = || {
        let seen = (events.lock().unwrap().len(), records.lock().unwrap().len());
        let js = js.clone();
        async move {
            seen.0 >= stored(&js, "tspi.alarm.event.>").await
                && seen.1 >= stored(&js, "tspi.geocentric.>").await
        }
    };
    tspi_test_support::wait_until(Duration::from_secs(30), all_seen)
        .await
        .expect("the collectors saw what the stream stored");
    collect_events.abort();
    collect_records.abort();
    let events = events.lock().unwrap().clone();
    let records = records.lock().unwrap().clone();

    let first_time: HashMap<u16, f64> = FLIGHTS
        .iter()
        .map(|f| {
            let t = records
                .iter()
                .filter(|r| r.sensor_id == f.sensor)
                .map(|r| r.time_s)
                .fold(f64::MAX, f64::min);
            (f.sensor, t)
        })
        .collect();
    let frame_of = |e: &AlarmEvent| -> i64 {
        let r = records
            .iter()
            .find(|r| e.sensors.contains(&r.sensor_id) && r.recv_epoch_ms == e.at_ms)
            .unwrap_or_else(|| panic!("no record received at {} for {e:?}", e.at_ms));
        ((r.time_s - first_time[&r.sensor_id]) * RATE).round() as i64
    };
    let got: Vec<(String, Option<Level>, i64)> = events
        .iter()
        .filter(|e| e.rule != "silent")
        .map(|e| (e.id.clone(), e.level, frame_of(e)))
        .collect();
    let want = expected_transitions();
    eprintln!("alarm transitions (id, level, frame): {got:?}");
    assert_eq!(
        got.iter().map(|g| (&g.0, g.1)).collect::<Vec<_>>().len(),
        want.len(),
        "got {got:?}\nwant {want:?}"
    );
    for (id, level, frame) in &want {
        let same: Vec<&(String, Option<Level>, i64)> =
            got.iter().filter(|g| &g.0 == id && g.1 == *level).collect();
        assert!(
            same.iter().any(|g| (g.2 - frame).abs() <= 1),
            "{id} → {level:?} expected at frame {frame} ±1, got {same:?}\nall {got:?}"
        );
    }
    // Each alarm's transitions in the order the script makes them.
    for id in [
        "floor/20001",
        "corridor/20002",
        "impact-area/20003",
        "separation/20004-20005",
    ] {
        let g: Vec<Option<Level>> = got.iter().filter(|g| g.0 == id).map(|g| g.1).collect();
        let w: Vec<Option<Level>> = want.iter().filter(|w| w.0 == id).map(|w| w.1).collect();
        assert_eq!(g, w, "{id}");
    }
    let kinds: Vec<EventKind> = events
        .iter()
        .filter(|e| e.id == "floor/20001")
        .map(|e| e.event)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::Raised,
            EventKind::Level,
            EventKind::Level,
            EventKind::Level,
            EventKind::Level,
            EventKind::Cleared
        ]
    );
    let floor_raised = events.iter().find(|e| e.id == "floor/20001").unwrap();
    assert_eq!(
        (
            floor_raised.value.map(|v| v < 1500.0),
            floor_raised.threshold,
            floor_raised.unit.as_str()
        ),
        (Some(true), Some(1500.0), "m"),
        "the transition carries the value that decided and its threshold"
    );
    // Stale: two seconds after each track's last record (the alarmer looks twice a
    // second), on the receive clock.
    for f in &FLIGHTS {
        let last = records
            .iter()
            .filter(|r| r.sensor_id == f.sensor)
            .map(|r| r.recv_epoch_ms)
            .max()
            .unwrap();
        let stale = events
            .iter()
            .find(|e| e.id == format!("silent/{}", f.sensor))
            .unwrap();
        let after = stale.at_ms - last;
        assert!(
            (2000..=3000).contains(&after),
            "silent/{} {after} ms after its last record",
            f.sensor
        );
        assert_eq!(stale.level, Some(Level::Warning));
    }

    // The replay of the window shows each transition at the cursor time it happened:
    // paused one sample before it, the state before; one sample after, the state after.
    let transitions = events.len();
    let archived = || {
        let rows: usize = range
            .psql("SELECT count(*) FROM messages WHERE kind = 'alarm'")
            .trim()
            .parse()
            .unwrap_or(0);
        async move { rows >= transitions }
    };
    tspi_test_support::wait_until(Duration::from_secs(30), archived)
        .await
        .expect("the transitions archived");
    let archived_at: HashMap<(String, u64), i64> = {
        let rows = range.psql(
            "SELECT record->>'id', record->>'seq', (extract(epoch from stream_ts) * 1000)::bigint \
             FROM messages WHERE kind = 'alarm'",
        );
        rows.lines()
            .filter_map(|l| {
                let mut p = l.split('|');
                Some((
                    (p.next()?.to_owned(), p.next()?.parse().ok()?),
                    p.next()?.parse().ok()?,
                ))
            })
            .collect()
    };
    assert_eq!(
        archived_at.len(),
        events.len(),
        "every transition is archived"
    );
    block(|| {
        tab_b.wait("tspiDisplay.pause()").unwrap();
        let mut checked = 0;
        for e in events.iter().filter(|e| e.rule != "silent") {
            let stored = archived_at[&(e.id.clone(), e.seq)];
            let before = events
                .iter()
                .rfind(|x| x.id == e.id && x.seq < e.seq)
                .and_then(|x| x.level);
            for (at, level) in [(e.at_ms - 100, before), (stored + 100, e.level)] {
                let s = tab_b
                    .wait(&format!("tspiDisplay.seek('{}')", iso(at)))
                    .unwrap_or_else(|err| panic!("seek {}: {err}", iso(at)));
                assert_eq!(s["mode"], "replay");
                assert_eq!(s["paused"], true);
                let shown = page_alarms(&s)
                    .get(&e.id)
                    .map(|a| a.0.clone())
                    .unwrap_or(Value::Null);
                assert_eq!(
                    shown,
                    level_json(level),
                    "{} at {} (transition {e:?})",
                    e.id,
                    iso(at)
                );
                checked += 1;
            }
        }
        eprintln!("replay: {checked} cursor positions show the alarms as they were");
        let mid = events
            .iter()
            .find(|e| e.id == "separation/20004-20005" && e.level == Some(Level::Critical))
            .unwrap();
        tab_b
            .wait(&format!("tspiDisplay.seek('{}')", iso(mid.at_ms + 500)))
            .unwrap();
        tab_b.until(
            "document.querySelectorAll('#alarm-list li.alarm.critical').length >= 1",
            Duration::from_secs(5),
            "the replayed critical alarm in the panel",
        );
        tab_b.screenshot(&screenshot_path("alarms-replay.png"));
        tab_b.wait("tspiDisplay.live()").unwrap();
    });

    // 2. Acknowledge in one tab (its Ack button), seen by the other and the console.
    block(|| {
        for tab in [&tab_a, &tab_b] {
            until_alarm(tab, "silent/20001", "a.active", "the stale alarm in force");
        }
        tab_a.until(
            "document.querySelector('#alarm-list li[data-id=\"silent/20001\"] button[data-action=\"ack\"]') !== null",
            Duration::from_secs(5),
            "its Ack button",
        );
        tab_a.eval(
            "document.querySelector('#alarm-list li[data-id=\"silent/20001\"] button[data-action=\"ack\"]').click() || true",
        );
        for tab in [&tab_a, &tab_b] {
            until_alarm(
                tab,
                "silent/20001",
                "a.acknowledged && a.operator === 'ops-a'",
                "the acknowledgement in every tab",
            );
        }
        tab_b.until(
            "document.querySelector('#alarm-list li[data-id=\"silent/20001\"]').textContent.includes('acked by ops-a')",
            Duration::from_secs(5),
            "the panel says who acknowledged it",
        );
        tab_b.screenshot(&screenshot_path("alarms-acknowledged.png"));
    });
    let listed = range.console("console-alarms", &["alarms", "--json"]).await;
    let listed: Value = serde_json::from_str(listed.stdout().trim()).unwrap();
    let silent = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "silent/20001")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(
        (silent["acknowledged"].clone(), silent["operator"].clone()),
        (json!(true), json!("ops-a"))
    );
    // The console acknowledges too, and the tabs see that.
    range
        .console(
            "console-ack",
            &["ack", "silent/20002", "--operator", "ops-console"],
        )
        .await;
    block(|| {
        until_alarm(
            &tab_b,
            "silent/20002",
            "a.acknowledged && a.operator === 'ops-console'",
            "the console's acknowledgement in the page",
        )
    });
    let mut refused = range.programs.spawn(
        "console-ack-unknown",
        range
            .programs
            .command("console", "console", &[], &["ack", "nothing/1"]),
    );
    assert!(!refused.wait(Duration::from_secs(30)).await.success());
    assert!(
        refused.stderr().contains("no alarm"),
        "{}",
        refused.stderr()
    );

    // ... and a restarted display still shows who acknowledged what.
    drop(tab_a);
    drop(tab_b);
    let url = restart_display(&mut range).await;
    block(|| {
        let tab = tspi_test_support::Browser::start(1400, 900);
        tab.goto(&format!("{url}?operator=ops-c"));
        tab.until(
            "window.tspiDisplay !== undefined && tspiDisplay.state().connected",
            Duration::from_secs(20),
            "the restarted display",
        );
        until_alarm(
            &tab,
            "silent/20001",
            "a.acknowledged && a.operator === 'ops-a'",
            "the acknowledgement after a restart",
        );
        let s = tab.eval("tspiDisplay.state()");
        let alarms = page_alarms(&s);
        assert_eq!(alarms.len(), 5, "the five stale alarms: {alarms:?}");
        assert!(!alarms["silent/20003"].1, "the others still unacknowledged");
        tab.screenshot(&screenshot_path("alarms-after-restart.png"));
    });
}
