//! Chaos scenario 5, slow readers: whoever reads a program's stdout stops reading for a
//! while. A durable receiver blocks on its write with a batch in hand; JetStream delivers
//! that batch again once its ack wait passes; when the reader resumes, every record
//! arrives exactly once. A headless live player whose reader stops keeps a bounded
//! memory (its live subscription drops what it cannot hold, and counts it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::await_holding_lock)] // the serial guard is held across awaits on purpose

mod chaos;
mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chaos::{report, rss_kb, seconds, LineCounter, Rig, RigOptions};
use tspi_test_support::{wait_until, NatsCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stdout_readers_lose_nothing_and_stay_bounded() {
    chaos::init_logging();
    let _serial = chaos::serial();
    let stall = Duration::from_secs(seconds(10, 30));
    let cluster = NatsCluster::start(3).await;
    let rig = Rig::start(&cluster.urls(), RigOptions::default()).await;

    // A second durable receiver whose reader stops; a short ack wait so that the stall
    // outlasts it and JetStream redelivers what the receiver holds.
    let slow_metrics = tspi_test_support::free_port();
    let slow_metrics_addr = format!("127.0.0.1:{slow_metrics}");
    let mut cmd = rig.programs.command(
        "receiver",
        "receiver",
        &[],
        &[
            "--durable",
            "slow-reader",
            "--deliver",
            "all",
            "--ack-wait",
            "3s",
            "--batch",
            "256",
            "--metrics-addr",
            &slow_metrics_addr,
        ],
    );
    cmd.env("TSPI_LOG_LEVEL", "warn");
    let (slow, reader_stopped) = rig
        .programs
        .spawn_with_stoppable_reader("slow-receiver", cmd);
    let mut slow_lines = LineCounter::new(slow.stdout_path());

    // A headless live player, its reader stopped for the whole traffic.
    let player_cmd = rig.programs.command(
        "player",
        "player",
        &[],
        &["--no-create-stream", "--client-id", "slow-player"],
    );
    let (mut player, player_stopped) = rig
        .programs
        .spawn_with_stoppable_reader("slow-player", player_cmd);
    player.first_line(Duration::from_secs(30)).await;
    player_stopped.store(true, Ordering::Relaxed);
    let player_rss_start = rss_kb(player.pid());

    let traffic = stall.as_secs() + 10;
    let mut generator = rig.generator(50, 50, traffic); // 2,500 msg/s
    let started = wait_until(Duration::from_secs(30), || {
        let n = slow_lines.count();
        async move { n > 1_000 }
    })
    .await;
    assert!(
        started.is_some(),
        "the slow receiver prints: {}",
        slow.stderr()
    );
    reader_stopped.store(true, Ordering::Relaxed);
    let stall_end = Instant::now() + stall;
    let mut player_rss_peak = 0;
    let mut player_rss_samples = Vec::new();
    while Instant::now() < stall_end {
        let rss = rss_kb(player.pid());
        player_rss_peak = player_rss_peak.max(rss);
        player_rss_samples.push(rss);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    reader_stopped.store(false, Ordering::Relaxed);
    let sent = chaos::generator_sent(&mut generator, Duration::from_secs(traffic + 60)).await;

    let mut rig = rig;
    rig.wait_caught_up(sent, Duration::from_secs(120)).await;
    let caught_up = wait_until(Duration::from_secs(120), || {
        let n = slow_lines.count();
        async move { n >= sent }
    })
    .await;
    assert!(
        caught_up.is_some(),
        "the slow receiver resumed: {} of {sent} lines\n{}",
        slow_lines.count(),
        slow.stderr()
    );
    rig.assert_exact(sent).await;
    // The slow reader's lines: every record once.
    let text = std::fs::read_to_string(slow.stdout_path()).unwrap();
    let mut keys = std::collections::HashSet::new();
    let mut lines = 0u64;
    for line in text.lines() {
        lines += 1;
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        keys.insert((
            v["sensor_id"].as_u64().unwrap(),
            (v["time_s"].as_f64().unwrap() * 10_000.0).round() as u64,
        ));
    }
    let exposition = chaos::scrape(slow_metrics);
    let redelivered = chaos::metric(&exposition, "tspi_receiver_messages_redelivered_total");
    let skipped = chaos::metric(
        &exposition,
        "tspi_receiver_messages_skipped_redelivered_total",
    );
    // Half-way and end of the stall: memory flat once the subscription buffer is full.
    let half = player_rss_samples[player_rss_samples.len() / 2];
    let end = *player_rss_samples.last().unwrap();
    report(
        "slow-readers",
        &format!(
            "receiver reader stopped {} s at 2,500 msg/s (ack wait 3 s): {lines} lines, {} \
             distinct, of {sent} ({redelivered} redelivered, {skipped} of them already written \
             and not repeated); headless player reader stopped throughout: RSS {} MiB at \
             start, {} MiB half-way, {} MiB at the end, peak {} MiB",
            stall.as_secs(),
            keys.len(),
            player_rss_start / 1024,
            half / 1024,
            end / 1024,
            player_rss_peak / 1024,
        ),
    );
    assert_eq!(
        (lines, keys.len() as u64),
        (sent, sent),
        "every record once"
    );
    assert!(
        player_rss_peak < 256 * 1024,
        "the stalled player's memory is bounded: peak {player_rss_peak} kB"
    );
    drop(player);
}
