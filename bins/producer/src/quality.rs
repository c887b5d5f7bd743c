//! Per-sensor quality, live: what a range engineer asks first when a track looks wrong.
//! Is the sensor still sending, at its usual rate? Did frames go missing? Do they arrive
//! out of order, late, or with a clock that jumped?
//!
//! A pure state machine: [`QualityTracker::observe`] takes one decoded datagram's sensor,
//! TSPI time and receive time and classifies it against the sensor's own history; no
//! clock is read here, so every case is a unit test. The producer feeds it from the read
//! loop and turns [`SensorStats`] into metrics and log lines.
//!
//! Definitions (docs/operations.md, "Sensor quality"):
//! - **cadence**: the median of the sensor's last 15 regular TSPI-time steps;
//! - **gap**: the TSPI time moved on by more than 1.5 cadences and the receive time by
//!   about as much (the sensor fell silent): `missed` frames = steps − 1. A frame that
//!   then arrives out of order within [`REORDER_HORIZON_US`] fills its hole, so a gap is
//!   only counted once that horizon has passed with frames still missing;
//! - **clock jump**: the TSPI time moved by more than 1.5 cadences (or back by more than
//!   one second) while the receive time moved by a cadence or so: the sensor's clock
//!   jumped, no frame is counted missing;
//! - **out of order**: a TSPI time before the latest one seen, by less than one second;
//! - **repeated**: the same TSPI time again (JetStream de-duplicates it);
//! - **late**: received more than [`LATE_AFTER_US`] after the sensor's usual receive
//!   skew;
//! - **skew**: receive time − TSPI time, as p50 and p99 of the last 256 datagrams.

use std::collections::{HashMap, VecDeque};

use tspi_core::datagram::TICKS_PER_SECOND;

/// Microseconds per TSPI tick (1e-4 s).
const US_PER_TICK: i64 = 100;
const US_PER_SECOND: i64 = 1_000_000;
/// A datagram this much later than the sensor's median skew counts as late.
pub const LATE_AFTER_US: i64 = US_PER_SECOND;
/// How long a hole stays open for out-of-order frames before it counts as a gap.
pub const REORDER_HORIZON_US: i64 = US_PER_SECOND;
/// Regular steps kept for the cadence.
const CADENCE_STEPS: usize = 15;
/// Sensors tracked at most; datagrams of further ones are counted as untracked.
pub const MAX_TRACKED: usize = 4_096;
/// Skews kept for the quantiles.
const SKEW_SAMPLES: usize = 256;

/// What one datagram was, against its sensor's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The sensor's first datagram, or one whose step sets the cadence.
    First,
    Regular,
    /// The sensor fell silent: this many frames are missing before this one (a gap
    /// once the reorder horizon has passed without them).
    Gap {
        missing: u64,
    },
    ClockJump,
    OutOfOrder,
    Repeated,
}

/// Cumulative counts and current figures of one sensor (or of the sensors beyond the
/// series limit, summed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SensorStats {
    pub datagrams: u64,
    pub gaps: u64,
    pub missed: u64,
    pub clock_jumps: u64,
    pub out_of_order: u64,
    pub repeated: u64,
    pub late: u64,
    /// Nominal period, seconds (0 until known).
    pub cadence_s: f64,
    /// Receive time − TSPI time, seconds.
    pub skew_p50_s: f64,
    pub skew_p99_s: f64,
}

#[derive(Debug, Default)]
struct Sensor {
    /// Latest TSPI time seen, in ticks since the Unix epoch.
    latest_ticks: Option<i64>,
    latest_recv_us: i64,
    steps: VecDeque<i64>,
    cadence_ticks: Option<i64>,
    skews_us: VecDeque<i64>,
    /// Median of `skews_us`, refreshed every 32 datagrams (sorting each time is waste).
    median_skew_us: Option<i64>,
    /// Holes not yet counted: (first missing tick, last missing tick, frames still
    /// missing, receive time it was seen).
    holes: VecDeque<Hole>,
    stats: SensorStats,
}

impl Sensor {
    fn observe(&mut self, ticks: i64, recv_us: i64, skew_us: i64) -> Observation {
        self.stats.datagrams += 1;
        self.record_skew(skew_us);
        let Some(latest) = self.latest_ticks else {
            self.latest_ticks = Some(ticks);
            self.latest_recv_us = recv_us;
            return Observation::First;
        };
        let step = ticks - latest;
        let recv_step_ticks = (recv_us - self.latest_recv_us) / US_PER_TICK;
        let one_second = i64::from(TICKS_PER_SECOND);
        if step == 0 {
            self.stats.repeated += 1;
            return Observation::Repeated;
        }
        if step < 0 {
            if -step < one_second {
                self.stats.out_of_order += 1;
                if let Some(hole) = self
                    .holes
                    .iter_mut()
                    .find(|h| (h.first..=h.last).contains(&ticks) && h.missing > 0)
                {
                    hole.missing -= 1;
                }
                return Observation::OutOfOrder;
            }
            self.stats.clock_jumps += 1;
            self.advance(ticks, recv_us);
            return Observation::ClockJump;
        }
        let observation = match self.cadence_ticks {
            Some(cadence) if step * 2 > cadence * 3 => {
                // The receive clock says how long the sensor was really away: a gap moves
                // both clocks alike, a clock jump only the sensor's.
                let tolerance = (cadence * 5).max(one_second / 2);
                if (step - recv_step_ticks).abs() <= tolerance {
                    let missing = u64::try_from((step + cadence / 2) / cadence - 1).unwrap_or(0);
                    self.holes.push_back(Hole {
                        first: latest + 1,
                        last: ticks - 1,
                        missing,
                        seen_us: recv_us,
                    });
                    Observation::Gap { missing }
                } else {
                    self.stats.clock_jumps += 1;
                    Observation::ClockJump
                }
            }
            _ => {
                self.push_step(step);
                if self.cadence_ticks.is_some() {
                    Observation::Regular
                } else {
                    Observation::First
                }
            }
        };
        self.advance(ticks, recv_us);
        observation
    }

    /// Count the holes older than the reorder horizon at `now_us`.
    fn settle(&mut self, now_us: i64) {
        while let Some(hole) = self.holes.front() {
            if now_us - hole.seen_us < REORDER_HORIZON_US {
                break;
            }
            if hole.missing > 0 {
                self.stats.gaps += 1;
                self.stats.missed += hole.missing;
            }
            self.holes.pop_front();
        }
    }

    fn advance(&mut self, ticks: i64, recv_us: i64) {
        self.latest_ticks = Some(ticks);
        self.latest_recv_us = recv_us;
    }

    fn push_step(&mut self, step: i64) {
        let dropped = if self.steps.len() == CADENCE_STEPS {
            self.steps.pop_front()
        } else {
            None
        };
        self.steps.push_back(step);
        if dropped == Some(step) && self.cadence_ticks.is_some() {
            // The same steps as before, so the same median: the usual case of a sensor
            // on its cadence, and a sort saved per datagram.
            return;
        }
        // Three steps before a cadence is trusted: one odd step must not set it.
        if self.steps.len() >= 3 {
            // On the stack: this runs for every regular datagram.
            let mut steps = [0i64; CADENCE_STEPS];
            let n = self.steps.len();
            for (slot, step) in steps.iter_mut().zip(&self.steps) {
                *slot = *step;
            }
            steps[..n].sort_unstable();
            self.cadence_ticks = Some(quantile(&steps[..n], 0.5));
        }
    }

    fn record_skew(&mut self, skew_us: i64) {
        if let Some(median) = self.median_skew_us {
            if skew_us - median > LATE_AFTER_US {
                self.stats.late += 1;
            }
        }
        if self.skews_us.len() == SKEW_SAMPLES {
            self.skews_us.pop_front();
        }
        self.skews_us.push_back(skew_us);
        if self.median_skew_us.is_none() || self.stats.datagrams % 32 == 0 {
            self.median_skew_us = Some(median(self.skews_us.iter().copied()));
        }
    }

    fn snapshot(&self) -> SensorStats {
        let mut stats = self.stats.clone();
        stats.cadence_s = self
            .cadence_ticks
            .map_or(0.0, |c| c as f64 / f64::from(TICKS_PER_SECOND));
        let mut skews: Vec<i64> = self.skews_us.iter().copied().collect();
        skews.sort_unstable();
        stats.skew_p50_s = quantile(&skews, 0.5) as f64 / 1e6;
        stats.skew_p99_s = quantile(&skews, 0.99) as f64 / 1e6;
        stats
    }
}

#[derive(Debug)]
struct Hole {
    first: i64,
    last: i64,
    missing: u64,
    seen_us: i64,
}

fn median(values: impl Iterator<Item = i64>) -> i64 {
    let mut v: Vec<i64> = values.collect();
    v.sort_unstable();
    quantile(&v, 0.5)
}

/// Nearest-rank quantile of sorted values (0 when empty).
fn quantile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Every sensor's quality. Sensors beyond `max_series` are tracked each on their own
/// (their classification needs their own history) but reported summed as "other".
#[derive(Debug)]
pub struct QualityTracker {
    /// foldhash: std's SipHash was 40 % of this per-datagram lookup.
    sensors: HashMap<u16, Sensor, foldhash::fast::RandomState>,
    /// Sensors with a series of their own, in order of first appearance.
    named: Vec<u16>,
    max_series: usize,
    /// Sensors ever seen; beyond this many new ones are not tracked (counted).
    max_tracked: usize,
    pub untracked: u64,
}

impl QualityTracker {
    pub fn new(max_series: usize) -> Self {
        QualityTracker {
            sensors: HashMap::default(),
            named: Vec::new(),
            max_series,
            // About 2.5 KiB each: a flood of made-up sensor ids stops at 10 MiB.
            max_tracked: MAX_TRACKED,
            untracked: 0,
        }
    }

    /// Classify one datagram of `sensor` with TSPI time (`day`, `ticks`), received at
    /// `recv_epoch_us` (wall clock, µs since the Unix epoch).
    pub fn observe(
        &mut self,
        sensor: u16,
        day: u16,
        ticks: u32,
        recv_epoch_us: i64,
    ) -> Observation {
        // The TSPI time carries no year: take the one that puts it nearest the receive
        // time (New Year, leap years), then work in ticks since the Unix epoch.
        let whole_ms = ticks / 10;
        let tspi_ms = tspi_core::rfc3339::tspi_to_epoch_ms(
            day,
            f64::from(whole_ms) / 1000.0,
            recv_epoch_us.div_euclid(1000),
        );
        let tspi_us = tspi_ms * 1000 + i64::from(ticks % 10) * US_PER_TICK;
        let tspi = tspi_us.div_euclid(US_PER_TICK);
        let skew_us = recv_epoch_us - tspi_us;
        if !self.sensors.contains_key(&sensor) {
            if self.sensors.len() >= self.max_tracked {
                self.untracked += 1;
                return Observation::First;
            }
            if self.named.len() < self.max_series {
                self.named.push(sensor);
            }
        }
        let entry = self.sensors.entry(sensor).or_default();
        entry.settle(recv_epoch_us);
        entry.observe(tspi, recv_epoch_us, skew_us)
    }

    /// Count every hole older than the reorder horizon at `now_epoch_us` (call before
    /// [`QualityTracker::snapshot`]: a sensor that stays silent sends nothing that would).
    pub fn settle(&mut self, now_epoch_us: i64) {
        for sensor in self.sensors.values_mut() {
            sensor.settle(now_epoch_us);
        }
    }

    /// Sensors with a series of their own and their figures, then the sum of the rest
    /// (`None` when there are none).
    pub fn snapshot(&self) -> (Vec<(u16, SensorStats)>, Option<SensorStats>) {
        let named: Vec<(u16, SensorStats)> = self
            .named
            .iter()
            .filter_map(|id| Some((*id, self.sensors.get(id)?.snapshot())))
            .collect();
        let mut other: Option<SensorStats> = None;
        for (id, sensor) in &self.sensors {
            if self.named.contains(id) {
                continue;
            }
            let s = &sensor.stats;
            let o = other.get_or_insert_with(SensorStats::default);
            o.datagrams += s.datagrams;
            o.gaps += s.gaps;
            o.missed += s.missed;
            o.clock_jumps += s.clock_jumps;
            o.out_of_order += s.out_of_order;
            o.repeated += s.repeated;
            o.late += s.late;
        }
        (named, other)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// 2026-03-01T00:00:00Z, day 60.
    const EPOCH_US: i64 = 1_772_323_200 * US_PER_SECOND;
    const DAY: u16 = 60;

    /// A sensor at `hz` with `latency_us` between its clock and ours.
    struct Feed {
        tracker: QualityTracker,
        period_us: i64,
        latency_us: i64,
    }

    impl Feed {
        fn new(hz: i64, latency_us: i64) -> Feed {
            Feed {
                tracker: QualityTracker::new(4),
                period_us: US_PER_SECOND / hz,
                latency_us,
            }
        }
        /// Frame `n` of sensor 1, stamped `clock_offset_us` off, received on time.
        fn frame(&mut self, n: i64, clock_offset_us: i64) -> Observation {
            self.frame_of(1, n, clock_offset_us, 0)
        }
        fn frame_of(
            &mut self,
            sensor: u16,
            n: i64,
            clock_offset_us: i64,
            delay_us: i64,
        ) -> Observation {
            let tspi_us = n * self.period_us + clock_offset_us;
            let recv = EPOCH_US + n * self.period_us + self.latency_us + delay_us;
            self.tracker
                .observe(sensor, DAY, (tspi_us / US_PER_TICK) as u32, recv)
        }
        fn stats(&mut self, sensor: u16) -> SensorStats {
            self.tracker.settle(EPOCH_US + 3_600 * US_PER_SECOND);
            let (named, _) = self.tracker.snapshot();
            named.into_iter().find(|(id, _)| *id == sensor).unwrap().1
        }
    }

    #[test]
    fn a_steady_sensor_has_a_cadence_and_a_skew_and_nothing_else() {
        let mut f = Feed::new(50, 3_000);
        for n in 0..200 {
            f.frame(n, 0);
        }
        let s = f.stats(1);
        assert_eq!(s.datagrams, 200);
        assert!((s.cadence_s - 0.02).abs() < 1e-9, "{s:?}");
        assert!((s.skew_p50_s - 0.003).abs() < 1e-6, "{s:?}");
        assert_eq!(
            (
                s.gaps,
                s.missed,
                s.clock_jumps,
                s.out_of_order,
                s.repeated,
                s.late
            ),
            (0, 0, 0, 0, 0, 0)
        );
    }

    #[test]
    fn a_dropout_is_a_gap_with_its_missed_frames() {
        let mut f = Feed::new(50, 1_000);
        for n in 0..100 {
            f.frame(n, 0);
        }
        // Silent for 2 s: frames 100..199 never come.
        assert_eq!(f.frame(200, 0), Observation::Gap { missing: 100 });
        for n in 201..300 {
            assert_eq!(f.frame(n, 0), Observation::Regular);
        }
        let s = f.stats(1);
        assert_eq!((s.gaps, s.missed, s.clock_jumps), (1, 100, 0));
    }

    #[test]
    fn a_clock_jump_is_not_a_gap() {
        let mut f = Feed::new(10, 2_000);
        for n in 0..50 {
            f.frame(n, 0);
        }
        // The sensor's clock jumps 30 s ahead; frames keep coming every 100 ms.
        assert_eq!(f.frame(50, 30 * US_PER_SECOND), Observation::ClockJump);
        for n in 51..80 {
            assert_eq!(f.frame(n, 30 * US_PER_SECOND), Observation::Regular);
        }
        // And back again.
        assert_eq!(f.frame(80, 0), Observation::ClockJump);
        let s = f.stats(1);
        assert_eq!((s.gaps, s.missed, s.clock_jumps), (0, 0, 2));
    }

    #[test]
    fn reordered_and_repeated_frames_are_counted_apart() {
        let mut f = Feed::new(100, 500);
        for n in 0..20 {
            f.frame(n, 0);
        }
        // 20 comes after 21: a hole that 20 then fills, so no gap.
        assert_eq!(f.frame(21, 0), Observation::Gap { missing: 1 });
        assert_eq!(f.frame(20, 0), Observation::OutOfOrder);
        assert_eq!(f.frame(21, 0), Observation::Repeated);
        assert_eq!(f.frame(22, 0), Observation::Regular);
        // 23 and 24 never come.
        f.frame(25, 0);
        for n in 26..30 {
            f.frame(n, 0);
        }
        let s = f.stats(1);
        assert_eq!((s.out_of_order, s.repeated, s.gaps, s.missed), (1, 1, 1, 2));
    }

    #[test]
    fn a_datagram_held_up_for_seconds_is_late() {
        let mut f = Feed::new(20, 1_000);
        for n in 0..100 {
            f.frame_of(1, n, 0, 0);
        }
        // Frame 100 arrives 1.5 s after it should (its clock is right).
        f.frame_of(1, 100, 0, 1_500_000);
        let s = f.stats(1);
        assert_eq!(s.late, 1);
        assert!(s.skew_p99_s >= 0.001, "{s:?}");
    }

    #[test]
    fn skew_is_right_across_midnight_and_new_year() {
        let mut t = QualityTracker::new(4);
        use tspi_core::datagram::TICKS_PER_DAY;
        // Sent at 23:59:59.9990 on day 365, received 2 ms later on day 1 of the next year.
        let recv = 1_798_761_600 * US_PER_SECOND + 1_000; // 2027-01-01T00:00:00.001Z
        t.observe(9, 365, TICKS_PER_DAY - 10, recv);
        let (named, _) = t.snapshot();
        assert!(
            (named[0].1.skew_p50_s - 0.002).abs() < 1e-6,
            "{:?}",
            named[0].1
        );
        // 2024 had 366 days: sent at 23:59:59.9990 on day 366, received 2 ms later.
        let recv = 1_735_689_600 * US_PER_SECOND + 1_000; // 2025-01-01T00:00:00.001Z
        t.observe(8, 366, TICKS_PER_DAY - 10, recv);
        let (named, _) = t.snapshot();
        assert!(
            (named[1].1.skew_p50_s - 0.002).abs() < 1e-6,
            "{:?}",
            named[1].1
        );
    }

    #[test]
    fn series_are_bounded_and_the_rest_is_summed() {
        let mut f = Feed::new(10, 0);
        for sensor in 1..=10u16 {
            for n in 0..30 {
                f.frame_of(sensor, n, 0, 0);
            }
            // Each sensor then loses 5 frames.
            f.frame_of(sensor, 35, 0, 0);
        }
        f.tracker.settle(EPOCH_US + 3_600 * US_PER_SECOND);
        let (named, other) = f.tracker.snapshot();
        assert_eq!(named.len(), 4);
        assert!(named
            .iter()
            .all(|(_, s)| s.missed == 5 && s.datagrams == 31));
        let other = other.unwrap();
        assert_eq!((other.datagrams, other.gaps, other.missed), (6 * 31, 6, 30));
    }

    #[test]
    fn made_up_sensor_ids_are_tracked_up_to_a_limit_then_counted() {
        let mut t = QualityTracker::new(64);
        for id in 0..=u16::MAX {
            t.observe(id, DAY, 0, EPOCH_US);
        }
        assert_eq!(t.sensors.len(), MAX_TRACKED);
        assert_eq!(t.untracked, 65_536 - MAX_TRACKED as u64);
        let (named, other) = t.snapshot();
        assert_eq!(named.len(), 64);
        assert_eq!(other.unwrap().datagrams, (MAX_TRACKED - 64) as u64);
    }

    #[test]
    fn one_odd_step_at_the_start_does_not_set_the_cadence() {
        let mut f = Feed::new(50, 0);
        f.frame(0, 0);
        f.frame(10, 0); // a 200 ms step first
        for n in 11..40 {
            f.frame(n, 0);
        }
        assert!((f.stats(1).cadence_s - 0.02).abs() < 1e-9);
    }
}
