//! The player binary on a real NATS server, steered by the console library: display
//! commands apply to the next frames at once (feet and knots after `units imperial`),
//! the bus keeps SI, tags print once, a player started later picks up the command state,
//! garbage is skipped, heartbeats reach the roster, SIGTERM ends cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use async_nats::jetstream;
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::units::UnitSystem;
use tspi_core::{DisplaySetting, StreamPrefix, TelemetryRecord};
use tspi_test_support::{sigterm, NatsServer};

mod player;
use player::{frame, Player};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_tags_and_units_reach_live_players_at_once() {
    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();

    let mut p1 = Player::start(&nats.url(), "p1");
    let state = p1.next("state");
    assert_eq!(state["units"], "metric");
    // The state line says the player's consumer is in place.

    frame(&js, 0).await;
    let f = p1.next("frame");
    assert_eq!(f["values"]["vx"]["unit"], "m/s");
    assert!((f["values"]["vx"]["value"].as_f64().unwrap() - 51.44).abs() < 1e-9);
    assert!((f["position"]["lat_deg"].as_f64().unwrap() - 34.9).abs() < 1e-6);

    let sent = tspi_console::send_command(&js, "test", DisplaySetting::Units(UnitSystem::Imperial))
        .await
        .unwrap();
    let c = p1.next("command");
    assert_eq!(c["payload"]["units"], "imperial");
    assert_eq!(c["cmd_id"], sent.msg_id);
    frame(&js, 1).await;
    let f = p1.next("frame");
    assert_eq!(f["units"], "imperial");
    assert_eq!(f["values"]["vx"]["unit"], "kn");
    assert!((f["values"]["vx"]["value"].as_f64().unwrap() - 99.99).abs() < 0.01);
    assert_eq!(f["position"]["alt"]["unit"], "ft");
    assert!((f["position"]["alt"]["value"].as_f64().unwrap() - 10_000.0).abs() < 1.0);

    // The bus (and so the archive) keeps SI.
    let stream = js.get_stream("TSPI").await.unwrap();
    let stored = stream
        .get_last_raw_message_by_subject("tspi.geocentric.4242")
        .await
        .unwrap();
    let rec = TelemetryRecord::from_cbor(&stored.payload).unwrap();
    match rec.payload {
        tspi_core::RecordPayload::Geocentric(g) => assert_eq!(g.vx_mps, 51.44),
        _ => panic!("geocentric"),
    }

    tspi_console::send_command(&js, "test", DisplaySetting::MarkerColor("#00ff00".into()))
        .await
        .unwrap();
    tspi_console::send_command(
        &js,
        "test",
        DisplaySetting::SessionMetadata {
            name: "Sortie 7".into(),
            id: "S7".into(),
        },
    )
    .await
    .unwrap();
    p1.next("command");
    p1.next("command");
    frame(&js, 2).await;
    let f = p1.next("frame");
    assert_eq!(f["marker_color"], "#00ff00");
    assert_eq!(f["session"]["id"], "S7");

    let (tag, _) = tspi_console::send_tag(&js, "break left", None, "ops1", None)
        .await
        .unwrap();
    let t = p1.next("tag");
    assert_eq!(t["tag"]["id"], tag.id);
    assert_eq!(t["tag"]["label"], "break left");

    // The rolling window: the frames so far come back on request, in the current units.
    let mut p3 = Player::start_with(&nats.url(), "p3", &["--control-stdin", "--clock", "tspi"]);
    p3.next("state");
    for i in 10..15 {
        frame(&js, i).await;
    }
    for _ in 0..5 {
        let f = p3.next("frame");
        // TSPI clock: day 300 + time_s in the receive year, not the receive time.
        let recv = tspi_core::rfc3339::parse_epoch_ms(f["recv_iso"].as_str().unwrap()).unwrap();
        let expected =
            tspi_core::rfc3339::tspi_to_epoch_ms(300, f["time_s"].as_f64().unwrap(), recv);
        assert_eq!(
            f["playhead"],
            tspi_core::rfc3339::format_utc_millis(expected)
        );
        assert_ne!(f["playhead"], f["recv_iso"]);
    }
    p3.send(&serde_json::json!({"op": "rewind", "seconds": 60}));
    let events = p3.until("control_reply");
    let rewound: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "frame" && e["rewind"] == true)
        .collect();
    assert_eq!(rewound.len(), 5);
    assert_eq!(rewound[0]["units"], "imperial");
    assert_eq!(events.last().unwrap()["reply"]["frames"], 5);
    p3.send(&serde_json::json!({"op": "rewind"}));
    assert_eq!(p3.next("control_reply")["reply"]["ok"], false);
    drop(p3);

    // Garbage on telemetry, command and tag subjects is skipped; the player goes on.
    for subject in ["tspi.geocentric.1", "tspi.cmd.display.units", "tags.create"] {
        js.publish(subject, "\u{1}junk".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    frame(&js, 3).await;
    let f = p1.next("frame");
    assert_eq!(f["units"], "imperial");

    // A player started now shows the state in force.
    let mut p2 = Player::start(&nats.url(), "p2");
    let s2 = p2.next("state");
    assert_eq!(s2["units"], "imperial");
    assert_eq!(s2["marker_color"], "#00ff00");
    assert_eq!(s2["session"]["name"], "Sortie 7");

    // Both appear in the console's roster.
    let roster = || async {
        tspi_console::roster(&js, Duration::from_secs(600), Duration::from_secs(15))
            .await
            .unwrap()
    };
    let both = tspi_test_support::wait_until(Duration::from_secs(10), || async {
        let roster = roster().await;
        ["p1", "p2"]
            .iter()
            .all(|id| roster.iter().any(|r| r.client_id == *id))
    })
    .await;
    let roster = roster().await;
    assert!(both.is_some(), "roster: {roster:?}");
    let p1_row = roster.iter().find(|r| r.client_id == "p1").unwrap();
    assert_eq!(p1_row.channel_id, "livestream");
    assert_eq!(p1_row.operator.as_deref(), Some("ops1"));

    for p in [&mut p1, &mut p2] {
        sigterm(p.child.id());
        let end = p.next("end");
        assert!(end["counts"]["frames_out"].as_u64().is_some());
        assert!(p.child.wait().unwrap().success());
    }
    assert_eq!(p1.lines.recv_timeout(Duration::from_secs(1)).ok(), None);
}
