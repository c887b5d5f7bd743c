//! The time cursor (Open MCT's time conductor): which moment the display shows. It is a
//! clock of its own, computed from the wall time it is given, so the drawing code never
//! decides what time it is.

/// Fastest replay a display asks for (the replayer accepts up to 1000×).
pub const MAX_SPEED: f64 = 1000.0;

#[derive(Debug, Clone, PartialEq)]
pub enum Cursor {
    /// The newest data, as it arrives: the cursor is the wall clock.
    Live,
    /// A private replay: `anchor_ms` was on screen at wall time `anchor_wall_ms` and the
    /// cursor advances at `speed` from there, unless paused or not yet `started` (the
    /// picture at the anchor is still being fetched). The replay ends at `end_ms`.
    Replay {
        anchor_ms: i64,
        anchor_wall_ms: i64,
        speed: f64,
        paused: bool,
        started: bool,
        end_ms: i64,
    },
    /// A server-paced group replay: the newest frame's time, advancing at 1× between
    /// frames (at most `FOLLOW_COAST_MS` past the last one).
    Following {
        playhead_ms: Option<i64>,
        at_wall_ms: i64,
    },
}

/// How far a followed replay's cursor runs on without frames.
pub const FOLLOW_COAST_MS: i64 = 2_000;

impl Cursor {
    /// A replay that shows `at_ms` and waits for its picture.
    pub fn replay(at_ms: i64, now_ms: i64, speed: f64, paused: bool, end_ms: i64) -> Cursor {
        Cursor::Replay {
            anchor_ms: at_ms,
            anchor_wall_ms: now_ms,
            speed,
            paused,
            started: false,
            end_ms,
        }
    }

    /// The moment shown at wall time `now_ms`.
    pub fn at(&self, now_ms: i64) -> i64 {
        match *self {
            Cursor::Live => now_ms,
            Cursor::Replay {
                anchor_ms,
                anchor_wall_ms,
                speed,
                paused,
                started,
                end_ms,
            } => {
                if paused || !started {
                    anchor_ms
                } else {
                    let run = ((now_ms - anchor_wall_ms).max(0) as f64 * speed) as i64;
                    (anchor_ms + run).min(end_ms.max(anchor_ms))
                }
            }
            Cursor::Following {
                playhead_ms,
                at_wall_ms,
            } => match playhead_ms {
                Some(p) => p + (now_ms - at_wall_ms).clamp(0, FOLLOW_COAST_MS),
                None => now_ms,
            },
        }
    }

    /// The picture at the anchor is complete: the replay runs from now (unless paused).
    pub fn start(&mut self, now_ms: i64) {
        if let Cursor::Replay {
            anchor_wall_ms,
            started,
            ..
        } = self
        {
            *anchor_wall_ms = now_ms;
            *started = true;
        }
    }

    pub fn pause(&mut self, now_ms: i64) {
        let at = self.at(now_ms);
        if let Cursor::Replay {
            anchor_ms,
            anchor_wall_ms,
            paused,
            ..
        } = self
        {
            *anchor_ms = at;
            *anchor_wall_ms = now_ms;
            *paused = true;
        }
    }

    pub fn resume(&mut self, now_ms: i64) {
        if let Cursor::Replay {
            anchor_wall_ms,
            paused,
            ..
        } = self
        {
            *anchor_wall_ms = now_ms;
            *paused = false;
        }
    }

    pub fn set_speed(&mut self, x: f64, now_ms: i64) {
        let at = self.at(now_ms);
        if let Cursor::Replay {
            anchor_ms,
            anchor_wall_ms,
            speed,
            ..
        } = self
        {
            *anchor_ms = at;
            *anchor_wall_ms = now_ms;
            *speed = x;
        }
    }

    /// A followed replay's newest frame.
    pub fn frame(&mut self, playhead: i64, now_ms: i64) {
        if let Cursor::Following {
            playhead_ms,
            at_wall_ms,
        } = self
        {
            *playhead_ms = Some(playhead);
            *at_wall_ms = now_ms;
        }
    }

    pub fn paused(&self) -> bool {
        matches!(self, Cursor::Replay { paused: true, .. })
    }

    /// Replay speed (1 live and following).
    pub fn speed(&self) -> f64 {
        match self {
            Cursor::Replay { speed, .. } => *speed,
            _ => 1.0,
        }
    }

    /// A running replay that has reached its end (the live edge when it started).
    pub fn at_end(&self, now_ms: i64) -> bool {
        match *self {
            Cursor::Replay {
                end_ms,
                started: true,
                paused: false,
                ..
            } => self.at(now_ms) >= end_ms,
            _ => false,
        }
    }
}

/// A replay speed a display may ask for.
pub fn check_speed(x: f64) -> Result<f64, String> {
    if x.is_finite() && x > 0.0 && x <= MAX_SPEED {
        Ok(x)
    } else {
        Err(format!("speed {x} must be > 0 and ≤ {MAX_SPEED}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_is_the_wall_clock() {
        assert_eq!(Cursor::Live.at(123), 123);
    }

    #[test]
    fn a_replay_holds_until_started_then_runs_at_its_speed() {
        let mut c = Cursor::replay(1_000_000, 50, 5.0, false, 2_000_000);
        assert_eq!(c.at(500), 1_000_000, "not started: the anchor");
        c.start(1_000);
        assert_eq!(c.at(1_000), 1_000_000);
        assert_eq!(c.at(2_000), 1_005_000, "5 s per second");
        c.pause(2_000);
        assert_eq!(c.at(9_000), 1_005_000);
        assert!(c.paused());
        c.resume(10_000);
        assert_eq!(c.at(11_000), 1_010_000);
        c.set_speed(2.0, 11_000);
        assert_eq!(c.at(12_000), 1_012_000);
        assert_eq!(c.speed(), 2.0);
        assert!(!c.at_end(12_000));
        assert_eq!(c.at(10_000_000), 2_000_000, "never past the end");
        assert!(c.at_end(10_000_000));
    }

    #[test]
    fn a_paused_start_stays_put() {
        let mut c = Cursor::replay(500, 0, 1.0, true, 10_000);
        c.start(100);
        assert_eq!(c.at(5_000), 500);
        assert!(!c.at_end(1_000_000));
        c.resume(5_000);
        assert_eq!(c.at(6_000), 1_500);
    }

    #[test]
    fn following_coasts_between_frames_for_a_while() {
        let mut c = Cursor::Following {
            playhead_ms: None,
            at_wall_ms: 0,
        };
        assert_eq!(c.at(77), 77);
        c.frame(1_000, 10_000);
        assert_eq!(c.at(10_500), 1_500);
        assert_eq!(c.at(60_000), 1_000 + FOLLOW_COAST_MS);
    }

    #[test]
    fn speeds_are_checked() {
        assert!(check_speed(0.0).is_err());
        assert!(check_speed(f64::NAN).is_err());
        assert!(check_speed(1001.0).is_err());
        assert_eq!(check_speed(20.0), Ok(20.0));
    }
}
