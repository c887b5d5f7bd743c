//! The alarmer (SPEC §5, issue 25): evaluates the rule file against every telemetry
//! record of `TSPI`, in stream order, and publishes each alarm transition on
//! `tspi.alarm.event.<rule>.<key>` — captured by `TSPI`, so it is archived with the data
//! and replayed with it. Operators acknowledge and shelve on `alarms.ctrl`.
//!
//! One evaluator, in one place: several displays, the console and the archive all see the
//! same transitions, and an acknowledgement is one event everyone gets. At start the
//! evaluator takes back each alarm's last transition from the stream (last per subject),
//! then its durable consumer resumes where it stopped; a transition is published (with a
//! message id of alarm and sequence, so one published again after a crash is stored once)
//! before the record that caused it is acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tspi_alarms::{
    AlarmEvent, Check, Evaluator, Level, RuleSet, Sample, CONTROL_SUBJECT, EVENT_PREFIX,
};
use tspi_core::alarm::AlarmRequest;
use tspi_core::{StreamPrefix, TelemetryRecord};
use tspi_display::Placement;

#[derive(Debug, Clone)]
pub struct AlarmerOptions {
    pub stream: String,
    pub prefix: StreamPrefix,
    pub durable: String,
    pub placement: Placement,
    /// How often silence and shelving are looked at.
    pub tick: Duration,
    pub ack_wait: Duration,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabel {
    pub level: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: String,
}

/// `tspi_alarmer_*`.
#[derive(Debug, Clone)]
pub struct AlarmerMetrics {
    pub messages: Counter,
    pub undecodable: Counter,
    /// Time spent evaluating (placing the record and running the rules), seconds: divided
    /// by `messages`, the evaluation cost per message.
    pub evaluation_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub transitions: Family<EventLabel, Counter>,
    pub active: Family<LevelLabel, Gauge>,
    pub publish_retries: Counter,
    pub requests: Counter,
}

impl AlarmerMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = AlarmerMetrics {
            messages: Counter::default(),
            undecodable: Counter::default(),
            evaluation_seconds: Counter::default(),
            transitions: Family::default(),
            active: Family::default(),
            publish_retries: Counter::default(),
            requests: Counter::default(),
        };
        registry.register(
            "messages_evaluated",
            "Telemetry records evaluated",
            m.messages.clone(),
        );
        registry.register(
            "messages_undecodable",
            "Messages on telemetry subjects that are not records (skipped, acknowledged)",
            m.undecodable.clone(),
        );
        registry.register(
            "evaluation_seconds",
            "Time spent placing records and evaluating the rules",
            m.evaluation_seconds.clone(),
        );
        // Every event at 0 from the start, so rate() and alerts see the series at once.
        for event in [
            "raised",
            "level",
            "cleared",
            "acknowledged",
            "shelved",
            "unshelved",
        ] {
            let _series = m.transitions.get_or_create(&EventLabel {
                event: event.into(),
            });
        }
        registry.register(
            "transitions",
            "Alarm transitions published, by event",
            m.transitions.clone(),
        );
        registry.register(
            "alarms_active",
            "Active alarms by severity (shelved ones included)",
            m.active.clone(),
        );
        registry.register(
            "publish_retries",
            "Alarm transitions published again after no confirmation",
            m.publish_retries.clone(),
        );
        registry.register(
            "requests",
            "Operator requests on alarms.ctrl",
            m.requests.clone(),
        );
        m
    }
}

/// Publish a transition and wait for JetStream to store it; again (same message id)
/// until it is, or `shutdown`.
async fn publish(
    js: &jetstream::Context,
    e: &AlarmEvent,
    metrics: &AlarmerMetrics,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(100);
    loop {
        let message = jetstream::message::PublishMessage::build()
            .payload(e.to_cbor().into())
            .message_id(e.msg_id());
        let result = match js.send_publish(e.subject(), message).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|x| x.to_string()),
            Err(x) => Err(x.to_string()),
        };
        match result {
            Ok(()) => {
                metrics
                    .transitions
                    .get_or_create(&EventLabel {
                        event: format!("{:?}", e.event).to_lowercase(),
                    })
                    .inc();
                return true;
            }
            Err(why) => {
                metrics.publish_retries.inc();
                tracing::warn!(error = %why, alarm = %e.id, "alarm transition not stored; trying again");
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The stream, once it exists (the producer creates it): waiting, said every 10 s. A
/// stream that does not capture alarm subjects is an error, not a wait: transitions
/// would go nowhere.
async fn wait_for_stream(
    js: &jetstream::Context,
    name: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<jetstream::stream::Stream>> {
    let mut said: Option<Instant> = None;
    loop {
        match js.get_stream(name).await {
            Ok(mut stream) => {
                let info = stream.info().await?;
                let probe = format!("{EVENT_PREFIX}.x.1");
                let captured = info
                    .config
                    .subjects
                    .iter()
                    .any(|f| tspi_core::subject::filter_matches(f, &probe));
                anyhow::ensure!(
                    captured,
                    "stream {name} does not capture {}: start this version's producer once                      (it updates the stream) or add the subject to it",
                    tspi_core::alarm::STREAM_SUBJECT
                );
                return Ok(Some(stream));
            }
            Err(e) => {
                if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    said = Some(Instant::now());
                    tracing::warn!(stream = name, error = %e, "waiting for the stream (the producer creates it)");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Each alarm's last transition from the stream.
async fn restore(stream: &jetstream::stream::Stream, ev: &mut Evaluator) -> anyhow::Result<usize> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{EVENT_PREFIX}.>"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?;
    let mut n = 0;
    while (n as u64) < pending {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), messages.next()).await
        else {
            break;
        };
        if let Ok(e) = AlarmEvent::from_cbor(&m.payload) {
            ev.restore(&e);
        }
        n += 1;
    }
    Ok(n)
}

fn now_ms() -> i64 {
    tspi_runtime::now_epoch_ms()
}

/// What the rule set looks like to a display: names, kinds, levels, polygons (to draw).
pub fn rules_json(rules: &RuleSet) -> Value {
    let list: Vec<Value> = rules
        .rules
        .iter()
        .map(|r| {
            let mut v = json!({"name": r.name, "kind": r.kind(), "sensors": r.sensors.patterns()});
            match &r.check {
                Check::Geofence {
                    polygon,
                    keep_inside,
                    level,
                }
                | Check::Impact {
                    polygon,
                    keep_inside,
                    level,
                } => {
                    v["polygon"] = json!(polygon.ring);
                    v["keep"] = json!(if *keep_inside { "inside" } else { "outside" });
                    v["level"] = json!(level);
                }
                Check::Limit {
                    field,
                    below,
                    above,
                } => {
                    v["field"] = json!(field.name());
                    v["below"] = json!(below);
                    v["above"] = json!(above);
                }
                Check::Stale { after_ms, level } => {
                    v["after_s"] = json!(*after_ms as f64 / 1000.0);
                    v["level"] = json!(level);
                }
                Check::Separation { below } => v["below"] = json!(below),
            }
            v
        })
        .collect();
    json!({"rules": list, "ground_alt_m": rules.ground_alt_m})
}

fn refresh_gauges(ev: &Evaluator, metrics: &AlarmerMetrics) {
    let active = ev.active();
    for l in Level::ALL {
        let n = active.iter().filter(|a| a.level == Some(l)).count();
        metrics
            .active
            .get_or_create(&LevelLabel {
                level: l.as_str().into(),
            })
            .set(n as i64);
    }
}

/// An operator's request: its reply, and the transition to publish first, if any.
fn answer(ev: &mut Evaluator, payload: &[u8]) -> (Option<AlarmEvent>, Value) {
    let request: Result<AlarmRequest, String> =
        if payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            serde_json::from_slice(payload).map_err(|e| e.to_string())
        } else {
            tspi_core::json::cbor_to_json(payload)
                .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
        };
    let operator_ok = |o: &str| !o.trim().is_empty() && o.len() <= 64;
    let result = match request {
        Err(e) => Err(format!("bad request: {e}")),
        Ok(AlarmRequest::List) => return (None, json!({"ok": true, "alarms": ev.active()})),
        Ok(AlarmRequest::Rules) => {
            let mut v = rules_json(ev.rules());
            v["ok"] = json!(true);
            return (None, v);
        }
        Ok(
            AlarmRequest::Ack { operator, .. }
            | AlarmRequest::Shelve { operator, .. }
            | AlarmRequest::Unshelve { operator, .. },
        ) if !operator_ok(&operator) => Err("an operator name (1-64 characters) is needed".into()),
        Ok(AlarmRequest::Ack { id, operator }) => ev.acknowledge(&id, operator.trim(), now_ms()),
        Ok(AlarmRequest::Shelve {
            id,
            operator,
            seconds,
        }) => {
            let s = seconds.unwrap_or(3600.0);
            if !(s.is_finite() && s > 0.0 && s <= 7.0 * 86_400.0) {
                Err("seconds must be more than 0 and at most a week".into())
            } else {
                ev.shelve(
                    &id,
                    operator.trim(),
                    Some(now_ms() + (s * 1000.0) as i64),
                    now_ms(),
                )
            }
        }
        Ok(AlarmRequest::Unshelve { id, operator }) => {
            ev.shelve(&id, operator.trim(), None, now_ms())
        }
    };
    match result {
        Ok(e) => {
            let reply = json!({"ok": true, "alarm": e});
            (Some(e), reply)
        }
        Err(e) => (None, json!({"ok": false, "error": e})),
    }
}

/// Evaluate until `shutdown`.
pub async fn run(
    options: AlarmerOptions,
    client: async_nats::Client,
    rules: Arc<RuleSet>,
    metrics: AlarmerMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    let mut ev = Evaluator::new(rules);
    let Some(stream) = wait_for_stream(&js, &options.stream, &shutdown).await? else {
        return Ok(());
    };
    let restored = restore(&stream, &mut ev).await?;
    tracing::info!(
        restored,
        active = ev.active().len(),
        "alarm states taken back from the stream"
    );
    let [geo, sph] = options.prefix.telemetry_wildcards();
    let consumer = stream
        .get_or_create_consumer(
            &options.durable,
            pull::Config {
                durable_name: Some(options.durable.clone()),
                name: Some(options.durable.clone()),
                deliver_policy: DeliverPolicy::New,
                ack_policy: AckPolicy::Explicit,
                ack_wait: options.ack_wait,
                filter_subjects: vec![geo, sph],
                max_ack_pending: 100_000,
                description: Some("tspi alarmer".into()),
                ..Default::default()
            },
        )
        .await?;
    let mut control = client.subscribe(CONTROL_SUBJECT).await?;
    let mut tick = tokio::time::interval(options.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events = Vec::new();
    // Silence is judged on the wall clock once the consumer has caught up; while it works
    // through a backlog (after a restart, an outage) on the newest receive time it has
    // evaluated, or every track would look silent until its records come.
    let mut behind = consumer.cached_info().num_pending > 0;
    let mut data_clock = i64::MIN;
    let mut undecodable_logged: Option<Instant> = None;
    refresh_gauges(&ev, &metrics);
    tracing::info!(stream = %options.stream, durable = %options.durable, "evaluating alarms");
    'connect: while !shutdown.is_cancelled() {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(1000)
            .heartbeat(Duration::from_secs(1))
            .expires(Duration::from_secs(5))
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull from the consumer; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break 'connect,
                _ = tick.tick() => {
                    let now = if behind { data_clock } else { now_ms() };
                    if now != i64::MIN {
                        ev.tick(now, &mut events);
                    }
                    for e in events.drain(..) {
                        if !publish(&js, &e, &metrics, &shutdown).await {
                            break 'connect;
                        }
                    }
                    refresh_gauges(&ev, &metrics);
                }
                request = control.next() => {
                    let Some(request) = request else { break 'connect };
                    metrics.requests.inc();
                    let (event, reply) = answer(&mut ev, &request.payload);
                    // The transition is stored before the operator hears it was done.
                    if let Some(e) = &event {
                        if !publish(&js, e, &metrics, &shutdown).await {
                            break 'connect;
                        }
                        tracing::info!(alarm = %e.id, event = ?e.event, operator = ?e.operator, "operator request");
                    }
                    if let Some(to) = request.reply {
                        let body = serde_json::to_vec(&reply).unwrap_or_default();
                        if let Err(e) = client.publish(to, body.into()).await {
                            tracing::warn!(error = %e, "reply not sent");
                        }
                    }
                }
                next = messages.next() => {
                    let msg = match next {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "pull stream reported an error; re-subscribing");
                            continue 'connect;
                        }
                        None => continue 'connect,
                    };
                    metrics.messages.inc();
                    if let Ok(info) = msg.info() {
                        behind = info.pending > 0;
                    }
                    match TelemetryRecord::from_cbor(&msg.payload) {
                        Ok(record) => {
                            data_clock = data_clock.max(record.recv_epoch_ms);
                            let started = Instant::now();
                            ev.sample(&Sample::from_record(&record, &options.placement), &mut events);
                            metrics.evaluation_seconds.inc_by(started.elapsed().as_secs_f64());
                        }
                        Err(e) => {
                            metrics.undecodable.inc();
                            if undecodable_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                                undecodable_logged = Some(Instant::now());
                                tracing::warn!(error = %e, subject = %msg.subject, "not a telemetry record; skipped");
                            }
                        }
                    }
                    let raised = !events.is_empty();
                    for e in events.drain(..) {
                        if !publish(&js, &e, &metrics, &shutdown).await {
                            break 'connect;
                        }
                    }
                    if raised {
                        refresh_gauges(&ev, &metrics);
                    }
                    // After the transitions it caused are stored.
                    if let Err(e) = msg.ack().await {
                        tracing::debug!(error = %e, "ack not sent; the record comes again");
                    }
                }
            }
        }
    }
    client.flush().await.ok();
    tracing::info!("alarmer stopped");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_and_answered() {
        let rules = Arc::new(
            RuleSet::parse("[[limit]]\nname = \"fast\"\nsensors = [\"*\"]\nfield = \"speed_mps\"\nabove = { warning = 10.0 }\n", None).unwrap(),
        );
        let mut ev = Evaluator::new(rules);
        let (e, r) = answer(&mut ev, br#"{"op":"list"}"#);
        assert!(e.is_none() && r["ok"] == true && r["alarms"].as_array().unwrap().is_empty());
        let (_, r) = answer(&mut ev, br#"{"op":"rules"}"#);
        assert_eq!(r["rules"][0]["name"], "fast");
        let (e, r) = answer(&mut ev, br#"{"op":"ack","id":"fast/1","operator":"ops"}"#);
        assert!(e.is_none() && r["ok"] == false, "{r}");
        let (_, r) = answer(&mut ev, br#"{"op":"ack","id":"fast/1","operator":" "}"#);
        assert!(r["error"].as_str().unwrap().contains("operator"), "{r}");
        let (_, r) = answer(&mut ev, br#"{"op":"fly"}"#);
        assert!(
            r["error"].as_str().unwrap().starts_with("bad request"),
            "{r}"
        );
        let (_, r) = answer(&mut ev, b"\xff\xfe");
        assert_eq!(r["ok"], false);
    }
}
