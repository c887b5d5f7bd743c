//! `alarmer`: flags → the rule file, checked → logging → NATS → `tspi_alarmer::run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use prometheus_client::registry::Registry;
use tspi_alarmer::{run, AlarmerMetrics, AlarmerOptions};
use tspi_alarms::RuleSet;
use tspi_bus::{connect, NatsArgs};
use tspi_core::geo::LocalFrame;
use tspi_core::StreamPrefix;
use tspi_display::placement::{parse_sensor_site, parse_site};
use tspi_display::Placement;
use tspi_runtime::{
    exit_code, init_logging, parse_duration, shutdown_on_signals, LogArgs, MetricsArgs,
};

const EXAMPLES: &str = "\
Examples:
  # The range's rules (deploy/alarms/rules.toml shows every kind), spherical sensors
  # placed from the range origin
  alarmer --rules /etc/tspi/rules.toml --origin 34.9,-117.9,700 --metrics-addr 0.0.0.0:9467

  # Only check a rule file (one line per mistake, with its line number)
  alarmer --rules rules.toml --check

  # Operators: console alarms; console ack 'floor/10001'";

/// Evaluate alarms and range-safety boundaries on every telemetry record; publish each
/// alarm transition on tspi.alarm.event.<rule>.<key>; answer alarms.ctrl.
#[derive(Debug, Parser)]
#[command(name = "alarmer", version, after_help = EXAMPLES)]
struct Cli {
    /// The rule file (TOML; SPEC §5 alarmer).
    #[arg(long, env = "TSPI_ALARM_RULES")]
    rules: PathBuf,
    /// Check the rule file and exit.
    #[arg(long)]
    check: bool,
    /// Range origin LAT,LON[,ALT]: where spherical sensors without their own site are.
    #[arg(long, env = "TSPI_ORIGIN", value_name = "LAT,LON[,ALT]", value_parser = parse_site)]
    origin: Option<LocalFrame>,
    /// A spherical sensor's own site, ID=LAT,LON[,ALT] (repeatable).
    #[arg(long, value_name = "ID=LAT,LON[,ALT]", value_parser = parse_sensor_site)]
    sensor_site: Vec<(u16, LocalFrame)>,
    /// The stream evaluated (and where transitions are stored).
    #[arg(long, default_value = "TSPI")]
    stream: String,
    #[arg(long, default_value = "tspi")]
    stream_prefix: String,
    /// Durable consumer name (one alarmer per deployment: the evaluation is in one place).
    #[arg(long, default_value = "alarmer")]
    durable: String,
    /// How often silent tracks and shelving are looked at.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    tick: Duration,
    /// Redelivery delay for records pulled but not acknowledged.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    ack_wait: Duration,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit_code(start(cli))
}

fn start(cli: Cli) -> anyhow::Result<()> {
    init_logging(&cli.log)?;
    let rules = Arc::new(RuleSet::load(&cli.rules).map_err(anyhow::Error::msg)?);
    if cli.check {
        println!(
            "{}: {} rules, all good",
            cli.rules.display(),
            rules.rules.len()
        );
        return Ok(());
    }
    anyhow::ensure!(!cli.tick.is_zero(), "--tick must be more than 0");
    let options = AlarmerOptions {
        stream: cli.stream.clone(),
        prefix: StreamPrefix::new(&cli.stream_prefix)?,
        durable: cli.durable.clone(),
        placement: Placement::new(cli.origin, cli.sensor_site.iter().copied().collect()),
        tick: cli.tick,
        ack_wait: cli.ack_wait,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async move {
            let shutdown = shutdown_on_signals()?;
            let client = connect(&cli.nats, "tspi-alarmer").await?;
            let mut registry = Registry::with_prefix("tspi_alarmer");
            let metrics = AlarmerMetrics::new(&mut registry);
            cli.metrics.serve(registry, shutdown.clone()).await?;
            run(options, client, rules, metrics, shutdown).await
        })
}
