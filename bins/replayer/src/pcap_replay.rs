//! `replayer pcap FILE`: the TSPI datagrams of a capture, to UDP targets and/or JetStream,
//! at the captured pace (divided by `--speed`) or as fast as possible; `--dry-run` only
//! analyses (counts, skips by reason, gaps, duplicates) and prints the summary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tspi_bus::OutMessage;
use tspi_core::{DatagramError, StreamPrefix, TelemetryRecord};

use crate::capture::{udp_payload, CaptureReader, Format, Skip};
use crate::pacing::Pacer;

#[derive(Debug, Clone)]
pub struct PcapOptions {
    pub file: PathBuf,
    /// Only UDP datagrams to this destination port.
    pub port: Option<u16>,
    /// `None`: as fast as possible.
    pub speed: Option<f64>,
    pub udp_targets: Vec<SocketAddr>,
    /// Publish decoded records (valid datagrams only) to JetStream.
    pub jetstream: bool,
    /// Stamp `recv_epoch_ms` with the replay time instead of the capture time.
    pub restamp: bool,
    pub prefix: StreamPrefix,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub sensor_id: u16,
    pub day: u16,
    /// TSPI time of the frame before the gap.
    pub after_time_s: f64,
    pub gap_s: f64,
    /// The sensor's usual interval (median).
    pub expected_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GapReport {
    pub count: u64,
    pub largest_s: f64,
    /// The largest gaps, at most 20.
    pub largest: Vec<Gap>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Pacing {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PcapSummary {
    pub file: String,
    pub format: Format,
    pub frames: u64,
    /// 37-byte UDP payloads (after the port filter), valid or not.
    pub tspi_datagrams: u64,
    pub valid: u64,
    pub invalid: BTreeMap<&'static str, u64>,
    pub skipped: BTreeMap<&'static str, u64>,
    pub sensors: usize,
    /// Datagrams whose (sensor, day, time) was seen before in the capture.
    pub duplicates: u64,
    pub gaps: GapReport,
    pub first_capture_time: Option<String>,
    pub last_capture_time: Option<String>,
    pub capture_duration_s: f64,
    pub dry_run: bool,
    pub sent_udp: u64,
    pub send_errors: u64,
    pub published: u64,
    pub publish_failed: u64,
    pub elapsed_s: f64,
    pub pacing_error: Pacing,
}

#[derive(Debug, Default)]
struct Analysis {
    frames: u64,
    tspi: u64,
    valid: u64,
    invalid: BTreeMap<&'static str, u64>,
    skipped: BTreeMap<&'static str, u64>,
    seen: HashSet<(u16, u16, u32)>,
    duplicates: u64,
    /// Per sensor: (day, time of previous frame, intervals with their start).
    tracks: HashMap<u16, (u64, Vec<(u64, f64)>)>,
    first_ns: Option<i128>,
    last_ns: Option<i128>,
}

impl Analysis {
    fn skip(&mut self, s: Skip) {
        *self.skipped.entry(s.as_str()).or_default() += 1;
    }

    fn invalid(&mut self, e: &DatagramError) {
        *self.invalid.entry(e.reason()).or_default() += 1;
    }

    fn frame(&mut self, d: &tspi_core::Datagram) {
        self.valid += 1;
        if !self.seen.insert((d.sensor_id, d.day, d.time_ticks)) {
            self.duplicates += 1;
            return;
        }
        // Absolute TSPI time in ticks (day boundaries included).
        let t = u64::from(d.day) * u64::from(tspi_core::TICKS_PER_DAY) + u64::from(d.time_ticks);
        let (last, intervals) = self.tracks.entry(d.sensor_id).or_insert((t, Vec::new()));
        if t > *last {
            intervals.push((
                *last,
                (t - *last) as f64 / f64::from(tspi_core::TICKS_PER_SECOND),
            ));
            *last = t;
        }
    }

    fn gaps(&self) -> GapReport {
        let mut gaps = Vec::new();
        for (sensor, (_, intervals)) in &self.tracks {
            if intervals.len() < 3 {
                continue;
            }
            let mut sorted: Vec<f64> = intervals.iter().map(|i| i.1).collect();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            for &(start, gap) in intervals {
                if gap > 2.0 * median {
                    let per_day = u64::from(tspi_core::TICKS_PER_DAY);
                    gaps.push(Gap {
                        sensor_id: *sensor,
                        day: (start / per_day) as u16,
                        after_time_s: (start % per_day) as f64
                            / f64::from(tspi_core::TICKS_PER_SECOND),
                        gap_s: gap,
                        expected_s: median,
                    });
                }
            }
        }
        gaps.sort_by(|a, b| b.gap_s.total_cmp(&a.gap_s));
        GapReport {
            count: gaps.len() as u64,
            largest_s: gaps.first().map_or(0.0, |g| g.gap_s),
            largest: gaps.into_iter().take(20).collect(),
        }
    }
}

fn iso(ns: Option<i128>) -> Option<String> {
    ns.map(|n| tspi_core::rfc3339::format_utc_millis((n / 1_000_000) as i64))
}

/// Read the capture, analyse it and (unless `dry_run`) send its datagrams. Blocking: run
/// it on a blocking thread. `publish` carries records to the JetStream publisher.
pub fn replay(
    options: &PcapOptions,
    dry_run: bool,
    publish: Option<mpsc::Sender<OutMessage>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<PcapSummary> {
    let file = File::open(&options.file)
        .with_context(|| format!("cannot open {}", options.file.display()))?;
    let mut reader = CaptureReader::new(BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("{}", options.file.display()))?;
    let socket = if options.udp_targets.is_empty() || dry_run {
        None
    } else {
        let bind: SocketAddr = if options.udp_targets.iter().all(SocketAddr::is_ipv4) {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .context("bind address")?;
        Some(UdpSocket::bind(bind).context("binding the sending UDP socket")?)
    };
    let mut a = Analysis::default();
    let mut pacer = options.speed.map(Pacer::new);
    let mut errors =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let (mut sent, mut send_errors, mut publish_closed) = (0u64, 0u64, 0u64);
    let mut cbor = Vec::with_capacity(256);
    let started = Instant::now();
    while let Some(frame) = reader
        .next_frame()
        .with_context(|| format!("{}", options.file.display()))?
    {
        if shutdown.is_cancelled() {
            break;
        }
        a.frames += 1;
        let udp = match udp_payload(frame.link_type, &frame.data) {
            Ok(u) => u,
            Err(s) => {
                a.skip(s);
                continue;
            }
        };
        if options.port.is_some_and(|p| p != udp.dst.1) {
            a.skip(Skip::PortFiltered);
            continue;
        }
        if udp.payload.len() != tspi_core::DATAGRAM_LEN {
            a.skip(Skip::NotTspiLength);
            continue;
        }
        a.tspi += 1;
        a.first_ns.get_or_insert(frame.ts_ns);
        a.last_ns = Some(frame.ts_ns);
        let decoded = tspi_core::decode(udp.payload);
        match &decoded {
            Ok(d) => a.frame(d),
            Err(e) => a.invalid(e),
        }
        if dry_run {
            continue;
        }
        if let Some(p) = pacer.as_mut() {
            let due = p.due((frame.ts_ns / 1000) as i64, Instant::now());
            // Sleep in slices so a shutdown is noticed within 50 ms.
            loop {
                let now = Instant::now();
                if now >= due || shutdown.is_cancelled() {
                    break;
                }
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
            }
            let _ = errors.record(Instant::now().saturating_duration_since(due).as_micros() as u64);
        }
        if let Some(s) = &socket {
            for target in &options.udp_targets {
                match s.send_to(udp.payload, target) {
                    Ok(_) => sent += 1,
                    Err(e) => {
                        send_errors += 1;
                        if send_errors == 1 {
                            tracing::warn!(error = %e, %target, "UDP send failed");
                        }
                    }
                }
            }
        }
        if let (Some(tx), Ok(d)) = (&publish, &decoded) {
            let recv_ms = if options.restamp {
                tspi_runtime::now_epoch_ms()
            } else {
                (frame.ts_ns / 1_000_000) as i64
            };
            let record = TelemetryRecord::from_datagram(d, recv_ms);
            cbor.clear();
            record.write_cbor(&mut cbor);
            let mut msg_id = String::with_capacity(24);
            tspi_core::subject::write_msg_id(&mut msg_id, d.sensor_id, d.day, d.time_ticks);
            let out = OutMessage {
                subject: options.prefix.subject(d.kind(), d.sensor_id).into(),
                msg_id,
                payload: Bytes::copy_from_slice(&cbor),
                received: Instant::now(),
            };
            if tx.blocking_send(out).is_err() {
                publish_closed += 1;
            }
        }
    }
    let duration = match (a.first_ns, a.last_ns) {
        (Some(f), Some(l)) => (l - f) as f64 / 1e9,
        _ => 0.0,
    };
    Ok(PcapSummary {
        file: options.file.display().to_string(),
        format: reader.format,
        frames: a.frames,
        tspi_datagrams: a.tspi,
        valid: a.valid,
        invalid: a.invalid.clone(),
        skipped: a.skipped.clone(),
        sensors: a.tracks.len(),
        duplicates: a.duplicates,
        gaps: a.gaps(),
        first_capture_time: iso(a.first_ns),
        last_capture_time: iso(a.last_ns),
        capture_duration_s: duration,
        dry_run,
        sent_udp: sent,
        send_errors,
        published: 0,
        publish_failed: publish_closed,
        elapsed_s: started.elapsed().as_secs_f64(),
        pacing_error: if errors.is_empty() {
            Pacing::default()
        } else {
            Pacing {
                p50_us: errors.value_at_quantile(0.5),
                p99_us: errors.value_at_quantile(0.99),
                max_us: errors.max(),
            }
        },
    })
}
