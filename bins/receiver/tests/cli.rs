//! The receiver binary: clean failures for bad input, and a reader that closes the pipe
//! ends it with exit 0 and no panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::{decode, StreamPrefix, TelemetryRecord};
use tspi_test_support::{free_port, run_cli, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_receiver");
const T: Duration = Duration::from_secs(20);

#[test]
fn bad_flags_are_refused() {
    run_cli(BIN, &["--deliver", "since", "yesterday"], T).assert_clean_failure("RFC 3339");
    run_cli(BIN, &["--deliver", "sometimes"], T).assert_clean_failure("expected new, all or since");
    run_cli(BIN, &["--count", "0"], T).assert_clean_failure("--count");
    run_cli(BIN, &["--durable", "a.b"], T).assert_clean_failure("--durable");
    run_cli(BIN, &["--log-format", "xml"], T).assert_clean_failure("xml");
}

#[test]
fn unreachable_server_at_start_up() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    run_cli(BIN, &["--nats-server", &url], T).assert_clean_failure("cannot connect to NATS");
}

#[tokio::test]
async fn missing_stream_is_reported() {
    let server = NatsServer::start().await;
    let url = server.url();
    let out = tokio::task::spawn_blocking(move || run_cli(BIN, &["--nats-server", &url], T))
        .await
        .unwrap();
    out.assert_clean_failure("stream TSPI not found");
}

/// `receiver | head -1`: the reader goes away; the receiver notices on its next write
/// and exits 0 without a panic.
#[tokio::test]
async fn closed_pipe_ends_cleanly() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();
    let hex = "c104006500c800002710ff00010001e240fff6040f000f424009c4f63c01f4000afff60000";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let record = TelemetryRecord::from_datagram(&decode(&bytes).unwrap(), 0);
    for _ in 0..20_000 {
        js.publish("tspi.geocentric.101", record.to_cbor().into())
            .await
            .unwrap();
    }
    js.publish("tspi.geocentric.101", record.to_cbor().into())
        .await
        .unwrap()
        .await
        .unwrap();

    let url = server.url();
    let status = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(["--nats-server", &url, "--deliver", "all"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with("{\"type\":\"geocentric\""), "{first}");
        // stdout dropped here: the pipe is closed.
        tspi_test_support::wait_until_blocking(T, || !matches!(child.try_wait(), Ok(None)));
        let status = child
            .try_wait()
            .unwrap()
            .unwrap_or_else(|| panic!("receiver did not stop after the pipe closed"));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!err.contains("panicked"), "{err}");
        status
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
}
