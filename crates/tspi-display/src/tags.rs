//! When a display shows a tag: once per state (a tag arrives on `tags.create` and again on
//! `tags.broadcast`), and in a replay not before the playback reaches the tagged moment.

use std::collections::{HashSet, VecDeque};

use tspi_core::Tag;

use tspi_core::playout::Phase;

/// Tag states remembered to show each once; the oldest are forgotten first.
pub const SEEN_MAX: usize = 100_000;
/// Replayed tags waiting for the playhead; beyond this the earliest is shown at once.
pub const HELD_MAX: usize = 10_000;

#[derive(Debug, Default)]
pub struct TagGate {
    seen: HashSet<(String, String)>,
    seen_order: VecDeque<(String, String)>,
    held: Vec<(i64, String, Tag)>,
}

impl TagGate {
    /// A tag message arrived. Returns it when it is to be shown now; `None` for a repeat
    /// or a replayed tag that waits for the playhead ([`TagGate::release`]).
    ///
    /// `replay` is the playout phase and the bus time of the original message. A replayed
    /// tag counts as reached once its own message arrives: a tag dropped after the last
    /// frame of a window must not wait for a frame that never comes. Tags of the `state`
    /// phase (before the start point) show at once.
    pub fn offer(
        &mut self,
        subject: &str,
        tag: &Tag,
        replay: Option<(Phase, Option<i64>)>,
        playhead_ms: Option<i64>,
    ) -> Option<(String, Tag)> {
        let key = (tag.id.clone(), tag.updated_ts.clone());
        if !self.seen.insert(key.clone()) {
            return None;
        }
        self.seen_order.push_back(key);
        while self.seen_order.len() > SEEN_MAX {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        let at = tspi_core::rfc3339::parse_epoch_ms(&tag.ts);
        let hold = match (replay, at) {
            (Some((phase, original_ms)), Some(at)) if phase != Phase::State => {
                let reached = match (playhead_ms, original_ms) {
                    (Some(p), Some(o)) => Some(p.max(o)),
                    (p, o) => p.or(o),
                };
                reached.is_none_or(|r| at > r)
            }
            _ => false,
        };
        if hold {
            if self.held.len() >= HELD_MAX {
                self.held.sort_by_key(|(t, _, _)| *t);
                self.held.remove(0);
            }
            self.held
                .push((at.unwrap_or_default(), subject.to_owned(), tag.clone()));
            None
        } else {
            Some((subject.to_owned(), tag.clone()))
        }
    }

    /// The held tags the playhead has now reached, in order of their moments.
    pub fn release(&mut self, playhead_ms: i64) -> Vec<(String, Tag)> {
        if self.held.is_empty() {
            return Vec::new();
        }
        self.held.sort_by_key(|(t, _, _)| *t);
        let due = self
            .held
            .iter()
            .take_while(|(t, _, _)| *t <= playhead_ms)
            .count();
        self.held
            .drain(..due)
            .map(|(_, subject, tag)| (subject, tag))
            .collect()
    }

    /// A new timeline (a replay restarts): forget what was shown and held.
    pub fn restart(&mut self) {
        self.seen.clear();
        self.seen_order.clear();
        self.held.clear();
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tspi_core::TagStatus;

    fn tag(id: &str, ts: &str, updated: &str) -> Tag {
        Tag {
            id: id.into(),
            ts: ts.into(),
            label: "l".into(),
            status: TagStatus::Active,
            creator: None,
            notes: None,
            updated_ts: updated.into(),
            extra: None,
        }
    }
    const T0: &str = "2025-09-28T11:00:00Z";
    fn ms(s: &str) -> i64 {
        tspi_core::rfc3339::parse_epoch_ms(s).unwrap()
    }

    #[test]
    fn live_tags_show_once_per_state() {
        let mut g = TagGate::default();
        let a = tag("a", T0, T0);
        assert!(g.offer("tags.create", &a, None, None).is_some());
        assert!(g.offer("tags.broadcast", &a, None, None).is_none());
        let a2 = tag("a", T0, "2025-09-28T11:00:05Z");
        assert!(g.offer("tags.update", &a2, None, None).is_some());
    }

    #[test]
    fn replayed_tags_wait_for_the_playhead() {
        let mut g = TagGate::default();
        let later = tag("b", "2025-09-28T11:00:10Z", T0);
        // Its message arrived at 11:00:03 (tagged ahead), playhead at 11:00:02.
        let shown = g.offer(
            "tags.create",
            &later,
            Some((Phase::Window, Some(ms("2025-09-28T11:00:03Z")))),
            Some(ms("2025-09-28T11:00:02Z")),
        );
        assert!(shown.is_none());
        assert_eq!(g.held(), 1);
        assert!(g.release(ms("2025-09-28T11:00:09Z")).is_empty());
        let out = g.release(ms("2025-09-28T11:00:10Z"));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.id, "b");
        // The state phase (tags before the start point) shows at once.
        let mut g = TagGate::default();
        assert!(g
            .offer("tags.create", &later, Some((Phase::State, None)), None)
            .is_some());
        // A tag whose own message is already past the moment is shown.
        let mut g = TagGate::default();
        let past = tag("c", T0, T0);
        assert!(g
            .offer(
                "tags.create",
                &past,
                Some((Phase::Window, Some(ms("2025-09-28T11:00:01Z")))),
                None
            )
            .is_some());
    }

    #[test]
    fn restart_forgets_and_memory_is_bounded() {
        let mut g = TagGate::default();
        let a = tag("a", T0, T0);
        g.offer("tags.create", &a, None, None);
        g.restart();
        assert!(g.offer("tags.create", &a, None, None).is_some());
        for i in 0..(SEEN_MAX + 10) {
            g.offer("tags.create", &tag(&i.to_string(), T0, T0), None, None);
        }
        assert_eq!(g.seen.len(), SEEN_MAX);
        assert_eq!(g.seen_order.len(), SEEN_MAX);
        for i in 0..(HELD_MAX + 5) {
            let t = tag(&format!("h{i}"), "2030-01-01T00:00:00Z", T0);
            g.offer("tags.create", &t, Some((Phase::Window, None)), None);
        }
        assert_eq!(g.held(), HELD_MAX);
    }
}
