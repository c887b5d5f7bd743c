//! The archiver: a durable pull consumer on `TSPI` writing every message to PostgreSQL
//! (SPEC §5, issue 3).
//!
//! Two stages joined by a bounded queue: the reader pulls messages, turns them into rows
//! and cuts batches (by size or time); the writer commits each batch in one transaction
//! and only then acknowledges its messages — explicitly, one by one, because an "ack all"
//! would also cover messages a crashed instance had pulled but never written. While one
//! batch is being written the next one is being pulled.
//!
//! A database error keeps the batch and retries it on a fresh pooled connection — the
//! multi-host `--database-url` with `target_session_attrs=read-write` finds a promoted
//! replica — so nothing is acknowledged that is not stored. Redelivered messages hit the
//! same primary key and are skipped. Undecodable messages are stored raw with their
//! error, counted, and acknowledged: they never block the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use deadpool_postgres::Pool;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tspi_core::{DisplayCommand, Tag, TelemetryRecord};
use tspi_store::{write_batch, CommandRow, JsonText, MessageKind, MessageRow, RowDetail, TagRow};

#[derive(Debug, Clone)]
pub struct ArchiverOptions {
    pub stream: String,
    pub durable: String,
    pub batch_max: usize,
    pub batch_wait: Duration,
    /// How long a pulled, unacknowledged message (e.g. of a crashed archiver) waits
    /// before JetStream delivers it again.
    pub ack_wait: Duration,
    /// Plain-PostgreSQL retention: delete rows older than this every minute.
    pub retain: Option<Duration>,
    /// Batches committed in parallel (each on its own connection).
    pub writers: usize,
    /// How long a shutdown keeps retrying a batch the database refuses before leaving it
    /// unacknowledged (JetStream redelivers it).
    pub shutdown_retry: Duration,
}

impl Default for ArchiverOptions {
    fn default() -> Self {
        ArchiverOptions {
            stream: "TSPI".into(),
            durable: "archiver".into(),
            batch_max: 5000,
            batch_wait: Duration::from_millis(50),
            ack_wait: Duration::from_secs(5),
            retain: None,
            writers: 4,
            shutdown_retry: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ArchiverMetrics {
    pub rows_written: Counter,
    pub rows_skipped: Counter,
    pub rejects: Counter,
    pub db_errors: Counter,
    pub redeliveries: Counter,
    pub batch_latency: Histogram,
    pub archive_lag: Histogram,
    pub consumer_pending: Gauge,
    pub consumer_ack_pending: Gauge,
    /// TimescaleDB jobs the archiver ran itself because the scheduler's runs failed.
    pub policy_runs: Counter,
    pub policy_run_errors: Counter,
    /// Stream time → commit, µs, at full resolution (benchmarks, shutdown report).
    pub lag_detail: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
}

impl ArchiverMetrics {
    /// One log line with what this run did: written at shutdown, so an operator reading
    /// the log sees the totals and the archive lag without a metrics scraper.
    pub fn log_summary(&self, what: &str) {
        let (lag_p50_ms, lag_p99_ms) = self
            .lag_detail
            .lock()
            .ok()
            .filter(|h| !h.is_empty())
            .map(|h| {
                let ms = |q| h.value_at_quantile(q) as f64 / 1000.0;
                (ms(0.5), ms(0.99))
            })
            .unwrap_or_default();
        tracing::info!(
            rows_written = self.rows_written.get(),
            rows_skipped = self.rows_skipped.get(),
            rejects = self.rejects.get(),
            redeliveries = self.redeliveries.get(),
            db_errors = self.db_errors.get(),
            lag_p50_ms,
            lag_p99_ms,
            "{what}"
        );
    }

    pub fn new(registry: &mut Registry) -> Self {
        let m = ArchiverMetrics {
            rows_written: Counter::default(),
            rows_skipped: Counter::default(),
            rejects: Counter::default(),
            db_errors: Counter::default(),
            redeliveries: Counter::default(),
            batch_latency: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
            archive_lag: Histogram::new(exponential_buckets(0.000_5, 2.0, 18)),
            consumer_pending: Gauge::default(),
            consumer_ack_pending: Gauge::default(),
            policy_runs: Counter::default(),
            policy_run_errors: Counter::default(),
            lag_detail: Arc::new(Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .unwrap_or_else(|_| unreachable!("static bounds are valid")),
            )),
        };
        registry.register(
            "rows_written",
            "Rows committed to messages (rate = rows/s)",
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
            "First message of a batch pulled to its commit",
            m.batch_latency.clone(),
        );
        registry.register(
            "archive_lag_seconds",
            "Stream time of a message to the commit of its row",
            m.archive_lag.clone(),
        );
        registry.register(
            "consumer_pending",
            "Messages in the stream not yet delivered to the archiver (lag)",
            m.consumer_pending.clone(),
        );
        registry.register(
            "consumer_ack_pending",
            "Messages delivered but not yet acknowledged",
            m.consumer_ack_pending.clone(),
        );
        registry.register(
            "policy_runs",
            "TimescaleDB jobs run by the archiver because the scheduler's last run failed",
            m.policy_runs.clone(),
        );
        registry.register(
            "policy_run_errors",
            "Of those, runs that failed here too",
            m.policy_run_errors.clone(),
        );
        m
    }
}

fn epoch_ms_to_time(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

fn rfc3339(text: &str) -> Option<OffsetDateTime> {
    tspi_core::rfc3339::parse_epoch_ms(text).and_then(epoch_ms_to_time)
}

/// Classify and decode one message into its row; `None` without JetStream metadata.
pub fn to_row(stream: &str, msg: &jetstream::Message) -> Option<MessageRow> {
    let info = msg.info().ok()?;
    let subject = msg.subject.as_str();
    let msg_id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_owned());
    let mut row = MessageRow {
        stream: stream.to_owned(),
        stream_seq: i64::try_from(info.stream_sequence).ok()?,
        stream_ts: info.published,
        subject: subject.to_owned(),
        kind: MessageKind::Invalid,
        msg_id,
        recv_ts: None,
        sensor_id: None,
        day: None,
        time_s: None,
        record: None,
        raw: msg.payload.clone(),
        error: None,
        detail: RowDetail::None,
    };
    let payload = &msg.payload[..];
    if subject.starts_with("tspi.cmd.") {
        classify_command(&mut row, payload);
    } else if subject.starts_with("tags.") {
        classify_tag(&mut row, payload);
    } else if subject.starts_with("tspi.alarm.") {
        classify_alarm(&mut row, payload);
    } else {
        match TelemetryRecord::from_cbor(payload) {
            Ok(rec) => {
                let mut json = Vec::with_capacity(420);
                rec.write_json(&mut json);
                row.kind = MessageKind::Telemetry;
                row.sensor_id = Some(i32::from(rec.sensor_id));
                row.day = i16::try_from(rec.day).ok();
                row.time_s = Some(rec.time_s);
                row.recv_ts = epoch_ms_to_time(rec.recv_epoch_ms);
                row.record = Some(JsonText(json));
            }
            Err(e) => row.error = Some(e.to_string()),
        }
    }
    Some(row)
}

/// Store the generic JSON form of a command or tag and return it; `None` (with the error
/// set) when the payload is not CBOR at all.
fn set_json(row: &mut MessageRow, payload: &[u8]) -> Option<serde_json::Value> {
    match tspi_core::json::cbor_to_json(payload) {
        Ok(value) => {
            row.record = serde_json::to_vec(&value).ok().map(JsonText);
            Some(value)
        }
        Err(e) => {
            row.error = Some(e);
            None
        }
    }
}

fn classify_command(row: &mut MessageRow, payload: &[u8]) {
    let Some(value) = set_json(row, payload) else {
        return;
    };
    match DisplayCommand::from_json(value) {
        Ok(cmd) => match rfc3339(&cmd.ts) {
            Some(ts) => {
                row.kind = MessageKind::Command;
                row.detail = RowDetail::Command(CommandRow {
                    cmd_id: cmd.cmd_id.clone(),
                    ts,
                    name: cmd.setting.name().to_owned(),
                    sender: cmd.sender.clone(),
                    payload: cmd.payload_json(),
                });
            }
            None => row.error = Some(format!("command ts {:?} out of range", cmd.ts)),
        },
        Err(e) => row.error = Some(e.to_string()),
    }
}

fn classify_tag(row: &mut MessageRow, payload: &[u8]) {
    let Some(value) = set_json(row, payload) else {
        return;
    };
    match Tag::from_json(value) {
        Ok(tag) => match (rfc3339(&tag.ts), rfc3339(&tag.updated_ts)) {
            (Some(ts), Some(updated_ts)) => {
                row.kind = MessageKind::Tag;
                row.detail = RowDetail::Tag(TagRow {
                    id: tag.id,
                    ts,
                    label: tag.label,
                    status: tag.status.as_str().to_owned(),
                    creator: tag.creator,
                    notes: tag.notes,
                    updated_ts,
                    extra: tag.extra,
                });
            }
            _ => row.error = Some("tag time out of range".into()),
        },
        Err(e) => row.error = Some(e.to_string()),
    }
}

fn classify_alarm(row: &mut MessageRow, payload: &[u8]) {
    match tspi_alarms::AlarmEvent::from_cbor(payload) {
        Ok(alarm) => match serde_json::to_vec(&alarm) {
            Ok(json) => {
                row.kind = MessageKind::Alarm;
                row.record = Some(JsonText(json));
            }
            Err(e) => row.error = Some(e.to_string()),
        },
        Err(e) => row.error = Some(e),
    }
}

/// A batch on its way from the reader to the writer.
#[derive(Debug)]
struct Batch {
    rows: Vec<MessageRow>,
    messages: Vec<jetstream::Message>,
    started: Instant,
}

/// Run until `shutdown`; batches already cut are written and acknowledged first.
pub async fn run(
    options: ArchiverOptions,
    js: jetstream::Context,
    pool: Pool,
    metrics: ArchiverMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stream = js.get_stream(&options.stream).await?;
    let config = pull::Config {
        durable_name: Some(options.durable.clone()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        max_ack_pending: 100_000,
        description: Some("tspi archiver".into()),
        ..Default::default()
    };
    let mut consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(&options.durable, config.clone())
        .await?;
    // A consumer an earlier version made keeps its own ack wait (30 s then); bring it to
    // --ack-wait, or deliveries lost with a node take that long to come again.
    let existing_wait = consumer.cached_info().config.ack_wait;
    if existing_wait != options.ack_wait {
        match stream.update_consumer(config).await {
            Ok(updated) => {
                tracing::info!(from = ?existing_wait, to = ?options.ack_wait, "consumer ack wait updated");
                consumer = updated;
            }
            Err(e) => {
                tracing::warn!(error = %e, from = ?existing_wait, "cannot update the consumer's ack wait; keeping it")
            }
        }
    }
    let (tx, rx) = mpsc::channel::<Batch>(options.writers.max(1));
    // Several writers commit batches in parallel: each commit waits for its WAL flush, and
    // parallel commits share flushes (group commit). Batches are independent: every row's
    // key is its stream sequence, and tag upserts keep the newest state whatever the
    // commit order.
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let writers: Vec<_> = (0..options.writers.max(1))
        .map(|_| {
            tokio::spawn(write_loop(
                rx.clone(),
                options.shutdown_retry,
                options.ack_wait,
                pool.clone(),
                metrics.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    // Only the writers hold the receiver: when they stop, a reader blocked on a full
    // queue gets an error instead of waiting forever.
    drop(rx);
    let lag = tokio::spawn(watch_consumer(
        consumer.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let summarize = tokio::spawn(summarize_loop(pool.clone(), shutdown.clone()));
    let policies = tokio::spawn(policy_fallback_loop(
        pool.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let retention = options
        .retain
        .map(|retain| tokio::spawn(retention_loop(pool, retain, shutdown.clone())));
    let read = read_loop(&options, &consumer, &metrics, &shutdown, tx).await;
    // The reader dropped its sender: the writers finish the batches in the queue.
    let mut written = Ok(());
    for w in writers {
        let result = w.await.map_err(anyhow::Error::from).and_then(|r| r);
        if written.is_ok() {
            written = result;
        }
    }
    lag.abort();
    summarize.abort();
    policies.abort();
    if let Some(r) = retention {
        r.abort();
    }
    read?;
    written
}

async fn read_loop(
    options: &ArchiverOptions,
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    metrics: &ArchiverMetrics,
    shutdown: &CancellationToken,
    tx: mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let mut reject_logged: Option<Instant> = None;
    let mut error_logged: Option<Instant> = None;
    'connect: while !shutdown.is_cancelled() {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(options.batch_max.clamp(100, 10_000))
            // Short pulls with a 1 s heartbeat: after a node change a lost pull request
            // is noticed (two missed heartbeats) and replaced within about 2 s, where a
            // 5 s heartbeat left the archiver idle for 10 s and more.
            .heartbeat(Duration::from_secs(1))
            .expires(Duration::from_secs(5))
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull from the consumer; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let mut batch = Batch {
                rows: Vec::with_capacity(options.batch_max),
                messages: Vec::with_capacity(options.batch_max),
                started: Instant::now(),
            };
            let mut deadline: Option<tokio::time::Instant> = None;
            while batch.rows.len() < options.batch_max {
                let wait = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wait => break,
                    n = messages.next() => n,
                };
                let msg = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        // Missed heartbeats after a node change or a reconnect: the pull
                        // requests in flight are gone. Carrying on left the archiver idle
                        // for 20 s in the bouncer test (async-nats kept counting them as
                        // outstanding); a fresh pull stream asks again at once. What the
                        // old one had been sent comes again after --ack-wait.
                        if error_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                            error_logged = Some(Instant::now());
                            tracing::warn!(error = %e, "pull stream reported an error; re-subscribing");
                        }
                        if !batch.rows.is_empty() && tx.send(batch).await.is_err() {
                            return Ok(());
                        }
                        continue 'connect;
                    }
                    None => {
                        if !batch.rows.is_empty() && tx.send(batch).await.is_err() {
                            return Ok(());
                        }
                        tracing::warn!("pull stream ended; re-subscribing");
                        continue 'connect;
                    }
                };
                if batch.rows.is_empty() {
                    batch.started = Instant::now();
                    deadline = Some(tokio::time::Instant::now() + options.batch_wait);
                }
                if msg.info().is_ok_and(|i| i.delivered > 1) {
                    metrics.redeliveries.inc();
                }
                let Some(row) = to_row(&options.stream, &msg) else {
                    // No JetStream metadata, so no key to store it under: leave it unacked
                    // (visible as ack-pending) rather than ack what was not stored.
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
                batch.rows.push(row);
                batch.messages.push(msg);
            }
            if !batch.rows.is_empty() && tx.send(batch).await.is_err() {
                return Ok(()); // the writer stopped
            }
            if shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }
    Ok(())
}

async fn write_loop(
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Batch>>>,
    shutdown_retry: Duration,
    ack_wait: Duration,
    pool: Pool,
    metrics: ArchiverMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(200);
    let mut give_up: Option<Instant> = None;
    // A batch that takes long to commit (a slow or stalled database) tells JetStream it
    // is still being worked on, so a short --ack-wait does not redeliver it meanwhile.
    let progress_every = (ack_wait / 2).max(Duration::from_millis(500));
    loop {
        let next = rx.lock().await.recv().await;
        let Some(batch) = next else { break };
        // Write until it commits; only then acknowledge. Shutdown waits for this batch.
        let committed = {
            let commit = commit_batch(
                &batch,
                &pool,
                &metrics,
                &shutdown,
                shutdown_retry,
                &mut backoff,
                &mut give_up,
            );
            tokio::pin!(commit);
            let mut progress = tokio::time::interval_at(
                tokio::time::Instant::now() + progress_every,
                progress_every,
            );
            loop {
                tokio::select! {
                    c = &mut commit => break c,
                    _ = progress.tick() => {
                        for msg in &batch.messages {
                            let _ = msg.ack_with(jetstream::AckKind::Progress).await;
                        }
                    }
                }
            }
        };
        if !committed {
            return Ok(());
        }
        let committed = OffsetDateTime::now_utc();
        if let Ok(mut detail) = metrics.lag_detail.lock() {
            for row in &batch.rows {
                let lag = (committed - row.stream_ts).as_seconds_f64().max(0.0);
                metrics.archive_lag.observe(lag);
                let _ = detail.record((lag * 1e6) as u64);
            }
        }
        let Some((last, rest)) = batch.messages.split_last() else {
            continue;
        };
        for msg in rest {
            if let Err(e) = msg.ack().await {
                tracing::warn!(error = %e, "ack not sent; the message will be redelivered and skipped");
            }
        }
        // One confirmed ack per batch: the acks before it went out on the same connection.
        if let Err(e) = last.double_ack().await {
            tracing::warn!(error = %e, "ack not confirmed; the batch will be redelivered and skipped");
        }
        metrics
            .batch_latency
            .observe(batch.started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Write `batch` until it commits (true), retrying with back-off; false when shutting
/// down with the database unreachable past `shutdown_retry` (the batch then stays
/// unacknowledged and is redelivered to the next archiver).
async fn commit_batch(
    batch: &Batch,
    pool: &Pool,
    metrics: &ArchiverMetrics,
    shutdown: &CancellationToken,
    shutdown_retry: Duration,
    backoff: &mut Duration,
    give_up: &mut Option<Instant>,
) -> bool {
    loop {
        let attempt = async {
            let mut client = pool.get().await?;
            match write_batch(&mut client, &batch.rows).await {
                Ok(out) => Ok(out),
                Err(e) => {
                    // A connection that failed mid-write (or now talks to a demoted
                    // primary) is not returned to the pool.
                    let _ = deadpool_postgres::Object::take(client);
                    Err(e)
                }
            }
        };
        let write_started = Instant::now();
        match attempt.await {
            Ok(out) => {
                tracing::debug!(
                    rows = batch.rows.len(),
                    queued_ms = write_started.duration_since(batch.started).as_millis() as u64,
                    write_ms = write_started.elapsed().as_millis() as u64,
                    "batch committed"
                );
                metrics.rows_written.inc_by(out.inserted);
                metrics.rows_skipped.inc_by(out.skipped);
                // Rows the database refused for their content went in raw.
                metrics.rejects.inc_by(out.refused);
                *backoff = Duration::from_millis(200);
                return true;
            }
            Err(e) => {
                metrics.db_errors.inc();
                tracing::warn!(error = %e.database_message(), rows = batch.rows.len(), "batch write failed; retrying");
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(Duration::from_secs(5));
                if shutdown.is_cancelled() {
                    // Bounded drain: leave the batch unacknowledged (JetStream delivers it
                    // again to the next archiver) rather than hang on a dead database.
                    let deadline = *give_up.get_or_insert_with(|| Instant::now() + shutdown_retry);
                    if Instant::now() >= deadline {
                        tracing::error!(rows = batch.rows.len(), "shutting down with the database unreachable: the batch in hand stays unacknowledged and will be redelivered");
                        return false;
                    }
                    tracing::warn!("shutting down: retrying the batch in hand a little longer");
                }
            }
        }
    }
}

async fn watch_consumer(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    metrics: ArchiverMetrics,
    shutdown: CancellationToken,
) {
    loop {
        if let Ok(info) = consumer.get_info().await {
            metrics.consumer_pending.set(info.num_pending as i64);
            metrics
                .consumer_ack_pending
                .set(info.num_ack_pending as i64);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Keep the time index summarized up to the newest rows (replays and displays read
/// narrow time ranges; an unsummarized range costs each of them a full read).
async fn summarize_loop(pool: Pool, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        if let Ok(client) = pool.get().await {
            if let Err(e) = tspi_store::summarize_time_index(&client).await {
                tracing::debug!(error = %e, "time index summary not updated");
            }
        }
    }
}

/// TimescaleDB's scheduler can fail every job it starts while the same job works when run
/// from a session (2.28.3 on PostgreSQL 15.20: `cannot drop portal "" while it is being
/// set up`). Compression, retention and the quality aggregate's refresh would then never
/// happen. While a job of ours last failed there, the archiver runs it itself, once per
/// its schedule interval, and says so once per job.
async fn policy_fallback_loop(pool: Pool, metrics: ArchiverMetrics, shutdown: CancellationToken) {
    let mut last_run: HashMap<i32, Instant> = HashMap::new();
    // Soon after start (the scheduler tries new jobs at once), then every 30 s.
    let mut pause = Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = Duration::from_secs(30);
        let Ok(client) = pool.get().await else {
            continue;
        };
        let failed = match tspi_store::failed_jobs(&client).await {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read TimescaleDB job stats");
                continue;
            }
        };
        for job in failed {
            let due = last_run
                .get(&job.job_id)
                .is_none_or(|at| at.elapsed() >= job.schedule_interval);
            if !due {
                continue;
            }
            if !last_run.contains_key(&job.job_id) {
                tracing::warn!(
                    job = job.job_id,
                    proc = %job.proc_name,
                    error = job.error.as_deref().unwrap_or("unknown"),
                    every = ?job.schedule_interval,
                    "TimescaleDB's scheduler failed this job; the archiver runs it itself"
                );
            }
            last_run.insert(job.job_id, Instant::now());
            metrics.policy_runs.inc();
            match tspi_store::run_job(&client, job.job_id).await {
                Ok(()) => {
                    tracing::info!(job = job.job_id, proc = %job.proc_name, "ran TimescaleDB job")
                }
                Err(e) => {
                    metrics.policy_run_errors.inc();
                    tracing::warn!(job = job.job_id, error = %e, "TimescaleDB job failed here too");
                }
            }
        }
    }
}

async fn retention_loop(pool: Pool, retain: Duration, shutdown: CancellationToken) {
    loop {
        if let Ok(client) = pool.get().await {
            match tspi_store::delete_older_than(&client, retain).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "retention: deleted old rows"),
                Err(e) => tracing::warn!(error = %e, "retention delete failed"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}
