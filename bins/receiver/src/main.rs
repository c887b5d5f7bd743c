//! `receiver`: flags → validated options → logging → NATS → `tspi_receiver::run`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use prometheus_client::registry::Registry;
use tspi_bus::{connect, NatsArgs};
use tspi_core::StreamPrefix;
use tspi_receiver::{run, Deliver, ReceiverMetrics, ReceiverOptions, StopReason};
use tspi_runtime::{
    exit_code, init_logging, parse_duration, shutdown_on_signals, LogArgs, MetricsArgs,
};

const EXAMPLES: &str = "\
Examples:
  # Follow new telemetry as JSON lines
  receiver --nats-server nats://127.0.0.1:4222

  # Everything still in the stream, one sensor, pretty-printed by jq
  receiver --deliver all --subject 'tspi.geocentric.101' | jq .

  # A durable consumer that resumes where it stopped
  receiver --durable archive-feed --deliver all --count 10000 > part1.jsonl
  receiver --durable archive-feed --count 15000 > part2.jsonl

  # From a moment on, for one minute
  receiver --deliver since 2025-09-28T11:00:00Z --duration 60";

/// Read telemetry from JetStream and print it as JSON lines on stdout.
#[derive(Debug, Parser)]
#[command(name = "receiver", version, after_help = EXAMPLES)]
struct Cli {
    /// Durable consumer name (resumes where it stopped); ephemeral when absent.
    #[arg(long)]
    durable: Option<String>,
    /// Subject filter (repeatable); default every telemetry subject under --stream-prefix.
    #[arg(long = "subject")]
    subjects: Vec<String>,
    /// Subject prefix used for the default filter.
    #[arg(long, default_value = "tspi")]
    stream_prefix: String,
    /// Stream to consume.
    #[arg(long, default_value = "TSPI")]
    stream: String,
    /// Where a new consumer starts: new, all, or since <RFC 3339>.
    #[arg(long, num_args = 1..=2, value_names = ["POLICY", "TIME"], default_value = "new")]
    deliver: Vec<String>,
    /// Print JSON lines on stdout (default); --no-json-stream only counts.
    #[arg(long, overrides_with = "no_json_stream")]
    json_stream: bool,
    /// Do not print records, only count and acknowledge them.
    #[arg(long)]
    no_json_stream: bool,
    /// Stop after N messages.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Largest batch pulled at once.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
    /// Redelivery delay for pulled but unacknowledged messages (also how long deliveries
    /// lost with a NATS node take to come again).
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
    let deliver = Deliver::parse(&cli.deliver).map_err(anyhow::Error::msg)?;
    let prefix = StreamPrefix::new(&cli.stream_prefix).context("--stream-prefix")?;
    let subjects = if cli.subjects.is_empty() {
        prefix.telemetry_wildcards().to_vec()
    } else {
        cli.subjects.clone()
    };
    if let Some(name) = &cli.durable {
        if name.is_empty() || name.contains(['.', '*', '>', ' ']) {
            anyhow::bail!("--durable {name:?}: a consumer name cannot be empty or contain '.', '*', '>' or spaces");
        }
    }
    let options = ReceiverOptions {
        stream: cli.stream.clone(),
        durable: cli.durable.clone(),
        subjects,
        deliver,
        json: !cli.no_json_stream,
        count: cli.count,
        duration: cli.duration,
        batch: cli.batch as usize,
        ack_wait: cli.ack_wait,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let shutdown = shutdown_on_signals()?;
            let client = connect(&cli.nats, "tspi-receiver").await?;
            let js = async_nats::jetstream::new(client.clone());
            let mut registry = Registry::with_prefix("tspi_receiver");
            let metrics = ReceiverMetrics::new(&mut registry);
            cli.metrics.serve(registry, shutdown.clone()).await?;
            let summary = run(options, js, tokio::io::stdout(), metrics, shutdown).await?;
            client.flush().await.ok();
            tracing::info!(written = summary.written, invalid = summary.invalid, stop = ?summary.stop, "receiver stopped");
            if summary.stop == StopReason::OutputClosed {
                tracing::debug!("stdout closed");
            }
            Ok(())
        })
}
