//! The console refuses invalid input with one line and a non-zero exit, and publishes
//! nothing; valid commands land in `TSPI` as SPEC §3 maps.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::StreamPrefix;
use tspi_test_support::{run_cli, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_console");
const T: Duration = Duration::from_secs(30);

/// A server with the TSPI stream, and a JetStream context on it.
async fn server_with_tspi() -> (NatsServer, async_nats::jetstream::Context) {
    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();
    (nats, js)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_and_nothing_is_sent() {
    let (nats, js) = server_with_tspi().await;
    let url = nats.url();
    let run = |args: &[&str]| {
        let mut a = vec!["--nats-server", url.as_str()];
        a.extend_from_slice(args);
        let a: Vec<String> = a.into_iter().map(str::to_owned).collect();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            run_cli(BIN, &refs, T)
        })
    };
    run(&["units", "furlongs"])
        .await
        .unwrap()
        .assert_clean_failure("unknown units \"furlongs\"");
    run(&["marker-color", "  "])
        .await
        .unwrap()
        .assert_clean_failure("marker colour must not be empty");
    run(&["session", "Sortie 7", ""])
        .await
        .unwrap()
        .assert_clean_failure("session id must not be empty");
    run(&["session", "", "S7"])
        .await
        .unwrap()
        .assert_clean_failure("session name must not be empty");
    run(&["tag", " "])
        .await
        .unwrap()
        .assert_clean_failure("must not be empty");
    run(&["tag", "x", "--at", "noon"])
        .await
        .unwrap()
        .assert_clean_failure("not an RFC 3339 time");
    let mut stream = js.get_stream("TSPI").await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        0,
        "nothing was published"
    );

    let out = run(&["units", "imperial"]).await.unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let sent: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(sent["subject"], "tspi.cmd.display.units");
    let m = stream
        .get_last_raw_message_by_subject("tspi.cmd.display.units")
        .await
        .unwrap();
    let v: serde_json::Value = ciborium::from_reader(&m.payload[..]).unwrap();
    assert_eq!(v["name"], "display.units");
    assert_eq!(v["payload"]["units"], "imperial");
    assert_eq!(v["cmd_id"], sent["msg_id"]);
    assert_eq!(v["cmd_id"].as_str().unwrap().len(), 36, "a UUID");

    let out = run(&["tag", "break left", "--at", "2025-09-28T11:00:05Z"])
        .await
        .unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let m = stream
        .get_last_raw_message_by_subject("tags.create")
        .await
        .unwrap();
    let v: serde_json::Value = ciborium::from_reader(&m.payload[..]).unwrap();
    assert_eq!(v["label"], "break left");
    assert_eq!(v["ts"], "2025-09-28T11:00:05.000Z");
    assert_eq!(v["status"], "active");
    assert!(stream
        .get_last_raw_message_by_subject("tags.broadcast")
        .await
        .is_ok());

    let out = run(&["clients", "--json"]).await.unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "[]");
}

/// `console … | head -1`: a reader that went away ends the command quietly (status 0, no
/// panic message), as for any Unix tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_command_quietly() {
    let (nats, _js) = server_with_tspi().await;
    let url = nats.url();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(BIN)
            .args(["--nats-server", url.as_str(), "units", "metric"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command writes its one line.
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}
