//! Chaos scenario 3, a site-wide crash: all three nodes are killed -9 at the same instant
//! while acknowledgements stream back, then restarted. Every message JetStream
//! acknowledged must be in the stream afterwards. Run with the deploy setting
//! (`sync_interval: always`, deploy/nats/node.conf) and with the server's default
//! interval, and report both.
//!
//! A kill -9 stops the processes, not the machine: what they wrote is in the kernel's
//! page cache and reaches the disk anyway. A power cut also loses that cache, which is
//! what the default interval leaves exposed (Jepsen's NATS 2.12 analysis: 131,418 of
//! 930,005 acknowledged writes lost). docs/reliability.md says what this test does and
//! does not show.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::await_holding_lock)] // the serial guard is held across awaits on purpose

mod chaos;
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::stream::{FuturesUnordered, StreamExt};
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::{Datagram, GeocentricRaw, Payload, StreamPrefix, TelemetryRecord};
use tspi_test_support::{wait_until, NatsCluster};

struct Outcome {
    acked: u64,
    stored_acked: u64,
    lost: u64,
    stored_total: u64,
}

async fn crash_all_after_acks(jetstream_lines: &str, kill_after: u64) -> Outcome {
    let mut cluster = NatsCluster::start_with_block_lines(3, jetstream_lines, "");
    cluster.wait_jetstream(Duration::from_secs(60)).await;
    let client = tspi_e2e::client(&cluster.urls()).await;
    let js = jetstream::new(client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();

    // Publish with 512 in flight; note every acknowledged id. Kill all three nodes the
    // moment `kill_after` acks are in, with publishes still in flight.
    let mut acked: HashSet<String> = HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    let mut next: u32 = 0;
    let mut crashed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !crashed && Instant::now() < deadline {
        while in_flight.len() < 512 {
            let d = Datagram {
                sensor_id: 7,
                day: 100,
                time_ticks: next,
                status: 0,
                status_flags: 0,
                payload: Payload::Geocentric(GeocentricRaw::default()),
            };
            let id = tspi_core::msg_id(&d);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let js = js.clone();
            let payload = TelemetryRecord::from_datagram(&d, 0).to_cbor();
            in_flight.push(async move {
                let ack = js
                    .publish_with_headers("tspi.geocentric.7", headers, payload.into())
                    .await;
                match ack {
                    Ok(f) => f.await.ok().map(|_| id),
                    Err(_) => None,
                }
            });
            next += 1;
        }
        if let Some(Some(id)) = in_flight.next().await {
            acked.insert(id);
            if acked.len() as u64 >= kill_after {
                cluster.kill_all();
                crashed = true;
            }
        }
    }
    assert!(crashed, "reached {kill_after} acks");
    drop(in_flight);
    drop(client);

    for i in 0..3 {
        cluster.node(i).restart();
    }
    cluster.wait_jetstream(Duration::from_secs(60)).await;
    let client = tspi_e2e::client(&cluster.urls()).await;
    let js = jetstream::new(client);
    let led = wait_until(Duration::from_secs(60), || async {
        match js.get_stream("TSPI").await {
            Ok(mut s) => s
                .info()
                .await
                .is_ok_and(|i| i.cluster.as_ref().is_some_and(|c| c.leader.is_some())),
            Err(_) => false,
        }
    })
    .await;
    assert!(led.is_some(), "TSPI has a leader after the restart");
    let stored = tspi_e2e::stream_contents(&js, "TSPI").await;
    let stored_ids: HashSet<String> = stored.iter().map(|m| m.msg_id.clone()).collect();
    let stored_acked = acked.iter().filter(|id| stored_ids.contains(*id)).count() as u64;
    Outcome {
        acked: acked.len() as u64,
        stored_acked,
        lost: acked.len() as u64 - stored_acked,
        stored_total: stored.len() as u64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_wide_crash_right_after_acks_loses_no_acknowledged_message() {
    chaos::init_logging();
    let _serial = chaos::serial();
    let (kill_after, rounds) = if chaos::full_length() {
        (100_000, 5)
    } else {
        (20_000, 1)
    };
    for (setting, lines) in [
        ("sync_interval: always (deploy)", "sync_interval: always"),
        ("default sync interval", ""),
    ] {
        let (mut acked, mut lost, mut total) = (0, 0, 0);
        for _ in 0..rounds {
            let o = crash_all_after_acks(lines, kill_after).await;
            assert_eq!(
                o.stored_acked + o.lost,
                o.acked,
                "accounting of the acknowledged ids"
            );
            acked += o.acked;
            lost += o.lost;
            total += o.stored_total;
            assert_eq!(
                o.lost, 0,
                "{setting}: {} of {} acknowledged messages missing after a kill -9 of every node",
                o.lost, o.acked
            );
        }
        chaos::report(
            "power-loss",
            &format!(
                "{setting}: {rounds} crash(es) of all three nodes right after {kill_after} acks \
                 (512 in flight): {acked} acknowledged, {lost} lost; {total} stored in all \
                 (acknowledged + in flight at the crash)"
            ),
        );
    }
}
