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
use tspi_core::{Datagram, GeocentricRaw, Payload, StreamPrefix, TelemetryRecord};
use tspi_test_support::{NatsServer, PgServer};

const TELEMETRY: u32 = 6_000;
const GARBAGE: u32 = 25;

async fn publish_all(js: &jetstream::Context) {
    let prefix = StreamPrefix::default();
    let mut acks = Vec::new();
    for i in 0..TELEMETRY {
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

fn start(
    js: &jetstream::Context,
    url: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    ArchiverMetrics,
) {
    let metrics = ArchiverMetrics::new(&mut Registry::default());
    let shutdown = CancellationToken::new();
    let options = ArchiverOptions {
        stream: "TSPI".into(),
        durable: "archiver".into(),
        database_url: url.to_owned(),
        batch_max: 250,
        batch_wait: Duration::from_millis(100),
        ack_wait: Duration::from_secs(3),
    };
    let task = tokio::spawn(run(options, js.clone(), metrics.clone(), shutdown.clone()));
    (shutdown, task, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_rows_through_archiver_and_database_crashes() {
    let nats = NatsServer::start().await;
    let mut pg = PgServer::start_primary();
    let db = pg.create_database("archive");
    let url = pg.url(&db);
    let mut client = tspi_archiver::connect_db(&url).await.unwrap();
    assert_eq!(tspi_store::migrate(&mut client).await.unwrap(), 1);
    assert_eq!(
        tspi_store::migrate(&mut client).await.unwrap(),
        1,
        "re-runnable"
    );
    drop(client);

    let nc = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(nc.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&nc, &js, &spec).await.unwrap();
    publish_all(&js).await;
    let total = u64::from(TELEMETRY + GARBAGE);
    let count = |pg: &PgServer| {
        pg.psql(&db, "SELECT count(*) FROM messages")
            .parse::<u64>()
            .unwrap()
    };

    // Crash 1: the archiver task is aborted (no drain) after some progress.
    let (_s, task, _) = start(&js, &url);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&pg) < 1_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let _ = task.await;

    // Crash 2: PostgreSQL is killed and restarted under a running archiver.
    let (shutdown, task, metrics) = start(&js, &url);
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.restart();

    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pg) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();

    assert_eq!(count(&pg), total, "exactly one row per message");
    assert_eq!(
        pg.psql(&db, "SELECT count(DISTINCT stream_seq) FROM messages")
            .parse::<u64>()
            .unwrap(),
        total
    );
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
}
