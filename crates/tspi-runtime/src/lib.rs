//! Process plumbing every TSPI program shares, so each `main.rs` stays a page long:
//! logging flags, the single shutdown token, the Prometheus endpoint and exit codes.
//!
//! **Architecture Invariant:** nothing here knows about TSPI data; a program's behaviour
//! lives in its own crate's `run`.

pub mod logging;
pub mod metrics;
pub mod shutdown;
pub mod udp_target;

pub use logging::{init_logging, LogArgs, LogFormat};
pub use metrics::{serve_metrics, MetricsArgs};
pub use shutdown::shutdown_on_signals;
pub use udp_target::{resolve_targets, UdpTarget, UdpTargets};

use std::process::ExitCode;

/// Turn a program's result into its exit code: a one-line reason on stderr and status 1
/// for errors; success otherwise. A closed stdout (reader went away) is not an error.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `println!` that returns the write's error instead of panicking on it: a command whose
/// reader went away (`console clients | head -1`) ends quietly through [`exit_code`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` that returns the write's error; see [`outln!`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// The error chain on one line, without the repetition of sources that already quote
/// their cause in their own message.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if parts.last().is_some_and(|last| last.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// The process's soft limit on open descriptors (`Max open files` in /proc/self/limits),
/// when known. Listeners size their connection caps from it, so that a flood can never
/// take the descriptors a NATS reconnect or a database connection needs.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&limits)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A listener's connection cap: `wanted`, but never more than the descriptors left
/// after `reserve` for everything else, and at least `floor`.
pub fn connection_cap(wanted: usize, reserve: u64, floor: usize) -> usize {
    match open_files_limit() {
        Some(limit) => {
            let spare = usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
            wanted.min(spare).max(floor)
        }
        None => wanted,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Parse a human duration for flags: `250ms`, `5s`, `2m`, `1h`, `7d`, or bare seconds
/// (`1.5`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 5s, 2m, 1h, 7d"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => return Err(format!("invalid duration unit {other:?} in {text:?}")),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// Wall-clock UTC milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::{parse_duration, parse_open_files_limit};
    use std::time::Duration;

    #[test]
    fn open_files_limit_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            256                  4096                 files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(256));
        assert_eq!(parse_open_files_limit("nothing"), None);
        assert!(super::open_files_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e400").is_err());
    }
}
