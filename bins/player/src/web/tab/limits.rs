//! How much a page may ask: a token bucket of requests (a burst, refilled at a steady
//! rate) and a count of refused requests past which the tab is closed as a flood. Pure:
//! the caller passes the time.

use std::time::Instant;

/// Requests a tab may make: a burst, refilled per second.
const REQUEST_BURST: f64 = 50.0;
const REQUESTS_PER_S: f64 = 20.0;
/// Refused requests after which a tab is closed as a flood.
const FLOOD_REFUSALS: u32 = 500;

#[derive(Debug)]
pub(super) struct RequestLimits {
    bucket: f64,
    bucket_at: Instant,
    refusals: u32,
}

impl RequestLimits {
    pub(super) fn new(now: Instant) -> Self {
        RequestLimits {
            bucket: REQUEST_BURST,
            bucket_at: now,
            refusals: 0,
        }
    }

    /// Whether one more request may be served at `now`.
    pub(super) fn admit(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.bucket_at).as_secs_f64() * REQUESTS_PER_S;
        self.bucket = (self.bucket + refill).min(REQUEST_BURST);
        self.bucket_at = now;
        if self.bucket >= 1.0 {
            self.bucket -= 1.0;
            true
        } else {
            false
        }
    }

    /// Count one refused request; whether the page has now been refused too often.
    pub(super) fn refused_too_often(&mut self) -> bool {
        self.refusals += 1;
        self.refusals > FLOOD_REFUSALS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let t0 = Instant::now();
        let mut limits = RequestLimits::new(t0);
        let burst = (0..100).filter(|_| limits.admit(t0)).count();
        assert_eq!(burst, 50);
        let t1 = t0 + Duration::from_secs(1);
        let next_second = (0..100).filter(|_| limits.admit(t1)).count();
        assert_eq!(next_second, 20);
        // Idle time refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| limits.admit(t2)).count(), 50);
    }

    #[test]
    fn the_501st_refusal_is_a_flood() {
        let mut limits = RequestLimits::new(Instant::now());
        assert!((0..500).all(|_| !limits.refused_too_often()));
        assert!(limits.refused_too_often());
    }
}
