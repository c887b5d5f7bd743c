//! Sensor faults the generator can play, to test what the producer's quality view sees:
//! a sensor that falls silent (`--dropout`), a sensor whose clock jumps
//! (`--clock-jump`), and datagrams sent out of order (`--reorder-every`).
//!
//! Parsing and the per-datagram decisions are pure; the frame loop applies them.

use std::time::Duration;

/// `SENSOR@T+D`: sensor SENSOR sends nothing from T to T+D after the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    pub sensor: u16,
    pub start: Duration,
    pub length: Duration,
}

/// `SENSOR@T:OFFSET`: from T after the start on, sensor SENSOR stamps its datagrams
/// OFFSET seconds off (negative: behind).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockJump {
    pub sensor: u16,
    pub at: Duration,
    pub offset_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub dropouts: Vec<Dropout>,
    pub clock_jumps: Vec<ClockJump>,
    /// Every Nth valid datagram is held back and sent after its sensor's next one.
    pub reorder_every: Option<u64>,
}

impl Faults {
    /// Whether `sensor` is silent `t` seconds after the start.
    pub fn silent(&self, sensor: u16, t: f64) -> bool {
        self.dropouts.iter().any(|d| {
            d.sensor == sensor
                && t >= d.start.as_secs_f64()
                && t < (d.start + d.length).as_secs_f64()
        })
    }

    /// Seconds `sensor`'s clock is off at `t` (the latest jump in force).
    pub fn clock_offset_s(&self, sensor: u16, t: f64) -> f64 {
        self.clock_jumps
            .iter()
            .filter(|j| j.sensor == sensor && t >= j.at.as_secs_f64())
            .max_by(|a, b| a.at.cmp(&b.at))
            .map_or(0.0, |j| j.offset_s)
    }
}

fn seconds(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let t = t.strip_suffix('s').unwrap_or(t);
    let v: f64 = t
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("'{text}' is not a number of seconds"))
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    let v = seconds(text)?;
    if !(0.0..=1e9).contains(&v) {
        return Err(format!("'{text}' must be between 0 and 1e9 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn sensor_and_rest(text: &str) -> Result<(u16, &str), String> {
    let (sensor, rest) = text
        .split_once('@')
        .ok_or_else(|| format!("'{text}': expected SENSOR@…"))?;
    let sensor = sensor
        .trim()
        .parse()
        .map_err(|_| format!("'{sensor}' is not a sensor id (0-65535)"))?;
    Ok((sensor, rest))
}

/// `--dropout SENSOR@T+D`, e.g. `3@20+5` or `3@20s+5s`.
pub fn parse_dropout(text: &str) -> Result<Dropout, String> {
    let (sensor, rest) = sensor_and_rest(text)?;
    let (start, length) = rest
        .split_once('+')
        .ok_or_else(|| format!("'{text}': expected SENSOR@T+D"))?;
    Ok(Dropout {
        sensor,
        start: duration(start)?,
        length: duration(length)?,
    })
}

/// `--clock-jump SENSOR@T:OFFSET`, e.g. `4@10:+30` or `4@10s:-2.5s`.
pub fn parse_clock_jump(text: &str) -> Result<ClockJump, String> {
    let (sensor, rest) = sensor_and_rest(text)?;
    let (at, offset) = rest
        .split_once(':')
        .ok_or_else(|| format!("'{text}': expected SENSOR@T:OFFSET"))?;
    let offset_s = seconds(offset)?;
    if offset_s.abs() > 86_400.0 {
        return Err(format!("'{text}': the offset must be within a day"));
    }
    Ok(ClockJump {
        sensor,
        at: duration(at)?,
        offset_s,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_dropout("3@20+5").unwrap(),
            Dropout {
                sensor: 3,
                start: Duration::from_secs(20),
                length: Duration::from_secs(5)
            }
        );
        assert_eq!(
            parse_dropout("3@1.5s+0.5s").unwrap().length,
            Duration::from_millis(500)
        );
        assert_eq!(parse_clock_jump("4@10:-2.5s").unwrap().offset_s, -2.5);
        assert_eq!(parse_clock_jump("4@10s:+30").unwrap().offset_s, 30.0);
        for bad in ["3", "x@1+2", "3@1", "3@-1+2", "3@1+nan", "70000@1+1"] {
            assert!(parse_dropout(bad).is_err(), "{bad}");
        }
        for bad in ["4@10", "4@10:inf", "4@10:+100000", "4@:1"] {
            assert!(parse_clock_jump(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_dropout_silences_one_sensor_for_its_window() {
        let f = Faults {
            dropouts: vec![parse_dropout("3@10+5").unwrap()],
            ..Faults::default()
        };
        assert!(!f.silent(3, 9.99));
        assert!(f.silent(3, 10.0));
        assert!(f.silent(3, 14.99));
        assert!(!f.silent(3, 15.0));
        assert!(!f.silent(4, 12.0));
    }

    #[test]
    fn the_latest_clock_jump_is_in_force() {
        let f = Faults {
            clock_jumps: vec![
                parse_clock_jump("4@10:+30").unwrap(),
                parse_clock_jump("4@20:0").unwrap(),
            ],
            ..Faults::default()
        };
        assert_eq!(f.clock_offset_s(4, 5.0), 0.0);
        assert_eq!(f.clock_offset_s(4, 10.0), 30.0);
        assert_eq!(f.clock_offset_s(4, 25.0), 0.0);
        assert_eq!(f.clock_offset_s(5, 15.0), 0.0);
    }
}
