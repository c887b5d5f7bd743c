//! Operator tags (SPEC §3): annotations tied to a moment, on `tags.create|update|delete`
//! and `tags.broadcast`.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The subjects tags travel on.
pub const TAG_SUBJECTS: [&str; 4] = [
    "tags.create",
    "tags.update",
    "tags.delete",
    "tags.broadcast",
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TagError {
    #[error("not a CBOR tag map: {0}")]
    NotCbor(String),
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{field} {value:?} is not an RFC 3339 time")]
    BadTime { field: &'static str, value: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagStatus {
    Active,
    Deleted,
}

impl TagStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TagStatus::Active => "active",
            TagStatus::Deleted => "deleted",
        }
    }
}

/// One tag state. `ts` is the tagged moment; `updated_ts` orders the states of one id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    pub id: String,
    pub ts: String,
    pub label: String,
    pub status: TagStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    pub updated_ts: String,
    /// Free form; whatever CBOR the sender wrote converts (see [`crate::json`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::deserialize_free_form"
    )]
    pub extra: Option<serde_json::Value>,
}

impl Tag {
    pub fn check(&self) -> Result<(), TagError> {
        if self.id.trim().is_empty() {
            return Err(TagError::Empty("tag id"));
        }
        if self.status == TagStatus::Active && self.label.trim().is_empty() {
            return Err(TagError::Empty("tag comment"));
        }
        for (field, value) in [("ts", &self.ts), ("updated_ts", &self.updated_ts)] {
            if crate::rfc3339::parse_epoch_ms(value).is_none() {
                return Err(TagError::BadTime {
                    field,
                    value: value.clone(),
                });
            }
        }
        Ok(())
    }

    /// `Nats-Msg-Id`: the id for a create, `<id>:<updated_ts>` for later states (SPEC §3).
    pub fn msg_id(&self, subject: &str) -> String {
        if subject == "tags.create" {
            self.id.clone()
        } else {
            format!("{}:{}", self.id, self.updated_ts)
        }
    }

    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        // Writing into a Vec cannot fail for these plain types.
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    /// Decode and validate untrusted bytes.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, TagError> {
        // Through the JSON form: a time written as a CBOR date/time tag reads as its text.
        Self::from_json(crate::json::cbor_to_json(bytes).map_err(TagError::NotCbor)?)
    }

    /// Decode and validate the JSON form of a tag ([`crate::json::cbor_to_json`]).
    pub fn from_json(value: serde_json::Value) -> Result<Self, TagError> {
        let tag: Tag =
            serde_json::from_value(value).map_err(|e| TagError::NotCbor(e.to_string()))?;
        tag.check()?;
        Ok(tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag() -> Tag {
        Tag {
            id: "0b7e1c3a-4f7d-4a55-9a1e-2b7f3d9c8e01".into(),
            ts: "2025-09-28T11:00:05.000Z".into(),
            label: "break left".into(),
            status: TagStatus::Active,
            creator: Some("ops1".into()),
            notes: None,
            updated_ts: "2025-09-28T11:00:06.000Z".into(),
            extra: Some(serde_json::json!({"lane": 2})),
        }
    }

    #[test]
    fn round_trips() {
        let t = tag();
        assert_eq!(Tag::from_cbor(&t.to_cbor()).unwrap(), t);
    }

    #[test]
    fn msg_ids_follow_the_spec() {
        let t = tag();
        assert_eq!(t.msg_id("tags.create"), t.id);
        assert_eq!(
            t.msg_id("tags.update"),
            format!("{}:2025-09-28T11:00:06.000Z", t.id)
        );
    }

    #[test]
    fn refuses_empty_comment_and_bad_times() {
        let mut t = tag();
        t.label = " ".into();
        assert_eq!(t.check(), Err(TagError::Empty("tag comment")));
        t.status = TagStatus::Deleted;
        assert_eq!(t.check(), Ok(()));
        let mut t = tag();
        t.ts = "noon".into();
        assert!(matches!(
            t.check(),
            Err(TagError::BadTime { field: "ts", .. })
        ));
        assert!(matches!(
            Tag::from_cbor(b"\x01\x02"),
            Err(TagError::NotCbor(_))
        ));
    }

    #[test]
    fn times_as_cbor_date_tags_are_read() {
        // A JavaScript Date is tag 1 (epoch seconds), a Python datetime tag 0 (text).
        use ciborium::Value as V;
        let text = |s: &str| V::Text(s.into());
        let map = V::Map(vec![
            (text("id"), text("t-js")),
            (text("ts"), V::Tag(1, Box::new(V::Float(1_759_057_205.25)))),
            (text("label"), text("break left")),
            (text("status"), text("active")),
            (
                text("updated_ts"),
                V::Tag(0, Box::new(text("2025-09-28T11:00:06+00:00"))),
            ),
            (
                text("extra"),
                V::Map(vec![(
                    text("at"),
                    V::Tag(1, Box::new(V::Integer(0.into()))),
                )]),
            ),
        ]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&map, &mut bytes).unwrap();
        let t = Tag::from_cbor(&bytes).unwrap();
        assert_eq!(t.ts, "2025-09-28T11:00:05.250Z");
        assert_eq!(t.updated_ts, "2025-09-28T11:00:06+00:00");
        assert_eq!(
            t.extra,
            Some(serde_json::json!({"at": "1970-01-01T00:00:00.000Z"}))
        );
    }
}
