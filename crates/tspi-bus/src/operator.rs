//! What an operator publishes onto `TSPI` (SPEC §3): display commands and tags, validated
//! before anything is sent, each acknowledged by JetStream. The console and the web
//! display publish through here, so a tag from a browser is the same message as one from
//! `console tag`.

use async_nats::jetstream;
use serde::Serialize;
use thiserror::Error;
use tspi_core::{DisplayCommand, DisplaySetting, Tag, TagStatus};

#[derive(Debug, Error)]
pub enum OperatorError {
    #[error("{0}")]
    Command(#[from] tspi_core::CommandError),
    #[error("{0}")]
    Tag(#[from] tspi_core::TagError),
    #[error("--at {0:?} is not an RFC 3339 time")]
    BadTime(String),
    #[error("publishing {subject}: {reason}")]
    Publish { subject: String, reason: String },
    #[error("no stream stored {subject} (is the TSPI stream there?): {reason}")]
    NotStored { subject: String, reason: String },
}

/// A random (v4) UUID, for command and tag ids.
pub fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn now_rfc3339() -> String {
    tspi_core::rfc3339::format_utc_millis(tspi_runtime::now_epoch_ms())
}

/// What was stored for each message sent.
#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    pub subject: String,
    pub msg_id: String,
    pub stream: String,
    pub seq: u64,
    pub duplicate: bool,
}

async fn publish(
    js: &jetstream::Context,
    subject: String,
    msg_id: String,
    payload: Vec<u8>,
) -> Result<Sent, OperatorError> {
    let m = jetstream::message::PublishMessage::build()
        .payload(payload.into())
        .message_id(msg_id.clone());
    let ack = js
        .send_publish(subject.clone(), m)
        .await
        .map_err(|e| OperatorError::Publish {
            subject: subject.clone(),
            reason: e.to_string(),
        })?
        .await
        .map_err(|e| OperatorError::NotStored {
            subject: subject.clone(),
            reason: e.to_string(),
        })?;
    Ok(Sent {
        subject,
        msg_id,
        stream: ack.stream,
        seq: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// Validate and send a display command.
pub async fn send_command(
    js: &jetstream::Context,
    sender: &str,
    setting: DisplaySetting,
) -> Result<Sent, OperatorError> {
    let cmd = DisplayCommand::new(uuid_v4(), now_rfc3339(), sender.to_owned(), setting)?;
    publish(js, cmd.subject(), cmd.cmd_id.clone(), cmd.to_cbor()).await
}

/// Validate and send a tag of the moment `at` (now when `None`): `tags.create`
/// (archived, its id as the msg id) and `tags.broadcast` (what live viewers follow).
pub async fn send_tag(
    js: &jetstream::Context,
    comment: &str,
    at: Option<&str>,
    creator: &str,
    notes: Option<String>,
) -> Result<(Tag, Vec<Sent>), OperatorError> {
    let now = now_rfc3339();
    let ts = match at {
        Some(t) => {
            let ms = tspi_core::rfc3339::parse_epoch_ms(t)
                .ok_or_else(|| OperatorError::BadTime(t.to_owned()))?;
            tspi_core::rfc3339::format_utc_millis(ms)
        }
        None => now.clone(),
    };
    let tag = Tag {
        id: uuid_v4(),
        ts,
        label: comment.trim().to_owned(),
        status: TagStatus::Active,
        creator: Some(creator.to_owned()),
        notes,
        updated_ts: now,
        extra: None,
    };
    tag.check()?;
    let mut sent = Vec::new();
    for subject in ["tags.create", "tags.broadcast"] {
        let id = if subject == "tags.create" {
            tag.msg_id(subject)
        } else {
            format!("{}:broadcast", tag.msg_id("tags.update"))
        };
        sent.push(publish(js, subject.to_owned(), id, tag.to_cbor()).await?);
    }
    Ok((tag, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let a = uuid_v4();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, uuid_v4());
    }
}
