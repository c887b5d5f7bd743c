//! `console`: flags → validated messages → JetStream.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tspi_bus::{connect, ensure_stream, NatsArgs, StreamSpec};
use tspi_core::units::UnitSystem;
use tspi_core::DisplaySetting;
use tspi_runtime::{exit_code, init_logging, parse_duration, LogArgs};

const EXAMPLES: &str = "\
Examples:
  console units imperial
  console marker-color '#ff8800'
  console session 'Sortie 7' S7
  console tag 'break left, flare' --at 2025-09-28T11:00:05Z
  console clients --json";

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
        Command::Clients { .. } => None,
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
                    println!("{}", serde_json::to_string(&sent)?);
                }
                Command::Tag { comment, at, notes } => {
                    let (tag, sent) =
                        tspi_console::send_tag(&js, &comment, at.as_deref(), &sender, notes)
                            .await?;
                    println!(
                        "{}",
                        serde_json::to_string(&serde_json::json!({"tag": tag, "sent": sent}))?
                    );
                }
                Command::Clients {
                    json,
                    window,
                    stale,
                } => {
                    ensure_stream(&client, &js, &StreamSpec::ops(true)).await?;
                    let rows = tspi_console::roster(&js, window, stale).await?;
                    if json {
                        println!("{}", serde_json::to_string(&rows)?);
                    } else {
                        println!(
                            "{:<24} {:<26} {:<26} {:<25} {:<25} {:<12} {:>8}",
                            "CLIENT",
                            "CHANNEL",
                            "STATE",
                            "CONNECTED SINCE",
                            "LAST SEEN",
                            "OPERATOR",
                            "PING ms"
                        );
                        for r in rows {
                            println!(
                                "{:<24} {:<26} {:<26} {:<25} {:<25} {:<12} {:>8}",
                                r.client_id,
                                r.channel_id,
                                format!("{:?}", r.state),
                                r.connected_since,
                                r.last_seen,
                                r.operator.unwrap_or_default(),
                                r.ping_ms.map(|p| format!("{p:.1}")).unwrap_or_default()
                            );
                        }
                    }
                }
            }
            client.flush().await.ok();
            Ok(())
        })
}
