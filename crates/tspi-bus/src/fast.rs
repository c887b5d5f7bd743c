//! Fast-ingest batch publishing (ADR-50; nats-server ≥ 2.14, stream `allow_batched`):
//! the protocol state of one batch, without I/O.
//!
//! A fast batch replaces per-message acks with cumulative flow acks: every message of a
//! batch carries the reply subject `<batch id>.<flow>.fail.<seq>.<op>.$FI`, the server
//! stores each as it comes and acknowledges every `flow` messages with
//! `{"type":"ack","seq":S,"msgs":M}` (all up to batch sequence S are stored; ack every M
//! from now on). Gap mode `fail`: a missing sequence ends the batch, and the terminal
//! publish ack's `count` is the last batch sequence stored. The rules this module keeps:
//! - a message counts as published only when a flow ack or the terminal ack covers its
//!   batch sequence;
//! - when a batch ends any other way (gap, error, unknown batch after a restart, time-out)
//!   the messages not covered are sent again, with their `Nats-Msg-Id`, in a new batch:
//!   the stream's duplicate window makes that idempotent;
//! - no more than `flow × max_outstanding_acks` messages are unconfirmed at once.
//!
//! References: ADR-50, nats-server `server/stream.go` (`getFastBatch`,
//! `processJetStreamFastBatchMsg`) and `server/jetstream_batching.go`
//! (`fastBatchCommit`, `checkFlowControl`).

use std::collections::VecDeque;

use serde::Deserialize;

/// The operation token of a fast-batch reply subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Start = 0,
    Append = 1,
    /// End of batch: the message is not stored, the batch is committed.
    CommitEob = 3,
    /// Asks the server to send the latest flow ack again (or report a gap).
    Ping = 4,
}

/// Error codes the server gives fast batches (nats-server `errors.json`).
pub mod codes {
    /// The stream does not have `allow_batched`.
    pub const NOT_ENABLED: u64 = 10205;
    pub const INVALID_PATTERN: u64 = 10206;
    pub const INVALID_BATCH_ID: u64 = 10207;
    /// The server does not know the batch (restarted, new leader, timed out).
    pub const UNKNOWN_BATCH_ID: u64 = 10208;
    pub const TOO_MANY_INFLIGHT: u64 = 10211;
}

/// Whether a message seen on a stream subject by a plain subscriber is a fast batch's end
/// of batch or ping (empty, not stored in the stream): not data, to be passed over.
pub fn is_batch_control(reply: Option<&str>) -> bool {
    let Some(rest) = reply.and_then(|r| r.strip_suffix(".$FI")) else {
        return false;
    };
    matches!(
        rest.rsplit('.').next(),
        Some(op) if op == (Op::CommitEob as u8).to_string() || op == (Op::Ping as u8).to_string()
    )
}

/// An API error as the server sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub err_code: u64,
    #[serde(default)]
    pub description: String,
}

impl ApiError {
    /// 4xx other than 408/409 refuses the message itself: sending it again cannot help.
    pub fn is_permanent(&self) -> bool {
        (400..500).contains(&self.code) && self.code != 408 && self.code != 409
    }
}

/// What arrived on a batch's reply subject.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Every message up to batch sequence `seq` is stored; ack every `msgs` from now.
    FlowAck {
        seq: u64,
        msgs: u16,
    },
    /// The server expected `expected` and got `got`: the batch ends (gap mode fail).
    Gap {
        expected: u64,
        got: u64,
    },
    /// Message `seq` was refused; the batch ends.
    MessageError {
        seq: u64,
        error: ApiError,
    },
    /// The batch is over: everything up to batch sequence `count` is stored.
    Terminal {
        count: u64,
        duplicate: bool,
    },
    /// The batch was refused or ended with an error (`count` when the server said).
    Refused {
        error: ApiError,
    },
    /// An ordinary publish ack: the server stored the message but knows nothing of fast
    /// batches (older than 2.14). Only the start can get one: it is sent alone.
    PlainAck {
        duplicate: bool,
    },
    Unreadable(String),
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: Option<String>,
    seq: Option<u64>,
    msgs: Option<u16>,
    last_seq: Option<u64>,
    error: Option<ApiError>,
    count: Option<u64>,
    stream: Option<String>,
    #[serde(default)]
    duplicate: bool,
}

/// Classify one reply payload. Untrusted bytes: anything unexpected is `Unreadable`.
pub fn classify(payload: &[u8]) -> Reply {
    let wire: Wire = match serde_json::from_slice(payload) {
        Ok(w) => w,
        Err(e) => return Reply::Unreadable(e.to_string()),
    };
    match (wire.kind.as_deref(), wire.error) {
        (Some("ack"), _) => Reply::FlowAck {
            seq: wire.seq.unwrap_or(0),
            msgs: wire.msgs.unwrap_or(1).max(1),
        },
        (Some("gap"), _) => Reply::Gap {
            expected: wire.last_seq.unwrap_or(0),
            got: wire.seq.unwrap_or(0),
        },
        (Some("err"), Some(error)) => Reply::MessageError {
            seq: wire.seq.unwrap_or(0),
            error,
        },
        (Some(other), _) => Reply::Unreadable(format!("unknown reply type {other:?}")),
        (None, Some(error)) => Reply::Refused { error },
        (None, None) => match wire.count {
            Some(count) => Reply::Terminal {
                count,
                duplicate: wire.duplicate,
            },
            None if wire.stream.is_some() => Reply::PlainAck {
                duplicate: wire.duplicate,
            },
            None => Reply::Unreadable("a publish ack without a batch count".into()),
        },
    }
}

/// How a batch ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// End of batch acknowledged: everything it sent is stored.
    Committed,
    /// The stream refuses fast batches: publish another way.
    NotEnabled,
    /// Start a new batch, after `backoff` when the server asked for patience.
    Restart { reason: String, backoff: bool },
}

/// What the caller must do after a reply.
#[derive(Debug, PartialEq)]
pub struct Outcome<M> {
    /// Stored (the flag: the terminal ack said the only message was a duplicate).
    pub confirmed: Vec<(M, bool)>,
    /// Refused for good, with the reason.
    pub failed: Vec<(M, String)>,
    /// The batch is over; its unconfirmed messages are in [`FastBatch::into_unconfirmed`].
    pub ended: Option<Ended>,
}

impl<M> Default for Outcome<M> {
    fn default() -> Self {
        Outcome {
            confirmed: Vec::new(),
            failed: Vec::new(),
            ended: None,
        }
    }
}

/// One fast batch: its id, flow window and the messages it sent that are not confirmed.
#[derive(Debug)]
pub struct FastBatch<M> {
    reply_prefix: String,
    /// Batch sequence of the last message sent (0: none yet).
    sent: u64,
    /// Highest batch sequence confirmed.
    acked: u64,
    flow: u16,
    max_outstanding_acks: u16,
    /// The server answered the first message (flow ack 0): more may follow.
    started: bool,
    /// Sent, not yet confirmed, by batch sequence.
    unconfirmed: VecDeque<(u64, M)>,
    /// A gap or a refused message was reported: send nothing more, wait for the end.
    failing: bool,
    /// Batch sequences the server refused for good.
    refused: Vec<(u64, String)>,
    /// End of batch sent.
    committing: bool,
}

impl<M> FastBatch<M> {
    /// `id` is the reply prefix; its last token is the batch id the server keys on, which
    /// must be unique on the stream (across clients) and at most 64 characters.
    pub fn new(id: &str, flow: u16, max_outstanding_acks: u16) -> Self {
        let flow = flow.max(1);
        FastBatch {
            reply_prefix: format!("{id}.{flow}.fail."),
            sent: 0,
            acked: 0,
            flow,
            max_outstanding_acks: max_outstanding_acks.clamp(1, 3),
            started: false,
            unconfirmed: VecDeque::new(),
            failing: false,
            refused: Vec::new(),
            committing: false,
        }
    }

    /// Whether another message may go now: the first reply is in, no failure or commit
    /// is under way, and the flow window has room.
    pub fn can_send(&self) -> bool {
        let window = u64::from(self.flow) * u64::from(self.max_outstanding_acks);
        !self.failing
            && !self.committing
            && (self.sent == 0 || self.started)
            && self.sent + 1 < self.acked.saturating_add(window).max(2)
    }

    /// The reply subject for the next message, and its batch sequence; the caller sends
    /// it and then calls [`FastBatch::sent`].
    pub fn next_reply(&self) -> (String, u64) {
        let seq = self.sent + 1;
        let op = if seq == 1 { Op::Start } else { Op::Append };
        (self.reply(seq, op), seq)
    }

    pub fn record_sent(&mut self, seq: u64, message: M) {
        self.sent = seq;
        self.unconfirmed.push_back((seq, message));
    }

    /// The end-of-batch reply subject (its message is not stored); `None` when nothing
    /// was sent or the batch is already ending.
    pub fn commit_reply(&mut self) -> Option<String> {
        if self.sent == 0 || self.committing || self.failing {
            return None;
        }
        self.committing = true;
        Some(self.reply(self.sent + 1, Op::CommitEob))
    }

    /// A ping for the latest flow ack, with the last sequence sent.
    pub fn ping_reply(&self) -> Option<String> {
        (self.sent > 0).then(|| self.reply(self.sent, Op::Ping))
    }

    fn reply(&self, seq: u64, op: Op) -> String {
        // Once per message: built without the formatting machinery.
        let mut digits = itoa::Buffer::new();
        let seq = digits.format(seq);
        let mut s = String::with_capacity(self.reply_prefix.len() + seq.len() + 6);
        s.push_str(&self.reply_prefix);
        s.push_str(seq);
        s.push('.');
        s.push(char::from(b'0' + op as u8));
        s.push_str(".$FI");
        s
    }

    /// Whether an end of batch may go now (something sent, not failing or ending).
    pub fn can_commit(&self) -> bool {
        self.sent > 0 && !self.committing && !self.failing
    }

    /// Whether the batch waits on the server: messages not confirmed, or its end of batch
    /// not answered yet.
    pub fn awaits_reply(&self) -> bool {
        !self.unconfirmed.is_empty() || self.committing
    }

    /// The oldest message not confirmed.
    pub fn first_unconfirmed(&self) -> Option<&M> {
        self.unconfirmed.front().map(|(_, m)| m)
    }

    pub fn unconfirmed_len(&self) -> usize {
        self.unconfirmed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent == 0
    }

    /// The messages not confirmed, in order, for a new batch (or another publisher).
    pub fn into_unconfirmed(self) -> Vec<M> {
        self.unconfirmed.into_iter().map(|(_, m)| m).collect()
    }

    fn confirm_through(&mut self, seq: u64, out: &mut Outcome<M>, duplicate: bool) {
        while self.unconfirmed.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((s, m)) = self.unconfirmed.pop_front() {
                match self.refused.iter().position(|(r, _)| *r == s) {
                    Some(i) => out.failed.push((m, self.refused.swap_remove(i).1)),
                    None => out.confirmed.push((m, duplicate)),
                }
            }
        }
        self.acked = self.acked.max(seq);
    }

    /// Take a reply into account.
    pub fn on_reply(&mut self, reply: Reply) -> Outcome<M> {
        let mut out = Outcome::default();
        match reply {
            Reply::FlowAck { seq, msgs } => {
                self.started = true;
                self.flow = msgs.max(1);
                self.confirm_through(seq, &mut out, false);
            }
            Reply::Gap { expected, got } => {
                // The terminal ack follows with what was stored.
                self.failing = true;
                tracing::debug!(expected, got, "fast batch gap");
            }
            Reply::MessageError { seq, error } => {
                self.failing = true;
                if error.is_permanent() {
                    self.refused.push((
                        seq,
                        format!("JetStream error {}: {}", error.code, error.description),
                    ));
                }
            }
            Reply::Terminal { count, duplicate } => {
                self.confirm_through(count, &mut out, duplicate && count == 1);
                // A refused message the server did not count as stored is failed, not
                // sent again.
                let refused = std::mem::take(&mut self.refused);
                let mut keep = VecDeque::new();
                for (s, m) in std::mem::take(&mut self.unconfirmed) {
                    match refused.iter().find(|(r, _)| *r == s) {
                        Some((_, why)) => out.failed.push((m, why.clone())),
                        None => keep.push_back((s, m)),
                    }
                }
                self.unconfirmed = keep;
                out.ended = Some(if self.unconfirmed.is_empty() && self.committing {
                    Ended::Committed
                } else {
                    Ended::Restart {
                        reason: format!("batch ended at {count} of {} sent", self.sent),
                        backoff: false,
                    }
                });
            }
            Reply::Refused { error } => {
                out.ended = Some(match error.err_code {
                    codes::NOT_ENABLED => Ended::NotEnabled,
                    codes::TOO_MANY_INFLIGHT => Ended::Restart {
                        reason: error.description,
                        backoff: true,
                    },
                    _ if self.sent == 1
                        && error.is_permanent()
                        && error.err_code != codes::UNKNOWN_BATCH_ID
                        && error.err_code != codes::INVALID_PATTERN
                        && error.err_code != codes::INVALID_BATCH_ID =>
                    {
                        // The first message itself was refused (too large, …).
                        if let Some((_, m)) = self.unconfirmed.pop_front() {
                            out.failed.push((
                                m,
                                format!("JetStream error {}: {}", error.code, error.description),
                            ));
                        }
                        Ended::Restart {
                            reason: error.description,
                            backoff: false,
                        }
                    }
                    _ => Ended::Restart {
                        reason: format!(
                            "JetStream error {}: {}",
                            error.err_code, error.description
                        ),
                        backoff: true,
                    },
                });
            }
            Reply::PlainAck { duplicate } => {
                if self.sent == 1 {
                    self.confirm_through(1, &mut out, duplicate);
                }
                out.ended = Some(Ended::NotEnabled);
            }
            Reply::Unreadable(why) => {
                tracing::debug!(%why, "unreadable fast batch reply");
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn send_all(b: &mut FastBatch<u32>, upto: u32) -> Vec<String> {
        let mut replies = Vec::new();
        let mut i = 0;
        while b.can_send() && i < upto {
            let (reply, seq) = b.next_reply();
            // Message n is batch sequence n + 1.
            b.record_sent(seq, u32::try_from(seq - 1).unwrap());
            replies.push(reply);
            i += 1;
        }
        replies
    }

    #[test]
    fn replies_parse_and_garbage_is_unreadable() {
        assert_eq!(
            classify(br#"{"type":"ack","seq":100,"msgs":50}"#),
            Reply::FlowAck { seq: 100, msgs: 50 }
        );
        assert_eq!(
            classify(br#"{"type":"gap","last_seq":10,"seq":12}"#),
            Reply::Gap {
                expected: 10,
                got: 12
            }
        );
        assert!(matches!(
            classify(br#"{"type":"err","seq":7,"error":{"code":400,"err_code":10054,"description":"too big"}}"#),
            Reply::MessageError { seq: 7, .. }
        ));
        assert_eq!(
            classify(br#"{"stream":"TSPI","seq":901,"batch":"b","count":300}"#),
            Reply::Terminal {
                count: 300,
                duplicate: false
            }
        );
        assert_eq!(
            classify(br#"{"stream":"TSPI","seq":5,"duplicate": true,"batch":"b","count":1}"#),
            Reply::Terminal {
                count: 1,
                duplicate: true
            }
        );
        assert!(matches!(
            classify(br#"{"error":{"code":400,"err_code":10205,"description":"batch publish is disabled"}}"#),
            Reply::Refused { error } if error.err_code == codes::NOT_ENABLED
        ));
        assert_eq!(
            classify(br#"{"stream":"TSPI","seq":5}"#),
            Reply::PlainAck { duplicate: false }
        );
        for bad in [&b"\xff"[..], b"[]", b"{}", br#"{"type":"zap"}"#, b"null"] {
            assert!(matches!(classify(bad), Reply::Unreadable(_)), "{bad:?}");
        }
    }

    #[test]
    fn end_of_batch_and_pings_are_told_from_data() {
        let mut b = FastBatch::<u32>::new("_INBOX.abc.x-1", 100, 2);
        let (start, _) = b.next_reply();
        b.record_sent(1, 0);
        let (append, _) = b.next_reply();
        let ping = b.ping_reply().unwrap();
        let commit = b.commit_reply().unwrap();
        assert!(is_batch_control(Some(&ping)) && is_batch_control(Some(&commit)));
        for data in [
            Some(start.as_str()),
            Some(append.as_str()),
            Some("_INBOX.a.3"),
            None,
        ] {
            assert!(!is_batch_control(data), "{data:?}");
        }
    }

    #[test]
    fn reply_subjects_follow_the_server_parser() {
        let mut b = FastBatch::<u32>::new("_INBOX.abc.7", 100, 2);
        assert_eq!(b.next_reply(), ("_INBOX.abc.7.100.fail.1.0.$FI".into(), 1));
        b.record_sent(1, 0);
        assert_eq!(b.next_reply().0, "_INBOX.abc.7.100.fail.2.1.$FI");
        assert_eq!(b.ping_reply().unwrap(), "_INBOX.abc.7.100.fail.1.4.$FI");
        assert_eq!(b.commit_reply().unwrap(), "_INBOX.abc.7.100.fail.2.3.$FI");
        assert!(b.commit_reply().is_none(), "one end of batch");
    }

    #[test]
    fn the_first_message_waits_for_the_batch_to_be_accepted_then_the_window_rules() {
        let mut b = FastBatch::new("b.1", 10, 2);
        assert_eq!(
            send_all(&mut b, 100).len(),
            1,
            "only the start before its reply"
        );
        let out = b.on_reply(Reply::FlowAck { seq: 0, msgs: 10 });
        assert!(out.confirmed.is_empty());
        // 20 unconfirmed at most: sequences 2..=19 now.
        assert_eq!(send_all(&mut b, 100).len(), 18);
        assert!(!b.can_send());
        let out = b.on_reply(Reply::FlowAck { seq: 10, msgs: 10 });
        assert_eq!(
            out.confirmed.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
            (0..10).collect::<Vec<u32>>()
        );
        assert_eq!(send_all(&mut b, 100).len(), 10);
    }

    #[test]
    fn end_of_batch_confirms_the_tail_and_nothing_is_left() {
        let mut b = FastBatch::new("b.1", 100, 2);
        send_all(&mut b, 1);
        b.on_reply(Reply::FlowAck { seq: 0, msgs: 100 });
        send_all(&mut b, 36);
        assert!(b.commit_reply().is_some());
        assert!(!b.can_send());
        let out = b.on_reply(Reply::Terminal {
            count: 37,
            duplicate: false,
        });
        assert_eq!(out.confirmed.len(), 37);
        assert_eq!(out.ended, Some(Ended::Committed));
        assert_eq!(b.unconfirmed_len(), 0);
    }

    #[test]
    fn a_batch_all_confirmed_still_awaits_the_answer_to_its_end() {
        let mut b = FastBatch::new("b.1", 10, 2);
        send_all(&mut b, 1);
        b.on_reply(Reply::FlowAck { seq: 0, msgs: 10 });
        send_all(&mut b, 9);
        b.on_reply(Reply::FlowAck { seq: 10, msgs: 10 });
        assert_eq!(b.unconfirmed_len(), 0);
        assert!(!b.awaits_reply(), "nothing asked of the server");
        assert!(b.commit_reply().is_some());
        assert!(
            b.awaits_reply(),
            "a lost answer to the end of batch must time out, not hold the batch"
        );
    }

    #[test]
    fn a_gap_ends_the_batch_and_what_was_not_stored_goes_again() {
        let mut b = FastBatch::new("b.1", 10, 3);
        send_all(&mut b, 1);
        b.on_reply(Reply::FlowAck { seq: 0, msgs: 10 });
        send_all(&mut b, 25);
        b.on_reply(Reply::FlowAck { seq: 10, msgs: 10 });
        let out = b.on_reply(Reply::Gap {
            expected: 15,
            got: 17,
        });
        assert!(out.ended.is_none() && !b.can_send());
        let out = b.on_reply(Reply::Terminal {
            count: 15,
            duplicate: false,
        });
        assert_eq!(out.confirmed.len(), 5, "11..=15");
        assert!(matches!(out.ended, Some(Ended::Restart { .. })));
        assert_eq!(b.into_unconfirmed(), (15..26).collect::<Vec<u32>>());
    }

    #[test]
    fn a_refused_message_fails_alone_and_the_rest_goes_again() {
        let mut b = FastBatch::new("b.1", 10, 3);
        send_all(&mut b, 1);
        b.on_reply(Reply::FlowAck { seq: 0, msgs: 10 });
        send_all(&mut b, 7);
        let error = ApiError {
            code: 400,
            err_code: 10054,
            description: "message size exceeds maximum allowed".into(),
        };
        b.on_reply(Reply::MessageError { seq: 5, error });
        let out = b.on_reply(Reply::Terminal {
            count: 4,
            duplicate: false,
        });
        assert_eq!(out.confirmed.len(), 4);
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].0, 4, "batch sequence 5 is message 4");
        assert_eq!(b.into_unconfirmed(), vec![5, 6, 7]);
    }

    #[test]
    fn a_duplicate_first_message_ends_the_batch_at_once() {
        let mut b = FastBatch::new("b.1", 10, 2);
        send_all(&mut b, 5);
        let out = b.on_reply(Reply::Terminal {
            count: 1,
            duplicate: true,
        });
        assert_eq!(out.confirmed, vec![(0, true)]);
        assert!(matches!(out.ended, Some(Ended::Restart { .. })));
        assert!(b.into_unconfirmed().is_empty(), "only the start had gone");
    }

    #[test]
    fn a_server_without_fast_batches_stores_the_start_and_is_told_apart() {
        let mut b = FastBatch::new("b.1", 10, 2);
        send_all(&mut b, 5);
        let out = b.on_reply(Reply::PlainAck { duplicate: false });
        assert_eq!(out.confirmed, vec![(0, false)]);
        assert_eq!(out.ended, Some(Ended::NotEnabled));
        assert!(b.into_unconfirmed().is_empty());
    }

    #[test]
    fn refusals_decide_between_fallback_backoff_and_retry() {
        let refused = |err_code, code| Reply::Refused {
            error: ApiError {
                code,
                err_code,
                description: "x".into(),
            },
        };
        let mut b = FastBatch::new("b.1", 10, 2);
        send_all(&mut b, 1);
        assert_eq!(
            b.on_reply(refused(codes::NOT_ENABLED, 400)).ended,
            Some(Ended::NotEnabled)
        );
        let mut b = FastBatch::new("b.2", 10, 2);
        send_all(&mut b, 1);
        let out = b.on_reply(refused(codes::UNKNOWN_BATCH_ID, 400));
        assert!(matches!(
            out.ended,
            Some(Ended::Restart { backoff: true, .. })
        ));
        assert_eq!(b.into_unconfirmed(), vec![0], "sent again in a new batch");
        let mut b = FastBatch::new("b.3", 10, 2);
        send_all(&mut b, 1);
        let out = b.on_reply(refused(10054, 400));
        assert_eq!(
            out.failed.len(),
            1,
            "a first message refused for itself fails"
        );
    }
}
