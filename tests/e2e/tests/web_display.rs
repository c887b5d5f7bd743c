//! The web display live, in real headless Chromium (issue 10, acceptance 1, 2 and 8):
//! generated tracks reach the page within 2 s, placed exactly as the headless player
//! places them; console commands and tags show within 1 s; a tag from the page is the
//! console's message, on the bus and in the archive; the page asks nothing of any other
//! origin.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod range;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::StreamExt;
use range::{block, screenshot_path, Range, RangeOptions, ORIGIN};
use serde_json::Value;
use tspi_core::geo::LocalFrame;

/// The headless player's frames, by (sensor, time_s): WGS-84 position of geocentric
/// frames, the radar's look (range, azimuth, elevation) of spherical ones.
fn headless_frames(lines: &[Value]) -> HashMap<(u64, String), Value> {
    lines
        .iter()
        .filter(|l| l["event"] == "frame")
        .map(|l| {
            let key = (
                l["sensor_id"].as_u64().unwrap(),
                format!("{:.4}", l["time_s"].as_f64().unwrap()),
            );
            (key, l.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tracks_commands_tags_and_nothing_from_elsewhere() {
    let range = Range::start(RangeOptions {
        archive: true,
        alarm_rules: None,
        player_args: &["--operator", "range-ops"],
    })
    .await;
    let tab = block(|| range.tab("?view=map&trail=60"));
    // The headless player on the same stream, every frame, for the comparison.
    let mut headless = range.programs.start(
        "player-headless",
        "player",
        &["--rate", "0", "--duration", "40s"],
    );
    // Its first line (state) says it is subscribed.
    headless.first_line(Duration::from_secs(30)).await;

    // Acceptance 1: 20 tracks within 2 s of the first datagram.
    let sent = Instant::now();
    let _generator = range.generator("generator", 20, 10, "30s");
    let took = block(|| {
        tab.until(
            "tspiDisplay.state().tracks.length === 20",
            Duration::from_secs(10),
            "20 tracks on the page",
        )
    });
    eprintln!(
        "20 tracks shown {:.0} ms after the generator started",
        took.as_secs_f64() * 1e3
    );
    assert!(took <= Duration::from_secs(2), "20 tracks took {took:?}");
    assert!(sent.elapsed() < Duration::from_secs(10));

    // Each placed track grows a trail (a point per 0.5 s of a 60 s trail) behind its
    // marker.
    block(|| {
        tab.until(
            "tspiDisplay.state().tracks.every(t => t.lat_deg === null || t.trail_points >= 3)",
            Duration::from_secs(10),
            "a trail of 3 points behind every placed track",
        )
    });
    // Their positions equal the headless player's for the same record: the page's
    // latest frame of each track, once the headless player has printed it too.
    let state = block(|| tab.eval("tspiDisplay.state()"));
    let track_key = |t: &Value| {
        (
            t["sensor_id"].as_u64().unwrap(),
            format!("{:.4}", t["time_s"].as_f64().unwrap()),
        )
    };
    let printed = tspi_test_support::wait_until(Duration::from_secs(10), || async {
        let frames = headless_frames(&headless.json_lines());
        state["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| frames.contains_key(&track_key(t)))
    })
    .await;
    assert!(printed.is_some(), "the headless player lags the page");
    let frames = headless_frames(&headless.json_lines());
    let origin = {
        let p: Vec<f64> = ORIGIN.split(',').map(|x| x.parse().unwrap()).collect();
        LocalFrame::new(p[0], p[1], p[2]).unwrap()
    };
    let (mut geocentric, mut spherical) = (0, 0);
    for t in state["tracks"].as_array().unwrap() {
        let key = track_key(t);
        let f = frames
            .get(&key)
            .unwrap_or_else(|| panic!("the headless player has no frame {key:?}"));
        let (lat, lon, alt) = match f["type"].as_str().unwrap() {
            "geocentric" => {
                geocentric += 1;
                let p = &f["position"];
                (
                    p["lat_deg"].as_f64().unwrap(),
                    p["lon_deg"].as_f64().unwrap(),
                    p["alt"]["value"].as_f64().unwrap(),
                )
            }
            _ => {
                spherical += 1;
                let v = &f["values"];
                let g = origin
                    .aer_to_geodetic(
                        v["azimuth"]["value"].as_f64().unwrap(),
                        v["elevation"]["value"].as_f64().unwrap(),
                        v["range"]["value"].as_f64().unwrap() * 1000.0,
                    )
                    .unwrap();
                (g.lat_deg, g.lon_deg, g.alt_m)
            }
        };
        assert!(
            (t["lat_deg"].as_f64().unwrap() - lat).abs() < 1e-7,
            "{t} vs {f}"
        );
        assert!(
            (t["lon_deg"].as_f64().unwrap() - lon).abs() < 1e-7,
            "{t} vs {f}"
        );
        assert!(
            (t["alt_m"].as_f64().unwrap() - alt).abs() < 0.01,
            "{t} vs {f}"
        );
        assert_eq!(t["stale"], false);
    }
    assert_eq!((geocentric, spherical), (10, 10));

    // Screenshots: the tracks on the coastline map, and the range view.
    block(|| {
        // Zoomed out far enough for the Pacific coast west of the range.
        tab.wait("tspiDisplay.setView('map', {lat: 34.4, lon: -118.6, zoom: 8})")
            .unwrap();
        tab.screenshot(&screenshot_path("live-map.png"));
        tab.wait("tspiDisplay.setView('range')").unwrap();
        tab.screenshot(&screenshot_path("live-range.png"));
        tab.wait("tspiDisplay.setView('map')").unwrap();
    });

    // Acceptance 2: units and marker colour within 1 s.
    let asked = Instant::now();
    range.console("units", &["units", "imperial"]).await;
    range.console("colour", &["marker-color", "orange"]).await;
    let took = block(|| {
        tab.until(
            "(s => s.units === 'imperial' && s.units_shown.altitude === 'ft' && s.units_shown.speed === 'kn' \
              && s.tracks.length === 20 && s.tracks.every(t => t.colour === 'orange'))(tspiDisplay.state())",
            Duration::from_secs(5),
            "imperial units and orange markers",
        )
    });
    let shown = asked.elapsed();
    eprintln!(
        "units + colour shown {:.0} ms after the console was run (console processes included)",
        shown.as_secs_f64() * 1e3
    );
    assert!(
        took <= Duration::from_secs(1),
        "shown {took:?} after the second console command"
    );
    let s = block(|| tab.eval("tspiDisplay.state()"));
    for t in s["tracks"].as_array().unwrap() {
        let alt = t["alt_m"].as_f64().unwrap();
        assert!(
            (t["altitude"].as_f64().unwrap() - alt * 3.280839895).abs() < 1e-6,
            "{t}"
        );
    }
    // The DOM agrees: the table's heading says feet and knots, the units pill imperial.
    block(|| {
        tab.until(
            "document.getElementById('track-count').textContent.includes('ft, kn') \
             && document.getElementById('units-text').textContent.startsWith('imperial')",
            Duration::from_secs(1),
            "the table in feet and knots",
        )
    });

    // A console tag reaches the timeline; a tag from the page is published as the console
    // publishes it.
    range.console("tag", &["tag", "from the console"]).await;
    block(|| {
        tab.until(
            "tspiDisplay.state().tags.some(t => t.comment === 'from the console')",
            Duration::from_secs(1),
            "the console's tag on the timeline",
        )
    });
    let tag = block(|| tab.wait("tspiDisplay.tag('from the page')")).unwrap();
    let id = tag["id"].as_str().unwrap().to_owned();
    let client = async_nats::connect(range.nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let consumer = js
        .get_stream("TSPI")
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            filter_subject: "tags.>".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    let mut by_id: HashMap<String, Vec<(String, String, Value)>> = HashMap::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), msgs.next()).await {
        let t = tspi_core::Tag::from_cbor(&m.payload).unwrap();
        let msg_id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned())
            .unwrap();
        by_id.entry(t.id.clone()).or_default().push((
            m.subject.to_string(),
            msg_id,
            serde_json::to_value(&t).unwrap(),
        ));
    }
    let page = &by_id[&id];
    let console = by_id
        .values()
        .find(|v| v[0].2["label"] == "from the console")
        .unwrap();
    assert_eq!(page.len(), 2, "{page:?}");
    for (p, c) in page.iter().zip(console) {
        assert_eq!(p.0, c.0, "same subjects: tags.create then tags.broadcast");
        let shape = |m: &str| {
            m.replace(p.2["id"].as_str().unwrap(), "ID")
                .replace(c.2["id"].as_str().unwrap(), "ID")
        };
        let (pm, cm) = (
            shape(&p.1).split(':').count(),
            shape(&c.1).split(':').count(),
        );
        assert_eq!(pm, cm, "message ids alike: {} / {}", p.1, c.1);
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&p.2), keys(&c.2));
    }
    assert_eq!(page[0].2["creator"], "range-ops");
    assert_eq!(page[0].2["status"], "active");
    // And archived.
    let archived = tspi_test_support::wait_until(Duration::from_secs(10), || async {
        range.psql(&format!(
            "SELECT count(*) FROM tags WHERE id = '{id}' AND label = 'from the page'"
        )) == "1"
    })
    .await;
    assert!(archived.is_some(), "the page's tag is not in the archive");

    // Acceptance 8: every request the page made went to the display itself.
    let urls = block(|| tab.requested_urls());
    let own = range.url.trim_end_matches('/').to_owned();
    let ws = own.replace("http://", "ws://");
    assert!(
        urls.iter().any(|u| u.starts_with(&ws)),
        "the WebSocket: {urls:?}"
    );
    assert!(
        urls.iter().any(|u| u.ends_with("countries-50m.json")),
        "{urls:?}"
    );
    let foreign: Vec<&String> = urls
        .iter()
        .filter(|u| !(u.starts_with(&own) || u.starts_with(&ws) || u.starts_with("data:")))
        .collect();
    assert!(foreign.is_empty(), "requests to other origins: {foreign:?}");
    let errors: Vec<Value> = block(|| tab.console())
        .into_iter()
        .filter(|m| m["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "page errors: {errors:?}");
    eprintln!("the page made {} requests, all to {own}", urls.len());
    assert!(!range.player.stderr().contains("panicked"));
}
