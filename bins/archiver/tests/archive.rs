//! Archiver on a real NATS server and a real PostgreSQL: every message becomes exactly one
//! row, through an archiver crash (task aborted mid-run) and a database crash, and
//! garbage is stored raw, counted and acknowledged without blocking the stream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use async_nats::jetstream;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tspi_archiver::{run, ArchiverMetrics, ArchiverOptions};
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::units::UnitSystem;
use tspi_core::{
    Datagram, DisplayCommand, DisplaySetting, GeocentricRaw, Payload, StreamPrefix, Tag, TagStatus,
    TelemetryRecord,
};
use tspi_store::SchemaOptions;
use tspi_test_support::{NatsServer, PgServer};

const TELEMETRY: u32 = 6_000;
const GARBAGE: u32 = 25;
/// Garbage on the command and tag subjects too.
const OTHER_GARBAGE: u32 = 2;
const COMMANDS: u32 = 12;
const TAG_STATES: u32 = 8;
const TAG_IDS: u32 = 4;

/// Telemetry published only once the database is down, so the running archiver has
/// work to fail on however fast it archived the rest.
const LATE_TELEMETRY: u32 = 500;

/// Telemetry `range` of `0..TELEMETRY`, with garbage interleaved at fixed positions.
async fn publish_telemetry(js: &jetstream::Context, range: std::ops::Range<u32>) {
    let prefix = StreamPrefix::default();
    let mut acks = Vec::new();
    for i in range {
        let d = Datagram {
            sensor_id: (i % 20) as u16,
            day: 300,
            time_ticks: i,
            status: 0xFF,
            status_flags: 1,
            payload: Payload::Geocentric(GeocentricRaw {
                x: i as i32,
                ..Default::default()
            }),
        };
        let rec = TelemetryRecord::from_datagram(&d, 1_759_057_200_000 + i64::from(i));
        let publish = jetstream::message::PublishMessage::build()
            .payload(rec.to_cbor().into())
            .message_id(tspi_core::msg_id(&d));
        acks.push(
            js.send_publish(prefix.subject(d.kind(), d.sensor_id), publish)
                .await
                .unwrap(),
        );
        if i % (TELEMETRY / GARBAGE) == 0 {
            acks.push(
                js.send_publish(
                    "tspi.geocentric.9",
                    jetstream::message::PublishMessage::build().payload("not cbor \u{ff}".into()),
                )
                .await
                .unwrap(),
            );
        }
        if acks.len() >= 512 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

/// Everything but the late telemetry.
async fn publish_all(js: &jetstream::Context) {
    publish_telemetry(js, 0..TELEMETRY - LATE_TELEMETRY).await;
    for i in 0..COMMANDS {
        let units = if i % 2 == 0 {
            UnitSystem::Imperial
        } else {
            UnitSystem::Metric
        };
        let c = DisplayCommand::new(
            format!("cmd-{i}"),
            "2025-09-28T11:00:00.000Z".into(),
            "test".into(),
            DisplaySetting::Units(units),
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
    for i in 0..TAG_STATES {
        let t = Tag {
            id: format!("tag-{}", i % TAG_IDS),
            ts: "2025-09-28T11:00:00.000Z".into(),
            label: format!("state {i}"),
            status: TagStatus::Active,
            creator: None,
            notes: None,
            updated_ts: format!("2025-09-28T11:00:{i:02}.000Z"),
            extra: None,
        };
        let subject = if i < TAG_IDS {
            "tags.create"
        } else {
            "tags.update"
        };
        let m = jetstream::message::PublishMessage::build()
            .payload(t.to_cbor().into())
            .message_id(t.msg_id(subject));
        js.send_publish(subject, m).await.unwrap().await.unwrap();
    }
    for subject in ["tspi.cmd.display.units", "tags.create"] {
        let m = jetstream::message::PublishMessage::build().payload("\u{1}\u{2}junk".into());
        js.send_publish(subject, m).await.unwrap().await.unwrap();
    }
}

fn start(
    js: &jetstream::Context,
    url: &str,
    metrics: &ArchiverMetrics,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let shutdown = CancellationToken::new();
    let options = ArchiverOptions {
        batch_max: 250,
        ack_wait: Duration::from_secs(3),
        ..ArchiverOptions::default()
    };
    let pool = tspi_store::pool(url, 2).unwrap();
    let task = tokio::spawn(run(
        options,
        js.clone(),
        pool,
        metrics.clone(),
        shutdown.clone(),
    ));
    (shutdown, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_rows_through_archiver_and_database_crashes() {
    exact_rows(PgServer::start_primary(), SchemaOptions::default()).await;
}

/// The same on TimescaleDB hypertables, whose chunk is compressed halfway through: the
/// rest is written into the compressed chunk, and a second archiver (another durable
/// consumer) then gets every message again and must add no row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_rows_on_timescaledb_with_compressed_chunks_and_a_full_redelivery() {
    let Some(pg) = PgServer::start_timescaledb("exact_rows_on_timescaledb") else {
        return;
    };
    let schema = SchemaOptions {
        timescale: tspi_store::TimescaleMode::Require,
        chunk_interval: Some(Duration::from_secs(3600)),
        compress_after: Some(Duration::from_secs(7 * 86_400)),
        retain: None,
    };
    exact_rows(pg, schema).await;
}

async fn exact_rows(mut pg: PgServer, schema: SchemaOptions) {
    let timescale = schema.timescale == tspi_store::TimescaleMode::Require;
    let nats = NatsServer::start().await;
    let db = pg.create_database("archive");
    let url = pg.url(&db);
    let pool = tspi_store::pool(&url, 1).unwrap();
    let mut client = pool.get().await.unwrap();
    let first = tspi_store::migrate(&mut client, &schema).await.unwrap();
    assert_eq!(first.version, tspi_store::known_version());
    assert_eq!(
        tspi_store::migrate(&mut client, &schema).await.unwrap(),
        first,
        "re-runnable"
    );
    drop(client);

    let nc = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(nc.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&nc, &js, &spec).await.unwrap();
    publish_all(&js).await;
    let total = u64::from(TELEMETRY + GARBAGE + OTHER_GARBAGE + COMMANDS + TAG_STATES);
    let count = |pg: &PgServer| {
        pg.psql(&db, "SELECT count(*) FROM messages")
            .parse::<u64>()
            .unwrap()
    };

    // Crash 1: the archiver task is aborted (no drain) after some progress.
    // One set of metrics across both runs: they count what each instance did.
    let metrics = ArchiverMetrics::new(&mut Registry::default());
    let (_s, task) = start(&js, &url, &metrics);
    tspi_test_support::wait_until(Duration::from_secs(30), || async { count(&pg) >= 1_000 }).await;
    task.abort();
    let _ = task.await;
    if timescale {
        // What follows lands in chunks compressed now (the policy's 7 days would never
        // come in a test): inserts into compressed chunks, and redeliveries of rows
        // already there.
        let compressed = pg.psql(
            &db,
            "SELECT count(compress_chunk(c, if_not_compressed => TRUE)) FROM show_chunks('messages') c",
        );
        assert_ne!(compressed, "0", "a chunk to compress");
    }

    // Crash 2: PostgreSQL is killed under a running archiver (with pooled connections)
    // and restarted once the archiver has failed to write the late telemetry.
    let before = count(&pg);
    let (shutdown, task) = start(&js, &url, &metrics);
    // Running: writing what crash 1 left, or (nothing left) its pull request waiting.
    let running = || {
        let js = js.clone();
        let written = count(&pg) > before;
        async move {
            written
                || tspi_test_support::consumer_info(&js, "TSPI", "archiver")
                    .await
                    .num_waiting
                    > 0
        }
    };
    tspi_test_support::wait_until(Duration::from_secs(30), running)
        .await
        .expect("the second archiver at work");
    pg.kill();
    publish_telemetry(&js, TELEMETRY - LATE_TELEMETRY..TELEMETRY).await;
    tspi_test_support::wait_until(Duration::from_secs(30), || async {
        metrics.db_errors.get() > 0
    })
    .await;
    pg.restart();

    tspi_test_support::wait_until(Duration::from_secs(60), || async { count(&pg) >= total }).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();

    let exactly_once = |pg: &PgServer, what: &str| {
        assert_eq!(count(pg), total, "{what}");
        assert_eq!(
            pg.psql(&db, "SELECT count(DISTINCT stream_seq) FROM messages"),
            total.to_string(),
            "{what}"
        );
    };
    exactly_once(&pg, "exactly one row per message");
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*) FROM messages WHERE kind = 'telemetry'"
        ),
        TELEMETRY.to_string()
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM messages WHERE kind = 'invalid' AND error IS NOT NULL AND raw = convert_to('not cbor \u{ff}', 'UTF8')"),
        GARBAGE.to_string(),
        "garbage stored raw with its error"
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM messages WHERE kind = 'telemetry' AND record->>'type' = 'geocentric' AND sensor_id IS NOT NULL AND msg_id IS NOT NULL"),
        TELEMETRY.to_string()
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM messages WHERE kind = 'invalid'"),
        (GARBAGE + OTHER_GARBAGE).to_string()
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM commands"),
        COMMANDS.to_string()
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM messages WHERE kind = 'command'"),
        COMMANDS.to_string()
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM messages WHERE kind = 'tag'"),
        TAG_STATES.to_string()
    );
    // Latest state per tag: the update (state 4..7) of each of the 4 ids.
    assert_eq!(
        pg.psql(
            &db,
            "SELECT string_agg(id || '=' || label, ',' ORDER BY id) FROM tags"
        ),
        "tag-0=state 4,tag-1=state 5,tag-2=state 6,tag-3=state 7"
    );
    assert!(metrics.rejects.get() >= u64::from(GARBAGE + OTHER_GARBAGE));
    assert!(
        metrics.db_errors.get() > 0,
        "the database crash was seen and survived"
    );
    let mut consumer = js
        .get_stream("TSPI")
        .await
        .unwrap()
        .get_consumer::<jetstream::consumer::pull::Config>("archiver")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.num_pending, 0);
    assert_eq!(
        info.num_ack_pending, 0,
        "everything archived was acknowledged"
    );
    if !timescale {
        return;
    }
    assert_ne!(
        pg.psql(
            &db,
            "SELECT count(*) FROM timescaledb_information.chunks \
             WHERE hypertable_name = 'messages' AND is_compressed"
        ),
        "0",
        "rows were written into compressed chunks"
    );
    // Every message once more, through another durable consumer: all conflicts.
    let again = ArchiverMetrics::new(&mut Registry::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        ArchiverOptions {
            durable: "archiver-again".into(),
            batch_max: 500,
            ..ArchiverOptions::default()
        },
        js.clone(),
        tspi_store::pool(&url, 2).unwrap(),
        again.clone(),
        shutdown.clone(),
    ));
    // Done when the second consumer has had every message and acknowledged it.
    let finished = tspi_test_support::wait_until(Duration::from_secs(60), || async {
        let stream = js.get_stream("TSPI").await.unwrap();
        let consumer = stream
            .get_consumer::<jetstream::consumer::pull::Config>("archiver-again")
            .await;
        match consumer {
            Ok(mut c) => {
                let info = c.info().await.unwrap();
                info.num_pending == 0
                    && info.num_ack_pending == 0
                    && info.delivered.stream_sequence >= total
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(finished.is_some(), "the second archiver did not finish");
    shutdown.cancel();
    task.await.unwrap().unwrap();
    exactly_once(&pg, "a full redelivery added no row");
    assert_eq!(
        again.rows_written.get(),
        0,
        "the redelivered messages were all recognised as stored"
    );
}

/// SIGTERM while the database is down: the drain is bounded, nothing is acknowledged
/// that was not stored, and a later archiver stores it all.
/// A NATS server with `TSPI`, and a migrated database `name` on a fresh PostgreSQL.
async fn servers(
    name: &str,
) -> (
    NatsServer,
    PgServer,
    String,
    String,
    deadpool_postgres::Pool,
    jetstream::Context,
) {
    let nats = NatsServer::start().await;
    let pg = PgServer::start_primary();
    let db = pg.create_database(name);
    let url = pg.url(&db);
    let pool = tspi_store::pool(&url, 2).unwrap();
    tspi_store::migrate(&mut pool.get().await.unwrap(), &SchemaOptions::default())
        .await
        .unwrap();
    let nc = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(nc.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&nc, &js, &spec).await.unwrap();
    (nats, pg, db, url, pool, js)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_the_database_down_is_bounded_and_loses_nothing() {
    let (_nats, mut pg, db, url, pool, js) = servers("bounded").await;
    pg.kill();
    publish_all(&js).await;
    publish_telemetry(&js, TELEMETRY - LATE_TELEMETRY..TELEMETRY).await;
    let total = u64::from(TELEMETRY + GARBAGE + OTHER_GARBAGE + COMMANDS + TAG_STATES);

    let metrics = ArchiverMetrics::new(&mut Registry::default());
    let shutdown = CancellationToken::new();
    let options = ArchiverOptions {
        batch_max: 250,
        ack_wait: Duration::from_secs(2),
        shutdown_retry: Duration::from_secs(1),
        ..ArchiverOptions::default()
    };
    let task = tokio::spawn(run(
        options,
        js.clone(),
        pool,
        metrics.clone(),
        shutdown.clone(),
    ));
    let failing = || {
        let failed = metrics.db_errors.get() > 0;
        async move { failed }
    };
    tspi_test_support::wait_until(Duration::from_secs(30), failing)
        .await
        .expect("the archiver failing to write");
    let stopping = Instant::now();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "drain took {:?}",
        stopping.elapsed()
    );
    assert_eq!(metrics.rows_written.get(), 0);

    pg.restart();
    let (shutdown, task) = start(&js, &url, &metrics);
    let reached = tspi_test_support::wait_until(Duration::from_secs(60), || async {
        pg.psql(&db, "SELECT count(*) FROM messages")
            .parse::<u64>()
            .unwrap()
            >= total
    })
    .await;
    assert!(
        reached.is_some(),
        "not everything archived after the restart"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM messages")
            .parse::<u64>()
            .unwrap(),
        total
    );
}

/// A durable consumer an earlier version made (ack wait 30 s) is brought to `--ack-wait`
/// when the archiver starts, so deliveries lost with a node do not wait 30 s to come again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_consumer_gets_the_configured_ack_wait() {
    let (_nats, _pg, _db, url, _pool, js) = servers("ackwait").await;
    let stream = js.get_stream("TSPI").await.unwrap();
    stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("archiver".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    publish_telemetry(&js, 0..100).await;

    let metrics = ArchiverMetrics::new(&mut Registry::default());
    let (shutdown, task) = start(&js, &url, &metrics);
    let reached = tspi_test_support::wait_until(Duration::from_secs(30), || async {
        metrics.rows_written.get() >= 100
    })
    .await;
    assert!(reached.is_some(), "archived {}", metrics.rows_written.get());
    let info = tspi_test_support::consumer_info(&js, "TSPI", "archiver").await;
    assert_eq!(
        info.config.ack_wait,
        Duration::from_secs(3),
        "the archiver's --ack-wait"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
