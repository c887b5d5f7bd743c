//! JetStream publishing with a bounded window of unacknowledged messages.
//!
//! Messages come from a bounded channel. Up to `max_in_flight` are published without
//! waiting; each ack is awaited concurrently. A publish that fails or times out goes back
//! (after a back-off) with the same `Nats-Msg-Id`, so the stream's duplicate window makes
//! the retry idempotent. Retries go ahead of new messages. The loop ends when the channel
//! closes and everything is acknowledged, or when `abandon` fires (drain deadline), in
//! which case what is left is counted as failed and logged: never silently lost.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct OutMessage {
    pub subject: async_nats::Subject,
    /// `Nats-Msg-Id`: the key JetStream de-duplicates on.
    pub msg_id: String,
    pub payload: Bytes,
    /// When the source received it, for end-to-end latency.
    pub received: Instant,
}

#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Unacknowledged publishes allowed at once.
    pub max_in_flight: usize,
    /// Longest back-off between retries of one message.
    pub max_backoff: Duration,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        PublisherOptions {
            max_in_flight: 1024,
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// What the publisher counts; registered under the program's prefix.
#[derive(Debug, Clone)]
pub struct PublishMetrics {
    /// Acknowledged by JetStream (stored, or recognised as duplicate).
    pub published: Counter,
    /// Acknowledged as a duplicate of a message already in the window.
    pub duplicates: Counter,
    /// Publish attempts that failed or timed out and were retried.
    pub retries: Counter,
    /// Given up: rejected permanently, or still unacknowledged at the drain deadline.
    pub failed: Counter,
    /// Receive → JetStream ack, seconds.
    pub ack_latency: Histogram,
}

impl Default for PublishMetrics {
    fn default() -> Self {
        PublishMetrics {
            published: Counter::default(),
            duplicates: Counter::default(),
            retries: Counter::default(),
            failed: Counter::default(),
            ack_latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
        }
    }
}

impl PublishMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "published",
            "Messages acknowledged by JetStream",
            self.published.clone(),
        );
        registry.register(
            "duplicates",
            "Publishes JetStream acknowledged as duplicates (same Nats-Msg-Id in the window)",
            self.duplicates.clone(),
        );
        registry.register(
            "publish_retries",
            "Publish attempts that failed or timed out and were retried with the same Nats-Msg-Id",
            self.retries.clone(),
        );
        registry.register(
            "publish_failed",
            "Messages given up on: permanently rejected or unacknowledged at the drain deadline",
            self.failed.clone(),
        );
        registry.register(
            "ack_latency_seconds",
            "Time from receipt to JetStream acknowledgement",
            self.ack_latency.clone(),
        );
    }
}

struct Pending {
    msg: OutMessage,
    attempts: u32,
    not_before: Instant,
}

type AckFuture = Pin<
    Box<
        dyn Future<
                Output = (
                    OutMessage,
                    u32,
                    Result<jetstream::publish::PublishAck, String>,
                ),
            > + Send,
    >,
>;

/// Publish everything received on `rx` until it closes and all is acknowledged, or
/// until `abandon` is cancelled.
pub async fn run_publisher(
    js: jetstream::Context,
    mut rx: mpsc::Receiver<OutMessage>,
    options: PublisherOptions,
    metrics: PublishMetrics,
    abandon: CancellationToken,
) {
    let max_in_flight = options.max_in_flight.max(1);
    let mut in_flight: FuturesUnordered<AckFuture> = FuturesUnordered::new();
    let mut retries: VecDeque<Pending> = VecDeque::new();
    let mut input_open = true;
    let mut last_error_log: Option<Instant> = None;

    loop {
        if !input_open && in_flight.is_empty() && retries.is_empty() {
            break;
        }
        let window_free = in_flight.len() < max_in_flight;
        let retry_due = retries.front().map(|p| p.not_before);
        let now = Instant::now();
        let retry_ready = window_free && retry_due.is_some_and(|t| t <= now);

        if retry_ready {
            if let Some(p) = retries.pop_front() {
                match send(&js, p.msg, p.attempts).await {
                    Ok(fut) => in_flight.push(fut),
                    Err((msg, attempts, error)) => {
                        schedule_retry(
                            &mut retries,
                            &metrics,
                            &options,
                            msg,
                            attempts,
                            &error,
                            &mut last_error_log,
                        );
                    }
                }
            }
            continue;
        }

        let retry_sleep = async {
            match retry_due {
                Some(t) if window_free => tokio::time::sleep_until(t.into()).await,
                _ => std::future::pending().await,
            }
        };

        tokio::select! {
            biased;
            _ = abandon.cancelled() => break,
            Some((msg, attempts, result)) = in_flight.next(), if !in_flight.is_empty() => {
                match result {
                    Ok(ack) => {
                        metrics.published.inc();
                        if ack.duplicate {
                            metrics.duplicates.inc();
                        }
                        metrics.ack_latency.observe(msg.received.elapsed().as_secs_f64());
                    }
                    Err(error) => {
                        schedule_retry(&mut retries, &metrics, &options, msg, attempts, &error, &mut last_error_log);
                    }
                }
            }
            _ = retry_sleep => {}
            next = rx.recv(), if input_open && window_free && retries.is_empty() => {
                match next {
                    Some(msg) => match send(&js, msg, 0).await {
                        Ok(fut) => in_flight.push(fut),
                        Err((msg, attempts, error)) => {
                            schedule_retry(&mut retries, &metrics, &options, msg, attempts, &error, &mut last_error_log);
                        }
                    },
                    None => input_open = false,
                }
            }
        }
    }

    // Only reached with work left when the drain deadline passed.
    rx.close();
    let mut left = in_flight.len() + retries.len();
    while let Ok(_msg) = rx.try_recv() {
        left += 1;
    }
    if left > 0 {
        metrics.failed.inc_by(left as u64);
        tracing::error!(
            unacknowledged = left,
            "drain deadline passed: messages not confirmed by JetStream (counted as publish_failed)"
        );
    }
}

async fn send(
    js: &jetstream::Context,
    msg: OutMessage,
    attempts: u32,
) -> Result<AckFuture, (OutMessage, u32, String)> {
    let publish = PublishMessage::build()
        .payload(msg.payload.clone())
        .message_id(&msg.msg_id);
    match js.send_publish(msg.subject.clone(), publish).await {
        Ok(ack) => Ok(Box::pin(async move {
            let result = ack.await.map_err(|e| describe(&e));
            (msg, attempts, result)
        })),
        Err(e) => Err((msg, attempts, describe(&e))),
    }
}

fn describe(e: &jetstream::context::PublishError) -> String {
    match e.kind() {
        PublishErrorKind::StreamNotFound => {
            "no stream answered (stream missing or leader election in progress)".into()
        }
        _ => e.to_string(),
    }
}

fn is_permanent(error: &str) -> bool {
    error.contains("max payload")
}

fn schedule_retry(
    retries: &mut VecDeque<Pending>,
    metrics: &PublishMetrics,
    options: &PublisherOptions,
    msg: OutMessage,
    attempts: u32,
    error: &str,
    last_log: &mut Option<Instant>,
) {
    if is_permanent(error) {
        metrics.failed.inc();
        tracing::error!(subject = %msg.subject, msg_id = %msg.msg_id, %error, "publish rejected permanently");
        return;
    }
    metrics.retries.inc();
    // One line a second at most: a node failure makes thousands of these at once.
    if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        *last_log = Some(Instant::now());
        tracing::warn!(msg_id = %msg.msg_id, attempt = attempts + 1, %error, "publish not acknowledged; retrying with the same Nats-Msg-Id");
    }
    let backoff =
        Duration::from_millis(50u64.saturating_mul(1 << attempts.min(6))).min(options.max_backoff);
    retries.push_back(Pending {
        msg,
        attempts: attempts.saturating_add(1),
        not_before: Instant::now() + backoff,
    });
}
