//! Historical playback through the real archiver and `replayer serve` (issue 4,
//! acceptance 2 and 4): a replayed tag prints when the playhead reaches its moment; a
//! seek forward emits the skipped commands and tags before the next frame; a seek to a
//! tag lands on it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod player;

use std::time::{Duration, Instant};

use player::{frame, Player};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::units::UnitSystem;
use tspi_core::{DisplaySetting, StreamPrefix};
use tspi_test_support::{sigterm, NatsServer, PgServer};

fn ms(v: &Value) -> i64 {
    tspi_core::rfc3339::parse_epoch_ms(v.as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_tags_land_on_the_playhead_and_seeks_replay_what_they_skip() {
    let nats = NatsServer::start().await;
    let pg = PgServer::start_primary();
    let db = pg.create_database("historical");
    let pool = tspi_store::pool(&pg.url(&db), 4).unwrap();
    tspi_store::migrate(&mut pool.get().await.unwrap(), &Default::default())
        .await
        .unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();
    let stop_archiver = CancellationToken::new();
    let archiver = tokio::spawn(tspi_archiver::run(
        tspi_archiver::ArchiverOptions::default(),
        js.clone(),
        pool.clone(),
        tspi_archiver::ArchiverMetrics::new(&mut Registry::default()),
        stop_archiver.clone(),
    ));

    // Six seconds live: frames at 50 Hz; commands and tags at known moments.
    let t0_ms = tspi_runtime::now_epoch_ms();
    let t0 = Instant::now();
    let mut tags = Vec::new();
    let mut done = [false; 5];
    let mut published = 0u64;
    for i in 0..300u32 {
        tokio::time::sleep_until((t0 + Duration::from_millis(20 * u64::from(i))).into()).await;
        let s = t0.elapsed().as_secs_f64();
        for (k, when) in [1.0, 2.0, 3.0, 4.0, 4.5].into_iter().enumerate() {
            if s >= when && !done[k] {
                done[k] = true;
                match k {
                    0 => {
                        tspi_console::send_command(
                            &js,
                            "t",
                            DisplaySetting::Units(UnitSystem::Imperial),
                        )
                        .await
                        .unwrap();
                        published += 1;
                    }
                    2 => {
                        tspi_console::send_command(
                            &js,
                            "t",
                            DisplaySetting::MarkerColor("red".into()),
                        )
                        .await
                        .unwrap();
                        published += 1;
                    }
                    4 => {
                        tspi_console::send_command(
                            &js,
                            "t",
                            DisplaySetting::Units(UnitSystem::Metric),
                        )
                        .await
                        .unwrap();
                        published += 1;
                    }
                    _ => {
                        let (tag, _) =
                            tspi_console::send_tag(&js, &format!("tag at {when}"), None, "t", None)
                                .await
                                .unwrap();
                        tags.push(tag);
                        published += 2; // create + broadcast
                    }
                }
            }
        }
        frame(&js, i).await;
        published += 1;
    }
    let reached = tspi_test_support::wait_until(Duration::from_secs(30), || async {
        pg.psql(&db, "SELECT count(*) FROM messages")
            .parse::<u64>()
            .unwrap()
            >= published
    })
    .await;
    assert!(reached.is_some(), "archive incomplete");
    stop_archiver.cancel();
    archiver.await.unwrap().unwrap();
    // The archive holds SI whatever the displays showed, and both tags.
    assert_eq!(
        pg.psql(&db, "SELECT string_agg(DISTINCT record->'payload'->>'vx_mps', ',') FROM messages WHERE kind = 'telemetry'"),
        "51.44"
    );
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM tags"), "2");
    let (tag_x, tag_y) = (&tags[0], &tags[1]);
    let x_ms = tspi_core::rfc3339::parse_epoch_ms(&tag_x.ts).unwrap();
    let y_ms = tspi_core::rfc3339::parse_epoch_ms(&tag_y.ts).unwrap();

    let ctx = tspi_replayer::session::ReplayContext {
        handle: tokio::runtime::Handle::current(),
        pool: pool.clone(),
        client: client.clone(),
    };
    let stop_serve = CancellationToken::new();
    let server = tokio::spawn(tspi_replayer::serve(ctx, "TSPI".into(), stop_serve.clone()));
    let mut p = Player::start_with(
        &nats.url(),
        "hist",
        &["--source", "historical", "--room", "h1", "--control-stdin"],
    );
    p.next("state");
    let serving = || {
        let asked = client.request("player.h1.ctrl", "{}".into());
        async move { asked.await.is_ok() }
    };
    tspi_test_support::wait_until(Duration::from_secs(15), serving)
        .await
        .expect("replayer serve answers");

    let iso = |ms: i64| tspi_core::rfc3339::format_utc_millis(ms);
    p.send(&json!({"op": "play", "start": iso(t0_ms), "end": iso(t0_ms + 6_500), "speed": 2}));
    // Acceptance 2: tag X prints when the frames reach its moment.
    let events = p.until("tag");
    let tag_event = events.last().unwrap();
    assert_eq!(tag_event["tag"]["id"], tag_x.id);
    let before: Vec<&Value> = events.iter().filter(|e| e["event"] == "frame").collect();
    let last_before = ms(&before.last().unwrap()["recv_iso"]);
    assert!(
        last_before < x_ms + 60,
        "tag shown late: frame at {last_before}, tag at {x_ms}"
    );
    let next_frame = p.next("frame");
    assert!(ms(&next_frame["recv_iso"]) >= x_ms - 20, "tag shown early");
    assert_eq!(
        next_frame["units"], "imperial",
        "units command at 1 s applied"
    );

    // Acceptance 4: seek forward past marker red (3 s), tag Y (4 s), units metric (4.5 s).
    let target = t0_ms + 4_800;
    p.send(&json!({"op": "seek", "to": iso(target)}));
    let seek = p.until("seek");
    assert_eq!(seek.last().unwrap()["phase"], "skipped");
    let events = p.until("frame");
    let first = events.last().unwrap();
    assert!(ms(&first["recv_iso"]) >= target, "lands at the target");
    let seen: Vec<String> = events
        .iter()
        .filter_map(|e| match e["event"].as_str() {
            Some("command") => Some(e["name"].as_str().unwrap().to_owned()),
            Some("tag") => Some(format!("tag {}", e["tag"]["label"].as_str().unwrap())),
            _ => None,
        })
        .collect();
    // In the order they happened: a skipped tag is past once its own message arrives.
    assert_eq!(
        seen,
        ["display.marker_color", "tag tag at 4", "display.units"],
        "skipped commands and tags before the first frame: {events:?}"
    );
    assert_eq!(first["units"], "metric");
    assert_eq!(first["marker_color"], "red");

    // Seek to tag X (backward): lands on it.
    p.send(&json!({"op": "seek", "tag": tag_x.id}));
    let seek = p.until("seek");
    assert_eq!(seek.last().unwrap()["phase"], "state");
    let events = p.until("frame");
    let landed = events.last().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "tag" && e["tag"]["id"] == tag_x.id),
        "{events:?}"
    );
    let at = ms(&landed["recv_iso"]);
    assert!(
        (x_ms..x_ms + 100).contains(&at),
        "landed at {at}, tag at {x_ms}"
    );
    assert_eq!(landed["units"], "imperial", "state in force at the tag");
    let _ = y_ms;

    p.send(&json!({"op": "stop"}));
    let reply = p.until("control_reply");
    assert!(reply.iter().any(|e| e["event"] == "control_reply"));
    p.send(&json!({"op": "fly"}));
    let bad = p.next("control_reply");
    assert_eq!(bad["reply"]["ok"], false);
    sigterm(p.child.id());
    p.next("end");
    assert!(p.child.wait().unwrap().success());
    stop_serve.cancel();
    server.await.unwrap().unwrap();
}
