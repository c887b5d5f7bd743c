//! `./demo.sh --compose` (issue 23) on this machine's Docker engine, with the images made
//! locally (deploy/images/build.sh, from the suite's own binaries) and the stack of
//! deploy/docker-compose.yml: a minute of traffic arrives exactly once at the receiver
//! and in the archive on the primary and the replica; and the same while a NATS node's
//! container and the primary database's container are killed (kill -9 of their main
//! process, as a crash: Docker's restart policy brings them back) mid-run. Where no
//! container engine can run (not root, no Docker), each test says SKIPPED and why.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod demo;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use demo::{demo_command, run_dir, session_members, DemoPorts};
use tspi_test_support::workspace_root;

/// Wait for `condition`, or fail saying what did not happen. Polled four times a second:
/// each poll asks the Docker engine, which must not become the load under test.
fn wait_until(within: Duration, what: &str, condition: impl FnMut() -> bool) {
    let reached = tspi_test_support::wait_until_blocking(within, condition);
    assert!(reached.is_some(), "{what}: not within {within:?}");
}

/// One compose stack at a time: the project name (tspi-demo) is the demo's.
static STACK: Mutex<()> = Mutex::new(());
const PROJECT: &str = "tspi-demo";

/// A Docker engine for the test: the one running, or one started here and stopped on drop.
struct Engine {
    state: tempfile::TempDir,
}

impl Engine {
    /// The engine, or `None` with `test` reported skipped.
    fn start(test: &str) -> Option<Engine> {
        let state = tempfile::tempdir().unwrap();
        let out = Command::new(workspace_root().join("deploy/images/engine.sh"))
            .arg("start")
            .arg(state.path())
            .output()
            .unwrap();
        if !out.status.success() {
            tspi_test_support::skipped(
                test,
                tspi_test_support::Dependency::ContainerEngine,
                &format!(
                    "no container engine: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
            return None;
        }
        eprintln!(
            "container engine: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        Some(Engine { state })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = Command::new(workspace_root().join("deploy/images/engine.sh"))
            .arg("stop")
            .arg(self.state.path())
            .status();
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn compose_args(ports: &DemoPorts, duration: &str, logs: &Path) -> Vec<String> {
    let mut args = vec!["--compose".to_owned()];
    args.extend(ports.args());
    args.extend(
        [
            "--duration",
            duration,
            "--count",
            "5",
            "--rate",
            "10",
            "--log-dir",
        ]
        .map(String::from),
    );
    args.push(logs.display().to_string());
    args
}

/// The demo running in the background, its output in files.
struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Running {
    fn start(args: &[String], tmp: &Path) -> Running {
        let (out, err) = (tmp.join("demo.out"), tmp.join("demo.err"));
        let child = demo_command(args, tmp)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Running { child, out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Status lines so far whose archived rows are at least `rows`.
    fn archived_at_least(&self, rows: u64) -> bool {
        self.stdout().lines().any(|l| {
            l.starts_with("demo ")
                && l.split("archived rows ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n >= rows)
        })
    }

    fn wait(mut self, within: Duration) -> (i32, String, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-INT", "--", &format!("-{}", self.child.id())])
                    .status();
                let _ = self.child.wait();
                panic!(
                    "the compose demo did not finish within {within:?}:\n{}\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        (status.code().unwrap_or(-1), self.stdout(), self.stderr())
    }
}

/// The verdict line says every count equals what was sent, and that was `sent`.
fn assert_exact(out: &str, err: &str, sent: u64) {
    let verdict = out
        .lines()
        .find(|l| l.starts_with("demo: exact:") || l.starts_with("demo: NOT exact:"))
        .unwrap_or_else(|| panic!("no verdict:\n{out}\n{err}"));
    assert!(
        verdict.starts_with(&format!("demo: exact: sent {sent},")),
        "{verdict}\n{out}\n{err}"
    );
    for count in [
        "published",
        "receiver lines",
        "distinct lines",
        "primary rows",
        "primary distinct ids",
        "replica rows",
    ] {
        assert!(
            verdict.contains(&format!("{count} {sent}")),
            "{count}: {verdict}"
        );
    }
}

/// The stack is gone: no container and no volume of the project, the ports free, no
/// process left in the demo's session.
fn assert_stack_gone(session: i32, ports: &DemoPorts) {
    let label = format!("label=com.docker.compose.project={PROJECT}");
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &label]),
        "",
        "containers left"
    );
    assert_eq!(
        docker(&["volume", "ls", "-q", "--filter", &label]),
        "",
        "volumes left"
    );
    demo::assert_nothing_left(session, ports);
    assert!(session_members(session).is_empty());
}

#[test]
fn a_compose_demo_of_a_minute_is_exact() {
    let _one = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_engine) = Engine::start("a_compose_demo_of_a_minute_is_exact") else {
        return;
    };
    let (tmp, logs) = run_dir();
    let ports = DemoPorts::pick(7);
    let started = Instant::now();
    let demo = Running::start(&compose_args(&ports, "60", &logs), tmp.path());
    let session = demo.child.id() as i32;
    let (code, out, err) = demo.wait(Duration::from_secs(900));
    eprintln!(
        "compose demo (images, up, 60 s, drain, down) took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, 0, "{out}\n{err}");
    // 5 aircraft × 10 Hz × 60 s.
    assert_exact(&out, &err, 3000);
    assert!(
        out.lines().any(
            |l| l.starts_with("demo: web display up at http://127.0.0.1:") && l.contains("?token=")
        ),
        "{out}"
    );
    let status: Vec<&str> = out.lines().filter(|l| l.starts_with("demo ")).collect();
    assert!(status.len() >= 10, "{out}");
    // Twelve long-running containers and the generator.
    assert!(
        status.iter().any(|l| l.ends_with("containers up 14")),
        "{out}"
    );
    let compose_log = std::fs::read_to_string(logs.join("compose.log")).unwrap();
    // TimescaleDB is preloaded by the image's entrypoint; the replayer made PLAYOUT.
    assert!(
        !compose_log.contains("not in shared_preload_libraries"),
        "{compose_log}"
    );
    assert!(
        !compose_log.contains("PLAYOUT does not exist"),
        "{compose_log}"
    );
    assert_stack_gone(session, &ports);
}

#[test]
fn a_compose_demo_loses_nothing_when_a_nats_node_and_the_primary_are_killed() {
    let _one = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_engine) =
        Engine::start("a_compose_demo_loses_nothing_when_a_nats_node_and_the_primary_are_killed")
    else {
        return;
    };
    let (tmp, logs) = run_dir();
    let ports = DemoPorts::pick(8);
    let demo = Running::start(&compose_args(&ports, "60", &logs), tmp.path());
    let session = demo.child.id() as i32;

    // A crash is the container's main process dying (kill -9 from the host); Docker's
    // restart policy brings it back, as it would after a real one. (`docker kill` would
    // count as an operator's stop and leave it down.)
    let crash = |service: &str| {
        let container = format!("{PROJECT}_{service}_1");
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &container]);
        let restarts = |c: &str| docker(&["inspect", "-f", "{{.RestartCount}}", c]);
        let before = restarts(&container);
        let status = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        assert!(status.success(), "kill -9 {pid} ({container})");
        eprintln!("killed {container} (pid {pid})");
        wait_until(Duration::from_secs(60), "the container restarted", || {
            restarts(&container) != before
                && docker(&["inspect", "-f", "{{.State.Running}}", &container]) == "true"
        });
    };
    wait_until(Duration::from_secs(600), "the demo archives data", || {
        demo.archived_at_least(200)
    });
    crash("nats2");
    // The archive goes on across the node's loss before the next fault.
    let rows = |d: &Running| {
        d.stdout()
            .lines()
            .filter_map(|l| {
                l.split("archived rows ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
    };
    let after_nats = rows(&demo) + 200;
    wait_until(
        Duration::from_secs(60),
        "archiving after the NATS crash",
        || demo.archived_at_least(after_nats),
    );
    crash("db-primary");
    let (code, out, err) = demo.wait(Duration::from_secs(600));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_exact(&out, &err, 3000);
    // The crash reached the archiver: a batch it was writing failed, or (the crash fell
    // between batches) its pooled connections ended with an error (deadpool-postgres
    // says so, closed or reset, and again when it cannot recycle one).
    let compose_log = std::fs::read_to_string(logs.join("compose.log")).unwrap();
    let saw_it = compose_log.lines().any(|l| {
        l.split('|')
            .next()
            .is_some_and(|who| who.contains("archiver"))
            && [
                "batch write failed; retrying",
                "Connection error: ",
                "Connection could not be recycled",
            ]
            .iter()
            .any(|sign| l.contains(sign))
    });
    assert!(saw_it, "the archiver saw the primary go: {compose_log}");
    assert_stack_gone(session, &ports);
}
