//! `generator`: flags → validated options → logging → sockets/NATS → `tspi_generator::run`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tspi_bus::{
    connect, ensure_stream, use_fast_batches, NatsArgs, PublisherOptions, StreamArgs, StreamSpec,
};
use tspi_core::StreamPrefix;
use tspi_generator::{run, FleetOptions, GeneratorOptions, Kind, Sinks, Style};
use tspi_runtime::{
    exit_code, init_logging, parse_duration, resolve_targets, shutdown_on_signals, LogArgs,
    UdpTarget,
};

const EXAMPLES: &str = "\
Examples:
  # 50 aircraft at 50 Hz for 10 s to a local producer (25,000 datagrams)
  generator --udp-target 127.0.0.1:30000 --count 50 --rate 50 --duration 10

  # An airshow, forever, to two producers
  generator --style airshow --continuous --udp-target 10.0.0.5:30000 --udp-target 10.0.0.6:30000

  # Straight to JetStream, no producer involved
  generator --jetstream --nats-server nats://127.0.0.1:4222 --count 10 --duration 60

  # Exercise ingest: every 5th datagram twice, every 10th sent one garbage
  generator --udp-target 127.0.0.1:30000 --duplicate-every 5 --garbage-every 10";

/// Synthetic TSPI fleets over UDP and/or straight to JetStream; JSON summary on stdout.
#[derive(Debug, Parser)]
#[command(name = "generator", version, after_help = EXAMPLES)]
struct Cli {
    /// Number of aircraft.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    count: u16,
    /// Sensor id of the first aircraft; the others follow.
    #[arg(long, default_value_t = 10_000)]
    sensor_base: u16,
    /// Frames per second per aircraft.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Flight style.
    #[arg(long, value_enum, default_value_t = Style::Normal)]
    style: Style,
    /// Message type to send.
    #[arg(long = "message-type", value_enum, default_value_t = Kind::Geocentric)]
    kind: Kind,
    /// Run for this long (e.g. 10, 10s, 5m).
    #[arg(long, value_parser = parse_duration, conflicts_with = "continuous")]
    duration: Option<Duration>,
    /// Run until interrupted.
    #[arg(long)]
    continuous: bool,
    /// Day of year in the datagrams (default: today, UTC).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=366))]
    day: Option<u16>,
    /// Slowest aircraft, m/s.
    #[arg(long, default_value_t = 100.0)]
    min_speed: f64,
    /// Fastest aircraft, m/s (at most 320: the datagram's velocity field tops out at 327.67).
    #[arg(long, default_value_t = 250.0)]
    max_speed: f64,
    /// Range origin latitude, degrees (the radar site for spherical messages).
    #[arg(long, default_value_t = 34.905, allow_hyphen_values = true)]
    origin_lat: f64,
    /// Range origin longitude, degrees.
    #[arg(long, default_value_t = -117.884, allow_hyphen_values = true)]
    origin_lon: f64,
    /// Range origin altitude, metres.
    #[arg(long, default_value_t = 700.0, allow_hyphen_values = true)]
    origin_alt: f64,
    /// Random seed for the fleet (same seed, same flights).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Send datagrams to HOST:PORT (repeatable). A host name is looked up when sending
    /// starts (waiting while it does not resolve yet) and every 5 s after.
    #[arg(long = "udp-target", value_name = "HOST:PORT")]
    udp_targets: Vec<UdpTarget>,
    /// Publish records straight to JetStream too.
    #[arg(long)]
    jetstream: bool,
    /// Subject prefix for --jetstream.
    #[arg(long, default_value = "tspi")]
    stream_prefix: String,
    /// Publishes awaiting an ack at once (--jetstream).
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Send every Nth valid datagram twice (fault injection).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    duplicate_every: Option<u64>,
    /// Make every Nth datagram sent a malformed one (fault injection).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..))]
    garbage_every: Option<u64>,
    /// SENSOR@T+D: sensor SENSOR falls silent from T to T+D seconds after the start
    /// (repeatable; fault injection).
    #[arg(long = "dropout", value_parser = tspi_generator::faults::parse_dropout)]
    dropouts: Vec<tspi_generator::faults::Dropout>,
    /// SENSOR@T:OFFSET: from T seconds after the start, sensor SENSOR's clock is OFFSET
    /// seconds off, e.g. 4@10:+30 (repeatable; the latest in force wins; 0 puts it back).
    #[arg(long = "clock-jump", value_parser = tspi_generator::faults::parse_clock_jump)]
    clock_jumps: Vec<tspi_generator::faults::ClockJump>,
    /// Hold every Nth valid datagram back and send it after its sensor's next one (fault
    /// injection: out of order).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..))]
    reorder_every: Option<u64>,
    /// Fly the aircraft of a script instead (TOML `[[aircraft]]`: sensor, type, start =
    /// [east, north, up] m from the origin, velocity = [e, n, u] m/s, legs = [{ at = S,
    /// velocity = […] }]).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["count", "style", "sensor_base", "kind"])]
    script: Option<std::path::PathBuf>,
    /// Print a progress summary line this often.
    #[arg(long, value_parser = parse_duration)]
    metrics_interval: Option<Duration>,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    stream: StreamArgs,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit_code(start(cli))
}

fn start(cli: Cli) -> anyhow::Result<()> {
    init_logging(&cli.log)?;
    anyhow::ensure!(
        !cli.udp_targets.is_empty() || cli.jetstream,
        "nothing to send to: give --udp-target HOST:PORT and/or --jetstream"
    );
    anyhow::ensure!(
        cli.duration.is_some() || cli.continuous,
        "give --duration or --continuous"
    );
    anyhow::ensure!(
        cli.rate.is_finite() && cli.rate > 0.0 && cli.rate <= 10_000.0,
        "--rate must be in (0, 10000] Hz"
    );
    anyhow::ensure!(
        cli.min_speed >= 0.0 && cli.min_speed <= cli.max_speed && cli.max_speed <= 320.0,
        "speeds must satisfy 0 <= --min-speed <= --max-speed <= 320 m/s"
    );
    anyhow::ensure!(
        (-90.0..=90.0).contains(&cli.origin_lat) && (-180.0..=180.0).contains(&cli.origin_lon),
        "--origin-lat must be within ±90 and --origin-lon within ±180"
    );
    let prefix = StreamPrefix::new(&cli.stream_prefix).context("--stream-prefix")?;
    let options = GeneratorOptions {
        fleet: FleetOptions {
            count: cli.count,
            sensor_base: cli.sensor_base,
            style: cli.style,
            kind: cli.kind,
            min_speed_mps: cli.min_speed,
            max_speed_mps: cli.max_speed,
            origin_lat_deg: cli.origin_lat,
            origin_lon_deg: cli.origin_lon,
            origin_alt_m: cli.origin_alt,
            seed: cli.seed,
        },
        rate_hz: cli.rate,
        duration: if cli.continuous { None } else { cli.duration },
        day: cli.day,
        duplicate_every: cli.duplicate_every,
        garbage_every: cli.garbage_every,
        faults: tspi_generator::faults::Faults {
            dropouts: cli.dropouts.clone(),
            clock_jumps: cli.clock_jumps.clone(),
            reorder_every: cli.reorder_every,
        },
        metrics_interval: cli.metrics_interval,
        script: cli
            .script
            .as_deref()
            .map(tspi_generator::fleet::Script::load)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        prefix: prefix.clone(),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let shutdown = shutdown_on_signals()?;
            let mut sinks = Sinks::default();
            if !cli.udp_targets.is_empty() {
                let Some(targets) = resolve_targets(&cli.udp_targets, &shutdown).await else {
                    return Ok(()); // stopped while waiting for a name: nothing was sent
                };
                let bind = if targets.all_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let socket = tokio::net::UdpSocket::bind(bind)
                    .await
                    .context("cannot open a UDP socket")?;
                sinks.udp = Some((socket, targets));
            }
            if cli.jetstream {
                let client = connect(&cli.nats, "tspi-generator").await?;
                let js = async_nats::jetstream::new(client.clone());
                let info =
                    ensure_stream(&client, &js, &StreamSpec::tspi(&cli.stream, &prefix)?).await?;
                sinks.jetstream = Some((
                    client.clone(),
                    PublisherOptions {
                        fast: use_fast_batches(cli.stream.publish_mode, &info, &prefix)?,
                        max_in_flight: cli.max_in_flight.max(1),
                        ..PublisherOptions::default()
                    },
                ));
            }
            let print = |s: &tspi_generator::Summary| {
                if let Ok(line) = serde_json::to_string(s) {
                    // A closed stdout must not panic (println! would).
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stdout().lock(), "{line}");
                }
            };
            run(options, sinks, print, shutdown).await?;
            Ok(())
        })
}
