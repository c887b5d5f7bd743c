//! `player`: flags → options → NATS → JSON lines on stdout, or (`--web`) a web display.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use prometheus_client::registry::Registry;
use tspi_bus::{connect, connect_observed, ensure_stream, NatsArgs, StreamSpec};
use tspi_core::geo::LocalFrame;
use tspi_core::StreamPrefix;
use tspi_display::placement::{parse_sensor_site, parse_site};
use tspi_display::Placement;
use tspi_player::web::{auth, serve, WebMetrics, WebOptions};
use tspi_player::{run, Clock, PlayerOptions, Source};
use tspi_runtime::{
    exit_code, init_logging, parse_duration, shutdown_on_signals, LogArgs, MetricsArgs,
};

const EXAMPLES: &str = "\
Examples:
  # Follow live telemetry, commands and tags; two frames per second per track
  player --rate 2

  # Follow room r1 of the replayer, stop after 10 s without data
  player --source historical --room r1 --exit-on-idle 10s

  # The web display on this host, range view around the range origin
  player --web 127.0.0.1:8080 --origin 34.9,-117.9,700

  # On the range LAN: an access token is required beyond loopback
  player --web 0.0.0.0:8080 --web-token-file /etc/tspi/display.token --origin 34.9,-117.9";

/// TSPI player: what a display shows, as JSON lines (headless) or a web display (--web).
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
    /// Operator name in heartbeats (web: the default for tabs that give none).
    #[arg(long)]
    operator: Option<String>,
    #[command(flatten)]
    web: WebArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
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

/// The web display (`--web`).
#[derive(Debug, clap::Args)]
struct WebArgs {
    /// Serve the web display on this address instead of printing JSON lines (e.g.
    /// 127.0.0.1:8080). Beyond loopback it needs --web-token-file (or TSPI_WEB_TOKEN).
    #[arg(long, value_name = "ADDR")]
    web: Option<SocketAddr>,
    /// A file whose first line is the display's access token (at least 16 characters):
    /// browsers open http://HOST:PORT/?token=…, scripts send `Authorization: Bearer …`.
    /// The token itself may be in the environment variable TSPI_WEB_TOKEN instead.
    #[arg(long, value_name = "FILE")]
    web_token_file: Option<PathBuf>,
    /// Most updates per second per track sent to each tab.
    #[arg(long, default_value_t = 10.0)]
    web_rate: f64,
    /// Trail drawn behind each track (the page can change it).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    trail: Duration,
    /// A track silent this long leaves the picture (and a replay's picture looks this far
    /// back for a track's last position).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    track_timeout: Duration,
    /// Range origin LAT,LON[,ALT]: the centre of the range view, and the site spherical
    /// tracks are placed from.
    #[arg(long, env = "TSPI_ORIGIN", value_name = "LAT,LON[,ALT]", value_parser = parse_site)]
    origin: Option<LocalFrame>,
    /// A sensor's own site, ID=LAT,LON[,ALT] (repeatable): its spherical tracks are
    /// placed from there instead of the origin.
    #[arg(long, value_name = "ID=LAT,LON[,ALT]", value_parser = parse_sensor_site)]
    sensor_site: Vec<(u16, LocalFrame)>,
    /// Most tabs open at once.
    #[arg(long, default_value_t = 64)]
    web_max_sessions: usize,
    /// A tab that takes no data for this long is closed (a stalled or hidden browser).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    web_stall_timeout: Duration,
    /// Another origin allowed to open the display's WebSocket (a reverse proxy's
    /// https://display.range.example), repeatable.
    #[arg(long, value_name = "ORIGIN")]
    web_allow_origin: Vec<String>,
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
    if let Some(addr) = cli.web.web {
        return start_web(cli, addr);
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
            ensure_ops_stream(&client, &js, !cli.no_create_stream).await?;
            let stdout = std::io::BufWriter::new(std::io::stdout());
            run(options, client.clone(), stdout, shutdown).await?;
            client.flush().await.ok();
            Ok(())
        })
}

/// TSPI_OPS, which keeps the heartbeats for the roster: created here, or (with
/// `--no-create-stream`, a player user that may not create streams) expected from
/// `console directory`. Heartbeats go out either way; the stream keeps them from when it
/// exists, so its absence is a warning, not a failure.
async fn ensure_ops_stream(
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    create: bool,
) -> anyhow::Result<()> {
    match ensure_stream(client, js, &StreamSpec::ops(create)).await {
        Ok(_) => Ok(()),
        Err(e) if !create => {
            tracing::warn!(error = %e, "TSPI_OPS is not there yet: heartbeats are kept from when it is (console directory creates it)");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn start_web(cli: Cli, addr: SocketAddr) -> anyhow::Result<()> {
    let w = &cli.web;
    if !(w.web_rate.is_finite() && w.web_rate > 0.0 && w.web_rate <= 100.0) {
        anyhow::bail!("--web-rate must be more than 0 and at most 100 updates a second");
    }
    if w.trail > Duration::from_secs(3600) {
        anyhow::bail!("--trail is at most 1h");
    }
    if w.web_max_sessions == 0 {
        anyhow::bail!("--web-max-sessions must be at least 1");
    }
    // The token itself may come from the environment (a container's secret), never from
    // the command line, where every process could read it.
    let token = match (&w.web_token_file, std::env::var("TSPI_WEB_TOKEN")) {
        (Some(_), Ok(_)) => anyhow::bail!("give --web-token-file or TSPI_WEB_TOKEN, not both"),
        (Some(path), Err(_)) => Some(auth::read_token(path).map_err(anyhow::Error::msg)?),
        (None, Ok(text)) => {
            Some(auth::parse_token(&text, "TSPI_WEB_TOKEN").map_err(anyhow::Error::msg)?)
        }
        (None, Err(_)) => None,
    };
    auth::check_bind(&addr, token.as_deref()).map_err(anyhow::Error::msg)?;
    let options = WebOptions {
        token,
        allowed_origins: w.web_allow_origin.clone(),
        rate_hz: w.web_rate,
        trail: w.trail,
        track_timeout: w.track_timeout.max(Duration::from_secs(5)),
        max_sessions: w.web_max_sessions,
        stall_timeout: w.web_stall_timeout.max(Duration::from_secs(1)),
        operator: cli.operator.clone(),
        stream: cli.stream.clone(),
        prefix: StreamPrefix::new(&cli.stream_prefix)?,
        placement: Placement::new(w.origin, w.sensor_site.iter().copied().collect()),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async move {
            let shutdown = shutdown_on_signals()?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("--web {addr}: cannot listen: {e}"))?;
            let mut registry = Registry::with_prefix("tspi_player_web");
            let metrics = WebMetrics::new(&mut registry);
            let slow = metrics.slow_consumer.clone();
            let client = connect_observed(&cli.nats, "tspi-player-web", move || {
                slow.inc();
            })
            .await?;
            let js = async_nats::jetstream::new(client.clone());
            ensure_ops_stream(&client, &js, !cli.no_create_stream).await?;
            cli.metrics.serve(registry, shutdown.clone()).await?;
            let bound = listener.local_addr()?;
            // The readiness line scripts (and the demo) wait for.
            let line = serde_json::json!({"event": "listening", "url": format!("http://{bound}/")});
            {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            serve(options, client.clone(), listener, metrics, shutdown).await?;
            client.flush().await.ok();
            Ok(())
        })
}
