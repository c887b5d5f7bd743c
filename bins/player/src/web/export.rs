//! `GET /export`: a window of the archive as a file, for the page's "Export window". The
//! display never reads the database: it asks `replayer serve` for the export
//! (`{"op":"export",…}` on `player.web-export.ctrl`) and streams the chunks the replayer
//! hands out (`export_next`) into the HTTP response as they come, one at a time, so a
//! slow download holds the replayer back instead of piling up here.
//!
//! Query: `start`, `end` (RFC 3339) or `tag` (with `before`, `after` seconds), `format`,
//! `sensors` (comma-separated ids), `clock` (`receive`|`tspi`), `step` (seconds, wide CSV).
//! The display's own origin and sensor sites go with the request, so the file places
//! tracks as the display does.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream;
use serde::Deserialize;
use serde_json::Value;
use tspi_core::playout::{ControlRequest, ExportRequest};

use super::WebContext;

/// The room the display's export requests go to (any room's replayer answers).
pub const EXPORT_ROOM: &str = "web-export";
/// How long preparing an export may take (the archive's questions on a long window).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one chunk may take (the replayer waits at most a minute for its writer).
const CHUNK_TIMEOUT: Duration = Duration::from_secs(75);

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    start: Option<String>,
    end: Option<String>,
    tag: Option<String>,
    before: Option<f64>,
    after: Option<f64>,
    format: Option<String>,
    sensors: Option<String>,
    clock: Option<String>,
    step: Option<f64>,
    /// `1`: only ask whether the export can be made (the page asks first, so it can say
    /// why not in a line instead of a failed download).
    check: Option<u8>,
}

fn text(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// The replayer's request for `q`, with this display's placement.
fn request(ctx: &WebContext, q: &ExportQuery) -> Result<ControlRequest, String> {
    let sensors = match q.sensors.as_deref().map(str::trim) {
        None | Some("") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("sensors: {s:?} is not a sensor id"))
            })
            .collect::<Result<Vec<u16>, String>>()?,
    };
    let placement = &ctx.options.placement;
    let site = |g: &tspi_core::geo::Geodetic| format!("{},{},{}", g.lat_deg, g.lon_deg, g.alt_m);
    Ok(ControlRequest::Export(Box::new(ExportRequest {
        start: q.start.clone(),
        end: q.end.clone(),
        tag: q.tag.clone(),
        before: q.before,
        after: q.after,
        format: q.format.clone().unwrap_or_else(|| "csv".into()),
        sensors,
        clock: q.clock.clone(),
        origin: placement.origin().map(|o| site(&o.origin)),
        sites: placement
            .sites()
            .iter()
            .map(|(id, f)| format!("{id}={}", site(&f.origin)))
            .collect(),
        step: q.step,
        udp_port: None,
        check: (q.check == Some(1)).then_some(true),
    })))
}

/// Start the export and stream it.
pub async fn export(ctx: &WebContext, q: ExportQuery) -> Response {
    let body = match request(ctx, &q) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let subject = tspi_core::playout::control_subject(EXPORT_ROOM);
    let reply = match tokio::time::timeout(
        START_TIMEOUT,
        ctx.client.request(
            subject.clone(),
            serde_json::to_vec(&body).unwrap_or_default().into(),
        ),
    )
    .await
    {
        Ok(Ok(m)) => serde_json::from_slice::<Value>(&m.payload).unwrap_or_default(),
        Ok(Err(e)) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("no replayer answers exports: {e}"),
            )
        }
        Err(_) => {
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                "the replayer did not start the export within a minute",
            )
        }
    };
    if reply["ok"] != true {
        let why = reply["error"]
            .as_str()
            .unwrap_or("the replayer refused the export");
        let status = if why.contains("no telemetry")
            || why.contains("no tag")
            || why.contains("has no telemetry")
        {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        return text(status, why);
    }
    let started = &reply["export"];
    if q.check == Some(1) {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            started.to_string(),
        )
            .into_response();
    }
    let (Some(id), Some(filename), Some(content_type)) = (
        started["id"].as_str().map(str::to_owned),
        started["filename"].as_str().map(str::to_owned),
        started["content_type"].as_str().map(str::to_owned),
    ) else {
        return text(
            StatusCode::BAD_GATEWAY,
            "the replayer's reply names no export",
        );
    };
    let client = ctx.client.clone();
    let next = serde_json::to_vec(&ControlRequest::ExportNext { id }).unwrap_or_default();
    let chunks = stream::unfold(Some(()), move |more| {
        let (client, subject, next) = (client.clone(), subject.clone(), next.clone());
        async move {
            more?;
            let piece =
                tokio::time::timeout(CHUNK_TIMEOUT, client.request(subject, next.into())).await;
            let m = match piece {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => return Some((Err(std::io::Error::other(e.to_string())), None)),
                Err(_) => {
                    return Some((
                        Err(std::io::Error::other(
                            "the replayer stopped sending the export",
                        )),
                        None,
                    ))
                }
            };
            let state = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Tspi-Export-State"))
                .map(|v| v.as_str().to_owned());
            match state.as_deref() {
                Some("more") => Some((Ok(m.payload), Some(()))),
                Some("done") => Some((Ok(m.payload), None)),
                _ => {
                    let why = serde_json::from_slice::<Value>(&m.payload)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "the export failed".into());
                    tracing::warn!(error = %why, "export broke off");
                    Some((Err(std::io::Error::other(why)), None))
                }
            }
        }
    });
    let mut r = Response::new(Body::from_stream(chunks));
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    // The name is the replayer's: digits, letters, '-', '.' only.
    let safe: String = filename
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
