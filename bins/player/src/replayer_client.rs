//! What both faces of the player say to the rest of the system: heartbeats on
//! `tspi.ops.status` (the roster) and requests to a room's replayer
//! (`player.<room>.ctrl`, [`ControlRequest`]).

use std::time::Duration;

use serde_json::json;
use tspi_core::playout::ControlRequest;

/// Publish a heartbeat on `tspi.ops.status` (a failure is logged: the roster only
/// misses one beat).
pub async fn send_heartbeat(client: &async_nats::Client, hb: &tspi_core::ops::Heartbeat) {
    if let Err(e) = client
        .publish(
            tspi_core::ops::STATUS_SUBJECT,
            tspi_core::ops::to_cbor(hb).into(),
        )
        .await
    {
        tracing::warn!(error = %e, "heartbeat not sent");
    }
}

/// Ask a room's replayer (`player.<room>.ctrl`, JSON); its reply, or why there is none.
pub async fn ask_replayer(
    client: &async_nats::Client,
    room: &str,
    request: &ControlRequest,
) -> serde_json::Value {
    let body = serde_json::to_vec(request).unwrap_or_default();
    match tokio::time::timeout(
        Duration::from_secs(5),
        client.request(tspi_core::playout::control_subject(room), body.into()),
    )
    .await
    {
        Ok(Ok(r)) => serde_json::from_slice(&r.payload)
            .unwrap_or_else(|_| json!({"ok": false, "error": "reply is not JSON"})),
        Ok(Err(e)) => json!({"ok": false, "error": format!("no replayer for room {room}: {e}")}),
        Err(_) => json!({"ok": false, "error": "replayer did not answer within 5 s"}),
    }
}
