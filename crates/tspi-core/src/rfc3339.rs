//! UTC calendar arithmetic without a clock: RFC 3339 text for `recv_iso`, and the day of
//! year / ticks of a moment, which the generator stamps into datagrams.
//!
//! Hand-written (Howard Hinnant's days-from-civil algorithms) because it sits on the
//! producer's per-datagram path and this crate must stay free of I/O and heavy deps.

use std::fmt::Write as _;

const MS_PER_DAY: i64 = 86_400_000;

/// Civil date from days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Append `epoch_ms` as RFC 3339 UTC with millisecond precision,
/// e.g. `2025-09-28T11:00:00.123Z`.
pub fn write_utc_millis(out: &mut String, epoch_ms: i64) {
    match utc_millis_fixed(epoch_ms) {
        // The fixed form is ASCII digits and separators only.
        Some(text) => out.push_str(std::str::from_utf8(&text).unwrap_or_default()),
        None => write_utc_millis_fmt(out, epoch_ms),
    }
}

/// The general form, for years outside 0000..=9999 (five digits, or a sign).
fn write_utc_millis_fmt(out: &mut String, epoch_ms: i64) {
    let days = epoch_ms.div_euclid(MS_PER_DAY);
    let ms_of_day = epoch_ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        y,
        m,
        d,
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        ms_of_day % 1000
    );
}

/// `epoch_ms` as the 24 bytes of `YYYY-MM-DDTHH:MM:SS.mmmZ`, digit by digit (the
/// formatting machinery costs more than the rest of a record's encoding); `None` for a
/// year outside 0000..=9999.
pub fn utc_millis_fixed(epoch_ms: i64) -> Option<[u8; 24]> {
    let days = epoch_ms.div_euclid(MS_PER_DAY);
    let ms_of_day = epoch_ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let year = u32::try_from(y).ok().filter(|y| *y <= 9999)?;
    // Bounded by the calendar: < 86,400,000.
    let ms_of_day = ms_of_day as u32;
    let secs = ms_of_day / 1000;
    let mut t = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            t[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, secs / 3600);
    put(14, 2, (secs / 60) % 60);
    put(17, 2, secs % 60);
    put(20, 3, ms_of_day % 1000);
    Some(t)
}

/// `epoch_ms` as an RFC 3339 UTC string.
pub fn format_utc_millis(epoch_ms: i64) -> String {
    let mut s = String::with_capacity(24);
    write_utc_millis(&mut s, epoch_ms);
    s
}

/// Day of year (1..=366) and TSPI ticks since midnight of a UTC moment given in
/// microseconds since the Unix epoch.
pub fn day_and_ticks(epoch_us: i64) -> (u16, u32) {
    let us_per_day = MS_PER_DAY * 1000;
    let days = epoch_us.div_euclid(us_per_day);
    let us_of_day = epoch_us.rem_euclid(us_per_day);
    let (y, _, _) = civil_from_days(days);
    let day_of_year = days - days_from_civil(y, 1, 1) + 1;
    // Both values are bounded by the calendar: 1..=366 and < 864_000_000.
    (day_of_year as u16, (us_of_day / 100) as u32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_form_matches_the_general_one() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut moments = vec![
            0,
            -1,
            1,
            MS_PER_DAY - 1,
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
            253_402_300_800_000, // 10000-01-01: general form only
            -62_167_219_200_000, // 0000-01-01T00:00:00.000Z
            -62_167_219_200_001, // before year 0: general form only
            951_782_400_000,     // 2000-02-29
        ];
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            moments.push((state % 300_000_000_000_000) as i64 - 62_200_000_000_000);
        }
        for ms in moments {
            let mut general = String::new();
            write_utc_millis_fmt(&mut general, ms);
            let mut fast = String::new();
            write_utc_millis(&mut fast, ms);
            assert_eq!(fast, general, "{ms}");
            assert_eq!(
                utc_millis_fixed(ms).is_some(),
                (-62_167_219_200_000..=253_402_300_799_999).contains(&ms),
                "{ms}"
            );
        }
    }

    #[test]
    fn known_instants() {
        assert_eq!(format_utc_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_utc_millis(1_759_057_200_123),
            "2025-09-28T11:00:00.123Z"
        );
        assert_eq!(
            format_utc_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(format_utc_millis(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn day_of_year_and_ticks() {
        // 2024-12-31T23:59:59.9999 is day 366 of a leap year.
        let us = (days_from_civil(2024, 12, 31) * 86_400 + 86_399) * 1_000_000 + 999_900;
        assert_eq!(day_and_ticks(us), (366, 863_999_999));
        assert_eq!(day_and_ticks(0), (1, 0));
    }

    #[test]
    fn tspi_time_in_microseconds_agrees_with_milliseconds() {
        let reference = 1_759_057_200_123; // 2025-09-28T11:00:00.123Z, day 271
        for (day, time_s) in [
            (271, 39_600.123_4),
            (1, 0.0),
            (365, 86_399.999_9),
            (271, 0.0001),
        ] {
            let us = tspi_to_epoch_us(day, time_s, reference);
            let ms = tspi_to_epoch_ms(day, time_s, reference);
            assert!(
                (us - ms * 1000).abs() <= 500,
                "{day} {time_s}: {us} vs {ms}"
            );
        }
        assert_eq!(
            tspi_to_epoch_us(271, 39_600.123_4, reference),
            1_759_057_200_123_400
        );
        // Day 1 seen from the last day of the year is next year's.
        let dec31 = 1_767_225_599_000; // 2025-12-31T23:59:59Z
        assert_eq!(tspi_to_epoch_us(1, 1.0, dec31), 1_767_225_601_000_000);
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(37) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}

/// The UTC moment (ms since the epoch) of a TSPI time — day of year and seconds of day,
/// which carry no year — taking the year from `reference_ms` (e.g. the receive time).
/// Near New Year the neighbouring year is chosen when it lands closer to the reference.
pub fn tspi_to_epoch_ms(day: u16, time_s: f64, reference_ms: i64) -> i64 {
    tspi_in_nearest_year(day, (time_s * 1000.0).round() as i64, 1, reference_ms)
}

/// [`tspi_to_epoch_ms`] in microseconds: the full resolution of TSPI time (0.1 ms ticks).
pub fn tspi_to_epoch_us(day: u16, time_s: f64, reference_ms: i64) -> i64 {
    tspi_in_nearest_year(
        day,
        (time_s * 1e6).round() as i64,
        1000,
        reference_ms * 1000,
    )
}

/// Day `day` of the year nearest `reference` plus `of_day`, in units of `1/per_ms` ms.
fn tspi_in_nearest_year(day: u16, of_day: i64, per_ms: i64, reference: i64) -> i64 {
    let days = reference.div_euclid(MS_PER_DAY * per_ms);
    let (y, _, _) = civil_from_days(days);
    let in_year = |year: i64| {
        (days_from_civil(year, 1, 1) + i64::from(day) - 1) * MS_PER_DAY * per_ms + of_day
    };
    [y - 1, y, y + 1]
        .into_iter()
        .map(in_year)
        .min_by_key(|t| (t - reference).abs())
        .unwrap_or_else(|| in_year(y))
}

/// Milliseconds since the epoch of an RFC 3339 time (any offset); `None` when it is not one.
pub fn parse_epoch_ms(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn tspi_time_takes_the_year_of_the_reference() {
        // 2025-09-28T11:00:00Z is day 271.
        let reference = parse_epoch_ms("2025-09-28T11:00:00.050Z").unwrap();
        assert_eq!(tspi_to_epoch_ms(271, 39_600.0, reference), reference - 50);
        // Day 1, 00:00:01 seen on 31 December: next year.
        let nye = parse_epoch_ms("2025-12-31T23:59:59Z").unwrap();
        assert_eq!(tspi_to_epoch_ms(1, 1.0, nye), nye + 2_000);
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        assert_eq!(
            parse_epoch_ms(&format_utc_millis(1_759_057_200_123)),
            Some(1_759_057_200_123)
        );
        assert_eq!(
            parse_epoch_ms("2025-09-28T13:00:00+02:00"),
            Some(1_759_057_200_000)
        );
        assert_eq!(parse_epoch_ms("2025-09-28 11:00"), None);
        assert_eq!(parse_epoch_ms(""), None);
    }
}
