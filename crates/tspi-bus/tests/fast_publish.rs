//! The fast-ingest publisher on real servers: exact through a leader kill, a server
//! restart mid-batch and duplicates inside a batch; and the fall-back to the per-message
//! window when the stream refuses fast batches, before or during a run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tspi_bus::{
    ensure_stream, run_publisher, OutMessage, PublishMetrics, PublisherOptions, StreamArgs,
    StreamSpec,
};
use tspi_core::StreamPrefix;
use tspi_test_support::{stream_leader, wait_until, NatsCluster, NatsServer};

const SUBJECT: &str = "tspi.geocentric.7";

fn message(id: u64) -> OutMessage {
    OutMessage {
        subject: SUBJECT.into(),
        msg_id: format!("7-{id}"),
        payload: Bytes::from(id.to_string()),
        received: Instant::now(),
    }
}

struct Run {
    tx: mpsc::Sender<OutMessage>,
    task: JoinHandle<()>,
    metrics: PublishMetrics,
}

fn start(client: &async_nats::Client, fast: bool) -> Run {
    let (tx, rx) = mpsc::channel(100_000);
    let metrics = PublishMetrics::default();
    let task = tokio::spawn(run_publisher(
        client.clone(),
        rx,
        Some::<OutMessage>,
        PublisherOptions {
            fast: fast.then(|| StreamPrefix::default().batch_control_subject().into()),
            publish_timeout: Duration::from_secs(2),
            ..PublisherOptions::default()
        },
        metrics.clone(),
        CancellationToken::new(),
    ));
    Run { tx, task, metrics }
}

/// Send `ids` at about `rate` a second; `during(i)` runs as message `i` goes.
async fn feed(
    run: &Run,
    ids: impl IntoIterator<Item = u64>,
    rate: u64,
    mut during: impl FnMut(u64),
) {
    let started = Instant::now();
    for (i, id) in ids.into_iter().enumerate() {
        let i = i as u64;
        during(i);
        if i % 5 == 0 {
            tokio::time::sleep_until(
                (started + Duration::from_micros(i * 1_000_000 / rate)).into(),
            )
            .await;
        }
        run.tx.send(message(id)).await.unwrap();
    }
}

async fn finish(run: Run) -> PublishMetrics {
    let Run { tx, task, metrics } = run;
    drop(tx);
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the publisher drains")
        .unwrap();
    metrics
}

async fn tspi_stream(client: &async_nats::Client, replicas: Option<u8>) -> jetstream::stream::Info {
    let js = jetstream::new(client.clone());
    let args = StreamArgs {
        replicas,
        ..StreamArgs::default()
    };
    let spec = StreamSpec::tspi(&args, &StreamPrefix::default()).unwrap();
    ensure_stream(client, &js, &spec).await.unwrap()
}

/// Every payload in the stream, in order, read with an ordered consumer.
async fn stored(client: &async_nats::Client) -> Vec<u64> {
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream("TSPI").await.unwrap();
    let total = stream.info().await.unwrap().state.messages;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < total {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream reads back")
            .unwrap()
            .unwrap();
        out.push(std::str::from_utf8(&m.payload).unwrap().parse().unwrap());
    }
    out
}

fn assert_exact(stored: &[u64], want: &HashSet<u64>) {
    let distinct: HashSet<u64> = stored.iter().copied().collect();
    assert_eq!(distinct.len(), stored.len(), "nothing stored twice");
    assert_eq!(&distinct, want, "everything stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_batches_store_everything_once_and_duplicates_inside_a_batch_are_dropped() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let info = tspi_stream(&client, None).await;
    assert!(
        info.config.allow_batch_publish,
        "ensure_stream turns allow_batched on"
    );

    // 6,000 messages; 2,000..2,100 repeat the ids of 1,000..1,100 inside the same batch.
    let run = start(&client, true);
    let ids = (0..6_000u64).map(|i| {
        if (2_000..2_100).contains(&i) {
            i - 1_000
        } else {
            i
        }
    });
    feed(&run, ids, 20_000, |_| {}).await;
    let metrics = finish(run).await;
    let want: HashSet<u64> = (0..6_000).filter(|i| !(2_000..2_100).contains(i)).collect();
    assert_exact(&stored(&client).await, &want);
    assert_eq!(metrics.published.get(), 6_000, "every message confirmed");
    assert_eq!(metrics.failed.get(), 0);
    assert_eq!(metrics.retries.get(), 0);
    let batches = metrics.batches.get();
    assert!((1..100).contains(&batches), "long-lived batches: {batches}");
    eprintln!("6,000 messages (100 repeated ids) in {batches} fast batches: 5,900 stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_batch_loses_nothing_and_stores_nothing_twice() {
    let mut server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    tspi_stream(&client, None).await;
    let run = start(&client, true);
    let mut killed = false;
    feed(&run, 0..20_000, 5_000, |i| {
        if i == 5_000 && !killed {
            killed = true;
            server.kill();
            server.restart();
        }
    })
    .await;
    let metrics = finish(run).await;
    assert_exact(&stored(&client).await, &(0..20_000).collect());
    assert_eq!(metrics.published.get(), 20_000);
    assert_eq!(metrics.failed.get(), 0);
    assert!(
        metrics.retries.get() > 0 && metrics.batches.get() >= 2,
        "the restart ended a batch under way and its unconfirmed messages went again"
    );
    eprintln!(
        "server killed and restarted mid-batch: 20,000 stored once; {} sent again, {} batches",
        metrics.retries.get(),
        metrics.batches.get()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_during_a_batch_loses_nothing() {
    let mut cluster = NatsCluster::start(3).await;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(cluster.urls())
        .await
        .unwrap();
    tspi_stream(&client, Some(3)).await;
    let index = stream_leader(&jetstream::new(client.clone()), "TSPI").await;
    let run = start(&client, true);
    let (kill_tx, mut kill_rx) = mpsc::unbounded_channel();
    let feeding = feed(&run, 0..30_000, 5_000, |i| {
        if i == 10_000 {
            let _ = kill_tx.send(());
        }
    });
    let js = jetstream::new(client.clone());
    let killing = async {
        if kill_rx.recv().await.is_some() {
            cluster.node(index).kill();
            // Back once the others have elected a new leader, mid-traffic.
            let moved = wait_until(Duration::from_secs(30), || async {
                let Ok(mut stream) = js.get_stream("TSPI").await else {
                    return false;
                };
                stream.info().await.is_ok_and(|i| {
                    i.cluster
                        .as_ref()
                        .and_then(|c| c.leader.as_deref())
                        .is_some_and(|l| l != format!("n{}", index + 1))
                })
            })
            .await;
            assert!(moved.is_some(), "a new stream leader");
            cluster.node(index).restart();
        }
    };
    tokio::join!(feeding, killing);
    let metrics = finish(run).await;
    assert_exact(&stored(&client).await, &(0..30_000).collect());
    assert_eq!(metrics.published.get(), 30_000);
    assert_eq!(metrics.failed.get(), 0);
    assert!(
        metrics.batches.get() >= 2,
        "the kill ended the batch under way"
    );
    eprintln!(
        "stream leader n{} killed during a batch: 30,000 stored once; {} sent again, {} batches",
        index + 1,
        metrics.retries.get(),
        metrics.batches.get()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_refuses_fast_batches_gets_the_window_before_and_during_a_run() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());

    // Refused from the start: the first message is answered 10205 and goes by the window.
    let mut config = tspi_stream(&client, None).await.config;
    config.allow_batch_publish = false;
    js.update_stream(&config).await.unwrap();
    let run = start(&client, true);
    feed(&run, 0..2_000, 20_000, |_| {}).await;
    let metrics = finish(run).await;
    assert_exact(&stored(&client).await, &(0..2_000).collect());
    assert_eq!(metrics.published.get(), 2_000);
    assert_eq!(metrics.batches.get(), 1, "one batch tried");

    // Turned off during a run: the batch under way ends and the window takes over.
    config.allow_batch_publish = true;
    js.update_stream(&config).await.unwrap();
    let run = start(&client, true);
    let (off_tx, mut off_rx) = mpsc::unbounded_channel();
    let feeding = feed(&run, 2_000..12_000, 5_000, |i| {
        if i == 4_000 {
            let _ = off_tx.send(());
        }
    });
    let switching = async {
        if off_rx.recv().await.is_some() {
            let mut off = config.clone();
            off.allow_batch_publish = false;
            js.update_stream(&off).await.unwrap();
        }
    };
    tokio::join!(feeding, switching);
    let metrics = finish(run).await;
    assert_exact(&stored(&client).await, &(0..12_000).collect());
    assert_eq!(metrics.published.get(), 10_000);
    assert_eq!(metrics.failed.get(), 0);
    assert!(metrics.batches.get() >= 1);
}
