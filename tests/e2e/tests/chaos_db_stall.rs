//! Chaos scenario 4, the database stalls: PostgreSQL is SIGSTOPped (every backend hangs
//! with its connection open, as on a storage freeze) while 5,000 msg/s flow. The archiver
//! must stay bounded in memory, lose nothing, and catch up once the database answers.
//! Then, under synchronous replication, the replica is stopped: every commit waits for it
//! (docs/operations.md, "the synchronous replica is down"), so the archive stalls with
//! its consumer's backlog growing, and resumes exactly when the replica is back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::await_holding_lock)] // the serial guard is held across awaits on purpose

mod chaos;
mod common;

use std::time::{Duration, Instant};

use chaos::{peak_rss_kb, report, seconds, Rig, RigOptions};
use tspi_test_support::{wait_until, NatsCluster, PgServer};

const AIRCRAFT: u32 = 100;
const RATE_HZ: u32 = 50; // 5,000 msg/s

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stall_loses_nothing_and_memory_stays_bounded() {
    chaos::init_logging();
    let _serial = chaos::serial();
    let stall = Duration::from_secs(seconds(10, 60));
    let cluster = NatsCluster::start(3).await;
    let mut rig = Rig::start(&cluster.urls(), RigOptions::default()).await;

    // 1. The primary freezes for `stall` in the middle of the traffic.
    let traffic = stall.as_secs() + 10;
    let mut generator = rig.generator(AIRCRAFT, RATE_HZ, traffic);
    rig.wait_archiving(10_000).await;
    let rss_before = chaos::rss_kb(rig.archiver.pid());
    let frozen = rig.pg.pause().expect("postgres running");
    let mut peak_during = 0;
    let stall_end = Instant::now() + stall;
    while Instant::now() < stall_end {
        peak_during = peak_during.max(chaos::rss_kb(rig.archiver.pid()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waiting = rig.archiver_metric("tspi_archiver_consumer_pending")
        + rig.archiver_metric("tspi_archiver_consumer_ack_pending");
    frozen.resume();
    // Catch-up: until the archive holds what the stream held at SIGCONT (the backlog of
    // the stall), while the traffic goes on.
    let backlog = rig.stream_messages().await.unwrap();
    let caught_up = wait_until(Duration::from_secs(120), || {
        let rows = rig.archived_rows();
        async move { rows >= backlog }
    })
    .await
    .unwrap_or_else(|| panic!("the archive did not catch up: {}", rig.archiver.stderr()));
    let sent = chaos::generator_sent(&mut generator, Duration::from_secs(traffic + 60)).await;
    rig.wait_caught_up(sent, Duration::from_secs(120)).await;
    let accounting = rig.assert_exact(sent).await;
    let peak = peak_rss_kb(rig.archiver.pid());
    report(
        "db-stall",
        &format!(
            "PostgreSQL SIGSTOPped {} s at 5,000 msg/s: archiver RSS {} MiB before, peak {} MiB \
             during (VmHWM {} MiB); {waiting} messages waiting at the end of the stall; \
             the archive held the {backlog} messages of the stream at SIGCONT {:.2} s later; \
             {accounting:?}",
            stall.as_secs(),
            rss_before / 1024,
            peak_during / 1024,
            peak / 1024,
            caught_up.as_secs_f64(),
        ),
    );
    assert!(
        peak < 512 * 1024,
        "the archiver's memory stays bounded during the stall: peak {peak} kB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_stall_under_synchronous_replication_stalls_and_resumes_exactly() {
    chaos::init_logging();
    let _serial = chaos::serial();
    let cluster = NatsCluster::start(3).await;
    let stall = Duration::from_secs(seconds(8, 30));
    let primary = PgServer::start_primary();
    let replica = PgServer::start_replica(&primary);
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    let synchronous = wait_until(Duration::from_secs(30), || {
        let state = primary.psql(
            "postgres",
            "SELECT coalesce(string_agg(sync_state, ','), '') FROM pg_stat_replication",
        );
        async move { state == "sync" }
    })
    .await;
    assert!(
        synchronous.is_some(),
        "the replica is a synchronous standby"
    );

    let mut rig = Rig::start(
        &cluster.urls(),
        RigOptions {
            pg: Some(primary),
            ..RigOptions::default()
        },
    )
    .await;
    let traffic = stall.as_secs() + 8;
    let mut generator = rig.generator(20, 50, traffic); // 1,000 msg/s
    rig.wait_archiving(1_000).await;
    let frozen = replica.pause().expect("replica running");
    // Commits wait for the stopped standby: once the batches in flight have landed
    // (visible on the primary before the standby confirms), the archive stops growing.
    // The standby stays frozen for `stall` (the fault under test): the second half of it
    // must add no row.
    tokio::time::sleep(stall / 2).await;
    let rows_when_stopped = rig.archived_rows();
    tokio::time::sleep(stall / 2).await;
    let rows_after_stall = rig.archived_rows();
    let pending = rig.archiver_metric("tspi_archiver_consumer_pending")
        + rig.archiver_metric("tspi_archiver_consumer_ack_pending");
    frozen.resume();
    let sent = chaos::generator_sent(&mut generator, Duration::from_secs(traffic + 60)).await;
    let catch_up = rig.wait_caught_up(sent, Duration::from_secs(120)).await;
    report(
        "replica-stall",
        &format!(
            "synchronous standby SIGSTOPped {} s at 1,000 msg/s: archive {rows_when_stopped} rows \
             when stopped, {rows_after_stall} at the end (commits wait for the standby); \
             {pending} messages waiting; complete {:.2} s after the standby resumed and the \
             generator ended",
            stall.as_secs(),
            catch_up.archive.as_secs_f64()
        ),
    );
    assert_eq!(
        rows_after_stall, rows_when_stopped,
        "commits wait for the synchronous standby: the archive stands still"
    );
    assert!(pending > 0.0, "the backlog waits in the consumer");
    rig.assert_exact(sent).await;
}
