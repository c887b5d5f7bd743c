//! `--log-level` / `--log-format`: logs go to stderr only, so stdout stays data.

use clap::{Args, ValueEnum};
use tracing_subscriber::{fmt, EnvFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter such as
    /// "info,async_nats=warn").
    #[arg(long, env = "TSPI_LOG_LEVEL", default_value = "info,async_nats=warn")]
    pub log_level: String,
    /// Log line format on stderr.
    #[arg(long, env = "TSPI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Install the global subscriber. Fails on an unparsable filter.
pub fn init_logging(args: &LogArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", args.log_level))?;
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests calling several programs in one process) keeps the first.
    let _ = result;
    Ok(())
}
