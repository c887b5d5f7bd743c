//! A range site: a `nats-server` with its own JetStream domain, a leaf node of the centre
//! through a cuttable link.

use crate::{fault, NatsCluster, NatsServer};
use std::path::Path;

/// A range site's nats-server ([`NatsServer::start_site_with`]) and its WAN: one
/// [`fault::LinkProxy`] per centre node, to cut, delay or throttle.
#[derive(Debug)]
pub struct SiteServer {
    pub name: String,
    pub server: NatsServer,
    pub links: Vec<fault::LinkProxy>,
}

impl SiteServer {
    /// Site `name` as a leaf node of every node of `centre` (a [`NatsCluster::start_centre`]).
    pub async fn start(centre: &NatsCluster, name: &str) -> SiteServer {
        Self::start_with(centre, name, "").await
    }

    /// With `extra` server configuration ([`NatsServer::start_site_with`]).
    pub async fn start_with(centre: &NatsCluster, name: &str, extra: &str) -> SiteServer {
        let links: Vec<fault::LinkProxy> = centre
            .leaf_addrs()
            .into_iter()
            .map(fault::LinkProxy::start)
            .collect();
        let remotes: Vec<String> = links
            .iter()
            .map(|l| format!("nats-leaf://{}", l.addr()))
            .collect();
        let server = NatsServer::start_site_with(name, &remotes, extra).await;
        SiteServer {
            name: name.to_owned(),
            server,
            links,
        }
    }

    /// Site `name` from an operator's site configuration (`deploy/nats/site.conf`), as
    /// written except its addresses and store (loopback), a leaf node of every node of
    /// `centre` (a centre from [`NatsCluster::start_from_template`] with a `leafnodes`
    /// block) through one cuttable link each: `CENTRE_LEAF_URLS` is set to those links
    /// with the site's credentials at the centre (`leaf_user`, `leaf_password`), beside
    /// `env`. Does not wait for JetStream: the caller asks with its own credentials.
    pub fn start_from_template(
        centre: &NatsCluster,
        name: &str,
        template: &Path,
        (leaf_user, leaf_password): (&str, &str),
        env: &[(String, String)],
    ) -> SiteServer {
        let links: Vec<fault::LinkProxy> = centre
            .leaf_addrs()
            .into_iter()
            .map(fault::LinkProxy::start)
            .collect();
        assert!(!links.is_empty(), "the centre accepts no leaf nodes");
        let urls: Vec<String> = links
            .iter()
            .map(|l| format!("\"nats-leaf://{leaf_user}:{leaf_password}@{}\"", l.addr()))
            .collect();
        let mut env = env.to_vec();
        env.push((
            "CENTRE_LEAF_URLS".to_owned(),
            format!("[{}]", urls.join(", ")),
        ));
        let mut server =
            NatsServer::configure_from_template(template, &format!("site-{name}"), None, "", &env);
        server.spawn();
        server.wait_listening();
        SiteServer {
            name: name.to_owned(),
            server,
            links,
        }
    }

    /// Every link to the centre down (connections reset, new ones refused).
    pub fn cut(&self) {
        self.links.iter().for_each(fault::LinkProxy::cut);
    }

    pub fn heal(&self) {
        self.links.iter().for_each(fault::LinkProxy::heal);
    }
}
