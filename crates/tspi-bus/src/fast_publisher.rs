//! The fast-ingest publisher: drives [`crate::fast::FastBatch`] over one connection.
//!
//! Batches are long-lived: messages go into the current batch as they come, within its
//! flow window, and the batch ends with an end-of-batch (not stored) once the input has
//! been idle for [`IDLE_COMMIT`] or its oldest unconfirmed message has waited
//! [`MAX_UNCONFIRMED_AGE`] (flow acks come only every `flow` messages: at a low rate the
//! tail would otherwise wait seconds). Every reply of one connection arrives on a single
//! `<inbox>.>` subscription; replies of a batch that is over are ignored.
//!
//! When a batch ends without confirming everything (gap, error, unknown batch after a
//! restart, time-out, 429) the rest is sent again, first and in order, in a new batch
//! with the same `Nats-Msg-Id`s. When the stream refuses fast batches, what is not
//! confirmed is handed back for the per-message window publisher.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, StatusCode, Subject};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::fast::{classify, Ended, FastBatch};
use crate::publisher::{take, OutMessage, PublishMetrics, PublisherOptions, Timer, MAX_RUN};

/// Input idle this long ends the batch, so the tail of a burst is confirmed.
pub const IDLE_COMMIT: Duration = Duration::from_millis(5);
/// A batch whose oldest unconfirmed message waited this long is ended (and a new one
/// started): bounds the confirmation latency at low rates.
pub const MAX_UNCONFIRMED_AGE: Duration = Duration::from_millis(250);
/// The most a client asks the server to let through between flow acks (its own cap is
/// 500): smaller flows confirm sooner at a few more acks.
const MAX_FLOW: usize = 500;
/// Flow windows a batch may have unconfirmed at once.
const OUTSTANDING_ACKS: u16 = 2;

/// How the fast publisher stopped.
pub(crate) enum FastEnd {
    /// Input closed and everything confirmed, or abandoned (what was left is counted).
    Done,
    /// The stream does not take fast batches: these (in order) are not confirmed yet.
    NotEnabled(Vec<OutMessage>),
}

struct Sent {
    msg: OutMessage,
    sent_at: Instant,
}

struct Fast<'a> {
    client: async_nats::Client,
    inbox: String,
    /// Unique per publisher: the server keys batches on the token `<unique>-<n>`.
    unique: String,
    metrics: &'a PublishMetrics,
    options: &'a PublisherOptions,
    flow: u16,
    batch_no: u64,
    batch: Option<FastBatch<Sent>>,
    /// Where end of batch and pings go: a subject of the stream that carries no data.
    control: Subject,
    last_send: Instant,
    /// Last reply of the current batch (or its start).
    last_reply: Instant,
    last_ping: Instant,
    /// To send again, ahead of new input.
    resend: VecDeque<OutMessage>,
    not_before: Option<Instant>,
    failures: u32,
    last_warning: Option<Instant>,
}

impl Fast<'_> {
    fn batch_id(&self) -> String {
        format!("{}.{}-{}", self.inbox, self.unique, self.batch_no)
    }

    async fn send(&mut self, msg: OutMessage, abandon: &CancellationToken) {
        if self.batch.is_none() {
            self.batch_no += 1;
            self.metrics.batches.inc();
            self.batch = Some(FastBatch::new(
                &self.batch_id(),
                self.flow,
                OUTSTANDING_ACKS,
            ));
            self.last_reply = Instant::now();
        }
        let Some(batch) = self.batch.as_mut() else {
            return;
        };
        let (reply, seq) = batch.next_reply();
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg.msg_id.as_str());
        let publish = self.client.publish_with_reply_and_headers(
            msg.subject.clone(),
            Subject::from(reply),
            headers,
            msg.payload.clone(),
        );
        let sent = tokio::select! {
            r = publish => r,
            _ = abandon.cancelled() => {
                self.resend.push_front(msg);
                return;
            }
        };
        let now = Instant::now();
        self.last_send = now;
        batch.record_sent(seq, Sent { msg, sent_at: now });
        if let Err(e) = sent {
            self.restart(&format!("publish failed: {e}"), true);
        }
    }

    /// End of batch (or a ping), on the control subject.
    async fn control(&mut self, commit: bool) {
        let subject = self.control.clone();
        let Some(batch) = self.batch.as_mut() else {
            return;
        };
        let reply = if commit {
            batch.commit_reply()
        } else {
            batch.ping_reply()
        };
        let Some(reply) = reply else { return };
        if !commit {
            self.last_ping = Instant::now();
        }
        if let Err(e) = self
            .client
            .publish_with_reply(subject, Subject::from(reply), Bytes::new())
            .await
        {
            self.restart(&format!("publish failed: {e}"), true);
        }
    }

    /// End the current batch: what it did not confirm goes again, first.
    fn restart(&mut self, reason: &str, backoff: bool) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        let again = batch.into_unconfirmed();
        if !again.is_empty() {
            self.metrics.retries.inc_by(again.len() as u64);
            if self
                .last_warning
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                self.last_warning = Some(Instant::now());
                tracing::warn!(
                    batch = self.batch_no,
                    again = again.len(),
                    %reason,
                    "fast batch ended early; sending the unconfirmed messages again in a new batch with the same Nats-Msg-Id"
                );
            }
        }
        for s in again.into_iter().rev() {
            self.resend.push_front(s.msg);
        }
        if backoff {
            self.failures = self.failures.saturating_add(1);
            let delay = Duration::from_millis(50u64.saturating_mul(1 << self.failures.min(6)))
                .min(self.options.max_backoff);
            self.not_before = Some(Instant::now() + delay);
        }
    }

    /// A reply for batch `no`; `Some` when the stream refuses fast batches.
    fn reply(&mut self, no: u64, status: Option<StatusCode>, payload: &[u8]) -> Option<()> {
        if no != self.batch_no {
            return None;
        }
        let batch = self.batch.as_mut()?;
        self.last_reply = Instant::now();
        if status == Some(StatusCode::NO_RESPONDERS) {
            self.restart(
                "no stream answered (stream missing or leader election in progress)",
                true,
            );
            return None;
        }
        let out = batch.on_reply(classify(payload));
        for (s, duplicate) in &out.confirmed {
            self.metrics.published.inc();
            if *duplicate {
                self.metrics.duplicates.inc();
            }
            self.metrics
                .ack_latency
                .observe(s.msg.received.elapsed().as_secs_f64());
        }
        if !out.confirmed.is_empty() {
            self.failures = 0;
        }
        for (s, error) in out.failed {
            self.metrics.failed.inc();
            tracing::error!(subject = %s.msg.subject, msg_id = %s.msg.msg_id, %error, "publish rejected permanently");
        }
        match out.ended? {
            Ended::Committed => {
                self.batch = None;
                None
            }
            Ended::NotEnabled => Some(()),
            Ended::Restart { reason, backoff } => {
                self.restart(&reason, backoff);
                None
            }
        }
    }

    fn oldest_unconfirmed(&self) -> Option<Instant> {
        self.batch.as_ref()?.first_unconfirmed().map(|s| s.sent_at)
    }

    fn can_send(&self) -> bool {
        self.not_before.is_none_or(|t| t <= Instant::now())
            && self.batch.as_ref().is_none_or(|b| b.can_send())
    }

    /// When the loop must look again without a reply or input: end of batch, ping,
    /// time-out, back-off.
    fn wake_at(&self, input_waiting: bool) -> Option<Instant> {
        let mut at: Option<Instant> = self.not_before;
        let mut earliest = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        if let Some(batch) = &self.batch {
            if batch.can_commit() {
                if !input_waiting {
                    earliest(self.last_send + IDLE_COMMIT);
                }
                if let Some(oldest) = self.oldest_unconfirmed() {
                    earliest(oldest + MAX_UNCONFIRMED_AGE);
                }
            }
            if batch.unconfirmed_len() > 0 {
                let ping_every = self.options.publish_timeout / 3;
                earliest(self.last_reply.max(self.last_ping) + ping_every);
            }
            if batch.awaits_reply() {
                earliest(self.last_reply + self.options.publish_timeout);
            }
        }
        at
    }

    /// What is due at `now`.
    async fn due(&mut self, now: Instant, input_waiting: bool) {
        if self.not_before.is_some_and(|t| t <= now) {
            self.not_before = None;
        }
        let Some(batch) = &self.batch else { return };
        let unconfirmed = batch.unconfirmed_len() > 0;
        // An end of batch whose answer was lost (a restart) would hold the batch for ever.
        if batch.awaits_reply() && self.last_reply + self.options.publish_timeout <= now {
            self.restart("timed out waiting for the batch's acks", true);
            return;
        }
        if batch.can_commit() {
            let idle = !input_waiting && self.last_send + IDLE_COMMIT <= now;
            let old = self
                .oldest_unconfirmed()
                .is_some_and(|t| t + MAX_UNCONFIRMED_AGE <= now);
            if idle || old {
                self.control(true).await;
                return;
            }
        }
        if unconfirmed
            && self.last_reply.max(self.last_ping) + self.options.publish_timeout / 3 <= now
        {
            self.control(false).await;
        }
    }

    fn outstanding(&self) -> usize {
        self.resend.len() + self.batch.as_ref().map_or(0, |b| b.unconfirmed_len())
    }

    /// Everything not confirmed, in order, for another publisher.
    fn take_unconfirmed(&mut self) -> Vec<OutMessage> {
        let mut left: Vec<OutMessage> = self
            .batch
            .take()
            .map(|b| b.into_unconfirmed().into_iter().map(|s| s.msg).collect())
            .unwrap_or_default();
        left.extend(self.resend.drain(..));
        left
    }
}

/// The batch number of a reply subject `<inbox>.<unique>-<n>.…`.
fn batch_of(subject: &str, inbox: &str, unique: &str) -> Option<u64> {
    let rest = subject.strip_prefix(inbox)?.strip_prefix('.')?;
    let token = rest.split('.').next()?;
    token.strip_prefix(unique)?.strip_prefix('-')?.parse().ok()
}

/// Publish with fast-ingest batches until the input closes and everything is confirmed,
/// `abandon` fires, or the stream turns out not to take fast batches.
pub(crate) async fn run_fast<T: Send>(
    client: async_nats::Client,
    control: Subject,
    rx: &mut mpsc::Receiver<T>,
    prepare: &mut (impl FnMut(T) -> Option<OutMessage> + Send),
    options: &PublisherOptions,
    metrics: &PublishMetrics,
    abandon: &CancellationToken,
) -> FastEnd {
    let inbox = client.new_inbox();
    let unique = inbox.rsplit('.').next().unwrap_or("b").to_owned();
    let mut replies = match client.subscribe(format!("{inbox}.>")).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot subscribe to the batch reply inbox; nothing can be published");
            crate::publisher::fail_rest(rx, metrics, 0).await;
            return FastEnd::Done;
        }
    };
    let now = Instant::now();
    let mut f = Fast {
        client,
        inbox,
        unique,
        metrics,
        options,
        flow: u16::try_from(
            (options.max_in_flight / usize::from(OUTSTANDING_ACKS)).clamp(1, MAX_FLOW),
        )
        .unwrap_or(1),
        batch_no: 0,
        batch: None,
        control,
        last_send: now,
        last_reply: now,
        last_ping: now,
        resend: VecDeque::new(),
        not_before: None,
        failures: 0,
        last_warning: None,
    };
    let mut input_open = true;
    let mut end = FastEnd::Done;
    let mut timer = Timer::new();
    loop {
        if !input_open && f.outstanding() == 0 {
            break;
        }
        if f.can_send() {
            if let Some(msg) = f.resend.pop_front() {
                f.send(msg, abandon).await;
                continue;
            }
        }
        let input_waiting = !rx.is_empty();
        timer.set(f.wake_at(input_waiting));
        let taking = input_open && f.resend.is_empty() && f.can_send();
        tokio::select! {
            biased;
            _ = abandon.cancelled() => break,
            reply = replies.next() => {
                let Some(reply) = reply else {
                    tracing::error!("batch reply subscription closed");
                    break;
                };
                if let Some(no) = batch_of(&reply.subject, &f.inbox, &f.unique) {
                    if f.reply(no, reply.status, &reply.payload).is_some() {
                        end = FastEnd::NotEnabled(f.take_unconfirmed());
                        break;
                    }
                }
            }
            _ = timer.fired() => f.due(Instant::now(), !rx.is_empty()).await,
            next = rx.recv(), if taking => match next {
                Some(item) => {
                    if let Some(msg) = take(item, rx.len(), prepare, metrics) {
                        f.send(msg, abandon).await;
                    }
                    // What else is queued goes in the same turn, as far as the flow
                    // window allows: one wake-up and one timer update for a run of
                    // datagrams, not one each.
                    for _ in 1..MAX_RUN {
                        if !f.can_send() || !f.resend.is_empty() {
                            break;
                        }
                        let Ok(item) = rx.try_recv() else { break };
                        if let Some(msg) = take(item, rx.len(), prepare, metrics) {
                            f.send(msg, abandon).await;
                        }
                    }
                }
                None => input_open = false,
            },
        }
    }
    let _ = replies.unsubscribe().await;
    if let FastEnd::Done = end {
        let left = f.outstanding();
        crate::publisher::fail_rest(rx, metrics, left as u64).await;
    }
    end
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_matched_to_their_batch() {
        let inbox = "_INBOX.abc";
        assert_eq!(
            batch_of("_INBOX.abc.abc-7.500.fail.12.1.$FI", inbox, "abc"),
            Some(7)
        );
        assert_eq!(
            batch_of("_INBOX.abc.xyz-7.500.fail.12.1.$FI", inbox, "abc"),
            None
        );
        assert_eq!(batch_of("_INBOX.abcd.abc-7.500", inbox, "abc"), None);
        assert_eq!(batch_of("_INBOX.abc.abc-x.1", inbox, "abc"), None);
        assert_eq!(batch_of("", inbox, "abc"), None);
    }
}
