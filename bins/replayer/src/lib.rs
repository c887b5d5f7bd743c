//! The replayer (SPEC §5, issue 3): brings archived moments back at their original pace.
//!
//! - `play`: one window (by time or around a tag) into one room, then exit.
//! - `serve`: a daemon playing per-room sessions on request (`player.<room>.ctrl`).
//! - `pcap`: replays the TSPI datagrams of a capture file to UDP or JetStream.
//! - `export`: a window of the archive as a file (CSV, Parquet, KML, CZML, …).
//!
//! **Architecture Invariant:** playout never goes back onto archived subjects: it is
//! published on `player.<room>.playout.<original subject>` with `Tspi-Replay` headers, so
//! nothing is ever archived twice.

pub mod capture;
pub mod control;
pub mod export;
pub mod pacing;
pub mod pcap_replay;
pub mod serve_export;
pub mod session;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::StreamExt;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use control::{Reply, Request, SnapshotPicture};
use session::{Control, PlayState, PlaySummary, ReplayContext, SeekTo, Session, SessionSpec};

/// Where a playout window comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowSpec {
    Range {
        start: OffsetDateTime,
        end: OffsetDateTime,
    },
    /// `window` in total, centred on the tagged moment.
    Tag { id: String, window: Duration },
}

pub fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    tspi_core::rfc3339::parse_epoch_ms(text)
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
        .ok_or_else(|| format!("{text:?} is not an RFC 3339 time (e.g. 2025-09-28T11:00:00Z)"))
}

async fn tag_moment(ctx: &ReplayContext, id: &str) -> anyhow::Result<OffsetDateTime> {
    let client = ctx
        .pool
        .get()
        .await
        .context("cannot connect to the database")?;
    match tspi_store::tag_moment(&client, id).await? {
        Some((ts, _status)) => Ok(ts),
        None => bail!("no tag with id {id:?} in the archive"),
    }
}

/// Turn a window spec into `[start, end)`.
pub async fn resolve_window(
    ctx: &ReplayContext,
    spec: &WindowSpec,
) -> anyhow::Result<(OffsetDateTime, OffsetDateTime)> {
    match spec {
        WindowSpec::Range { start, end } => {
            if end <= start {
                bail!("--end must be after --start");
            }
            Ok((*start, *end))
        }
        WindowSpec::Tag { id, window } => {
            let at = tag_moment(ctx, id).await?;
            let half = time::Duration::try_from(*window / 2).context("window too long")?;
            Ok((at - half, at + half))
        }
    }
}

/// `replayer play`: one session, until its window ends or `shutdown`.
pub async fn play(
    ctx: ReplayContext,
    spec: SessionSpec,
    shutdown: CancellationToken,
) -> anyhow::Result<PlaySummary> {
    let session = Session::start(ctx, spec);
    let controller = session.controller();
    let mut join = tokio::task::spawn_blocking(move || session.join());
    let summary = tokio::select! {
        s = &mut join => s?,
        _ = shutdown.cancelled() => {
            let _ = controller.send(Control::Stop);
            join.await?
        }
    };
    let summary = summary.context("the playout thread ended abnormally")?;
    if let Some(e) = &summary.status.error {
        bail!("{e}");
    }
    Ok(summary)
}

/// Rooms one `replayer serve` plays at once (each is a playout thread).
pub const MAX_ROOMS: usize = 64;

/// Archive questions (`coverage`, `tags`) answered at once; more are refused as busy.
pub const MAX_ARCHIVE_QUERIES: usize = 8;

/// `replayer serve`: answer `player.<room>.ctrl` requests until `shutdown`.
pub async fn serve(
    ctx: ReplayContext,
    stream: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut requests = ctx
        .client
        .subscribe("player.*.ctrl")
        .await
        .context("subscribing to player.*.ctrl")?;
    let mut rooms: HashMap<String, Session> = HashMap::new();
    let queries = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_ARCHIVE_QUERIES));
    let exports = serve_export::Exports::default();
    tracing::info!("serving playout control on player.<room>.ctrl");
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = requests.next() => match m {
                Some(m) => m,
                None => break,
            },
        };
        let room = msg.subject.split('.').nth(1).unwrap_or_default().to_owned();
        let (encoding, request) = control::decode(&msg.payload);
        let reply = match (control::check_room(&room), request) {
            (Err(e), _) | (_, Err(e)) => Reply::error(e),
            // Archive questions may take a while on a long span: they run on their own,
            // so room control is never held up behind them.
            (Ok(()), Ok(req @ (Request::Coverage { .. } | Request::Tags { .. }))) => {
                match queries.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (ctx, stream) = (ctx.clone(), stream.clone());
                        tokio::spawn(async move {
                            let reply = archive_query(&ctx, &stream, req).await;
                            if let Some(to) = msg.reply {
                                if let Err(e) =
                                    ctx.client.publish(to, reply.encode(encoding).into()).await
                                {
                                    tracing::warn!(error = %e, "reply not sent");
                                }
                            }
                            drop(permit);
                        });
                        continue;
                    }
                    Err(_) => Reply::error(format!(
                        "{MAX_ARCHIVE_QUERIES} archive queries are running; ask again shortly"
                    )),
                }
            }
            // Exports prepare (archive questions) and then wait on their writer: off
            // the loop too.
            (Ok(()), Ok(Request::Export(req))) => {
                let (ctx, stream, exports, shutdown) = (
                    ctx.clone(),
                    stream.clone(),
                    exports.clone(),
                    shutdown.clone(),
                );
                tokio::spawn(async move {
                    let reply = match exports.start(&ctx, &stream, &req, &shutdown).await {
                        Ok(started) => Reply {
                            ok: true,
                            export: Some(started),
                            ..Default::default()
                        },
                        Err(e) => Reply::error(e),
                    };
                    if let Some(to) = msg.reply {
                        if let Err(e) = ctx.client.publish(to, reply.encode(encoding).into()).await
                        {
                            tracing::warn!(error = %e, "reply not sent");
                        }
                    }
                });
                continue;
            }
            (Ok(()), Ok(Request::ExportNext { id })) => {
                let (ctx, exports) = (ctx.clone(), exports.clone());
                tokio::spawn(async move {
                    let (headers, payload) = match exports.next(&id).await {
                        Ok(piece) => serve_export::reply(piece, encoding),
                        Err(e) => (
                            async_nats::HeaderMap::new(),
                            Reply::error(e).encode(encoding).into(),
                        ),
                    };
                    if let Some(to) = msg.reply {
                        if let Err(e) = ctx.client.publish_with_headers(to, headers, payload).await
                        {
                            tracing::warn!(error = %e, "export chunk not sent");
                        }
                    }
                });
                continue;
            }
            (Ok(()), Ok(req)) => handle(&ctx, &stream, &mut rooms, &room, req).await,
        };
        if let Some(to) = msg.reply {
            if let Err(e) = ctx.client.publish(to, reply.encode(encoding).into()).await {
                tracing::warn!(error = %e, room, "reply not sent");
            }
        } else if !reply.ok {
            tracing::warn!(room, error = ?reply.error, "control message without reply subject failed");
        }
    }
    for (_, session) in rooms.drain() {
        session.control(Control::Stop);
        tokio::task::spawn_blocking(move || session.join())
            .await
            .ok();
    }
    Ok(())
}

async fn handle(
    ctx: &ReplayContext,
    stream: &str,
    rooms: &mut HashMap<String, Session>,
    room: &str,
    request: Request,
) -> Reply {
    let result: Result<Option<session::SessionStatus>, String> = async {
        match request {
            Request::Play {
                start,
                end,
                tag,
                window,
                speed,
                clock,
                paused,
                segment,
                snapshot,
            } => {
                if let Some(s) = &snapshot {
                    s.picture(OffsetDateTime::UNIX_EPOCH)?;
                }
                let window = match (start, end, tag) {
                    (Some(s), Some(e), None) => WindowSpec::Range {
                        start: parse_time(&s)?,
                        end: parse_time(&e)?,
                    },
                    (None, None, Some(id)) => WindowSpec::Tag {
                        id,
                        window: Duration::try_from_secs_f64(window.unwrap_or(60.0)).map_err(
                            |_| "window must be a positive number of seconds".to_owned(),
                        )?,
                    },
                    _ => return Err("play needs start and end, or tag (and window)".to_owned()),
                };
                let speed = control::check_speed(speed.unwrap_or(1.0))?;
                let clock = control::parse_clock(clock.as_deref())?;
                let (start, end) = resolve_window(ctx, &window)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                if let Some(old) = rooms.remove(room) {
                    old.control(Control::Stop);
                    tokio::task::spawn_blocking(move || old.join()).await.ok();
                }
                // Each room is a thread: bound them. Ended sessions make room first.
                if rooms.len() >= MAX_ROOMS {
                    rooms.retain(|_, s| {
                        s.status().is_some_and(|st| {
                            matches!(st.state, PlayState::Playing | PlayState::Paused)
                        })
                    });
                }
                if rooms.len() >= MAX_ROOMS {
                    return Err(format!(
                        "{MAX_ROOMS} rooms are playing already; stop one first"
                    ));
                }
                let session = Session::start(
                    ctx.clone(),
                    SessionSpec {
                        room: room.to_owned(),
                        stream: stream.to_owned(),
                        start,
                        end,
                        speed,
                        clock,
                        paused: paused.unwrap_or(false),
                        segment,
                        snapshot,
                    },
                );
                let status = session.status();
                rooms.insert(room.to_owned(), session);
                Ok(status)
            }
            Request::Status => Ok(rooms.get(room).and_then(Session::status)),
            other => {
                let session = rooms
                    .get(room)
                    .ok_or_else(|| format!("room {room:?} has no session; send play first"))?;
                let control = match other {
                    Request::Pause => Control::Pause,
                    Request::Resume => Control::Resume,
                    Request::Stop => Control::Stop,
                    Request::Speed { speed } => Control::Speed(control::check_speed(speed)?),
                    Request::Seek {
                        to,
                        tag,
                        segment,
                        snapshot,
                    } => {
                        if let Some(s) = &snapshot {
                            s.picture(OffsetDateTime::UNIX_EPOCH)?;
                        }
                        let at = match (to, tag) {
                            (Some(t), None) => parse_time(&t)?,
                            (None, Some(id)) => {
                                tag_moment(ctx, &id).await.map_err(|e| format!("{e:#}"))?
                            }
                            _ => return Err("seek needs either to or tag".to_owned()),
                        };
                        Control::Seek(SeekTo {
                            at,
                            segment,
                            snapshot,
                        })
                    }
                    Request::Play { .. }
                    | Request::Status
                    | Request::Coverage { .. }
                    | Request::Tags { .. }
                    | Request::Export(_)
                    | Request::ExportNext { .. } => unreachable!("handled above"),
                };
                if !session.control(control.clone()) {
                    return Err(format!("the session in room {room:?} has ended"));
                }
                // Give the playout thread a moment to apply it, so the reply shows the effect.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let status = session.status();
                if control == Control::Stop {
                    if let Some(s) = rooms.remove(room) {
                        tokio::task::spawn_blocking(move || s.join()).await.ok();
                    }
                }
                Ok(status)
            }
        }
    }
    .await;
    match result {
        Ok(status) => Reply::ok(status),
        Err(e) => Reply::error(e),
    }
}

/// `coverage` and `tags`: what the archive holds over a span, for a display's timeline.
async fn archive_query(ctx: &ReplayContext, stream: &str, request: Request) -> Reply {
    let result: Result<Reply, String> = async {
        let span = |start: &str, end: &str| -> Result<(OffsetDateTime, OffsetDateTime), String> {
            let (s, e) = (parse_time(start)?, parse_time(end)?);
            if e <= s {
                return Err("end must be after start".into());
            }
            Ok((s, e))
        };
        let client = ctx
            .pool
            .get()
            .await
            .map_err(|e| format!("cannot connect to the database: {e}"))?;
        match request {
            Request::Coverage {
                start,
                end,
                buckets,
            } => {
                let (s, e) = span(&start, &end)?;
                let n = buckets.unwrap_or(200);
                if n == 0 || n > control::MAX_BUCKETS {
                    return Err(format!("buckets must be 1 to {}", control::MAX_BUCKETS));
                }
                let counts = tspi_store::coverage(&client, stream, s, e, n)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Reply {
                    ok: true,
                    coverage: Some(control::Coverage {
                        start,
                        end,
                        bucket_s: (e - s).as_seconds_f64() / f64::from(n),
                        counts,
                    }),
                    ..Default::default()
                })
            }
            Request::Tags { start, end, limit } => {
                let (s, e) = span(&start, &end)?;
                let limit = limit.unwrap_or(control::MAX_TAGS).min(control::MAX_TAGS);
                let tags = tspi_store::tags_between(&client, s, e, i64::from(limit))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Reply {
                    ok: true,
                    tags: Some(tags),
                    ..Default::default()
                })
            }
            _ => Err("not an archive question".into()),
        }
    }
    .await;
    result.unwrap_or_else(Reply::error)
}
