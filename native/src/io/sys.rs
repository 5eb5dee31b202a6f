//! Linux syscalls and structures, declared by hand (no `libc` crate here).
//! Layouts are x86_64/aarch64 Linux (LP64), from the kernel's uapi headers.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

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
    pub fn recvmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut c_void) -> c_int;
    pub fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int;
    pub fn epoll_create1(flags: c_int) -> c_int;
    pub fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut epoll_event) -> c_int;
    pub fn epoll_wait(epfd: c_int, events: *mut epoll_event, max: c_int, timeout: c_int) -> c_int;
    pub fn eventfd(initval: c_uint, flags: c_int) -> c_int;
    pub fn setns(fd: c_int, nstype: c_int) -> c_int;
    pub fn if_nametoindex(name: *const c_char) -> c_uint;
    pub fn sched_yield() -> c_int;
    pub fn syscall(num: c_long, ...) -> c_long;
}

pub const O_RDWR: c_int = 0o2;
pub const O_RDONLY: c_int = 0;
pub const O_NONBLOCK: c_int = 0o4000;
pub const O_CLOEXEC: c_int = 0o2000000;

pub const AF_UNIX: c_int = 1;
pub const AF_INET: c_int = 2;
pub const AF_INET6: c_int = 10;
pub const AF_NETLINK: c_int = 16;
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
pub const IPPROTO_IPV6: c_int = 41;
pub const IPV6_HDRINCL: c_int = 36;
pub const IPV6_RECVPKTINFO: c_int = 49;
pub const IPV6_PKTINFO: c_int = 50;
pub const MSG_DONTWAIT: c_int = 0x40;

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
