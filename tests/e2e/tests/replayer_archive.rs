//! The replayer against a real NATS server and a real PostgreSQL archive filled by the
//! real archiver: pacing at 1x and 10x, order, command state and earlier tags first,
//! `--tag` windows, and `serve` obeying pause, seek (to a tag) and stop; on plain
//! PostgreSQL and on compressed TimescaleDB chunks, and while TimescaleDB's retention drops
//! old chunks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tspi_archiver::{ArchiverMetrics, ArchiverOptions};
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::units::UnitSystem;
use tspi_core::{
    Datagram, DisplayCommand, DisplaySetting, GeocentricRaw, Payload, StreamPrefix, Tag, TagStatus,
    TelemetryRecord,
};
use tspi_replayer::session::{Clock, ReplayContext, SessionSpec};
use tspi_test_support::{NatsServer, PgServer};

fn iso(t: OffsetDateTime) -> String {
    tspi_core::rfc3339::format_utc_millis((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// What the live run put on the bus, with the moments the test needs.
struct Recorded {
    window_start: OffsetDateTime,
    window_end: OffsetDateTime,
    tag_a: String,
    tag_c: String,
    tag_c_at: OffsetDateTime,
    total: u64,
}

async fn publish_command(js: &jetstream::Context, id: &str, setting: DisplaySetting) {
    let c = DisplayCommand::new(
        id.into(),
        iso(OffsetDateTime::now_utc()),
        "test".into(),
        setting,
    )
    .unwrap();
    let m = jetstream::message::PublishMessage::build()
        .payload(c.to_cbor().into())
        .message_id(c.cmd_id.clone());
    js.send_publish(c.subject(), m)
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn publish_tag(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    status: TagStatus,
    at: OffsetDateTime,
) {
    let t = Tag {
        id: id.into(),
        ts: iso(at),
        label: format!("tag {id}"),
        status,
        creator: Some("test".into()),
        notes: None,
        updated_ts: iso(OffsetDateTime::now_utc()),
        extra: None,
    };
    let m = jetstream::message::PublishMessage::build()
        .payload(t.to_cbor().into())
        .message_id(t.msg_id(subject));
    js.send_publish(subject.to_owned(), m)
        .await
        .unwrap()
        .await
        .unwrap();
}

/// 11.5 s of live traffic: 2 sensors at 50 Hz, commands and tags at known moments.
async fn record(js: &jetstream::Context) -> Recorded {
    let prefix = StreamPrefix::default();
    let t0 = Instant::now();
    let wall0 = OffsetDateTime::now_utc();
    let at = |s: f64| wall0 + time::Duration::seconds_f64(s);
    let mut total = 0u64;
    let mut done = [false; 6];
    let mut tag_c_at = wall0;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut frame = 0u32;
    while t0.elapsed() < Duration::from_millis(11_500) {
        tick.tick().await;
        let s = t0.elapsed().as_secs_f64();
        let events: [(f64, usize); 6] =
            [(0.0, 0), (0.2, 1), (0.4, 2), (0.5, 3), (3.0, 4), (5.0, 5)];
        for (when, i) in events {
            if s >= when && !done[i] {
                done[i] = true;
                total += 1;
                match i {
                    0 => {
                        publish_command(
                            js,
                            "c-imperial",
                            DisplaySetting::Units(UnitSystem::Imperial),
                        )
                        .await
                    }
                    1 => {
                        publish_command(js, "c-red", DisplaySetting::MarkerColor("red".into()))
                            .await
                    }
                    2 => {
                        publish_tag(
                            js,
                            "tags.create",
                            "tag-a",
                            TagStatus::Active,
                            OffsetDateTime::now_utc(),
                        )
                        .await
                    }
                    3 => {
                        publish_tag(
                            js,
                            "tags.create",
                            "tag-b",
                            TagStatus::Active,
                            OffsetDateTime::now_utc(),
                        )
                        .await;
                        publish_tag(
                            js,
                            "tags.delete",
                            "tag-b",
                            TagStatus::Deleted,
                            OffsetDateTime::now_utc(),
                        )
                        .await;
                        total += 1;
                    }
                    4 => {
                        publish_command(js, "c-metric", DisplaySetting::Units(UnitSystem::Metric))
                            .await
                    }
                    _ => {
                        // Tags carry millisecond times.
                        tag_c_at =
                            tspi_replayer::parse_time(&iso(OffsetDateTime::now_utc())).unwrap();
                        publish_tag(js, "tags.create", "tag-c", TagStatus::Active, tag_c_at).await;
                    }
                }
            }
        }
        for sensor in [1u16, 2] {
            let d = Datagram {
                sensor_id: sensor,
                day: 271,
                time_ticks: 1_000_000 + frame * 200,
                status: 0xFF,
                status_flags: 0,
                payload: Payload::Geocentric(GeocentricRaw {
                    x: frame as i32,
                    ..Default::default()
                }),
            };
            let rec = TelemetryRecord::from_datagram(&d, tspi_runtime::now_epoch_ms());
            let m = jetstream::message::PublishMessage::build()
                .payload(rec.to_cbor().into())
                .message_id(tspi_core::msg_id(&d));
            js.send_publish(prefix.subject(d.kind(), sensor), m)
                .await
                .unwrap()
                .await
                .unwrap();
            total += 1;
        }
        frame += 1;
    }
    Recorded {
        window_start: at(1.0),
        window_end: at(11.0),
        tag_a: "tag-a".into(),
        tag_c: "tag-c".into(),
        tag_c_at,
        total,
    }
}

/// A recording (see [`record`]) archived by the real archiver into a fresh database.
struct Archived {
    _nats: NatsServer,
    db: String,
    pool: deadpool_postgres::Pool,
    client: async_nats::Client,
    rec: Recorded,
}

async fn archive_a_recording(pg: &PgServer, schema: &tspi_store::SchemaOptions) -> Archived {
    let nats = NatsServer::start().await;
    let db = pg.create_database("replay");
    let pool = tspi_store::pool(&pg.url(&db), 4).unwrap();
    tspi_store::migrate(&mut pool.get().await.unwrap(), schema)
        .await
        .unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();
    let stop_archiver = CancellationToken::new();
    let archiver = tokio::spawn(tspi_archiver::run(
        ArchiverOptions::default(),
        js.clone(),
        pool.clone(),
        ArchiverMetrics::new(&mut Registry::default()),
        stop_archiver.clone(),
    ));
    let rec = record(&js).await;
    let archived = || {
        let n = pg.psql(&db, "SELECT count(*) FROM messages");
        async move { n.parse::<u64>().is_ok_and(|n| n >= rec.total) }
    };
    tspi_test_support::wait_until(Duration::from_secs(30), archived)
        .await
        .expect("the archiver catches up");
    stop_archiver.cancel();
    archiver.await.unwrap().unwrap();
    Archived {
        _nats: nats,
        db,
        pool,
        client,
        rec,
    }
}

#[derive(Debug, Clone)]
struct Got {
    at: Instant,
    phase: String,
    seq: i64,
    subject: String,
    original_time: OffsetDateTime,
    recv_ms: Option<i64>,
}

type Collected = std::sync::Arc<std::sync::Mutex<Vec<Got>>>;

/// Wait until what `collect` has gathered satisfies `condition`.
async fn wait_for(what: &str, got: &Collected, condition: impl Fn(&[Got]) -> bool) {
    let holds = || {
        let holds = condition(&got.lock().unwrap());
        async move { holds }
    };
    let waited = tspi_test_support::wait_until(Duration::from_secs(15), holds).await;
    assert!(waited.is_some(), "{what}: not within 15 s");
}

fn windows(got: &[Got]) -> usize {
    got.iter().filter(|g| g.phase == "window").count()
}

fn collect(
    mut sub: async_nats::Subscriber,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Vec<Got>>>,
) {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    let task = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let h = m.headers.clone().unwrap();
            let header = |k: &str| h.get(k).map(|v| v.as_str().to_owned()).unwrap();
            let phase = header("Tspi-Replay-Phase");
            if phase == "begin" || phase == "ready" {
                // A segment marker: its number and counts, as `seq` and `recv_ms`.
                let marker = tspi_core::playout::SegmentMarker::from_bytes(&m.payload).unwrap();
                assert_eq!(header("Tspi-Replay-Segment"), marker.segment.to_string());
                assert!(
                    m.subject.ends_with(&format!("replay.{phase}")),
                    "{}",
                    m.subject
                );
                sink.lock().unwrap().push(Got {
                    at: Instant::now(),
                    phase,
                    seq: marker.segment as i64,
                    subject: format!("{:?}", marker.kind),
                    original_time: tspi_replayer::parse_time(&marker.at).unwrap(),
                    recv_ms: Some((marker.state * 1_000_000 + marker.snapshot) as i64),
                });
                continue;
            }
            let recv_ms = TelemetryRecord::from_cbor(&m.payload)
                .ok()
                .map(|r| r.recv_epoch_ms);
            sink.lock().unwrap().push(Got {
                at: Instant::now(),
                phase: header("Tspi-Replay-Phase"),
                seq: header("Tspi-Original-Seq").parse().unwrap(),
                subject: header("Tspi-Original-Subject"),
                original_time: tspi_replayer::parse_time(&header("Tspi-Original-Time")).unwrap(),
                recv_ms,
            });
            assert_eq!(h.get("Tspi-Replay").unwrap().as_str(), "1");
            assert!(
                h.get("Nats-Msg-Id").is_none(),
                "playout must not be de-duplicated"
            );
        }
    });
    (task, got)
}

async fn window_count(
    pg: &PgServer,
    db: &str,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> usize {
    pg.psql(
        db,
        &format!(
            "SELECT count(*) FROM messages WHERE stream_ts >= '{}' AND stream_ts < '{}' AND kind <> 'invalid'",
            iso(start),
            iso(end)
        ),
    )
    .parse()
    .unwrap()
}

/// The archived messages of a playout, without the segment markers.
fn content(got: &[Got]) -> Vec<Got> {
    got.iter()
        .filter(|g| g.phase != "begin" && g.phase != "ready")
        .cloned()
        .collect()
}

/// Checks one playout: a `begin` marker, the state, `ready` (counting the state), then
/// the window in order, paced.
fn check_playout(got: &[Got], expected_state: &[&str], window: usize, speed: f64) -> f64 {
    assert_eq!(got[0].phase, "begin", "a segment opens with its marker");
    assert_eq!((got[0].seq, got[0].subject.as_str()), (1, "Restart"));
    assert_eq!(got[expected_state.len() + 1].phase, "ready");
    assert_eq!(
        got[expected_state.len() + 1].recv_ms,
        Some(expected_state.len() as i64 * 1_000_000),
        "ready counts the state messages"
    );
    let got = &content(got)[..];
    let state: Vec<&Got> = got.iter().take_while(|g| g.phase == "state").collect();
    let state_subjects: Vec<&str> = state.iter().map(|g| g.subject.as_str()).collect();
    assert_eq!(
        state_subjects, expected_state,
        "command state then earlier tags, first"
    );
    let frames: Vec<&Got> = got[state.len()..].iter().collect();
    assert!(frames.iter().all(|g| g.phase == "window"));
    assert_eq!(frames.len(), window, "every message of the window, once");
    assert!(
        frames.windows(2).all(|w| w[0].seq < w[1].seq),
        "stream order kept"
    );
    // Receive clock: recv time for telemetry, stream time for the rest.
    let orig = |g: &Got| {
        g.recv_ms
            .map_or(g.original_time.unix_timestamp_nanos() as f64 / 1e9, |ms| {
                ms as f64 / 1e3
            })
    };
    let (first, last) = (frames[0], frames[frames.len() - 1]);
    let original_span = orig(last) - orig(first);
    let played = last.at.duration_since(first.at).as_secs_f64();
    let expected = original_span / speed;
    eprintln!("speed {speed}: original span {original_span:.3} s, played in {played:.3} s (expected {expected:.3} s)");
    played
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_paces_orders_and_obeys_controls() {
    replay_and_controls(PgServer::start_primary(), Default::default()).await;
}

/// The same replay, seek and tag windows read from TimescaleDB chunks that were
/// compressed once the archive was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_compressed_timescaledb_chunks() {
    let Some(pg) = PgServer::start_timescaledb("replay_reads_compressed_timescaledb_chunks") else {
        return;
    };
    replay_and_controls(
        pg,
        tspi_store::SchemaOptions {
            timescale: tspi_store::TimescaleMode::Require,
            chunk_interval: Some(Duration::from_secs(3600)),
            compress_after: Some(Duration::from_secs(7 * 86_400)),
            retain: None,
        },
    )
    .await;
}

async fn replay_and_controls(pg: PgServer, schema: tspi_store::SchemaOptions) {
    let compress = schema.compress_after.is_some();
    let Archived {
        _nats,
        db,
        pool,
        client,
        rec,
    } = archive_a_recording(&pg, &schema).await;
    if compress {
        pg.psql(
            &db,
            "SELECT count(compress_chunk(c)) FROM show_chunks('messages') c",
        );
        assert_eq!(
            pg.psql(
                &db,
                "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks \
                 WHERE hypertable_name = 'messages'"
            ),
            "t",
            "every chunk the replay reads is compressed"
        );
    }
    let window = window_count(&pg, &db, rec.window_start, rec.window_end).await;
    assert!(window > 900, "{window} messages in the 10 s window");

    let ctx = ReplayContext {
        handle: tokio::runtime::Handle::current(),
        pool: pool.clone(),
        client: client.clone(),
    };
    let play = |room: &str, start, end, speed| {
        tspi_replayer::play(
            ctx.clone(),
            SessionSpec {
                room: room.into(),
                stream: "TSPI".into(),
                start,
                end,
                speed,
                clock: Clock::Receive,
                paused: false,
                segment: None,
                snapshot: None,
            },
            CancellationToken::new(),
        )
    };
    let state_at_start = [
        "tspi.cmd.display.units",
        "tspi.cmd.display.marker_color",
        "tags.create",
    ];

    // 1x: 10 s ± 2 %.
    let (task, got) = collect(client.subscribe("player.one.playout.>").await.unwrap());
    let summary = play("one", rec.window_start, rec.window_end, 1.0)
        .await
        .unwrap();
    wait_for("the 1x window delivered", &got, |g| windows(g) >= window).await;
    task.abort();
    let got = got.lock().unwrap().clone();
    let played = check_playout(&got, &state_at_start, window, 1.0);
    assert!((played - 10.0).abs() <= 0.2, "1x window took {played:.3} s");
    assert_eq!(summary.status.published as usize, window);
    assert_eq!(summary.status.state_published, 3);
    // The state is the one in force: imperial (not the later metric), tag A (not B, deleted).
    assert_eq!(
        content(&got)[0].seq,
        1,
        "units imperial is the first message of the stream"
    );
    eprintln!("1x pacing error: {:?}", summary.pacing_error);

    // 10x: 1 s ± 10 %.
    let (task, got) = collect(client.subscribe("player.ten.playout.>").await.unwrap());
    let summary = play("ten", rec.window_start, rec.window_end, 10.0)
        .await
        .unwrap();
    wait_for("the 10x window delivered", &got, |g| windows(g) >= window).await;
    task.abort();
    let played = check_playout(&got.lock().unwrap(), &state_at_start, window, 10.0);
    assert!((played - 1.0).abs() <= 0.1, "10x window took {played:.3} s");
    eprintln!("10x pacing error: {:?}", summary.pacing_error);

    // --tag: the window around tag C (2 s), at 10x. State: red, then metric; tag A before.
    let (start, end) = tspi_replayer::resolve_window(
        &ctx,
        &tspi_replayer::WindowSpec::Tag {
            id: rec.tag_c.clone(),
            window: Duration::from_secs(2),
        },
    )
    .await
    .unwrap();
    assert_eq!(start, rec.tag_c_at - time::Duration::SECOND);
    let (task, got) = collect(client.subscribe("player.tag.playout.>").await.unwrap());
    let summary = play("tag", start, end, 10.0).await.unwrap();
    let published = summary.status.published as usize;
    wait_for("the tag window delivered", &got, |g| {
        windows(g) >= published
    })
    .await;
    task.abort();
    let got = got.lock().unwrap().clone();
    let around = window_count(&pg, &db, start, end).await;
    check_playout(
        &got,
        &[
            "tspi.cmd.display.marker_color",
            "tspi.cmd.display.units",
            "tags.create",
        ],
        around,
        10.0,
    );
    assert!(
        got.iter()
            .any(|g| g.phase == "window" && g.subject == "tags.create"),
        "tag C itself is inside its window"
    );
    assert!(tspi_replayer::resolve_window(
        &ctx,
        &tspi_replayer::WindowSpec::Tag {
            id: "nope".into(),
            window: Duration::from_secs(2)
        }
    )
    .await
    .is_err());

    // serve: play, pause (nothing flows), resume, seek to a tag, speed, stop.
    let stop_serve = CancellationToken::new();
    let server = tokio::spawn(tspi_replayer::serve(
        ctx.clone(),
        "TSPI".into(),
        stop_serve.clone(),
    ));
    let answering = || {
        let client = client.clone();
        async move { client.request("player.r2.ctrl", "{}".into()).await.is_ok() }
    };
    tspi_test_support::wait_until(Duration::from_secs(15), answering)
        .await
        .expect("replayer serve answers on player.*.ctrl");
    let (task, got) = collect(client.subscribe("player.r2.playout.>").await.unwrap());
    let request = |body: serde_json::Value| {
        let client = client.clone();
        async move {
            let reply = client
                .request("player.r2.ctrl", serde_json::to_vec(&body).unwrap().into())
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
        }
    };
    let r = request(serde_json::json!({"op": "pause"})).await;
    assert_eq!(r["ok"], false, "no session yet: {r}");
    let r = request(serde_json::json!({"op": "play", "start": iso(rec.window_start), "end": iso(rec.window_end)})).await;
    assert_eq!(r["ok"], true, "{r}");
    wait_for("data before the pause", &got, |g| windows(g) > 50).await;
    let r = request(serde_json::json!({"op": "pause"})).await;
    assert_eq!(r["status"]["state"], "paused", "{r}");
    let paused_count = got.lock().unwrap().len();
    assert!(
        paused_count > 50,
        "about a second of data before the pause: {paused_count}"
    );
    // The behaviour under test: a second of pause in which nothing may arrive.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        got.lock().unwrap().len() <= paused_count + 1,
        "nothing flows while paused"
    );
    let r = request(serde_json::json!({"op": "resume"})).await;
    assert_eq!(r["status"]["state"], "playing", "{r}");
    wait_for("flows again after resume", &got, |g| {
        g.len() > paused_count + 10
    })
    .await;
    let before_seek = got.lock().unwrap().len();
    let r = request(serde_json::json!({"op": "seek", "tag": rec.tag_c})).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = request(serde_json::json!({"op": "speed", "speed": 4})).await;
    assert_eq!(r["status"]["speed"], 4.0, "{r}");
    let tag_c_at = rec.tag_c_at;
    wait_for("frames at the seek's target", &got, |g| {
        g[before_seek..]
            .iter()
            .filter(|g| g.phase == "window" && g.original_time >= tag_c_at)
            .count()
            >= 10
    })
    .await;
    let after_all: Vec<Got> = got.lock().unwrap()[before_seek..].to_vec();
    let forward = after_all
        .iter()
        .find(|g| g.phase == "begin")
        .expect("a new segment");
    assert_eq!((forward.seq, forward.subject.as_str()), (2, "Forward"));
    let after = content(&after_all);
    // A forward seek emits what it skips (commands and tags, in order) before the frames
    // at the target: the units command at 3 s is seen exactly once, played or skipped.
    let landed = after
        .iter()
        .position(|g| g.phase == "window" && g.original_time >= rec.tag_c_at)
        .expect("frames at the target");
    assert!(after[landed..].iter().all(|g| g.phase == "window"));
    assert!(after[..landed]
        .iter()
        .all(|g| g.phase == "window" || g.phase == "skipped"));
    let all = content(&got.lock().unwrap());
    let metric_units = all
        .iter()
        .filter(|g| g.subject == "tspi.cmd.display.units" && g.phase != "state")
        .count();
    assert_eq!(metric_units, 1, "the skipped-over units command, once");
    let frames: Vec<&Got> = after[landed..].iter().collect();
    assert!(
        frames.iter().all(|g| g.original_time >= rec.tag_c_at),
        "lands on the tag"
    );
    assert_eq!(
        frames[0].subject, "tags.create",
        "the tag itself comes first after the seek"
    );
    let r = request(serde_json::json!({"op": "stop"})).await;
    assert_eq!(r["status"]["state"], "stopped", "{r}");
    let stopped = got.lock().unwrap().len();
    // The behaviour under test: nothing may arrive in the time after a stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(got.lock().unwrap().len(), stopped, "nothing after stop");

    // A display's replay: segment 7, paused at its start, with the picture there (each
    // track's last record and a 2 s trail); resumed, the window flows.
    let (pic_task, pic) = collect(client.subscribe("player.pic.playout.>").await.unwrap());
    client.flush().await.unwrap();
    let ask = |body: serde_json::Value| {
        let client = client.clone();
        async move {
            let reply = client
                .request("player.pic.ctrl", serde_json::to_vec(&body).unwrap().into())
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
        }
    };
    let at = rec.window_start + time::Duration::seconds(5);
    let r = ask(
        serde_json::json!({"op": "play", "start": iso(at), "end": iso(rec.window_end),
        "paused": true, "segment": 7, "snapshot": {"trail": 2, "lookback": 10}}),
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    wait_for("the ready marker", &pic, |g| {
        g.iter().any(|g| g.phase == "ready")
    })
    .await;
    // The behaviour under test: paused, nothing may follow the picture.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shown = pic.lock().unwrap().clone();
    assert_eq!(
        shown.last().unwrap().phase,
        "ready",
        "paused: nothing after the picture"
    );
    assert_eq!((shown[0].phase.as_str(), shown[0].seq), ("begin", 7));
    let snapshot: Vec<&Got> = shown.iter().filter(|g| g.phase == "snapshot").collect();
    let at_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    for sensor in ["tspi.geocentric.1", "tspi.geocentric.2"] {
        let of: Vec<i64> = snapshot
            .iter()
            .filter(|g| g.subject == sensor)
            .map(|g| g.recv_ms.unwrap())
            .collect();
        // 20 trail steps of 0.1 s at 50 Hz, plus the last record before the trail.
        assert_eq!(of.len(), 21, "{sensor}: {of:?}");
        assert!(of.windows(2).all(|w| w[0] < w[1]), "oldest first");
        let last = *of.last().unwrap();
        assert!(
            last <= at_ms && at_ms - last < 40,
            "{sensor}: last at {last}, cursor {at_ms}"
        );
    }
    let ready = shown.iter().find(|g| g.phase == "ready").unwrap();
    assert_eq!(ready.recv_ms.unwrap() % 1_000_000, snapshot.len() as i64);
    let r = ask(serde_json::json!({"op": "resume"})).await;
    assert_eq!(r["ok"], true, "{r}");
    wait_for("flows after resume", &pic, |g| windows(g) > 0).await;
    ask(serde_json::json!({"op": "stop"})).await;
    pic_task.abort();

    // Archive questions for a timeline: coverage and tags.
    let r = ask(
        serde_json::json!({"op": "coverage", "start": iso(rec.window_start),
        "end": iso(rec.window_end), "buckets": 10}),
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    let counts: Vec<i64> = serde_json::from_value(r["coverage"]["counts"].clone()).unwrap();
    assert_eq!(counts.len(), 10);
    let messages: i64 = pg
        .psql(
            &db,
            &format!(
                "SELECT count(*) FROM messages WHERE stream_ts >= '{}' AND stream_ts < '{}'",
                iso(rec.window_start),
                iso(rec.window_end)
            ),
        )
        .parse()
        .unwrap();
    assert_eq!(
        counts.iter().sum::<i64>(),
        messages,
        "every message of the window, by sequence"
    );
    assert!(
        counts.iter().all(|c| *c > 50),
        "data all through the window: {counts:?}"
    );
    assert_eq!(r["coverage"]["bucket_s"], 1.0);
    let r = ask(serde_json::json!({"op": "tags",
        "start": iso(rec.window_start - time::Duration::HOUR),
        "end": iso(rec.window_end + time::Duration::HOUR)}))
    .await;
    let tags: Vec<(String, String)> = r["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().into(),
                t["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        [
            ("tag-a".into(), "active".into()),
            ("tag-b".into(), "deleted".into()),
            ("tag-c".into(), "active".into())
        ],
        "{r}"
    );
    for bad in [
        serde_json::json!({"op": "coverage", "start": iso(rec.window_end), "end": iso(rec.window_start)}),
        serde_json::json!({"op": "coverage", "start": iso(rec.window_start), "end": iso(rec.window_end), "buckets": 0}),
        serde_json::json!({"op": "tags", "start": "yesterday", "end": iso(rec.window_end)}),
        serde_json::json!({"op": "play", "start": iso(at), "end": iso(rec.window_end), "snapshot": {"trail": 7200}}),
    ] {
        let r = ask(bad.clone()).await;
        assert_eq!(r["ok"], false, "{bad} -> {r}");
    }

    let r = request(serde_json::json!({"op": "fly"})).await;
    assert_eq!(r["ok"], false);
    let reply = client
        .request("player.r2.ctrl", "\u{1}garbage".into())
        .await
        .unwrap();
    // Not JSON, so treated as CBOR: the answer is a CBOR error, not silence.
    let answer: serde_json::Value = ciborium::from_reader(&reply.payload[..]).unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
    stop_serve.cancel();
    server.await.unwrap().unwrap();
    task.abort();
    let _ = rec.tag_a;
}

/// TimescaleDB's retention policy drops old chunks while a replay reads a recent window:
/// the drop does not wait for the replay, and the replay neither stalls nor loses a
/// message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_chunks_while_a_replay_reads() {
    let Some(pg) = PgServer::start_timescaledb("retention_drops_old_chunks_while_a_replay_reads")
    else {
        return;
    };
    let schema = tspi_store::SchemaOptions {
        timescale: tspi_store::TimescaleMode::Require,
        chunk_interval: Some(Duration::from_secs(3600)),
        retain: Some(Duration::from_secs(30 * 86_400)),
        ..Default::default()
    };
    let Archived {
        _nats,
        db,
        pool,
        client,
        rec,
    } = archive_a_recording(&pg, &schema).await;

    // Two days of older archive, 60 days back: 48 one-hour chunks past retention.
    pg.psql(
        &db,
        "INSERT INTO messages (stream, stream_seq, stream_ts, subject, kind, msg_id, recv_ts,
                               sensor_id, day, time_s, record, raw, error)
         SELECT stream, stream_seq - 1000000 * (h + 1), stream_ts - interval '60 days' - interval '1 hour' * h,
                subject, kind, msg_id, recv_ts - interval '60 days' - interval '1 hour' * h,
                sensor_id, day, time_s, record, raw, error
         FROM messages, generate_series(0, 47) h",
    );
    let old_chunks =
        "SELECT count(*) FROM show_chunks('messages', older_than => interval '30 days')";
    assert_eq!(pg.psql(&db, old_chunks), "48");
    let window = window_count(&pg, &db, rec.window_start, rec.window_end).await;
    assert!(window > 900, "{window} messages in the 10 s window");

    let ctx = ReplayContext {
        handle: tokio::runtime::Handle::current(),
        pool: pool.clone(),
        client: client.clone(),
    };
    let (task, got) = collect(client.subscribe("player.ret.playout.>").await.unwrap());
    let replay = tokio::spawn(tspi_replayer::play(
        ctx.clone(),
        SessionSpec {
            room: "ret".into(),
            stream: "TSPI".into(),
            start: rec.window_start,
            end: rec.window_end,
            speed: 1.0,
            clock: Clock::Receive,
            paused: false,
            segment: None,
            snapshot: None,
        },
        CancellationToken::new(),
    ));
    // Two seconds into the replay, the retention job runs.
    let under_way = || {
        let n = content(&got.lock().unwrap()).len();
        async move { n > 200 }
    };
    tspi_test_support::wait_until(Duration::from_secs(10), under_way)
        .await
        .expect("the replay is under way");
    let job = pg.psql(
        &db,
        "SELECT job_id FROM timescaledb_information.jobs
         WHERE proc_name = 'policy_retention' AND hypertable_name = 'messages'",
    );
    let dropping = Instant::now();
    let (pg, db) = tokio::task::spawn_blocking(move || {
        pg.psql(&db, &format!("CALL run_job({job})"));
        (pg, db)
    })
    .await
    .unwrap();
    let drop_took = dropping.elapsed();
    assert!(
        !replay.is_finished(),
        "the retention job finished while the replay was still reading ({drop_took:?})"
    );
    assert_eq!(pg.psql(&db, old_chunks), "0", "old chunks dropped");
    let summary = replay.await.unwrap().unwrap();
    // The last published messages are still on their way to the subscriber.
    let delivered = || {
        let n = content(&got.lock().unwrap()).len();
        async move { n >= window + 3 }
    };
    tspi_test_support::wait_until(Duration::from_secs(10), delivered)
        .await
        .expect("the whole playout is delivered");
    task.abort();
    let got = got.lock().unwrap().clone();
    let played = check_playout(
        &got,
        &[
            "tspi.cmd.display.units",
            "tspi.cmd.display.marker_color",
            "tags.create",
        ],
        window,
        1.0,
    );
    eprintln!("retention job took {drop_took:?} during the replay; replay took {played:.3} s");
    assert!((played - 10.0).abs() <= 0.2, "1x window took {played:.3} s");
    assert_eq!(summary.status.published as usize, window);
    assert_eq!(
        window_count(&pg, &db, rec.window_start, rec.window_end).await,
        window,
        "the recent window is untouched"
    );
}
