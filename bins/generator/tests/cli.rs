//! The generator binary: clean failures for bad input; a run prints one JSON summary
//! whose counts match what a UDP listener (named by host name) received.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::net::UdpSocket;
use std::time::Duration;

use tspi_test_support::run_cli;

const BIN: &str = env!("CARGO_BIN_EXE_generator");
const T: Duration = Duration::from_secs(30);

#[test]
fn bad_flags_are_refused() {
    run_cli(BIN, &["--duration", "1"], T).assert_clean_failure("nothing to send to");
    run_cli(BIN, &["--udp-target", "127.0.0.1:9"], T)
        .assert_clean_failure("--duration or --continuous");
    run_cli(
        BIN,
        &[
            "--udp-target",
            "127.0.0.1:9",
            "--duration",
            "1",
            "--rate",
            "0",
        ],
        T,
    )
    .assert_clean_failure("--rate");
    run_cli(
        BIN,
        &[
            "--udp-target",
            "127.0.0.1:9",
            "--duration",
            "1",
            "--max-speed",
            "400",
        ],
        T,
    )
    .assert_clean_failure("320");
    run_cli(BIN, &["--udp-target", "nowhere", "--duration", "1"], T)
        .assert_clean_failure("expected HOST:PORT");
    run_cli(BIN, &["--udp-target", "producer:0", "--duration", "1"], T)
        .assert_clean_failure("the port is not 1-65535");
    run_cli(
        BIN,
        &[
            "--udp-target",
            "127.0.0.1:9",
            "--duration",
            "1",
            "--continuous",
        ],
        T,
    )
    .assert_clean_failure("cannot be used with");
}

#[test]
fn summary_matches_what_was_received() {
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
    listener
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // By name, as a compose file names its producer: looked up before sending starts.
    let target = format!("localhost:{}", listener.local_addr().unwrap().port());
    // The reader stops on the first quiet spell after the generator has exited, not on
    // one before its first datagram (a slow process start on a busy machine).
    let generator_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = generator_done.clone();
    let receiver = std::thread::spawn(move || {
        let (mut valid, mut other) = (0u64, 0u64);
        let mut buf = [0u8; 2048];
        loop {
            match listener.recv(&mut buf) {
                Ok(n) if tspi_core::decode(&buf[..n]).is_ok() => valid += 1,
                Ok(_) => other += 1,
                Err(_) if done.load(std::sync::atomic::Ordering::SeqCst) => break,
                Err(_) => {}
            }
        }
        (valid, other)
    });
    let out = run_cli(
        BIN,
        &[
            "--udp-target",
            &target,
            "--count",
            "4",
            "--rate",
            "20",
            "--duration",
            "1",
            "--garbage-every",
            "5",
            "--style",
            "airshow",
            "--message-type",
            "mixed",
        ],
        T,
    );
    generator_done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line: {}", out.stdout);
    let s: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(s["final"], true);
    assert_eq!(s["frames"], 20);
    assert_eq!(s["valid"], 80);
    let (valid, other) = receiver.join().unwrap();
    assert_eq!(valid, 80);
    assert_eq!(other, s["garbage"].as_u64().unwrap());
    assert_eq!(valid + other, s["datagrams"].as_u64().unwrap());
}
