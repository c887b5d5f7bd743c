//! The producer: UDP datagrams in, decoded TSPI records out on JetStream (SPEC §5).
//!
//! One task reads the socket, decodes, filters and stamps the receive time; it never
//! waits on NATS. A bounded queue of decoded datagrams (48 bytes each, not encoded
//! records: a full default queue is 12 MiB) sits between it and the publisher
//! ([`tspi_bus::run_publisher`]), which encodes each one as it takes it, keeps a bounded
//! window of unacknowledged publishes and retries with the same `Nats-Msg-Id`. What
//! cannot be queued is counted, never silently lost.

pub mod metrics;
pub mod quality;
pub mod udp;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use quality::{QualityTracker, SensorStats};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tspi_bus::{run_publisher, OutMessage, PublisherOptions};
use tspi_core::{decode, subject::write_msg_id, Datagram, StreamPrefix, TelemetryRecord};

pub use metrics::ProducerMetrics;

/// Validated producer settings (built from the command line in `main.rs`).
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    pub prefix: StreamPrefix,
    /// Only these sensors are published; all when `None`.
    pub sensor_filter: Option<HashSet<u16>>,
    /// Decoded datagrams that may wait for a publish slot.
    pub queue_capacity: usize,
    pub publisher: PublisherOptions,
    /// How long shutdown waits for outstanding acks.
    pub drain_timeout: Duration,
    /// Period of the counters line in the log (0 = off).
    pub stats_interval: Duration,
    /// Sensors with quality series of their own; the rest are summed as "other".
    pub max_sensor_series: usize,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            prefix: StreamPrefix::default(),
            sensor_filter: None,
            queue_capacity: 65_536,
            publisher: PublisherOptions::default(),
            drain_timeout: Duration::from_secs(10),
            stats_interval: Duration::from_secs(10),
            max_sensor_series: 64,
        }
    }
}

/// Run until `shutdown`, then drain: stop reading, publish what is queued, wait for acks
/// up to `drain_timeout`.
pub async fn run(
    options: ProducerOptions,
    socket: UdpSocket,
    client: async_nats::Client,
    metrics: ProducerMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<Received>(options.queue_capacity.max(1));
    let abandon = CancellationToken::new();
    let mut encoder = Encoder::new(&options.prefix);
    let mut publisher = tokio::spawn(run_publisher(
        client,
        rx,
        move |r: Received| Some(encoder.encode(&r)),
        options.publisher.clone(),
        metrics.publish.clone(),
        abandon.clone(),
    ));
    let socket = Arc::new(socket);
    let quality = Arc::new(Mutex::new(QualityTracker::new(options.max_sensor_series)));
    let stats = tokio::spawn(report_stats(
        socket.clone(),
        tx.downgrade(),
        quality.clone(),
        metrics.clone(),
        options.stats_interval,
        shutdown.clone(),
    ));

    read_loop(&options, &socket, &tx, &quality, &metrics, &shutdown).await;
    drop(tx);

    let drained = tokio::time::timeout(options.drain_timeout, &mut publisher).await;
    if drained.is_err() {
        abandon.cancel();
        let _ = publisher.await;
    }
    let _ = stats.await;
    update_kernel_drops(&socket, &metrics, &mut None);
    log_counters(&metrics, "producer stopped");
    Ok(())
}

async fn read_loop(
    options: &ProducerOptions,
    socket: &UdpSocket,
    tx: &mpsc::Sender<Received>,
    quality: &Mutex<QualityTracker>,
    metrics: &ProducerMetrics,
    shutdown: &CancellationToken,
) {
    let mut batch = udp::BatchReceiver::default();
    let mut ingest = Ingest {
        options,
        tx,
        quality,
        metrics,
        log: RateLimitedLog::default(),
    };
    loop {
        let ready = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = socket.readable() => r,
        };
        if let Err(e) = ready {
            tracing::warn!(error = %e, "UDP socket not readable");
            continue;
        }
        // Up to 16 system calls of 64 datagrams each, then back to the scheduler (and the
        // shutdown check); an empty socket ends the run and clears its readiness.
        let mut drained = false;
        for _ in 0..16 {
            match socket.try_io(tokio::io::Interest::READABLE, || batch.recv(socket)) {
                Ok(n) => {
                    if !ingest.batch(&batch, n) {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) => {
                    // ICMP errors and the like surface here; keep reading.
                    tracing::warn!(error = %e, "UDP receive error");
                    break;
                }
            }
        }
        if !drained {
            // Still readable: let the publisher and the NATS connection run first (on
            // the default single thread they wait for this task to yield).
            tokio::task::yield_now().await;
        }
    }
    // Datagrams already in the kernel queue when the signal came are part of the drain.
    while let Ok(n) = batch.recv(socket) {
        if n == 0 || !ingest.batch(&batch, n) {
            return;
        }
    }
}

/// A decoded datagram waiting for the publisher, with its receive time: the queue's unit.
#[derive(Debug, Clone, Copy)]
struct Received {
    datagram: Datagram,
    /// Wall-clock receive time, µs since the Unix epoch: the record's `recv_epoch_ms`,
    /// and (against the clock at ack time) the ack latency. One clock for both keeps the
    /// entry at 48 bytes.
    epoch_us: i64,
}

/// Per-datagram work of the read loop: decode, filter, stamp, queue.
struct Ingest<'a> {
    options: &'a ProducerOptions,
    tx: &'a mpsc::Sender<Received>,
    quality: &'a Mutex<QualityTracker>,
    metrics: &'a ProducerMetrics,
    log: RateLimitedLog,
}

impl Ingest<'_> {
    /// The first `n` datagrams of `batch`; false when the publisher is gone.
    fn batch(&mut self, batch: &udp::BatchReceiver, n: usize) -> bool {
        (0..n).all(|i| {
            batch
                .get(i)
                .is_none_or(|(bytes, len, peer)| self.handle(bytes, len, peer))
        })
    }

    /// One datagram: `bytes` as kept (a long one is cut), `len` its true length.
    /// Returns false when the publisher is gone.
    fn handle(&mut self, bytes: &[u8], len: usize, peer: Option<std::net::SocketAddr>) -> bool {
        let metrics = self.metrics;
        metrics.received.inc();
        let decoded = if len == bytes.len() {
            decode(bytes)
        } else {
            Err(tspi_core::DatagramError::BadLength { len })
        };
        let datagram = match decoded {
            Ok(d) => d,
            Err(error) => {
                metrics.invalid[error.reason_index()].inc();
                self.log.log(|suppressed| {
                    let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
                    tracing::warn!(%peer, reason = error.reason(), %error, suppressed, "invalid datagram");
                });
                return true;
            }
        };
        if let Some(filter) = &self.options.sensor_filter {
            if !filter.contains(&datagram.sensor_id) {
                metrics.filtered.inc();
                return true;
            }
        }
        let epoch_us = now_epoch_us();
        lock(self.quality).observe(
            datagram.sensor_id,
            datagram.day,
            datagram.time_ticks,
            epoch_us,
        );
        let received = Received { datagram, epoch_us };
        match self.tx.try_send(received) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics.queue_dropped.inc();
                self.log.log(|suppressed| {
                    tracing::error!(
                        suppressed,
                        "publish queue full: NATS is not keeping up; datagram dropped (counted)"
                    );
                });
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

fn now_epoch_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| i64::try_from(t.as_micros()).unwrap_or(i64::MAX))
}

/// Turns a queued datagram into its message when the publisher takes it, with no
/// allocation of its own for most datagrams: payloads are cut from a shared 32 KiB
/// buffer, subjects come from a cache.
struct Encoder {
    prefix: StreamPrefix,
    cbor: Vec<u8>,
    /// Payloads of recent messages, each a frozen slice of it (one allocation per ~100; below 64 KiB, whose free would make glibc consolidate its heap).
    payloads: BytesMut,
    /// Each sensor's subject, built once (a clone shares its bytes).
    subjects:
        HashMap<(tspi_core::MessageKind, u16), async_nats::Subject, foldhash::fast::RandomState>,
}

/// Subjects cached at most; made-up sensor ids beyond it are built each time.
const MAX_CACHED_SUBJECTS: usize = 4096;
/// Size of the shared payload buffer.
const PAYLOAD_CHUNK: usize = 32 * 1024;

impl Encoder {
    fn new(prefix: &StreamPrefix) -> Self {
        Encoder {
            prefix: prefix.clone(),
            cbor: Vec::with_capacity(512),
            payloads: BytesMut::with_capacity(PAYLOAD_CHUNK),
            subjects: HashMap::default(),
        }
    }

    fn subject(&mut self, kind: tspi_core::MessageKind, sensor_id: u16) -> async_nats::Subject {
        if let Some(s) = self.subjects.get(&(kind, sensor_id)) {
            return s.clone();
        }
        let mut subject = String::with_capacity(self.prefix.as_str().len() + 18);
        self.prefix.write_subject(&mut subject, kind, sensor_id);
        let subject = async_nats::Subject::from(subject);
        if self.subjects.len() < MAX_CACHED_SUBJECTS {
            self.subjects.insert((kind, sensor_id), subject.clone());
        }
        subject
    }

    fn encode(&mut self, r: &Received) -> OutMessage {
        let d = &r.datagram;
        // The time it waited in the queue, carried as an Instant for the ack latency.
        let queued_for = Duration::from_micros(
            u64::try_from(now_epoch_us().saturating_sub(r.epoch_us)).unwrap_or(0),
        );
        let now = Instant::now();
        let received = now.checked_sub(queued_for).unwrap_or(now);
        self.cbor.clear();
        TelemetryRecord::write_datagram_cbor(d, r.epoch_us.div_euclid(1000), &mut self.cbor);
        if self.payloads.capacity() < self.cbor.len() {
            // A new chunk; the old one is freed when its last message is confirmed.
            self.payloads = BytesMut::with_capacity(PAYLOAD_CHUNK.max(self.cbor.len()));
        }
        self.payloads.extend_from_slice(&self.cbor);
        let payload = self.payloads.split().freeze();
        let subject = self.subject(d.kind(), d.sensor_id);
        let mut msg_id = String::with_capacity(24);
        write_msg_id(&mut msg_id, d.sensor_id, d.day, d.time_ticks);
        OutMessage {
            subject,
            msg_id,
            payload,
            received,
        }
    }
}

/// At most one line a second for a flood of the same event, with the count suppressed.
#[derive(Debug, Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn log(&mut self, emit: impl FnOnce(u64)) {
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            emit(self.suppressed);
            self.last = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

/// The tracker is shared by the read loop and the reporter; a panic elsewhere while it
/// was held leaves plain counters behind, still good to use.
fn lock(quality: &Mutex<QualityTracker>) -> std::sync::MutexGuard<'_, QualityTracker> {
    quality
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the reporter last exported per series, to move the counters forward by the
/// difference and to compute each sensor's rate.
#[derive(Default)]
struct QualityExport {
    last: HashMap<String, SensorStats>,
    at: Option<Instant>,
    /// Totals at the last log line, for the interval's figures.
    logged: HashMap<String, SensorStats>,
    /// Datagrams of sensors beyond the tracker's limit.
    untracked: u64,
}

impl QualityExport {
    fn export(&mut self, quality: &Mutex<QualityTracker>, metrics: &ProducerMetrics) {
        let (named, other, untracked) = {
            let mut q = lock(quality);
            q.settle(now_epoch_us());
            let (named, other) = q.snapshot();
            (named, other, q.untracked)
        };
        self.untracked = untracked;
        let elapsed = self.at.map_or(0.0, |t| t.elapsed().as_secs_f64());
        self.at = Some(Instant::now());
        let series = named
            .into_iter()
            .map(|(id, s)| (id.to_string(), s, true))
            .chain(other.map(|s| ("other".to_owned(), s, false)));
        for (label, stats, figures) in series {
            let before = self.last.remove(&label).unwrap_or_default();
            let rate = if elapsed > 0.0 {
                stats.datagrams.saturating_sub(before.datagrams) as f64 / elapsed
            } else {
                0.0
            };
            metrics
                .sensors
                .export(&label, &stats, &before, rate, figures);
            self.last.insert(label, stats);
        }
    }

    /// One summary line, then one per sensor (at most 10) with quality events since the
    /// last one.
    fn log(&mut self) {
        let mut troubled = Vec::new();
        let mut total = SensorStats::default();
        for (label, now) in &self.last {
            let then = self.logged.get(label).cloned().unwrap_or_default();
            let d = SensorStats {
                gaps: now.gaps.saturating_sub(then.gaps),
                missed: now.missed.saturating_sub(then.missed),
                clock_jumps: now.clock_jumps.saturating_sub(then.clock_jumps),
                out_of_order: now.out_of_order.saturating_sub(then.out_of_order),
                late: now.late.saturating_sub(then.late),
                skew_p50_s: now.skew_p50_s,
                ..SensorStats::default()
            };
            total.gaps += d.gaps;
            total.missed += d.missed;
            total.clock_jumps += d.clock_jumps;
            total.out_of_order += d.out_of_order;
            total.late += d.late;
            if d.gaps + d.clock_jumps + d.out_of_order + d.late > 0 {
                troubled.push((label.clone(), d));
            }
        }
        tracing::info!(
            sensors = self.last.len(),
            gaps = total.gaps,
            missed_frames = total.missed,
            clock_jumps = total.clock_jumps,
            out_of_order = total.out_of_order,
            late = total.late,
            untracked_datagrams = self.untracked,
            "quality"
        );
        troubled.sort_by(|a, b| a.0.cmp(&b.0));
        let more = troubled.len().saturating_sub(10);
        for (sensor, d) in troubled.into_iter().take(10) {
            tracing::warn!(
                %sensor,
                gaps = d.gaps,
                missed_frames = d.missed,
                clock_jumps = d.clock_jumps,
                out_of_order = d.out_of_order,
                late = d.late,
                skew_p50_s = d.skew_p50_s,
                "sensor quality"
            );
        }
        if more > 0 {
            tracing::warn!(
                more,
                "more sensors with quality events (see tspi_producer_sensor_*)"
            );
        }
        self.logged = self.last.clone();
    }
}

async fn report_stats(
    socket: Arc<UdpSocket>,
    queue: mpsc::WeakSender<Received>,
    quality: Arc<Mutex<QualityTracker>>,
    metrics: ProducerMetrics,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last_drops = None;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut since_log = Instant::now();
    let mut export = QualityExport::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // The publisher sets the depth as it takes from the queue; while it is stuck (NATS
        // gone) only this shows the queue filling up.
        if let Some(tx) = queue.upgrade() {
            let depth = tx.max_capacity() - tx.capacity();
            metrics
                .publish
                .queued
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        export.export(&quality, &metrics);
        update_kernel_drops(&socket, &metrics, &mut last_drops);
        if !interval.is_zero() && since_log.elapsed() >= interval {
            since_log = Instant::now();
            log_counters(&metrics, "producer counters");
            export.log();
        }
    }
}

fn update_kernel_drops(socket: &UdpSocket, metrics: &ProducerMetrics, last: &mut Option<u64>) {
    if let Some(now) = udp::kernel_drops(socket) {
        let before = last.unwrap_or(0);
        if now > before {
            metrics.kernel_dropped.inc_by(now - before);
            tracing::warn!(dropped = now - before, "kernel dropped UDP datagrams: receive buffer overflowed (raise --udp-recv-buffer / net.core.rmem_max)");
        }
        *last = Some(now.max(before));
    }
}

fn log_counters(m: &ProducerMetrics, what: &str) {
    tracing::info!(
        received = m.received.get(),
        published = m.publish.published.get(),
        duplicates = m.publish.duplicates.get(),
        invalid = m.invalid_total(),
        filtered = m.filtered.get(),
        dropped_queue = m.queue_dropped.get(),
        dropped_kernel = m.kernel_dropped.get(),
        retries = m.publish.retries.get(),
        failed = m.publish.failed.get(),
        "{what}"
    );
}

/// Site mode's figures (`tspi_producer_site_*`).
#[derive(Debug, Clone, Default)]
pub struct SiteMetrics {
    /// Messages of the site stream the centre has not confirmed storing; -1 until known.
    pub backlog: Gauge,
    /// 1 once the centre's stream sources this site.
    pub sourced: Gauge,
    /// 1 while the centre's source listens and takes nothing of a backlog.
    pub sourcing_stalled: Gauge,
}

impl SiteMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = SiteMetrics::default();
        m.backlog.set(-1);
        registry.register(
            "site_backlog",
            "Messages of the site stream the centre has not confirmed storing yet (-1 until known)",
            m.backlog.clone(),
        );
        registry.register(
            "site_sourced",
            "1 once the centre's stream sources this site's stream",
            m.sourced.clone(),
        );
        registry.register(
            "site_sourcing_stalled",
            "1 while the centre's source listens (the link is up) and has taken none of the backlog for --site-stall-after",
            m.sourcing_stalled.clone(),
        );
        m
    }
}

/// How often site mode reads its backlog from the site's server.
const SITE_BACKLOG_EVERY: Duration = Duration::from_secs(1);

/// What site mode provisions and reports on.
#[derive(Debug, Clone)]
pub struct SiteOptions {
    /// The site's name (`--site`).
    pub site: String,
    /// The centre's JetStream domain.
    pub centre_domain: String,
    /// The centre's stream that sources the site (`--stream`).
    pub central: String,
    /// The most the sourcing consumer delivers toward the centre, bits/s (0: no limit).
    pub sourcing_limit_bps: u64,
    /// How long a listening source may take nothing of a backlog before it is called
    /// stalled (`--site-stall-after`).
    pub stall_after: Duration,
}

/// Site mode, beside ingest (which never waits for it): makes the site stream's sourcing
/// consumer, then, until the centre's stream sources this site, keeps asking (the WAN may
/// be down at start, or the centre not up yet); then reports the site's backlog.
pub async fn provision_site(
    client: async_nats::Client,
    options: SiteOptions,
    metrics: SiteMetrics,
    shutdown: CancellationToken,
) {
    let SiteOptions {
        site,
        centre_domain,
        central,
        sourcing_limit_bps,
        stall_after,
    } = options;
    let retry = |what: &'static str, last_warning: &mut Option<Instant>, e: &tspi_bus::BusError| {
        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last_warning = Some(Instant::now());
            tracing::warn!(site = %site, centre = %centre_domain, error = %e, "{what}; retrying every 5 s");
        }
    };
    let mut last_warning = None;
    loop {
        match tspi_bus::sites::ensure_site_consumer(&client, &site, &central, sourcing_limit_bps).await {
            Ok(change) => {
                tracing::info!(site = %site, consumer = %tspi_bus::sites::site_consumer_name(&central), ?change, "the site stream's sourcing consumer is in place");
                break;
            }
            Err(e) => retry("cannot make the site stream's sourcing consumer (site server down, or no permission)", &mut last_warning, &e),
        }
        if pause(&shutdown, Duration::from_secs(5)).await {
            return;
        }
    }
    let mut last_warning = None;
    loop {
        match tspi_bus::sites::ensure_site_source(&client, &centre_domain, &central, &site).await {
            Ok(change) => {
                tracing::info!(site = %site, centre = %centre_domain, stream = %central, ?change, "the centre sources this site's stream");
                metrics.sourced.set(1);
                break;
            }
            Err(e) => retry("cannot make the centre source this site yet (WAN down, centre not up, or no permission)", &mut last_warning, &e),
        }
        if pause(&shutdown, Duration::from_secs(5)).await {
            return;
        }
    }
    let mut ticker = tokio::time::interval(SITE_BACKLOG_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut centre_stored = None;
    let mut centre_listening = true;
    let mut watch = tspi_bus::sites::SourcingWatch::new(stall_after);
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // The centre's answer while its source listens (the WAN is up, as of the last
        // reading); the last one is kept while it does not (a lower bound: the centre
        // never un-stores). Across a cut link there is nothing to learn, and the sites
        // test's site producer queued more while cut when it asked every second anyway
        // (2,250 and 5,512 against 364 and 977 — few, noisy runs). Asked before the site
        // is read, so the centre's answer is never newer than the site's last sequence.
        let mut centre_answered = false;
        if centre_listening {
            if let Some(seq) =
                tspi_bus::sites::centre_sourced_sequence(&client, &centre_domain, &central, &site)
                    .await
            {
                centre_stored = Some(seq);
                centre_answered = true;
            }
        }
        let Some(progress) = tspi_bus::sites::site_progress(&client, &site, &central).await else {
            continue;
        };
        centre_listening = progress.centre_listening;
        let backlog = tspi_bus::sites::site_backlog(progress, centre_stored);
        metrics
            .backlog
            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
        let reading = tspi_bus::sites::SourcingReading {
            last: progress.last,
            confirmed: progress.last - backlog,
            delivered: progress.delivered,
            centre_answered,
            centre_listening: progress.centre_listening,
        };
        match watch.observe(started.elapsed(), reading) {
            Some(tspi_bus::sites::SourcingVerdict::Stalled {
                backlog,
                confirmed,
                for_,
            }) => {
                metrics.sourcing_stalled.set(1);
                tracing::warn!(
                    site = %site, centre = %centre_domain, stream = %central, backlog, confirmed,
                    delivered = progress.delivered, still_for = ?for_,
                    "the centre's source listens but has taken none of this site's backlog: is the centre's stream full or refusing messages? (the site keeps storing)"
                );
            }
            Some(tspi_bus::sites::SourcingVerdict::Resumed) => {
                metrics.sourcing_stalled.set(0);
                tracing::info!(site = %site, backlog, "the centre's sourcing of this site moves again (or has nothing to take)");
            }
            None => {}
        }
    }
}

/// Sleeps `d`; true when shutdown came first.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_datagram_takes_48_bytes() {
        assert!(std::mem::size_of::<Received>() <= 48);
    }
}
