//! `console`: flags → validated messages → JetStream.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tspi_bus::{connect, ensure_stream, NatsArgs, StreamSpec};
use tspi_console::quality::Moment;
use tspi_core::alarm::AlarmRequest;
use tspi_core::units::UnitSystem;
use tspi_core::DisplaySetting;
use tspi_runtime::{exit_code, init_logging, parse_duration, LogArgs};

const EXAMPLES: &str = "\
Examples:
  console units imperial
  console marker-color '#ff8800'
  console session 'Sortie 7' S7
  console tag 'break left, flare' --at 2025-09-28T11:00:05Z
  console clients --json
  console quality --since 12h --database-url 'host=db2 user=replayer dbname=tspi'
  console quality --since 2025-09-28T06:00:00Z --until 2025-09-28T07:00:00Z --sensor 101 --json";

/// Operator console: display commands, tags, client roster.
#[derive(Debug, Parser)]
#[command(name = "console", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Who sends (commands' `sender`, tags' `creator`); default $USER@console.
    #[arg(long, global = true)]
    sender: Option<String>,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Switch every display to metric or imperial units.
    Units {
        #[arg(value_parser = parse_units)]
        units: UnitSystem,
    },
    /// Set the track marker colour (any CSS colour).
    MarkerColor { colour: String },
    /// Set the session name and id shown on every display.
    Session { name: String, id: String },
    /// Drop a tag on the timeline (now, or --at a moment).
    Tag {
        comment: String,
        /// The tagged moment (RFC 3339); default now.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        notes: Option<String>,
    },
    /// Group replays every livestream player joins.
    #[command(subcommand)]
    Replay(ReplayCommand),
    /// The channel directory (livestream first).
    Channels {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "TSPI")]
        stream: String,
    },
    /// Answer channel directory requests on tspi.channel.list.req until stopped.
    Directory {
        #[arg(long, default_value = "TSPI")]
        stream: String,
    },
    /// The live roster of clients from their heartbeats.
    Clients {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// How far back to read heartbeats.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        window: Duration,
        /// Leave out clients silent for longer than this.
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        stale: Duration,
    },
    /// The alarms in force now (from the alarmer): newest first, shelved ones last.
    Alarms {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an alarm (its id, as `console alarms` lists it).
    Ack {
        id: String,
        /// Who acknowledges (default: the user running the console).
        #[arg(long)]
        operator: Option<String>,
    },
    /// Shelve an alarm: still evaluated, off the operators' list until it runs out.
    Shelve {
        id: String,
        /// For how long.
        #[arg(long = "for", default_value = "1h", value_parser = parse_duration)]
        duration: Duration,
        #[arg(long)]
        operator: Option<String>,
    },
    /// Take an alarm off the shelf.
    Unshelve {
        id: String,
        #[arg(long)]
        operator: Option<String>,
    },
    /// Sensor-quality history from the archive: per sensor its rate, expected and missed
    /// messages, gaps (start, length), undecodable messages and receive-time skew, per
    /// minute of receive time. Reads the database only (a read-only replica is fine).
    Quality {
        /// Start of the span: a duration before now (1h, 12h, 7d) or an RFC 3339 time.
        #[arg(long, default_value = "1h", value_parser = Moment::parse)]
        since: Moment,
        /// End of the span (exclusive), the same forms; default now.
        #[arg(long, value_parser = Moment::parse)]
        until: Option<Moment>,
        /// One sensor only.
        #[arg(long)]
        sensor: Option<u16>,
        /// One JSON document (every minute of every sensor) instead of tables.
        #[arg(long)]
        json: bool,
        /// List every minute, not only those with losses.
        #[arg(long)]
        minutes: bool,
        /// Compute from the raw rows even where TimescaleDB keeps the continuous aggregate.
        #[arg(long)]
        raw: bool,
        #[arg(long, default_value = "TSPI")]
        stream: String,
        /// The archive (libpq URL or key=value string).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

#[derive(Debug, Subcommand)]
enum ReplayCommand {
    /// Start a group replay at IDENTIFIER (an RFC 3339 time or a stream sequence; a
    /// label with --start).
    Start {
        identifier: String,
        #[arg(long)]
        display_name: Option<String>,
        /// Stream to replay from.
        #[arg(long, default_value = "TSPI")]
        stream: String,
        /// Start time when IDENTIFIER is a label.
        #[arg(long)]
        start: Option<String>,
        /// Time given to livestream players to join before the replay starts.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        join_delay: Duration,
    },
    /// Stop one group replay channel, or all of them.
    Stop {
        channel: Option<String>,
        #[arg(long, default_value = "TSPI")]
        stream: String,
    },
}

/// `console quality`: the archive only, no NATS.
fn quality(command: Command) -> anyhow::Result<()> {
    let Command::Quality {
        since,
        until,
        sensor,
        json,
        minutes,
        raw,
        stream,
        database_url,
    } = command
    else {
        anyhow::bail!("not a quality command");
    };
    let now = time::OffsetDateTime::now_utc();
    let (since, until) = (since.resolve(now), until.map_or(now, |u| u.resolve(now)));
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(tspi_console::quality::quality_report(
            &database_url,
            &stream,
            since,
            until,
            sensor,
            raw,
        ))?;
    if json {
        tspi_runtime::outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        tspi_runtime::out!("{}", tspi_console::quality::render_table(&report, minutes))?;
    }
    Ok(())
}

fn parse_units(s: &str) -> Result<UnitSystem, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit_code(start(cli))
}

fn start(cli: Cli) -> anyhow::Result<()> {
    init_logging(&cli.log)?;
    let sender = cli.sender.clone().unwrap_or_else(|| {
        format!(
            "{}@console",
            std::env::var("USER").unwrap_or_else(|_| "operator".into())
        )
    });
    if matches!(cli.command, Command::Quality { .. }) {
        return quality(cli.command);
    }
    // Validate before connecting: bad input never reaches the bus.
    let setting = match &cli.command {
        Command::Units { units } => Some(DisplaySetting::Units(*units)),
        Command::MarkerColor { colour } => {
            Some(DisplaySetting::MarkerColor(colour.trim().to_owned()))
        }
        Command::Session { name, id } => Some(DisplaySetting::SessionMetadata {
            name: name.trim().to_owned(),
            id: id.trim().to_owned(),
        }),
        Command::Tag { comment, .. } => {
            tspi_console::check_comment(comment)?;
            None
        }
        Command::Replay(ReplayCommand::Start {
            identifier, start, ..
        }) => {
            tspi_console::replay_start(identifier, start.as_deref())?;
            None
        }
        Command::Clients { .. }
        | Command::Alarms { .. }
        | Command::Ack { .. }
        | Command::Shelve { .. }
        | Command::Unshelve { .. }
        | Command::Replay(ReplayCommand::Stop { .. })
        | Command::Channels { .. }
        | Command::Directory { .. } => None,
        Command::Quality { .. } => None,
    };
    if let Some(s) = &setting {
        tspi_core::DisplayCommand::new(
            "check".into(),
            tspi_console::now_rfc3339(),
            sender.clone(),
            s.clone(),
        )?;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let client = connect(&cli.nats, "tspi-console").await?;
            let js = async_nats::jetstream::new(client.clone());
            match cli.command {
                Command::Units { .. } | Command::MarkerColor { .. } | Command::Session { .. } => {
                    let setting = setting.context("validated above")?;
                    let sent = tspi_console::send_command(&js, &sender, setting).await?;
                    tspi_runtime::outln!("{}", serde_json::to_string(&sent)?)?;
                }
                Command::Tag { comment, at, notes } => {
                    let (tag, sent) =
                        tspi_console::send_tag(&js, &comment, at.as_deref(), &sender, notes)
                            .await?;
                    tspi_runtime::outln!(
                        "{}",
                        serde_json::to_string(&serde_json::json!({"tag": tag, "sent": sent}))?
                    )?;
                }
                Command::Replay(ReplayCommand::Start {
                    identifier,
                    display_name,
                    stream,
                    start,
                    join_delay,
                }) => {
                    let from = tspi_console::replay_start(&identifier, start.as_deref())?;
                    let channel = tspi_console::start_group_replay(
                        &client,
                        &js,
                        &identifier,
                        from,
                        display_name.as_deref(),
                        &stream,
                        join_delay,
                    )
                    .await?;
                    tspi_runtime::outln!("{}", serde_json::to_string(&channel)?)?;
                }
                Command::Replay(ReplayCommand::Stop { channel, stream }) => {
                    let stopped =
                        tspi_console::stop_group_replay(&client, &js, channel.as_deref(), &stream)
                            .await?;
                    tspi_runtime::outln!(
                        "{}",
                        serde_json::to_string(&serde_json::json!({"stopped": stopped}))?
                    )?;
                }
                Command::Channels { json, stream } => {
                    let list = tspi_console::channels(&js, &stream).await?;
                    if json {
                        tspi_runtime::outln!("{}", serde_json::to_string(&list)?)?;
                    } else {
                        tspi_runtime::outln!(
                            "{:<24} {:<14} {:<40} NAME",
                            "CHANNEL",
                            "KIND",
                            "SUBJECT"
                        )?;
                        for c in list {
                            tspi_runtime::outln!(
                                "{:<24} {:<14} {:<40} {}",
                                c.channel_id,
                                format!("{:?}", c.kind),
                                c.subject,
                                c.display_name
                            )?;
                        }
                    }
                }
                Command::Directory { stream } => {
                    let shutdown = tspi_runtime::shutdown_on_signals()?;
                    // The directory is the long-running console of a deployment: it keeps
                    // the heartbeats' stream there for the players, whose users may not
                    // create streams.
                    ensure_stream(&client, &js, &StreamSpec::ops(true)).await?;
                    tracing::info!("answering tspi.channel.list.req");
                    tspi_console::serve_directory(client.clone(), js.clone(), stream, shutdown)
                        .await?;
                }
                Command::Quality { .. } => anyhow::bail!("quality reads the archive, not NATS"),
                Command::Alarms { json } => {
                    let reply = tspi_console::ask_alarmer(&client, &AlarmRequest::List).await?;
                    let alarms = reply["alarms"].as_array().cloned().unwrap_or_default();
                    if json {
                        tspi_runtime::outln!("{}", serde_json::Value::Array(alarms))?;
                    } else {
                        tspi_runtime::outln!(
                            "{:<32} {:<9} {:<24} {:<14} WHAT",
                            "ALARM",
                            "LEVEL",
                            "SINCE",
                            "STATE"
                        )?;
                        for a in alarms {
                            let state = if a["shelved_until_ms"].is_i64() {
                                "shelved".to_owned()
                            } else if a["acknowledged"] == true {
                                format!("acked {}", a["operator"].as_str().unwrap_or_default())
                            } else {
                                "UNACKNOWLEDGED".to_owned()
                            };
                            tspi_runtime::outln!(
                                "{:<32} {:<9} {:<24} {:<14} {}",
                                a["id"].as_str().unwrap_or_default(),
                                a["level"].as_str().unwrap_or("-"),
                                a["at"].as_str().unwrap_or_default(),
                                state,
                                a["text"].as_str().unwrap_or_default()
                            )?;
                        }
                    }
                }
                Command::Ack { id, operator } => {
                    let operator = operator.unwrap_or_else(|| sender.clone());
                    let reply =
                        tspi_console::ask_alarmer(&client, &AlarmRequest::Ack { id, operator })
                            .await?;
                    tspi_runtime::outln!("{}", reply["alarm"])?;
                }
                Command::Shelve {
                    id,
                    duration,
                    operator,
                } => {
                    let operator = operator.unwrap_or_else(|| sender.clone());
                    let reply = tspi_console::ask_alarmer(
                        &client,
                        &AlarmRequest::Shelve {
                            id,
                            operator,
                            seconds: Some(duration.as_secs_f64()),
                        },
                    )
                    .await?;
                    tspi_runtime::outln!("{}", reply["alarm"])?;
                }
                Command::Unshelve { id, operator } => {
                    let operator = operator.unwrap_or_else(|| sender.clone());
                    let reply = tspi_console::ask_alarmer(
                        &client,
                        &AlarmRequest::Unshelve { id, operator },
                    )
                    .await?;
                    tspi_runtime::outln!("{}", reply["alarm"])?;
                }
                Command::Clients {
                    json,
                    window,
                    stale,
                } => {
                    ensure_stream(&client, &js, &StreamSpec::ops(true)).await?;
                    let rows = tspi_console::roster(&js, window, stale).await?;
                    if json {
                        tspi_runtime::outln!("{}", serde_json::to_string(&rows)?)?;
                    } else {
                        tspi_runtime::outln!(
                            "{:<24} {:<26} {:<26} {:<25} {:<25} {:<12} {:>8}",
                            "CLIENT",
                            "CHANNEL",
                            "STATE",
                            "CONNECTED SINCE",
                            "LAST SEEN",
                            "OPERATOR",
                            "PING ms"
                        )?;
                        for r in rows {
                            tspi_runtime::outln!(
                                "{:<24} {:<26} {:<26} {:<25} {:<25} {:<12} {:>8}",
                                r.client_id,
                                r.channel_id,
                                format!("{:?}", r.state),
                                r.connected_since,
                                r.last_seen,
                                r.operator.unwrap_or_default(),
                                r.ping_ms.map(|p| format!("{p:.1}")).unwrap_or_default()
                            )?;
                        }
                    }
                }
            }
            client.flush().await.ok();
            Ok(())
        })
}
