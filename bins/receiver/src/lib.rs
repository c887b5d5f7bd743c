//! The receiver: a JetStream pull consumer that prints telemetry as JSON lines (SPEC §5).
//!
//! Messages are fetched in batches no larger than what is still wanted (`--count`), so
//! nothing is pulled that will not be printed. Output is flushed whenever no further
//! message is immediately available, then every written message is acknowledged
//! (explicit acks: an "ack all" would also cover messages a crashed earlier run had
//! pulled but never printed). An ack always follows the write.
//! A reader that closes the pipe ends the run cleanly; unwritten messages stay unacked
//! and are redelivered to the next run.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures::{FutureExt, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use thiserror::Error;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tspi_core::TelemetryRecord;

/// Where a new consumer starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Deliver {
    New,
    All,
    Since(time::OffsetDateTime),
}

impl Deliver {
    /// Parse `new`, `all`, `since <RFC 3339>` or `since=<RFC 3339>`.
    pub fn parse(words: &[String]) -> Result<Deliver, String> {
        let joined = words.join(" ");
        let (policy, rest) = match joined.split_once(['=', ' ']) {
            Some((p, r)) => (p, Some(r.trim())),
            None => (joined.as_str(), None),
        };
        match (policy, rest) {
            ("new", None) => Ok(Deliver::New),
            ("all", None) => Ok(Deliver::All),
            ("since", Some(t)) if !t.is_empty() => {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map(Deliver::Since)
                    .map_err(|e| format!("--deliver since: {t:?} is not an RFC 3339 time ({e})"))
            }
            ("since", _) => Err(
                "--deliver since needs a time, e.g. --deliver since 2025-09-28T11:00:00Z".into(),
            ),
            _ => Err(format!(
                "--deliver {joined:?}: expected new, all or since <RFC 3339>"
            )),
        }
    }

    fn policy(&self) -> DeliverPolicy {
        match self {
            Deliver::New => DeliverPolicy::New,
            Deliver::All => DeliverPolicy::All,
            Deliver::Since(t) => DeliverPolicy::ByStartTime { start_time: *t },
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    pub stream: String,
    /// Durable consumer name; ephemeral when `None`.
    pub durable: Option<String>,
    /// Subject filters (default: every telemetry subject under the prefix).
    pub subjects: Vec<String>,
    pub deliver: Deliver,
    /// Print JSON lines on stdout.
    pub json: bool,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Largest pull request.
    pub batch: usize,
    /// Redelivery delay for a message that was pulled but not acknowledged.
    pub ack_wait: Duration,
}

#[derive(Debug, Error)]
pub enum ReceiverError {
    #[error(
        "stream {stream} not found: start a producer (it creates the stream) or check --stream"
    )]
    StreamMissing { stream: String },
    #[error("stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("durable consumer {name} exists with filter {existing:?}, not {wanted:?}: use another --durable or delete it")]
    DurableMismatch {
        name: String,
        existing: Vec<String>,
        wanted: Vec<String>,
    },
    #[error("consumer: {0}")]
    Consumer(String),
    #[error("consumer: no answer from JetStream in time; if the log above shows a permissions violation, this user may not create consumers on {stream} (deploy/nats/accounts.conf)")]
    ConsumerTimedOut { stream: String },
}

#[derive(Debug, Clone)]
pub struct ReceiverMetrics {
    pub received: Counter,
    pub written: Counter,
    pub invalid: Counter,
    pub redelivered: Counter,
    /// Redeliveries of messages this run had already written: acknowledged, not repeated.
    pub skipped_redelivered: Counter,
    /// Producer receipt → line written, seconds.
    pub latency: Histogram,
}

impl ReceiverMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = ReceiverMetrics {
            received: Counter::default(),
            written: Counter::default(),
            invalid: Counter::default(),
            redelivered: Counter::default(),
            skipped_redelivered: Counter::default(),
            latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
        };
        registry.register(
            "messages_received",
            "Messages delivered by the consumer",
            m.received.clone(),
        );
        registry.register(
            "messages_written",
            "Records written as JSON lines (or counted with --no-json-stream)",
            m.written.clone(),
        );
        registry.register(
            "messages_invalid",
            "Messages that are not telemetry records (skipped, acknowledged)",
            m.invalid.clone(),
        );
        registry.register(
            "messages_redelivered",
            "Messages JetStream delivered more than once",
            m.redelivered.clone(),
        );
        registry.register(
            "messages_skipped_redelivered",
            "Redelivered messages this run had already written (acknowledged, not written again)",
            m.skipped_redelivered.clone(),
        );
        registry.register(
            "latency_seconds",
            "recv_epoch_ms at the producer to line written",
            m.latency.clone(),
        );
        m
    }
}

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Count,
    Duration,
    Shutdown,
    OutputClosed,
}

#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub written: u64,
    pub invalid: u64,
    pub stop: StopReason,
}

/// Create or bind the consumer, then print until `--count`, `--duration`, shutdown or a
/// closed output.
pub async fn run<W: AsyncWrite + Unpin>(
    options: ReceiverOptions,
    js: jetstream::Context,
    mut out: W,
    metrics: ReceiverMetrics,
    shutdown: CancellationToken,
) -> Result<Summary, ReceiverError> {
    let consumer = bind_consumer(&options, &js).await?;
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut line = Vec::with_capacity(64 * 1024);
    let mut written: u64 = 0;
    let mut invalid: u64 = 0;
    let mut unacked: Vec<jetstream::Message> = Vec::with_capacity(options.batch);
    let mut backoff = Duration::from_millis(100);
    let mut invalid_logged: Option<Instant> = None;
    // A node change can lose an acknowledgement in flight; JetStream then delivers the
    // message again. One already written in this run is acknowledged, not printed twice.
    let mut written_seqs = SequenceWindow::new(SEQUENCE_WINDOW);

    let stop = 'outer: loop {
        let remaining = options.count.map(|c| c.saturating_sub(written + invalid));
        if remaining == Some(0) {
            break StopReason::Count;
        }
        let want = remaining
            .map_or(options.batch, |r| options.batch.min(r as usize))
            .max(1);
        let batch = consumer
            .batch()
            .max_messages(want)
            .expires(Duration::from_secs(1))
            .messages();
        let mut messages = tokio::select! {
            _ = shutdown.cancelled() => break StopReason::Shutdown,
            _ = sleep_until(deadline) => break StopReason::Duration,
            b = batch => match b {
                Ok(m) => { backoff = Duration::from_millis(100); m }
                Err(e) => {
                    tracing::warn!(error = %e, "pull request failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break StopReason::Shutdown,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        loop {
            // Take what is already here without waiting; flush and ack before waiting.
            let next = match messages.next().now_or_never() {
                Some(item) => item,
                None => {
                    if let Err(stop) = flush_and_ack(&mut out, &mut line, &mut unacked, false).await
                    {
                        break 'outer stop;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'outer StopReason::Shutdown,
                        _ = sleep_until(deadline) => break 'outer StopReason::Duration,
                        item = messages.next() => item,
                    }
                }
            };
            let msg = match next {
                None => break,
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "pull batch ended");
                    break;
                }
            };
            metrics.received.inc();
            let (sequence, redelivered) = msg.info().map_or((None, false), |i| {
                (Some(i.stream_sequence), i.delivered > 1)
            });
            if redelivered {
                metrics.redelivered.inc();
                if sequence.is_some_and(|s| written_seqs.contains(s)) {
                    metrics.skipped_redelivered.inc();
                    unacked.push(msg);
                    continue;
                }
            }
            match TelemetryRecord::from_cbor(&msg.payload) {
                Ok(record) => {
                    if let Some(s) = sequence {
                        written_seqs.insert(s);
                    }
                    if options.json {
                        record.write_json(&mut line);
                        line.push(b'\n');
                    }
                    written += 1;
                    metrics.written.inc();
                    let now_ms = tspi_runtime::now_epoch_ms();
                    metrics
                        .latency
                        .observe((now_ms - record.recv_epoch_ms).max(0) as f64 / 1000.0);
                }
                Err(error) => {
                    invalid += 1;
                    metrics.invalid.inc();
                    if invalid_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        invalid_logged = Some(Instant::now());
                        tracing::warn!(subject = %msg.subject, %error, "skipping a message that is not a telemetry record");
                    }
                }
            }
            unacked.push(msg);
            if line.len() >= 60 * 1024 {
                if let Err(stop) = flush_and_ack(&mut out, &mut line, &mut unacked, false).await {
                    break 'outer stop;
                }
            }
            if options.count.is_some_and(|c| written + invalid >= c) {
                break 'outer StopReason::Count;
            }
        }
    };

    if stop != StopReason::OutputClosed {
        if let Err(StopReason::OutputClosed) =
            flush_and_ack(&mut out, &mut line, &mut unacked, true).await
        {
            return Ok(Summary {
                written,
                invalid,
                stop: StopReason::OutputClosed,
            });
        }
    }
    Ok(Summary {
        written,
        invalid,
        stop,
    })
}

/// How many recent stream sequences the redelivery check remembers (512 KiB of bits);
/// a redelivery can only be of a message still awaiting its ack, and at most
/// `max_ack_pending` (100,000) are.
const SEQUENCE_WINDOW: u64 = 1 << 22;

/// A set of stream sequences over a sliding window of the most recent `span`: one bit
/// each, forgetting the oldest as newer ones arrive.
#[derive(Debug)]
pub struct SequenceWindow {
    /// Sequence of bit 0 of `words[0]` (a multiple of 64).
    base: u64,
    words: std::collections::VecDeque<u64>,
    max_words: usize,
}

impl SequenceWindow {
    pub fn new(span: u64) -> Self {
        SequenceWindow {
            base: 0,
            words: std::collections::VecDeque::new(),
            max_words: (span / 64).max(1) as usize,
        }
    }

    pub fn insert(&mut self, seq: u64) {
        if self.words.is_empty() {
            self.base = seq & !63;
        }
        if seq < self.base {
            return; // older than the window: forgotten already
        }
        let mut index = ((seq - self.base) / 64) as usize;
        if index >= self.max_words {
            let shift = index + 1 - self.max_words;
            if shift >= self.words.len() {
                self.words.clear();
                self.base = seq & !63;
                index = 0;
            } else {
                self.words.drain(..shift);
                self.base += 64 * shift as u64;
                index -= shift;
            }
        }
        if self.words.len() <= index {
            self.words.resize(index + 1, 0);
        }
        self.words[index] |= 1 << (seq % 64);
    }

    pub fn contains(&self, seq: u64) -> bool {
        if seq < self.base {
            return false;
        }
        let index = ((seq - self.base) / 64) as usize;
        self.words
            .get(index)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Write what is buffered, then acknowledge every message written. With `confirm` (the
/// final ack of a run) the server's confirmation of the last one is awaited, so a restart
/// never sees these messages again.
async fn flush_and_ack<W: AsyncWrite + Unpin>(
    out: &mut W,
    line: &mut Vec<u8>,
    unacked: &mut Vec<jetstream::Message>,
    confirm: bool,
) -> Result<(), StopReason> {
    if !line.is_empty() {
        let written = async {
            out.write_all(line).await?;
            out.flush().await
        }
        .await;
        line.clear();
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                tracing::info!("output closed by the reader; stopping");
            } else {
                tracing::error!(error = %e, "cannot write output; stopping");
            }
            // Not acknowledged: these messages are redelivered to the next reader.
            unacked.clear();
            return Err(StopReason::OutputClosed);
        }
    }
    let last = unacked.pop();
    for msg in unacked.drain(..) {
        if let Err(e) = msg.ack().await {
            tracing::warn!(error = %e, "ack not sent; the message may be redelivered");
        }
    }
    if let Some(msg) = last {
        let acked = if confirm {
            msg.double_ack().await
        } else {
            msg.ack().await
        };
        if let Err(e) = acked {
            // Still written; JetStream redelivers it after ack_wait (at-least-once).
            tracing::warn!(error = %e, "acknowledgement not confirmed; message may be redelivered");
        }
    }
    Ok(())
}

async fn bind_consumer(
    options: &ReceiverOptions,
    js: &jetstream::Context,
) -> Result<jetstream::consumer::Consumer<pull::Config>, ReceiverError> {
    let stream = match js.get_stream(&options.stream).await {
        Ok(s) => s,
        Err(e) => {
            if let jetstream::context::GetStreamErrorKind::JetStream(err) = e.kind() {
                if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND {
                    return Err(ReceiverError::StreamMissing {
                        stream: options.stream.clone(),
                    });
                }
            }
            return Err(ReceiverError::Stream {
                stream: options.stream.clone(),
                reason: e.to_string(),
            });
        }
    };
    let (filter_subject, filter_subjects) = match options.subjects.as_slice() {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
    let config = pull::Config {
        durable_name: options.durable.clone(),
        name: options.durable.clone(),
        deliver_policy: options.deliver.policy(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        filter_subject,
        filter_subjects,
        max_ack_pending: 100_000,
        inactive_threshold: if options.durable.is_some() {
            Duration::ZERO
        } else {
            Duration::from_secs(60)
        },
        description: Some("tspi receiver".into()),
        ..Default::default()
    };
    let consumer_error = |e: async_nats::jetstream::stream::ConsumerError| match e.kind() {
        async_nats::jetstream::stream::ConsumerErrorKind::TimedOut => {
            ReceiverError::ConsumerTimedOut {
                stream: options.stream.clone(),
            }
        }
        _ => ReceiverError::Consumer(e.to_string()),
    };
    let consumer = match &options.durable {
        Some(name) => stream
            .get_or_create_consumer(name, config)
            .await
            .map_err(consumer_error)?,
        None => stream
            .create_consumer(config)
            .await
            .map_err(consumer_error)?,
    };
    if let Some(name) = &options.durable {
        let info = consumer.cached_info();
        let mut existing = info.config.filter_subjects.clone();
        if !info.config.filter_subject.is_empty() {
            existing.push(info.config.filter_subject.clone());
        }
        let mut wanted = options.subjects.clone();
        existing.sort();
        wanted.sort();
        if existing != wanted {
            return Err(ReceiverError::DurableMismatch {
                name: name.clone(),
                existing,
                wanted,
            });
        }
        tracing::info!(durable = %name, pending = info.num_pending, "bound durable consumer");
    }
    Ok(consumer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sequence_window_remembers_recent_sequences_only() {
        let mut w = SequenceWindow::new(128);
        assert!(!w.contains(5));
        for s in [100, 101, 163, 190] {
            w.insert(s);
        }
        assert!(w.contains(100) && w.contains(101) && w.contains(163) && w.contains(190));
        assert!(!w.contains(102) && !w.contains(99) && !w.contains(0));
        // The window is two words (64..192); 300 is past both, so it restarts at 256.
        w.insert(300);
        assert!(w.contains(300) && !w.contains(190) && !w.contains(100));
        w.insert(10); // older than the window: ignored
        assert!(!w.contains(10));
        // A jump far ahead starts afresh.
        w.insert(1_000_000);
        assert!(w.contains(1_000_000) && !w.contains(300));
        assert_eq!(w.words.len(), 1);
    }

    #[test]
    fn sequence_window_is_bounded() {
        let mut w = SequenceWindow::new(1 << 12);
        for s in 1..100_000 {
            w.insert(s);
        }
        assert!(w.words.len() <= 64);
        assert!(w.contains(99_999) && !w.contains(1));
    }

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn deliver_parsing() {
        assert_eq!(Deliver::parse(&words("new")), Ok(Deliver::New));
        assert_eq!(Deliver::parse(&words("all")), Ok(Deliver::All));
        assert!(matches!(
            Deliver::parse(&words("since 2025-09-28T11:00:00Z")),
            Ok(Deliver::Since(_))
        ));
        assert!(matches!(
            Deliver::parse(&words("since=2025-09-28T11:00:00+02:00")),
            Ok(Deliver::Since(_))
        ));
        assert!(Deliver::parse(&words("since")).is_err());
        assert!(Deliver::parse(&words("since yesterday")).is_err());
        assert!(Deliver::parse(&words("everything")).is_err());
        assert!(Deliver::parse(&words("all extra")).is_err());
    }
}
