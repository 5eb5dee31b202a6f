//! The underlay: a raw IPv4 socket for protocol 47, batched both ways.
//!
//! The kernel routes and resolves neighbours for us; with `IP_HDRINCL` we
//! write the outer header ourselves (DF, DSCP, TTL 64, the chosen source PA).
//! No GRE module is needed: a raw socket sees every protocol-47 packet for a
//! local address, and its presence stops the kernel answering "protocol
//! unreachable".

use super::sys::*;
use super::tap::annotate;
use crate::dp::PacketBuf;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr;

pub struct Underlay {
    v4: OwnedFd,
}

/// Socket buffers large enough to ride out a burst between two wake-ups.
const SOCKET_BUFFER: i32 = 4 << 20;

impl Underlay {
    pub fn open() -> io::Result<Underlay> {
        let v4 = owned(unsafe { socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_GRE) })
            .map_err(|e| annotate(e, "opening the raw GRE socket (needs CAP_NET_RAW)"))?;
        let one: i32 = 1;
        set_opt(&v4, IPPROTO_IP, IP_HDRINCL, one)?;
        // FORCE needs CAP_NET_ADMIN and overrides rmem_max; fall back quietly.
        if set_opt(&v4, SOL_SOCKET, SO_RCVBUFFORCE, SOCKET_BUFFER).is_err() {
            set_opt(&v4, SOL_SOCKET, SO_RCVBUF, SOCKET_BUFFER)?;
        }
        if set_opt(&v4, SOL_SOCKET, SO_SNDBUFFORCE, SOCKET_BUFFER).is_err() {
            set_opt(&v4, SOL_SOCKET, SO_SNDBUF, SOCKET_BUFFER)?;
        }
        Ok(Underlay { v4 })
    }

    pub fn fd(&self) -> RawFd {
        self.v4.as_raw_fd()
    }

    /// Receive up to `bufs.len()` packets (outer IP header onwards) without
    /// blocking; returns how many buffers were filled.
    pub fn recv_batch(&self, bufs: &mut [PacketBuf]) -> io::Result<usize> {
        let n = bufs.len();
        let mut iovs: Vec<iovec> = Vec::with_capacity(n);
        for b in bufs.iter_mut() {
            b.reset();
            let spare = b.spare_mut();
            iovs.push(iovec { base: spare.as_mut_ptr().cast(), len: spare.len() });
        }
        let mut msgs: Vec<mmsghdr> = iovs.iter_mut().map(|iov| mmsg(iov, None)).collect();
        let got = unsafe { recvmmsg(self.fd(), msgs.as_mut_ptr(), n as u32, MSG_DONTWAIT, ptr::null_mut()) };
        match cvt(got) {
            Ok(got) => {
                for (b, m) in bufs.iter_mut().zip(&msgs).take(got as usize) {
                    b.set_len(m.len as usize);
                }
                Ok(got as usize)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Send each `(buffer, destination PA)`; calls `done(i, result)` for every
    /// packet in order, so the caller counts each one sent or failed.
    pub fn send_batch(&self, pkts: &[(&PacketBuf, IpAddr)], mut done: impl FnMut(usize, io::Result<()>)) {
        let addrs: Vec<SockAddr> = pkts.iter().map(|(_, pa)| SockAddr::from_ip(*pa)).collect();
        let mut iovs: Vec<iovec> = pkts
            .iter()
            .map(|(b, _)| iovec { base: b.frame().as_ptr() as *mut _, len: b.len() })
            .collect();
        let mut msgs: Vec<mmsghdr> = iovs.iter_mut().zip(&addrs).map(|(iov, a)| mmsg(iov, Some(a))).collect();
        let mut i = 0;
        while i < msgs.len() {
            let r = unsafe { sendmmsg(self.fd(), msgs[i..].as_mut_ptr(), (msgs.len() - i) as u32, MSG_DONTWAIT) };
            match cvt(r) {
                Ok(sent) => {
                    for k in i..i + sent as usize {
                        done(k, Ok(()));
                    }
                    i += sent as usize;
                }
                // The first of the remaining packets failed: report it and go on.
                Err(e) => {
                    done(i, Err(e));
                    i += 1;
                }
            }
        }
    }
}

fn mmsg(iov: &mut iovec, to: Option<&SockAddr>) -> mmsghdr {
    let (name, namelen) = match to {
        Some(a) => {
            let (p, l) = a.as_ptr();
            (p as *mut _, l)
        }
        None => (ptr::null_mut(), 0),
    };
    mmsghdr {
        hdr: msghdr {
            name,
            namelen,
            iov: iov as *mut iovec,
            iovlen: 1,
            control: ptr::null_mut(),
            controllen: 0,
            flags: 0,
        },
        len: 0,
    }
}

fn set_opt(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    cvt(unsafe {
        setsockopt(fd.as_raw_fd(), level, name, &value as *const i32 as *const _, std::mem::size_of::<i32>() as u32)
    })
    .map(|_| ())
}
