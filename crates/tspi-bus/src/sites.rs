//! Range sites (SPEC §4, "Sites"): a site's nats-server is a leaf node of the centre with
//! its own JetStream domain, `site-<name>`; its producer stores into the site stream
//! `TSPI_SITE_<NAME>` there and keeps working with the WAN down; the centre's `TSPI`
//! sources every site stream across domains, de-duplicating by `Nats-Msg-Id`, so a
//! backlog flows in order once the link is back and nothing is stored twice.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
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

/// What [`ensure_site_source`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceChange {
    /// The centre's stream already sourced the site stream.
    Unchanged,
    /// The source was added.
    Added,
}

/// Makes the centre's stream (`central` in JetStream domain `centre_domain`, reached
/// through this connection's leaf node) source `site`'s stream from the site's domain.
/// Idempotent; another site adding its own source at the same moment is retried (an
/// update replaces the whole list, so each site checks its source is there after its
/// update).
pub async fn ensure_site_source(
    client: &async_nats::Client,
    centre_domain: &str,
    central: &str,
    site: &str,
) -> Result<SourceChange, BusError> {
    let centre = jetstream::with_domain(client.clone(), centre_domain);
    let name = site_stream_name(site);
    let api = format!("$JS.{}.API", site_domain(site));
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
        let present = config.sources.as_ref().is_some_and(|sources| {
            sources
                .iter()
                .any(|s| s.name == name && s.external.as_ref().is_some_and(|e| e.api_prefix == api))
        });
        if present {
            return Ok(if added {
                SourceChange::Added
            } else {
                SourceChange::Unchanged
            });
        }
        let sources = config.sources.get_or_insert_with(Vec::new);
        sources.retain(|s| s.name != name);
        sources.push(stream::Source {
            name: name.clone(),
            external: Some(stream::External {
                api_prefix: api.clone(),
                delivery_prefix: None,
            }),
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
    fn site_names_become_streams_and_domains() {
        assert!(check_site_name("north-2").is_ok());
        for bad in ["", "North", "2north", "a.b", "a b", &"x".repeat(33)] {
            assert!(check_site_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(site_stream_name("north-2"), "TSPI_SITE_NORTH_2");
        assert_eq!(site_domain("north-2"), "site-north-2");
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
