//! The page's requests: checked, rate limited, and turned into session requests or into
//! what they ask of the bus (a tag), the alarmer (acknowledge, shelve) and the archive
//! (a timeline).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tspi_core::alarm::AlarmRequest;
use tspi_core::playout::ControlRequest;
use tspi_display::{Input, Request, SnapshotSpec};

use super::{now_ms, tag_json, Late, Tab};
use crate::web::protocol::{self, PageRequest, ServerMessage};

impl Tab {
    pub(super) fn refuse(&mut self, id: Option<u64>, error: String) {
        self.hub.metrics.bad_requests.inc();
        if self.limits.refused_too_often() {
            self.hub.metrics.dropped_flood.inc();
            self.closing = Some("too many bad requests");
            return;
        }
        self.push(protocol::reply(id, Err(error)));
    }

    pub(super) async fn request(&mut self, text: &str) {
        // Acknowledgements are flow control, not requests: not limited, not counted.
        let parsed = protocol::parse(text);
        if let Ok(PageRequest::Ack { seq }) = parsed {
            self.batches.acknowledged(seq, now_ms());
            return;
        }
        self.hub.metrics.requests.inc();
        if !self.limits.admit(Instant::now()) {
            let id = match &parsed {
                Ok(r) => r.id(),
                Err((id, _)) => *id,
            };
            return self.refuse(id, "too many requests: at most 20 a second".into());
        }
        let req = match parsed {
            Ok(r) => r,
            Err((id, e)) => return self.refuse(id, e),
        };
        let id = req.id();
        self.request_id = id;
        let now = now_ms();
        let request = match req {
            PageRequest::Seek { to, .. } => match tspi_core::rfc3339::parse_epoch_ms(&to) {
                Some(at_ms) => Request::Seek { at_ms },
                None => return self.refuse(id, format!("{to:?} is not an RFC 3339 time")),
            },
            PageRequest::Live { .. } => Request::Live,
            PageRequest::Pause { .. } => Request::Pause,
            PageRequest::Resume { .. } => Request::Resume,
            PageRequest::Speed { speed, .. } => Request::Speed(speed),
            PageRequest::Join { channel, .. } => Request::Join(channel),
            PageRequest::Tag {
                comment, at, notes, ..
            } => return self.tag(id, &comment, at, notes, now),
            PageRequest::Operator { name, .. } => {
                match protocol::clean_text(&name, protocol::MAX_OPERATOR) {
                    Ok(name) => {
                        self.session.set_operator(Some(name.clone()));
                        self.setup.operator = Some(name.clone());
                        self.heartbeat().await;
                        self.push(protocol::reply(id, Ok(json!({"operator": name}))));
                    }
                    Err(e) => self.refuse(id, format!("operator name {e}")),
                }
                return;
            }
            PageRequest::Trail { seconds, .. } => {
                if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
                    return self.refuse(id, "trail must be 0 to 3600 seconds".into());
                }
                let lookback = self.ctx.options.track_timeout.as_secs_f64().max(seconds);
                self.session.set_snapshot(Some(SnapshotSpec {
                    trail_s: seconds,
                    lookback_s: lookback,
                }));
                self.push(protocol::reply(id, Ok(json!({"trail_s": seconds}))));
                return;
            }
            PageRequest::Timeline {
                start,
                end,
                buckets,
                ..
            } => return self.timeline(id, start, end, buckets),
            PageRequest::Ack { .. } => return,
            PageRequest::Alarm {
                action,
                alarm,
                seconds,
                ..
            } => return self.alarm_request(id, &action, alarm, seconds),
        };
        let fx = self.session.handle(Input::Request(&request), now);
        self.apply(fx, None).await;
    }

    /// A tag at `at` (the cursor when absent), published as `console tag` publishes it.
    pub(super) fn tag(
        &mut self,
        id: Option<u64>,
        comment: &str,
        at: Option<String>,
        notes: Option<String>,
        now: i64,
    ) {
        let comment = match protocol::clean_text(comment, protocol::MAX_TEXT) {
            Ok(c) => c,
            Err(e) => return self.refuse(id, format!("a tag's comment {e}")),
        };
        let notes = match notes.map(|n| protocol::clean_text(&n, protocol::MAX_TEXT)) {
            Some(Err(e)) => return self.refuse(id, format!("a tag's notes {e}")),
            Some(Ok(n)) => Some(n),
            None => None,
        };
        let at = at.unwrap_or_else(|| {
            tspi_core::rfc3339::format_utc_millis(self.session.cursor().at(now))
        });
        let creator = self
            .setup
            .operator
            .clone()
            .or_else(|| self.ctx.options.operator.clone())
            .unwrap_or_else(|| self.setup.client_id.clone());
        let js = async_nats::jetstream::new(self.ctx.client.clone());
        let late = self.late_tx.clone();
        tokio::spawn(async move {
            let sent = tokio::time::timeout(
                Duration::from_secs(10),
                tspi_bus::operator::send_tag(&js, &comment, Some(&at), &creator, notes),
            )
            .await;
            let reply = match sent {
                Ok(Ok((tag, _))) => Ok(json!({"tag": tag_json(&tag)})),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the tag was not acknowledged within 10 s".into()),
            };
            let _ = late.send(Late::Send(protocol::reply(id, reply))).await;
        });
    }

    /// Acknowledge, shelve or unshelve an alarm as this tab's operator: the alarmer does it
    /// and publishes it, so every tab and the console see the same.
    pub(super) fn alarm_request(
        &mut self,
        id: Option<u64>,
        action: &str,
        alarm: String,
        seconds: Option<f64>,
    ) {
        if alarm.is_empty() || alarm.len() > 200 {
            return self.refuse(id, "alarm: an alarm id is needed".into());
        }
        let Some(operator) = self
            .setup
            .operator
            .clone()
            .or_else(|| self.ctx.options.operator.clone())
        else {
            return self.refuse(
                id,
                "an operator name is needed to acknowledge or shelve (the Operator field)".into(),
            );
        };
        let Some(body) = AlarmRequest::action(action, alarm, operator, seconds) else {
            return self.refuse(
                id,
                format!("alarm action {action:?} is not ack, shelve or unshelve"),
            );
        };
        let client = self.ctx.client.clone();
        let late = self.late_tx.clone();
        tokio::spawn(async move {
            let asked = tokio::time::timeout(
                Duration::from_secs(10),
                client.request(
                    tspi_core::alarm::CONTROL_SUBJECT,
                    serde_json::to_vec(&body).unwrap_or_default().into(),
                ),
            )
            .await;
            let reply = match asked {
                Ok(Ok(m)) => match serde_json::from_slice::<Value>(&m.payload) {
                    Ok(v) if v["ok"] == true => Ok(json!({"alarm": v["alarm"]})),
                    Ok(v) => Err(v["error"].as_str().unwrap_or("refused").to_owned()),
                    Err(_) => Err("the alarmer's reply is not JSON".into()),
                },
                Ok(Err(e)) => Err(format!("no alarmer answers: {e}")),
                Err(_) => Err("the alarmer did not answer within 10 s".into()),
            };
            let _ = late.send(Late::Send(protocol::reply(id, reply))).await;
        });
    }

    /// Coverage and tags of a span, from the archive (through the replayer).
    pub(super) fn timeline(
        &mut self,
        id: Option<u64>,
        start: String,
        end: String,
        buckets: Option<u32>,
    ) {
        let (Some(s), Some(e)) = (
            tspi_core::rfc3339::parse_epoch_ms(&start),
            tspi_core::rfc3339::parse_epoch_ms(&end),
        ) else {
            return self.refuse(id, "timeline needs RFC 3339 start and end".into());
        };
        if e <= s {
            return self.refuse(id, "timeline end must be after its start".into());
        }
        let client = self.ctx.client.clone();
        let room = format!("web-{}", self.setup.client_id);
        let late = self.late_tx.clone();
        let buckets = buckets.unwrap_or(300).clamp(1, 2_000);
        tokio::spawn(async move {
            let cov = crate::replayer_client::ask_replayer(
                &client,
                &room,
                &ControlRequest::Coverage {
                    start: start.clone(),
                    end: end.clone(),
                    buckets: Some(buckets),
                },
            )
            .await;
            let tags = crate::replayer_client::ask_replayer(
                &client,
                &room,
                &ControlRequest::Tags {
                    start,
                    end,
                    limit: None,
                },
            )
            .await;
            if cov["ok"] == true {
                let c = &cov["coverage"];
                let bucket_ms = c["bucket_s"].as_f64().unwrap_or(0.0) * 1000.0;
                let _ = late
                    .send(Late::Send(ServerMessage::Coverage {
                        start_ms: s,
                        end_ms: e,
                        bucket_ms,
                        counts: c["counts"].clone(),
                    }))
                    .await;
            }
            if let Some(list) = tags["tags"].as_array() {
                let tags: Vec<protocol::PageTag> = list
                    .iter()
                    .map(|t| {
                        protocol::tag(
                            t["id"].as_str().unwrap_or_default(),
                            t["label"].as_str().unwrap_or_default(),
                            t["ts"].as_str().unwrap_or_default(),
                            t["status"].as_str().unwrap_or_default(),
                            t["creator"].as_str(),
                        )
                    })
                    .collect();
                let _ = late
                    .send(Late::Send(ServerMessage::Tags { full: false, tags }))
                    .await;
            }
            let reply = if cov["ok"] == true {
                Ok(json!({}))
            } else {
                Err(format!(
                    "no archive answer: {}",
                    cov["error"].as_str().unwrap_or("unknown")
                ))
            };
            let _ = late.send(Late::Send(protocol::reply(id, reply))).await;
        });
    }
}
