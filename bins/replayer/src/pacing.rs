//! Pure pacing arithmetic: when is a message with original time `t` due, given the speed
//! and where the playhead was anchored. Everything is derived from one anchor on a steady
//! clock, never from the previous message's send time, so errors do not accumulate
//! (no drift over long replays).

use std::time::{Duration, Instant};

/// Maps original times (µs on the chosen clock) to steady-clock instants.
#[derive(Debug, Clone)]
pub struct Pacer {
    speed: f64,
    anchor: Option<(Instant, i64)>,
    last_due: Option<Instant>,
}

impl Pacer {
    /// `speed` > 0: 1 = original pace, 10 = ten times faster.
    pub fn new(speed: f64) -> Self {
        Pacer {
            speed,
            anchor: None,
            last_due: None,
        }
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// The original time the playhead shows at `now` (None before the first message).
    pub fn position(&self, now: Instant) -> Option<i64> {
        let (wall, orig) = self.anchor?;
        let elapsed = now.saturating_duration_since(wall).as_secs_f64();
        Some(orig + (elapsed * self.speed * 1e6) as i64)
    }

    /// When the message with original time `orig_us` is due. The first message anchors the
    /// clock at `now`. Never earlier than the message before it, so order is kept even when
    /// original times step back (clocks of different sensors).
    pub fn due(&mut self, orig_us: i64, now: Instant) -> Instant {
        let (wall, anchor) = *self.anchor.get_or_insert((now, orig_us));
        let offset_us = (orig_us - anchor).max(0) as f64 / self.speed;
        let due = wall + Duration::from_secs_f64(offset_us / 1e6);
        let due = self.last_due.map_or(due, |last| due.max(last));
        self.last_due = Some(due);
        due
    }

    /// Keep the playhead where it is at `now` and continue at `speed` from there.
    pub fn set_speed(&mut self, speed: f64, now: Instant) {
        if let Some(pos) = self.position(now) {
            self.anchor = Some((now, pos));
        }
        self.speed = speed;
        self.last_due = None;
    }

    /// Continue after a pause: the playhead resumes at `position` (where it stood when
    /// paused) at `now`.
    pub fn resume_at(&mut self, position: i64, now: Instant) {
        self.anchor = Some((now, position));
        self.last_due = None;
    }

    /// Forget the anchor: the next message starts the clock again (after a seek).
    pub fn reset(&mut self) {
        self.anchor = None;
        self.last_due = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_divided_by_speed_from_one_anchor() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10.0);
        assert_eq!(p.due(5_000_000, t0), t0);
        // 1 s of original time at 10x is 100 ms, whatever happened in between.
        assert_eq!(
            p.due(6_000_000, t0 + Duration::from_secs(3)),
            t0 + Duration::from_millis(100)
        );
        assert_eq!(p.due(15_000_000, t0), t0 + Duration::from_secs(1));
    }

    #[test]
    fn order_is_kept_when_original_times_step_back() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1.0);
        p.due(1_000_000, t0);
        let a = p.due(2_000_000, t0);
        let b = p.due(1_500_000, t0);
        assert_eq!(a, b);
    }

    #[test]
    fn speed_change_keeps_the_playhead() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1.0);
        p.due(0, t0);
        let now = t0 + Duration::from_secs(2);
        assert_eq!(p.position(now), Some(2_000_000));
        p.set_speed(4.0, now);
        assert_eq!(p.position(now), Some(2_000_000));
        // 4 s of original time after the change take 1 s.
        assert_eq!(p.due(6_000_000, now), now + Duration::from_secs(1));
    }

    #[test]
    fn pause_and_resume_continue_where_it_stopped() {
        let t0 = Instant::now();
        let mut p = Pacer::new(2.0);
        p.due(0, t0);
        let paused_at = p.position(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(paused_at, 2_000_000);
        let later = t0 + Duration::from_secs(60);
        p.resume_at(paused_at, later);
        assert_eq!(p.due(3_000_000, later), later + Duration::from_millis(500));
        p.reset();
        assert_eq!(p.due(100, later), later);
    }
}
