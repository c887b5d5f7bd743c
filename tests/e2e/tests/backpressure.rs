//! The producer keeps reading the socket while NATS is gone: what fits in its bounded
//! queue is published once the server is back, what does not is counted as dropped, and
//! the two add up to exactly what was sent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use tspi_bus::PublisherOptions;
use tspi_core::{Datagram, GeocentricRaw, Payload};
use tspi_e2e::RunningProducer;
use tspi_producer::ProducerOptions;
use tspi_test_support::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_means_counted_drops_never_silent_loss() {
    let mut server = NatsServer::start().await;
    let options = ProducerOptions {
        queue_capacity: 200,
        publisher: PublisherOptions {
            max_in_flight: 50,
            publish_timeout: Duration::from_millis(500),
            ..PublisherOptions::default()
        },
        drain_timeout: Duration::from_secs(30),
        stats_interval: Duration::ZERO,
        ..ProducerOptions::default()
    };
    let producer = RunningProducer::start_with(&[server.url()], options).await;
    server.kill();

    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    const SENT: u64 = 3_000;
    for i in 0..SENT {
        let d = Datagram {
            sensor_id: 7,
            day: 100,
            time_ticks: i as u32,
            status: 0xFF,
            status_flags: 1,
            payload: Payload::Geocentric(GeocentricRaw::default()),
        };
        sender.send_to(&d.encode(), producer.udp_addr).unwrap();
        // Paced so the kernel's socket buffer is not what overflows: the queue is under test.
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    tspi_test_support::wait_until(Duration::from_secs(10), || async {
        producer.metrics.received.get() >= SENT
    })
    .await;
    assert_eq!(
        producer.metrics.received.get(),
        SENT,
        "the reader kept reading"
    );
    let dropped = producer.metrics.queue_dropped.get();
    assert!(
        dropped > 0,
        "the bounded queue overflowed while NATS was down"
    );

    server.restart();
    let metrics = producer
        .finish(SENT - dropped, Duration::from_secs(60))
        .await;
    assert_eq!(metrics.publish.failed.get(), 0);
    assert_eq!(
        metrics.publish.published.get() + metrics.queue_dropped.get(),
        SENT,
        "every datagram is either published or counted as dropped"
    );
}

/// With the server gone for good, shutdown still ends within the drain deadline and
/// counts what was never acknowledged as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_the_server_gone_ends_at_the_drain_deadline() {
    let mut server = NatsServer::start().await;
    let options = ProducerOptions {
        publisher: PublisherOptions {
            max_in_flight: 20,
            publish_timeout: Duration::from_millis(300),
            ..PublisherOptions::default()
        },
        drain_timeout: Duration::from_secs(2),
        stats_interval: Duration::ZERO,
        ..ProducerOptions::default()
    };
    let producer = RunningProducer::start_with(&[server.url()], options).await;
    server.kill();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..100u32 {
        let d = Datagram {
            sensor_id: 8,
            day: 100,
            time_ticks: i,
            status: 0,
            status_flags: 0,
            payload: Payload::Geocentric(GeocentricRaw::default()),
        };
        sender.send_to(&d.encode(), producer.udp_addr).unwrap();
    }
    let read = tspi_test_support::wait_until(Duration::from_secs(10), || async {
        producer.metrics.received.get() >= 100
    })
    .await;
    assert!(
        read.is_some(),
        "the producer did not read the 100 datagrams"
    );
    let started = Instant::now();
    let metrics = producer.finish(u64::MAX, Duration::ZERO).await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "drain took {:?}",
        started.elapsed()
    );
    assert_eq!(metrics.received.get(), 100);
    assert_eq!(
        metrics.publish.published.get()
            + metrics.publish.failed.get()
            + metrics.queue_dropped.get(),
        100,
        "every datagram accounted for"
    );
    assert!(metrics.publish.failed.get() > 0);
}
