//! Player flags: bad values are refused with one line; `--exit-on-idle` and `--duration`
//! end a quiet run with exit 0 and an `end` event; no server → a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use tspi_bus::{ensure_stream, StreamArgs, StreamSpec};
use tspi_core::StreamPrefix;
use tspi_test_support::{free_port, run_cli, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_player");
const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_idle_exit_and_unreachable_server() {
    run_cli(BIN, &["--rate=-1"], T).assert_clean_failure("--rate must be a number");
    run_cli(BIN, &["--source", "historical", "--room", "a.b"], T)
        .assert_clean_failure("room \"a.b\"");
    run_cli(BIN, &["--clock", "wall"], T).assert_clean_failure("wall");
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    run_cli(
        BIN,
        &["--nats-server", &nowhere, "--connect-timeout", "1s"],
        T,
    )
    .assert_clean_failure(&nowhere);

    let nats = NatsServer::start().await;
    let url = nats.url();
    // No TSPI stream yet: a live player says so.
    let u = url.clone();
    tokio::task::spawn_blocking(move || run_cli(BIN, &["--nats-server", &u], T))
        .await
        .unwrap()
        .assert_clean_failure("stream TSPI not found");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let spec = StreamSpec::tspi(&StreamArgs::default(), &StreamPrefix::default()).unwrap();
    ensure_stream(&client, &js, &spec).await.unwrap();
    for args in [["--exit-on-idle", "1s"], ["--duration", "1s"]] {
        let u = url.clone();
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            let mut a = vec!["--nats-server", u.as_str()];
            a.extend_from_slice(&args);
            run_cli(BIN, &a, T)
        })
        .await
        .unwrap();
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(started.elapsed() < Duration::from_secs(10));
        let last: serde_json::Value =
            serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
        assert_eq!(last["event"], "end");
    }
}
