//! `--publish-mode` on the real producer (issue 12, acceptance 2): against a stream that
//! does not allow fast-ingest batches, as a server before 2.14 (or an operator) leaves it,
//! `auto` says so in one log line and publishes everything with the per-message window;
//! `fast` refuses to start with a one-line error. With the default stream `auto` uses
//! fast batches.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod chaos;
mod common;

use std::time::Duration;

use async_nats::jetstream;
use chaos::{metric, programs_for, report, scrape};
use common::free_udp_port;
use tspi_bus::{ensure_stream, PublishMode, StreamArgs, StreamSpec};
use tspi_core::StreamPrefix;
use tspi_test_support::{free_port, run_cli, wait_until, workspace_bin, NatsServer};

const SENT: u64 = 5_000;
const FALLBACK_LINE: &str = "does not allow fast-ingest batches";

/// Send `SENT` datagrams at about 5,000/s and wait until `TSPI` holds them all.
async fn send_and_store(udp_port: u16, admin: &jetstream::Context, stored_before: u64) {
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    for i in 0..SENT {
        let d = tspi_e2e::still_datagram((i % 10) as u16 + 1, 100, (stored_before + i) as u32);
        sender.send_to(&d, ("127.0.0.1", udp_port)).unwrap();
        if i % 50 == 49 {
            tokio::time::sleep_until((started + Duration::from_millis((i + 1) / 5)).into()).await;
        }
    }
    let stored = wait_until(Duration::from_secs(30), || async {
        let Ok(mut s) = admin.get_stream("TSPI").await else {
            return false;
        };
        s.info()
            .await
            .is_ok_and(|i| i.state.messages == stored_before + SENT)
    })
    .await;
    assert!(stored.is_some(), "all {SENT} datagrams stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_the_window_in_one_line_and_fast_refuses_to_start() {
    chaos::init_logging();
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let admin = jetstream::new(client.clone());
    let without = StreamArgs {
        publish_mode: PublishMode::Window,
        ..StreamArgs::default()
    };
    let spec = StreamSpec::tspi(&without, &StreamPrefix::default()).unwrap();
    let info = ensure_stream(&client, &admin, &spec).await.unwrap();
    assert!(!info.config.allow_batch_publish);

    let url = server.url();
    let refused = run_cli(
        workspace_bin("producer").to_str().unwrap(),
        &[
            "--nats-server",
            &url,
            "--udp-host",
            "127.0.0.1",
            "--udp-port",
            &free_udp_port().to_string(),
            "--no-create-stream",
            "--publish-mode",
            "fast",
        ],
        Duration::from_secs(30),
    );
    refused.assert_clean_failure("allow_batched");

    let programs = programs_for(std::slice::from_ref(&url));
    let udp_port = free_udp_port();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let producer = programs.producer(
        udp_port,
        &["--metrics-addr", &metrics_addr, "--no-create-stream"],
    );
    let up = wait_until(Duration::from_secs(30), || async {
        !scrape(metrics_port).is_empty()
    })
    .await;
    assert!(up.is_some(), "producer up: {}", producer.stderr());
    send_and_store(udp_port, &admin, 0).await;
    let m = scrape(metrics_port);
    assert_eq!(metric(&m, "tspi_producer_published_total"), SENT as f64);
    assert_eq!(metric(&m, "tspi_producer_publish_batches_total"), 0.0);
    let said = producer
        .stderr()
        .lines()
        .filter(|l| l.contains(FALLBACK_LINE))
        .count();
    assert_eq!(said, 1, "one line: {}", producer.stderr());
    drop(producer);

    // The same producer with stream creation on turns allow_batched on and goes fast.
    let udp_port = free_udp_port();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let producer = programs.producer(udp_port, &["--metrics-addr", &metrics_addr]);
    let up = wait_until(Duration::from_secs(30), || async {
        !scrape(metrics_port).is_empty()
    })
    .await;
    assert!(up.is_some(), "producer up: {}", producer.stderr());
    let info = tspi_test_support::stream_info(&admin, "TSPI").await;
    assert!(info.config.allow_batch_publish, "turned on at start-up");
    send_and_store(udp_port, &admin, SENT).await;
    let m = scrape(metrics_port);
    let batches = metric(&m, "tspi_producer_publish_batches_total");
    assert_eq!(metric(&m, "tspi_producer_published_total"), SENT as f64);
    assert!(batches >= 1.0, "fast batches: {batches}");
    assert!(!producer.stderr().contains(FALLBACK_LINE));
    report(
        "publish_mode",
        &format!(
            "auto on a stream without allow_batched: {SENT} stored through the window, one log line; \
             fast refused to start; auto with allow_batched: {SENT} stored in {batches} fast batches"
        ),
    );
}
