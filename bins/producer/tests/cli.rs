//! The producer binary refuses bad input with a one-line reason and a non-zero exit,
//! never a panic: bad flags, an unreachable server, a stream whose config conflicts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use tspi_test_support::{free_port, run_cli, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_producer");
const T: Duration = Duration::from_secs(20);

#[test]
fn bad_flags_are_refused() {
    run_cli(BIN, &["--bogus"], T).assert_clean_failure("unexpected argument");
    run_cli(BIN, &["--max-in-flight", "0"], T).assert_clean_failure("--max-in-flight");
    run_cli(BIN, &["--udp-port", "70000"], T).assert_clean_failure("70000");
    run_cli(BIN, &["--publish-timeout", "soon"], T).assert_clean_failure("invalid duration");
    run_cli(BIN, &["--stream-prefix", "tspi.>"], T).assert_clean_failure("stream-prefix");
    run_cli(BIN, &["--duplicate-window", "10s"], T).assert_clean_failure("2m minimum");
    run_cli(BIN, &["--user", "u"], T).assert_clean_failure("required arguments");
}

#[test]
fn unreachable_server_at_start_up() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let out = run_cli(
        BIN,
        &[
            "--nats-server",
            &url,
            "--udp-host",
            "127.0.0.1",
            "--udp-port",
            "0",
        ],
        T,
    );
    out.assert_clean_failure("cannot connect to NATS");
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1
    );
}

#[test]
fn help_has_examples() {
    let out = run_cli(BIN, &["--help"], T);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("Examples:") && out.stdout.contains("--max-in-flight"));
}

#[tokio::test]
async fn conflicting_streams_are_reported() {
    let server = NatsServer::start().await;
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    // Same name, memory storage: storage cannot be changed.
    js.create_stream(stream::Config {
        name: "TSPI".into(),
        subjects: vec!["tspi.geocentric.>".into()],
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    // Another stream already owning the command subjects.
    js.create_stream(stream::Config {
        name: "OTHER".into(),
        subjects: vec!["tags.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let url: &'static str = Box::leak(server.url().into_boxed_str());
    let base = [
        "--nats-server",
        url,
        "--udp-host",
        "127.0.0.1",
        "--udp-port",
        "0",
    ];
    let out = tokio::task::spawn_blocking(move || run_cli(BIN, &base, T))
        .await
        .unwrap();
    out.assert_clean_failure("conflicts");

    let mut args = base.to_vec();
    args.extend(["--stream", "TSPI2"]);
    let out = tokio::task::spawn_blocking(move || run_cli(BIN, &args, T))
        .await
        .unwrap();
    out.assert_clean_failure("overlap");

    let mut args = base.to_vec();
    args.extend(["--stream", "MISSING", "--no-create-stream"]);
    let out = tokio::task::spawn_blocking(move || run_cli(BIN, &args, T))
        .await
        .unwrap();
    out.assert_clean_failure("does not exist");
}

/// Counters reach the Prometheus endpoint with the documented names.
#[tokio::test]
async fn metrics_endpoint_counts_by_reason() {
    use std::io::{Read, Write};
    let server = NatsServer::start().await;
    let (udp, metrics) = (free_port(), free_port());
    let mut child = std::process::Command::new(BIN)
        .args(["--nats-server", &server.url(), "--udp-host", "127.0.0.1"])
        .args([
            "--udp-port",
            &udp.to_string(),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    };
    let up = tspi_test_support::wait_until(T, || async { get().is_some() }).await;
    assert!(up.is_some(), "metrics endpoint never came up");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let valid = tspi_core::Datagram {
        sensor_id: 5,
        day: 1,
        time_ticks: 0,
        status: 0,
        status_flags: 0,
        payload: tspi_core::Payload::Geocentric(Default::default()),
    }
    .encode();
    sock.send_to(&valid, ("127.0.0.1", udp)).unwrap();
    sock.send_to(&valid[..36], ("127.0.0.1", udp)).unwrap();
    sock.send_to(&[0xC1, 9], ("127.0.0.1", udp)).unwrap();
    tspi_test_support::wait_until(T, || async {
        get().is_some_and(|b| b.contains("tspi_producer_published_total 1"))
    })
    .await;
    let body = get().unwrap_or_default();
    tspi_test_support::sigterm(child.id());
    let status = child.wait().unwrap();
    for line in [
        "tspi_producer_datagrams_received_total 3",
        "tspi_producer_datagrams_invalid_total{reason=\"length\"} 2",
        "tspi_producer_published_total 1",
        "tspi_producer_datagrams_dropped_total{reason=\"queue_full\"} 0",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
    assert_eq!(status.code(), Some(0), "SIGTERM drains and exits 0");
}
