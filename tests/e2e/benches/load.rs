//! End-to-end load bench (not a test): producer throughput with zero loss against the
//! same server's ceiling measured in the same run, UDP-in → receiver-line latency, and the
//! producer's peak RSS. Machines here are shared and noisy, so every throughput figure is
//! reported next to its same-run baseline as a ratio.
//!
//! `cargo bench -p tspi-e2e --bench load` (builds the release producer first if needed).
//! Environment: `TSPI_BENCH_QUICK=1` shortens every phase (smoke run).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::future::IntoFuture;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tspi_core::{
    subject::write_msg_id, Datagram, GeocentricRaw, Payload, StreamPrefix, TelemetryRecord,
};
use tspi_e2e::stream_count;
use tspi_test_support::{free_port, workspace_root, NatsCluster, NatsServer};

const WINDOW: usize = 1024;

fn quick() -> bool {
    std::env::var_os("TSPI_BENCH_QUICK").is_some()
}

/// Datagram `i` of a run: unique (sensor, day, ticks) so nothing is de-duplicated by
/// accident across runs sharing a stream.
fn datagram(i: u64, day: u16) -> Datagram {
    Datagram {
        sensor_id: (i % 1000) as u16,
        day,
        time_ticks: (i / 1000) as u32,
        status: 0xFF,
        status_flags: 1,
        payload: Payload::Geocentric(GeocentricRaw {
            x: -245_906_456,
            y: -463_541_412,
            z: 362_267_115,
            vx: 11_471,
            vy: 9_427,
            vz: 19_631,
            ax: -641,
            ay: 461,
            az: 154,
        }),
    }
}

/// The ceiling: a bare async-nats loop publishing the same records (subject, msg id, CBOR)
/// with the same window of unacknowledged publishes as the producer.
async fn bare_publish_ceiling(urls: &[String], n: u64, day: u16) -> f64 {
    let client = tspi_e2e::client(urls).await;
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(WINDOW + 1)
        .build(client);
    let prefix = StreamPrefix::default();
    let now = tspi_runtime::now_epoch_ms();
    let messages: Vec<(String, String, Bytes)> = (0..n)
        .map(|i| {
            let d = datagram(i, day);
            let mut id = String::new();
            write_msg_id(&mut id, d.sensor_id, d.day, d.time_ticks);
            let cbor = TelemetryRecord::from_datagram(&d, now).to_cbor();
            (prefix.subject(d.kind(), d.sensor_id), id, Bytes::from(cbor))
        })
        .collect();
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for (subject, id, payload) in messages {
        if in_flight.len() >= WINDOW {
            if let Some(r) = in_flight.next().await {
                let _: Result<_, _> = r;
            }
        }
        let ack = js
            .send_publish(
                subject,
                PublishMessage::build().payload(payload).message_id(id),
            )
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
        in_flight.push(ack.into_future());
    }
    while let Some(r) = in_flight.next().await {
        r.unwrap_or_else(|e| panic!("ack: {e}"));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

struct ProducerProcess {
    child: Child,
    udp: SocketAddr,
    metrics: SocketAddr,
}

impl ProducerProcess {
    fn start(urls: &[String]) -> ProducerProcess {
        let bin = producer_binary();
        let (udp_port, metrics_port) = (free_port(), free_port());
        let mut cmd = Command::new(bin);
        for u in urls {
            cmd.args(["--nats-server", u]);
        }
        let child = cmd
            .args([
                "--udp-host",
                "127.0.0.1",
                "--udp-port",
                &udp_port.to_string(),
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--stats-interval", "0", "--log-level", "warn"])
            .args(["--max-in-flight", &WINDOW.to_string()])
            .args([
                "--worker-threads",
                &std::env::var("TSPI_BENCH_PRODUCER_THREADS").unwrap_or_else(|_| "2".into()),
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start producer: {e}"));
        let p = ProducerProcess {
            child,
            udp: SocketAddr::from(([127, 0, 0, 1], udp_port)),
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.scrape("datagrams_received_total").is_none() {
            assert!(Instant::now() < deadline, "producer metrics never came up");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// A counter's value from the producer's own metrics endpoint.
    fn scrape(&self, name: &str) -> Option<u64> {
        let mut s = TcpStream::connect(self.metrics).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        let full = format!("tspi_producer_{name}");
        body.lines()
            .filter(|l| l.starts_with(&full))
            .map(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0) as u64
            })
            .reduce(|a, b| a + b)
    }

    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for ProducerProcess {
    fn drop(&mut self) {
        tspi_test_support::sigterm(self.child.id());
        let _ = self.child.wait();
    }
}

fn producer_binary() -> PathBuf {
    let bin = workspace_root().join("target/release/producer");
    if !bin.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "tspi-producer"])
            .current_dir(workspace_root())
            .status()
            .unwrap_or_else(|e| panic!("cargo build: {e}"));
        assert!(status.success(), "building the release producer failed");
    }
    bin
}

/// Send `n` datagrams at `rate`/s from a dedicated thread (1 ms pacing slices); records
/// each one's send time (ns since `base`) when `sent_at` is given.
fn blast(
    target: SocketAddr,
    n: u64,
    rate: f64,
    day: u16,
    base: Instant,
    sent_at: Option<Arc<Vec<AtomicU64>>>,
) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let bytes: Vec<[u8; 37]> = (0..n).map(|i| datagram(i, day).encode()).collect();
        let start = Instant::now();
        for (i, b) in bytes.iter().enumerate() {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now + Duration::from_micros(200) {
                std::thread::sleep(due - now);
            }
            if let Some(s) = &sent_at {
                s[i].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            let _ = socket.send_to(b, target);
        }
        start.elapsed()
    })
}

#[derive(Debug)]
struct Rung {
    rate: f64,
    sent: u64,
    published: u64,
    stored: u64,
    dropped: u64,
    send_s: f64,
    total_s: f64,
    rss_kib: u64,
}

impl Rung {
    fn zero_loss(&self) -> bool {
        self.published == self.sent && self.stored == self.sent && self.dropped == 0
    }
    /// Kept up: finished within 10 % (+0.3 s) of the send time.
    fn sustained(&self) -> bool {
        self.zero_loss() && self.total_s <= self.send_s * 1.1 + 0.3
    }
}

async fn producer_rung(urls: &[String], rate: f64, seconds: f64, day: u16) -> Rung {
    let client = tspi_e2e::client(urls).await;
    let js = jetstream::new(client);
    let before = stream_count(&js, "TSPI").await;
    let producer = ProducerProcess::start(urls);
    let n = (rate * seconds) as u64;
    let start = Instant::now();
    let sender = blast(producer.udp, n, rate, day, start, None);
    let send = tokio::task::spawn_blocking(move || sender.join().unwrap_or_default())
        .await
        .unwrap_or_default();
    let mut last = (0, Instant::now());
    loop {
        let published = producer.scrape("published_total").unwrap_or(0);
        if published >= n {
            break;
        }
        if published != last.0 {
            last = (published, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = start.elapsed();
    Rung {
        rate,
        sent: n,
        published: producer.scrape("published_total").unwrap_or(0),
        stored: stream_count(&js, "TSPI").await - before,
        dropped: producer.scrape("datagrams_dropped_total").unwrap_or(0),
        send_s: send.as_secs_f64(),
        total_s: total.as_secs_f64(),
        rss_kib: producer.peak_rss_kib(),
    }
}

/// The highest offered rate the producer sustains with zero loss, stepping up from
/// `start` by 10 % until it falls behind or loses anything.
async fn sustained_rate(urls: &[String], start: f64, seconds: f64, day: &mut u16) -> Option<Rung> {
    let mut best: Option<Rung> = None;
    let mut rate = start;
    for _ in 0..12 {
        *day += 1;
        let rung = producer_rung(urls, rate, seconds, *day).await;
        eprintln!(
            "  offered {:>7.0}/s: {rung:?} sustained={}",
            rate,
            rung.sustained()
        );
        if !rung.sustained() {
            break;
        }
        best = Some(rung);
        rate *= 1.1;
    }
    best
}

/// Records the latency of every line a receiver writes: the line's time_s gives back the
/// datagram index, whose send time the blaster stored.
struct LatencyWriter {
    sent_at: Arc<Vec<AtomicU64>>,
    base: Instant,
    hist: Histogram<u64>,
    pending: Vec<u8>,
}

impl tokio::io::AsyncWrite for LatencyWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let now = self.base.elapsed().as_nanos() as u64;
        self.pending.extend_from_slice(buf);
        let pending = std::mem::take(&mut self.pending);
        let mut rest: &[u8] = &pending;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                let sensor = v["sensor_id"].as_u64().unwrap_or(0);
                let ticks = (v["time_s"].as_f64().unwrap_or(0.0) * 10_000.0).round() as u64;
                let i = (ticks * 1000 + sensor) as usize;
                if let Some(sent) = self.sent_at.get(i).map(|a| a.load(Ordering::Relaxed)) {
                    if sent > 0 && now > sent {
                        let _ = self.hist.record((now - sent) / 1000);
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// UDP-in → receiver-stdout latency (µs) at `rate` for `seconds`.
async fn latency(urls: &[String], rate: f64, seconds: f64, day: u16) -> Histogram<u64> {
    let producer = ProducerProcess::start(urls);
    let client = tspi_e2e::client(urls).await;
    let js = jetstream::new(client);
    let n = (rate * seconds) as u64;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let base = Instant::now();
    let writer = LatencyWriter {
        sent_at: sent_at.clone(),
        base,
        hist: Histogram::new(3).unwrap_or_else(|e| panic!("{e}")),
        pending: Vec::new(),
    };
    let options = tspi_receiver::ReceiverOptions {
        stream: "TSPI".into(),
        durable: None,
        subjects: vec![format!("tspi.geocentric.>")],
        deliver: tspi_receiver::Deliver::New,
        json: true,
        count: Some(n),
        duration: Some(Duration::from_secs_f64(seconds + 20.0)),
        batch: 512,
        ack_wait: Duration::from_secs(30),
    };
    let metrics = tspi_receiver::ReceiverMetrics::new(&mut Registry::default());
    let shutdown = CancellationToken::new();
    let mut writer = writer;
    let receiver = tokio::spawn(async move {
        let r = tspi_receiver::run(options, js, &mut writer, metrics, shutdown).await;
        (r, writer.hist)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sender = blast(producer.udp, n, rate, day, base, Some(sent_at));
    let _ = tokio::task::spawn_blocking(move || sender.join()).await;
    let (result, hist) = receiver.await.unwrap_or_else(|e| panic!("{e}"));
    let summary = result.unwrap_or_else(|e| panic!("receiver: {e}"));
    eprintln!("  latency run: {} lines written of {n}", summary.written);
    hist
}

/// Baseline for latency: core NATS request/reply round trip on the same server (µs).
async fn nats_rtt(urls: &[String], n: usize) -> Histogram<u64> {
    let client = tspi_e2e::client(urls).await;
    let mut sub = client
        .subscribe("bench.rtt")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let responder = client.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(r) = m.reply {
                let _ = responder.publish(r, m.payload).await;
            }
        }
    });
    let mut hist = Histogram::new(3).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..n {
        let t = Instant::now();
        let _ = client.request("bench.rtt", Bytes::from_static(b"x")).await;
        let _ = hist.record(t.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    hist
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let (n_ceiling, seconds) = if quick() { (20_000, 1.0) } else { (200_000, 3.0) };
        let mut day = 1u16;
        let mut report = serde_json::Map::new();

        let only = std::env::var("TSPI_BENCH_ONLY").unwrap_or_default();
        for (label, nodes) in [("R1", 1usize), ("R3", 3)] {
            if !only.is_empty() && only != label {
                continue;
            }
            eprintln!("== {label}: starting {nodes} node(s)");
            let (_single, _cluster, urls) = if nodes == 1 {
                let s = NatsServer::start().await;
                let urls = vec![s.url()];
                (Some(s), None, urls)
            } else {
                let c = NatsCluster::start(nodes).await;
                let urls = c.urls();
                (None, Some(c), urls)
            };
            // Create the stream with the producer's own definition.
            drop(ProducerProcess::start(&urls));
            // Latency first, on a fresh stream: measured after the throughput ladder it
            // would include the server digesting a million messages.
            if nodes == 1 {
                day += 1;
                let lat_seconds = if quick() { 2.0 } else { 10.0 };
                let h = latency(&urls, 5000.0, lat_seconds, day).await;
                let rtt = nats_rtt(&urls, if quick() { 500 } else { 3000 }).await;
                eprintln!(
                    "  latency UDP-in → receiver line at 5000/s: p50 {} µs, p99 {} µs, max {} µs ({} samples); NATS RTT baseline p50 {} µs p99 {} µs",
                    h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max(), h.len(),
                    rtt.value_at_quantile(0.5), rtt.value_at_quantile(0.99)
                );
                report.insert(
                    "latency_R1_5000_per_s".into(),
                    serde_json::json!({
                        "samples": h.len(),
                        "p50_us": h.value_at_quantile(0.5),
                        "p99_us": h.value_at_quantile(0.99),
                        "p999_us": h.value_at_quantile(0.999),
                        "max_us": h.max(),
                        "baseline_nats_rtt_p50_us": rtt.value_at_quantile(0.5),
                        "baseline_nats_rtt_p99_us": rtt.value_at_quantile(0.99),
                        "p99_over_rtt_p99": (h.value_at_quantile(0.99) as f64 / rtt.value_at_quantile(0.99).max(1) as f64 * 100.0).round() / 100.0,
                    }),
                );
            }
            day += 1;
            let ceiling = bare_publish_ceiling(&urls, n_ceiling, day).await;
            eprintln!("  ceiling (bare publish loop, window {WINDOW}): {ceiling:.0}/s");
            let start_rate = (ceiling * 0.5).max(1000.0);
            let best = sustained_rate(&urls, start_rate, seconds, &mut day).await;
            day += 1;
            let ceiling_after = bare_publish_ceiling(&urls, n_ceiling, day).await;
            let ceiling_mean = (ceiling + ceiling_after) / 2.0;
            let (rate, rss) = best.as_ref().map_or((0.0, 0), |b| (b.rate, b.rss_kib));
            eprintln!(
                "  {label}: producer sustained {rate:.0}/s zero-loss; ceiling {ceiling:.0}/s before, {ceiling_after:.0}/s after; ratio {:.2}; peak RSS {} MiB",
                rate / ceiling_mean,
                rss / 1024
            );
            report.insert(
                label.into(),
                serde_json::json!({
                    "ceiling_per_s": [ceiling.round(), ceiling_after.round()],
                    "producer_sustained_zero_loss_per_s": rate.round(),
                    "producer_over_ceiling": (rate / ceiling_mean * 1000.0).round() / 1000.0,
                    "producer_peak_rss_mib": (rss as f64 / 1024.0 * 10.0).round() / 10.0,
                    "rung": best.map(|b| format!("{b:?}")),
                }),
            );
        }
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(report)).unwrap_or_default();
        println!("{text}");
        let out = workspace_root().join("target/bench-load.json");
        let _ = std::fs::write(&out, &text);
        eprintln!("written to {}", out.display());
    });
}
