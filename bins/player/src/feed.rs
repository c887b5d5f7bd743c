//! The feeds a player reads, as streams of [`Incoming`] messages, and their decoding:
//! the livestream (an ordered push consumer on `TSPI`, with the command state in force), a
//! group replay channel (a plain subscription: the server paces it) and a replayer room's
//! playout (a subscription; headers say which phase and segment each message is).

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::{Stream, StreamExt};
use tspi_core::playout::{self, Phase, SegmentMarker};
use tspi_core::{DisplayCommand, StreamPrefix, Tag, TelemetryRecord};
use tspi_display::{Content, Replayed};

/// One message from a feed: its original subject and bytes.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub subject: String,
    pub payload: bytes::Bytes,
    /// Playout headers; `None` live and in group replays.
    pub replayed: Option<Replayed>,
}

/// A message decoded by its subject.
#[derive(Debug, Clone)]
pub enum Decoded {
    Telemetry(TelemetryRecord),
    Command(DisplayCommand),
    Tag { subject: String, tag: Tag },
    Alarm(tspi_core::alarm::AlarmEvent),
    Marker(SegmentMarker),
    Invalid(String),
}

impl Decoded {
    pub fn new(subject: &str, payload: &[u8]) -> Decoded {
        if subject.starts_with(tspi_core::command::DISPLAY_COMMAND_PREFIX) {
            match DisplayCommand::from_cbor(payload) {
                Ok(c) => Decoded::Command(c),
                Err(e) => Decoded::Invalid(format!("command: {e}")),
            }
        } else if subject.starts_with("tags.") {
            match Tag::from_cbor(payload) {
                Ok(tag) => Decoded::Tag {
                    subject: subject.to_owned(),
                    tag,
                },
                Err(e) => Decoded::Invalid(format!("tag: {e}")),
            }
        } else if subject.starts_with(tspi_core::alarm::EVENT_PREFIX) {
            match tspi_core::alarm::AlarmEvent::from_cbor(payload) {
                Ok(a) => Decoded::Alarm(a),
                Err(e) => Decoded::Invalid(format!("alarm: {e}")),
            }
        } else if subject == playout::BEGIN_SUBJECT || subject == playout::READY_SUBJECT {
            match SegmentMarker::from_bytes(payload) {
                Ok(m) => Decoded::Marker(m),
                Err(e) => Decoded::Invalid(format!("playout marker: {e}")),
            }
        } else {
            match TelemetryRecord::from_cbor(payload) {
                Ok(r) => Decoded::Telemetry(r),
                Err(e) => Decoded::Invalid(format!("telemetry: {e}")),
            }
        }
    }

    pub fn content(&self) -> Content<'_> {
        match self {
            Decoded::Telemetry(r) => Content::Telemetry(r),
            Decoded::Command(c) => Content::Command(c),
            Decoded::Tag { subject, tag } => Content::Tag { subject, tag },
            Decoded::Alarm(a) => Content::Alarm(a),
            Decoded::Marker(m) => Content::Marker(m),
            Decoded::Invalid(_) => Content::Invalid,
        }
    }
}

/// Every display command the stream still holds, oldest first (they are few): the state
/// in force, read in order so an invalid last message on a subject cannot hide the valid
/// one before it.
pub async fn command_history(
    stream: &mut jetstream::stream::Stream,
) -> anyhow::Result<Vec<DisplayCommand>> {
    let history = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            filter_subject: format!("{}.>", tspi_core::command::DISPLAY_COMMAND_PREFIX),
            inactive_threshold: Duration::from_secs(10),
            ..Default::default()
        })
        .await?;
    read_all(history, DisplayCommand::from_cbor).await
}

/// Every tag state the stream holds on `tags.>`, oldest first.
pub async fn tag_history(stream: &mut jetstream::stream::Stream) -> anyhow::Result<Vec<Tag>> {
    let history = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            filter_subject: "tags.>".into(),
            inactive_threshold: Duration::from_secs(10),
            ..Default::default()
        })
        .await?;
    read_all(history, Tag::from_cbor).await
}

/// Each alarm's last transition the stream holds (its state now), oldest first.
pub async fn alarm_history(
    stream: &mut jetstream::stream::Stream,
) -> anyhow::Result<Vec<tspi_core::alarm::AlarmEvent>> {
    let history = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: DeliverPolicy::LastPerSubject,
            ack_policy: jetstream::consumer::AckPolicy::None,
            filter_subject: format!("{}.>", tspi_core::alarm::EVENT_PREFIX),
            inactive_threshold: Duration::from_secs(10),
            ..Default::default()
        })
        .await?;
    read_all(history, tspi_core::alarm::AlarmEvent::from_cbor).await
}

async fn read_all<T, E>(
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    decode: impl Fn(&[u8]) -> Result<T, E>,
) -> anyhow::Result<Vec<T>> {
    let mut info = consumer.clone();
    let pending = info.info().await?.num_pending as usize;
    let mut out = Vec::new();
    if pending > 0 {
        let mut batch = consumer.fetch().max_messages(pending).messages().await?;
        let mut read = 0;
        while read < pending {
            match tokio::time::timeout(Duration::from_secs(5), batch.next()).await {
                Ok(Some(Ok(m))) => {
                    read += 1;
                    if let Ok(v) = decode(&m.payload) {
                        out.push(v);
                    }
                }
                _ => break,
            }
        }
    }
    Ok(out)
}

/// The livestream from now on (telemetry, commands, tags), and the commands in force.
pub async fn live(
    js: &jetstream::Context,
    stream_name: &str,
    prefix: &StreamPrefix,
) -> anyhow::Result<(impl Stream<Item = Incoming>, Vec<DisplayCommand>)> {
    let mut filters: Vec<String> = prefix.telemetry_wildcards().to_vec();
    filters.extend(operations_filters());
    ordered_from_now(js, stream_name, filters).await
}

/// The livestream for a display that shows the latest picture: telemetry from plain
/// subscriptions (what the bus carries now, never a backlog), commands and tags from an
/// ordered consumer on the stream (each one, in order), and the commands in force.
///
/// A display that fell behind an ordered consumer on the telemetry read the stream's
/// backlog and stayed behind: on a busy two-core machine it showed positions 20-30 s old
/// while the bus itself delivered within 80 ms. What a slow display misses now is the
/// NATS client's to drop (counted through the slow-consumer event), not the stream's to
/// hold.
pub async fn live_latest(
    client: &async_nats::Client,
    js: &jetstream::Context,
    stream_name: &str,
    prefix: &StreamPrefix,
) -> anyhow::Result<(impl Stream<Item = Incoming>, Vec<DisplayCommand>)> {
    let mut feeds = Vec::new();
    for subject in prefix.telemetry_wildcards() {
        let sub = client
            .subscribe(subject.to_string())
            .await
            .with_context(|| format!("subscribing to {subject}"))?;
        // Our publishers end fast batches on `<prefix>.batch`; a foreign one may end them
        // on a telemetry subject (empty, never stored): not telemetry, nor malformed.
        feeds.push(
            sub.filter(|m| {
                std::future::ready(!tspi_bus::fast::is_batch_control(
                    m.reply.as_ref().map(|r| r.as_str()),
                ))
            })
            .map(|m| Incoming {
                subject: m.subject.to_string(),
                payload: m.payload,
                replayed: None,
            })
            .boxed(),
        );
    }
    let (operations, history) = ordered_from_now(js, stream_name, operations_filters()).await?;
    feeds.push(operations.boxed());
    // Make sure the server has the subscriptions before the caller says it is ready.
    client.flush().await.ok();
    Ok((futures::stream::select_all(feeds), history))
}

/// Display commands, tags and alarm transitions.
fn operations_filters() -> [String; 3] {
    [
        format!("{}.>", tspi_core::command::DISPLAY_COMMAND_PREFIX),
        "tags.>".into(),
        format!("{}.>", tspi_core::alarm::EVENT_PREFIX),
    ]
}

/// The commands in force, then the stream's messages on `filters` from now on, in order.
///
/// An ordered *push* consumer: the server sends as the stream grows, with flow control.
/// The ordered pull consumer asks for 500 messages at a time and waits a round trip for
/// each batch, which held a display to ~3,000 messages/s on a busy two-core machine while
/// positions aged by tens of seconds in the stream.
async fn ordered_from_now(
    js: &jetstream::Context,
    stream_name: &str,
    filters: impl IntoIterator<Item = String>,
) -> anyhow::Result<(impl Stream<Item = Incoming> + Send, Vec<DisplayCommand>)> {
    let mut stream = js
        .get_stream(stream_name)
        .await
        .with_context(|| format!("stream {stream_name} not found"))?;
    let history = command_history(&mut stream).await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::push::OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            deliver_policy: DeliverPolicy::New,
            filter_subjects: filters.into_iter().collect(),
            ..Default::default()
        })
        .await?;
    let feed = consumer.messages().await?.filter_map(|m| async move {
        match m {
            Ok(m) => Some(Incoming {
                subject: m.subject.to_string(),
                payload: m.payload.clone(),
                replayed: None,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "ordered consumer error; it recreates itself");
                None
            }
        }
    });
    Ok((feed, history))
}

/// A group replay channel: deliveries keep their original subjects.
pub async fn channel(
    client: &async_nats::Client,
    subject: &str,
) -> anyhow::Result<impl Stream<Item = Incoming>> {
    let sub = client
        .subscribe(subject.to_owned())
        .await
        .with_context(|| format!("subscribing to {subject}"))?;
    Ok(sub.map(|m| Incoming {
        subject: m.subject.to_string(),
        payload: m.payload,
        replayed: None,
    }))
}

/// The playout headers of a replayed message.
pub fn replayed(headers: Option<&async_nats::HeaderMap>) -> Option<Replayed> {
    let h = headers?;
    let phase = Phase::parse(h.get(playout::HEADER_PHASE)?.as_str())?;
    Some(Replayed {
        phase,
        original_ms: h
            .get(playout::HEADER_ORIGINAL_TIME)
            .and_then(|v| tspi_core::rfc3339::parse_epoch_ms(v.as_str())),
        segment: h
            .get(playout::HEADER_SEGMENT)
            .and_then(|v| v.as_str().parse().ok()),
    })
}

/// A replayer room's playout, with the room prefix taken off the subjects.
pub async fn room(
    client: &async_nats::Client,
    room: &str,
) -> anyhow::Result<impl Stream<Item = Incoming>> {
    let prefix = playout::playout_prefix(room);
    let sub = client
        .subscribe(format!("{prefix}>"))
        .await
        .with_context(|| format!("subscribing to {prefix}>"))?;
    // The subscription is on the server before anything is asked of the replayer.
    client.flush().await.ok();
    Ok(sub.map(move |m| Incoming {
        subject: m
            .subject
            .as_str()
            .strip_prefix(&prefix)
            .unwrap_or(m.subject.as_str())
            .to_owned(),
        replayed: replayed(m.headers.as_ref()),
        payload: m.payload,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn subjects_choose_the_decoder_and_garbage_is_invalid() {
        for subject in [
            "tspi.geocentric.1",
            "tspi.cmd.display.units",
            "tags.create",
            "replay.begin",
            "replay.ready",
        ] {
            assert!(
                matches!(Decoded::new(subject, b"\xff\x00junk"), Decoded::Invalid(_)),
                "{subject}"
            );
        }
        let m = SegmentMarker {
            segment: 1,
            kind: tspi_core::playout::SegmentKind::Restart,
            at: "2025-09-28T11:00:00Z".into(),
            end: "2025-09-28T11:01:00Z".into(),
            speed: 1.0,
            paused: false,
            state: 0,
            snapshot: 0,
        };
        assert!(matches!(
            Decoded::new("replay.begin", &m.to_cbor()),
            Decoded::Marker(x) if x == m
        ));
        let mut h = async_nats::HeaderMap::new();
        h.insert(playout::HEADER_PHASE, "snapshot");
        h.insert(playout::HEADER_SEGMENT, "12");
        h.insert(playout::HEADER_ORIGINAL_TIME, "2025-09-28T11:00:00.000Z");
        let r = replayed(Some(&h)).unwrap();
        assert_eq!(r.phase, Phase::Snapshot);
        assert_eq!(r.segment, Some(12));
        assert_eq!(r.original_ms, Some(1_759_057_200_000));
        h.insert(playout::HEADER_PHASE, "sideways");
        assert!(replayed(Some(&h)).is_none());
        assert!(replayed(None).is_none());
    }
}
