//! What the web display counts, under `tspi_player_web_*`: tabs, what they were sent,
//! what was thinned or dropped, and what was refused.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct WebMetrics {
    /// Tabs connected now.
    pub sessions: Gauge,
    pub sessions_opened: Counter,
    /// Tabs closed by the server: stalled (not reading), or too many requests.
    pub dropped_stalled: Counter,
    pub dropped_flood: Counter,
    pub refused_token: Counter,
    pub refused_origin: Counter,
    pub refused_limit: Counter,
    /// Connections closed on accept: the listener's connection cap was reached.
    pub refused_connections: Counter,
    pub updates_sent: Counter,
    /// Track updates superseded before a tab was sent them: by the per-track rate
    /// (`--web-rate`), or because the tab was not keeping up.
    pub thinned_rate: Counter,
    pub thinned_backlog: Counter,
    pub bytes_sent: Counter,
    pub requests: Counter,
    pub bad_requests: Counter,
    /// Livestream messages the display took in (one subscription for every tab).
    pub live_messages: Counter,
    /// Times the NATS client dropped live messages the display did not take in time.
    pub slow_consumer: Counter,
    /// Hub events a tab fell too far behind to receive (it then resynchronises).
    pub lagged: Counter,
    /// Messages skipped as malformed: live feed, `tspi.ops.ctrl`.
    pub invalid_messages: Counter,
}

impl WebMetrics {
    /// Fresh counters, registered in `registry` (`Registry::with_prefix("tspi_player_web")`).
    pub fn new(registry: &mut Registry) -> Self {
        let dropped = Family::<Reason, Counter>::default();
        let refused = Family::<Reason, Counter>::default();
        let thinned = Family::<Reason, Counter>::default();
        let get = |f: &Family<Reason, Counter>, reason: &'static str| {
            f.get_or_create(&Reason { reason }).clone()
        };
        let m = WebMetrics {
            dropped_stalled: get(&dropped, "stalled"),
            dropped_flood: get(&dropped, "flood"),
            refused_token: get(&refused, "token"),
            refused_origin: get(&refused, "origin"),
            refused_limit: get(&refused, "limit"),
            refused_connections: get(&refused, "connections"),
            thinned_rate: get(&thinned, "rate"),
            thinned_backlog: get(&thinned, "backlog"),
            ..Default::default()
        };
        registry.register("sessions", "Browser tabs connected now", m.sessions.clone());
        registry.register(
            "sessions_opened",
            "Browser tabs that connected",
            m.sessions_opened.clone(),
        );
        registry.register(
            "sessions_dropped",
            "Tabs the server closed, by reason (stalled: not reading; flood: too many requests)",
            dropped,
        );
        registry.register(
            "refused",
            "Connections, requests and WebSocket upgrades refused, by reason (token, origin, limit, connections)",
            refused,
        );
        registry.register(
            "updates_sent",
            "Track updates sent to tabs",
            m.updates_sent.clone(),
        );
        registry.register(
            "updates_thinned",
            "Track updates superseded before a tab was sent them, by reason (rate, backlog)",
            thinned,
        );
        registry.register(
            "sent_bytes",
            "WebSocket payload bytes sent to tabs",
            m.bytes_sent.clone(),
        );
        registry.register("requests", "Requests from tabs", m.requests.clone());
        registry.register(
            "bad_requests",
            "Requests from tabs refused as malformed or unknown",
            m.bad_requests.clone(),
        );
        registry.register(
            "invalid_messages",
            "Messages skipped as malformed (live feed and tspi.ops.ctrl)",
            m.invalid_messages.clone(),
        );
        registry.register(
            "live_messages",
            "Livestream messages taken in for all tabs",
            m.live_messages.clone(),
        );
        registry.register(
            "slow_consumer",
            "Times the NATS client dropped live messages because the display did not take them in time",
            m.slow_consumer.clone(),
        );
        registry.register(
            "lagged",
            "Hub events a tab was too far behind to receive (it resynchronised)",
            m.lagged.clone(),
        );
        m
    }
}
