//! The replayer binary refuses bad input with one line and a non-zero exit, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use tspi_test_support::{free_port, run_cli};

const BIN: &str = env!("CARGO_BIN_EXE_replayer");
const T: Duration = Duration::from_secs(30);

#[test]
fn bad_input_is_refused() {
    let db = format!(
        "postgresql://nobody@127.0.0.1:{}/x?connect_timeout=2",
        free_port()
    );
    let window = [
        "--start",
        "2025-09-28T11:00:00Z",
        "--end",
        "2025-09-28T11:00:10Z",
    ];
    let play = |extra: &[&str]| {
        let mut args = vec!["play", "--database-url", db.as_str()];
        args.extend_from_slice(extra);
        run_cli(BIN, &args, T)
    };
    let mut a = vec!["--room", "r1", "--speed", "0"];
    a.extend_from_slice(&window);
    play(&a).assert_clean_failure("speed 0 must be > 0");
    let mut a = vec!["--room", "a.b"];
    a.extend_from_slice(&window);
    play(&a).assert_clean_failure("room \"a.b\"");
    play(&[
        "--room",
        "r1",
        "--start",
        "yesterday",
        "--end",
        "2025-09-28T11:00:10Z",
    ])
    .assert_clean_failure("not an RFC 3339 time");
    play(&["--room", "r1", "--clock", "wall", "--tag", "x"]).assert_clean_failure("wall");
    let mut a = vec!["--room", "r1"];
    a.extend_from_slice(&window);
    play(&a).assert_clean_failure("cannot connect to the database");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pcap");
    run_cli(BIN, &["pcap", missing.to_str().unwrap(), "--dry-run"], T)
        .assert_clean_failure("cannot open");
    let not_capture = dir.path().join("x.pcap");
    std::fs::write(&not_capture, b"GIF89a not a capture").unwrap();
    run_cli(
        BIN,
        &["pcap", not_capture.to_str().unwrap(), "--dry-run"],
        T,
    )
    .assert_clean_failure("not a pcap or pcapng file");
    let mut truncated = tspi_replayer::capture::write::pcap(&[(0, vec![1; 60]), (1, vec![2; 60])]);
    truncated.truncate(truncated.len() - 10);
    std::fs::write(&not_capture, truncated).unwrap();
    run_cli(
        BIN,
        &["pcap", not_capture.to_str().unwrap(), "--dry-run"],
        T,
    )
    .assert_clean_failure("damaged capture");
    run_cli(BIN, &["pcap", not_capture.to_str().unwrap()], T)
        .assert_clean_failure("nothing to send to");
    let nats = format!("nats://127.0.0.1:{}", free_port());
    std::fs::write(&not_capture, tspi_replayer::capture::write::pcap(&[])).unwrap();
    run_cli(
        BIN,
        &[
            "pcap",
            not_capture.to_str().unwrap(),
            "--jetstream",
            "--nats-server",
            &nats,
            "--connect-timeout",
            "1s",
        ],
        T,
    )
    .assert_clean_failure(&nats);
}
