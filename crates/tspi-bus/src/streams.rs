//! The `TSPI` stream of SPEC §4, created or updated idempotently at start-up.
//!
//! Only the fields this toolkit owns are compared and set; anything else an operator
//! configured on an existing stream (limits, placement, metadata) is left as it is.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use clap::Args;
use tspi_core::StreamPrefix;

use crate::{BusError, PublishMode};

/// Minimum duplicate window: SPEC §4 requires at least two minutes so that retries after
/// a node failure are still de-duplicated.
pub const MIN_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Name of the telemetry/commands/tags stream.
    #[arg(long = "stream", default_value = "TSPI")]
    pub stream_name: String,
    /// Do not create or update streams (locked-down deployments); the stream must exist.
    #[arg(long)]
    pub no_create_stream: bool,
    /// Stream replicas; default min(3, cluster size).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: Option<u8>,
    /// How long the stream keeps messages (the archive keeps them for ever).
    #[arg(long = "retention", default_value = "7d", value_parser = tspi_runtime::parse_duration)]
    pub max_age: Duration,
    /// JetStream duplicate window for Nats-Msg-Id (at least 2m).
    #[arg(long, default_value = "2m", value_parser = tspi_runtime::parse_duration)]
    pub duplicate_window: Duration,
    /// Publish with fast-ingest batches (`fast`, nats-server ≥ 2.14, stream option
    /// allow_batched), one ack per message (`window`), or fast when the stream allows it
    /// (`auto`).
    #[arg(long, value_enum, default_value_t = PublishMode::Auto)]
    pub publish_mode: PublishMode,
}

impl Default for StreamArgs {
    fn default() -> Self {
        StreamArgs {
            stream_name: "TSPI".into(),
            no_create_stream: false,
            replicas: None,
            max_age: Duration::from_secs(7 * 86_400),
            duplicate_window: MIN_DUPLICATE_WINDOW,
            publish_mode: PublishMode::Auto,
        }
    }
}

/// What a stream must look like.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    pub name: String,
    pub subjects: Vec<String>,
    pub replicas: Option<usize>,
    pub max_age: Duration,
    pub duplicate_window: Duration,
    pub create: bool,
    /// Turn on fast-ingest batches (`allow_batched`) when the server supports them; never
    /// turned off here (an operator's choice stays).
    pub allow_batched: bool,
}

impl StreamSpec {
    /// A stream with default replicas and a 2 min duplicate window (bounded by `max_age`).
    pub fn simple(name: &str, subjects: &[&str], max_age: Duration, create: bool) -> StreamSpec {
        StreamSpec {
            name: name.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            replicas: None,
            max_age,
            duplicate_window: MIN_DUPLICATE_WINDOW.min(max_age),
            create,
            allow_batched: false,
        }
    }

    /// `TSPI_OPS`: heartbeats and replay control, short retention.
    pub fn ops(create: bool) -> StreamSpec {
        Self::simple(
            "TSPI_OPS",
            &["tspi.ops.>"],
            Duration::from_secs(3600),
            create,
        )
    }

    /// `TSPI_REPLAY`: channel deliveries kept for late joiners.
    pub fn replay(create: bool) -> StreamSpec {
        Self::simple(
            "TSPI_REPLAY",
            &["tspi.channel.replay.>", "tspi.channel.client.>"],
            Duration::from_secs(6 * 3600),
            create,
        )
    }

    /// `PLAYOUT`: the replayer's output. Only `player.*.playout.>`: a stream on `player.>`
    /// would also capture `player.<room>.ctrl` requests and answer them with its acks.
    pub fn playout(name: &str, max_age: Duration, create: bool) -> StreamSpec {
        Self::simple(name, &["player.*.playout.>"], max_age, create)
    }

    /// `TSPI`: telemetry under the prefix, display commands and tags in one ordered log.
    pub fn tspi(args: &StreamArgs, prefix: &StreamPrefix) -> Result<StreamSpec, BusError> {
        if args.duplicate_window < MIN_DUPLICATE_WINDOW {
            return Err(BusError::Stream {
                name: args.stream_name.clone(),
                reason: format!(
                    "--duplicate-window {:?} is below the 2m minimum",
                    args.duplicate_window
                ),
            });
        }
        if args.max_age != Duration::ZERO && args.max_age < args.duplicate_window {
            return Err(BusError::Stream {
                name: args.stream_name.clone(),
                reason: "--retention must be longer than --duplicate-window".into(),
            });
        }
        let [geo, sph] = prefix.telemetry_wildcards();
        Ok(StreamSpec {
            name: args.stream_name.clone(),
            subjects: vec![
                geo,
                sph,
                "tspi.cmd.>".into(),
                "tags.>".into(),
                // Alarm transitions (the alarmer): archived and replayed with the data.
                "tspi.alarm.>".into(),
                prefix.batch_control_subject(),
            ],
            replicas: args.replicas.map(usize::from),
            max_age: args.max_age,
            duplicate_window: args.duplicate_window,
            create: !args.no_create_stream,
            allow_batched: args.publish_mode != PublishMode::Window,
        })
    }
}

/// Replicas when none were asked for: min(3, cluster size) as the connected server
/// advertises it (a standalone server has no cluster and gets 1).
fn auto_replicas(client: &async_nats::Client) -> usize {
    let info = client.server_info();
    if info.cluster.is_none() {
        return 1;
    }
    info.connect_urls.len().clamp(1, 3)
}

/// Whether a server version (`2.14.0`, `2.15.1-dev`) has fast-ingest batches (ADR-50).
pub fn version_has_fast_batches(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (2, 14),
        _ => false,
    }
}

/// Fast batches or the window, from `--publish-mode` and the stream as it is: the
/// subject for end-of-batch and pings (`<prefix>.batch`, which must be one of the
/// stream's) when batches are used. `auto` says once when it cannot use them; `fast` on
/// a stream without them is an error.
pub fn use_fast_batches(
    mode: PublishMode,
    info: &stream::Info,
    prefix: &StreamPrefix,
) -> Result<Option<async_nats::Subject>, BusError> {
    let control = prefix.batch_control_subject();
    let missing = if !info.config.allow_batch_publish {
        Some("allow_batched is off (or the server is older than 2.14)".to_owned())
    } else if !info.config.subjects.contains(&control) {
        Some(format!("its subjects lack {control}, where batches end"))
    } else {
        None
    };
    match (mode, missing) {
        (PublishMode::Window, _) => Ok(None),
        (_, None) => Ok(Some(control.into())),
        (PublishMode::Fast, Some(why)) => Err(BusError::Stream {
            name: info.config.name.clone(),
            reason: format!(
                "--publish-mode fast needs a stream that allows fast-ingest batches: {why} \
                 (let the producer create or update it, or use --publish-mode auto or window)"
            ),
        }),
        (PublishMode::Auto, Some(why)) => {
            tracing::info!(stream = %info.config.name, reason = %why, "the stream does not allow fast-ingest batches: publishing with the per-message window");
            Ok(None)
        }
    }
}

/// Make sure the stream exists with our fields; create it, or update what differs.
///
/// A cluster that is still electing its leaders answers with time-outs for a few seconds
/// (typical when every service starts at once): those are retried for up to 30 s; any
/// other error is returned at once.
pub async fn ensure_stream(
    client: &async_nats::Client,
    js: &jetstream::Context,
    spec: &StreamSpec,
) -> Result<stream::Info, BusError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut delay = Duration::from_millis(250);
    loop {
        match ensure_stream_once(client, js, spec).await {
            Err(e) if is_transient(&e) && std::time::Instant::now() + delay < deadline => {
                tracing::warn!(stream = %spec.name, error = %e, "JetStream not ready yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(4));
            }
            other => return other,
        }
    }
}

fn is_transient(e: &BusError) -> bool {
    match e {
        BusError::Stream { reason, .. } | BusError::NoJetStream(reason) => {
            reason.contains("timed out")
                || reason.contains("no responders")
                || reason.contains("temporarily unavailable")
                || reason.contains("10008")
        }
        _ => false,
    }
}

async fn ensure_stream_once(
    client: &async_nats::Client,
    js: &jetstream::Context,
    spec: &StreamSpec,
) -> Result<stream::Info, BusError> {
    let stream_err = |reason: String| BusError::Stream {
        name: spec.name.clone(),
        reason,
    };
    let existing = match js.get_stream(&spec.name).await {
        Ok(mut s) => Some(
            s.info()
                .await
                .map_err(|e| stream_err(e.to_string()))?
                .clone(),
        ),
        Err(e) => match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(err)
                if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                None
            }
            _ => {
                let text = e.to_string();
                if text.contains("no responders") || text.contains("not enabled") {
                    return Err(BusError::NoJetStream(text));
                }
                return Err(stream_err(text));
            }
        },
    };
    if !spec.create {
        return existing.ok_or_else(|| BusError::StreamMissing {
            name: spec.name.clone(),
        });
    }
    let replicas = spec.replicas.unwrap_or_else(|| auto_replicas(client));
    let batched = spec.allow_batched && version_has_fast_batches(&client.server_info().version);
    match existing {
        None => {
            let config = stream::Config {
                name: spec.name.clone(),
                subjects: spec.subjects.clone(),
                storage: stream::StorageType::File,
                num_replicas: replicas,
                max_age: spec.max_age,
                duplicate_window: spec.duplicate_window,
                discard: stream::DiscardPolicy::Old,
                allow_direct: true,
                allow_batch_publish: batched,
                description: Some("TSPI telemetry, display commands and tags".into()),
                ..Default::default()
            };
            let created = js
                .create_stream(config)
                .await
                .map_err(|e| conflict_or_error(&spec.name, e.to_string()))?;
            tracing::info!(stream = %spec.name, replicas, "created stream");
            Ok(created.cached_info().clone())
        }
        Some(info) => {
            let mut config = info.config.clone();
            let mut subjects = config.subjects.clone();
            for s in &spec.subjects {
                if !subjects.contains(s) {
                    subjects.push(s.clone());
                }
            }
            let wanted_replicas = spec.replicas.unwrap_or(config.num_replicas.max(1));
            let differs = subjects != config.subjects
                || config.storage != stream::StorageType::File
                || config.num_replicas != wanted_replicas
                || config.max_age != spec.max_age
                || config.duplicate_window != spec.duplicate_window
                || (batched && !config.allow_batch_publish);
            if !differs {
                return Ok(info);
            }
            if config.storage != stream::StorageType::File {
                return Err(BusError::StreamConflict {
                    name: spec.name.clone(),
                    reason: "it uses memory storage; TSPI needs file storage (storage cannot be changed: delete the stream or pick another --stream name)".into(),
                });
            }
            config.subjects = subjects;
            config.num_replicas = wanted_replicas;
            config.max_age = spec.max_age;
            config.duplicate_window = spec.duplicate_window;
            config.allow_batch_publish |= batched;
            let updated = js
                .update_stream(&config)
                .await
                .map_err(|e| conflict_or_error(&spec.name, e.to_string()))?;
            tracing::info!(stream = %spec.name, replicas = wanted_replicas, "updated stream");
            Ok(updated)
        }
    }
}

fn conflict_or_error(name: &str, text: String) -> BusError {
    if text.contains("overlap") || text.contains("can not") || text.contains("cannot") {
        BusError::StreamConflict {
            name: name.to_owned(),
            reason: text,
        }
    } else {
        BusError::Stream {
            name: name.to_owned(),
            reason: text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_batches_from_2_14() {
        for (v, has) in [
            ("2.14.0", true),
            ("2.15.1", true),
            ("v2.14.0-RC.1", true),
            ("3.0.0", true),
            ("2.12.3", false),
            ("2.9.25", false),
            ("", false),
            ("garbage", false),
        ] {
            assert_eq!(version_has_fast_batches(v), has, "{v}");
        }
    }
}
