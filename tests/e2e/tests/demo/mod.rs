//! What the demo tests share: free ports for one demo, running `demo.sh` in its own
//! session with the suite's binaries, and checking it left nothing behind.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tspi_test_support::{workspace_bin, workspace_root};

/// Ports for one demo: base (P..P+2, P+100..P+102, P+200..P+202), UDP, metrics (M..M+3),
/// PostgreSQL (G, G+1), the web display (W) — all free a moment ago.
pub struct DemoPorts {
    pub base: u16,
    pub udp: u16,
    pub metrics: u16,
    pub pg: u16,
    pub web: u16,
}

pub fn tcp_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl DemoPorts {
    pub fn tcp(&self) -> Vec<u16> {
        let b = self.base;
        [
            b,
            b + 1,
            b + 2,
            b + 100,
            b + 101,
            b + 102,
            b + 200,
            b + 201,
            b + 202,
            self.metrics,
            self.metrics + 1,
            self.metrics + 2,
            self.metrics + 3,
            self.pg,
            self.pg + 1,
            self.web,
        ]
        .into_iter()
        // With --sites: each site's client and monitoring port and producer metrics, and
        // the centre's leaf-node ports.
        .chain((0..4).flat_map(|k| [b + 3 + k, b + 203 + k, self.metrics + 4 + k]))
        .chain(b + 103..b + 106)
        .collect()
    }

    /// `salt` keeps the tests of this file (one process, run in parallel) apart.
    pub fn pick(salt: u16) -> DemoPorts {
        // Away from the demo's defaults and the kernel's ephemeral range (32768+).
        let seed = (std::process::id() as u16).wrapping_add(salt.wrapping_mul(13));
        for attempt in 0..200u16 {
            let base = 20_000 + (seed.wrapping_add(attempt.wrapping_mul(37)) % 40) * 250;
            let p = DemoPorts {
                base,
                udp: base + 10,
                metrics: base + 20,
                pg: base + 30,
                web: base + 40,
            };
            if p.tcp().into_iter().all(tcp_free) && UdpSocket::bind(("127.0.0.1", p.udp)).is_ok() {
                return p;
            }
        }
        panic!("no free port block for the demo");
    }

    pub fn args(&self) -> Vec<String> {
        [
            ("--base-port", self.base),
            ("--udp-port", self.udp),
            ("--metrics-port", self.metrics),
            ("--pg-port", self.pg),
            ("--web-port", self.web),
        ]
        .iter()
        .flat_map(|(f, p)| [f.to_string(), p.to_string()])
        .collect()
    }
}

pub fn bin_dir() -> PathBuf {
    workspace_bin("producer").parent().unwrap().to_path_buf()
}

/// `demo.sh <args>` in its own session (so what it leaves behind can be found), with
/// its lock files in `tmp` and the suite's binaries. A background test runner may have
/// SIGINT ignored, and bash cannot trap a signal ignored on entry: the demo gets the
/// default disposition a terminal would give it.
pub fn demo_command(args: &[String], tmp: &Path) -> Command {
    let mut cmd = Command::new("setsid");
    cmd.args(["env", "--default-signal=INT"])
        .arg(workspace_root().join("demo.sh"))
        .args(args)
        .env("TMPDIR", tmp)
        .env("TSPI_DEMO_BIN_DIR", bin_dir())
        .env_remove("NATS_URL")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null());
    cmd
}

/// Run the demo to its end; its output and its session id.
pub fn demo(args: &[String], tmp: &Path) -> (Output, i32) {
    let child = demo_command(args, tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let session = child.id() as i32;
    (child.wait_with_output().unwrap(), session)
}

/// A demo on `ports` with `extra` flags and its logs in `logs`, run to its end, which
/// must be a success: its stdout, stderr and session id.
pub fn demo_to_end(
    ports: &DemoPorts,
    extra: &[&str],
    logs: &Path,
    tmp: &Path,
) -> (String, String, i32) {
    let mut args = ports.args();
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend(["--log-dir".to_owned(), logs.display().to_string()]);
    let (o, session) = demo(&args, tmp);
    let (out, err) = text(&o);
    assert!(o.status.success(), "demo failed:\n{out}\n{err}");
    (out, err, session)
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Processes still in session `sid` (everything the demo started stays in it).
pub fn session_members(sid: i32) -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp session …; comm may hold spaces: split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(3).and_then(|s| s.parse::<i32>().ok()) == Some(sid) {
            left.push(stat.split(')').next().unwrap_or_default().to_owned());
        }
    }
    left
}

/// A scratch dir for one demo run and the `--log-dir` inside it. PostgreSQL runs as
/// nobody under root: it must reach its data dir inside.
pub fn run_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let logs = tmp.path().join("logs");
    (tmp, logs)
}

/// Nothing the demo started is left in its session, and every port is free again.
pub fn assert_nothing_left(session: i32, ports: &DemoPorts) {
    tspi_test_support::wait_until_blocking(std::time::Duration::from_secs(10), || {
        session_members(session).is_empty()
    });
    let left = session_members(session);
    assert!(left.is_empty(), "demo left processes: {left:?}");
    let bound: Vec<u16> = ports.tcp().into_iter().filter(|p| !tcp_free(*p)).collect();
    assert!(bound.is_empty(), "ports still bound: {bound:?}");
    assert!(UdpSocket::bind(("127.0.0.1", ports.udp)).is_ok());
}
