//! Chaos scenario 1, the bouncer (after nats-server's own chaos tests): generator →
//! producer → R3 cluster at 5,000 msg/s, with the archiver and a durable receiver
//! reading, while random nodes are killed -9 and restarted every 1–3 s, sometimes two at
//! once so that quorum is lost and ingest must stall and resume. Ends with exact
//! accounting, and measures how soon the consumers are caught up once the cluster is
//! healthy again (goal: within 5 s).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::await_holding_lock)] // the serial guard is held across awaits on purpose

mod chaos;
mod common;

use std::time::Duration;

use chaos::{report, seconds, Rig, RigOptions};
use tspi_test_support::{bounce, BouncePlan, NatsCluster};

const AIRCRAFT: u32 = 100;
const RATE_HZ: u32 = 50; // 100 × 50 Hz = 5,000 msg/s

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bouncer_kills_nodes_during_traffic_and_nothing_is_lost() {
    chaos::init_logging();
    let _serial = chaos::serial();
    let secs = seconds(15, 60);
    let mut cluster = NatsCluster::start(3).await;
    let urls = cluster.urls();
    let monitors: Vec<String> = (0..3).map(|i| cluster.node(i).monitor_url()).collect();
    let mut rig = Rig::start(&urls, RigOptions::default()).await;

    let mut generator = rig.generator(AIRCRAFT, RATE_HZ, secs);
    let plan = BouncePlan {
        duration: Duration::from_secs(secs),
        interval: (Duration::from_secs(1), Duration::from_secs(3)),
        down: (Duration::from_millis(200), Duration::from_millis(1500)),
        double_kill: 0.25,
        seed: std::env::var("TSPI_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20261130),
    };
    let bouncer = tokio::task::spawn_blocking(move || {
        let log = bounce(&mut cluster, &plan);
        (cluster, log)
    });
    let sent = chaos::generator_sent(&mut generator, Duration::from_secs(secs + 60)).await;
    let (_cluster, log) = bouncer.await.unwrap();
    let doubles = log.iter().filter(|b| b.nodes.len() == 2).count();
    assert!(!log.is_empty(), "the bouncer bounced");

    let healthy = rig.wait_healthy(&monitors).await;
    let catch_up = rig.wait_caught_up(sent, Duration::from_secs(120)).await;
    let accounting = rig.assert_exact(sent).await;
    report(
        "bouncer",
        &format!(
            "{secs} s at {} msg/s, {} bounces ({doubles} double kills, quorum lost); \
             healthy {:.2} s after the last restart; then stream complete +{:.2} s, \
             archive +{:.2} s, receiver +{:.2} s (longest standstill while behind: archive \
             {:.2} s, receiver {:.2} s); producer retries {}, queue dropped {}; {accounting:?}",
            AIRCRAFT * RATE_HZ,
            log.len(),
            healthy.as_secs_f64(),
            catch_up.stream.as_secs_f64(),
            catch_up.archive.as_secs_f64(),
            catch_up.receiver.as_secs_f64(),
            catch_up.archive_longest_stall.as_secs_f64(),
            catch_up.receiver_longest_stall.as_secs_f64(),
            rig.producer_metric("tspi_producer_publish_retries_total"),
            rig.producer_metric("tspi_producer_datagrams_dropped_total"),
        ),
    );
    assert_eq!(
        rig.producer_metric("tspi_producer_datagrams_dropped_total"),
        0.0
    );
    // Resuming promptly: neither consumer stands still while behind for longer than a
    // redelivery (--ack-wait 5 s) plus a margin. How long the whole catch-up takes is
    // throughput (docs/reliability.md reports release builds; CI runs debug builds).
    let stall = catch_up
        .archive_longest_stall
        .max(catch_up.receiver_longest_stall);
    assert!(
        stall <= Duration::from_secs(8),
        "a consumer stood still for {stall:?} while behind: {catch_up:?}"
    );
    assert!(
        catch_up.archive.max(catch_up.receiver) <= catch_up.stream + Duration::from_secs(60),
        "consumers caught up within 60 s of the stream being complete: {catch_up:?}"
    );
}
