//! The UDP socket: bound with a large receive buffer (bursts from a radar must not
//! overflow the kernel queue while NATS is slow), and the kernel's own drop count for it.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use socket2::{Domain, Protocol, Socket, Type};

/// Bind `addr` with a receive buffer of (at least an attempt at) `recv_buffer` bytes.
/// Returns the socket and the buffer size the kernel granted.
pub fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<(UdpSocket, usize)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if !force_recv_buffer(&socket, recv_buffer) {
        // Unprivileged: capped by net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(recv_buffer);
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    let granted = socket.recv_buffer_size().unwrap_or(0);
    Ok((socket.into(), granted))
}

/// SO_RCVBUFFORCE ignores rmem_max when we have CAP_NET_ADMIN (e.g. a systemd unit with
/// that capability); harmlessly fails otherwise.
fn force_recv_buffer(socket: &Socket, size: usize) -> bool {
    let value: libc::c_int = size.min(i32::MAX as usize) as libc::c_int;
    #[allow(unsafe_code)]
    // SAFETY: setsockopt on a valid, owned socket fd with a pointer to a live c_int and
    // its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Datagrams the kernel dropped for this socket (receive queue full), from
/// `/proc/net/udp{,6}`; `None` when it cannot be read (not Linux, no procfs).
pub fn kernel_drops(socket: &impl AsRawFd) -> Option<u64> {
    let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
        .ok()?
        .ino();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            if fields.len() >= 13 && fields[9].parse::<u64>().ok() == Some(inode) {
                return fields[12].parse().ok();
            }
        }
    }
    None
}

/// Datagrams taken from the socket per system call.
pub const BATCH: usize = 64;
/// Bytes kept of each datagram: a valid one has 37; a longer one is cut here (the
/// kernel still reports its full length, so it is rejected with its true size).
const SLOT: usize = 64;

/// Receives up to [`BATCH`] datagrams per `recvmmsg(2)`: under load one system call
/// instead of one per datagram. Buffers are allocated once.
pub struct BatchReceiver {
    bufs: Box<[[u8; SLOT]; BATCH]>,
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    /// (kept bytes, full length) per datagram of the last batch.
    lens: [(usize, usize); BATCH],
    count: usize,
}

impl std::fmt::Debug for BatchReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchReceiver")
            .field("count", &self.count)
            .finish()
    }
}

impl Default for BatchReceiver {
    fn default() -> Self {
        BatchReceiver {
            bufs: Box::new([[0; SLOT]; BATCH]),
            addrs: Box::new(
                #[allow(unsafe_code)]
                // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value
                // (family AF_UNSPEC).
                [unsafe { std::mem::zeroed::<libc::sockaddr_storage>() }; BATCH],
            ),
            lens: [(0, 0); BATCH],
            count: 0,
        }
    }
}

impl BatchReceiver {
    /// Take what the socket holds, up to [`BATCH`], without blocking; the number taken.
    /// `WouldBlock` when there is nothing.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> std::io::Result<usize> {
        self.count = 0;
        let mut iovecs: [libc::iovec; BATCH] = std::array::from_fn(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        });
        for (iov, buf) in iovecs.iter_mut().zip(self.bufs.iter_mut()) {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = SLOT;
        }
        let addr_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let mut headers: [libc::mmsghdr; BATCH] = std::array::from_fn(|_| libc::mmsghdr {
            msg_hdr: libc::msghdr {
                msg_name: std::ptr::null_mut(),
                msg_namelen: 0,
                msg_iov: std::ptr::null_mut(),
                msg_iovlen: 1,
                msg_control: std::ptr::null_mut(),
                msg_controllen: 0,
                msg_flags: 0,
            },
            msg_len: 0,
        });
        for ((h, iov), addr) in headers
            .iter_mut()
            .zip(iovecs.iter_mut())
            .zip(self.addrs.iter_mut())
        {
            h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = addr_len;
            h.msg_hdr.msg_iov = iov;
        }
        #[allow(unsafe_code)]
        // SAFETY: every header points at live buffers owned by `self` or this frame
        // (`iovecs`, `self.bufs`, `self.addrs`) with their true sizes, and none of them
        // moves or is read until the call returns; the fd is a valid open socket.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0).min(BATCH);
        for (len, h) in self.lens.iter_mut().zip(headers.iter()).take(n) {
            let full = h.msg_len as usize;
            *len = (full.min(SLOT), full);
        }
        self.count = n;
        Ok(n)
    }

    /// Datagram `i` of the last batch: its bytes (at most 64 kept), full length, sender.
    pub fn get(&self, i: usize) -> Option<(&[u8], usize, Option<SocketAddr>)> {
        if i >= self.count {
            return None;
        }
        let (kept, full) = self.lens[i];
        Some((&self.bufs[i][..kept], full, sockaddr(&self.addrs[i])))
    }
}

fn sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            #[allow(unsafe_code)]
            // SAFETY: the kernel wrote a sockaddr_in here (family AF_INET), and
            // sockaddr_storage is large enough and aligned for it.
            let a: &libc::sockaddr_in =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            #[allow(unsafe_code)]
            // SAFETY: as above, for sockaddr_in6 (family AF_INET6).
            let a: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holds_every_datagram_with_its_true_length_and_sender() {
        let (socket, _) = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let target = socket.local_addr().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = sender.local_addr().unwrap();
        let mut rx = BatchReceiver::default();
        assert_eq!(
            rx.recv(&socket).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        for len in [37usize, 0, 36, 1_000] {
            sender.send_to(&vec![7u8; len], target).unwrap();
        }
        for i in 0..100u8 {
            sender.send_to(&[i; 37], target).unwrap();
        }
        let mut got = Vec::new();
        while let Ok(n) = rx.recv(&socket) {
            for i in 0..n {
                let (bytes, full, peer) = rx.get(i).unwrap();
                assert_eq!(peer, Some(from));
                got.push((bytes.to_vec(), full));
            }
        }
        assert_eq!(got.len(), 104);
        assert_eq!(got[0], (vec![7u8; 37], 37));
        assert_eq!(got[1], (vec![], 0));
        assert_eq!(got[2].1, 36);
        assert_eq!(
            (got[3].0.len(), got[3].1),
            (SLOT, 1_000),
            "cut, true length kept"
        );
        assert!(got[4..]
            .iter()
            .enumerate()
            .all(|(i, (b, n))| *n == 37 && b[0] == i as u8));
        assert!(rx.get(BATCH).is_none());
    }
}
