//! The generator: synthetic fleets sent as TSPI datagrams over UDP and/or published
//! straight to JetStream (SPEC §5).
//!
//! Frame `n` is due at `start + n / rate` on the monotonic clock, so the rate holds over
//! long runs (no accumulated sleep error); a frame that is late is still sent and counted
//! as late. Optional fault injection (duplicates, garbage, and the sensor faults of
//! [`faults`]: dropouts, clock jumps, reordering) exercises ingest the way a noisy range
//! network does.

pub mod faults;
pub mod fleet;

use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tspi_bus::{run_publisher, OutMessage, PublishMetrics, PublisherOptions};
use tspi_core::{
    rfc3339, subject::write_msg_id, Datagram, StreamPrefix, TelemetryRecord, TICKS_PER_DAY,
};
use tspi_runtime::UdpTargets;

pub use fleet::{Fleet, FleetOptions, Kind, Style};

#[derive(Debug, Clone)]
pub struct GeneratorOptions {
    pub fleet: FleetOptions,
    /// Frames per second (each frame: one datagram per aircraft).
    pub rate_hz: f64,
    /// Stop after this long; run until shutdown when `None` (`--continuous`).
    pub duration: Option<Duration>,
    /// Day of year stamped in datagrams; today (UTC) when `None`.
    pub day: Option<u16>,
    /// Send every Nth valid datagram twice.
    pub duplicate_every: Option<u64>,
    /// Make every Nth datagram sent garbage (bad length, type, version, random bytes).
    pub garbage_every: Option<u64>,
    /// Sensor faults: dropouts, clock jumps, reordering.
    pub faults: faults::Faults,
    /// Print a progress line this often.
    pub metrics_interval: Option<Duration>,
    /// Scripted flights instead of the fleet's style (`--script`).
    pub script: Option<fleet::Script>,
    pub prefix: StreamPrefix,
}

/// Where datagrams go.
#[derive(Debug, Default)]
pub struct Sinks {
    pub udp: Option<(UdpSocket, UdpTargets)>,
    pub jetstream: Option<(async_nats::Client, PublisherOptions)>,
}

/// The JSON summary printed at the end (and with `--metrics-interval`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub frames: u64,
    /// Every datagram sent to one target: valid, duplicates and garbage.
    pub datagrams: u64,
    pub valid: u64,
    pub duplicates: u64,
    pub garbage: u64,
    /// Valid datagrams not sent because their sensor was in a `--dropout`.
    pub withheld: u64,
    /// Valid datagrams sent after their sensor's next one (`--reorder-every`).
    pub reordered: u64,
    pub late_frames: u64,
    pub send_errors: u64,
    pub elapsed_s: f64,
    pub target_rate_hz: f64,
    pub achieved_rate_hz: f64,
    pub datagrams_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_failed: Option<u64>,
    #[serde(rename = "final")]
    pub is_final: bool,
}

pub async fn run(
    options: GeneratorOptions,
    sinks: Sinks,
    mut progress: impl FnMut(&Summary),
    shutdown: CancellationToken,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        options.rate_hz.is_finite() && options.rate_hz > 0.0 && options.rate_hz <= 10_000.0,
        "--rate must be in (0, 10000] Hz"
    );
    let fleet = match &options.script {
        Some(script) => Fleet::scripted(&options.fleet, script),
        None => Fleet::new(&options.fleet),
    };
    let period = Duration::from_secs_f64(1.0 / options.rate_hz);
    let total_frames = options
        .duration
        .map(|d| (d.as_secs_f64() * options.rate_hz).round() as u64);
    // Millisecond start is plenty: ticks are 0.1 ms and only their spacing matters.
    let (today, ticks0) = rfc3339::day_and_ticks(tspi_runtime::now_epoch_ms() * 1000);
    let day0 = options.day.unwrap_or(today);

    let metrics = PublishMetrics::default();
    let abandon = CancellationToken::new();
    let (tx, publisher) = match sinks.jetstream {
        Some((client, popts)) => {
            let (tx, rx) = mpsc::channel(popts.max_in_flight.max(1) * 4);
            let handle = tokio::spawn(run_publisher(
                client,
                rx,
                Some::<OutMessage>,
                popts,
                metrics.clone(),
                abandon.clone(),
            ));
            (Some(tx), Some(handle))
        }
        None => (None, None),
    };
    let mut sender = Sender {
        udp: sinks.udp,
        jetstream: tx.is_some(),
        tx,
        prefix: options.prefix.clone(),
        summary: Summary {
            target_rate_hz: options.rate_hz,
            ..Summary::default()
        },
        rng: rand::rngs::StdRng::seed_from_u64(options.fleet.seed ^ 0x9e37_79b9),
        cbor: Vec::with_capacity(512),
        reorder_every: options.faults.reorder_every,
        held: None,
    };
    // The TSPI (day, ticks) `t` seconds after the start (negative before it).
    let stamp = |t: f64| {
        let ticks_total = i64::from(ticks0) + (t * 10_000.0).round() as i64;
        let days_on = ticks_total.div_euclid(i64::from(TICKS_PER_DAY));
        let day = ((i64::from(day0) - 1 + days_on).rem_euclid(366) + 1) as u16;
        let ticks = ticks_total.rem_euclid(i64::from(TICKS_PER_DAY)) as u32;
        (day, ticks)
    };

    let start = Instant::now();
    let mut next_progress = options.metrics_interval.map(|i| start + i);
    let mut n: u64 = 0;
    loop {
        if total_frames.is_some_and(|t| n >= t) {
            break;
        }
        let due = start + period.mul_f64(n as f64);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(due.into()) => {}
        }
        if Instant::now() > due + period {
            sender.summary.late_frames += 1;
        }
        let t = n as f64 / options.rate_hz;
        let (day, ticks) = stamp(t);
        for i in 0..fleet.len() {
            if let Some(mut d) = fleet.datagram(i, t, day, ticks) {
                if options.faults.silent(d.sensor_id, t) {
                    sender.summary.withheld += 1;
                    continue;
                }
                let offset = options.faults.clock_offset_s(d.sensor_id, t);
                if offset != 0.0 {
                    (d.day, d.time_ticks) = stamp(t + offset);
                }
                // Held back only behind the sensor's very next frame: not across its
                // dropout or clock jump, which would make it a different fault.
                let next = t + 1.0 / options.rate_hz;
                let hold = sender.reorder_due()
                    && !options.faults.silent(d.sensor_id, next)
                    && options.faults.clock_offset_s(d.sensor_id, next) == offset
                    && total_frames.is_none_or(|total| n + 1 < total);
                sender
                    .send_valid(&d, hold, options.duplicate_every, options.garbage_every)
                    .await;
            }
        }
        n += 1;
        sender.summary.frames = n;
        if let Some(at) = next_progress {
            if Instant::now() >= at {
                next_progress = options.metrics_interval.map(|i| at + i);
                progress(&sender.finish(start.elapsed(), &metrics, false));
            }
        }
    }
    // The last frame owns one period: a 10 s run ends at 10 s, not at 9.98 s.
    if !shutdown.is_cancelled() {
        let end = start + period.mul_f64(n as f64);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep_until(end.into()) => {}
        }
    }
    sender.send_held().await;
    let elapsed = start.elapsed();
    drop(sender.tx.take());
    if let Some(mut handle) = publisher {
        // The publisher ends once everything queued is acknowledged; past the deadline
        // what is left is counted as failed.
        if tokio::time::timeout(Duration::from_secs(30), &mut handle)
            .await
            .is_err()
        {
            abandon.cancel();
            let _ = handle.await;
        }
    }
    let summary = sender.finish(elapsed, &metrics, true);
    progress(&summary);
    Ok(summary)
}

struct Sender {
    udp: Option<(UdpSocket, UdpTargets)>,
    tx: Option<mpsc::Sender<OutMessage>>,
    jetstream: bool,
    prefix: StreamPrefix,
    summary: Summary,
    rng: rand::rngs::StdRng,
    cbor: Vec<u8>,
    reorder_every: Option<u64>,
    /// A datagram held back to go after the next one.
    held: Option<Datagram>,
}

impl Sender {
    /// Whether the next valid datagram would be one `--reorder-every` holds back.
    fn reorder_due(&self) -> bool {
        self.held.is_none()
            && self
                .reorder_every
                .is_some_and(|k| (self.summary.valid + 1) % k == 0)
    }

    /// Send `d`; with `hold`, keep it back until its sensor's next datagram is out.
    async fn send_valid(
        &mut self,
        d: &Datagram,
        hold: bool,
        duplicate_every: Option<u64>,
        garbage_every: Option<u64>,
    ) {
        if hold && self.held.is_none() {
            self.held = Some(*d);
            return;
        }
        let bytes = d.encode();
        self.maybe_garbage(garbage_every).await;
        self.send_udp(&bytes).await;
        self.publish(d).await;
        self.summary.valid += 1;
        if self.held.is_some_and(|h| h.sensor_id == d.sensor_id) {
            self.send_held().await;
        }
        if duplicate_every.is_some_and(|k| k > 0 && self.summary.valid % k == 0) {
            self.maybe_garbage(garbage_every).await;
            self.send_udp(&bytes).await;
            self.publish(d).await;
            self.summary.duplicates += 1;
        }
    }

    /// The datagram held back, now that its successor is out.
    async fn send_held(&mut self) {
        if let Some(d) = self.held.take() {
            self.send_udp(&d.encode()).await;
            self.publish(&d).await;
            self.summary.valid += 1;
            self.summary.reordered += 1;
        }
    }

    /// Sends a garbage datagram first when the next one sent would be the Nth.
    async fn maybe_garbage(&mut self, garbage_every: Option<u64>) {
        let Some(k) = garbage_every.filter(|k| *k > 1) else {
            return;
        };
        let sent = self.summary.valid + self.summary.duplicates + self.summary.garbage;
        if (sent + 1) % k != 0 {
            return;
        }
        let variant = self.summary.garbage % 5;
        let mut g = vec![0xC1, 4, 0, 1, 0, 1, 0, 0, 0, 0];
        g.resize(37, 0);
        let bytes = match variant {
            0 => g[..36].to_vec(),
            1 => {
                g.push(0);
                g
            }
            2 => {
                g[0] = 0xC3;
                g
            }
            3 => {
                g[1] = 3;
                g
            }
            _ => {
                // Random bytes, never exactly 37 long, so they cannot pass as valid.
                let mut len = self.rng.random_range(1..64usize);
                if len == 37 {
                    len = 38;
                }
                (0..len).map(|_| self.rng.random()).collect()
            }
        };
        self.summary.garbage += 1;
        self.send_udp(&bytes).await;
    }

    async fn send_udp(&mut self, bytes: &[u8]) {
        let Some((socket, targets)) = &mut self.udp else {
            return;
        };
        for target in targets.current() {
            self.summary.datagrams += 1;
            if socket.send_to(bytes, target).await.is_err() {
                self.summary.send_errors += 1;
            }
        }
    }

    async fn publish(&mut self, d: &Datagram) {
        let Some(tx) = &self.tx else { return };
        let epoch_ms = tspi_runtime::now_epoch_ms();
        self.cbor.clear();
        TelemetryRecord::from_datagram(d, epoch_ms).write_cbor(&mut self.cbor);
        let mut msg_id = String::with_capacity(24);
        write_msg_id(&mut msg_id, d.sensor_id, d.day, d.time_ticks);
        let msg = OutMessage {
            subject: self.prefix.subject(d.kind(), d.sensor_id).into(),
            msg_id,
            payload: Bytes::copy_from_slice(&self.cbor),
            received: Instant::now(),
        };
        // Backpressure, not loss: a generator waits for the bus.
        if tx.send(msg).await.is_err() {
            self.summary.send_errors += 1;
        }
    }

    fn finish(&self, elapsed: Duration, metrics: &PublishMetrics, is_final: bool) -> Summary {
        let elapsed = elapsed.as_secs_f64();
        let mut s = self.summary.clone();
        s.elapsed_s = elapsed;
        s.achieved_rate_hz = if elapsed > 0.0 {
            s.frames as f64 / elapsed
        } else {
            0.0
        };
        s.datagrams_per_s = if elapsed > 0.0 {
            s.datagrams as f64 / elapsed
        } else {
            0.0
        };
        if self.jetstream {
            s.published = Some(metrics.published.get());
            s.publish_failed = Some(metrics.failed.get());
        }
        s.is_final = is_final;
        s
    }
}
