//! Range sites (SPEC §4, "Sites"): a site's nats-server is a leaf node of the centre with
//! its own JetStream domain, `site-<name>`; its producer stores into the site stream
//! `TSPI_SITE_<NAME>` there and keeps working with the WAN down; the centre's `TSPI`
//! sources every site stream across domains, de-duplicating by `Nats-Msg-Id`, so a
//! backlog flows in order once the link is back and nothing is stored twice.
//!
//! The source uses a durable consumer on the site stream (ADR-58/60 durable sourcing,
//! `ack_policy: flow_control`), not the server's ephemeral one: the ephemeral source
//! retries with a backoff that grows with each failure (10 s, 20 s, … up to 2 min), so a
//! 30 s cut cost 20–28 s of extra lag after the link returned; the durable's heartbeats
//! reach the centre as soon as the leaf reconnects and the centre resumes at once
//! (measured 0.2–0.5 s). The durable also counts, on the site, what the centre has not
//! confirmed yet: the site's backlog ([`site_backlog`]), sharpened by the centre's own
//! count when it can be asked ([`centre_sourced_sequence`]).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use tspi_core::StreamPrefix;

use crate::{BusError, StreamArgs, StreamSpec};

/// A site's name: lowercase letters, digits and `-`, 1 to 32 of them, starting with a
/// letter (it becomes a stream name, a JetStream domain and part of subjects).
pub fn check_site_name(name: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "site name {name:?}: use 1 to 32 lowercase letters, digits or '-', starting with a letter"
        ))
    }
}

/// `TSPI_SITE_<NAME>` (upper case, `-` as `_`).
pub fn site_stream_name(site: &str) -> String {
    format!("TSPI_SITE_{}", site.to_ascii_uppercase().replace('-', "_"))
}

/// The JetStream domain of a site's server: `site-<name>`.
pub fn site_domain(site: &str) -> String {
    format!("site-{site}")
}

/// The durable consumer on a site stream that feeds the centre's stream `central`.
pub fn site_consumer_name(central: &str) -> String {
    format!("CENTRE_{central}")
}

/// Where that consumer delivers: a subject of its own per site and central stream,
/// outside the telemetry subjects (the leaf link denies those) and literal, as the
/// server requires of a durable source.
pub fn site_deliver_subject(site: &str, central: &str) -> String {
    format!("tspi-site.{site}.{central}")
}

/// How often the sourcing consumer sends a heartbeat when idle: it also moves the
/// acknowledgement floor and lets the centre see the link is back.
const SOURCING_HEARTBEAT: Duration = Duration::from_secs(1);

/// Messages the centre may hold unconfirmed: enough to keep a WAN of tens of
/// milliseconds busy during catch-up.
const SOURCING_MAX_ACK_PENDING: i64 = 20_000;

/// The site stream: the telemetry subjects (and the fast-ingest batch subject) on the
/// site's own JetStream, file storage, kept for `retention` (size it for the longest
/// outage of the WAN).
pub fn site_stream_spec(
    site: &str,
    retention: Duration,
    args: &StreamArgs,
    prefix: &StreamPrefix,
) -> Result<StreamSpec, BusError> {
    let site_args = StreamArgs {
        stream_name: site_stream_name(site),
        max_age: retention,
        ..args.clone()
    };
    let mut spec = StreamSpec::tspi(&site_args, prefix)?;
    let [geo, sph] = prefix.telemetry_wildcards();
    spec.subjects = vec![geo, sph, prefix.batch_control_subject()];
    Ok(spec)
}

/// What [`ensure_site_consumer`] or [`ensure_site_source`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceChange {
    /// It was already there.
    Unchanged,
    /// It was added.
    Added,
    /// It was there with another setting, now changed (the consumer's rate limit).
    Updated,
}

/// Creates, on the site's own JetStream (this connection's server), the durable consumer
/// through which the centre's `central` sources `site`'s stream, starting at the site
/// stream's first message, delivering at most `rate_limit_bps` bits a second (0: no
/// limit; the WAN share a catch-up may take). Idempotent; a different limit is updated in
/// place (the consumer and its position stay). Needs the site stream to exist.
pub async fn ensure_site_consumer(
    client: &async_nats::Client,
    site: &str,
    central: &str,
    rate_limit_bps: u64,
) -> Result<SourceChange, BusError> {
    let js = jetstream::new(client.clone());
    let name = site_stream_name(site);
    let durable = site_consumer_name(central);
    let deliver = site_deliver_subject(site, central);
    let stream_err = |reason: String| BusError::Stream {
        name: name.clone(),
        reason,
    };
    let stream = js
        .get_stream(&name)
        .await
        .map_err(|e| stream_err(e.to_string()))?;
    if let Ok(existing) = stream
        .get_consumer::<consumer::push::Config>(&durable)
        .await
    {
        let info = existing.cached_info();
        if info.config.deliver_subject.as_deref() != Some(deliver.as_str())
            || info.config.ack_policy != consumer::AckPolicy::FlowControl
        {
            return Err(stream_err(format!(
                "its consumer {durable} is not the centre's sourcing consumer (deliver subject {:?}, ack policy {:?}; want {deliver}, flow_control): delete it on the site and restart the producer",
                info.config.deliver_subject, info.config.ack_policy
            )));
        }
        if info.config.rate_limit == rate_limit_bps {
            return Ok(SourceChange::Unchanged);
        }
        let mut config = info.config.clone();
        config.rate_limit = rate_limit_bps;
        let config =
            <consumer::push::Config as consumer::FromConsumer>::try_from_consumer_config(config)
                .map_err(|e| stream_err(format!("its consumer {durable}'s configuration: {e}")))?;
        stream.update_consumer(config).await.map_err(|e| {
            stream_err(format!("changing its consumer {durable}'s rate limit: {e}"))
        })?;
        return Ok(SourceChange::Updated);
    }
    stream
        .create_consumer(consumer::push::Config {
            durable_name: Some(durable.clone()),
            deliver_subject: deliver,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::FlowControl,
            ack_wait: Duration::ZERO,
            max_deliver: -1,
            max_ack_pending: SOURCING_MAX_ACK_PENDING,
            flow_control: true,
            idle_heartbeat: SOURCING_HEARTBEAT,
            rate_limit: rate_limit_bps,
            description: Some(format!(
                "the centre's {central} sources this site through it"
            )),
            ..Default::default()
        })
        .await
        .map_err(|e| stream_err(format!("creating its consumer {durable}: {e}")))?;
    Ok(SourceChange::Added)
}

/// Where the site stream stands, read on the site (works with the WAN down): its last
/// sequence and the last one its sourcing consumer has had confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteProgress {
    pub last: u64,
    /// The consumer's ack floor. With `ack_policy: flow_control` it moves only when a
    /// flow-control reply comes back, which at a site's rate can be minutes apart (the
    /// server asks when half its byte window or `max_ack_pending` is outstanding, or
    /// when idle): a lower bound on what the centre has stored.
    pub ack_floor: u64,
    /// The last site-stream sequence the consumer delivered toward the centre.
    pub delivered: u64,
    /// Whether the centre's source is listening (the leaf link is up): only then is the
    /// centre worth asking.
    pub centre_listening: bool,
}

/// One `CONSUMER.INFO` on the site: the site stream's last sequence (delivered +
/// pending) and the sourcing consumer's ack floor. `None` before provisioning.
pub async fn site_progress(
    client: &async_nats::Client,
    site: &str,
    central: &str,
) -> Option<SiteProgress> {
    // Getting the consumer fetches its info.
    let consumer: consumer::PushConsumer = jetstream::new(client.clone())
        .get_consumer_from_stream(site_consumer_name(central), site_stream_name(site))
        .await
        .ok()?;
    let info = consumer.cached_info();
    Some(SiteProgress {
        last: info.delivered.stream_sequence + info.num_pending,
        ack_floor: info.ack_floor.stream_sequence,
        delivered: info.delivered.stream_sequence,
        centre_listening: info.push_bound,
    })
}

/// The last sequence of `site`'s stream the centre's `central` has stored (its source's
/// `seq` in `STREAM.INFO`, through the leaf connection): `None` when the centre cannot
/// be asked (WAN down) or its server does not report it.
pub async fn centre_sourced_sequence(
    client: &async_nats::Client,
    centre_domain: &str,
    central: &str,
    site: &str,
) -> Option<u64> {
    let subject = format!("$JS.{centre_domain}.API.STREAM.INFO.{central}");
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        client.request(subject, bytes::Bytes::new()),
    )
    .await
    .ok()?
    .ok()?;
    let info: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
    let api = format!("$JS.{}.API", site_domain(site));
    let name = site_stream_name(site);
    info.get("sources")?
        .as_array()?
        .iter()
        .find(|s| {
            s.get("name").and_then(|n| n.as_str()) == Some(name.as_str())
                && s.pointer("/external/api").and_then(|a| a.as_str()) == Some(api.as_str())
        })?
        .get("seq")?
        .as_u64()
}

/// Messages of the site stream the centre has not stored yet: beyond the best
/// confirmation known — the centre's own word when it could be asked (`centre`, the
/// latest answer kept by the caller), else the consumer's ack floor. A `centre` beyond
/// the site's last sequence (the site stream was made anew) is not trusted.
pub fn site_backlog(progress: SiteProgress, centre: Option<u64>) -> u64 {
    let centre = centre.filter(|&c| c <= progress.last).unwrap_or(0);
    progress.last.saturating_sub(progress.ack_floor.max(centre))
}

/// One reading of the sourcing, as [`SourcingWatch`] judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcingReading {
    /// The site stream's last sequence.
    pub last: u64,
    /// The best confirmation known: the centre's own count when it answered, else the
    /// consumer's ack floor (as [`site_backlog`] counts from).
    pub confirmed: u64,
    /// The last site-stream sequence the sourcing consumer delivered.
    pub delivered: u64,
    /// Whether the centre answered this time (its count is fresh).
    pub centre_answered: bool,
    /// Whether the centre's source listens (the leaf link is up).
    pub centre_listening: bool,
}

/// What [`SourcingWatch::observe`] concluded, when it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcingVerdict {
    /// The centre has listened for the whole window with messages to take and none moved.
    Stalled {
        backlog: u64,
        confirmed: u64,
        for_: Duration,
    },
    /// Moving again (or nothing left to take, or the link down: a cut is not a stall).
    Resumed,
}

/// Tells a stalled sourcing from a slow or cut one: the centre's source listens, the site
/// holds messages the centre has not confirmed, and for `stall_after` nothing moved —
/// neither the centre's confirmation nor, while the centre cannot be asked, the
/// consumer's deliveries. A rate-limited catch-up moves every second; a cut link is not
/// listening; a centre that refuses the messages (its stream full) or a source that
/// stopped asking is a stall. Pure: the producer feeds it a reading a second.
#[derive(Debug, Clone)]
pub struct SourcingWatch {
    stall_after: Duration,
    /// The highest confirmation and delivery seen, and when either last rose.
    confirmed: u64,
    delivered: u64,
    moved_at: Option<Duration>,
    stalled: bool,
}

impl SourcingWatch {
    pub fn new(stall_after: Duration) -> Self {
        SourcingWatch {
            stall_after,
            confirmed: 0,
            delivered: 0,
            moved_at: None,
            stalled: false,
        }
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Takes a reading at `now` (any monotonic clock's offset); returns the verdict when
    /// it changes.
    pub fn observe(&mut self, now: Duration, reading: SourcingReading) -> Option<SourcingVerdict> {
        if reading.last < self.confirmed {
            // The site stream was made anew: its sequences start again.
            self.confirmed = 0;
            self.delivered = 0;
        }
        let backlog = reading.last.saturating_sub(reading.confirmed);
        let mut moved = reading.confirmed > self.confirmed;
        // Deliveries count only while the centre is silent: a centre that refuses what
        // it is sent sees the same messages delivered again and again.
        if !reading.centre_answered && reading.delivered > self.delivered {
            moved = true;
        }
        self.confirmed = self.confirmed.max(reading.confirmed);
        self.delivered = self.delivered.max(reading.delivered);
        let idle = !reading.centre_listening || backlog == 0;
        if moved || idle || self.moved_at.is_none() {
            self.moved_at = Some(now);
        }
        let still_for = now.saturating_sub(self.moved_at.unwrap_or(now));
        let stalled = !idle && !moved && still_for >= self.stall_after;
        if stalled == self.stalled {
            return None;
        }
        self.stalled = stalled;
        Some(if stalled {
            SourcingVerdict::Stalled {
                backlog,
                confirmed: self.confirmed,
                for_: still_for,
            }
        } else {
            SourcingVerdict::Resumed
        })
    }
}

/// Makes the centre's stream (`central` in JetStream domain `centre_domain`, reached
/// through this connection's leaf node) source `site`'s stream from the site's domain
/// through the site's durable consumer ([`ensure_site_consumer`] first). Idempotent;
/// another site adding its own source at the same moment is retried (an update replaces
/// the whole list, so each site checks its source is there after its update).
pub async fn ensure_site_source(
    client: &async_nats::Client,
    centre_domain: &str,
    central: &str,
    site: &str,
) -> Result<SourceChange, BusError> {
    let centre = jetstream::with_domain(client.clone(), centre_domain);
    let name = site_stream_name(site);
    let api = format!("$JS.{}.API", site_domain(site));
    let wanted = stream::StreamConsumerSource::new(
        site_consumer_name(central),
        site_deliver_subject(site, central),
    );
    let stream_err = |reason: String| BusError::Stream {
        name: format!("{central} (domain {centre_domain})"),
        reason,
    };
    let mut added = false;
    for _ in 0..5 {
        let mut stream = centre
            .get_stream(central)
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        let info = stream
            .info()
            .await
            .map_err(|e| stream_err(e.to_string()))?
            .clone();
        let mut config = info.config;
        let ours = |s: &stream::Source| {
            s.name == name && s.external.as_ref().is_some_and(|e| e.api_prefix == api)
        };
        match config.sources.iter().flatten().find(|s| ours(s)) {
            Some(s) if s.consumer.as_ref() == Some(&wanted) => {
                return Ok(if added {
                    SourceChange::Added
                } else {
                    SourceChange::Unchanged
                });
            }
            Some(_) => {
                // A source without our durable (made by hand or an earlier version):
                // replacing it would restart at the site stream's first message, and
                // what is older than the centre's de-duplication window would be stored
                // twice. The operator decides.
                return Err(stream_err(format!(
                    "it already sources {name} without the durable consumer {}: remove that source from {central} at the centre (what the centre holds stays) and restart the producer",
                    wanted.name
                )));
            }
            None => {}
        }
        let sources = config.sources.get_or_insert_with(Vec::new);
        sources.push(stream::Source {
            name: name.clone(),
            external: Some(stream::External {
                api_prefix: api.clone(),
                delivery_prefix: None,
            }),
            consumer: Some(wanted.clone()),
            ..Default::default()
        });
        centre
            .update_stream(&config)
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        added = true;
    }
    Err(stream_err(format!(
        "the source {name} did not stay on the stream (other sites updating it at the same time)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_counts_from_the_best_confirmation() {
        let p = SiteProgress {
            last: 1_000,
            ack_floor: 200,
            delivered: 1_000,
            centre_listening: true,
        };
        assert_eq!(site_backlog(p, None), 800, "only the ack floor");
        assert_eq!(site_backlog(p, Some(990)), 10, "the centre's word");
        assert_eq!(
            site_backlog(p, Some(100)),
            800,
            "an older answer adds nothing"
        );
        assert_eq!(site_backlog(p, Some(1_000)), 0);
        assert_eq!(
            site_backlog(p, Some(5_000)),
            800,
            "a site stream made anew: the centre's count is of the old one"
        );
    }

    fn reading(last: u64, confirmed: u64, delivered: u64) -> SourcingReading {
        SourcingReading {
            last,
            confirmed,
            delivered,
            centre_answered: true,
            centre_listening: true,
        }
    }

    /// Feeds one reading a second from `from` s; the verdicts, with their second.
    fn run(
        watch: &mut SourcingWatch,
        from: u64,
        readings: impl IntoIterator<Item = SourcingReading>,
    ) -> Vec<(u64, SourcingVerdict)> {
        readings
            .into_iter()
            .zip(from..)
            .filter_map(|(r, t)| watch.observe(Duration::from_secs(t), r).map(|v| (t, v)))
            .collect()
    }

    #[test]
    fn a_slow_catch_up_is_not_a_stall() {
        let mut watch = SourcingWatch::new(Duration::from_secs(30));
        // 10 a second against a backlog of 10,000: moving, for two minutes.
        let slow = (0..120).map(|t| reading(10_000, t * 10, t * 10 + 50));
        assert_eq!(run(&mut watch, 0, slow), vec![]);
        assert!(!watch.is_stalled());
    }

    #[test]
    fn a_cut_link_or_an_empty_backlog_is_not_a_stall() {
        let mut watch = SourcingWatch::new(Duration::from_secs(30));
        let cut = (0..100).map(|t| SourcingReading {
            centre_listening: false,
            centre_answered: false,
            ..reading(500 + t * 10, 500, 500)
        });
        assert_eq!(run(&mut watch, 0, cut), vec![]);
        let caught_up = (0..100).map(|_| reading(2_000, 2_000, 2_000));
        assert_eq!(run(&mut watch, 100, caught_up), vec![]);
    }

    #[test]
    fn a_listening_centre_that_takes_nothing_is_a_stall_until_it_moves() {
        let mut watch = SourcingWatch::new(Duration::from_secs(30));
        // The consumer delivers again and again (the centre refuses), the count stays.
        let stuck = (0..40).map(|t| reading(2_000, 175, 175 + t % 3));
        assert_eq!(
            run(&mut watch, 0, stuck),
            vec![(
                30,
                SourcingVerdict::Stalled {
                    backlog: 1_825,
                    confirmed: 175,
                    for_: Duration::from_secs(30)
                }
            )]
        );
        assert!(watch.is_stalled());
        assert_eq!(
            run(&mut watch, 40, [reading(2_000, 176, 200)]),
            vec![(40, SourcingVerdict::Resumed)]
        );
        // A cut while stalled clears it too: the backlog waits for the link.
        let mut watch = SourcingWatch::new(Duration::from_secs(5));
        run(&mut watch, 0, (0..6).map(|_| reading(100, 10, 10)));
        assert!(watch.is_stalled());
        let cut = SourcingReading {
            centre_listening: false,
            ..reading(100, 10, 10)
        };
        assert_eq!(
            run(&mut watch, 6, [cut]),
            vec![(6, SourcingVerdict::Resumed)]
        );
    }

    #[test]
    fn with_the_centre_silent_deliveries_are_the_movement() {
        let mut watch = SourcingWatch::new(Duration::from_secs(30));
        let silent = |delivered| SourcingReading {
            centre_answered: false,
            ..reading(5_000, 100, delivered)
        };
        // The ack floor moves rarely under flow control; deliveries show the flow.
        assert_eq!(
            run(&mut watch, 0, (0..60).map(|t| silent(100 + t * 20))),
            vec![]
        );
        let verdicts = run(&mut watch, 60, (0..31).map(|_| silent(1_300)));
        assert!(
            matches!(
                verdicts[..],
                [(90, SourcingVerdict::Stalled { backlog: 4_900, .. })]
            ),
            "{verdicts:?}"
        );
    }

    #[test]
    fn a_site_stream_made_anew_starts_the_watch_again() {
        let mut watch = SourcingWatch::new(Duration::from_secs(30));
        run(&mut watch, 0, [reading(10_000, 9_000, 9_500)]);
        // Sequences from 1 again, the centre confirming them: moving, not a stall.
        let anew = (1..60).map(|t| reading(1_000, t * 10, t * 10 + 5));
        assert_eq!(run(&mut watch, 1, anew), vec![]);
    }

    #[test]
    fn site_names_become_streams_and_domains() {
        assert!(check_site_name("north-2").is_ok());
        for bad in ["", "North", "2north", "a.b", "a b", &"x".repeat(33)] {
            assert!(check_site_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(site_stream_name("north-2"), "TSPI_SITE_NORTH_2");
        assert_eq!(site_domain("north-2"), "site-north-2");
        assert_eq!(site_consumer_name("TSPI"), "CENTRE_TSPI");
        assert_eq!(
            site_deliver_subject("north-2", "TSPI"),
            "tspi-site.north-2.TSPI"
        );
    }

    #[test]
    fn a_site_stream_holds_telemetry_for_its_retention() {
        let spec = site_stream_spec(
            "a",
            Duration::from_secs(86_400),
            &StreamArgs::default(),
            &StreamPrefix::default(),
        )
        .unwrap();
        assert_eq!(spec.name, "TSPI_SITE_A");
        assert_eq!(spec.max_age, Duration::from_secs(86_400));
        assert!(
            spec.subjects.iter().all(|s| s.starts_with("tspi.")),
            "{:?}",
            spec.subjects
        );
        assert!(!spec.subjects.iter().any(|s| s.starts_with("tags")));
    }
}
