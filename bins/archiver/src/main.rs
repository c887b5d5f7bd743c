//! `archiver` (daemon) and `archiver migrate`: flags → options → NATS/PostgreSQL → run.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use tspi_archiver::{run, ArchiverMetrics, ArchiverOptions};
use tspi_bus::{connect, NatsArgs};
use tspi_runtime::{
    exit_code, init_logging, parse_duration, shutdown_on_signals, LogArgs, MetricsArgs,
};
use tspi_store::{SchemaOptions, TimescaleMode};

const EXAMPLES: &str = "\
Examples:
  # Apply the schema only (hypertables when TimescaleDB is there)
  archiver migrate --database-url 'postgresql://archiver@db1/tspi'

  # Archive the TSPI stream; follow a promoted replica on failover
  archiver --nats-server nats://n1:4222 --nats-server nats://n2:4222 \\
           --database-url 'host=db1,db2 user=archiver dbname=tspi target_session_attrs=read-write'

  # TimescaleDB: compress after a day, keep 90 days
  archiver --timescaledb require --compress-after 1d --retain 90d --database-url ...";

/// Archive every message of the TSPI stream in PostgreSQL (acknowledged after commit).
#[derive(Debug, Parser)]
#[command(name = "archiver", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// libpq URL or key=value string; several hosts with target_session_attrs=read-write
    /// follow the primary.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// Use TimescaleDB hypertables: auto (when the extension can be created), require, off.
    #[arg(long, default_value = "auto", global = true)]
    timescaledb: TimescaleMode,
    /// Hypertable chunk interval (TimescaleDB).
    #[arg(long, value_parser = parse_duration, global = true)]
    chunk_interval: Option<Duration>,
    /// Compress chunks older than this (TimescaleDB only).
    #[arg(long, value_parser = parse_duration, global = true)]
    compress_after: Option<Duration>,
    /// Delete archived data older than this (a TimescaleDB retention policy, or a
    /// once-a-minute delete on plain PostgreSQL).
    #[arg(long, value_parser = parse_duration, global = true)]
    retain: Option<Duration>,
    /// Stream to archive.
    #[arg(long, default_value = "TSPI")]
    stream: String,
    /// Durable consumer name.
    #[arg(long, default_value = "archiver")]
    durable: String,
    /// Largest batch written in one transaction.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    batch_max: u32,
    /// Longest wait to fill a batch.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    batch_wait: Duration,
    /// Redelivery delay for messages pulled but not acknowledged: a crashed archiver's batch,
    /// or deliveries lost with a NATS node. Batches slow to commit send progress acks.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    ack_wait: Duration,
    /// Batches committed in parallel, each on its own database connection.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    writers: u32,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or migrate the schema, then exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit_code(start(cli))
}

fn start(cli: Cli) -> anyhow::Result<()> {
    init_logging(&cli.log)?;
    let url = cli
        .database_url
        .clone()
        .context("--database-url (or DATABASE_URL) is required")?;
    let schema = SchemaOptions {
        timescale: cli.timescaledb,
        chunk_interval: cli.chunk_interval,
        compress_after: cli.compress_after,
        retain: cli.retain,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            // One connection per writer, one for retention and migrations.
            let pool = tspi_store::pool(&url, cli.writers as usize + 1)?;
            let state = {
                let mut db = pool.get().await.context("cannot connect to the database")?;
                tspi_store::migrate(&mut db, &schema).await?
            };
            tracing::info!(
                version = state.version,
                timescaledb = state.timescaledb,
                "schema is current"
            );
            if matches!(cli.command, Some(Command::Migrate)) {
                return Ok(());
            }
            let shutdown = shutdown_on_signals()?;
            let client = connect(&cli.nats, "tspi-archiver").await?;
            let js = async_nats::jetstream::new(client.clone());
            let mut registry = Registry::with_prefix("tspi_archiver");
            let metrics = ArchiverMetrics::new(&mut registry);
            cli.metrics.serve(registry, shutdown.clone()).await?;
            let options = ArchiverOptions {
                stream: cli.stream,
                durable: cli.durable,
                batch_max: cli.batch_max as usize,
                batch_wait: cli.batch_wait,
                ack_wait: cli.ack_wait,
                // TimescaleDB enforces retention itself.
                retain: cli.retain.filter(|_| !state.timescaledb),
                writers: cli.writers as usize,
                shutdown_retry: Duration::from_secs(10),
            };
            run(options, js, pool, metrics.clone(), shutdown).await?;
            client.flush().await.ok();
            metrics.log_summary("archiver stopped");
            Ok(())
        })
}
