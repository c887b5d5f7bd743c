//! `producer`: flags → validated options → logging → NATS → `tspi_producer::run`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use prometheus_client::registry::Registry;
use tspi_bus::{
    connect, ensure_stream, use_fast_batches, NatsArgs, PublisherOptions, StreamArgs, StreamSpec,
};
use tspi_core::StreamPrefix;
use tspi_producer::{run, udp, ProducerMetrics, ProducerOptions};
use tspi_runtime::{
    exit_code, init_logging, parse_duration, shutdown_on_signals, LogArgs, MetricsArgs,
};

const EXAMPLES: &str = "\
Examples:
  # Listen on UDP 30000, publish to a local three-node cluster
  producer --nats-server nats://127.0.0.1:4222 --nats-server nats://127.0.0.1:4223 \\
           --nats-server nats://127.0.0.1:4224 --udp-port 30000 --metrics-addr 127.0.0.1:9464

  # Only two sensors, an existing stream that must not be touched
  producer --sensor-id 101 --sensor-id 102 --no-create-stream

  # Generate traffic for it
  generator --udp-target 127.0.0.1:30000 --count 50 --rate 50 --duration 60

  # A range site: its own nats-server (a leaf node of the centre, domain site-north)
  producer --site north --site-retention 24h --nats-server nats://127.0.0.1:4222";

/// UDP TSPI datagrams in, decoded CBOR records out on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "producer", version, after_help = EXAMPLES)]
struct Cli {
    /// Address to bind the UDP socket on.
    #[arg(long, default_value = "0.0.0.0", env = "TSPI_UDP_HOST")]
    udp_host: IpAddr,
    /// UDP port to receive datagrams on.
    #[arg(long, default_value_t = 30000, env = "TSPI_UDP_PORT")]
    udp_port: u16,
    /// Socket receive buffer to request, bytes (bursts wait here while NATS is slow).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    udp_recv_buffer: usize,
    /// Only publish these sensor ids (repeatable); all sensors when absent.
    #[arg(long = "sensor-id")]
    sensor_ids: Vec<u16>,
    /// Subject prefix: telemetry goes to <prefix>.<type>.<sensor_id>.
    #[arg(long, default_value = "tspi")]
    stream_prefix: String,
    /// Publishes awaiting a JetStream ack at once.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_in_flight: u32,
    /// How long to wait for a publish ack before retrying with the same Nats-Msg-Id.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    publish_timeout: Duration,
    /// Decoded datagrams that may queue for a publish slot; beyond that they are dropped
    /// and counted.
    #[arg(long, default_value_t = 262_144, value_parser = clap::value_parser!(u32).range(1..))]
    queue_capacity: u32,
    /// On shutdown, how long to wait for outstanding acks.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Period of the counters and quality lines in the log (0 turns them off).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    stats_interval: Duration,
    /// Sensors with quality series of their own (tspi_producer_sensor_*{sensor="ID"}), in
    /// order of first appearance; the rest are summed under sensor="other".
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=65_536))]
    max_sensor_series: u32,
    /// Runtime worker threads. 0 (the default) runs reading, publishing and the NATS
    /// connection on one thread: the least CPU per datagram, leaving the other cores to a
    /// co-located nats-server. More threads spread a load beyond one core.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    worker_threads: u16,
    /// Site mode: store into this site's stream (TSPI_SITE_<NAME>) on the site's own
    /// nats-server, a leaf node of the centre with JetStream domain site-<name>, and make
    /// the centre's stream (--stream) source it through the durable consumer
    /// CENTRE_<STREAM> on the site stream. Ingest goes on with the WAN down; the metric
    /// tspi_producer_site_backlog counts what the centre has not confirmed.
    #[arg(long, value_parser = parse_site)]
    site: Option<String>,
    /// How long the site stream keeps messages: the longest WAN outage it rides out.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    site_retention: Duration,
    /// The centre's JetStream domain (site mode).
    #[arg(long, default_value = "centre")]
    centre_domain: String,
    /// Site mode: the most the centre's sourcing takes over the WAN, in megabits a
    /// second (0: no limit). Live traffic needs about 5 Mbit/s per 1,000 datagrams/s (a
    /// record with its headers is ~640 bytes); what the limit leaves above that is what a
    /// backlog catches up with, so it bounds what a catch-up takes from the WAN and the
    /// centre. Changing it updates the consumer in place.
    #[arg(long, default_value_t = 0)]
    site_sourcing_mbps: u64,
    /// Site mode: how long the centre's source may listen, with a backlog to take, and
    /// take none of it before tspi_producer_site_sourcing_stalled goes to 1 (and a
    /// warning is logged): a centre stream that refuses messages (full, or out of
    /// space) or a source that stopped asking. A cut link is not a stall.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    site_stall_after: Duration,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    stream: StreamArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    log: LogArgs,
}

fn parse_site(s: &str) -> Result<String, String> {
    tspi_bus::sites::check_site_name(s).map(|()| s.to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit_code(start(cli))
}

fn start(cli: Cli) -> anyhow::Result<()> {
    init_logging(&cli.log)?;
    let prefix = StreamPrefix::new(&cli.stream_prefix).context("--stream-prefix")?;
    let spec = match &cli.site {
        Some(site) => {
            tspi_bus::sites::site_stream_spec(site, cli.site_retention, &cli.stream, &prefix)?
        }
        None => StreamSpec::tspi(&cli.stream, &prefix)?,
    };
    let mut options = ProducerOptions {
        prefix,
        sensor_filter: (!cli.sensor_ids.is_empty())
            .then(|| cli.sensor_ids.iter().copied().collect::<HashSet<u16>>()),
        queue_capacity: cli.queue_capacity as usize,
        publisher: PublisherOptions {
            max_in_flight: cli.max_in_flight as usize,
            publish_timeout: cli.publish_timeout,
            ..PublisherOptions::default()
        },
        drain_timeout: cli.drain_timeout,
        stats_interval: cli.stats_interval,
        max_sensor_series: cli.max_sensor_series as usize,
    };
    // One thread by default: reader, publisher and the NATS connection then hand work to
    // each other without waking another thread (a third less CPU per datagram measured).
    let rt = if cli.worker_threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(cli.worker_threads))
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
            let shutdown = shutdown_on_signals()?;
            let addr = SocketAddr::new(cli.udp_host, cli.udp_port);
            let (std_socket, granted) = udp::bind_udp(addr, cli.udp_recv_buffer)
                .with_context(|| format!("cannot bind UDP {addr}"))?;
            if granted < cli.udp_recv_buffer {
                tracing::warn!(requested = cli.udp_recv_buffer, granted, "UDP receive buffer smaller than requested; raise net.core.rmem_max");
            }
            let socket = tokio::net::UdpSocket::from_std(std_socket)?;
            let client = connect(&cli.nats, "tspi-producer").await?;
            let js = async_nats::jetstream::new(client.clone());
            let info = ensure_stream(&client, &js, &spec).await?;
            options.publisher.fast =
                use_fast_batches(cli.stream.publish_mode, &info, &options.prefix)?;
            let mut registry = Registry::with_prefix("tspi_producer");
            let metrics = ProducerMetrics::new(&mut registry);
            let site_metrics = cli.site.is_some().then(|| tspi_producer::SiteMetrics::new(&mut registry));
            cli.metrics.serve(registry, shutdown.clone()).await?;
            tracing::info!(udp = %socket.local_addr()?, recv_buffer = granted, servers = %cli.nats.servers.join(","), stream = %spec.name, fast_batches = options.publisher.fast.is_some(), "producer running");
            if let (Some(site), Some(site_metrics)) = (cli.site.clone(), site_metrics) {
                let site_options = tspi_producer::SiteOptions {
                    site,
                    centre_domain: cli.centre_domain.clone(),
                    central: cli.stream.stream_name.clone(),
                    sourcing_limit_bps: cli.site_sourcing_mbps.saturating_mul(1_000_000),
                    stall_after: cli.site_stall_after,
                };
                tokio::spawn(tspi_producer::provision_site(
                    client.clone(),
                    site_options,
                    site_metrics,
                    shutdown.clone(),
                ));
            }
            run(options, socket, client.clone(), metrics, shutdown).await?;
            client.flush().await.ok();
            Ok(())
        })
}
