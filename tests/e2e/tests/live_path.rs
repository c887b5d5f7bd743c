//! The live path end to end on a real three-node JetStream cluster (issue 2, acceptance
//! 2–4): generator → UDP → producer → R3 `TSPI` stream → receiver, with duplicates and
//! garbage on the wire, and a node killed with SIGKILL in the middle of the run.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// test code: a panic is the failure report
// The HEAVY guard is held across awaits on purpose: it serialises the cluster tests.
#![allow(clippy::await_holding_lock)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tspi_core::{StreamPrefix, TelemetryRecord};
use tspi_e2e::{stream_contents, stream_count, RunningProducer, Stored};
use tspi_generator::{FleetOptions, GeneratorOptions, Kind, Sinks, Style, Summary};
use tspi_receiver::{Deliver, ReceiverMetrics, ReceiverOptions, StopReason};
use tspi_test_support::NatsCluster;

/// Cluster tests share two cores: run them one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

const AIRCRAFT: u16 = 50;
const RATE_HZ: f64 = 50.0;
const SECONDS: u64 = 10;
const EXPECTED: u64 = 25_000;

fn generator_options() -> GeneratorOptions {
    GeneratorOptions {
        fleet: FleetOptions {
            count: AIRCRAFT,
            sensor_base: 10_000,
            style: Style::Normal,
            kind: Kind::Geocentric,
            min_speed_mps: 100.0,
            max_speed_mps: 250.0,
            origin_lat_deg: 34.905,
            origin_lon_deg: -117.884,
            origin_alt_m: 700.0,
            seed: 42,
        },
        rate_hz: RATE_HZ,
        duration: Some(Duration::from_secs(SECONDS)),
        day: Some(200),
        duplicate_every: Some(7),
        garbage_every: Some(10),
        faults: Default::default(),
        metrics_interval: None,
        script: None,
        prefix: StreamPrefix::default(),
    }
}

async fn run_generator(target: std::net::SocketAddr) -> Summary {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sinks = Sinks {
        udp: Some((socket, tspi_runtime::UdpTargets::fixed(vec![target]))),
        jetstream: None,
    };
    tspi_generator::run(generator_options(), sinks, |_| {}, CancellationToken::new())
        .await
        .unwrap()
}

/// Every stored message is a well-formed record under the right subject and id, each
/// sensor has all its frames exactly once, and nothing else is there.
fn check_stream(stored: &[Stored]) {
    assert_eq!(stored.len() as u64, EXPECTED, "messages read back");
    let mut ids = HashSet::new();
    let mut per_sensor: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
    for m in stored {
        assert!(ids.insert(m.msg_id.clone()), "duplicate id {}", m.msg_id);
        let rec = TelemetryRecord::from_cbor(&m.payload).expect("stored payload is a record");
        assert_eq!(m.subject, format!("tspi.geocentric.{}", rec.sensor_id));
        let ticks = (rec.time_s * 10_000.0).round() as u32;
        let mut id = String::new();
        tspi_core::subject::write_msg_id(&mut id, rec.sensor_id, rec.day, ticks);
        assert_eq!(m.msg_id, id, "Nats-Msg-Id matches the record");
        per_sensor.entry(rec.sensor_id).or_default().push(ticks);
    }
    assert_eq!(per_sensor.len(), AIRCRAFT as usize);
    for (sensor, mut ticks) in per_sensor {
        ticks.sort_unstable();
        assert_eq!(
            ticks.len() as u64,
            RATE_HZ as u64 * SECONDS,
            "sensor {sensor}"
        );
        for w in ticks.windows(2) {
            assert_eq!(
                w[1] - w[0],
                200,
                "sensor {sensor}: a gap or a repeat at {}",
                w[0]
            );
        }
    }
}

fn check_producer_counts(summary: &Summary, m: &tspi_producer::ProducerMetrics) {
    assert_eq!(summary.valid, EXPECTED);
    assert!(
        summary.duplicates > 3000 && summary.garbage > 2500,
        "{summary:?}"
    );
    assert_eq!(m.received.get(), summary.datagrams, "every datagram read");
    assert_eq!(
        m.invalid_total(),
        summary.garbage,
        "garbage counted as invalid"
    );
    for reason in [0, 1, 2] {
        assert!(m.invalid[reason].get() > 0, "invalid reason {reason} seen");
    }
    assert_eq!(m.queue_dropped.get(), 0);
    assert_eq!(m.kernel_dropped.get(), 0);
    assert_eq!(m.publish.failed.get(), 0);
    assert_eq!(
        m.publish.published.get(),
        summary.valid + summary.duplicates
    );
}

fn receiver_options(durable: Option<&str>, count: Option<u64>) -> ReceiverOptions {
    ReceiverOptions {
        stream: "TSPI".into(),
        durable: durable.map(str::to_owned),
        subjects: StreamPrefix::default().telemetry_wildcards().to_vec(),
        deliver: Deliver::All,
        json: true,
        count,
        duration: Some(Duration::from_secs(120)),
        batch: 512,
        ack_wait: Duration::from_secs(30),
    }
}

async fn receive(js: &jetstream::Context, durable: Option<&str>, count: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let metrics = ReceiverMetrics::new(&mut Registry::default());
    let summary = tspi_receiver::run(
        receiver_options(durable, Some(count)),
        js.clone(),
        &mut out,
        metrics,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(summary.stop, StopReason::Count);
    assert_eq!(summary.written, count);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ingest_is_exact_and_receiver_resumes_exactly() {
    let _ = tspi_runtime::init_logging(&tspi_runtime::LogArgs {
        log_level: "warn".into(),
        log_format: tspi_runtime::LogFormat::Text,
    });
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let cluster = NatsCluster::start(3).await;
    let producer = RunningProducer::start(&cluster.urls(), 1024, Duration::from_secs(2)).await;
    let js = jetstream::new(producer.client.clone());
    let mut info = js.get_stream("TSPI").await.unwrap();
    assert_eq!(
        info.info().await.unwrap().config.num_replicas,
        3,
        "R3 on a 3-node cluster"
    );

    let summary = run_generator(producer.udp_addr).await;
    let metrics = producer
        .finish(summary.valid + summary.duplicates, Duration::from_secs(60))
        .await;
    check_producer_counts(&summary, &metrics);
    assert_eq!(stream_count(&js, "TSPI").await, EXPECTED);
    let stored = stream_contents(&js, "TSPI").await;
    check_stream(&stored);

    // Receiver: 10,000 with a durable name, then the remaining 15,000 after a restart.
    let schema: Value =
        serde_json::from_str(include_str!("../../../docs/telemetry.schema.json")).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let first = receive(&js, Some("e2e-durable"), 10_000).await;
    let second = receive(&js, Some("e2e-durable"), 15_000).await;
    let mut seen = HashSet::new();
    for line in first
        .split(|b| *b == b'\n')
        .chain(second.split(|b| *b == b'\n'))
    {
        if line.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_slice(line).expect("each line is JSON");
        assert!(validator.is_valid(&v), "schema rejects {v}");
        let key = (
            v["sensor_id"].as_u64().unwrap(),
            v["day"].as_u64().unwrap(),
            (v["time_s"].as_f64().unwrap() * 10_000.0).round() as u64,
        );
        assert!(seen.insert(key), "line repeated: {key:?}");
    }
    assert_eq!(
        seen.len() as u64,
        EXPECTED,
        "none missed across the restart"
    );
    let mut consumer = js
        .get_stream("TSPI")
        .await
        .unwrap()
        .get_consumer::<jetstream::consumer::pull::Config>("e2e-durable")
        .await
        .unwrap();
    let ci = consumer.info().await.unwrap();
    assert_eq!(ci.num_pending, 0);
    assert_eq!(ci.num_ack_pending, 0, "everything printed was acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ingest_survives_kill_9_of_the_stream_leader() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = NatsCluster::start(3).await;
    let producer = RunningProducer::start(&cluster.urls(), 1024, Duration::from_secs(2)).await;
    let js = jetstream::new(producer.client.clone());
    let victim = tspi_test_support::stream_leader(&js, "TSPI").await;

    let generator = tokio::spawn(run_generator(producer.udp_addr));
    // The leader dies a quarter into the ingest and stays down for another quarter of it.
    let received = || producer.metrics.received.get();
    let quarter = EXPECTED / 4;
    let into_ingest = tspi_test_support::wait_until(Duration::from_secs(60), || async {
        producer.metrics.publish.published.get() >= quarter
    })
    .await;
    assert!(
        into_ingest.is_some(),
        "nothing published: {:?}",
        producer.metrics
    );
    cluster.node(victim).kill();
    let killed_at = received();
    let down_for = tspi_test_support::wait_until(Duration::from_secs(60), || async {
        received() >= killed_at + quarter
    })
    .await;
    assert!(down_for.is_some(), "the generator stalled");
    cluster.node(victim).restart();
    let summary = generator.await.unwrap();
    let metrics = producer
        .finish(summary.valid + summary.duplicates, Duration::from_secs(90))
        .await;
    check_producer_counts(&summary, &metrics);

    let client = tspi_e2e::client(&cluster.urls()).await;
    let js = jetstream::new(client);
    let stored = stream_contents(&js, "TSPI").await;
    check_stream(&stored);
    eprintln!(
        "leader n{} killed: retries={} duplicates acked={}",
        victim + 1,
        metrics.publish.retries.get(),
        metrics.publish.duplicates.get()
    );
}
