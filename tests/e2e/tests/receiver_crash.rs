//! A durable receiver that crashes (task aborted, nothing drained) loses nothing: the
//! next run gets every message the crashed one had pulled but not acknowledged.
//! (With "ack all" the next run's acks would swallow them; explicit acks do not.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::{Datagram, GeocentricRaw, Payload, StreamPrefix, TelemetryRecord};
use tspi_receiver::{Deliver, ReceiverMetrics, ReceiverOptions};
use tspi_test_support::{Captured, NatsServer};

const N: u32 = 3_000;

fn options(duration: Duration) -> ReceiverOptions {
    ReceiverOptions {
        stream: "TSPI".into(),
        durable: Some("crashy".into()),
        subjects: StreamPrefix::default().telemetry_wildcards().to_vec(),
        deliver: Deliver::All,
        json: true,
        count: None,
        duration: Some(duration),
        batch: 256,
        ack_wait: Duration::from_secs(2),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_durable_receiver_loses_nothing() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();
    for i in 0..N {
        let d = Datagram {
            sensor_id: 3,
            day: 9,
            time_ticks: i,
            status: 0,
            status_flags: 0,
            payload: Payload::Geocentric(GeocentricRaw::default()),
        };
        js.publish(
            "tspi.geocentric.3",
            TelemetryRecord::from_datagram(&d, 0).to_cbor().into(),
        )
        .await
        .unwrap();
    }
    client.flush().await.unwrap();

    // Crash mid-stream: abort once 1,000 lines are out, with a batch still in hand.
    let first = Captured::default();
    let out = first.clone();
    let js1 = js.clone();
    let task = tokio::spawn(async move {
        let m = ReceiverMetrics::new(&mut Registry::default());
        tspi_receiver::run(
            options(Duration::from_secs(60)),
            js1,
            out,
            m,
            CancellationToken::new(),
        )
        .await
    });
    let crashed_at = tspi_test_support::wait_until(Duration::from_secs(60), || async {
        first.line_count() >= 1_000
    })
    .await;
    assert!(crashed_at.is_some(), "no 1,000 lines from the receiver");
    task.abort();
    let _ = task.await;

    let second = Captured::default();
    let m = ReceiverMetrics::new(&mut Registry::default());
    tspi_receiver::run(
        options(Duration::from_secs(8)),
        js.clone(),
        second.clone(),
        m,
        CancellationToken::new(),
    )
    .await
    .unwrap();

    let mut seen = HashSet::new();
    for buf in [&first, &second] {
        for line in buf.lines() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            seen.insert((v["time_s"].as_f64().unwrap() * 10_000.0).round() as u64);
        }
    }
    assert_eq!(
        seen.len() as u32,
        N,
        "every message printed at least once across the crash"
    );
}
