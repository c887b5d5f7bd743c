//! At most so many updates per second per track: what a display shows of a fast sensor.

use std::collections::HashMap;

/// Per-track rate limit on a caller-given clock (µs), so it is testable without time.
#[derive(Debug, Clone, Default)]
pub struct RateGate {
    /// Least time between two shown updates of one track, µs; `None`: every update.
    min_gap_us: Option<i64>,
    last_us: HashMap<u16, i64>,
}

impl RateGate {
    /// `rate_hz` updates per second per track at most; 0 (or less) shows every update.
    pub fn new(rate_hz: f64) -> Self {
        RateGate {
            min_gap_us: (rate_hz.is_finite() && rate_hz > 0.0)
                .then(|| (1e6 / rate_hz).round().max(1.0) as i64),
            last_us: HashMap::new(),
        }
    }

    /// Whether track `id`'s update at `now_us` is shown (and if so, it is counted as shown).
    pub fn admit(&mut self, id: u16, now_us: i64) -> bool {
        let Some(gap) = self.min_gap_us else {
            return true;
        };
        match self.last_us.get(&id) {
            Some(last) if now_us - last < gap => false,
            _ => {
                self.last_us.insert(id, now_us);
                true
            }
        }
    }

    pub fn min_gap_us(&self) -> Option<i64> {
        self.min_gap_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_rate_per_track() {
        let mut g = RateGate::new(2.0);
        assert!(g.admit(1, 0));
        assert!(g.admit(2, 0), "tracks are independent");
        assert!(!g.admit(1, 499_999));
        assert!(g.admit(1, 500_000));
        let mut all = RateGate::new(0.0);
        assert!((0..10).all(|i| all.admit(1, i)));
        assert!(RateGate::new(f64::NAN).min_gap_us().is_none());
    }
}
