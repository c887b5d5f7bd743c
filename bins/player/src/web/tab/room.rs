//! The tab's replay room: requests to its replayer and the messages it plays out.

use tspi_core::playout::ControlRequest;
use tspi_display::{Content, Feed, Input, Mode};

use super::{now_ms, Late, Tab};
use crate::feed::{Decoded, Incoming};

impl Tab {
    pub(super) fn replayer(&self, room: String, request: ControlRequest, segment: Option<u64>) {
        let client = self.ctx.client.clone();
        let late = self.late_tx.clone();
        let op = request.op();
        tokio::spawn(async move {
            let reply = crate::replayer_client::ask_replayer(&client, &room, &request).await;
            if reply["ok"] != true && !matches!(request, ControlRequest::Stop) {
                let error = format!(
                    "replay {op}: {}",
                    reply["error"].as_str().unwrap_or("no answer")
                );
                let _ = late.send(Late::ReplayerFailed { segment, error }).await;
            }
        });
    }

    pub(super) async fn room_message(&mut self, m: Incoming) {
        let Mode::Replay { room } = self.session.mode().clone() else {
            return;
        };
        let decoded = Decoded::new(&m.subject, &m.payload);
        let fix = match &decoded {
            Decoded::Telemetry(r) => Some(self.hub.place(r)),
            _ => None,
        };
        let content: Content<'_> = decoded.content();
        let fx = self.session.handle(
            Input::Message {
                feed: Feed::Room(&room),
                content,
                replayed: m.replayed,
            },
            now_ms(),
        );
        self.apply(fx, fix.as_ref()).await;
    }
}
