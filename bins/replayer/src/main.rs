//! `replayer play | serve | pcap`: flags → options → PostgreSQL/NATS → run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tspi_bus::{
    connect, ensure_stream, use_fast_batches, NatsArgs, PublishMetrics, PublishMode,
    PublisherOptions, StreamSpec,
};
use tspi_core::geo::LocalFrame;
use tspi_core::StreamPrefix;
use tspi_display::placement::{parse_sensor_site, parse_site};
use tspi_display::Placement;
use tspi_export::Format;
use tspi_replayer::export::{ExportOptions, ExportWindow, OutputFile, Progress};
use tspi_replayer::pcap_replay::{self, PcapOptions};
use tspi_replayer::session::{Clock, ReplayContext, SessionSpec};
use tspi_replayer::{control, parse_time, resolve_window, WindowSpec};
use tspi_runtime::{exit_code, init_logging, parse_duration, shutdown_on_signals, LogArgs};

const EXAMPLES: &str = "\
Examples:
  # Ten seconds of the archive into room r1 at the original pace
  replayer play --room r1 --start 2025-09-28T11:00:00Z --end 2025-09-28T11:00:10Z \\
                --database-url 'host=db2 user=replayer dbname=tspi'

  # One minute around a tag, ten times faster, paced by TSPI time
  replayer play --room r1 --tag 0b7e1c3a-4f7d-4a55-9a1e-2b7f3d9c8e01 --window 60s --speed 10 --clock tspi

  # Daemon: players steer rooms with requests on player.<room>.ctrl
  replayer serve --database-url ...
  nats req player.r1.ctrl '{\"op\":\"play\",\"start\":\"2025-09-28T11:00:00Z\",\"end\":\"2025-09-28T11:05:00Z\"}'
  nats req player.r1.ctrl '{\"op\":\"seek\",\"to\":\"2025-09-28T11:02:00Z\"}'

  # A minute of the archive for analysts: Parquet, and KML for a globe (east/north/up
  # columns from the range origin)
  replayer export --start 2025-09-28T11:00:00Z --end 2025-09-28T11:01:00Z -o sortie7.parquet \
                  --origin 34.9,-117.9,700 --database-url 'host=db2,db1 user=tspi_reader dbname=tspi'
  replayer export --tag 0b7e1c3a-4f7d-4a55-9a1e-2b7f3d9c8e01 --before 2m --after 30s --sensor 10001 -o pass.kml

  # A capture: what is in it, then into a producer at twice the pace
  replayer pcap capture.pcapng --dry-run
  replayer pcap capture.pcapng --udp-target 127.0.0.1:30000 --speed 2";

/// Replay the TSPI archive (or a capture) at its original pace.
#[derive(Debug, Parser)]
#[command(name = "replayer", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play one window of the archive into a room, then exit (JSON summary on stdout).
    Play(PlayArgs),
    /// Serve per-room play/pause/seek/speed/stop requests on player.<room>.ctrl.
    Serve(ServeArgs),
    /// Replay the 37-byte UDP datagrams of a pcap/pcapng capture.
    Pcap(PcapArgs),
    /// Write a window of the archive to a file: csv, csv-wide, jsonl, parquet, kml, czml,
    /// geojson or pcap (no NATS needed; JSON summary on stdout, on stderr with -o -).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Window start (RFC 3339).
    #[arg(long, value_parser = parse_time, requires = "end", conflicts_with = "tag")]
    start: Option<time::OffsetDateTime>,
    /// Window end (RFC 3339, exclusive).
    #[arg(long, value_parser = parse_time, requires = "start")]
    end: Option<time::OffsetDateTime>,
    /// The window around this tag id instead (--before and --after it).
    #[arg(long, required_unless_present = "start")]
    tag: Option<String>,
    /// With --tag: how long before the tagged moment.
    #[arg(long, default_value = "30s", value_parser = parse_duration, requires = "tag")]
    before: Duration,
    /// With --tag: how long after the tagged moment.
    #[arg(long, default_value = "30s", value_parser = parse_duration, requires = "tag")]
    after: Duration,
    /// Only this sensor (repeatable); each must have telemetry in the window.
    #[arg(long = "sensor", value_name = "ID")]
    sensors: Vec<u16>,
    /// The window, and the time column of the geographic formats, on the receive time or
    /// the TSPI time.
    #[arg(long, value_enum, default_value_t = Clock::Receive)]
    clock: Clock,
    /// Range origin LAT,LON[,ALT]: east/north/up columns, the site of spherical sensors
    /// without their own, where tags are placed on a map.
    #[arg(long, env = "TSPI_ORIGIN", value_name = "LAT,LON[,ALT]", value_parser = parse_site)]
    origin: Option<LocalFrame>,
    /// A spherical sensor's own site, ID=LAT,LON[,ALT] (repeatable).
    #[arg(long, value_name = "ID=LAT,LON[,ALT]", value_parser = parse_sensor_site)]
    sensor_site: Vec<(u16, LocalFrame)>,
    /// csv, csv-wide, jsonl, parquet, kml, czml, geojson or pcap (pcapng); default: from
    /// --output's extension.
    #[arg(long, value_parser = parse_format)]
    format: Option<Format>,
    /// The file to write, or - for standard output. A file is written under a temporary
    /// name beside it and renamed when complete.
    #[arg(long, short = 'o', value_name = "PATH")]
    output: String,
    /// csv-wide: one row per this much time.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    step: Duration,
    /// pcap: the UDP port the datagrams are addressed to.
    #[arg(long, default_value_t = 30_000)]
    udp_port: u16,
    /// libpq URL or key=value string of the archive; with several hosts a standby is
    /// preferred (the primary stays free for the archiver).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The archived stream.
    #[arg(long, default_value = "TSPI")]
    stream: String,
    #[command(flatten)]
    log: LogArgs,
}

fn parse_format(text: &str) -> Result<Format, String> {
    Format::parse(text).ok_or_else(|| {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
        format!("unknown format {text:?}: one of {}", names.join(", "))
    })
}

#[derive(Debug, Args)]
struct ArchiveArgs {
    /// libpq URL or key=value string of the archive (a read-only replica is fine).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The archived stream to replay.
    #[arg(long, default_value = "TSPI")]
    stream: String,
    /// Stream that keeps playout for late joiners (subjects player.*.playout.>).
    #[arg(long, default_value = "PLAYOUT")]
    playout_stream: String,
    /// How long the playout stream keeps messages.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    playout_retention: Duration,
    /// Do not create or update the playout stream (locked-down deployments).
    #[arg(long)]
    no_create_stream: bool,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Args)]
struct PlayArgs {
    /// Room to play into: output on player.<room>.playout.<original subject>.
    #[arg(long)]
    room: String,
    /// Window start (RFC 3339).
    #[arg(long, value_parser = parse_time, requires = "end", conflicts_with = "tag")]
    start: Option<time::OffsetDateTime>,
    /// Window end (RFC 3339, exclusive).
    #[arg(long, value_parser = parse_time, requires = "start")]
    end: Option<time::OffsetDateTime>,
    /// Play the window around this tag id instead.
    #[arg(long, required_unless_present = "start")]
    tag: Option<String>,
    /// Window length around --tag (centred on the tagged moment).
    #[arg(long, default_value = "60s", value_parser = parse_duration, requires = "tag")]
    window: Duration,
    /// Pace factor: 1 = original pace, 10 = ten times faster.
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    speed: f64,
    /// Original gaps from the receive time or the TSPI time.
    #[arg(long, value_enum, default_value_t = Clock::Receive)]
    clock: Clock,
    #[command(flatten)]
    archive: ArchiveArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    archive: ArchiveArgs,
}

#[derive(Debug, Args)]
struct PcapArgs {
    /// Capture file (pcap or pcapng).
    file: PathBuf,
    /// Send each datagram to HOST:PORT (repeatable), e.g. a producer; a host name is
    /// looked up once, waiting while it does not resolve yet.
    #[arg(long, value_name = "HOST:PORT")]
    udp_target: Vec<tspi_runtime::UdpTarget>,
    /// Publish decoded records to JetStream (valid datagrams only).
    #[arg(long)]
    jetstream: bool,
    /// Only datagrams sent to this UDP port.
    #[arg(long)]
    port: Option<u16>,
    /// Pace factor against the capture timestamps.
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed, conflicts_with = "as_fast_as_possible")]
    speed: f64,
    /// Ignore the capture's timing.
    #[arg(long)]
    as_fast_as_possible: bool,
    /// Only analyse: print the JSON summary (counts, skips, gaps, duplicates).
    #[arg(long)]
    dry_run: bool,
    /// With --jetstream: stamp recv_epoch_ms with the replay time, not the capture time.
    #[arg(long)]
    restamp: bool,
    /// Subject prefix for --jetstream.
    #[arg(long, default_value = "tspi")]
    stream_prefix: String,
    /// With --jetstream: fast-ingest batches (`fast`), one ack per message (`window`), or
    /// fast when the stream allows it (`auto`).
    #[arg(long, value_enum, default_value_t = PublishMode::Auto)]
    publish_mode: PublishMode,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    log: LogArgs,
}

fn parse_speed(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("invalid speed {text:?}: expected a number such as 1, 0.5 or 10"))?;
    control::check_speed(v)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit_code(start(cli))
}

fn start(cli: Cli) -> anyhow::Result<()> {
    let log = match &cli.command {
        Command::Play(a) => &a.archive.log,
        Command::Serve(a) => &a.archive.log,
        Command::Pcap(a) => &a.log,
        Command::Export(a) => &a.log,
    };
    init_logging(log)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            match cli.command {
                Command::Play(args) => play(args).await,
                Command::Serve(args) => serve(args).await,
                Command::Pcap(args) => pcap(args).await,
                Command::Export(args) => export(args).await,
            }
        })
}

async fn context(args: &ArchiveArgs, name: &str) -> anyhow::Result<ReplayContext> {
    let pool = tspi_store::pool(&args.database_url, 4)?;
    {
        let client = pool.get().await.context("cannot connect to the database")?;
        let ok: bool = client
            .query_one("SELECT to_regclass('messages') IS NOT NULL", &[])
            .await?
            .get(0);
        if !ok {
            bail!("the database has no archive (run `archiver migrate` and an archiver first)");
        }
    }
    let client = connect(&args.nats, name).await?;
    let js = async_nats::jetstream::new(client.clone());
    let spec = StreamSpec::playout(
        &args.playout_stream,
        args.playout_retention,
        !args.no_create_stream,
    );
    ensure_stream(&client, &js, &spec).await?;
    Ok(ReplayContext {
        handle: tokio::runtime::Handle::current(),
        pool,
        client,
    })
}

async fn play(args: PlayArgs) -> anyhow::Result<()> {
    control::check_room(&args.room).map_err(anyhow::Error::msg)?;
    let shutdown = shutdown_on_signals()?;
    let ctx = context(&args.archive, "tspi-replayer-play").await?;
    let window = match (args.start, args.end, args.tag) {
        (Some(start), Some(end), _) => WindowSpec::Range { start, end },
        (_, _, Some(id)) => WindowSpec::Tag {
            id,
            window: args.window,
        },
        _ => bail!("give --start and --end, or --tag"),
    };
    let (start, end) = resolve_window(&ctx, &window).await?;
    let client = ctx.client.clone();
    let summary = tspi_replayer::play(
        ctx,
        SessionSpec {
            room: args.room,
            stream: args.archive.stream,
            start,
            end,
            speed: args.speed,
            clock: args.clock,
            paused: false,
            segment: None,
            snapshot: None,
        },
        shutdown,
    )
    .await?;
    client.flush().await.ok();
    tspi_runtime::outln!("{}", serde_json::to_string(&summary)?)?;
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signals()?;
    let ctx = context(&args.archive, "tspi-replayer-serve").await?;
    let client = ctx.client.clone();
    tspi_replayer::serve(ctx, args.archive.stream, shutdown).await?;
    client.flush().await.ok();
    Ok(())
}

async fn pcap(args: PcapArgs) -> anyhow::Result<()> {
    if !args.dry_run && args.udp_target.is_empty() && !args.jetstream {
        bail!("nothing to send to: give --udp-target HOST:PORT, --jetstream, or --dry-run");
    }
    let shutdown = shutdown_on_signals()?;
    let udp_targets = if args.dry_run || args.udp_target.is_empty() {
        Vec::new()
    } else {
        match tspi_runtime::resolve_targets(&args.udp_target, &shutdown).await {
            Some(mut targets) => targets.current().to_vec(),
            None => return Ok(()), // stopped while waiting for a name: nothing was sent
        }
    };
    let options = PcapOptions {
        file: args.file,
        port: args.port,
        speed: (!args.as_fast_as_possible).then_some(args.speed),
        udp_targets,
        jetstream: args.jetstream,
        restamp: args.restamp,
        prefix: StreamPrefix::new(&args.stream_prefix)?,
    };
    let metrics = PublishMetrics::default();
    let (tx, publisher) = if args.jetstream && !args.dry_run {
        let client = connect(&args.nats, "tspi-replayer-pcap").await?;
        let js = async_nats::jetstream::new(client.clone());
        let stream = tspi_bus::StreamArgs {
            publish_mode: args.publish_mode,
            ..tspi_bus::StreamArgs::default()
        };
        let spec = StreamSpec::tspi(&stream, &options.prefix)?;
        let info = ensure_stream(&client, &js, &spec).await?;
        let fast = use_fast_batches(args.publish_mode, &info, &options.prefix)?;
        let (tx, rx) = mpsc::channel(4096);
        let task = tokio::spawn(tspi_bus::run_publisher(
            client,
            rx,
            Some::<tspi_bus::OutMessage>,
            PublisherOptions {
                fast,
                ..PublisherOptions::default()
            },
            metrics.clone(),
            CancellationToken::new(),
        ));
        (Some(tx), Some(task))
    } else {
        (None, None)
    };
    let dry_run = args.dry_run;
    let stop = shutdown.clone();
    let mut summary =
        tokio::task::spawn_blocking(move || pcap_replay::replay(&options, dry_run, tx, &stop))
            .await??;
    if let Some(task) = publisher {
        // The sender is gone with the replay: the publisher drains what is in flight.
        task.await.ok();
        summary.published = metrics.published.get();
        summary.publish_failed += metrics.failed.get();
    }
    tspi_runtime::outln!("{}", serde_json::to_string(&summary)?)?;
    if summary.publish_failed > 0 {
        bail!("{} records could not be published", summary.publish_failed);
    }
    Ok(())
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let format = match (args.format, Format::from_path(&args.output)) {
        (Some(f), _) | (None, Some(f)) => f,
        (None, None) => bail!(
            "give --format: {:?} does not say (csv, jsonl, parquet, kml, czml, geojson, pcapng)",
            args.output
        ),
    };
    if args.step.is_zero() {
        bail!("--step must be more than 0");
    }
    let shutdown = shutdown_on_signals()?;
    let options = ExportOptions {
        window: match (args.start, args.end, args.tag) {
            (Some(start), Some(end), _) => ExportWindow::Range { start, end },
            (_, _, Some(id)) => ExportWindow::Tag {
                id,
                before: args.before,
                after: args.after,
            },
            _ => bail!("give --start and --end, or --tag"),
        },
        clock: args.clock.into(),
        sensors: args.sensors,
        placement: Placement::new(args.origin, args.sensor_site.into_iter().collect()),
        format,
        step: args.step,
        udp_port: args.udp_port,
        stream: args.stream,
    };
    // Where the file goes is settled before anything is read: a place that cannot be
    // written fails now, and nothing is left under the final name unless complete.
    let file = match args.output.as_str() {
        "-" => None,
        path => Some(OutputFile::create(std::path::Path::new(path))?),
    };
    let client = tspi_replayer::export::connect(&args.database_url).await?;
    let prepared = tspi_replayer::export::prepare(&client, &options).await?;
    let sink: Box<dyn std::io::Write + Send> = match &file {
        Some(f) => Box::new(f.writer()?),
        None => Box::new(std::io::stdout()),
    };
    let writer = tspi_export::writer(format, &prepared.meta, sink)?;
    let mut progress = Progress::new(prepared.estimate);
    let result = tspi_replayer::export::write(
        &client,
        &prepared,
        &options,
        writer,
        |rows| {
            progress.show(rows);
            std::future::ready(Ok(()))
        },
        &shutdown,
    )
    .await;
    progress.done();
    let summary = match result {
        Ok(s) => s,
        // A reader that closed the pipe (`| head`) has what it wanted.
        Err(e) if file.is_none() && is_broken_pipe(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let line = serde_json::to_string(&summary)?;
    match file {
        Some(f) => {
            let path = f.commit()?;
            let mut summary: serde_json::Value = serde_json::from_str(&line)?;
            summary["output"] = serde_json::Value::String(path.display().to_string());
            tspi_runtime::outln!("{summary}")?;
        }
        None => eprintln!("{line}"),
    }
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<tspi_export::ExportError>().is_some_and(|x| {
                matches!(x, tspi_export::ExportError::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
            })
    })
}
