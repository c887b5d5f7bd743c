//! A minimal CBOR (RFC 8949) writer for the telemetry record, the producer's hot path.
//!
//! Hand-written because a generic serializer costs ~1.4 µs per record here and this one a
//! fraction of that. It writes definite-length maps, text keys, the shortest integer
//! heads and floats as f32 when that is lossless (f64 otherwise); any CBOR decoder reads
//! it, and the property tests check that ciborium decodes it to the same record.

pub(crate) fn head(out: &mut Vec<u8>, major: u8, value: u64) {
    let m = major << 5;
    if value < 24 {
        out.push(m | value as u8);
    } else if value <= u64::from(u8::MAX) {
        out.extend_from_slice(&[m | 24, value as u8]);
    } else if value <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(value as u16).to_be_bytes());
    } else if value <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(value as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub(crate) fn map(out: &mut Vec<u8>, entries: u64) {
    head(out, 5, entries);
}

pub(crate) fn text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn uint(out: &mut Vec<u8>, v: u64) {
    head(out, 0, v);
}

pub(crate) fn int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        head(out, 0, v as u64);
    } else {
        // Major type 1 carries -1 - v.
        head(out, 1, (-1 - v) as u64);
    }
}

pub(crate) fn boolean(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xf5 } else { 0xf4 });
}

pub(crate) fn float(out: &mut Vec<u8>, v: f64) {
    let narrow = v as f32;
    if f64::from(narrow) == v || v.is_nan() {
        out.push(0xfa);
        out.extend_from_slice(&narrow.to_be_bytes());
    } else {
        out.push(0xfb);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// A strict reader for the shapes the record uses: definite-length heads, text keys,
/// integers, floats (half, single, double) and booleans. Anything else — tags, indefinite
/// lengths, byte strings, arrays — makes it give up (`None`), and the caller falls back to
/// the general decoder, which then decides (and words the error).
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    /// Major type, additional info, and the argument for ai < 28.
    fn head(&mut self) -> Option<(u8, u8, u64)> {
        let first = *self.take(1)?.first()?;
        let (major, ai) = (first >> 5, first & 0x1f);
        let arg = match ai {
            0..=23 => u64::from(ai),
            24 => u64::from(self.take(1)?[0]),
            25 => u64::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?)),
            26 => u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
            27 => u64::from_be_bytes(self.take(8)?.try_into().ok()?),
            _ => return None,
        };
        Some((major, ai, arg))
    }

    pub(crate) fn map_len(&mut self) -> Option<u64> {
        match self.head()? {
            (5, _, n) => Some(n),
            _ => None,
        }
    }

    pub(crate) fn text(&mut self) -> Option<&'a str> {
        match self.head()? {
            (3, _, n) => std::str::from_utf8(self.take(usize::try_from(n).ok()?)?).ok(),
            _ => None,
        }
    }

    pub(crate) fn uint(&mut self) -> Option<u64> {
        match self.head()? {
            (0, _, n) => Some(n),
            _ => None,
        }
    }

    pub(crate) fn int(&mut self) -> Option<i64> {
        match self.head()? {
            (0, _, n) => i64::try_from(n).ok(),
            (1, _, n) => Some(-1 - i64::try_from(n).ok()?),
            _ => None,
        }
    }

    /// A number where a float is expected: any float width, or an integer small enough
    /// to convert exactly.
    pub(crate) fn number(&mut self) -> Option<f64> {
        const EXACT: u64 = 1 << 53;
        match self.head()? {
            (0, _, n) if n <= EXACT => Some(n as f64),
            (1, _, n) if n < EXACT => Some(-1.0 - n as f64),
            (7, 25, bits) => Some(half_to_f64(bits as u16)),
            (7, 26, bits) => Some(f64::from(f32::from_bits(bits as u32))),
            (7, 27, bits) => Some(f64::from_bits(bits)),
            _ => None,
        }
    }

    pub(crate) fn boolean(&mut self) -> Option<bool> {
        match self.head()? {
            (7, 20, _) => Some(false),
            (7, 21, _) => Some(true),
            _ => None,
        }
    }
}

/// IEEE 754 half precision to double (RFC 8949 appendix D).
fn half_to_f64(half: u16) -> f64 {
    let exp = (half >> 10) & 0x1f;
    let mant = f64::from(half & 0x3ff);
    let value = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (mant + 1024.0) * 2f64.powi(i32::from(e) - 25),
    };
    if half & 0x8000 != 0 {
        -value
    } else {
        value
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = Vec::new();
        f(&mut v);
        v
    }

    #[test]
    fn rfc8949_appendix_a_examples() {
        assert_eq!(enc(|o| uint(o, 0)), [0x00]);
        assert_eq!(enc(|o| uint(o, 23)), [0x17]);
        assert_eq!(enc(|o| uint(o, 24)), [0x18, 0x18]);
        assert_eq!(enc(|o| uint(o, 1000)), [0x19, 0x03, 0xe8]);
        assert_eq!(enc(|o| uint(o, 1_000_000)), [0x1a, 0x00, 0x0f, 0x42, 0x40]);
        assert_eq!(
            enc(|o| uint(o, 1_000_000_000_000)),
            [0x1b, 0x00, 0x00, 0x00, 0xe8, 0xd4, 0xa5, 0x10, 0x00]
        );
        assert_eq!(enc(|o| int(o, -1)), [0x20]);
        assert_eq!(enc(|o| int(o, -1000)), [0x39, 0x03, 0xe7]);
        assert_eq!(enc(|o| float(o, 100000.0)), [0xfa, 0x47, 0xc3, 0x50, 0x00]);
        assert_eq!(
            enc(|o| float(o, 1.1)),
            [0xfb, 0x3f, 0xf1, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a]
        );
        assert_eq!(enc(|o| boolean(o, true)), [0xf5]);
        assert_eq!(enc(|o| text(o, "IETF")), [0x64, 0x49, 0x45, 0x54, 0x46]);
        assert_eq!(enc(|o| map(o, 2)), [0xa2]);
    }
}
