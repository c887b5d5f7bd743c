//! Real servers for tests: `nats-server` with JetStream, single node or a three-node
//! cluster, and PostgreSQL (primary and streaming replica, [`postgres`]), on free loopback
//! ports, with their stores in temp dirs.
//!
//! Tests in this workspace never use in-memory stand-ins. Every server started here is
//! killed and its directory removed on `Drop`; a missing binary fails the test loudly with
//! the command that installs it, rather than skipping.
//!
//! By server: `nats` (one node), `cluster` (N nodes, a centre), `site` (a leaf-node
//! site), `node_config` (the deploy config as their template), [`postgres`], [`browser`]
//! (Chromium); and what tests do with them: [`fault`], [`power_cut`], `process` (binaries
//! and signals), [`capture`], [`skip`]. This file: where things are (the workspace, its
//! binaries, free ports).

pub mod browser;
pub mod capture;
mod cluster;
pub mod fault;
mod nats;
mod node_config;
pub mod postgres;
pub mod power_cut;
mod process;
mod site;
pub mod skip;

pub use browser::Browser;
pub use capture::Captured;
pub use cluster::NatsCluster;
pub use fault::{
    bounce, wait_until, wait_until_blocking, Bounce, BouncePlan, LinkProxy, LinkState, Paused,
};
pub use nats::{
    consumer_info, nats_server_binary, publish_acked, stream_info, stream_leader, wait_jetstream,
    NatsServer, INSTALL_HINT,
};
pub use postgres::{pg_bindir, timescaledb_installed, BackgroundQuery, PgServer, PG_USER};
pub use power_cut::{CutReport, PowerCutMount};
pub use process::{run_cli, sigterm, CliOutput};
pub use site::SiteServer;
pub use skip::{skipped, Dependency};

use std::collections::HashSet;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The workspace root, from this crate's manifest dir.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
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
