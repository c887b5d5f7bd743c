//! A cluster of `nats-server` nodes on loopback (from the deploy node config's template
//! too), a range centre with leaf-node ports, partitionable links and shared-fate kills.

use crate::{fault, free_port, NatsServer};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// A three-node (or `n`-node) JetStream cluster on loopback.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    /// `(from, to, proxy)`: the route links of a partitionable cluster.
    links: Vec<(usize, usize, fault::LinkProxy)>,
}

impl NatsCluster {
    /// Start `n` nodes, fully routed, and wait until JetStream has a meta leader.
    pub async fn start(n: usize) -> NatsCluster {
        let cluster = Self::start_with_config(n, "");
        cluster.wait_jetstream(Duration::from_secs(60)).await;
        cluster
    }

    /// Like [`NatsCluster::start`], with `extra` appended to every node's configuration
    /// (operator mode, accounts). Waits only until the nodes listen: when `extra` locks
    /// the cluster down the caller waits for JetStream with its own credentials.
    pub fn start_with_config(n: usize, extra: &str) -> NatsCluster {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let cluster_name = format!("tspi-test-{}", free_port());
        let nodes: Vec<NatsServer> = (0..n)
            .map(|i| {
                NatsServer::configure(
                    &format!("n{}", i + 1),
                    Some((&cluster_name, cluster_ports[i], &cluster_ports)),
                    extra,
                )
            })
            .collect();
        Self::launch(nodes)
    }

    /// Like [`NatsCluster::start_with_config`], with `jetstream_lines` added inside every
    /// node's `jetstream {}` block (e.g. `sync_interval: always`) and `cluster_lines`
    /// inside its `cluster {}` block (e.g. `no_advertise: true`, so that clients learn no
    /// other URLs than they were given). Does not wait for JetStream.
    pub fn start_with_block_lines(
        n: usize,
        jetstream_lines: &str,
        cluster_lines: &str,
    ) -> NatsCluster {
        Self::launch(Self::configure_with_block_lines(
            n,
            jetstream_lines,
            cluster_lines,
        ))
    }

    fn configure_with_block_lines(
        n: usize,
        jetstream_lines: &str,
        cluster_lines: &str,
    ) -> Vec<NatsServer> {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let cluster_name = format!("tspi-test-{}", free_port());
        (0..n)
            .map(|i| {
                let node = NatsServer::configure(
                    &format!("n{}", i + 1),
                    Some((&cluster_name, cluster_ports[i], &cluster_ports)),
                    "",
                );
                node.add_to_block("jetstream", jetstream_lines);
                node.add_to_block("cluster", cluster_lines);
                node
            })
            .collect()
    }

    /// Like [`NatsCluster::start_with_block_lines`], with node `i`'s store in
    /// `store_root/n<i+1>` (e.g. on a [`PowerCutMount`]) instead of its temp dir.
    pub fn start_with_stores_in(n: usize, jetstream_lines: &str, store_root: &Path) -> NatsCluster {
        let nodes = Self::configure_with_block_lines(n, jetstream_lines, "");
        for node in &nodes {
            node.set_store_dir(&store_root.join(&node.name));
        }
        Self::launch(nodes)
    }

    /// Kill -9 every node at once (a site-wide crash): the signals go out before any is
    /// reaped. Restart them with [`NatsServer::restart`].
    pub fn kill_all(&mut self) {
        for node in &self.nodes {
            if let Some(pid) = node.pid() {
                #[allow(unsafe_code)]
                // SAFETY: kill(2) with the pid of a server this cluster started.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Like [`NatsCluster::start_with_config`], but every route goes through a
    /// [`fault::LinkProxy`] per direction (node `i` dials node `j` through link `(i, j)`),
    /// so [`NatsCluster::isolate`] can partition a node from the others while its clients
    /// stay connected. Nodes advertise an unreachable route address, so none learns a
    /// direct path by gossip. Does not wait for JetStream.
    pub fn start_partitionable(n: usize, extra: &str) -> NatsCluster {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let cluster_name = format!("tspi-test-{}", free_port());
        let mut links = Vec::new();
        for from in 0..n {
            for to in (0..n).filter(|&to| to != from) {
                let target = std::net::SocketAddr::from(([127, 0, 0, 1], cluster_ports[to]));
                links.push((from, to, fault::LinkProxy::start(target)));
            }
        }
        let nowhere = free_port();
        let nodes: Vec<NatsServer> = (0..n)
            .map(|i| {
                let routes: Vec<u16> = links
                    .iter()
                    .filter(|(from, _, _)| *from == i)
                    .map(|(_, _, proxy)| proxy.addr().port())
                    .collect();
                let node = NatsServer::configure(
                    &format!("n{}", i + 1),
                    Some((&cluster_name, cluster_ports[i], &routes)),
                    extra,
                );
                node.add_to_block("cluster", &format!("advertise: \"127.0.0.1:{nowhere}\""));
                node
            })
            .collect();
        let mut cluster = Self::launch(nodes);
        cluster.links = links;
        cluster
    }

    /// Cut every route link between node `i` and the others (both directions).
    pub fn isolate(&self, i: usize) {
        for (from, to, proxy) in &self.links {
            if *from == i || *to == i {
                proxy.cut();
            }
        }
    }

    /// Restore every route link.
    pub fn heal(&self) {
        for (_, _, proxy) in &self.links {
            proxy.heal();
        }
    }

    /// Start `n` nodes from an operator's node configuration (`deploy/nats/node.conf`),
    /// as written, except what must differ on one machine: each node's name, its client,
    /// monitoring and route ports (loopback), its store directory and the route list.
    /// Files the template `include`s are copied next to each node's config (nats-server
    /// resolves includes relative to the including file); `extra` is appended (a TLS
    /// block, say) and `env` is given to every server process (config variables such as
    /// passwords). Does not wait for JetStream: a locked-down cluster needs credentials to
    /// ask, so the caller waits with its own.
    pub fn start_from_template(
        n: usize,
        template: &Path,
        extra: &str,
        env: &[(String, String)],
    ) -> NatsCluster {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let nodes: Vec<NatsServer> = (0..n)
            .map(|i| {
                NatsServer::configure_from_template(
                    template,
                    &format!("n{}", i + 1),
                    Some((cluster_ports[i], &cluster_ports)),
                    extra,
                    env,
                )
            })
            .collect();
        Self::launch(nodes)
    }

    /// A range's centre: `n` routed nodes with JetStream domain `centre`, each accepting
    /// leaf nodes (sites) on a port of its own ([`NatsCluster::leaf_addrs`]). Waits for
    /// JetStream.
    pub async fn start_centre(n: usize) -> NatsCluster {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let cluster_name = format!("tspi-centre-{}", free_port());
        let nodes: Vec<NatsServer> = (0..n)
            .map(|i| {
                let leaf_port = free_port();
                let node = NatsServer::configure(
                    &format!("c{}", i + 1),
                    Some((&cluster_name, cluster_ports[i], &cluster_ports)),
                    // Not advertised: a site reaches the centre only through the
                    // addresses it was given (a WAN link a test can cut).
                    &format!(
                        "leafnodes {{\n  listen: 127.0.0.1:{leaf_port}\n  no_advertise: true\n}}\n"
                    ),
                );
                node.add_to_block("jetstream", "domain: centre");
                node
            })
            .collect();
        let cluster = Self::launch(nodes);
        cluster.wait_jetstream(Duration::from_secs(60)).await;
        cluster
    }

    /// The leaf-node listen address of every node (centres from
    /// [`NatsCluster::start_centre`]; empty otherwise).
    pub fn leaf_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let conf = fs::read_to_string(&n.config).ok()?;
                let block = conf.split("leafnodes {").nth(1)?;
                let listen = block
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("listen:"))?;
                listen.trim().parse().ok()
            })
            .collect()
    }

    fn launch(mut nodes: Vec<NatsServer>) -> NatsCluster {
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_listening();
        }
        NatsCluster {
            nodes,
            links: Vec::new(),
        }
    }

    /// Every node's client URL, for `--nats-server` flags.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Wait until JetStream answers account info through the cluster (a meta leader
    /// exists), or panic with the logs.
    pub async fn wait_jetstream(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match async_nats::connect(self.urls()).await {
                Ok(client) => {
                    let js = async_nats::jetstream::new(client);
                    match js.query_account().await {
                        Ok(_) => return,
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let logs: Vec<String> = self.nodes.iter().map(|n| n.log_tail(20)).collect();
        panic!(
            "JetStream cluster not ready within {timeout:?}: {last}\n{}",
            logs.join("\n---\n")
        );
    }
}
