//! The player (SPEC §5, issues 4 and 10): follows live telemetry with the display
//! commands and tags, a group replay, or a replayer room, and shows it — as JSON lines
//! ([`headless`]) or as a web display served to browsers ([`web`]). Both faces run the
//! same pure session ([`tspi_display::Session`]); what they do is only I/O.

pub mod feed;
pub mod headless;
pub mod replayer_client;
pub mod web;

use std::time::Duration;

use tspi_core::StreamPrefix;

/// Which time is the playhead: when frames were received, or the TSPI time inside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Clock {
    Receive,
    Tspi,
}

impl From<Clock> for tspi_display::Clock {
    fn from(c: Clock) -> Self {
        match c {
            Clock::Receive => tspi_display::Clock::Receive,
            Clock::Tspi => tspi_display::Clock::Tspi,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    Live,
    Historical,
}

#[derive(Debug, Clone)]
pub struct PlayerOptions {
    pub source: Source,
    /// Historical: the replayer room to follow.
    pub room: Option<String>,
    pub stream: String,
    pub prefix: StreamPrefix,
    /// Most frames per second printed per sensor (0 = every frame).
    pub rate_hz: f64,
    pub duration: Option<Duration>,
    pub exit_on_idle: Option<Duration>,
    pub json: bool,
    pub metrics_interval: Duration,
    pub client_id: String,
    pub operator: Option<String>,
    /// "Back to live" override: stay on the livestream when a group replay starts.
    pub stay_live: bool,
    /// Read control requests (JSON lines) from stdin. Historical: sent to the room's
    /// `player.<room>.ctrl` (play/pause/seek/speed/stop). Live: `live` (back to live,
    /// ignore group replays), `follow`, `rewind` (`{"op":"rewind","seconds":30}`).
    pub control_stdin: bool,
    /// The playhead clock (frames' `playhead`, when replayed tags show).
    pub clock: Clock,
    /// How much live telemetry is kept for `rewind` (zero: none).
    pub rewind_window: Duration,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PlayerCounts {
    pub frames_in: u64,
    pub frames_out: u64,
    pub commands: u64,
    pub tags: u64,
    pub invalid: u64,
}

fn session_config(options: &PlayerOptions) -> anyhow::Result<tspi_display::SessionConfig> {
    let start = match options.source {
        Source::Live => tspi_display::Start::Live {
            stay_live: options.stay_live,
        },
        Source::Historical => tspi_display::Start::Room(options.room.clone().ok_or_else(|| {
            anyhow::anyhow!("--source historical needs --room (the replayer's room)")
        })?),
    };
    Ok(tspi_display::SessionConfig {
        client_id: options.client_id.clone(),
        operator: options.operator.clone(),
        start,
        clock: options.clock.into(),
        replay_room: None,
        snapshot: None,
    })
}

/// The headless player: run until the duration, idle time or `shutdown`; frames and
/// events go to `out` as JSON lines.
pub async fn run<W: std::io::Write + Send>(
    options: PlayerOptions,
    client: async_nats::Client,
    out: W,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<PlayerCounts> {
    headless::run(options, client, out, shutdown).await
}
