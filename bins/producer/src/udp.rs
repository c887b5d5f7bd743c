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
