//! Running the workspace's binaries as a test does: a command-line run with a timeout
//! and its output, and SIGTERM to a process the test started.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
