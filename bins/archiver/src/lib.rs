//! The archiver: a durable pull consumer on `TSPI` writing every message to PostgreSQL
//! (SPEC §5, issue 3).
//!
//! Batches are pulled, turned into rows and written in one statement; each message is
//! acknowledged (explicitly: an "ack all" would also cover messages a crashed instance had
//! pulled but never written) only after the write committed.
//! A database error keeps the batch and retries it on a fresh connection — the
//! multi-host `--database-url` with `target_session_attrs=read-write` finds a promoted
//! replica — so nothing is acknowledged that is not stored. Redelivered messages hit the
//! same primary key and are skipped. Undecodable messages are stored raw with their error,
//! counted, and acknowledged: they never block the stream.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use tspi_core::TelemetryRecord;
use tspi_store::{insert_messages, MessageKind, MessageRow};

#[derive(Debug, Clone)]
pub struct ArchiverOptions {
    pub stream: String,
    pub durable: String,
    pub database_url: String,
    pub batch_max: usize,
    pub batch_wait: Duration,
    /// How long a pulled, unacknowledged message (e.g. of a crashed archiver) waits
    /// before JetStream delivers it again.
    pub ack_wait: Duration,
}

#[derive(Debug, Clone)]
pub struct ArchiverMetrics {
    pub rows_written: Counter,
    pub rows_skipped: Counter,
    pub rejects: Counter,
    pub db_errors: Counter,
    pub redeliveries: Counter,
    pub batch_latency: Histogram,
}

impl ArchiverMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = ArchiverMetrics {
            rows_written: Counter::default(),
            rows_skipped: Counter::default(),
            rejects: Counter::default(),
            db_errors: Counter::default(),
            redeliveries: Counter::default(),
            batch_latency: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
        };
        registry.register(
            "rows_written",
            "Rows committed to messages",
            m.rows_written.clone(),
        );
        registry.register(
            "rows_skipped",
            "Messages already archived (redelivery)",
            m.rows_skipped.clone(),
        );
        registry.register(
            "rejects",
            "Messages that could not be decoded (stored raw with their error)",
            m.rejects.clone(),
        );
        registry.register(
            "db_errors",
            "Failed batch writes (retried)",
            m.db_errors.clone(),
        );
        registry.register(
            "redeliveries",
            "Messages JetStream delivered more than once",
            m.redeliveries.clone(),
        );
        registry.register(
            "batch_latency_seconds",
            "Pull to commit, per batch",
            m.batch_latency.clone(),
        );
        m
    }
}

/// Connect to the database (first host that is writable) and run migrations.
pub async fn connect_db(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection ended");
        }
    });
    Ok(client)
}

/// Classify and decode one message into its row.
pub fn to_row(stream: &str, msg: &jetstream::Message) -> Option<MessageRow> {
    let info = msg.info().ok()?;
    let subject = msg.subject.to_string();
    let msg_id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_owned());
    let mut row = MessageRow {
        stream: stream.to_owned(),
        stream_seq: info.stream_sequence as i64,
        stream_ts: info.published,
        subject: subject.clone(),
        kind: MessageKind::Invalid,
        msg_id,
        recv_ts: None,
        sensor_id: None,
        day: None,
        time_s: None,
        record: None,
        raw: msg.payload.to_vec(),
        error: None,
    };
    let generic = |row: &mut MessageRow, kind| match ciborium::from_reader::<serde_json::Value, _>(
        &msg.payload[..],
    ) {
        Ok(v) => {
            row.kind = kind;
            row.record = Some(v);
        }
        Err(e) => row.error = Some(format!("not CBOR: {e}")),
    };
    if subject.starts_with("tspi.cmd.") {
        generic(&mut row, MessageKind::Command);
    } else if subject.starts_with("tags.") {
        generic(&mut row, MessageKind::Tag);
    } else {
        match TelemetryRecord::from_cbor(&msg.payload) {
            Ok(rec) => {
                row.kind = MessageKind::Telemetry;
                row.sensor_id = Some(i32::from(rec.sensor_id));
                row.day = i16::try_from(rec.day).ok();
                row.time_s = Some(rec.time_s);
                row.recv_ts = time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(rec.recv_epoch_ms) * 1_000_000,
                )
                .ok();
                row.record = serde_json::to_value(&rec).ok();
            }
            Err(e) => row.error = Some(e.to_string()),
        }
    }
    Some(row)
}

/// Run until `shutdown`; the batch in hand is finished (written and acked) first.
pub async fn run(
    options: ArchiverOptions,
    js: jetstream::Context,
    metrics: ArchiverMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stream = js.get_stream(&options.stream).await?;
    let consumer = stream
        .get_or_create_consumer(
            &options.durable,
            pull::Config {
                durable_name: Some(options.durable.clone()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: options.ack_wait,
                max_ack_pending: 100_000,
                description: Some("tspi archiver".into()),
                ..Default::default()
            },
        )
        .await?;
    let mut db: Option<tokio_postgres::Client> = None;
    let mut backoff = Duration::from_millis(200);
    let mut reject_logged: Option<Instant> = None;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let batch = consumer
            .batch()
            .max_messages(options.batch_max)
            .expires(options.batch_wait.max(Duration::from_millis(50)))
            .messages();
        let mut messages = tokio::select! {
            _ = shutdown.cancelled() => break,
            b = batch => match b {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "pull failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        let mut rows = Vec::with_capacity(options.batch_max);
        let mut pulled = Vec::with_capacity(options.batch_max);
        while let Some(next) = messages.next().await {
            let Ok(msg) = next else { break };
            if msg.info().is_ok_and(|i| i.delivered > 1) {
                metrics.redeliveries.inc();
            }
            let Some(row) = to_row(&options.stream, &msg) else {
                // No JetStream metadata, so no key to store it under: leave it unacked
                // (visible as ack-pending, redelivered) rather than ack what was not stored.
                metrics.rejects.inc();
                tracing::error!(subject = %msg.subject, "message without JetStream metadata; not archived, not acknowledged");
                continue;
            };
            if row.error.is_some() {
                metrics.rejects.inc();
                if reject_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    reject_logged = Some(Instant::now());
                    tracing::warn!(subject = %row.subject, error = ?row.error, "undecodable message stored raw");
                }
            }
            rows.push(row);
            pulled.push(msg);
        }
        let Some(last) = pulled.pop() else { continue };
        // Write until it commits; only then acknowledge. Shutdown waits for this batch.
        loop {
            if db.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
                match connect_db(&options.database_url).await {
                    Ok(c) => {
                        tracing::info!("connected to the database");
                        db = Some(c);
                    }
                    Err(e) => {
                        metrics.db_errors.inc();
                        tracing::warn!(error = %e, "database unreachable; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            let Some(client) = db.as_ref() else { continue };
            match insert_messages(client, &rows).await {
                Ok(new) => {
                    metrics.rows_written.inc_by(new);
                    metrics.rows_skipped.inc_by(rows.len() as u64 - new);
                    backoff = Duration::from_millis(200);
                    break;
                }
                Err(e) => {
                    metrics.db_errors.inc();
                    tracing::warn!(error = %e, rows = rows.len(), "batch write failed; reconnecting and retrying");
                    db = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        for msg in &pulled {
            if let Err(e) = msg.ack().await {
                tracing::warn!(error = %e, "ack not sent; the message will be redelivered and skipped");
            }
        }
        if let Err(e) = last.double_ack().await {
            tracing::warn!(error = %e, "ack not confirmed; the batch will be redelivered and skipped");
        }
        metrics
            .batch_latency
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(())
}
