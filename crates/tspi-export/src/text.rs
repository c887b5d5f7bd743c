//! Text the writers share: numbers in their shortest exact form (ryu), RFC 3339 times to
//! the microsecond, JSON strings. These run several times per row, so they append to a
//! buffer instead of allocating.

/// `us` (µs since the epoch) as RFC 3339 UTC with six decimals, e.g.
/// `2025-09-28T11:00:00.123400Z`.
pub fn push_iso_us(out: &mut Vec<u8>, us: i64) {
    let ms = us.div_euclid(1000);
    let sub = us.rem_euclid(1000) as u32;
    match tspi_core::rfc3339::utc_millis_fixed(ms) {
        Some(fixed) => {
            out.extend_from_slice(&fixed[..23]);
            out.push(b'0' + (sub / 100) as u8);
            out.push(b'0' + (sub / 10 % 10) as u8);
            out.push(b'0' + (sub % 10) as u8);
            out.push(b'Z');
        }
        // Beyond years 0-9999: the general form (no receive time is, but be total).
        None => out.extend_from_slice(tspi_core::rfc3339::format_utc_millis(ms).as_bytes()),
    }
}

pub fn iso_us(us: i64) -> String {
    let mut out = Vec::with_capacity(27);
    push_iso_us(&mut out, us);
    String::from_utf8_lossy(&out).into_owned()
}

/// A finite number in its shortest form that reads back to the same `f64` (ryu);
/// integers without a fraction (`12`, not `12.0`). Non-finite values (none come from a
/// decoded record) are written as nothing: an empty cell, or the caller writes null.
pub fn push_f64(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        return;
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        push_i64(out, v as i64);
        return;
    }
    let mut b = ryu::Buffer::new();
    out.extend_from_slice(b.format_finite(v).as_bytes());
}

pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

/// `null` or the number.
pub fn push_json_f64(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(v) if v.is_finite() => push_f64(out, v),
        _ => out.extend_from_slice(b"null"),
    }
}

/// A JSON string with RFC 8259 escapes.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                use std::io::Write as _;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn times_to_the_microsecond() {
        assert_eq!(iso_us(1_759_057_200_123_400), "2025-09-28T11:00:00.123400Z");
        assert_eq!(iso_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(iso_us(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn numbers_read_back_exactly() {
        for v in [
            0.0,
            -2_449_841.92,
            1e-7,
            123_456.789_012_345,
            12.0,
            -0.5,
            1e300,
        ] {
            let mut out = Vec::new();
            push_f64(&mut out, v);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text.parse::<f64>().unwrap(), v, "{text}");
        }
        let mut out = Vec::new();
        push_f64(&mut out, 12.0);
        assert_eq!(out, b"12");
        let mut out = Vec::new();
        push_json_f64(&mut out, Some(f64::NAN));
        assert_eq!(out, b"null");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\nd\u0001é""#);
    }
}
