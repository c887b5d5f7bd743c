//! Failover: the archiver writes through a multi-host URL with
//! `target_session_attrs=read-write`; the primary dies, the streaming replica is
//! promoted, and the archiver goes on writing to it with no row lost. Replication is
//! synchronous here (`synchronous_standby_names = '*'`): with asynchronous replication a
//! commit the archiver already acknowledged could be missing on the promoted replica.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use async_nats::jetstream;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tspi_archiver::{run, ArchiverMetrics, ArchiverOptions};
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::{Datagram, GeocentricRaw, Payload, StreamPrefix, TelemetryRecord};
use tspi_test_support::{NatsServer, PgServer, PG_USER};

const N: u32 = 4_000;

/// Published only after the primary is killed, so the archiver has writes to fail on
/// however fast it archived the rest.
const LATE: u32 = 500;

async fn publish(nc: &async_nats::Client, js: &jetstream::Context, range: std::ops::Range<u32>) {
    for i in range {
        let d = Datagram {
            sensor_id: 1,
            day: 2,
            time_ticks: i,
            status: 0,
            status_flags: 0,
            payload: Payload::Geocentric(GeocentricRaw::default()),
        };
        js.publish(
            "tspi.geocentric.1",
            TelemetryRecord::from_datagram(&d, 0).to_cbor().into(),
        )
        .await
        .unwrap();
    }
    nc.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_follows_a_promoted_replica_without_losing_rows() {
    let nats = NatsServer::start().await;
    let mut primary = PgServer::start_primary();
    let db = primary.create_database("failover");
    {
        let pool = tspi_store::pool(&primary.url(&db), 1).unwrap();
        let mut c = pool.get().await.unwrap();
        tspi_store::migrate(&mut c, &tspi_store::SchemaOptions::default())
            .await
            .unwrap();
    }
    let replica = PgServer::start_replica(&primary);
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    let reached = tspi_test_support::wait_until(Duration::from_secs(30), || async {
        primary.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
        ) == "1"
    })
    .await;
    assert!(reached.is_some(), "replica never became synchronous");

    let nc = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(nc.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&nc, &js, &spec).await.unwrap();
    publish(&nc, &js, 0..N - LATE).await;

    let url = format!(
        "postgresql://{PG_USER}@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write&connect_timeout=2",
        primary.port(),
        replica.port()
    );
    let metrics = ArchiverMetrics::new(&mut Registry::default());
    let shutdown = CancellationToken::new();
    let options = ArchiverOptions {
        batch_max: 100,
        batch_wait: Duration::from_millis(50),
        ack_wait: Duration::from_secs(3),
        ..ArchiverOptions::default()
    };
    let pool = tspi_store::pool(&url, 2).unwrap();
    let task = tokio::spawn(run(
        options,
        js.clone(),
        pool,
        metrics.clone(),
        shutdown.clone(),
    ));
    let count = |pg: &PgServer| {
        pg.psql(&db, "SELECT count(*) FROM messages")
            .parse::<u32>()
            .unwrap()
    };
    while count(&primary) < 1_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    primary.kill();
    publish(&nc, &js, N - LATE..N).await;
    tspi_test_support::wait_until(Duration::from_secs(30), || async {
        metrics.db_errors.get() > 0
    })
    .await;
    replica.promote();

    tspi_test_support::wait_until(Duration::from_secs(60), || async { count(&replica) >= N }).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        count(&replica),
        N,
        "every message archived once on the new primary"
    );
    assert!(metrics.db_errors.get() > 0, "the failover was noticed");
}
