//! Web display bench (not a test), in real headless Chromium with release binaries:
//!
//! - `live`: 1,000 tracks × 10 Hz through producer → NATS → `player --web` → one tab:
//!   the page's frames per second, the display's CPU per message and RSS (against the
//!   headless player on the same stream in the same run), bytes per second to the tab,
//!   and the age of updates when they reach the page (UDP → `state()`), against a bare
//!   NATS subscriber's in the same run.
//! - `scrub`: 50 random seeks in a 10-minute archive (written straight into PostgreSQL),
//!   each timed from the call to `tspiDisplay.seek()` until its picture is drawn, against
//!   the bare replayer (request → `ready` marker) in the same run.
//! - `screenshots`: the pictures in docs/ (a minute of 30 aircraft, commands and tags).
//!
//! `cargo bench -p tspi-e2e --bench web [-- live|scrub|screenshots]` (builds the release
//! programs first). `TSPI_BENCH_QUICK=1` shortens every phase.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is the failure report

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/range/mod.rs"]
mod range;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use range::{block, Range, RangeOptions};
use serde_json::Value;
use tspi_core::TelemetryRecord;
use tspi_store::{JsonText, MessageKind, MessageRow, RowDetail};
use tspi_test_support::workspace_root;

fn quick() -> bool {
    std::env::var_os("TSPI_BENCH_QUICK").is_some()
}

/// Build the release programs in a target dir of their own (the bench's own build
/// unifies features with its dev-dependencies: sharing target/release would rebuild
/// both every time) and run them from there.
fn build_release() {
    let dir = workspace_root().join("target/bench-programs");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "--release", "--locked", "--target-dir"])
        .arg(&dir);
    for p in [
        "producer",
        "player",
        "generator",
        "replayer",
        "archiver",
        "console",
    ] {
        cmd.args(["-p", &format!("tspi-{p}")]);
    }
    let status = cmd.current_dir(workspace_root()).status().unwrap();
    assert!(status.success(), "building the release programs failed");
    std::env::set_var("TSPI_BIN_DIR", dir.join("release"));
    // Two cores carry the whole range here (generator, producer, NATS, the display): the
    // browser takes what they leave, as it would on an operator's own machine.
    if std::env::var_os("TSPI_BROWSER_NICE").is_none() {
        std::env::set_var("TSPI_BROWSER_NICE", "10");
    }
}

/// utime + stime of a process, in seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After ')': state is field 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// The machine's CPU time so far, in ticks: (busy, steal, total) over all cores.
fn machine_ticks() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let total: u64 = f.iter().take(8).sum();
    (total - get(3) - get(4) - get(7), get(7), total)
}

/// A bare NATS subscriber's receive → delivery ages (the producer's receive stamp to
/// the moment a core subscription has the message): what the bus costs, without the
/// display.
fn bare_subscriber(
    client: async_nats::Client,
) -> (
    std::sync::Arc<std::sync::Mutex<Histogram<u64>>>,
    tokio::task::JoinHandle<()>,
) {
    let h = std::sync::Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap(),
    ));
    let sink = h.clone();
    let task = tokio::spawn(async move {
        let Ok(mut sub) = client.subscribe("tspi.>").await else {
            return;
        };
        while let Some(m) = sub.next().await {
            if let Ok(r) = TelemetryRecord::from_cbor(&m.payload) {
                let age_us = (tspi_runtime::now_epoch_ms() - r.recv_epoch_ms).max(0) as u64 * 1000;
                let _ = sink.lock().unwrap().record(age_us.max(1));
            }
        }
    });
    (h, task)
}

/// Poll `condition` every 250 ms until it holds; panic after `deadline`.
async fn until(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn live() {
    let tracks: u32 = 1000;
    let (warm, window) = if quick() { (5, 10) } else { (10, 30) };
    let range = Range::start(RangeOptions {
        archive: false,
        alarm_rules: None,
        player_args: &["--web-rate", "10"],
    })
    .await;
    let generator = range.generator("generator", tracks, 10, "continuous");
    tokio::time::sleep(Duration::from_secs(warm)).await;

    // Same-run baselines, without the browser: the headless player's CPU per message on
    // the same stream, and a bare NATS subscriber's receive → delivery age.
    let headless = range.programs.start(
        "player-headless",
        "player",
        &["--rate", "10", "--no-json-stream", "--duration", "600s"],
    );
    let client = async_nats::connect(range.nats.url()).await.unwrap();
    // Measured once it is printing frames (subscribed, and past its start-up).
    until(
        Duration::from_secs(15),
        "the headless player's first frame",
        || headless.stdout().contains("\"frame\""),
    )
    .await;
    let base_secs = window.min(15);
    let hcpu0 = cpu_s(headless.pid());
    let (bare, bare_task) = bare_subscriber(client.clone());
    tokio::time::sleep(Duration::from_secs(base_secs)).await;
    let hcpu = cpu_s(headless.pid()) - hcpu0;
    bare_task.abort();
    let bare = bare.lock().unwrap().clone();
    let baseline_msgs = bare.len();
    drop(headless);

    // The display with one tab.
    // TSPI_WEB_BENCH_QUERY: another view to measure (e.g. "?view=range&trail=0").
    let query =
        std::env::var("TSPI_WEB_BENCH_QUERY").unwrap_or_else(|_| "?view=map&trail=60".into());
    let tab = block(|| range.tab(&query));
    block(|| {
        tab.until(
            &format!("tspiDisplay.state().tracks.length === {tracks}"),
            Duration::from_secs(60),
            "every track on the page",
        )
    });
    tokio::time::sleep(Duration::from_secs(warm)).await;
    block(|| tab.eval("tspiDisplay.latency()"));
    let web_pid = range.player.pid();
    let cpu0 = cpu_s(web_pid);
    let msgs0 = range.metric("tspi_player_web_live_messages_total", "");
    let bytes0 = range.metric("tspi_player_web_sent_bytes_total", "");
    let thinned0 = range.metric("tspi_player_web_updates_thinned_total", "backlog");
    let (with_tab, with_tab_task) = bare_subscriber(client.clone());
    let ticks0 = machine_ticks();
    let started = Instant::now();
    let (mut fps, mut rss_max) = (Vec::new(), 0u64);
    while started.elapsed() < Duration::from_secs(window) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        fps.push(
            block(|| tab.eval("tspiDisplay.state().fps"))
                .as_f64()
                .unwrap(),
        );
        rss_max = rss_max.max(range.player_rss_kb());
    }
    let secs = started.elapsed().as_secs_f64();
    let latency = block(|| tab.eval("tspiDisplay.latency()"));
    let msgs = range.metric("tspi_player_web_live_messages_total", "") - msgs0;
    let bytes = range.metric("tspi_player_web_sent_bytes_total", "") - bytes0;
    let thinned = range.metric("tspi_player_web_updates_thinned_total", "backlog") - thinned0;
    let cpu = cpu_s(web_pid) - cpu0;
    let ticks1 = machine_ticks();
    with_tab_task.abort();
    let with_tab = with_tab.lock().unwrap().clone();
    let state = block(|| tab.eval("tspiDisplay.state()"));
    // The page's own ceiling: the same picture (1,000 tracks and their trails) once the
    // data stops, with the machine no longer carrying 10,000 messages a second.
    drop(generator);
    // The data has stopped when the display takes in nothing new between two looks.
    let mut taken = -1.0;
    until(Duration::from_secs(15), "the live data to stop", || {
        let now = range.metric("tspi_player_web_live_messages_total", "");
        std::mem::replace(&mut taken, now) == now
    })
    .await;
    let mut quiet = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        quiet.push(
            block(|| tab.eval("tspiDisplay.state().fps"))
                .as_f64()
                .unwrap_or(0.0),
        );
    }
    let quiet_fps = quiet.iter().sum::<f64>() / quiet.len() as f64;
    let quiet_tracks = block(|| tab.eval("tspiDisplay.state().tracks.length"));
    // The same-run baseline for frames: the same browser under the same load, on a page
    // that draws nothing (how many frames the machine leaves a browser at all).
    block(|| tab.goto(&format!("{}healthz", range.url)));
    block(|| {
        tab.eval(
            "(() => { window.__f = 0; window.__t0 = performance.now(); \
             (function f() { window.__f++; requestAnimationFrame(f); })(); return 0; })()",
        )
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_fps = block(|| tab.eval("window.__f / ((performance.now() - window.__t0) / 1000)"))
        .as_f64()
        .unwrap_or(0.0);
    let mean_fps = fps.iter().sum::<f64>() / fps.len() as f64;
    let min_fps = fps.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "== live: {tracks} tracks × 10 Hz, one tab ({query}), --web-rate 10, {secs:.0} s measured"
    );
    println!("  messages in: {msgs:.0} ({:.0}/s)", msgs / secs);
    println!(
        "  browser: {mean_fps:.1} fps mean, {min_fps:.0} min (goal ≥ 30); baseline, a page that draws nothing in the same browser right after: {idle_fps:.1} fps → ratio {:.2}; JS ms a frame: {:.1} (map {:.1}: trails {:.1}, markers {:.1}, labels {:.1}; table {:.1}); JS applying messages: {:.0} ms since the page opened; the same page once the data stopped ({quiet_tracks} tracks drawn, the machine otherwise idle): {quiet_fps:.1} fps",
        mean_fps / idle_fps.max(1e-9),
        state["perf"]["frame"].as_f64().unwrap_or(0.0),
        state["perf"]["map"].as_f64().unwrap_or(0.0),
        state["perf"]["trails"].as_f64().unwrap_or(0.0),
        state["perf"]["markers"].as_f64().unwrap_or(0.0),
        state["perf"]["labels"].as_f64().unwrap_or(0.0),
        state["perf"]["table"].as_f64().unwrap_or(0.0),
        state["perf"]["apply"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  display CPU: {:.2} µs/message ({:.1} % of a core); baseline, the headless player on the same stream: {:.2} µs/message → ratio {:.2}",
        cpu / msgs * 1e6,
        cpu / secs * 100.0,
        hcpu / baseline_msgs.max(1) as f64 * 1e6,
        (cpu / msgs) / (hcpu / baseline_msgs.max(1) as f64).max(1e-12)
    );
    println!("  display RSS peak: {:.1} MiB", rss_max as f64 / 1024.0);
    println!(
        "  to the tab: {:.0} kB/s; updates thinned because the tab was behind: {thinned:.0}",
        bytes / secs / 1000.0
    );
    println!(
        "  UDP → state(): p50 {} ms, p99 {} ms, max {} ms over {} updates (goal p99 ≤ 150 ms)",
        latency["p50"], latency["p99"], latency["max"], latency["n"]
    );
    println!(
        "  baseline, UDP → a bare NATS subscriber at the same time: p50 {:.1} ms, p99 {:.1} ms ({} messages)",
        pct(&with_tab, 0.5),
        pct(&with_tab, 0.99),
        with_tab.len()
    );
    println!(
        "  baseline, UDP → a bare NATS subscriber before the tab opened: p50 {:.1} ms, p99 {:.1} ms ({} messages)",
        pct(&bare, 0.5),
        pct(&bare, 0.99),
        bare.len()
    );
    let (busy, steal, total) = (
        ticks1.0 - ticks0.0,
        ticks1.1 - ticks0.1,
        (ticks1.2 - ticks0.2).max(1),
    );
    println!(
        "  machine: {:.0} % busy, {:.0} % stolen by the hypervisor, over {} cores",
        busy as f64 * 100.0 / total as f64,
        steal as f64 * 100.0 / total as f64,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

/// A 10-minute archive of `aircraft` at 10 Hz ending now, written straight into
/// PostgreSQL as the archiver writes it (telemetry rows, the original CBOR in `raw`).
async fn write_archive(range: &Range, aircraft: u16, minutes: u32) -> (i64, i64) {
    let (pg, db) = range.pg.as_ref().unwrap();
    let pool = tspi_store::pool(&pg.url(db), 2).unwrap();
    let mut client = pool.get().await.unwrap();
    let fleet = tspi_generator::Fleet::new(&tspi_generator::FleetOptions {
        count: aircraft,
        sensor_base: 20000,
        style: tspi_generator::Style::Normal,
        kind: tspi_generator::Kind::Mixed,
        min_speed_mps: 60.0,
        max_speed_mps: 250.0,
        origin_lat_deg: 34.9,
        origin_lon_deg: -117.9,
        origin_alt_m: 700.0,
        seed: 7,
    });
    let end_ms = tspi_runtime::now_epoch_ms() - 60_000;
    let start_ms = end_ms - i64::from(minutes) * 60_000;
    let mut rows = Vec::with_capacity(10_000);
    let mut seq = 1_000_000_000i64;
    let frames = i64::from(minutes) * 600;
    for f in 0..frames {
        let recv_ms = start_ms + f * 100;
        let (day, ticks) = tspi_core::rfc3339::day_and_ticks(recv_ms * 1000);
        for i in 0..usize::from(aircraft) {
            let Some(d) = fleet.datagram(i, f as f64 / 10.0, day, ticks) else {
                continue;
            };
            let rec = TelemetryRecord::from_datagram(&d, recv_ms);
            let mut json = Vec::new();
            rec.write_json(&mut json);
            seq += 1;
            let at = |ms: i64| {
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
            };
            rows.push(MessageRow {
                stream: "TSPI".into(),
                stream_seq: seq,
                stream_ts: at(recv_ms + 2),
                subject: format!("tspi.{}.{}", d.kind().as_str(), d.sensor_id),
                kind: MessageKind::Telemetry,
                msg_id: Some(tspi_core::msg_id(&d)),
                recv_ts: Some(at(recv_ms)),
                sensor_id: Some(i32::from(d.sensor_id)),
                day: Some(d.day as i16),
                time_s: Some(rec.time_s),
                record: Some(JsonText(json)),
                raw: Bytes::from(rec.to_cbor()),
                error: None,
                detail: RowDetail::None,
            });
        }
        if rows.len() >= 5_000 {
            tspi_store::write_batch(&mut client, &rows).await.unwrap();
            rows.clear();
        }
    }
    tspi_store::write_batch(&mut client, &rows).await.unwrap();
    client.execute("ANALYZE messages", &[]).await.unwrap();
    // As the archiver does every few seconds.
    tspi_store::summarize_time_index(&client).await.unwrap();
    (start_ms, end_ms)
}

async fn scrub() {
    let (aircraft, minutes, seeks) = if quick() { (20, 2, 15) } else { (20, 10, 50) };
    let range = Range::start(RangeOptions {
        archive: true,
        alarm_rules: None,
        player_args: &[],
    })
    .await;
    let (start_ms, end_ms) = write_archive(&range, aircraft, minutes).await;
    let rows = range.psql("SELECT count(*) FROM messages");
    // TSPI_WEB_BENCH_QUERY: another view to measure (e.g. "?view=range&trail=0").
    let query =
        std::env::var("TSPI_WEB_BENCH_QUERY").unwrap_or_else(|_| "?view=map&trail=60".into());
    let tab = block(|| range.tab(&query));
    block(|| tab.wait("tspiDisplay.pause()")).unwrap();
    let mut rng = rand::rng();
    use rand::Rng as _;
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut shown_tracks = Vec::new();
    for _ in 0..seeks {
        let at = rng.random_range(start_ms + 60_000..end_ms);
        let iso = tspi_core::rfc3339::format_utc_millis(at);
        let v = block(|| {
            tab.wait(&format!(
                "(async () => {{ const t = performance.now(); const s = await tspiDisplay.seek('{iso}'); \
                 return [performance.now() - t, s.tracks.length, s.cursor]; }})()"
            ))
        })
        .unwrap();
        assert_eq!(v[2], Value::String(iso.clone()), "{v}");
        shown_tracks.push(v[1].as_u64().unwrap());
        let _ = h.record((v[0].as_f64().unwrap() * 1000.0) as u64);
    }
    // Baseline: the replayer alone, request → ready marker, same archive, same run.
    let client = async_nats::connect(range.nats.url()).await.unwrap();
    let mut base = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut playout = client
        .subscribe("player.bench.playout.replay.ready")
        .await
        .unwrap();
    client.flush().await.unwrap();
    for seg in 1..=seeks as u64 {
        let at = rng.random_range(start_ms + 60_000..end_ms);
        let req = serde_json::json!({"op": "play", "start": tspi_core::rfc3339::format_utc_millis(at),
            "end": tspi_core::rfc3339::format_utc_millis(end_ms), "paused": true, "segment": seg,
            "snapshot": {"trail": 60, "lookback": 120}});
        let t = Instant::now();
        client
            .request(
                "player.bench.ctrl",
                serde_json::to_vec(&req).unwrap().into(),
            )
            .await
            .unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), playout.next())
                .await
                .unwrap()
                .unwrap();
            let marker = tspi_core::playout::SegmentMarker::from_bytes(&m.payload).unwrap();
            if marker.segment == seg {
                break;
            }
        }
        let _ = base.record(t.elapsed().as_micros() as u64);
    }
    println!(
        "== scrub: {seeks} random seeks (paused) in a {minutes}-minute archive of {aircraft} aircraft at 10 Hz ({rows} rows), trail 60 s"
    );
    println!(
        "  seek → picture drawn: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (goal p99 ≤ 300 ms); tracks shown {}..{}",
        pct(&h, 0.5),
        pct(&h, 0.99),
        h.max() as f64 / 1000.0,
        shown_tracks.iter().min().unwrap(),
        shown_tracks.iter().max().unwrap()
    );
    println!(
        "  baseline, the replayer alone (request → ready marker): p50 {:.0} ms, p99 {:.0} ms → the display adds p50 {:.0} ms",
        pct(&base, 0.5),
        pct(&base, 0.99),
        pct(&h, 0.5) - pct(&base, 0.5)
    );
    // With RUST_LOG=tspi_replayer=debug: each segment's preface timings.
    if std::env::var_os("TSPI_BENCH_VERBOSE").is_some() {
        if let Some(r) = &range.replayer {
            for line in r.stderr().lines().filter(|l| l.contains("segment ready")) {
                println!("  {line}");
            }
        }
    }
}

async fn screenshots() {
    let range = Range::start(RangeOptions {
        archive: true,
        alarm_rules: None,
        player_args: &["--operator", "range-ops"],
    })
    .await;
    let tab = block(|| range.tab("?view=range&trail=60"));
    let _generator = range.generator("generator", 30, 10, "continuous");
    let t0 = Instant::now();
    let at = |s: u64| tokio::time::sleep_until((t0 + Duration::from_secs(s)).into());
    at(5).await;
    range
        .console("session", &["session", "Sortie 7", "S7-0412"])
        .await;
    at(20).await;
    range
        .console("tag1", &["tag", "Pass 1: target acquired"])
        .await;
    at(45).await;
    range.console("tag2", &["tag", "Pass 2: break-off"]).await;
    at(70).await;
    let docs = workspace_root().join("docs");
    block(|| {
        tab.wait("tspiDisplay.setView('range', {e_km: 0, n_km: 0, zoom: 9.3})")
            .unwrap();
        tab.wait("tspiDisplay.follow(null)").unwrap();
        std::thread::sleep(Duration::from_secs(2));
        tab.screenshot(&docs.join("web-display-range.png"));
        tab.wait("tspiDisplay.setView('map', {lat: 34.55, lon: -118.55, zoom: 8.2})")
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        tab.screenshot(&docs.join("web-display-map.png"));
    });
    println!("== screenshots: docs/web-display-range.png, docs/web-display-map.png");
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = which.is_empty();
    build_release();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if all || which.iter().any(|w| w == "live") {
            live().await;
        }
        if all || which.iter().any(|w| w == "scrub") {
            scrub().await;
        }
        if which.iter().any(|w| w == "screenshots") {
            screenshots().await;
        }
    });
}
