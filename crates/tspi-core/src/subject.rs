//! Subjects and message ids (SPEC §3): `<prefix>.<type>.<sensor_id>` and
//! `<sensor_id>:<day>:<time_s with 4 decimals>`.

use std::fmt::Write as _;

use thiserror::Error;

use crate::datagram::{Datagram, MessageKind, TICKS_PER_SECOND};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubjectError {
    #[error("subject prefix is empty")]
    Empty,
    #[error("subject prefix {prefix:?} has an empty token")]
    EmptyToken { prefix: String },
    #[error("subject prefix {prefix:?} contains {ch:?}; use letters, digits, '-', '_' and '.' between tokens")]
    BadCharacter { prefix: String, ch: char },
}

/// A validated subject prefix (default `tspi`): dot-separated, non-empty tokens with no
/// wildcards or whitespace, so every subject built from it is a literal subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamPrefix(String);

impl Default for StreamPrefix {
    fn default() -> Self {
        StreamPrefix("tspi".to_owned())
    }
}

impl StreamPrefix {
    pub fn new(prefix: &str) -> Result<Self, SubjectError> {
        if prefix.is_empty() {
            return Err(SubjectError::Empty);
        }
        for token in prefix.split('.') {
            if token.is_empty() {
                return Err(SubjectError::EmptyToken {
                    prefix: prefix.to_owned(),
                });
            }
            if let Some(ch) = token
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(SubjectError::BadCharacter {
                    prefix: prefix.to_owned(),
                    ch,
                });
            }
        }
        Ok(StreamPrefix(prefix.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<prefix>.<type>.<sensor_id>`.
    pub fn subject(&self, kind: MessageKind, sensor_id: u16) -> String {
        let mut s = String::with_capacity(self.0.len() + 18);
        self.write_subject(&mut s, kind, sensor_id);
        s
    }

    /// Appends the subject to `out`, for callers that reuse a buffer.
    pub fn write_subject(&self, out: &mut String, kind: MessageKind, sensor_id: u16) {
        // Writing to a String cannot fail.
        let _ = write!(out, "{}.{}.{}", self.0, kind.as_str(), sensor_id);
    }

    /// `<prefix>.batch`: where fast-ingest publishers send their end-of-batch and ping
    /// messages. A subject of the `TSPI` stream that carries no data (those messages are
    /// never stored), kept off the telemetry subjects so that plain subscribers to
    /// telemetry see telemetry only.
    pub fn batch_control_subject(&self) -> String {
        format!("{}.batch", self.0)
    }

    /// Wildcard subjects covering every telemetry message under this prefix.
    pub fn telemetry_wildcards(&self) -> [String; 2] {
        [
            format!("{}.geocentric.>", self.0),
            format!("{}.spherical.>", self.0),
        ]
    }
}

impl std::str::FromStr for StreamPrefix {
    type Err = SubjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamPrefix::new(s)
    }
}

impl std::fmt::Display for StreamPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `Nats-Msg-Id` of a datagram: `<sensor_id>:<day>:<seconds>.<4 decimals>`, built from
/// the integer ticks so it is exact (no float formatting involved).
pub fn msg_id(d: &Datagram) -> String {
    let mut s = String::with_capacity(24);
    write_msg_id(&mut s, d.sensor_id, d.day, d.time_ticks);
    s
}

/// Appends the message id for the given header fields to `out`.
pub fn write_msg_id(out: &mut String, sensor_id: u16, day: u16, time_ticks: u32) {
    // Digit by digit: once per datagram, where the formatting machinery costs more.
    push_decimal(out, u32::from(sensor_id), 1);
    out.push(':');
    push_decimal(out, u32::from(day), 1);
    out.push(':');
    push_decimal(out, time_ticks / TICKS_PER_SECOND, 1);
    out.push('.');
    push_decimal(out, time_ticks % TICKS_PER_SECOND, 4);
}

/// `v` in decimal, zero-padded to at least `width` digits.
fn push_decimal(out: &mut String, mut v: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut n = 0;
    while v > 0 || n < width.max(1) {
        digits[9 - n] = b'0' + (v % 10) as u8;
        v /= 10;
        n += 1;
        if n == digits.len() {
            break;
        }
    }
    for &d in &digits[10 - n..] {
        out.push(char::from(d));
    }
}

/// Whether a NATS subject filter (`*` one token, `>` the rest) takes a subject.
pub fn filter_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn msg_ids_match_their_formatted_form() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut cases = vec![
            (0u16, 0u16, 0u32),
            (u16::MAX, u16::MAX, u32::MAX),
            (7, 1, 9_999),
        ];
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            cases.push((state as u16, (state >> 16) as u16, (state >> 32) as u32));
        }
        for (sensor, day, ticks) in cases {
            let mut fast = String::new();
            write_msg_id(&mut fast, sensor, day, ticks);
            let formatted = format!(
                "{}:{}:{}.{:04}",
                sensor,
                day,
                ticks / TICKS_PER_SECOND,
                ticks % TICKS_PER_SECOND
            );
            assert_eq!(fast, formatted);
        }
    }

    #[test]
    fn prefix_validation() {
        assert!(StreamPrefix::new("tspi").is_ok());
        assert!(StreamPrefix::new("range-2.tspi").is_ok());
        assert_eq!(StreamPrefix::new(""), Err(SubjectError::Empty));
        assert!(matches!(
            StreamPrefix::new("a..b"),
            Err(SubjectError::EmptyToken { .. })
        ));
        assert!(matches!(
            StreamPrefix::new("tspi.>"),
            Err(SubjectError::BadCharacter { ch: '>', .. })
        ));
        assert!(matches!(
            StreamPrefix::new("ts pi"),
            Err(SubjectError::BadCharacter { ch: ' ', .. })
        ));
        assert!(matches!(
            StreamPrefix::new("a.*"),
            Err(SubjectError::BadCharacter { ch: '*', .. })
        ));
    }

    #[test]
    fn msg_id_is_exact() {
        let mut s = String::new();
        write_msg_id(&mut s, 65535, 366, 863_999_999);
        assert_eq!(s, "65535:366:86399.9999");
        s.clear();
        write_msg_id(&mut s, 1, 1, 5);
        assert_eq!(s, "1:1:0.0005");
    }

    #[test]
    fn filters_take_what_nats_would() {
        assert!(filter_matches("tspi.alarm.>", "tspi.alarm.event.floor.1"));
        assert!(!filter_matches("tspi.alarm.>", "tspi.alarm"));
        assert!(filter_matches("tspi.*.1", "tspi.geocentric.1"));
        assert!(!filter_matches("tspi.*.1", "tspi.geocentric.1.x"));
        assert!(filter_matches("tspi.batch", "tspi.batch"));
        assert!(!filter_matches("tspi.batch", "tspi.batches"));
        assert!(filter_matches(">", "a"));
        assert!(!filter_matches("a.b", "a"));
    }
}
