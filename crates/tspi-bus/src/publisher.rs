//! JetStream publishing with a bounded window of unacknowledged messages.
//!
//! Each message is published with a reply subject `<inbox>.<n>` under one wildcard
//! subscription, so acks of the whole window arrive on a single subscriber and are matched
//! to their message by `n`: no per-message request future, oneshot or boxed task. Up to
//! `max_in_flight` messages are outstanding. A message whose ack does not come within
//! `publish_timeout`, or comes back as an error, is published again (after a back-off)
//! with the same `Nats-Msg-Id`, so the stream's duplicate window makes the retry
//! idempotent; retries go ahead of new messages. The loop ends when the input closes and
//! everything is acknowledged, or when `abandon` fires (drain deadline), in which case
//! what is left is counted as failed and logged: never silently lost.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, StatusCode, Subject};
use bytes::Bytes;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct OutMessage {
    pub subject: Subject,
    /// `Nats-Msg-Id`: the key JetStream de-duplicates on.
    pub msg_id: String,
    pub payload: Bytes,
    /// When the source received it, for end-to-end latency.
    pub received: Instant,
}

/// How a program publishes to JetStream (`--publish-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PublishMode {
    /// Fast-ingest batches when the stream allows them, else the per-message window.
    #[default]
    Auto,
    /// Fast-ingest batches; the stream must allow them.
    Fast,
    /// One ack per message, a bounded window of them in flight.
    Window,
}

#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Publish with fast-ingest batches, ending them and pinging on this subject (one of
    /// the stream's that carries no data); falls back to the window if the stream
    /// refuses. `None`: the per-message window.
    pub fast: Option<Subject>,
    /// Unacknowledged publishes allowed at once.
    pub max_in_flight: usize,
    /// How long to wait for an ack before publishing again.
    pub publish_timeout: Duration,
    /// Longest back-off between retries of one message.
    pub max_backoff: Duration,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        PublisherOptions {
            fast: None,
            max_in_flight: 1024,
            publish_timeout: Duration::from_secs(5),
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
    /// Messages waiting in the input queue for a publish slot (after each take).
    pub queued: Gauge,
    /// Fast-ingest batches started (none with the per-message window).
    pub batches: Counter,
}

impl Default for PublishMetrics {
    fn default() -> Self {
        PublishMetrics {
            published: Counter::default(),
            duplicates: Counter::default(),
            retries: Counter::default(),
            failed: Counter::default(),
            ack_latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            queued: Gauge::default(),
            batches: Counter::default(),
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
            "publish_queue_depth",
            "Messages waiting for a publish slot",
            self.queued.clone(),
        );
        registry.register(
            "publish_batches",
            "Fast-ingest batches started (0 when publishing with the per-message window)",
            self.batches.clone(),
        );
        registry.register(
            "ack_latency_seconds",
            "Time from receipt to JetStream acknowledgement",
            self.ack_latency.clone(),
        );
    }
}

/// The part of a JetStream publish ack we act on.
#[derive(Debug, Deserialize)]
struct Ack {
    #[serde(default)]
    duplicate: bool,
    error: Option<AckError>,
}

#[derive(Debug, Deserialize)]
struct AckError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    description: String,
}

enum Outcome {
    Stored { duplicate: bool },
    Retry(String),
    Permanent(String),
}

fn outcome(status: Option<StatusCode>, payload: &[u8]) -> Outcome {
    if status == Some(StatusCode::NO_RESPONDERS) {
        return Outcome::Retry(
            "no stream answered (stream missing or leader election in progress)".into(),
        );
    }
    match serde_json::from_slice::<Ack>(payload) {
        Ok(Ack {
            error: None,
            duplicate,
        }) => Outcome::Stored { duplicate },
        Ok(Ack { error: Some(e), .. }) => {
            let text = format!("JetStream error {}: {}", e.code, e.description);
            // 4xx: the message itself is refused (too large, wrong subject...); retrying
            // cannot help. Except 408 and 409: a clustered stream answers "duplicate
            // message id is in process" (409) while the first copy is still being
            // replicated; retried, it resolves into an ordinary duplicate ack.
            // 5xx and 0: the cluster is not able right now.
            if (400..500).contains(&e.code) && e.code != 408 && e.code != 409 {
                Outcome::Permanent(text)
            } else {
                Outcome::Retry(text)
            }
        }
        Err(e) => Outcome::Retry(format!("unreadable ack: {e}")),
    }
}

struct Pending {
    msg: OutMessage,
    attempts: u32,
}

struct Retry {
    pending: Pending,
    not_before: Instant,
}

struct Window {
    client: async_nats::Client,
    abandon: CancellationToken,
    inbox: String,
    options: PublisherOptions,
    metrics: PublishMetrics,
    next_id: u64,
    in_flight: HashMap<u64, Pending>,
    /// Ids in send order with their ack deadline (all share one timeout, so it is sorted).
    deadlines: VecDeque<(u64, Instant)>,
    retries: VecDeque<Retry>,
    last_warning: Option<Instant>,
}

impl Window {
    async fn send(&mut self, p: Pending) {
        let id = self.next_id;
        self.next_id += 1;
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, p.msg.msg_id.as_str());
        let reply: Subject = format!("{}.{id}", self.inbox).into();
        // While disconnected the client may hold the publish until it reconnects; the
        // drain deadline must still be able to end the run.
        let publish = self.client.publish_with_reply_and_headers(
            p.msg.subject.clone(),
            reply,
            headers,
            p.msg.payload.clone(),
        );
        let sent = tokio::select! {
            r = publish => r,
            _ = self.abandon.cancelled() => {
                self.retries.push_back(Retry { pending: p, not_before: Instant::now() });
                return;
            }
        };
        match sent {
            Ok(()) => {
                self.deadlines
                    .push_back((id, Instant::now() + self.options.publish_timeout));
                self.in_flight.insert(id, p);
            }
            Err(e) => self.retry(p, &e.to_string()),
        }
    }

    fn acked(&mut self, id: u64, status: Option<StatusCode>, payload: &[u8]) {
        // Unknown ids are late acks of attempts already retried: nothing to do.
        let Some(p) = self.in_flight.remove(&id) else {
            return;
        };
        match outcome(status, payload) {
            Outcome::Stored { duplicate } => {
                self.metrics.published.inc();
                if duplicate {
                    self.metrics.duplicates.inc();
                }
                self.metrics
                    .ack_latency
                    .observe(p.msg.received.elapsed().as_secs_f64());
            }
            Outcome::Retry(error) => self.retry(p, &error),
            Outcome::Permanent(error) => {
                self.metrics.failed.inc();
                tracing::error!(subject = %p.msg.subject, msg_id = %p.msg.msg_id, %error, "publish rejected permanently");
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(id, deadline)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(p) = self.in_flight.remove(&id) {
                self.retry(p, "timed out waiting for the ack");
            }
        }
    }

    fn retry(&mut self, p: Pending, error: &str) {
        self.metrics.retries.inc();
        // One line a second at most: a node failure makes thousands of these at once.
        if self
            .last_warning
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.last_warning = Some(Instant::now());
            tracing::warn!(msg_id = %p.msg.msg_id, attempt = p.attempts + 1, %error, "publish not acknowledged; retrying with the same Nats-Msg-Id");
        }
        let backoff = Duration::from_millis(50u64.saturating_mul(1 << p.attempts.min(6)))
            .min(self.options.max_backoff);
        self.retries.push_back(Retry {
            pending: Pending {
                msg: p.msg,
                attempts: p.attempts.saturating_add(1),
            },
            not_before: Instant::now() + backoff,
        });
    }

    fn outstanding(&self) -> usize {
        self.in_flight.len() + self.retries.len()
    }
}

/// Publish everything received on `rx` until it closes and all is acknowledged, or
/// until `abandon` is cancelled.
///
/// `prepare` turns a queued item into its message when it is taken for publishing, so a
/// caller can queue something smaller than an encoded message (the producer queues raw
/// datagrams): only the window, not the queue, then holds encoded payloads. An item for
/// which it returns `None` is counted as failed (the caller logs why).
///
/// With `options.fast` the messages go in fast-ingest batches; if the stream refuses them
/// (allow_batched off, or a server older than 2.14) the publisher says so once and goes
/// on with the per-message window, starting with what the batches had not confirmed.
pub async fn run_publisher<T: Send>(
    client: async_nats::Client,
    mut rx: mpsc::Receiver<T>,
    mut prepare: impl FnMut(T) -> Option<OutMessage> + Send,
    options: PublisherOptions,
    metrics: PublishMetrics,
    abandon: CancellationToken,
) {
    let mut first = Vec::new();
    if let Some(control) = options.fast.clone() {
        match crate::fast_publisher::run_fast(
            client.clone(),
            control,
            &mut rx,
            &mut prepare,
            &options,
            &metrics,
            &abandon,
        )
        .await
        {
            crate::fast_publisher::FastEnd::Done => return,
            crate::fast_publisher::FastEnd::NotEnabled(left) => {
                tracing::warn!(
                    unconfirmed = left.len(),
                    "the stream refuses fast-ingest batches (allow_batched off, or a server older than 2.14): publishing with the per-message window from now on"
                );
                first = left;
            }
        }
    }
    run_window(client, rx, prepare, first, options, metrics, abandon).await;
}

/// An item taken from the queue, as its message: records the queue's depth, and counts
/// an item `prepare` cannot turn into a message as failed.
pub(crate) fn take<T>(
    item: T,
    queued: usize,
    prepare: &mut impl FnMut(T) -> Option<OutMessage>,
    metrics: &PublishMetrics,
) -> Option<OutMessage> {
    metrics.queued.set(queued as i64);
    let msg = prepare(item);
    if msg.is_none() {
        metrics.failed.inc();
    }
    msg
}

/// Items a publisher takes from its queue in one turn before it looks at acks again.
pub(crate) const MAX_RUN: usize = 256;

/// One timer for a publisher's loop, moved only when its deadline changes: a fresh
/// `sleep` per turn would register and cancel a timer entry for every message.
pub(crate) struct Timer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    at: Option<Instant>,
}

impl Timer {
    pub(crate) fn new() -> Self {
        Timer {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            at: None,
        }
    }

    /// Fire at `at`; never when `None`.
    pub(crate) fn set(&mut self, at: Option<Instant>) {
        if at != self.at {
            self.at = at;
            if let Some(t) = at {
                self.sleep.as_mut().reset(t.into());
            }
        }
    }

    /// Resolves when the deadline is reached; pending for ever without one.
    pub(crate) async fn fired(&mut self) {
        if self.at.is_none() {
            return std::future::pending().await;
        }
        (&mut self.sleep).await;
        self.at = None;
    }
}

/// Count what was not published: `left` plus whatever is still queued.
pub(crate) async fn fail_rest<T>(rx: &mut mpsc::Receiver<T>, metrics: &PublishMetrics, left: u64) {
    rx.close();
    let mut left = left;
    while rx.try_recv().is_ok() {
        left += 1;
    }
    if left > 0 {
        metrics.failed.inc_by(left);
        tracing::error!(
            unacknowledged = left,
            "drain deadline passed: messages not confirmed by JetStream (counted as publish_failed)"
        );
    }
}

async fn run_window<T: Send>(
    client: async_nats::Client,
    mut rx: mpsc::Receiver<T>,
    mut prepare: impl FnMut(T) -> Option<OutMessage> + Send,
    first: Vec<OutMessage>,
    options: PublisherOptions,
    metrics: PublishMetrics,
    abandon: CancellationToken,
) {
    let inbox = client.new_inbox();
    let mut acks = match client.subscribe(format!("{inbox}.*")).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot subscribe to the ack inbox; nothing can be published");
            fail_rest(&mut rx, &metrics, first.len() as u64).await;
            return;
        }
    };
    let max_in_flight = options.max_in_flight.max(1);
    let now = Instant::now();
    let mut w = Window {
        client,
        abandon: abandon.clone(),
        inbox,
        options,
        metrics,
        next_id: 0,
        in_flight: HashMap::with_capacity(max_in_flight * 2),
        deadlines: VecDeque::with_capacity(max_in_flight * 2),
        retries: first
            .into_iter()
            .map(|msg| Retry {
                pending: Pending { msg, attempts: 0 },
                not_before: now,
            })
            .collect(),
        last_warning: None,
    };
    let mut input_open = true;
    let mut timer = Timer::new();

    loop {
        if !input_open && w.outstanding() == 0 {
            break;
        }
        let window_free = w.in_flight.len() < max_in_flight;
        if window_free
            && w.retries
                .front()
                .is_some_and(|r| r.not_before <= Instant::now())
        {
            if let Some(r) = w.retries.pop_front() {
                w.send(r.pending).await;
            }
            continue;
        }
        let next_deadline = w.deadlines.front().map(|&(_, d)| d);
        let next_retry = w
            .retries
            .front()
            .map(|r| r.not_before)
            .filter(|_| window_free);
        timer.set(match (next_deadline, next_retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        });
        tokio::select! {
            biased;
            _ = abandon.cancelled() => break,
            ack = acks.next() => {
                let Some(ack) = ack else {
                    tracing::error!("ack subscription closed");
                    break;
                };
                if let Some(id) = ack.subject.rsplit('.').next().and_then(|t| t.parse().ok()) {
                    w.acked(id, ack.status, &ack.payload);
                }
            }
            _ = timer.fired() => w.expire(Instant::now()),
            next = rx.recv(), if input_open && window_free && w.retries.is_empty() => {
                match next {
                    Some(item) => {
                        if let Some(msg) = take(item, rx.len(), &mut prepare, &w.metrics) {
                            w.send(Pending { msg, attempts: 0 }).await;
                        }
                        // The rest of what is queued, within the window, in this turn.
                        for _ in 1..MAX_RUN {
                            if w.in_flight.len() >= max_in_flight || !w.retries.is_empty() {
                                break;
                            }
                            let Ok(item) = rx.try_recv() else { break };
                            if let Some(msg) = take(item, rx.len(), &mut prepare, &w.metrics) {
                                w.send(Pending { msg, attempts: 0 }).await;
                            }
                        }
                    }
                    None => input_open = false,
                }
            }
        }
    }

    // Only reached with work left when the drain deadline passed (or acks stopped).
    fail_rest(&mut rx, &w.metrics, w.outstanding() as u64).await;
    let _ = acks.unsubscribe().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_timer_fires_at_its_deadline_again_after_a_reset_and_never_without_one() {
        let mut timer = Timer::new();
        let never = tokio::time::timeout(Duration::from_millis(30), timer.fired()).await;
        assert!(never.is_err(), "no deadline: must not fire");
        let at = Instant::now() + Duration::from_millis(10);
        timer.set(Some(at));
        tokio::time::timeout(Duration::from_secs(5), timer.fired())
            .await
            .expect("fires at its deadline");
        assert!(Instant::now() >= at);
        // The same deadline once more (a loop that recomputes it) fires again at once.
        timer.set(Some(at));
        tokio::time::timeout(Duration::from_secs(5), timer.fired())
            .await
            .expect("a past deadline fires at once");
        // A later deadline replaces an earlier one that has not fired.
        timer.set(Some(Instant::now() + Duration::from_millis(5)));
        let later = Instant::now() + Duration::from_millis(60);
        timer.set(Some(later));
        tokio::time::timeout(Duration::from_secs(5), timer.fired())
            .await
            .expect("fires at the later deadline");
        assert!(Instant::now() >= later);
        timer.set(None);
        let never = tokio::time::timeout(Duration::from_millis(30), timer.fired()).await;
        assert!(never.is_err(), "deadline cleared: must not fire");
    }

    #[test]
    fn ack_outcomes() {
        assert!(matches!(
            outcome(None, br#"{"stream":"TSPI","seq":7}"#),
            Outcome::Stored { duplicate: false }
        ));
        assert!(matches!(
            outcome(None, br#"{"stream":"TSPI","seq":7,"duplicate":true}"#),
            Outcome::Stored { duplicate: true }
        ));
        assert!(matches!(
            outcome(None, br#"{"error":{"code":503,"err_code":10077,"description":"JetStream system temporarily unavailable"}}"#),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            outcome(None, br#"{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}"#),
            Outcome::Permanent(_)
        ));
        assert!(matches!(
            outcome(None, br#"{"error":{"code":409,"err_code":10071,"description":"duplicate message id is in process"}}"#),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            outcome(Some(StatusCode::NO_RESPONDERS), b""),
            Outcome::Retry(_)
        ));
        assert!(matches!(outcome(None, b"\xff"), Outcome::Retry(_)));
    }
}
