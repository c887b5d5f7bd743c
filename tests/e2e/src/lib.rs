//! Helpers for end-to-end tests and load benches: run the real programs' `run` functions
//! in-process against real servers from `tspi-test-support`, and read back what a stream
//! holds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures::StreamExt;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tspi_bus::{ensure_stream, NatsArgs, PublisherOptions, StreamArgs, StreamSpec};
use tspi_core::StreamPrefix;
use tspi_producer::{ProducerMetrics, ProducerOptions};

/// Connect a plain client to the given servers.
/// A valid geocentric datagram at the origin: what counts in a test is its
/// (sensor, day, time), which makes its `Nats-Msg-Id`.
pub fn still_datagram(sensor_id: u16, day: u16, time_ticks: u32) -> [u8; 37] {
    tspi_core::Datagram {
        sensor_id,
        day,
        time_ticks,
        status: 0xFF,
        status_flags: 1,
        payload: tspi_core::Payload::Geocentric(tspi_core::GeocentricRaw::default()),
    }
    .encode()
}

pub async fn client(urls: &[String]) -> async_nats::Client {
    tspi_bus::connect(&NatsArgs::for_urls(urls), "tspi-e2e")
        .await
        .unwrap_or_else(|e| panic!("connect {urls:?}: {e}"))
}

/// A producer running in this process on a loopback UDP port.
#[derive(Debug)]
pub struct RunningProducer {
    pub udp_addr: SocketAddr,
    pub metrics: ProducerMetrics,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
    pub client: async_nats::Client,
}

impl RunningProducer {
    /// Bind UDP on 127.0.0.1:0, connect, ensure the `TSPI` stream, and run.
    pub async fn start(urls: &[String], max_in_flight: usize, publish_timeout: Duration) -> Self {
        let options = ProducerOptions {
            publisher: PublisherOptions {
                max_in_flight,
                publish_timeout,
                ..PublisherOptions::default()
            },
            stats_interval: Duration::ZERO,
            ..ProducerOptions::default()
        };
        Self::start_with(urls, options).await
    }

    /// Like [`RunningProducer::start`] with explicit options.
    pub async fn start_with(urls: &[String], options: ProducerOptions) -> Self {
        Self::start_on_with(client(urls).await, options).await
    }

    /// A producer on an existing client (authenticated, TLS…), default options.
    pub async fn start_on(client: async_nats::Client) -> Self {
        let options = ProducerOptions {
            stats_interval: Duration::ZERO,
            ..ProducerOptions::default()
        };
        Self::start_on_with(client, options).await
    }

    /// Like [`RunningProducer::start_on`] with explicit options.
    pub async fn start_on_with(client: async_nats::Client, options: ProducerOptions) -> Self {
        let (std_socket, _) = tspi_producer::udp::bind_udp(
            "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            32 * 1024 * 1024,
        )
        .unwrap_or_else(|e| panic!("bind UDP: {e}"));
        let socket = tokio::net::UdpSocket::from_std(std_socket).unwrap_or_else(|e| panic!("{e}"));
        let udp_addr = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let js = jetstream::new(client.clone());
        let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default())
            .unwrap_or_else(|e| panic!("{e}"));
        ensure_stream(&client, &js, &spec)
            .await
            .unwrap_or_else(|e| panic!("ensure stream: {e}"));
        let metrics = ProducerMetrics::new(&mut Registry::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(tspi_producer::run(
            options,
            socket,
            client.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        RunningProducer {
            udp_addr,
            metrics,
            shutdown,
            task,
            client,
        }
    }

    /// Wait until `acked` publishes were acknowledged (or `timeout`), then stop and drain.
    pub async fn finish(self, acked: u64, timeout: Duration) -> ProducerMetrics {
        tspi_test_support::wait_until(timeout, || async {
            self.metrics.publish.published.get() >= acked
        })
        .await;
        self.shutdown.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("producer failed: {e:#}"),
            Err(e) => panic!("producer task: {e}"),
        }
        self.metrics
    }
}

/// One message as stored in a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sequence: u64,
    pub subject: String,
    pub msg_id: String,
    pub payload: bytes::Bytes,
}

/// Every message a stream holds, in order, read by an ephemeral consumer.
pub async fn stream_contents(js: &jetstream::Context, stream: &str) -> Vec<Stored> {
    let mut s = js
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("get stream {stream}: {e}"));
    let total = s
        .info()
        .await
        .unwrap_or_else(|e| panic!("stream info: {e}"))
        .state
        .messages;
    let consumer = s
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let mut out = Vec::with_capacity(total as usize);
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .unwrap_or_else(|e| panic!("messages: {e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while (out.len() as u64) < total && Instant::now() < deadline {
        let Ok(Some(next)) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        else {
            break;
        };
        let msg = next.unwrap_or_else(|e| panic!("read stream: {e}"));
        let sequence = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        let msg_id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push(Stored {
            sequence,
            subject: msg.subject.to_string(),
            msg_id,
            payload: msg.payload.clone(),
        });
    }
    out
}

/// Message count of a stream.
pub async fn stream_count(js: &jetstream::Context, stream: &str) -> u64 {
    let mut s = js
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("get stream {stream}: {e}"));
    s.info()
        .await
        .unwrap_or_else(|e| panic!("stream info: {e}"))
        .state
        .messages
}
