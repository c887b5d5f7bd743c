//! The web display (`player --web ADDR`, issue 10): the player serving a range display
//! to browsers. The page and its data are embedded in the binary ([`assets`]); nothing is
//! fetched from anywhere else, so it works on an air-gapped range network. One hub
//! ([`hub`]) follows the bus for every tab; each tab is its own player session ([`tab`])
//! speaking the WebSocket protocol of [`protocol`]. The page needs no NATS or database
//! credentials: the program bridges.

pub mod assets;
pub mod auth;
pub mod export;
pub mod hub;
pub mod listener;
pub mod metrics;
pub mod protocol;
pub mod tab;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tspi_core::StreamPrefix;
use tspi_display::Placement;

pub use metrics::WebMetrics;

#[derive(Debug, Clone)]
pub struct WebOptions {
    /// The access token (`--web-token-file`); required beyond loopback.
    pub token: Option<String>,
    /// Origins besides the display's own that may open its WebSocket (a reverse proxy).
    pub allowed_origins: Vec<String>,
    /// Most updates per second per track sent to a tab.
    pub rate_hz: f64,
    pub trail: Duration,
    /// A track silent this long leaves the picture; also how far back a replay picture
    /// looks for a track's last position.
    pub track_timeout: Duration,
    pub max_sessions: usize,
    /// A tab that has taken nothing for this long is closed.
    pub stall_timeout: Duration,
    pub operator: Option<String>,
    pub stream: String,
    pub prefix: StreamPrefix,
    pub placement: Placement,
}

/// What every tab shares.
#[derive(Debug)]
pub struct WebContext {
    pub options: WebOptions,
    pub client: async_nats::Client,
    /// Least time between two updates of one track to a tab.
    pub min_gap: Duration,
}

#[derive(Debug, Clone)]
struct App {
    ctx: Arc<WebContext>,
    hub: Arc<hub::Hub>,
    shutdown: CancellationToken,
    /// Client ids of the tabs connected now (each has its own replay room).
    clients: Arc<Mutex<HashSet<String>>>,
    tabs: tokio_util::task::TaskTracker,
}

/// Serve the display on `listener` until `shutdown`; then close every tab.
pub async fn serve(
    options: WebOptions,
    client: async_nats::Client,
    listener: tokio::net::TcpListener,
    metrics: WebMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app_max_sessions = options.max_sessions;
    let refused_connections = metrics.refused_connections.clone();
    let hub = hub::start(
        client.clone(),
        hub::HubOptions {
            stream: options.stream.clone(),
            prefix: options.prefix.clone(),
            placement: options.placement.clone(),
            trail: options.trail,
            track_timeout: options.track_timeout,
        },
        metrics,
        shutdown.clone(),
    )
    .await?;
    let min_gap = if options.rate_hz > 0.0 {
        Duration::from_secs_f64(1.0 / options.rate_hz)
    } else {
        Duration::ZERO
    };
    let app = App {
        ctx: Arc::new(WebContext {
            options,
            client,
            min_gap,
        }),
        hub,
        shutdown: shutdown.clone(),
        clients: Arc::default(),
        tabs: tokio_util::task::TaskTracker::new(),
    };
    let tabs = app.tabs.clone();
    let router = Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
        .route("/ws", get(websocket))
        .route("/export", get(export_window))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .with_state(app);
    let addr = listener.local_addr()?;
    tracing::info!(url = %format!("http://{addr}/"), "web display up");
    let listener = listener::GuardedListener::new(
        listener,
        max_connections(app_max_sessions),
        refused_connections,
    );
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<listener::Peer>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await?;
    tabs.close();
    if tokio::time::timeout(Duration::from_secs(5), tabs.wait())
        .await
        .is_err()
    {
        tracing::warn!("tabs still closing after 5 s");
    }
    Ok(())
}

/// Connections the listener serves at once: each tab holds its WebSocket and, while it
/// loads, a few keep-alive connections for the page and its assets.
/// Never more than the descriptors left after 64 for NATS and the rest of the process.
fn max_connections(max_sessions: usize) -> usize {
    tspi_runtime::connection_cap(max_sessions.saturating_mul(4).saturating_add(16), 64, 8)
}

fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(assets::CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "Cross-Origin-Resource-Policy",
        HeaderValue::from_static("same-origin"),
    );
    r
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn refused(app: &App, why: auth::Refusal) -> Response {
    match why {
        auth::Refusal::Token => {
            app.hub.metrics.refused_token.inc();
            secure(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "This display needs its access token: open it as http://HOST:PORT/?token=… (ask the range's operators).\n",
                )
                    .into_response(),
            )
        }
        auth::Refusal::Origin => {
            app.hub.metrics.refused_origin.inc();
            secure(
                (
                    StatusCode::FORBIDDEN,
                    "WebSocket from another origin refused\n",
                )
                    .into_response(),
            )
        }
    }
}

/// `?token=` on a page: set the cookie and show the address without it.
fn token_redirect(uri: &Uri, token: &str) -> Response {
    let query: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("token="))
        .collect();
    let location = if query.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), query.join("&"))
    };
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&auth::cookie(token)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    secure(r)
}

async fn index(
    State(app): State<App>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<TokenQuery>,
) -> Response {
    let expected = app.ctx.options.token.as_deref();
    if let Err(why) = auth::check_token(expected, &headers, q.token.as_deref()) {
        return refused(&app, why);
    }
    if let (Some(token), Some(_)) = (expected, q.token.as_deref()) {
        return token_redirect(&uri, token);
    }
    serve_asset(&headers, "index.html")
}

async fn asset(State(app): State<App>, headers: HeaderMap, Path(path): Path<String>) -> Response {
    if let Err(why) = auth::check_token(app.ctx.options.token.as_deref(), &headers, None) {
        return refused(&app, why);
    }
    serve_asset(&headers, &path)
}

/// `GET /export`: the archive's window as a file, through the replayer ([`export`]).
async fn export_window(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<export::ExportQuery>,
) -> Response {
    if let Err(why) = auth::check_token(app.ctx.options.token.as_deref(), &headers, None) {
        return refused(&app, why);
    }
    secure(export::export(&app.ctx, q).await)
}

fn serve_asset(headers: &HeaderMap, path: &str) -> Response {
    let Some(a) = assets::get(path) else {
        return not_found_response();
    };
    let etag = a.etag();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.content_type)], a.bytes).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(r)
}

fn not_found_response() -> Response {
    secure((StatusCode::NOT_FOUND, "not found\n").into_response())
}

async fn not_found() -> Response {
    not_found_response()
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    token: Option<String>,
    client: Option<String>,
    operator: Option<String>,
    /// `0`: the client does not acknowledge track batches.
    ack: Option<String>,
}

/// A client id a page may choose: 1-48 letters, digits, `-`, `_` (it names a room).
fn client_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 48
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn websocket(
    State(app): State<App>,
    ConnectInfo(listener::Peer(remote)): ConnectInfo<listener::Peer>,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(why) = auth::check_token(
        app.ctx.options.token.as_deref(),
        &headers,
        q.token.as_deref(),
    ) {
        return refused(&app, why);
    }
    if let Err(why) = auth::check_origin(&headers, &app.ctx.options.allowed_origins) {
        return refused(&app, why);
    }
    let client_id = {
        let mut clients = app.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= app.ctx.options.max_sessions {
            app.hub.metrics.refused_limit.inc();
            return secure(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "{} tabs are open already (--web-max-sessions)\n",
                        clients.len()
                    ),
                )
                    .into_response(),
            );
        }
        let base = q
            .client
            .filter(|c| client_id_ok(c))
            .unwrap_or_else(|| format!("web-{}", &tspi_bus::operator::uuid_v4()[..8]));
        let mut id = base.clone();
        let mut n = 1;
        while clients.contains(&id) {
            n += 1;
            id = format!("{}-{n}", &base[..base.len().min(40)]);
        }
        clients.insert(id.clone());
        ClientSlot {
            clients: app.clients.clone(),
            id,
        }
    };
    let operator = q
        .operator
        .and_then(|o| protocol::clean_text(&o, protocol::MAX_OPERATOR).ok());
    let setup = tab::TabSetup {
        client_id: client_id.id.clone(),
        operator,
        remote,
        acks: q.ack.as_deref() != Some("0"),
    };
    let (ctx, hub, shutdown, tabs) = (
        app.ctx.clone(),
        app.hub.clone(),
        app.shutdown.clone(),
        app.tabs.clone(),
    );
    upgrade
        .max_message_size(protocol::MAX_REQUEST_BYTES)
        .max_frame_size(protocol::MAX_REQUEST_BYTES)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| {
            tabs.track_future(async move {
                tab::run(socket, ctx, hub, setup, shutdown).await;
                drop(client_id);
            })
        })
}

/// A tab's client id, taken while the tab lives (and given back if the upgrade fails).
struct ClientSlot {
    clients: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}
