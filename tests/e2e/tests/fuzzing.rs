//! Runs every coverage-guided fuzz target of `fuzz/` (cargo-fuzz, libFuzzer, on the stable
//! toolchain with `--sanitizer none`) for a short while, from seed corpora made here out
//! of the reference vectors, real records, commands, tags, heartbeats, replayer requests
//! and captures, plus the hostile shapes: deep nesting, huge length prefixes.
//!
//! `TSPI_FUZZ_SECONDS` sets the time per target (default 20, all targets at once, built
//! unoptimised; above 20 the targets are built in release; docs/reliability.md reports
//! long runs). A crash fails the test with libFuzzer's report; its input is kept under
//! `fuzz/artifacts/<target>/` and belongs in a regression test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tspi_core::ops::{self, ClientState, Heartbeat};
use tspi_core::{DisplayCommand, DisplaySetting, Tag, TagStatus, TelemetryRecord};
use tspi_replayer::capture::write;
use tspi_test_support::workspace_root;

const TARGETS: [&str; 6] = [
    "datagram",
    "record_cbor",
    "cbor_to_json",
    "operations",
    "replayer_control",
    "capture",
];

fn cargo_fuzz() -> PathBuf {
    std::env::var_os("TSPI_CARGO_FUZZ").map_or_else(
        || workspace_root().join(".tools/cargo-fuzz/bin/cargo-fuzz"),
        PathBuf::from,
    )
}

fn seconds() -> u64 {
    std::env::var("TSPI_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn vectors() -> Vec<Vec<u8>> {
    let text = include_str!("../../../crates/tspi-core/testdata/tspi_vectors.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["hex"].as_str())
        .map(|h| {
            (0..h.len() / 2)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

fn records() -> Vec<Vec<u8>> {
    vectors()
        .iter()
        .filter_map(|b| tspi_core::datagram::decode(b).ok())
        .map(|d| TelemetryRecord::from_datagram(&d, 1_764_000_000_000).to_cbor())
        .collect()
}

/// Nesting 10,000 deep, and length prefixes that promise far more than is there.
fn hostile_cbor() -> Vec<Vec<u8>> {
    let mut deep_arrays = vec![0x81; 10_000];
    deep_arrays.push(0x00);
    let mut deep_maps = Vec::new();
    for _ in 0..5_000 {
        deep_maps.extend_from_slice(&[0xa1, 0x61, b'k']);
    }
    deep_maps.push(0x00);
    let mut deep_tags = vec![0xc0; 10_000];
    deep_tags.push(0x00);
    vec![
        deep_arrays,
        deep_maps,
        deep_tags,
        vec![0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00],
        vec![0x7b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'a'],
        vec![0x9b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00],
        vec![0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00],
        vec![0x9f, 0x9f, 0x9f, 0xff, 0xff],
    ]
}

fn operations() -> Vec<Vec<u8>> {
    let ts = "2025-09-28T11:00:00.000Z".to_owned();
    let mut out = Vec::new();
    for setting in [
        DisplaySetting::Units(tspi_core::units::UnitSystem::Imperial),
        DisplaySetting::MarkerColor("#ff8800".into()),
        DisplaySetting::SessionMetadata {
            name: "range day".into(),
            id: "rd-7".into(),
        },
    ] {
        let c = DisplayCommand::new("c-1".into(), ts.clone(), "console".into(), setting).unwrap();
        out.push(c.to_cbor());
        out.push(serde_json::to_vec(&c.payload_json()).unwrap());
    }
    let tag = Tag {
        id: "t-1".into(),
        ts: ts.clone(),
        label: "separation".into(),
        status: TagStatus::Active,
        creator: Some("op".into()),
        notes: None,
        updated_ts: ts.clone(),
        extra: Some(serde_json::json!({"range": 12.5, "list": [1, 2]})),
    };
    out.push(tag.to_cbor());
    out.push(serde_json::to_vec(&tag).unwrap());
    let hb = Heartbeat {
        client_id: "tab-1".into(),
        state: ClientState::FollowingLivestream,
        channel_id: "livestream".into(),
        subject: "tspi.>".into(),
        live_override: false,
        ts,
        operator: Some("op".into()),
        source_ip: None,
        ping_ms: Some(3.5),
    };
    out.push(ops::to_cbor(&hb));
    out.push(serde_json::to_vec(&hb).unwrap());
    out
}

fn control_requests() -> Vec<Vec<u8>> {
    let json = [
        r#"{"op":"play","start":"2025-09-28T11:00:00Z","end":"2025-09-28T11:05:00Z","speed":2,"clock":"wall"}"#,
        r#"{"op":"play","tag":"t-1","window":30,"paused":true,"segment":3,"snapshot":{"trail":60}}"#,
        r#"{"op":"seek","to":"2025-09-28T11:02:00Z","segment":4}"#,
        r#"{"op":"speed","speed":5}"#,
        r#"{"op":"pause"}"#,
        r#"{"op":"status"}"#,
        r#"{"op":"coverage","start":"2025-09-28T11:00:00Z","end":"2025-09-28T12:00:00Z","buckets":200}"#,
        r#"{"op":"tags","start":"2025-09-28T11:00:00Z","end":"2025-09-28T12:00:00Z","limit":50}"#,
    ];
    let mut out: Vec<Vec<u8>> = json.iter().map(|j| j.as_bytes().to_vec()).collect();
    for j in json {
        let v: serde_json::Value = serde_json::from_str(j).unwrap();
        out.push(ops::to_cbor(&v));
    }
    out
}

fn captures() -> Vec<Vec<u8>> {
    let datagrams = vectors();
    let frames: Vec<(i128, Vec<u8>)> = datagrams
        .iter()
        .take(8)
        .enumerate()
        .map(|(i, d)| {
            (
                1_764_000_000_000_000_000 + i as i128 * 20_000_000,
                write::udp_frame(40_000, 30_000, d),
            )
        })
        .collect();
    vec![write::pcap(&frames), write::pcapng(&frames)]
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "datagram" => vectors(),
        "record_cbor" => [records(), hostile_cbor()].concat(),
        "cbor_to_json" => [records(), operations(), hostile_cbor()].concat(),
        "operations" => [operations(), hostile_cbor()].concat(),
        "replayer_control" => [control_requests(), hostile_cbor()].concat(),
        "capture" => captures(),
        other => panic!("no seeds for {other}"),
    }
}

fn write_corpus(dir: &Path, target: &str) {
    fs::create_dir_all(dir).unwrap();
    for (i, seed) in seeds(target).iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:03}")), seed).unwrap();
    }
}

/// `stat::number_of_executed_units: N` from libFuzzer's final statistics.
fn executions(output: &str) -> Option<u64> {
    output.lines().find_map(|l| {
        l.strip_prefix("stat::number_of_executed_units:")
            .and_then(|n| n.trim().parse().ok())
    })
}

#[test]
fn every_fuzz_target_runs_clean() {
    let root = workspace_root();
    let tool = cargo_fuzz();
    assert!(
        tool.exists(),
        "{} is missing: run tests/install-deps.sh (it installs cargo-fuzz into .tools/), or \
         set TSPI_CARGO_FUZZ",
        tool.display()
    );
    let target_dir = root.join("target/fuzz");
    let fuzz = |args: &[&str]| {
        let mut cmd = Command::new(&tool);
        cmd.current_dir(&root)
            .arg("fuzz")
            .args(args)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        cmd
    };
    // The test command's short smoke run builds unoptimised (a minute and a half less to
    // build, and a few seconds of fuzzing do not need the speed); longer runs, release.
    let profile: &[&str] = if seconds() > 20 { &[] } else { &["--dev"] };
    let built = fuzz(&["build", "--sanitizer", "none", "--target-dir"])
        .arg(&target_dir)
        .args(profile)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "cargo fuzz build failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );

    // Every target at once: the suite pays the time of one, and each still gets its
    // share of the cores for the whole time.
    let secs = seconds();
    let started = Instant::now();
    let running: Vec<(&str, std::process::Child)> = TARGETS
        .iter()
        .map(|&target| {
            let corpus = target_dir.join("corpus").join(target);
            write_corpus(&corpus, target);
            let child = fuzz(&["run", target, "--sanitizer", "none", "--target-dir"])
                .arg(&target_dir)
                .args(profile)
                .arg(&corpus)
                .arg("--")
                .arg(format!("-max_total_time={secs}"))
                .args([
                    "-rss_limit_mb=2048",
                    "-timeout=10",
                    "-max_len=65536",
                    "-print_final_stats=1",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (target, child)
        })
        .collect();
    let mut report = Vec::new();
    for (target, child) in running {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "fuzz target {target} failed (the crashing input is under fuzz/artifacts/{target}/):\n{}",
            stderr
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
        let runs = executions(&stderr).unwrap_or_else(|| panic!("no final stats:\n{stderr}"));
        assert!(runs > 0, "{target} ran");
        report.push(format!(
            "{target}: {runs} executions in {secs} s (all {} targets at once), 0 crashes",
            TARGETS.len()
        ));
    }
    eprintln!(
        "fuzzing took {:.0} s of wall time",
        started.elapsed().as_secs_f64()
    );
    println!("fuzz-figures: {}", report.join("; "));
    eprintln!("fuzz-figures: {}", report.join("; "));
}
