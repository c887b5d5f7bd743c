//! A test that cannot run its subject on this machine (no TimescaleDB, no container
//! engine, no FUSE) does not pass silently: it says so on stderr, and appends a line to
//! the skip log the test command counts in its closing report (`TSPI_SKIP_LOG`). Where
//! the test command has installed the dependency (`TSPI_REQUIRE` names it), a skip would
//! hide a broken install, so it fails the test instead.

use std::io::Write;

/// What a test may lack, by the name `TSPI_REQUIRE` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependency {
    TimescaleDb,
    ContainerEngine,
    Fuse,
    /// The deploy-file checkers (Docker's compose, BuildKit's parser, systemd-analyze),
    /// switched off by `TSPI_SKIP_COMPOSE_CHECK`.
    DeployCheckers,
}

impl Dependency {
    pub fn name(self) -> &'static str {
        match self {
            Dependency::TimescaleDb => "timescaledb",
            Dependency::ContainerEngine => "docker",
            Dependency::Fuse => "fuse",
            Dependency::DeployCheckers => "deploy-checkers",
        }
    }
}

/// Whether `required` (a comma-separated `TSPI_REQUIRE`) names `dependency`.
fn promised(required: &str, dependency: Dependency) -> bool {
    required.split(',').any(|d| d.trim() == dependency.name())
}

/// The line the skip log holds for one skipped test.
fn log_line(test: &str, dependency: Dependency, why: &str) -> String {
    let why = why.replace('\n', " ");
    format!("{test}\t{}\t{why}\n", dependency.name())
}

/// Report that `test` was skipped for want of `dependency` (`why` says what is missing).
///
/// # Panics
/// When `TSPI_REQUIRE` names the dependency: the test command installed it, so its
/// absence is a failure.
pub fn skipped(test: &str, dependency: Dependency, why: &str) {
    let required = std::env::var("TSPI_REQUIRE").unwrap_or_default();
    assert!(
        !promised(&required, dependency),
        "{test}: {} was installed for this run (TSPI_REQUIRE={required}) but is not usable: {why}",
        dependency.name()
    );
    eprintln!("SKIPPED {test}: {why}");
    if let Some(path) = std::env::var_os("TSPI_SKIP_LOG") {
        // One write of one line in append mode: tests running side by side do not
        // interleave their lines.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(log_line(test, dependency, why).as_bytes()));
        if let Err(e) = appended {
            eprintln!("skip log {}: {e}", path.to_string_lossy());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_is_promised_only_when_named() {
        assert!(promised("timescaledb,docker", Dependency::TimescaleDb));
        assert!(promised(" docker ", Dependency::ContainerEngine));
        assert!(!promised("timescaledb", Dependency::Fuse));
        assert!(!promised("", Dependency::TimescaleDb));
        assert!(!promised("timescaledb-extra", Dependency::TimescaleDb));
    }

    #[test]
    fn a_skip_is_one_tab_separated_line() {
        assert_eq!(
            log_line("a_test", Dependency::Fuse, "no /dev/fuse\nat all"),
            "a_test\tfuse\tno /dev/fuse at all\n"
        );
    }
}
