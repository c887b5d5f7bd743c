//! An alarm transition as it goes on the bus (SPEC §3, "Alarms", made by the alarmer,
//! `tspi-alarms`): raised, level changed,
//! cleared, acknowledged, shelved, unshelved — each a CBOR map on
//! `tspi.alarm.event.<rule>.<key>`, captured by `TSPI`, so the archive keeps it and a
//! replay shows it when it happened. The last message of a subject is the alarm's state.

use serde::{Deserialize, Serialize};

/// Severity, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Watch,
    Warning,
    Critical,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Watch, Level::Warning, Level::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Watch => "watch",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    Limit,
    Geofence,
    Stale,
    Separation,
    Impact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Raised,
    Level,
    Cleared,
    Acknowledged,
    Shelved,
    Unshelved,
}

/// One transition of one alarm, and the alarm's state after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmEvent {
    /// `<rule>/<key>`: the key is the sensor id, or `<a>-<b>` for a pair.
    pub id: String,
    pub rule: String,
    pub kind: RuleKind,
    pub sensors: Vec<u16>,
    pub event: EventKind,
    /// The level in force after the event; `None` once cleared.
    pub level: Option<Level>,
    pub active: bool,
    /// The value that decided (altitude, speed, distance, seconds silent …) and the
    /// threshold it crossed, in `unit`.
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub unit: String,
    /// When: the sample's receive time (the operator's action's time for acknowledge and
    /// shelve), ms since the epoch, and as RFC 3339.
    pub at_ms: i64,
    pub at: String,
    pub acknowledged: bool,
    /// Who acknowledged or shelved it.
    pub operator: Option<String>,
    /// Shelved (hidden from the operators' list, still evaluated) until then.
    pub shelved_until_ms: Option<i64>,
    /// The alarm's transition count: with the id, the message id on the bus.
    pub seq: u64,
    /// One line for a person.
    pub text: String,
}

/// The subject prefix every alarm transition goes under.
pub const EVENT_PREFIX: &str = "tspi.alarm.event";
/// What the `TSPI` stream captures for alarms.
pub const STREAM_SUBJECT: &str = "tspi.alarm.>";
/// Requests to the evaluator (acknowledge, shelve, list, rules): not on any stream.
pub const CONTROL_SUBJECT: &str = "alarms.ctrl";

/// A request on [`CONTROL_SUBJECT`] (SPEC §3 "Alarms"): built by the console and the web
/// display, read by the alarmer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum AlarmRequest {
    /// The active and shelved alarms.
    List,
    /// The rule set, as displays draw it.
    Rules,
    Ack {
        id: String,
        operator: String,
    },
    Shelve {
        id: String,
        operator: String,
        /// Seconds (default 3600).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<f64>,
    },
    Unshelve {
        id: String,
        operator: String,
    },
}

impl AlarmRequest {
    /// Its `op`, as sent.
    pub fn op(&self) -> &'static str {
        match self {
            AlarmRequest::List => "list",
            AlarmRequest::Rules => "rules",
            AlarmRequest::Ack { .. } => "ack",
            AlarmRequest::Shelve { .. } => "shelve",
            AlarmRequest::Unshelve { .. } => "unshelve",
        }
    }

    /// An operator's action on alarm `id` by its op's name (`ack`, `shelve`,
    /// `unshelve`), as a display's page asks for it; `None` for any other name.
    pub fn action(op: &str, id: String, operator: String, seconds: Option<f64>) -> Option<Self> {
        match op {
            "ack" => Some(AlarmRequest::Ack { id, operator }),
            "shelve" => Some(AlarmRequest::Shelve {
                id,
                operator,
                seconds,
            }),
            "unshelve" => Some(AlarmRequest::Unshelve { id, operator }),
            _ => None,
        }
    }
}

impl AlarmEvent {
    /// `tspi.alarm.event.<rule>.<key>` (rule names are subject-safe by validation).
    pub fn subject(&self) -> String {
        let key = self.id.rsplit_once('/').map_or("", |(_, k)| k);
        format!("{EVENT_PREFIX}.{}.{key}", self.rule)
    }

    /// The message id: a transition published again (a redelivery after a crash) is
    /// stored once.
    pub fn msg_id(&self) -> String {
        format!("alarm:{}:{}", self.id, self.seq)
    }

    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        // Writing into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    /// From bytes off the bus: an error, never a panic.
    pub fn from_cbor(bytes: &[u8]) -> Result<AlarmEvent, String> {
        let e: AlarmEvent =
            ciborium::from_reader(bytes).map_err(|e| format!("not an alarm event: {e}"))?;
        if e.id.len() > 256 || e.text.len() > 4096 || e.sensors.len() > 2 {
            return Err("not an alarm event: fields out of range".into());
        }
        Ok(e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_its_subject() {
        let e = AlarmEvent {
            id: "floor/10001".into(),
            rule: "floor".into(),
            kind: RuleKind::Limit,
            sensors: vec![10001],
            event: EventKind::Raised,
            level: Some(Level::Warning),
            active: true,
            value: Some(1990.0),
            threshold: Some(2000.0),
            unit: "m".into(),
            at_ms: 1_759_057_200_000,
            at: "2025-09-28T11:00:00.000Z".into(),
            acknowledged: false,
            operator: None,
            shelved_until_ms: None,
            seq: 1,
            text: "x".into(),
        };
        assert_eq!(AlarmEvent::from_cbor(&e.to_cbor()).unwrap(), e);
        assert_eq!(e.subject(), "tspi.alarm.event.floor.10001");
        assert_eq!(e.msg_id(), "alarm:floor/10001:1");
        assert!(AlarmEvent::from_cbor(b"\xff\x00").is_err());
        assert!(Level::Critical > Level::Warning && Level::Warning > Level::Watch);
    }

    #[test]
    fn alarm_requests_round_trip_and_spec_names_every_op() {
        let all = [
            AlarmRequest::List,
            AlarmRequest::Rules,
            AlarmRequest::action("ack", "r/1".into(), "ops".into(), None).unwrap(),
            AlarmRequest::action("shelve", "r/1".into(), "ops".into(), Some(60.0)).unwrap(),
            AlarmRequest::action("unshelve", "r/1".into(), "ops".into(), None).unwrap(),
        ];
        assert!(AlarmRequest::action("fly", "r/1".into(), "ops".into(), None).is_none());
        let spec = include_str!("../../../docs/SPEC.md");
        for r in all {
            let v = serde_json::to_value(&r).unwrap();
            assert_eq!(v["op"], r.op(), "{v}");
            assert_eq!(serde_json::from_value::<AlarmRequest>(v).unwrap(), r);
            let op = r.op();
            assert!(
                spec.contains(&format!("{{\"op\":\"{op}\""))
                    || spec.contains(&format!("|\"{op}\"")),
                "SPEC §3 does not show the alarmer's {op:?} request"
            );
        }
        // An operator's action with a field it does not know is refused, not half-done.
        let extra = r#"{"op":"shelve","id":"r/1","operator":"ops","secs":60}"#;
        assert!(serde_json::from_str::<AlarmRequest>(extra).is_err());
    }
}
