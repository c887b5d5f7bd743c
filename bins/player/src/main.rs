//! `player`: flags → options → NATS → JSON lines on stdout.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tspi_bus::{connect, ensure_stream, NatsArgs, StreamSpec};
use tspi_core::StreamPrefix;
use tspi_player::{run, Clock, PlayerOptions, Source};
use tspi_runtime::{exit_code, init_logging, parse_duration, shutdown_on_signals, LogArgs};

const EXAMPLES: &str = "\
Examples:
  # Follow live telemetry, commands and tags; two frames per second per track
  player --rate 2

  # Follow room r1 of the replayer, stop after 10 s without data
  player --source historical --room r1 --exit-on-idle 10s";

/// Headless TSPI player: what a display would show, as JSON lines.
#[derive(Debug, Parser)]
#[command(name = "player", version, after_help = EXAMPLES)]
struct Cli {
    /// live (JetStream) or historical (a replayer room's playout).
    #[arg(long, value_enum, default_value_t = Source::Live)]
    source: Source,
    /// Replayer room (historical).
    #[arg(long)]
    room: Option<String>,
    /// Most frames per second printed per track (0 = all).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Stop after this long.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this long without any message.
    #[arg(long, value_parser = parse_duration)]
    exit_on_idle: Option<Duration>,
    /// Print frames, commands, tags and metrics as JSON lines (default on).
    #[arg(long, default_value_t = true, overrides_with = "no_json_stream")]
    json_stream: bool,
    #[arg(long)]
    no_json_stream: bool,
    /// How often a metrics line is printed.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    metrics_interval: Duration,
    /// Client id in heartbeats; default player-<pid>.
    #[arg(long)]
    client_id: Option<String>,
    /// Stay on the livestream when a group replay starts ("back to live" override).
    #[arg(long)]
    stay_live: bool,
    /// Read JSON requests from stdin, one per line; replies print as control_reply events.
    /// Historical: sent to the room's replayer ({"op":"seek","tag":"ID"}, pause, resume,
    /// speed, stop). Live: {"op":"live"} (back to live), {"op":"follow"},
    /// {"op":"rewind","seconds":30}.
    #[arg(long)]
    control_stdin: bool,
    /// Playhead clock: receive time, or the TSPI time inside each frame.
    #[arg(long, value_enum, default_value_t = Clock::Receive)]
    clock: Clock,
    /// Live telemetry kept for rewind.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    rewind_window: Duration,
    /// Operator name in heartbeats.
    #[arg(long)]
    operator: Option<String>,
    #[arg(long, default_value = "TSPI")]
    stream: String,
    #[arg(long, default_value = "tspi")]
    stream_prefix: String,
    /// Do not create the TSPI_OPS stream for heartbeats.
    #[arg(long)]
    no_create_stream: bool,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit_code(start(cli))
}

fn start(cli: Cli) -> anyhow::Result<()> {
    init_logging(&cli.log)?;
    if !(cli.rate.is_finite() && cli.rate >= 0.0) {
        anyhow::bail!("--rate must be a number ≥ 0");
    }
    if let Some(room) = &cli.room {
        if room.is_empty()
            || !room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            anyhow::bail!("room {room:?} must be letters, digits, '-' or '_'");
        }
    }
    let options = PlayerOptions {
        source: cli.source,
        room: cli.room,
        stream: cli.stream,
        prefix: StreamPrefix::new(&cli.stream_prefix)?,
        rate_hz: cli.rate,
        duration: cli.duration,
        exit_on_idle: cli.exit_on_idle,
        json: cli.json_stream && !cli.no_json_stream,
        metrics_interval: cli.metrics_interval,
        client_id: cli
            .client_id
            .unwrap_or_else(|| format!("player-{}", std::process::id())),
        operator: cli.operator,
        stay_live: cli.stay_live,
        control_stdin: cli.control_stdin,
        rewind_window: cli.rewind_window,
        clock: cli.clock,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async move {
            let shutdown = shutdown_on_signals()?;
            let client = connect(&cli.nats, "tspi-player").await?;
            let js = async_nats::jetstream::new(client.clone());
            // Heartbeats still go out without TSPI_OPS; only the roster's history needs it.
            if let Err(e) = ensure_stream(&client, &js, &StreamSpec::ops(!cli.no_create_stream)).await {
                if cli.no_create_stream {
                    tracing::warn!(error = %e, "TSPI_OPS is not there: heartbeats are sent but not kept");
                } else {
                    return Err(e.into());
                }
            }
            let stdout = std::io::BufWriter::new(std::io::stdout());
            run(options, client.clone(), stdout, shutdown).await?;
            client.flush().await.ok();
            Ok(())
        })
}
