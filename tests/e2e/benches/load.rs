//! End-to-end load bench (not a test), on R1 and on a three-node R3 cluster: the producer's
//! zero-loss rate with fast-ingest batches and with the per-message window, against the
//! bare ceilings of both publishing styles measured in the same run; its CPU per datagram
//! at 40,000 /s; UDP-in → receiver-line latency at 5,000 /s next to a bare client's
//! publish → consumer-delivery latency; the producer's peak RSS sustained and at overload.
//! Machines here are shared and noisy, so every figure is reported next to its same-run
//! baseline as a ratio.
//!
//! `cargo bench -p tspi-e2e --bench load` (builds the release producer first if needed).
//! Environment: `TSPI_BENCH_QUICK=1` shortens every phase (smoke run); `TSPI_BENCH_PART=floor`
//! compares the producer's CPU with the kernel's floor (a bare receive-encode-write thread);
//! `TSPI_BENCH_PART=catchup`: a site's backlog flowing into a three-node centre against the
//! centre's own ceiling (issue 13; docs/operations.md "Multiple sites").

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
use tspi_bus::{run_publisher, OutMessage, PublishMetrics, PublisherOptions};
use tspi_core::{
    subject::write_msg_id, Datagram, GeocentricRaw, Payload, StreamPrefix, TelemetryRecord,
};
use tspi_e2e::stream_count;
use tspi_test_support::{free_port, wait_until, workspace_root, NatsCluster, NatsServer};

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

/// Datagram `i`'s message as the producer would publish it, received `now`.
fn out_message(i: u64, day: u16, prefix: &StreamPrefix, now: i64) -> OutMessage {
    let d = datagram(i, day);
    let mut id = String::new();
    write_msg_id(&mut id, d.sensor_id, d.day, d.time_ticks);
    OutMessage {
        subject: prefix.subject(d.kind(), d.sensor_id).into(),
        msg_id: id,
        payload: Bytes::from(TelemetryRecord::from_datagram(&d, now).to_cbor()),
        received: Instant::now(),
    }
}

/// The fast-ingest ceiling: the same records through tspi-bus's fast-batch publisher
/// alone (no socket, no decoding), as fast as its flow control lets them go.
async fn bare_fast_ceiling(urls: &[String], n: u64, day: u16) -> f64 {
    let client = tspi_e2e::client(urls).await;
    let prefix = StreamPrefix::default();
    let now = tspi_runtime::now_epoch_ms();
    let (tx, rx) = tokio::sync::mpsc::channel(n as usize + 1);
    for i in 0..n {
        let _ = tx.try_send(out_message(i, day, &prefix, now));
    }
    drop(tx);
    let metrics = PublishMetrics::default();
    let start = Instant::now();
    run_publisher(
        client,
        rx,
        Some::<OutMessage>,
        PublisherOptions {
            fast: Some(prefix.batch_control_subject().into()),
            max_in_flight: WINDOW,
            ..PublisherOptions::default()
        },
        metrics.clone(),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        metrics.published.get(),
        n,
        "the fast ceiling run confirmed everything"
    );
    n as f64 / start.elapsed().as_secs_f64()
}

/// utime + stime of a process, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    stat_cpu_ticks(&format!("/proc/{pid}/stat"))
}

/// utime + stime in a `stat` file of /proc.
fn stat_cpu_ticks(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100)
}

struct ProducerProcess {
    child: Child,
    udp: SocketAddr,
    metrics: SocketAddr,
}

impl ProducerProcess {
    fn start(urls: &[String], mode: &str) -> ProducerProcess {
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
            .args(["--publish-mode", mode])
            // The producer's own default (one thread) unless the run asks for more.
            .args(
                std::env::var("TSPI_BENCH_PRODUCER_THREADS")
                    .map(|n| vec!["--worker-threads".to_owned(), n])
                    .unwrap_or_default(),
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start producer: {e}"));
        let p = ProducerProcess {
            child,
            udp: SocketAddr::from(([127, 0, 0, 1], udp_port)),
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        };
        let reached = tspi_test_support::wait_until_blocking(Duration::from_secs(20), || {
            p.scrape("datagrams_received_total").is_some()
        });
        assert!(reached.is_some(), "producer metrics never came up");
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
    cpu_us_per_datagram: f64,
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

async fn producer_rung(urls: &[String], mode: &str, rate: f64, seconds: f64, day: u16) -> Rung {
    let client = tspi_e2e::client(urls).await;
    let js = jetstream::new(client);
    let before = stream_count(&js, "TSPI").await;
    let producer = ProducerProcess::start(urls, mode);
    let ticks_before = cpu_ticks(producer.child.id());
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
    let ticks = cpu_ticks(producer.child.id()).saturating_sub(ticks_before);
    Rung {
        rate,
        sent: n,
        published: producer.scrape("published_total").unwrap_or(0),
        stored: stream_count(&js, "TSPI").await - before,
        dropped: producer.scrape("datagrams_dropped_total").unwrap_or(0),
        send_s: send.as_secs_f64(),
        total_s: total.as_secs_f64(),
        rss_kib: producer.peak_rss_kib(),
        cpu_us_per_datagram: ticks as f64 * 1e6 / clock_ticks_per_second() as f64 / n.max(1) as f64,
    }
}

/// The highest offered rate the producer sustains with zero loss, stepping up from
/// `start` by 10 % until it falls behind or loses anything.
async fn sustained_rate(
    urls: &[String],
    mode: &str,
    start: f64,
    seconds: f64,
    day: &mut u16,
) -> Option<Rung> {
    let mut best: Option<Rung> = None;
    let mut rate = start;
    for _ in 0..12 {
        *day += 1;
        let rung = producer_rung(urls, mode, rate, seconds, *day).await;
        eprintln!(
            "  {mode} offered {:>7.0}/s: {rung:?} sustained={}",
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
    let mode = std::env::var("TSPI_BENCH_LATENCY_MODE").unwrap_or_else(|_| "auto".into());
    let producer = ProducerProcess::start(urls, &mode);
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

/// Baseline for latency: a bare client publishing 8-byte send stamps at `rate` to a
/// stream of its own with `replicas`, and a pull consumer (async-nats defaults, explicit
/// acks) on it: publish → delivery (µs), the bus's own share of the producer's path.
async fn bare_delivery_latency(
    urls: &[String],
    replicas: usize,
    rate: f64,
    seconds: f64,
) -> Histogram<u64> {
    use jetstream::{consumer, stream};
    let client = tspi_e2e::client(urls).await;
    let js = jetstream::new(client);
    let subject = format!("bench.latency.{}", free_port());
    let stream = js
        .create_stream(stream::Config {
            name: format!("BENCH_LATENCY_{}", free_port()),
            subjects: vec![subject.clone()],
            num_replicas: replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("latency stream: {e}"));
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("latency consumer: {e}"));
    let mut messages = consumer
        .messages()
        .await
        .unwrap_or_else(|e| panic!("latency messages: {e}"));
    let n = (rate * seconds) as u64;
    let base = Instant::now();
    let publisher = tokio::spawn(async move {
        let mut acks = FuturesUnordered::new();
        let start = Instant::now();
        for i in 0..n {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() + Duration::from_micros(200) {
                tokio::time::sleep_until(due.into()).await;
            }
            while acks.len() >= WINDOW {
                let _ = acks.next().await;
            }
            let stamp = (base.elapsed().as_nanos() as u64).to_be_bytes();
            if let Ok(ack) = js
                .publish(subject.clone(), Bytes::copy_from_slice(&stamp))
                .await
            {
                acks.push(ack.into_future());
            }
        }
        while acks.next().await.is_some() {}
    });
    let mut hist = Histogram::new(3).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds + 20.0);
    let mut seen = 0;
    while seen < n && Instant::now() < deadline {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        else {
            break;
        };
        let now = base.elapsed().as_nanos() as u64;
        if let Ok(stamp) = <[u8; 8]>::try_from(&m.payload[..]) {
            let sent = u64::from_be_bytes(stamp);
            let _ = hist.record(now.saturating_sub(sent) / 1000);
        }
        let _ = m.ack().await;
        seen += 1;
    }
    let _ = publisher.await;
    hist
}

/// The CPU floor of publishing: the same records, built beforehand, offered at `rate` in
/// 1 ms slices to tspi-bus's fast-batch publisher on one thread of its own (with its own
/// client, whose connection task runs there too), as the producer does by default.
/// Returns that thread's CPU µs per message: what the bus client alone costs, without the
/// socket, decoding, encoding or quality tracking.
fn publish_path_cpu(urls: &[String], rate: f64, seconds: f64, day: u16) -> f64 {
    let urls = urls.to_vec();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async move {
            let client = tspi_e2e::client(&urls).await;
            let prefix = StreamPrefix::default();
            let now = tspi_runtime::now_epoch_ms();
            let n = (rate * seconds) as u64;
            let messages: Vec<OutMessage> =
                (0..n).map(|i| out_message(i, day, &prefix, now)).collect();
            let (tx, rx) = tokio::sync::mpsc::channel(n as usize + 1);
            let metrics = PublishMetrics::default();
            let before = stat_cpu_ticks("/proc/thread-self/stat");
            let publisher = tokio::spawn(run_publisher(
                client,
                rx,
                Some::<OutMessage>,
                PublisherOptions {
                    fast: Some(prefix.batch_control_subject().into()),
                    max_in_flight: WINDOW,
                    ..PublisherOptions::default()
                },
                metrics.clone(),
                CancellationToken::new(),
            ));
            let start = Instant::now();
            for (i, m) in messages.into_iter().enumerate() {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if due > Instant::now() + Duration::from_micros(200) {
                    tokio::time::sleep_until(due.into()).await;
                }
                let _ = tx.try_send(m);
            }
            drop(tx);
            let _ = publisher.await;
            let ticks = stat_cpu_ticks("/proc/thread-self/stat").saturating_sub(before);
            assert_eq!(
                metrics.published.get(),
                n,
                "the publish-path run confirmed everything"
            );
            ticks as f64 * 1e6 / clock_ticks_per_second() as f64 / n.max(1) as f64
        })
    })
    .join()
    .unwrap_or_else(|_| panic!("publish-path thread panicked"))
}

/// Issue 13's catch-up benchmark (`TSPI_BENCH_PART=catchup`): a three-node centre and one
/// site (its own nats-server, a leaf node behind a cuttable link, provisioned as the
/// producer does). With the link cut, `n` telemetry records go into the site stream (a
/// bare per-message loop: the site's own ingest ceiling); then the link comes back and
/// the centre's `TSPI` takes in the backlog. Reports the backlog's rate into the centre
/// against the centre's own per-message ceiling (the bare loop into `TSPI`), measured
/// before and after in the same run.
async fn site_catch_up(n: u64, day: &mut u16) {
    let centre = NatsCluster::start_centre(3).await;
    let urls = centre.urls();
    drop(ProducerProcess::start(&urls, "auto"));
    let site = tspi_test_support::SiteServer::start(&centre, "a").await;
    let site_client = tspi_e2e::client(&[site.server.url()]).await;
    let prefix = StreamPrefix::default();
    let args = tspi_bus::StreamArgs::default();
    let spec = tspi_bus::sites::site_stream_spec("a", Duration::from_secs(86_400), &args, &prefix)
        .unwrap_or_else(|e| panic!("{e}"));
    tspi_bus::ensure_stream(&site_client, &jetstream::new(site_client.clone()), &spec)
        .await
        .unwrap_or_else(|e| panic!("site stream: {e}"));
    tspi_bus::sites::ensure_site_consumer(&site_client, "a", "TSPI", 0)
        .await
        .unwrap_or_else(|e| panic!("site consumer: {e}"));
    tspi_bus::sites::ensure_site_source(&site_client, "centre", "TSPI", "a")
        .await
        .unwrap_or_else(|e| panic!("source: {e}"));
    let admin = jetstream::new(tspi_e2e::client(&urls).await);

    *day += 1;
    let ceiling_before = bare_publish_ceiling(&urls, n, *day).await;
    let at_start = stream_count(&admin, "TSPI").await;
    site.cut();
    *day += 1;
    let site_ingest = bare_publish_ceiling(&[site.server.url()], n, *day).await;
    let held = stream_count(&admin, "TSPI").await;
    assert_eq!(held, at_start, "nothing crossed the cut link");
    site.heal();
    let healed = Instant::now();
    let first = wait_until(Duration::from_secs(120), || async {
        stream_count(&admin, "TSPI").await > at_start
    })
    .await
    .unwrap_or_else(|| panic!("the backlog never started to flow"));
    let flowing = Instant::now();
    let done = wait_until(Duration::from_secs(600), || async {
        stream_count(&admin, "TSPI").await >= at_start + n
    })
    .await;
    assert!(
        done.is_some(),
        "the backlog reached the centre: {} of {n}",
        stream_count(&admin, "TSPI").await - at_start
    );
    let drain = flowing.elapsed();
    let catch_up = n as f64 / drain.as_secs_f64();
    let total = healed.elapsed();
    *day += 1;
    let ceiling_after = bare_publish_ceiling(&urls, n, *day).await;
    let mean = (ceiling_before + ceiling_after) / 2.0;
    eprintln!(
        "  catch-up: backlog {n} (the site took it at {site_ingest:.0}/s with the link cut); first backlog message at the centre {:.1} s after the link came back; drained at {catch_up:.0} msg/s ({:.1} s in all); centre per-message ceiling {ceiling_before:.0} / {ceiling_after:.0} msg/s; catch-up / ceiling {:.2}",
        first.as_secs_f64(),
        total.as_secs_f64(),
        catch_up / mean
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "backlog": n,
            "site_ingest_per_s": site_ingest.round(),
            "first_message_s": first.as_secs_f64(),
            "catch_up_per_s": catch_up.round(),
            "centre_ceiling_per_s": [ceiling_before.round(), ceiling_after.round()],
            "catch_up_over_ceiling": (catch_up / mean * 1000.0).round() / 1000.0,
        }))
        .unwrap_or_default()
    );
}

/// The kernel's floor for the producer's job, as a lower bound no client library can beat:
/// one plain thread receives the datagrams (`recvmmsg`, up to 64 a call, blocking for the
/// first), decodes each, writes its CBOR record as an `HPUB` frame with its `Nats-Msg-Id`
/// into one reused buffer and writes that buffer to a raw TCP connection to the server
/// (core publishes to the stream's subjects: stored, but no acks to read, no runtime, no
/// queue, no quality tracking). Returns that thread's CPU µs per datagram at `rate`.
/// `write: false` leaves the TCP write out (receiving, decoding and encoding only); `hold`
/// sleeps that long after each receive call, so later calls find more datagrams queued
/// (fewer wake-ups, at that much latency).
fn kernel_floor_cpu(
    url: &str,
    rate: f64,
    seconds: f64,
    day: u16,
    write: bool,
    hold: Option<Duration>,
) -> f64 {
    use std::os::fd::AsRawFd;
    let addr = url.trim_start_matches("nats://").to_string();
    std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{e}"));
        tcp.set_nodelay(true).unwrap_or_else(|e| panic!("{e}"));
        let mut line = [0u8; 4096];
        let _ = tcp.read(&mut line).unwrap_or_else(|e| panic!("INFO: {e}"));
        tcp.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\nPING\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let got = tcp.read(&mut line).unwrap_or_else(|e| panic!("PONG: {e}"));
        assert!(line[..got].windows(4).any(|w| w == b"PONG"), "server answered {:?}", String::from_utf8_lossy(&line[..got]));
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        udp.set_read_timeout(Some(Duration::from_millis(500))).unwrap_or_else(|e| panic!("{e}"));
        let n = (rate * seconds) as u64;
        let prefix = StreamPrefix::default();
        let before = stat_cpu_ticks("/proc/thread-self/stat");
        let sender = blast(udp.local_addr().unwrap_or_else(|e| panic!("{e}")), n, rate, day, Instant::now(), None);
        const BATCH: usize = 64;
        let mut bufs = [[0u8; 64]; BATCH];
        let mut iovecs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() })
            .collect();
        // SAFETY (for the zeroed headers): mmsghdr is plain old data; all-zero is valid.
        #[allow(unsafe_code)]
        let mut headers: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (h, v) in headers.iter_mut().zip(iovecs.iter_mut()) {
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut out = Vec::with_capacity(64 * 1024);
        let mut cbor = Vec::with_capacity(512);
        let mut subject = String::new();
        let mut id = String::new();
        let mut received = 0u64;
        let mut calls = 0u64;
        while received < n {
            #[allow(unsafe_code)]
            // SAFETY: the headers point at live iovecs over live 64-byte buffers, BATCH of each.
            let got = unsafe {
                libc::recvmmsg(udp.as_raw_fd(), headers.as_mut_ptr(), BATCH as u32, libc::MSG_WAITFORONE, std::ptr::null_mut())
            };
            if got <= 0 {
                break; // timed out: the sender is done and something was lost
            }
            let now = tspi_runtime::now_epoch_ms();
            out.clear();
            for (h, b) in headers.iter().zip(bufs.iter()).take(got as usize) {
                let Ok(d) = tspi_core::decode(&b[..h.msg_len as usize]) else { continue };
                cbor.clear();
                TelemetryRecord::write_datagram_cbor(&d, now, &mut cbor);
                subject.clear();
                prefix.write_subject(&mut subject, d.kind(), d.sensor_id);
                id.clear();
                write_msg_id(&mut id, d.sensor_id, d.day, d.time_ticks);
                let hdr_len = "NATS/1.0\r\nNats-Msg-Id: ".len() + id.len() + 4;
                let _ = write!(out, "HPUB {subject} {hdr_len} {}\r\nNATS/1.0\r\nNats-Msg-Id: {id}\r\n\r\n", hdr_len + cbor.len());
                out.extend_from_slice(&cbor);
                out.extend_from_slice(b"\r\n");
            }
            received += got as u64;
            calls += 1;
            if let Some(hold) = hold {
                std::thread::sleep(hold);
            }
            if write {
                tcp.write_all(&out).unwrap_or_else(|e| panic!("write: {e}"));
            }
        }
        let ticks = stat_cpu_ticks("/proc/thread-self/stat").saturating_sub(before);
        let _ = sender.join();
        eprintln!(
            "  floor: {received} of {n} datagrams received (the rest dropped by the kernel), {calls} recvmmsg calls, {:.1} datagrams a call",
            received as f64 / calls.max(1) as f64
        );
        ticks as f64 * 1e6 / clock_ticks_per_second() as f64 / received.max(1) as f64
    })
    .join()
    .unwrap_or_else(|_| panic!("floor thread panicked"))
}

/// The producer's peak RSS at overload: every server stopped (SIGSTOP), `n` datagrams
/// offered as fast as the sender goes, so its queue fills to `--queue-capacity` and the
/// rest is dropped and counted; then the servers come back and the queue drains.
/// Returns (peak RSS KiB, published, dropped) after the drain.
async fn overload_rss(
    urls: &[String],
    pause: impl FnOnce() -> Vec<tspi_test_support::fault::Paused>,
    n: u64,
    day: u16,
) -> (u64, u64, u64) {
    let producer = ProducerProcess::start(urls, "auto");
    let paused = pause();
    let sender = blast(producer.udp, n, 200_000.0, day, Instant::now(), None);
    let _ = tokio::task::spawn_blocking(move || sender.join()).await;
    // Until every datagram is read by the producer or counted as dropped by the kernel.
    let dropped = |reason: &str| {
        producer
            .scrape(&format!("datagrams_dropped_total{{reason=\"{reason}\"}}"))
            .unwrap_or(0)
    };
    let all_in = wait_until(Duration::from_secs(60), || async {
        producer.scrape("datagrams_received_total").unwrap_or(0) + dropped("kernel_receive_queue")
            >= n
    })
    .await;
    assert!(
        all_in.is_some(),
        "the producer read or counted every datagram"
    );
    let rss = producer.peak_rss_kib();
    drop(paused);
    let received = producer.scrape("datagrams_received_total").unwrap_or(0);
    let drained = wait_until(Duration::from_secs(120), || async {
        producer.scrape("published_total").unwrap_or(0) + dropped("queue_full") >= received
    })
    .await;
    assert!(
        drained.is_some(),
        "the queue drained once the servers came back"
    );
    (
        rss,
        producer.scrape("published_total").unwrap_or(0),
        dropped("queue_full"),
    )
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

fn latency_figures(
    h: &Histogram<u64>,
    bare: &Histogram<u64>,
    rtt: &Histogram<u64>,
) -> serde_json::Value {
    serde_json::json!({
        "samples": h.len(),
        "p50_us": h.value_at_quantile(0.5),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
        "baseline_bare_delivery_samples": bare.len(),
        "baseline_bare_delivery_p50_us": bare.value_at_quantile(0.5),
        "baseline_bare_delivery_p99_us": bare.value_at_quantile(0.99),
        "baseline_nats_rtt_p50_us": rtt.value_at_quantile(0.5),
        "baseline_nats_rtt_p99_us": rtt.value_at_quantile(0.99),
        "p99_over_bare_delivery_p99": (h.value_at_quantile(0.99) as f64 / bare.value_at_quantile(0.99).max(1) as f64 * 100.0).round() / 100.0,
    })
}

/// What a range site's nats-server stores per second by fsync policy and size, the same
/// bare publishers as the ceilings (per-message acks with the producer's window, and
/// fast-ingest batches), `TSPI_BENCH_PART=sites`: docs/operations.md "Multiple sites".
async fn site_durability(n: u64, day: &mut u16) {
    let mut rows = Vec::new();
    for (label, nodes, lines) in [
        (
            "1 node, sync_interval always",
            1usize,
            "sync_interval: always",
        ),
        ("1 node, sync_interval 1s", 1, "sync_interval: 1s"),
        ("1 node, default interval (2 min)", 1, ""),
        (
            "3 nodes R3, sync_interval always",
            3,
            "sync_interval: always",
        ),
    ] {
        let (_single, _cluster, urls) = if nodes == 1 {
            let s = NatsServer::start_with_jetstream_lines(lines).await;
            let urls = vec![s.url()];
            (Some(s), None, urls)
        } else {
            let c = NatsCluster::start_with_block_lines(nodes, lines, "");
            c.wait_jetstream(Duration::from_secs(60)).await;
            let urls = c.urls();
            (None, Some(c), urls)
        };
        drop(ProducerProcess::start(&urls, "auto"));
        // Short runs under fsync-per-write: a fifth of the messages is plenty.
        let count = if lines.contains("always") { n / 5 } else { n };
        *day += 1;
        let window = bare_publish_ceiling(&urls, count, *day).await;
        *day += 1;
        let fast = bare_fast_ceiling(&urls, count, *day).await;
        eprintln!("  {label}: per-message {window:.0} msg/s, fast batches {fast:.0} msg/s");
        rows.push(
            serde_json::json!({"config": label, "per_message_per_s": window, "fast_per_s": fast}),
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&rows).unwrap_or_default()
    );
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

        if std::env::var("TSPI_BENCH_PART").as_deref() == Ok("floor") {
            let server = NatsServer::start().await;
            let urls = vec![server.url()];
            drop(ProducerProcess::start(&urls, "auto"));
            for round in 0..3 {
                day += 1;
                let cpu = producer_rung(&urls, "fast", 40_000.0, 3.0, day).await;
                let mut floors = Vec::new();
                for (write, hold) in [(true, None), (false, None), (true, Some(Duration::from_millis(1)))] {
                    day += 1;
                    let url = urls[0].clone();
                    floors.push(
                        tokio::task::spawn_blocking(move || kernel_floor_cpu(&url, 40_000.0, 3.0, day, write, hold))
                            .await
                            .unwrap_or_else(|e| panic!("{e}")),
                    );
                }
                eprintln!(
                    "  floor round {round}: producer {:.2} µs/datagram; kernel floor (recvmmsg + decode + CBOR + HPUB write, no acks) {:.2}, without the write {:.2}, holding 1 ms between receives {:.2} µs/datagram; producer / floor {:.2}",
                    cpu.cpu_us_per_datagram,
                    floors[0],
                    floors[1],
                    floors[2],
                    cpu.cpu_us_per_datagram / floors[0].max(0.001)
                );
            }
            return;
        }
        if std::env::var("TSPI_BENCH_PART").as_deref() == Ok("catchup") {
            // 60 s of a 10,000 msg/s site.
            site_catch_up(if quick() { 50_000 } else { 600_000 }, &mut day).await;
            return;
        }
        if std::env::var("TSPI_BENCH_PART").as_deref() == Ok("sites") {
            site_durability(n_ceiling, &mut day).await;
            return;
        }
        let only = std::env::var("TSPI_BENCH_ONLY").unwrap_or_default();
        for (label, nodes) in [("R1", 1usize), ("R3", 3)] {
            if !only.is_empty() && only != label {
                continue;
            }
            eprintln!("== {label}: starting {nodes} node(s)");
            let (mut single, mut cluster, urls) = if nodes == 1 {
                let s = NatsServer::start().await;
                let urls = vec![s.url()];
                (Some(s), None, urls)
            } else {
                let c = NatsCluster::start(nodes).await;
                let urls = c.urls();
                (None, Some(c), urls)
            };
            // Create the stream with the producer's own definition.
            drop(ProducerProcess::start(&urls, "auto"));
            // Latency first, on a fresh stream: measured after the throughput ladder it
            // would include the server digesting a million messages.
            day += 1;
            let lat_seconds = if quick() { 2.0 } else { 10.0 };
            let h = latency(&urls, 5000.0, lat_seconds, day).await;
            let bare = bare_delivery_latency(&urls, nodes, 5000.0, lat_seconds).await;
            let rtt = nats_rtt(&urls, if quick() { 500 } else { 3000 }).await;
            eprintln!(
                "  {label} latency UDP-in → receiver line at 5000/s: p50 {} µs, p99 {} µs, max {} µs ({} samples); bare publish → delivery p50 {} µs p99 {} µs; NATS RTT p50 {} µs p99 {} µs",
                h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max(), h.len(),
                bare.value_at_quantile(0.5), bare.value_at_quantile(0.99),
                rtt.value_at_quantile(0.5), rtt.value_at_quantile(0.99)
            );
            report.insert(format!("latency_{label}_5000_per_s"), latency_figures(&h, &bare, &rtt));
            if std::env::var("TSPI_BENCH_PART").as_deref() == Ok("latency") {
                continue;
            }

            day += 1;
            let window_before = bare_publish_ceiling(&urls, n_ceiling, day).await;
            day += 1;
            let fast_before = bare_fast_ceiling(&urls, n_ceiling, day).await;
            eprintln!("  ceilings before: per-message window {window_before:.0}/s, fast batches {fast_before:.0}/s");
            let best_window = sustained_rate(&urls, "window", (window_before * 0.5).max(1000.0), seconds, &mut day).await;
            let best_fast = sustained_rate(&urls, "fast", (window_before * 0.5).max(1000.0), seconds, &mut day).await;
            day += 1;
            let window_after = bare_publish_ceiling(&urls, n_ceiling, day).await;
            day += 1;
            let fast_after = bare_fast_ceiling(&urls, n_ceiling, day).await;
            let window_mean = (window_before + window_after) / 2.0;
            let fast_mean = (fast_before + fast_after) / 2.0;
            day += 1;
            let cpu = producer_rung(&urls, "fast", 40_000.0, seconds.max(3.0), day).await;
            day += 1;
            let cpu_floor = {
                let urls = urls.clone();
                let s = seconds.max(3.0);
                tokio::task::spawn_blocking(move || publish_path_cpu(&urls, 40_000.0, s, day))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            };
            day += 1;
            let overload = if quick() { 50_000 } else { 400_000 };
            let (overload_kib, overload_published, overload_dropped) = overload_rss(
                &urls,
                || match (single.as_mut(), cluster.as_mut()) {
                    (Some(s), _) => s.pause().into_iter().collect(),
                    (_, Some(c)) => (0..c.len()).filter_map(|i| c.node(i).pause()).collect(),
                    _ => Vec::new(),
                },
                overload,
                day,
            )
            .await;
            let rate = |b: &Option<Rung>| b.as_ref().map_or(0.0, |b| b.rate);
            let rss = |b: &Option<Rung>| b.as_ref().map_or(0, |b| b.rss_kib);
            let (w, f) = (rate(&best_window), rate(&best_fast));
            eprintln!(
                "  {label}: producer zero-loss window {w:.0}/s, fast {f:.0}/s (fast/window {:.2}); ceilings window {window_before:.0}/{window_after:.0}, fast {fast_before:.0}/{fast_after:.0}; fast over the per-message ceiling {:.2}; CPU at 40,000/s {:.2} µs/datagram ({cpu:?}), the publish path alone {cpu_floor:.2} µs/message; peak RSS sustained {} MiB, at overload {} MiB ({overload} offered: {overload_published} published, {overload_dropped} dropped)",
                f / w.max(1.0),
                f / window_mean,
                cpu.cpu_us_per_datagram,
                rss(&best_fast) / 1024,
                overload_kib / 1024,
            );
            let round = |x: f64| (x * 1000.0).round() / 1000.0;
            report.insert(
                label.into(),
                serde_json::json!({
                    "ceiling_window_per_s": [window_before.round(), window_after.round()],
                    "ceiling_fast_per_s": [fast_before.round(), fast_after.round()],
                    "producer_zero_loss_window_per_s": w.round(),
                    "producer_zero_loss_fast_per_s": f.round(),
                    "fast_over_window": round(f / w.max(1.0)),
                    "fast_over_window_ceiling": round(f / window_mean),
                    "fast_over_fast_ceiling": round(f / fast_mean),
                    "cpu_us_per_datagram_at_40000": round(cpu.cpu_us_per_datagram),
                    "publish_path_cpu_us_per_message_at_40000": round(cpu_floor),
                    "cpu_rung": format!("{cpu:?}"),
                    "peak_rss_sustained_mib": [round(rss(&best_window) as f64 / 1024.0), round(rss(&best_fast) as f64 / 1024.0)],
                    "peak_rss_overload_mib": round(overload_kib as f64 / 1024.0),
                    "overload": {"offered": overload, "published": overload_published, "dropped_queue_full": overload_dropped},
                    "rungs": [best_window.map(|b| format!("{b:?}")), best_fast.map(|b| format!("{b:?}"))],
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
