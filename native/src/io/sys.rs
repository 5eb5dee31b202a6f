//! Linux syscalls and structures, declared by hand (no `libc` crate here).
//! Layouts are x86_64/aarch64 Linux (LP64), from the kernel's uapi headers.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub type socklen_t = u32;

extern "C" {
    pub fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    pub fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    pub fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    pub fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> isize;
    pub fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    pub fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    pub fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int;
    pub fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int;
    pub fn sendto(fd: c_int, buf: *const c_void, len: usize, flags: c_int, addr: *const c_void, alen: socklen_t) -> isize;
    pub fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize;
    pub fn bind(fd: c_int, addr: *const c_void, len: socklen_t) -> c_int;
    pub fn recvmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut c_void) -> c_int;
    pub fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int;
    pub fn epoll_create1(flags: c_int) -> c_int;
    pub fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut epoll_event) -> c_int;
    pub fn epoll_wait(epfd: c_int, events: *mut epoll_event, max: c_int, timeout: c_int) -> c_int;
    pub fn eventfd(initval: c_uint, flags: c_int) -> c_int;
    pub fn setns(fd: c_int, nstype: c_int) -> c_int;
    pub fn if_nametoindex(name: *const c_char) -> c_uint;
    pub fn syscall(num: c_long, ...) -> c_long;
    pub fn connect(fd: c_int, addr: *const c_void, len: socklen_t) -> c_int;
    pub fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> isize;
    #[cfg(test)]
    pub fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> isize;
    pub fn poll(fds: *mut pollfd, nfds: c_ulong, timeout: c_int) -> c_int;
    pub fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, offset: i64) -> *mut c_void;
    pub fn munmap(addr: *mut c_void, len: usize) -> c_int;
    #[cfg(test)]
    pub fn memfd_create(name: *const c_char, flags: c_uint) -> c_int;
    pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
}

pub const O_RDWR: c_int = 0o2;
pub const O_RDONLY: c_int = 0;
pub const O_NONBLOCK: c_int = 0o4000;
pub const O_CLOEXEC: c_int = 0o2000000;
pub const F_GETFL: c_int = 3;
pub const F_SETFL: c_int = 4;

pub const AF_UNIX: c_int = 1;
pub const AF_INET: c_int = 2;
pub const AF_INET6: c_int = 10;
pub const AF_NETLINK: c_int = 16;
pub const AF_PACKET: c_int = 17;
pub const SOCK_STREAM: c_int = 1;
pub const SOCK_DGRAM: c_int = 2;
pub const SOCK_RAW: c_int = 3;
pub const SOCK_NONBLOCK: c_int = 0o4000;
pub const SOCK_CLOEXEC: c_int = 0o2000000;

pub const SOL_SOCKET: c_int = 1;
pub const SO_RCVBUF: c_int = 8;
pub const SO_SNDBUF: c_int = 7;
pub const SO_RCVBUFFORCE: c_int = 33;
pub const SO_SNDBUFFORCE: c_int = 32;
pub const SO_ATTACH_FILTER: c_int = 26;
pub const SO_PEERCRED: c_int = 17;
pub const IPPROTO_IP: c_int = 0;
pub const IPPROTO_GRE: c_int = 47;
pub const IP_HDRINCL: c_int = 3;
pub const IP_PKTINFO: c_int = 8;
pub const IPPROTO_IPV6: c_int = 41;
pub const IPV6_HDRINCL: c_int = 36;
pub const IPV6_RECVPKTINFO: c_int = 49;
pub const IPV6_PKTINFO: c_int = 50;
pub const MSG_DONTWAIT: c_int = 0x40;
pub const MSG_CTRUNC: c_int = 0x8;
pub const MSG_NOSIGNAL: c_int = 0x4000;
pub const MSG_CMSG_CLOEXEC: c_int = 0x4000_0000;
/// `cmsg_type` of a control message carrying file descriptors.
pub const SCM_RIGHTS: c_int = 1;

pub const POLLIN: i16 = 0x001;
pub const POLLERR: i16 = 0x008;
pub const POLLHUP: i16 = 0x010;

pub const PROT_READ: c_int = 0x1;
pub const PROT_WRITE: c_int = 0x2;
pub const MAP_SHARED: c_int = 0x01;
pub const MAP_NORESERVE: c_int = 0x4000;
pub const MAP_FAILED: *mut c_void = !0usize as *mut c_void;
#[cfg(test)]
pub const MFD_CLOEXEC: c_uint = 0x1;

pub const EPOLL_CLOEXEC: c_int = 0o2000000;
pub const EPOLL_CTL_ADD: c_int = 1;
pub const EPOLL_CTL_DEL: c_int = 2;
pub const EPOLLIN: u32 = 0x001;
pub const EFD_CLOEXEC: c_int = 0o2000000;
pub const EFD_NONBLOCK: c_int = 0o4000;
pub const CLONE_NEWNET: c_int = 0x4000_0000;

// <linux/if_tun.h>
pub const TUNSETIFF: c_ulong = 0x4004_54ca;
pub const IFF_TAP: i16 = 0x0002;
pub const IFF_NO_PI: i16 = 0x1000;
pub const IFF_VNET_HDR: i16 = 0x4000;
pub const IFF_MULTI_QUEUE: i16 = 0x0100;
pub const TUNSETOFFLOAD: c_ulong = 0x4004_54d0;
pub const TUN_F_CSUM: c_ulong = 0x01;
pub const TUN_F_TSO4: c_ulong = 0x02;
pub const TUN_F_TSO6: c_ulong = 0x04;
pub const TUN_F_TSO_ECN: c_ulong = 0x08;
// <linux/sockios.h>
pub const SIOCGIFFLAGS: c_ulong = 0x8913;
pub const SIOCSIFFLAGS: c_ulong = 0x8914;
pub const SIOCSIFMTU: c_ulong = 0x8922;
pub const SIOCSIFHWADDR: c_ulong = 0x8924;
pub const SIOCGIFINDEX: c_ulong = 0x8933;
pub const IFF_UP: i16 = 0x1;
pub const ARPHRD_ETHER: u16 = 1;
pub const IFNAMSIZ: usize = 16;

/// `struct ifreq`: a name and a 24-byte union.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ifreq {
    pub name: [u8; IFNAMSIZ],
    pub data: [u8; 24],
}

impl ifreq {
    pub fn new(name: &str) -> io::Result<ifreq> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() >= IFNAMSIZ || b.contains(&0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
        }
        let mut r = ifreq { name: [0; IFNAMSIZ], data: [0; 24] };
        r.name[..b.len()].copy_from_slice(b);
        Ok(r)
    }
    /// `ifr_flags` / `ifr_mtu` / `ifr_ifindex` share the union's first bytes.
    pub fn set_i16(&mut self, v: i16) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }
    pub fn get_i16(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }
    pub fn set_i32(&mut self, v: i32) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }
    pub fn get_i32(&self) -> i32 {
        i32::from_ne_bytes(self.data[..4].try_into().unwrap())
    }
    /// The name, as the kernel completed it (a `%d` pattern is replaced).
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
    /// `ifr_hwaddr`: a `struct sockaddr` with family ARPHRD_ETHER.
    pub fn set_hwaddr(&mut self, mac: &[u8; 6]) {
        self.data[..2].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
        self.data[2..8].copy_from_slice(mac);
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sockaddr_in {
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 4],
    pub zero: [u8; 8],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sockaddr_in6 {
    pub family: u16,
    pub port: u16,
    pub flowinfo: u32,
    pub addr: [u8; 16],
    pub scope_id: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sockaddr_un {
    pub family: u16,
    pub path: [u8; 108],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sockaddr_nl {
    pub family: u16,
    pub pad: u16,
    pub pid: u32,
    pub groups: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct iovec {
    pub base: *mut c_void,
    pub len: usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct msghdr {
    pub name: *mut c_void,
    pub namelen: socklen_t,
    pub iov: *mut iovec,
    pub iovlen: usize,
    pub control: *mut c_void,
    pub controllen: usize,
    pub flags: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct mmsghdr {
    pub hdr: msghdr,
    pub len: c_uint,
}

/// One message of one buffer, to `to` (or from anyone), for `sendmmsg`/`recvmmsg`.
pub fn mmsg(iov: &mut iovec, to: Option<&SockAddr>) -> mmsghdr {
    let (name, namelen) = match to {
        Some(a) => {
            let (p, l) = a.as_ptr();
            (p as *mut _, l)
        }
        None => (std::ptr::null_mut(), 0),
    };
    mmsghdr {
        hdr: msghdr { name, namelen, iov: iov as *mut iovec, iovlen: 1, control: std::ptr::null_mut(), controllen: 0, flags: 0 },
        len: 0,
    }
}

/// `struct sockaddr_ll`: a packet socket's link-layer address.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sockaddr_ll {
    pub family: u16,
    /// An EtherType, big-endian.
    pub protocol: u16,
    pub ifindex: i32,
    pub hatype: u16,
    pub pkttype: u8,
    pub halen: u8,
    pub addr: [u8; 8],
}

/// A classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sock_filter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// `struct sock_fprog`.
#[repr(C)]
pub struct sock_fprog {
    pub len: u16,
    pub filter: *const sock_filter,
}

/// `struct cmsghdr`: the header of one control message; its data follows,
/// aligned like the header (`CMSG_DATA`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct cmsghdr {
    pub len: usize,
    pub level: c_int,
    pub ty: c_int,
}

/// `CMSG_ALIGN`: control messages and their data are aligned to `size_t`.
pub const fn cmsg_align(len: usize) -> usize {
    (len + std::mem::size_of::<usize>() - 1) & !(std::mem::size_of::<usize>() - 1)
}

/// `CMSG_SPACE(n)`: room for one control message with `n` bytes of data.
pub const fn cmsg_space(n: usize) -> usize {
    cmsg_align(std::mem::size_of::<cmsghdr>()) + cmsg_align(n)
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct pollfd {
    pub fd: c_int,
    pub events: i16,
    pub revents: i16,
}

/// Packed on x86_64 (the kernel's `EPOLL_PACKED`), natural elsewhere.
#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy)]
pub struct epoll_event {
    pub events: u32,
    pub data: u64,
}

/// `struct ucred`: who is at the other end of a Unix socket (`SO_PEERCRED`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ucred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// The credentials the peer of the connected Unix socket `fd` had when it
/// called connect() (the kernel records them then; they do not change
/// after). `fd` is borrowed: the caller keeps it open during the call.
pub fn peer_credentials(fd: RawFd) -> io::Result<ucred> {
    let mut cred = ucred::default();
    let mut len = std::mem::size_of::<ucred>() as socklen_t;
    // SAFETY: `cred` and `len` are live locals the kernel writes at most
    // `len` bytes into; a bad `fd` only makes the call fail (EBADF, ENOTSOCK).
    cvt(unsafe { getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &mut cred as *mut ucred as *mut c_void, &mut len) })?;
    if len as usize != std::mem::size_of::<ucred>() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("SO_PEERCRED returned {len} bytes")));
    }
    Ok(cred)
}

/// A syscall's `-1` becomes the thread's errno as an `io::Error`.
pub fn cvt(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn cvt_size(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Take ownership of a new descriptor returned by a syscall.
pub fn owned(r: c_int) -> io::Result<OwnedFd> {
    cvt(r).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// An IPv4/IPv6 socket address for `sendto`/`sendmmsg`.
#[derive(Clone, Copy)]
pub enum SockAddr {
    V4(sockaddr_in),
    V6(sockaddr_in6),
}

impl SockAddr {
    pub fn from_ip(ip: std::net::IpAddr) -> SockAddr {
        match ip {
            std::net::IpAddr::V4(a) => {
                SockAddr::V4(sockaddr_in { family: AF_INET as u16, port: 0, addr: a.octets(), zero: [0; 8] })
            }
            std::net::IpAddr::V6(a) => SockAddr::V6(sockaddr_in6 {
                family: AF_INET6 as u16,
                port: 0,
                flowinfo: 0,
                addr: a.octets(),
                scope_id: 0,
            }),
        }
    }

    pub fn as_ptr(&self) -> (*const c_void, socklen_t) {
        match self {
            SockAddr::V4(a) => (a as *const _ as *const c_void, std::mem::size_of::<sockaddr_in>() as socklen_t),
            SockAddr::V6(a) => (a as *const _ as *const c_void, std::mem::size_of::<sockaddr_in6>() as socklen_t),
        }
    }
}

/// An epoll set: the descriptors a worker waits on, each with a token.
pub struct Epoll(OwnedFd);

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers; a new descriptor is returned or -1.
        owned(unsafe { epoll_create1(EPOLL_CLOEXEC) }).map(Epoll)
    }

    /// Wait for readability of `fd`, reported with `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = epoll_event { events: EPOLLIN, data: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        cvt(unsafe { epoll_ctl(self.0.as_raw_fd(), EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
    }

    /// Stop waiting for `fd`; one that is not in the set (or closed) is no error.
    pub fn delete(&self, fd: RawFd) {
        // SAFETY: DEL ignores the event pointer (null is allowed since Linux 2.6.9).
        unsafe { epoll_ctl(self.0.as_raw_fd(), EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// Wait up to `timeout_ms` (0: poll) and return the ready events.
    pub fn wait<'a>(&self, events: &'a mut [epoll_event], timeout_ms: i32) -> io::Result<&'a [epoll_event]> {
        // SAFETY: the kernel writes at most `events.len()` entries into `events`.
        let n = unsafe { epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), events.len() as c_int, timeout_ms) };
        match cvt(n) {
            Ok(n) => Ok(&events[..n as usize]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(&events[..0]),
            Err(e) => Err(e),
        }
    }
}

/// A non-blocking eventfd: one thread's way to wake another's epoll.
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: no pointers; a new descriptor is returned or -1.
        owned(unsafe { eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) }).map(EventFd)
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Make the descriptor readable (a wake-up).
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64; a full counter (EAGAIN) still leaves it readable.
        unsafe { write(self.0.as_raw_fd(), &one as *const u64 as *const c_void, 8) };
    }

    /// Consume the wake-ups so far.
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; empty (EAGAIN) is fine.
        unsafe { read(self.0.as_raw_fd(), &mut v as *mut u64 as *mut c_void, 8) };
    }
}

/// Socket buffers large enough to ride out a burst between two wake-ups.
const SOCKET_BUFFER: c_int = 4 << 20;

/// Give a socket [`SOCKET_BUFFER`] bytes each way: FORCE (needs
/// CAP_NET_ADMIN) overrides rmem_max/wmem_max; without it, as much as they allow.
pub fn set_socket_buffers(fd: &OwnedFd) -> io::Result<()> {
    let set = |name: c_int| {
        // SAFETY: `SOCKET_BUFFER` is a live c_int of the length given.
        cvt(unsafe { setsockopt(fd.as_raw_fd(), SOL_SOCKET, name, &SOCKET_BUFFER as *const c_int as *const c_void, 4) }).map(drop)
    };
    set(SO_RCVBUFFORCE).or_else(|_| set(SO_RCVBUF))?;
    set(SO_SNDBUFFORCE).or_else(|_| set(SO_SNDBUF))
}

/// Room for one control message (IP_PKTINFO, IPV6_PKTINFO: CMSG_SPACE(20) is 40; PACKET_AUXDATA 40).
pub const CONTROL_LEN: usize = 64;

/// A message that takes its control messages into `ctl`.
pub fn with_control(mut m: mmsghdr, ctl: &mut [u64; CONTROL_LEN / 8]) -> mmsghdr {
    m.hdr.control = ctl.as_mut_ptr().cast();
    m.hdr.controllen = CONTROL_LEN;
    m
}

/// The data of the control message (`level`, `ty`) among the first `len`
/// bytes of `ctl` (what the kernel wrote).
pub fn control_data(ctl: &[u64; CONTROL_LEN / 8], len: usize, level: i32, ty: i32) -> Option<&[u8]> {
    // struct cmsghdr { size_t len; int level; int type; } then the data, 8-aligned.
    const CMSG_HDR: usize = 16;
    // SAFETY: a [u64; N] is N * 8 initialised bytes.
    let bytes = unsafe { std::slice::from_raw_parts(ctl.as_ptr() as *const u8, CONTROL_LEN) };
    let control = &bytes[..len.min(CONTROL_LEN)];
    let mut off = 0;
    while off + CMSG_HDR <= control.len() {
        let clen = usize::from_ne_bytes(control[off..off + 8].try_into().ok()?);
        let l = i32::from_ne_bytes(control[off + 8..off + 12].try_into().ok()?);
        let t = i32::from_ne_bytes(control[off + 12..off + 16].try_into().ok()?);
        if clen < CMSG_HDR || off + clen > control.len() {
            return None;
        }
        if l == level && t == ty {
            return Some(&control[off + CMSG_HDR..off + clen]);
        }
        off += (clen + 7) & !7;
    }
    None
}


#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixStream;

    #[test]
    fn peer_credentials_of_a_socket_pair_are_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_credentials(a.as_raw_fd()).unwrap();
        assert_eq!(cred.pid as u32, std::process::id());
        // /proc/self belongs to this process's effective uid and gid.
        let me = std::fs::metadata("/proc/self").unwrap();
        assert_eq!((cred.uid, cred.gid), (me.uid(), me.gid()));
    }

    #[test]
    fn peer_credentials_of_a_non_socket_fail() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(peer_credentials(f.as_raw_fd()).is_err());
        assert!(peer_credentials(-1).is_err());
    }
}

/// One iovec per buffer, over its free space after the headroom.
pub fn spare_iovecs(bufs: &mut [crate::dp::PacketBuf]) -> Vec<iovec> {
    bufs.iter_mut()
        .map(|b| {
            b.reset();
            let spare = b.spare_mut();
            iovec { base: spare.as_mut_ptr().cast(), len: spare.len() }
        })
        .collect()
}

