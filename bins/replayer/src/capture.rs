//! Capture files: pcap (either byte order, µs or ns timestamps) and pcapng (sections,
//! interfaces with their own link type and timestamp resolution, enhanced and simple
//! packet blocks), read as a stream so a capture of any size fits in memory; and the
//! Ethernet (VLAN-tagged too) / Linux cooked / raw-IP → IPv4 → UDP walk to the payload.
//!
//! Everything here reads untrusted bytes: lengths are checked before every slice, and a
//! damaged file is an error with its offset, never a panic.

use std::io::Read;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("reading the capture: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a pcap or pcapng file (magic {0:02x?})")]
    UnknownFormat([u8; 4]),
    #[error("damaged capture at byte {offset}: {reason}")]
    Damaged { offset: u64, reason: String },
}

/// The two container formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pcap,
    Pcapng,
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: i128,
    /// LINKTYPE_* of the interface it was captured on.
    pub link_type: u32,
    pub data: Vec<u8>,
}

/// Frames above this are treated as damage, not allocated.
const MAX_FRAME: u32 = 256 * 1024;
const MAX_BLOCK: u32 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
struct Interface {
    link_type: u32,
    /// Timestamp units per second.
    units_per_s: u64,
    offset_s: i64,
}

#[derive(Debug)]
enum State {
    Pcap {
        big_endian: bool,
        nanos: bool,
        link_type: u32,
    },
    Pcapng {
        big_endian: bool,
        interfaces: Vec<Interface>,
        last_ts_ns: i128,
    },
}

/// Streams frames out of a pcap or pcapng file.
#[derive(Debug)]
pub struct CaptureReader<R: Read> {
    reader: R,
    offset: u64,
    state: State,
    pub format: Format,
}

fn u16_at(b: &[u8], at: usize, big: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(s)
    } else {
        u16::from_le_bytes(s)
    })
}

fn u32_at(b: &[u8], at: usize, big: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(s)
    } else {
        u32::from_le_bytes(s)
    })
}

impl<R: Read> CaptureReader<R> {
    pub fn new(mut reader: R) -> Result<Self, CaptureError> {
        let mut magic = [0u8; 4];
        reader.read_exact(&mut magic)?;
        let mut this = CaptureReader {
            reader,
            offset: 4,
            state: State::Pcap {
                big_endian: false,
                nanos: false,
                link_type: 0,
            },
            format: Format::Pcap,
        };
        match magic {
            [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d] => {
                let big_endian = magic[0] == 0xa1;
                let nanos = magic == [0x4d, 0x3c, 0xb2, 0xa1] || magic == [0xa1, 0xb2, 0x3c, 0x4d];
                let mut rest = [0u8; 20];
                this.read_exact(&mut rest)?;
                let link_type = u32_at(&rest, 16, big_endian).unwrap_or(0) & 0x0fff_ffff;
                this.state = State::Pcap {
                    big_endian,
                    nanos,
                    link_type,
                };
            }
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                this.format = Format::Pcapng;
                this.state = State::Pcapng {
                    big_endian: false,
                    interfaces: Vec::new(),
                    last_ts_ns: 0,
                };
                this.section_header()?;
            }
            other => return Err(CaptureError::UnknownFormat(other)),
        }
        Ok(this)
    }

    fn damaged(&self, reason: impl Into<String>) -> CaptureError {
        CaptureError::Damaged {
            offset: self.offset,
            reason: reason.into(),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), CaptureError> {
        self.reader.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.damaged("file ends inside a record")
            } else {
                CaptureError::Io(e)
            }
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Read up to `buf.len()` bytes; 0 at a clean end of file.
    fn read_start(&mut self, buf: &mut [u8]) -> Result<usize, CaptureError> {
        let mut got = 0;
        while got < buf.len() {
            match self.reader.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.offset += got as u64;
        if got != 0 && got != buf.len() {
            return Err(self.damaged("file ends inside a record header"));
        }
        Ok(got)
    }

    /// After the block type 0x0A0D0D0A: length, byte-order magic, rest of the SHB. The
    /// length's bytes come first and can only be read once the magic has said the order.
    fn section_header(&mut self) -> Result<(), CaptureError> {
        let mut head = [0u8; 8];
        self.read_exact(&mut head)?;
        let big_endian = match head[4..8] {
            [0x1a, 0x2b, 0x3c, 0x4d] => true,
            [0x4d, 0x3c, 0x2b, 0x1a] => false,
            _ => return Err(self.damaged("section header without a byte-order magic")),
        };
        let len = u32_at(&head, 0, big_endian).unwrap_or(0);
        if !(28..=MAX_BLOCK).contains(&len) || len % 4 != 0 {
            return Err(self.damaged(format!("section header length {len}")));
        }
        let mut rest = vec![0u8; len as usize - 12];
        self.read_exact(&mut rest)?;
        self.state = State::Pcapng {
            big_endian,
            interfaces: Vec::new(),
            last_ts_ns: 0,
        };
        Ok(())
    }

    /// The next frame; `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        match self.state {
            State::Pcap {
                big_endian,
                nanos,
                link_type,
            } => self.next_pcap(big_endian, nanos, link_type),
            State::Pcapng { .. } => self.next_pcapng(),
        }
    }

    fn next_pcap(
        &mut self,
        big: bool,
        nanos: bool,
        link_type: u32,
    ) -> Result<Option<Frame>, CaptureError> {
        let mut head = [0u8; 16];
        if self.read_start(&mut head)? == 0 {
            return Ok(None);
        }
        let secs = u32_at(&head, 0, big).unwrap_or(0);
        let frac = u32_at(&head, 4, big).unwrap_or(0);
        let incl = u32_at(&head, 8, big).unwrap_or(0);
        if incl > MAX_FRAME {
            return Err(self.damaged(format!("record length {incl}")));
        }
        let mut data = vec![0u8; incl as usize];
        self.read_exact(&mut data)?;
        let frac_ns = if nanos {
            i128::from(frac)
        } else {
            i128::from(frac) * 1000
        };
        Ok(Some(Frame {
            ts_ns: i128::from(secs) * 1_000_000_000 + frac_ns,
            link_type,
            data,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Frame>, CaptureError> {
        loop {
            // A block starts with its type; a section header's length is only readable
            // after its byte-order magic, so that block is read on its own.
            let mut block_type = [0u8; 4];
            if self.read_start(&mut block_type)? == 0 {
                return Ok(None);
            }
            if block_type == [0x0a, 0x0d, 0x0d, 0x0a] {
                // A new section: its own byte order and interfaces.
                self.section_header()?;
                continue;
            }
            let mut length = [0u8; 4];
            self.read_exact(&mut length)?;
            let head = [block_type, length].concat();
            let State::Pcapng {
                big_endian: big, ..
            } = self.state
            else {
                unreachable!("pcapng reader in pcap state")
            };
            let block_type = u32_at(&head, 0, big).unwrap_or(0);
            let len = u32_at(&head, 4, big).unwrap_or(0);
            if !(12..=MAX_BLOCK).contains(&len) || len % 4 != 0 {
                return Err(self.damaged(format!("block length {len}")));
            }
            let mut body = vec![0u8; len as usize - 8];
            self.read_exact(&mut body)?;
            // body = block body + trailing length (4 bytes)
            let body = &body[..body.len() - 4];
            match block_type {
                1 => self.interface(body, big)?,
                6 => {
                    if let Some(f) = self.enhanced_packet(body, big)? {
                        return Ok(Some(f));
                    }
                }
                3 => {
                    if let Some(f) = self.simple_packet(body, big)? {
                        return Ok(Some(f));
                    }
                }
                _ => {} // statistics, name resolution, custom…: not packets
            }
        }
    }

    fn interface(&mut self, body: &[u8], big: bool) -> Result<(), CaptureError> {
        let link_type =
            u32::from(u16_at(body, 0, big).ok_or_else(|| self.damaged("short interface block"))?);
        let mut iface = Interface {
            link_type,
            units_per_s: 1_000_000,
            offset_s: 0,
        };
        let mut at = 8;
        while let (Some(code), Some(olen)) = (u16_at(body, at, big), u16_at(body, at + 2, big)) {
            let olen = usize::from(olen);
            let value = body.get(at + 4..at + 4 + olen).unwrap_or_default();
            match (code, value) {
                (0, _) => break,
                (9, [v]) => {
                    let exp = u32::from(v & 0x7f);
                    iface.units_per_s = if v & 0x80 == 0 {
                        10u64.checked_pow(exp)
                    } else {
                        2u64.checked_pow(exp)
                    }
                    .filter(|u| *u > 0)
                    .ok_or_else(|| self.damaged(format!("timestamp resolution {v:#x}")))?;
                }
                (14, v) if v.len() == 8 => {
                    let hi = u32_at(v, 0, big).unwrap_or(0);
                    let lo = u32_at(v, 4, big).unwrap_or(0);
                    iface.offset_s = ((u64::from(hi) << 32) | u64::from(lo)) as i64;
                }
                _ => {}
            }
            at += 4 + olen.div_ceil(4) * 4;
        }
        if let State::Pcapng { interfaces, .. } = &mut self.state {
            interfaces.push(iface);
        }
        Ok(())
    }

    fn iface(&self, id: u32) -> Result<Interface, CaptureError> {
        match &self.state {
            State::Pcapng { interfaces, .. } => interfaces
                .get(id as usize)
                .copied()
                .ok_or_else(|| self.damaged(format!("packet on undeclared interface {id}"))),
            State::Pcap { .. } => Err(self.damaged("pcapng block in a pcap file")),
        }
    }

    fn enhanced_packet(&mut self, body: &[u8], big: bool) -> Result<Option<Frame>, CaptureError> {
        let field = |at| u32_at(body, at, big);
        let (Some(id), Some(hi), Some(lo), Some(caplen)) =
            (field(0), field(4), field(8), field(12))
        else {
            return Err(self.damaged("short enhanced packet block"));
        };
        let iface = self.iface(id)?;
        let data = body
            .get(20..20 + caplen as usize)
            .ok_or_else(|| self.damaged(format!("captured length {caplen} exceeds its block")))?;
        let units = (u64::from(hi) << 32) | u64::from(lo);
        let ts_ns = i128::from(units) * 1_000_000_000 / i128::from(iface.units_per_s)
            + i128::from(iface.offset_s) * 1_000_000_000;
        if let State::Pcapng { last_ts_ns, .. } = &mut self.state {
            *last_ts_ns = ts_ns;
        }
        Ok(Some(Frame {
            ts_ns,
            link_type: iface.link_type,
            data: data.to_vec(),
        }))
    }

    /// A simple packet block has no timestamp: it inherits the previous packet's.
    fn simple_packet(&mut self, body: &[u8], big: bool) -> Result<Option<Frame>, CaptureError> {
        let orig = u32_at(body, 0, big).ok_or_else(|| self.damaged("short simple packet block"))?;
        let iface = self.iface(0)?;
        let data = body.get(4..).unwrap_or_default();
        let data = &data[..data.len().min(orig as usize)];
        let ts_ns = match self.state {
            State::Pcapng { last_ts_ns, .. } => last_ts_ns,
            State::Pcap { .. } => 0,
        };
        Ok(Some(Frame {
            ts_ns,
            link_type: iface.link_type,
            data: data.to_vec(),
        }))
    }
}

/// Why a frame carried no TSPI datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    UnsupportedLink,
    NotIpv4,
    NotUdp,
    Fragment,
    Truncated,
    NotTspiLength,
    PortFiltered,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::UnsupportedLink => "unsupported_link_type",
            Skip::NotIpv4 => "not_ipv4",
            Skip::NotUdp => "not_udp",
            Skip::Fragment => "ip_fragment",
            Skip::Truncated => "truncated",
            Skip::NotTspiLength => "udp_payload_not_37_bytes",
            Skip::PortFiltered => "other_udp_port",
        }
    }
}

/// A UDP datagram found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp<'a> {
    pub src: ([u8; 4], u16),
    pub dst: ([u8; 4], u16),
    pub payload: &'a [u8],
}

const ETHERTYPE_IPV4: u16 = 0x0800;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    u16_at(b, at, true)
}

/// Walk link layer → IPv4 → UDP.
pub fn udp_payload(link_type: u32, frame: &[u8]) -> Result<Udp<'_>, Skip> {
    let ip = match link_type {
        // Ethernet, with any number of 802.1Q / 802.1ad tags.
        1 => {
            let mut at = 12;
            loop {
                let ethertype = be16(frame, at).ok_or(Skip::Truncated)?;
                match ethertype {
                    0x8100 | 0x88a8 | 0x9100 => at += 4,
                    ETHERTYPE_IPV4 => break frame.get(at + 2..).ok_or(Skip::Truncated)?,
                    _ => return Err(Skip::NotIpv4),
                }
            }
        }
        // Raw IP.
        12 | 14 | 101 | 228 => frame,
        // Linux cooked capture v1 (protocol at 14) and v2 (protocol at 0).
        113 => match be16(frame, 14).ok_or(Skip::Truncated)? {
            ETHERTYPE_IPV4 => frame.get(16..).ok_or(Skip::Truncated)?,
            _ => return Err(Skip::NotIpv4),
        },
        276 => match be16(frame, 0).ok_or(Skip::Truncated)? {
            ETHERTYPE_IPV4 => frame.get(20..).ok_or(Skip::Truncated)?,
            _ => return Err(Skip::NotIpv4),
        },
        // BSD loopback: 4-byte address family in host order; 2 = AF_INET.
        0 => match frame.get(0..4) {
            Some([2, 0, 0, 0] | [0, 0, 0, 2]) => &frame[4..],
            Some(_) => return Err(Skip::NotIpv4),
            None => return Err(Skip::Truncated),
        },
        _ => return Err(Skip::UnsupportedLink),
    };
    let first = *ip.first().ok_or(Skip::Truncated)?;
    if first >> 4 != 4 {
        return Err(Skip::NotIpv4);
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || ip.len() < ihl {
        return Err(Skip::Truncated);
    }
    let total = usize::from(be16(ip, 2).ok_or(Skip::Truncated)?);
    let flags_frag = be16(ip, 6).ok_or(Skip::Truncated)?;
    if flags_frag & 0x2000 != 0 || flags_frag & 0x1fff != 0 {
        return Err(Skip::Fragment);
    }
    if ip[9] != 17 {
        return Err(Skip::NotUdp);
    }
    let src_ip: [u8; 4] = ip
        .get(12..16)
        .and_then(|s| s.try_into().ok())
        .ok_or(Skip::Truncated)?;
    let dst_ip: [u8; 4] = ip
        .get(16..20)
        .and_then(|s| s.try_into().ok())
        .ok_or(Skip::Truncated)?;
    // Ethernet pads short frames: the IP total length, not the frame, bounds the packet.
    let ip = ip.get(..total.max(ihl)).ok_or(Skip::Truncated)?;
    let udp = &ip[ihl..];
    let ulen = usize::from(be16(udp, 4).ok_or(Skip::Truncated)?);
    if ulen < 8 {
        return Err(Skip::Truncated);
    }
    let payload = udp.get(8..ulen).ok_or(Skip::Truncated)?;
    Ok(Udp {
        src: (src_ip, be16(udp, 0).ok_or(Skip::Truncated)?),
        dst: (dst_ip, be16(udp, 2).ok_or(Skip::Truncated)?),
        payload,
    })
}

/// Writers for tests, benches and tools that need a capture (little-endian, µs pcap;
/// pcapng with one Ethernet interface at ns resolution).
pub mod write {
    /// A pcap file of Ethernet frames.
    pub fn pcap(frames: &[(i128, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&65_535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        for (ts_ns, data) in frames {
            let us = ts_ns / 1000;
            out.extend_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    fn block(out: &mut Vec<u8>, block_type: u32, body: &[u8]) {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        out.extend_from_slice(&block_type.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.extend(std::iter::repeat_n(0u8, padded - body.len()));
        out.extend_from_slice(&len.to_le_bytes());
    }

    /// A pcapng file: one section, one Ethernet interface with ns timestamps, an unrelated
    /// name-resolution block, enhanced packet blocks.
    pub fn pcapng(frames: &[(i128, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        block(&mut out, 0x0a0d_0d0a, &shb);
        let mut idb = Vec::new();
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        idb.extend_from_slice(&9u16.to_le_bytes()); // if_tsresol
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&[9, 0, 0, 0]); // 10^-9, padded
        idb.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
        block(&mut out, 1, &idb);
        block(&mut out, 4, &[0, 0, 0, 0]); // name resolution: end of records
        for (ts_ns, data) in frames {
            let ts = *ts_ns as u64;
            let mut epb = Vec::new();
            epb.extend_from_slice(&0u32.to_le_bytes());
            epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(ts as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(data);
            let padded = epb.len().div_ceil(4) * 4;
            epb.resize(padded, 0);
            block(&mut out, 6, &epb);
        }
        out
    }

    /// An Ethernet/IPv4/UDP frame (checksums zero: "not computed").
    pub fn udp_frame(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        f.extend_from_slice(&src_port.to_be_bytes());
        f.extend_from_slice(&dst_port.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<(i128, Vec<u8>)> {
        let tspi = [7u8; 37];
        let mut tcp = write::udp_frame(1, 2, &[1, 2, 3]);
        tcp[23] = 6; // protocol TCP
        let mut arp = write::udp_frame(1, 2, &[]);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut frag = write::udp_frame(1, 30000, &tspi);
        frag[20] = 0x20; // more fragments
        let mut vlan = write::udp_frame(5, 30000, &tspi);
        vlan.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        let mut padded = write::udp_frame(9, 30000, &tspi);
        padded.extend_from_slice(&[0; 6]); // Ethernet trailer padding
        vec![
            (
                1_759_057_200_000_000_000,
                write::udp_frame(4000, 30000, &tspi),
            ),
            (1_759_057_200_001_000_000, tcp),
            (1_759_057_200_002_000_000, arp),
            (
                1_759_057_200_003_000_000,
                write::udp_frame(4000, 30000, &[1; 36]),
            ),
            (1_759_057_200_004_000_000, frag),
            (1_759_057_200_005_000_000, vlan),
            (1_759_057_200_006_000_000, padded),
            (
                1_759_057_200_007_000_000,
                write::udp_frame(4000, 30000, &tspi)[..30].to_vec(),
            ),
        ]
    }

    type Verdicts = Vec<(i128, Result<usize, Skip>)>;

    fn outcomes(bytes: &[u8]) -> (Format, Verdicts) {
        let mut r = CaptureReader::new(bytes).unwrap();
        let mut out = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            out.push((
                f.ts_ns,
                udp_payload(f.link_type, &f.data).map(|u| u.payload.len()),
            ));
        }
        (r.format, out)
    }

    #[test]
    fn pcap_and_pcapng_yield_the_same_frames_and_verdicts() {
        let input = frames();
        let expected: Vec<Result<usize, Skip>> = vec![
            Ok(37),
            Err(Skip::NotUdp),
            Err(Skip::NotIpv4),
            Ok(36),
            Err(Skip::Fragment),
            Ok(37),
            Ok(37),
            Err(Skip::Truncated),
        ];
        let (format, a) = outcomes(&write::pcap(&input));
        assert_eq!(format, Format::Pcap);
        let (format, b) = outcomes(&write::pcapng(&input));
        assert_eq!(format, Format::Pcapng);
        assert_eq!(a.iter().map(|x| x.1).collect::<Vec<_>>(), expected);
        assert_eq!(a, b);
        assert_eq!(a[3].0, input[3].0);
    }

    #[test]
    fn a_second_section_starts_over_with_its_own_interfaces() {
        // Concatenated pcapng files are one valid file of two sections (mergecap -a).
        let input = frames();
        let mut two = write::pcapng(&input[..3]);
        two.extend(write::pcapng(&input[3..]));
        assert_eq!(outcomes(&two), outcomes(&write::pcapng(&input)));
        let mut damaged = write::pcapng(&input[..3]);
        damaged.extend([0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 1, 2, 3, 4]);
        let mut r = CaptureReader::new(&damaged[..]).unwrap();
        let mut error = None;
        for _ in 0..10 {
            match r.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        let error = error.unwrap_or_default();
        assert!(error.contains("byte-order magic"), "{error}");
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        assert!(matches!(
            CaptureReader::new(&b"GIF89a"[..]),
            Err(CaptureError::UnknownFormat(_))
        ));
        let good = write::pcapng(&frames());
        for cut in [5, 20, 40, 70, 100, good.len() - 3] {
            let mut r = match CaptureReader::new(&good[..cut]) {
                Ok(r) => r,
                Err(_) => continue,
            };
            let mut errored = false;
            loop {
                match r.next_frame() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        errored = true;
                        break;
                    }
                }
            }
            assert!(errored, "cut at {cut} not reported");
        }
        // Arbitrary bytes after a valid header never panic.
        let mut state = 0x1234_5678u32;
        for _ in 0..300 {
            let mut bytes = write::pcap(&[]);
            for _ in 0..200 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                bytes.push(state as u8);
            }
            let mut r = CaptureReader::new(&bytes[..]).unwrap();
            while let Ok(Some(f)) = r.next_frame() {
                let _ = udp_payload(f.link_type, &f.data);
            }
        }
    }

    #[test]
    fn link_layers_other_than_ethernet() {
        let eth = write::udp_frame(1, 2, &[5; 37]);
        let ip = &eth[14..];
        assert_eq!(udp_payload(101, ip).unwrap().payload.len(), 37);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(ip);
        assert_eq!(udp_payload(113, &sll).unwrap().dst.1, 2);
        assert_eq!(udp_payload(147, ip), Err(Skip::UnsupportedLink));
    }
}
