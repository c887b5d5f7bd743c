//! What the page is sent of the picture: the snapshot after a reset, then the latest
//! fix per track as the outbox, the page's acknowledgements and `--web-rate` allow. A
//! tab that is behind is thinned, then closed after the stall timeout.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use tspi_display::{Effect, Input, Mode, TrackFix};

use super::{now_ms, Tab, ROWS_PER_MESSAGE, TRACK_WINDOW};
use crate::web::protocol::{self, ServerMessage};

/// A track's latest fix, and whether the page has it.
#[derive(Debug)]
pub(super) struct Shown {
    pub(super) fix: TrackFix,
    pub(super) dirty: bool,
    pub(super) last_sent: Instant,
}

/// The page's acknowledgements of track batches: at most [`TRACK_WINDOW`] batches
/// unacknowledged (unless the page said it does not acknowledge, `/ws?ack=0`).
#[derive(Debug)]
pub(super) struct AckWindow {
    acks: bool,
    sent: u64,
    acked: u64,
    acked_at_ms: i64,
}

impl AckWindow {
    pub(super) fn new(acks: bool, now_ms: i64) -> Self {
        AckWindow {
            acks,
            sent: 0,
            acked: 0,
            acked_at_ms: now_ms,
        }
    }

    /// The number of the next batch (from 1 on each socket).
    pub(super) fn next_seq(&mut self) -> u64 {
        self.sent += 1;
        self.sent
    }

    /// The page applied batch `seq` (and so every one before it). A number never sent,
    /// or an old one, changes nothing.
    pub(super) fn acknowledged(&mut self, seq: u64, now_ms: i64) {
        if seq <= self.sent && seq > self.acked {
            self.acked = seq;
            self.acked_at_ms = now_ms;
        }
    }

    /// Whether no batch may go until the page acknowledges one.
    pub(super) fn full(&self) -> bool {
        self.acks && self.sent - self.acked >= TRACK_WINDOW
    }

    /// When the page last acknowledged progress (its stall is judged from it).
    pub(super) fn acked_at(&self) -> i64 {
        self.acked_at_ms
    }
}

impl Tab {
    pub(super) fn show(&mut self, fix: TrackFix) {
        match self.picture.get_mut(&fix.sensor_id) {
            Some(s) => {
                if s.dirty {
                    if self.backlog {
                        self.hub.metrics.thinned_backlog.inc();
                    } else {
                        self.hub.metrics.thinned_rate.inc();
                    }
                }
                s.fix = fix;
                s.dirty = true;
            }
            None => {
                self.picture.insert(
                    fix.sensor_id,
                    Shown {
                        fix,
                        dirty: true,
                        last_sent: Instant::now() - Duration::from_secs(3600),
                    },
                );
            }
        }
    }

    pub(super) fn send_snapshot(&mut self) {
        let rows = std::mem::take(&mut self.snapshot_rows);
        for chunk in rows.chunks(ROWS_PER_MESSAGE) {
            self.push(ServerMessage::Trail {
                gen: self.generation,
                u: chunk,
            });
        }
    }

    /// What every batch of effects leaves to do: the live picture when live was
    /// (re)entered, the mode when it changed.
    pub(super) fn after(&mut self) {
        if self.fill_live && self.session.mode() == &Mode::Live {
            self.fill_live = false;
            let picture = self.hub.picture();
            self.live_seq = picture.seq;
            let fx = self
                .session
                .handle(Input::LiveSettings(&picture.settings), now_ms());
            if fx.contains(&Effect::Settings) || self.generation == 0 {
                let v = protocol::settings(self.session.settings());
                self.push(v);
            }
            let mut rows = Vec::new();
            for t in &picture.tracks {
                rows.extend(t.trail.iter().map(protocol::track_row));
                rows.push(protocol::track_row(&t.fix));
                self.picture.insert(
                    t.fix.sensor_id,
                    Shown {
                        fix: t.fix,
                        dirty: false,
                        last_sent: Instant::now(),
                    },
                );
            }
            self.snapshot_rows = rows;
            self.send_snapshot();
            self.push(ServerMessage::Alarms {
                full: true,
                alarms: self.hub.alarms(),
            });
            self.push(ServerMessage::Ready {
                gen: self.generation,
                segment: None,
            });
            if let Some((id, _)) = self.awaiting.take() {
                self.push(protocol::reply(id, Ok(json!({"mode": "live"}))));
            }
        }
        if self.mode_dirty {
            self.mode_dirty = false;
            let v = protocol::mode(&self.session, now_ms(), self.generation);
            self.push(v);
        }
    }

    /// Send what is due: control messages first, then the tracks whose latest fix is
    /// new and whose rate allows it. A full outbox means the tab is behind: nothing is
    /// built (fixes coalesce), and past the stall timeout the tab is closed.
    pub(super) fn flush(&mut self) {
        let unacked = self.batches.full();
        if self.outbox.capacity() == 0 || unacked {
            self.backlog = true;
            // Taken nothing (socket full) or acknowledged nothing for the stall timeout.
            let progress = self.progress.load(Ordering::Relaxed).min(if unacked {
                self.batches.acked_at()
            } else {
                i64::MAX
            });
            if now_ms() - progress > self.ctx.options.stall_timeout.as_millis() as i64 {
                self.hub.metrics.dropped_stalled.inc();
                self.closing = Some("not reading: closed after the stall timeout");
            }
            return;
        }
        self.backlog = false;
        let now = Instant::now();
        // A little early is on time: flushes come every 40 ms.
        let gap = self.ctx.min_gap.mul_f64(0.8);
        let mut rows = Vec::new();
        for s in self.picture.values_mut() {
            if s.dirty && now.duration_since(s.last_sent) >= gap {
                s.dirty = false;
                s.last_sent = now;
                rows.push(protocol::track_row(&s.fix));
            }
        }
        if rows.is_empty() {
            return;
        }
        self.hub.metrics.updates_sent.inc_by(rows.len() as u64);
        let seq = self.batches.next_seq();
        let batch = ServerMessage::Tracks {
            gen: self.generation,
            seq,
            u: &rows,
        };
        let _ = self.outbox.try_send(batch.frame());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_batches_may_wait_for_the_page() {
        let mut w = AckWindow::new(true, 0);
        assert!(!w.full());
        assert_eq!((w.next_seq(), w.next_seq()), (1, 2));
        assert!(w.full());
        w.acknowledged(7, 10); // never sent: ignored
        assert!(w.full());
        w.acknowledged(1, 20);
        assert!(!w.full());
        assert_eq!(w.acked_at(), 20);
        w.acknowledged(1, 30); // again: no progress
        assert_eq!(w.acked_at(), 20);
        w.next_seq();
        assert!(w.full());
    }

    #[test]
    fn a_script_that_does_not_acknowledge_is_not_held() {
        let mut w = AckWindow::new(false, 0);
        for _ in 0..10 {
            w.next_seq();
        }
        assert!(!w.full());
    }
}
