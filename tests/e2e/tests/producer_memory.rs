//! The producer's memory at overload: with NATS gone and the sensors still sending, its
//! queue fills to `--queue-capacity` (262,144 datagrams by default) and the rest is
//! dropped and counted. The queue holds decoded datagrams, not encoded records, so the
//! process stays small (issue 12: at most 40 MiB); once NATS is back, everything queued
//! is published, and published + dropped = sent exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod chaos;
mod common;

use std::time::Duration;

use chaos::{metric, peak_rss_kb, report, scrape, LoneProducer};
use tspi_test_support::{wait_until, NatsServer};

const SENT: u64 = 400_000;
const DEFAULT_QUEUE: u64 = 262_144;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_keeps_the_producer_small_and_loses_nothing_uncounted() {
    chaos::init_logging();
    let mut server = NatsServer::start().await;
    let LoneProducer {
        programs: _logs,
        mut producer,
        udp_port,
        metrics_port,
        admin,
        ..
    } = LoneProducer::start(&[server.url()]).await;
    let baseline_kb = peak_rss_kb(producer.pid());

    server.kill();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // Every datagram sent is either read by the producer or dropped by the kernel (its
    // receive buffer overflowed), and the producer counts both.
    let received = |m: &str| metric(m, "tspi_producer_datagrams_received_total");
    let kernel_dropped = |m: &str| dropped(m, "kernel_receive_queue");
    // In bursts the producer can read: what the kernel still drops is counted apart and
    // simply never reaches the queue.
    for i in 0..SENT {
        let d = tspi_e2e::still_datagram((i % 50) as u16 + 1, 100, (i / 50) as u32);
        sender.send_to(&d, ("127.0.0.1", udp_port)).unwrap();
        if i % 2_000 == 1_999 {
            let read = wait_until(Duration::from_secs(30), || async {
                let m = scrape(metrics_port);
                received(&m) + kernel_dropped(&m) >= (i + 1) as f64 - 20_000.0
            })
            .await;
            assert!(
                read.is_some(),
                "the producer stopped reading: {}",
                producer.stderr()
            );
        }
    }
    let all_read = wait_until(Duration::from_secs(60), || async {
        let m = scrape(metrics_port);
        received(&m) + kernel_dropped(&m) >= SENT as f64
    })
    .await;
    assert!(all_read.is_some(), "not every datagram was read or counted");
    // The depth gauge shows the full queue although the publisher is stuck.
    let full = wait_until(Duration::from_secs(10), || async {
        metric(&scrape(metrics_port), "tspi_producer_publish_queue_depth") >= DEFAULT_QUEUE as f64
    })
    .await;
    let m = scrape(metrics_port);
    let peak_kb = peak_rss_kb(producer.pid());
    let queue = metric(&m, "tspi_producer_publish_queue_depth");
    let dropped_queue = dropped(&m, "queue_full");
    let kernel = kernel_dropped(&m);
    let received = received(&m);

    server.restart();
    let published_all = wait_until(Duration::from_secs(300), || async {
        let m = scrape(metrics_port);
        metric(&m, "tspi_producer_published_total") >= received - dropped_queue
    })
    .await;
    let m = scrape(metrics_port);
    let published = metric(&m, "tspi_producer_published_total");
    let stored = tspi_e2e::stream_count(&admin, "TSPI").await;
    report(
        "producer-overload",
        &format!(
            "{SENT} datagrams sent with NATS down: {received} read, {} dropped by the kernel, \
             {dropped_queue} dropped at the full queue (capacity {DEFAULT_QUEUE}, depth \
             {queue} at the end); peak RSS {} MiB (idle {} MiB); after the restart {published} \
             published, {stored} stored",
            kernel,
            peak_kb / 1024,
            baseline_kb / 1024
        ),
    );
    assert!(
        published_all.is_some(),
        "not everything queued was published after NATS came back: {}",
        producer.stderr()
    );
    assert!(
        full.is_some(),
        "tspi_producer_publish_queue_depth did not show the full queue: {queue}"
    );
    assert!(
        dropped_queue > 0.0,
        "the queue never filled, so this measured nothing"
    );
    assert_eq!(
        published + dropped_queue,
        received,
        "every datagram read is published or counted as dropped"
    );
    assert_eq!(stored as f64, published, "stored once each");
    assert!(
        peak_kb <= 40 * 1024,
        "producer peak RSS {peak_kb} kB with a full queue, more than 40 MiB"
    );
    producer.stop(Duration::from_secs(30)).await;
}

/// `tspi_producer_datagrams_dropped_total{reason="<reason>"}`.
fn dropped(exposition: &str, reason: &str) -> f64 {
    chaos::labelled_metric(
        exposition,
        "tspi_producer_datagrams_dropped_total",
        "reason",
        reason,
    )
}
