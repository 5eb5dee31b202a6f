//! The underlay: raw IPv4 and IPv6 sockets for protocol 47, batched both
//! ways, and the way out for large TCP segments that the kernel cuts
//! (`io::gso`).
//!
//! The kernel routes and resolves neighbours for us; with `IP_HDRINCL` /
//! `IPV6_HDRINCL` we write the outer header ourselves (DF, DSCP, TTL 64, the
//! chosen source PA).
//! No GRE module is needed: a raw socket sees every protocol-47 packet for a
//! local address, and its presence stops the kernel answering "protocol
//! unreachable".

use super::gso::GsoPort;
use super::sys::*;
use super::tap::annotate;
use crate::dp::{Outgoing, PacketBuf};
use std::sync::Arc;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr;

pub struct Underlay {
    v4: OwnedFd,
    /// None when the kernel has no IPv6.
    v6: Option<OwnedFd>,
    /// Shared by the workers; none when the kernel cannot take large packets (see `io::gso`).
    gso: Option<Arc<GsoPort>>,
}


fn raw_gre_socket(family: i32, hdrincl: (i32, i32)) -> io::Result<OwnedFd> {
    let fd = owned(unsafe { socket(family, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_GRE) })
        .map_err(|e| annotate(e, "opening a raw GRE socket (needs CAP_NET_RAW)"))?;
    set_opt(&fd, hdrincl.0, hdrincl.1, 1)?;
    set_socket_buffers(&fd)?;
    Ok(fd)
}

/// Classic BPF over a GRE packet, with `load_flow_id` leaving the key's low
/// byte (the FlowID) in A: accept it iff FlowID % `workers` == `worker`.
fn steer(load_flow_id: &[sock_filter], worker: u32, workers: u32) -> Vec<sock_filter> {
    const ALU_MOD_K: u16 = 0x94;
    const JMP_JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let mut prog = load_flow_id.to_vec();
    prog.extend([ins(ALU_MOD_K, 0, 0, workers), ins(JMP_JEQ_K, 0, 1, worker), ins(RET_K, 0, 0, u32::MAX), ins(RET_K, 0, 0, 0)]);
    prog
}

fn attach(fd: &OwnedFd, prog: &[sock_filter]) -> io::Result<()> {
    let fprog = sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() };
    cvt(unsafe {
        setsockopt(fd.as_raw_fd(), SOL_SOCKET, SO_ATTACH_FILTER, &fprog as *const _ as *const _, std::mem::size_of::<sock_fprog>() as u32)
    })
    .map(|_| ())
    .map_err(|e| annotate(e, "attaching the flow-steering filter"))
}

impl Underlay {
    /// The sockets of worker `worker` of `workers`. Every raw socket sees
    /// every GRE packet, so with several workers each socket keeps only its
    /// share, by the FlowID in the GRE key: one flow, one worker, in order.
    pub fn open(worker: u32, workers: u32, gso: Option<Arc<GsoPort>>) -> io::Result<Underlay> {
        let v4 = raw_gre_socket(AF_INET, (IPPROTO_IP, IP_HDRINCL))?;
        // The interface each packet came in on (a PA on a VLAN takes only its VLAN's).
        set_opt(&v4, IPPROTO_IP, IP_PKTINFO, 1)?;
        let v6 = match raw_gre_socket(AF_INET6, (IPPROTO_IPV6, IPV6_HDRINCL)) {
            Ok(fd) => {
                // The IPv6 socket reads payloads only: ask for the destination too (and the interface).
                set_opt(&fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)?;
                Some(fd)
            }
            Err(e) if e.kind() == io::ErrorKind::Unsupported || e.raw_os_error() == Some(97) => None, // EAFNOSUPPORT
            Err(e) => return Err(e),
        };
        if workers > 1 {
            const LDX_B_MSH: u16 = 0xb1; // X = 4 * (pkt[k] & 0xf): the IPv4 header length
            const LD_B_IND: u16 = 0x50; // A = pkt[X + k]
            const LD_B_ABS: u16 = 0x30; // A = pkt[k]
            let ins = |code, k| sock_filter { code, jt: 0, jf: 0, k };
            // The FlowID is byte 7 of the GRE header (after the outer IPv4 header; IPv6 sockets read from GRE on).
            attach(&v4, &steer(&[ins(LDX_B_MSH, 0), ins(LD_B_IND, 7)], worker, workers))?;
            if let Some(v6) = &v6 {
                attach(v6, &steer(&[ins(LD_B_ABS, 7)], worker, workers))?;
            }
        }
        Ok(Underlay { v4, v6, gso })
    }

    /// Whether large TCP segments can leave whole for the kernel to cut (see `io::gso`).
    pub fn kernel_segmentation(&self) -> bool {
        self.gso.is_some()
    }

    pub fn fd_v4(&self) -> RawFd {
        self.v4.as_raw_fd()
    }

    pub fn fd_v6(&self) -> Option<RawFd> {
        self.v6.as_ref().map(|f| f.as_raw_fd())
    }

    /// Receive up to `bufs.len()` IPv4 packets (outer header onwards) without
    /// blocking, with the interface each came in on; returns how many
    /// buffers were filled.
    pub fn recv_v4(&self, bufs: &mut [PacketBuf], arrived: &mut [u32]) -> io::Result<usize> {
        let n = bufs.len().min(arrived.len());
        let mut iovs = spare_iovecs(&mut bufs[..n]);
        let mut control = vec![[0u64; CONTROL_LEN / 8]; n];
        let mut msgs: Vec<mmsghdr> = iovs.iter_mut().zip(control.iter_mut()).map(|(iov, ctl)| with_control(mmsg(iov, None), ctl)).collect();
        let got = recv(self.v4.as_raw_fd(), &mut msgs)?;
        for i in 0..got {
            bufs[i].set_len(msgs[i].len as usize);
            // struct in_pktinfo { int ifindex; struct in_addr spec_dst, addr; }
            arrived[i] = control_data(&control[i], msgs[i].hdr.controllen, IPPROTO_IP, IP_PKTINFO)
                .and_then(|d| d.get(..4))
                .map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap()));
        }
        Ok(got)
    }

    /// Receive up to `bufs.len()` IPv6 GRE packets (GRE header onwards: the
    /// socket strips the IPv6 header) with their outer (source, destination)
    /// and the interface each came in on.
    pub fn recv_v6(&self, bufs: &mut [PacketBuf], addrs: &mut [(IpAddr, IpAddr)], arrived: &mut [u32]) -> io::Result<usize> {
        let Some(fd) = &self.v6 else { return Ok(0) };
        let n = bufs.len().min(addrs.len()).min(arrived.len());
        let mut iovs = spare_iovecs(&mut bufs[..n]);
        let mut names = vec![sockaddr_in6 { family: 0, port: 0, flowinfo: 0, addr: [0; 16], scope_id: 0 }; n];
        let mut control = vec![[0u64; CONTROL_LEN / 8]; n];
        let mut msgs: Vec<mmsghdr> = iovs
            .iter_mut()
            .zip(names.iter_mut().zip(control.iter_mut()))
            .map(|(iov, (name, ctl))| {
                let mut m = with_control(mmsg(iov, None), ctl);
                m.hdr.name = name as *mut sockaddr_in6 as *mut _;
                m.hdr.namelen = std::mem::size_of::<sockaddr_in6>() as socklen_t;
                m
            })
            .collect();
        let got = recv(fd.as_raw_fd(), &mut msgs)?;
        for i in 0..got {
            bufs[i].set_len(msgs[i].len as usize);
            // struct in6_pktinfo { struct in6_addr addr; unsigned int ifindex; }
            let info = control_data(&control[i], msgs[i].hdr.controllen, IPPROTO_IPV6, IPV6_PKTINFO).filter(|d| d.len() >= 20);
            let dst = info.map_or(Ipv6Addr::UNSPECIFIED, |d| Ipv6Addr::from(<[u8; 16]>::try_from(&d[..16]).unwrap()));
            arrived[i] = info.map_or(0, |d| u32::from_ne_bytes(d[16..20].try_into().unwrap()));
            addrs[i] = (IpAddr::V6(Ipv6Addr::from(names[i].addr)), IpAddr::V6(dst));
        }
        Ok(got)
    }

    /// Send `pkts` in order: runs of one family in one `sendmmsg` each on
    /// the raw socket of that family, large segments through the GSO port.
    /// Calls `done(i, result)` once for every packet, so the caller counts
    /// each one sent or failed.
    pub fn send_batch(&self, pkts: &[Outgoing], mut done: impl FnMut(usize, io::Result<()>)) {
        let mut i = 0;
        while i < pkts.len() {
            if let Some(ifindex) = pkts[i].kernel_segments {
                let p = &pkts[i];
                let r = match &self.gso {
                    Some(g) => g.send(p.buf, crate::dp::outer_header_len(p.pa), ifindex),
                    None => Err(io::Error::from(io::ErrorKind::Unsupported)),
                };
                done(i, r);
                i += 1;
                continue;
            }
            let v4 = pkts[i].pa.is_ipv4();
            let end = (i..pkts.len()).find(|&j| pkts[j].kernel_segments.is_some() || pkts[j].pa.is_ipv4() != v4).unwrap_or(pkts.len());
            self.send_run(v4, &pkts[i..end], |k, r| done(i + k, r));
            i = end;
        }
    }

    /// Send packets of one family, as few `sendmmsg` calls as the socket allows.
    fn send_run(&self, v4: bool, pkts: &[Outgoing], mut done: impl FnMut(usize, io::Result<()>)) {
        let fd = if v4 { Some(&self.v4) } else { self.v6.as_ref() };
        let Some(fd) = fd else {
            for i in 0..pkts.len() {
                done(i, Err(io::Error::from(io::ErrorKind::Unsupported)));
            }
            return;
        };
        let addrs: Vec<SockAddr> = pkts.iter().map(|p| SockAddr::from_ip(p.pa)).collect();
        let mut iovs: Vec<iovec> = pkts.iter().map(|p| iovec { base: p.buf.frame().as_ptr() as *mut _, len: p.buf.len() }).collect();
        let mut msgs: Vec<mmsghdr> = iovs.iter_mut().zip(&addrs).map(|(iov, a)| mmsg(iov, Some(a))).collect();
        let mut k = 0;
        while k < msgs.len() {
            let r = unsafe { sendmmsg(fd.as_raw_fd(), msgs[k..].as_mut_ptr(), (msgs.len() - k) as u32, MSG_DONTWAIT) };
            match cvt(r) {
                Ok(sent) => {
                    for j in k..k + sent as usize {
                        done(j, Ok(()));
                    }
                    k += sent as usize;
                }
                // The first of the remaining packets failed: report it and go on.
                Err(e) => {
                    done(k, Err(e));
                    k += 1;
                }
            }
        }
    }
}

/// recvmmsg without blocking; an empty socket is 0 packets.
fn recv(fd: RawFd, msgs: &mut [mmsghdr]) -> io::Result<usize> {
    let got = unsafe { recvmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, MSG_DONTWAIT, ptr::null_mut()) };
    match cvt(got) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

fn set_opt(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    cvt(unsafe {
        setsockopt(fd.as_raw_fd(), level, name, &value as *const i32 as *const _, std::mem::size_of::<i32>() as u32)
    })
    .map(|_| ())
}
