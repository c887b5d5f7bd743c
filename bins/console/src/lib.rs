//! The operator console (SPEC §5, issue 4): display commands and tags onto `TSPI`, the
//! client roster from heartbeats, the archive's sensor-quality history. Everything is
//! validated before anything is sent.

pub mod quality;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;
use tspi_core::ops::{ClientState, Heartbeat, STATUS_SUBJECT};

pub use tspi_bus::operator::{now_rfc3339, send_command, send_tag, uuid_v4, Sent};

/// One client in the roster.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRow {
    pub client_id: String,
    pub channel_id: String,
    pub state: ClientState,
    pub connected_since: String,
    pub last_seen: String,
    pub operator: Option<String>,
    pub ping_ms: Option<f64>,
    /// Every state seen in the window, oldest first, as `STATE@channel`.
    pub transitions: Vec<String>,
}

/// The roster from the heartbeats kept in `TSPI_OPS` over the last `window`; a client
/// silent for longer than `stale` is left out.
pub async fn roster(
    js: &jetstream::Context,
    window: Duration,
    stale: Duration,
) -> anyhow::Result<Vec<ClientRow>> {
    let stream = js
        .get_stream("TSPI_OPS")
        .await
        .context("no TSPI_OPS stream: no client has sent a heartbeat yet")?;
    let since = OffsetDateTime::now_utc() - time::Duration::try_from(window)?;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartTime { start_time: since },
            ack_policy: AckPolicy::None,
            filter_subject: STATUS_SUBJECT.into(),
            inactive_threshold: Duration::from_secs(10),
            ..Default::default()
        })
        .await?;
    let mut info = consumer.clone();
    let pending = info.info().await?.num_pending;
    let mut clients: BTreeMap<String, (Heartbeat, String, Vec<String>)> = BTreeMap::new();
    if pending > 0 {
        let mut messages = consumer
            .fetch()
            .max_messages(pending as usize)
            .messages()
            .await?;
        let mut read = 0;
        while let Ok(Some(next)) =
            tokio::time::timeout(Duration::from_secs(2), messages.next()).await
        {
            let Ok(m) = next else { break };
            read += 1;
            // Garbage on the status subject is someone else's bug: skip it.
            if let Ok(hb) = tspi_core::ops::from_bytes::<Heartbeat>(&m.payload) {
                let entry = clients
                    .entry(hb.client_id.clone())
                    .or_insert_with(|| (hb.clone(), hb.ts.clone(), Vec::new()));
                let label = format!("{:?}@{}", hb.state, hb.channel_id);
                if entry.2.last() != Some(&label) {
                    entry.2.push(label);
                }
                entry.0 = hb;
            }
            if read >= pending {
                break;
            }
        }
    }
    let cutoff = tspi_runtime::now_epoch_ms() - stale.as_millis() as i64;
    Ok(clients
        .into_values()
        .filter(|(hb, _, _)| {
            tspi_core::rfc3339::parse_epoch_ms(&hb.ts).is_some_and(|t| t >= cutoff)
        })
        .map(|(hb, since, transitions)| ClientRow {
            client_id: hb.client_id,
            channel_id: hb.channel_id,
            state: hb.state,
            connected_since: since,
            last_seen: hb.ts,
            operator: hb.operator,
            ping_ms: hb.ping_ms,
            transitions,
        })
        .collect())
}

/// Refuse an empty comment before anything is sent.
pub fn check_comment(comment: &str) -> anyhow::Result<()> {
    if comment.trim().is_empty() {
        bail!("a tag needs a comment: it must not be empty");
    }
    Ok(())
}

/// Where a group replay starts.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayStart {
    Time(OffsetDateTime),
    Sequence(u64),
}

/// A group replay's identifier: an RFC 3339 time or a stream sequence; a label needs an
/// explicit start time.
pub fn replay_start(identifier: &str, start: Option<&str>) -> anyhow::Result<ReplayStart> {
    let time = |t: &str| {
        tspi_core::rfc3339::parse_epoch_ms(t).and_then(|ms| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
        })
    };
    if let Some(s) = start {
        return time(s)
            .map(ReplayStart::Time)
            .with_context(|| format!("--start {s:?} is not an RFC 3339 time"));
    }
    if let Some(t) = time(identifier) {
        return Ok(ReplayStart::Time(t));
    }
    if let Ok(seq) = identifier.parse::<u64>() {
        if seq > 0 {
            return Ok(ReplayStart::Sequence(seq));
        }
    }
    bail!("replay identifier {identifier:?} is neither an RFC 3339 time nor a stream sequence; give --start for a label")
}

const REPLAY_CONSUMER_PREFIX: &str = "replay-";

/// Tell every player on `tspi.ops.ctrl`, and wait until the server has it.
async fn announce(
    client: &async_nats::Client,
    ctrl: &tspi_core::ops::OpsControl,
) -> anyhow::Result<()> {
    client
        .publish(
            tspi_core::ops::CTRL_SUBJECT,
            tspi_core::ops::to_cbor(ctrl).into(),
        )
        .await?;
    client.flush().await?;
    Ok(())
}

/// Start a group replay: announce `GroupReplayStart` on `tspi.ops.ctrl` so players on the
/// livestream subscribe to `tspi.channel.replay.<slug>`, give them `join_delay`, then create
/// the consumer that delivers the messages at their original gaps (the server paces).
/// Creating it first would let the first subscriber start the delivery while others are
/// still joining, and they would miss the beginning.
pub async fn start_group_replay(
    client: &async_nats::Client,
    js: &jetstream::Context,
    identifier: &str,
    start: ReplayStart,
    display_name: Option<&str>,
    stream_name: &str,
    join_delay: std::time::Duration,
) -> anyhow::Result<tspi_core::ops::ChannelInfo> {
    use jetstream::consumer::{push, ReplayPolicy};
    let slug = tspi_core::ops::slug(identifier);
    if slug.is_empty() {
        bail!("replay identifier {identifier:?} has no letters or digits");
    }
    let subject = format!("tspi.channel.replay.{slug}");
    let display_name = display_name.unwrap_or(identifier).to_owned();
    let stream = js
        .get_stream(stream_name)
        .await
        .with_context(|| format!("stream {stream_name} not found"))?;
    let name = format!("{REPLAY_CONSUMER_PREFIX}{slug}");
    if stream.consumer_info(&name).await.is_ok() {
        bail!("channel {slug} is already running (console replay stop {slug} first)");
    }
    let deliver_policy = match start {
        ReplayStart::Time(start_time) => DeliverPolicy::ByStartTime { start_time },
        ReplayStart::Sequence(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
    };
    let metadata = [
        ("channel_id", slug.clone()),
        ("display_name", display_name.clone()),
        ("identifier", identifier.to_owned()),
        ("kind", "group_replay".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    announce(
        client,
        &tspi_core::ops::OpsControl::GroupReplayStart {
            channel_id: slug.clone(),
            display_name: display_name.clone(),
            identifier: identifier.to_owned(),
            stream: stream_name.to_owned(),
        },
    )
    .await?;
    tokio::time::sleep(join_delay).await;
    let created = stream
        .create_consumer(push::Config {
            durable_name: Some(name),
            deliver_subject: subject.clone(),
            deliver_policy,
            ack_policy: AckPolicy::None,
            replay_policy: ReplayPolicy::Original,
            description: Some(format!("group replay {display_name}")),
            metadata,
            ..Default::default()
        })
        .await
        .context("creating the replay consumer");
    if let Err(e) = created {
        // The players already switched: send them back to the livestream.
        announce(
            client,
            &tspi_core::ops::OpsControl::GroupReplayStop {
                channel_id: slug.clone(),
            },
        )
        .await
        .ok();
        return Err(e);
    }
    Ok(tspi_core::ops::ChannelInfo {
        channel_id: slug,
        subject,
        display_name,
        kind: tspi_core::ops::ChannelKind::GroupReplay,
        stream: stream_name.to_owned(),
        identifier: Some(identifier.to_owned()),
    })
}

/// The channel directory: livestream first, then every running group replay.
pub async fn channels(
    js: &jetstream::Context,
    stream_name: &str,
) -> anyhow::Result<Vec<tspi_core::ops::ChannelInfo>> {
    let mut out = vec![tspi_core::ops::ChannelInfo::livestream()];
    let stream = js.get_stream(stream_name).await?;
    let mut consumers = stream.consumers();
    let mut replays = Vec::new();
    while let Some(info) = consumers.next().await {
        let info = info?;
        if !info.name.starts_with(REPLAY_CONSUMER_PREFIX) {
            continue;
        }
        let meta = &info.config.metadata;
        let slug = info.name[REPLAY_CONSUMER_PREFIX.len()..].to_owned();
        replays.push(tspi_core::ops::ChannelInfo {
            subject: format!("tspi.channel.replay.{slug}"),
            display_name: meta
                .get("display_name")
                .cloned()
                .unwrap_or_else(|| slug.clone()),
            identifier: meta.get("identifier").cloned(),
            channel_id: slug,
            kind: tspi_core::ops::ChannelKind::GroupReplay,
            stream: stream_name.to_owned(),
        });
    }
    replays.sort_by(|a, b| a.channel_id.cmp(&b.channel_id));
    out.extend(replays);
    Ok(out)
}

/// Stop one group replay (or all): delete its consumer, then `GroupReplayStop` so its
/// players return to the livestream. Returns the channels stopped.
pub async fn stop_group_replay(
    client: &async_nats::Client,
    js: &jetstream::Context,
    channel: Option<&str>,
    stream_name: &str,
) -> anyhow::Result<Vec<String>> {
    let running: Vec<String> = channels(js, stream_name)
        .await?
        .into_iter()
        .filter(|c| c.kind == tspi_core::ops::ChannelKind::GroupReplay)
        .map(|c| c.channel_id)
        .collect();
    let targets: Vec<String> = match channel {
        Some(c) => {
            let slug = tspi_core::ops::slug(c);
            if !running.contains(&slug) {
                bail!(
                    "no group replay channel {c:?} (running: {})",
                    if running.is_empty() {
                        "none".to_owned()
                    } else {
                        running.join(", ")
                    }
                );
            }
            vec![slug]
        }
        None => running,
    };
    let stream = js.get_stream(stream_name).await?;
    for slug in &targets {
        stream
            .delete_consumer(&format!("{REPLAY_CONSUMER_PREFIX}{slug}"))
            .await
            .with_context(|| format!("deleting the consumer of {slug}"))?;
        announce(
            client,
            &tspi_core::ops::OpsControl::GroupReplayStop {
                channel_id: slug.clone(),
            },
        )
        .await?;
    }
    Ok(targets)
}

/// Answer `tspi.channel.list.req` until `shutdown`: CBOR (JSON when the request is JSON).
pub async fn serve_directory(
    client: async_nats::Client,
    js: jetstream::Context,
    stream_name: String,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut requests = client
        .subscribe(tspi_core::ops::CHANNEL_LIST_SUBJECT)
        .await?;
    loop {
        let req = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = requests.next() => match r { Some(r) => r, None => return Ok(()) },
        };
        let Some(reply) = req.reply else { continue };
        let list = match channels(&js, &stream_name).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "channel directory unavailable; answering with the livestream only");
                vec![tspi_core::ops::ChannelInfo::livestream()]
            }
        };
        let json = req
            .payload
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[');
        let body = if json {
            serde_json::to_vec(&list)?
        } else {
            tspi_core::ops::to_cbor(&list)
        };
        client.publish(reply, body.into()).await.ok();
    }
}

/// A request to the alarmer (`alarms.ctrl`): its reply, or one line saying why not.
pub async fn ask_alarmer(
    client: &async_nats::Client,
    request: &tspi_core::alarm::AlarmRequest,
) -> anyhow::Result<serde_json::Value> {
    let body = serde_json::to_vec(request)?;
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.request(tspi_core::alarm::CONTROL_SUBJECT, body.into()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the alarmer did not answer within 10 s"))?
    .map_err(|e| {
        anyhow::anyhow!(
            "no alarmer answers on {}: {e}",
            tspi_core::alarm::CONTROL_SUBJECT
        )
    })?;
    let v: serde_json::Value = serde_json::from_slice(&reply.payload)
        .map_err(|_| anyhow::anyhow!("the alarmer's reply is not JSON"))?;
    if v["ok"] != true {
        anyhow::bail!("{}", v["error"].as_str().unwrap_or("the alarmer refused"));
    }
    Ok(v)
}
