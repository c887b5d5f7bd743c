//! Chaos scenario 2, partitions: the `TSPI` stream leader is cut off from the other two
//! nodes for a while (its route links black out; its clients stay connected to it), then
//! healed. Separately, the producer's own connection to every node is cut: its queue
//! absorbs the outage, and what overflows a deliberately small queue is counted, not
//! lost silently.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::await_holding_lock)] // the serial guard is held across awaits on purpose

mod chaos;
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chaos::{report, seconds, Rig, RigOptions};
use tspi_test_support::{wait_until, LinkProxy, NatsCluster};

const AIRCRAFT: u32 = 100;
const RATE_HZ: u32 = 50; // 5,000 msg/s

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_leader_partitioned_from_its_peers_loses_nothing() {
    chaos::init_logging();
    let _serial = chaos::serial();
    let cut = Duration::from_secs(10);
    let secs = seconds(20, 40);
    let mut cluster = NatsCluster::start_partitionable(3, "");
    cluster.wait_jetstream(Duration::from_secs(60)).await;
    let urls = cluster.urls();
    let monitors: Vec<String> = (0..3).map(|i| cluster.node(i).monitor_url()).collect();
    let mut rig = Rig::start(&urls, RigOptions::default()).await;

    let mut generator = rig.generator(AIRCRAFT, RATE_HZ, secs);
    rig.wait_archiving(5_000).await;
    let leader = stream_leader(&rig).await;
    let index = leader
        .trim_start_matches('n')
        .parse::<usize>()
        .unwrap()
        .checked_sub(1)
        .unwrap();
    // Watch from a node on the majority side: its own view of the stream's raft group
    // (/jsz), since a stream info request needs the leader that is cut off.
    let majority = (index + 1) % 3;
    cluster.isolate(index);
    let isolated_at = Instant::now();
    let cut_off = wait_until(Duration::from_secs(5), || {
        let routes = cluster_routes(&mut cluster, index);
        async move { routes == 0 }
    })
    .await;
    assert!(cut_off.is_some(), "the isolated node lost its routes");
    // The majority elects a new leader while the old one is cut off.
    let new_leader = wait_until(cut, || {
        let seen = leader_in_jsz(&mut cluster, majority);
        let old = leader.clone();
        async move { seen.is_some_and(|l| l != old) }
    })
    .await;
    // The partition lasts `cut` however soon the majority elected: its length is the fault.
    tokio::time::sleep(cut.saturating_sub(isolated_at.elapsed())).await;
    cluster.heal();
    let healed = Instant::now();
    let sent = chaos::generator_sent(&mut generator, Duration::from_secs(secs + 60)).await;
    let heal_to_generator_end = healed.elapsed();
    let healthy = rig.wait_healthy(&monitors).await;
    let catch_up = rig.wait_caught_up(sent, Duration::from_secs(120)).await;
    let accounting = rig.assert_exact(sent).await;
    report(
        "partition-leader",
        &format!(
            "stream leader {leader} cut off from its peers for {} s at 5,000 msg/s; new leader \
             elected after {}; the generator ended {:.2} s after the heal, the cluster was \
             healthy {:.2} s later; then stream +{:.2} s, archive +{:.2} s, receiver +{:.2} s; producer \
             retries {}; {accounting:?}",
            cut.as_secs(),
            new_leader.map_or("no election within the cut".to_owned(), |d| format!(
                "{:.2} s",
                d.as_secs_f64()
            )),
            heal_to_generator_end.as_secs_f64(),
            healthy.as_secs_f64(),
            catch_up.stream.as_secs_f64(),
            catch_up.archive.as_secs_f64(),
            catch_up.receiver.as_secs_f64(),
            rig.producer_metric("tspi_producer_publish_retries_total"),
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_link_cut_is_absorbed_by_its_queue_and_overflow_is_counted() {
    chaos::init_logging();
    let _serial = chaos::serial();
    let cut = Duration::from_secs(10);
    let secs = seconds(20, 40);
    // no_advertise: the producer must not learn the nodes' real addresses from the
    // servers and reconnect around its cut links.
    let mut cluster = NatsCluster::start_with_block_lines(3, "", "no_advertise: true");
    cluster.wait_jetstream(Duration::from_secs(60)).await;
    let proxies: Vec<LinkProxy> = (0..3)
        .map(|i| {
            let port = cluster.node(i).port();
            LinkProxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
        })
        .collect();
    let proxied: Vec<String> = proxies.iter().map(LinkProxy::nats_url).collect();
    // 10 s at 5,000 msg/s is 50,000 datagrams: a 20,000 queue must overflow.
    let mut rig = Rig::start(
        &cluster.urls(),
        RigOptions {
            producer_urls: Some(&proxied),
            producer_args: &["--queue-capacity", "20000"],
            ..RigOptions::default()
        },
    )
    .await;
    let mut generator = rig.generator(AIRCRAFT, RATE_HZ, secs);
    rig.wait_archiving(5_000).await;
    for p in &proxies {
        p.cut();
    }
    // The link stays cut for `cut`: the outage is the fault under test.
    tokio::time::sleep(cut).await;
    let depth_at_heal = rig.producer_metric("tspi_producer_publish_queue_depth");
    for p in &proxies {
        p.heal();
    }
    let sent = chaos::generator_sent(&mut generator, Duration::from_secs(secs + 60)).await;
    // Every datagram is either stored or counted as dropped.
    let received = rig.producer_metric("tspi_producer_datagrams_received_total") as u64;
    assert_eq!(received, sent, "the producer read every datagram");
    let settled = wait_until(Duration::from_secs(120), || async {
        let dropped = rig.producer_metric("tspi_producer_datagrams_dropped_total") as u64;
        rig.stream_messages().await.unwrap_or(0) + dropped == sent
    })
    .await;
    let dropped = rig.producer_metric("tspi_producer_datagrams_dropped_total") as u64;
    assert!(
        settled.is_some(),
        "stored + dropped = sent: {} + {dropped} of {sent}\n{}",
        rig.stream_messages().await.unwrap_or(0),
        rig.producer.stderr()
    );
    assert!(
        dropped > 0,
        "a 20,000 queue overflows in a 10 s cut at 5,000/s"
    );
    let stored = sent - dropped;
    rig.wait_caught_up(stored, Duration::from_secs(120)).await;
    let accounting = rig.assert_exact(stored).await;
    report(
        "partition-producer",
        &format!(
            "producer's links to all three nodes cut {} s at 5,000 msg/s with --queue-capacity \
             20000: queue depth {depth_at_heal} at the heal, {dropped} dropped and counted \
             (tspi_producer_datagrams_dropped_total), {stored} stored; {accounting:?}",
            cut.as_secs()
        ),
    );
    drop(proxies);
    let _ = cluster.node(0);
}

async fn stream_leader_opt(rig: &Rig) -> Option<String> {
    leader_seen_by(&rig.admin).await
}

/// The `TSPI` leader as node `i` sees it (`/jsz`, its own raft state).
fn leader_in_jsz(cluster: &mut NatsCluster, i: usize) -> Option<String> {
    let jsz = cluster
        .node(i)
        .monitor_json("/jsz?accounts=true&streams=true")?;
    jsz["account_details"]
        .as_array()?
        .iter()
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == "TSPI")
        .and_then(|s| s["cluster"]["leader"].as_str().map(str::to_owned))
}

async fn leader_seen_by(js: &jetstream::Context) -> Option<String> {
    let mut stream = js.get_stream("TSPI").await.ok()?;
    let info = stream.info().await.ok()?;
    info.cluster.as_ref()?.leader.clone()
}

/// Route connections node `i` has now (`/routez`).
fn cluster_routes(cluster: &mut NatsCluster, i: usize) -> u64 {
    cluster
        .node(i)
        .monitor_json("/routez")
        .and_then(|v| v["num_routes"].as_u64())
        .unwrap_or(u64::MAX)
}

async fn stream_leader(rig: &Rig) -> String {
    wait_until(Duration::from_secs(30), || async {
        stream_leader_opt(rig).await.is_some()
    })
    .await
    .expect("TSPI has a leader");
    stream_leader_opt(rig).await.unwrap()
}
