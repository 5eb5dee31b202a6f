//! rtnetlink, just enough to place provider addresses and provider routes
//! (what New-NetVirtualizationProviderAddress / -ProviderRoute do on Windows).
//! One request, one acknowledgement; errors keep the kernel's errno.

use super::sys::*;
use super::tap::annotate;
use std::ffi::CString;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const NLMSG_HDRLEN: usize = 16;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const IFF_UP: u32 = 0x1;
const IFF_NOARP: u32 = 0x80;

/// Whether an add created the entry or found it already there (then the
/// daemon must not remove it when it stops: someone else placed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Created,
    Existed,
}

pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    match unsafe { if_nametoindex(c.as_ptr()) } {
        0 => Err(annotate(io::Error::last_os_error(), &format!("interface {name}"))),
        i => Ok(i),
    }
}

pub fn add_address(ifname: &str, addr: IpAddr, prefix_len: u8) -> io::Result<Added> {
    let msg = address_msg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifindex(ifname)?, addr, prefix_len);
    created(request(&msg), &format!("adding {addr}/{prefix_len} to {ifname}"))
}

pub fn del_address(ifname: &str, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
    let msg = address_msg(RTM_DELADDR, 0, ifindex(ifname)?, addr, prefix_len);
    request(&msg).map_err(|e| annotate(e, &format!("removing {addr}/{prefix_len} from {ifname}")))
}

pub fn add_route(dst: IpAddr, prefix_len: u8, via: Option<IpAddr>, ifname: &str, metric: u32) -> io::Result<Added> {
    let msg = route_msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, dst, prefix_len, via, ifindex(ifname)?, metric);
    created(request(&msg), &format!("adding route {dst}/{prefix_len} on {ifname}"))
}

pub fn del_route(dst: IpAddr, prefix_len: u8, via: Option<IpAddr>, ifname: &str, metric: u32) -> io::Result<()> {
    let msg = route_msg(RTM_DELROUTE, 0, dst, prefix_len, via, ifindex(ifname)?, metric);
    request(&msg).map_err(|e| annotate(e, &format!("removing route {dst}/{prefix_len} on {ifname}")))
}

/// Bring a device of ours up without giving it anything to say: no ARP, no
/// IPv6 link-local address (so no Neighbor Discovery or MLD either).
pub fn set_link_quiet_up(ifindex: u32) -> io::Result<()> {
    // struct ifinfomsg { family u8, pad u8, type u16, index i32, flags u32, change u32 }
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&ifindex.to_ne_bytes());
    body.extend_from_slice(&(IFF_UP | IFF_NOARP).to_ne_bytes());
    body.extend_from_slice(&(IFF_UP | IFF_NOARP).to_ne_bytes());
    let mut m = Msg::new(RTM_NEWLINK, 0, &body);
    let gen_mode = nested(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE]);
    m.attr(IFLA_AF_SPEC | NLA_F_NESTED, &nested(AF_INET6 as u16 | NLA_F_NESTED, &gen_mode));
    request(&m.finish())
}

/// Set a link's MTU.
pub fn set_mtu(ifindex: u32, mtu: u32) -> io::Result<()> {
    const IFLA_MTU: u16 = 4;
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&ifindex.to_ne_bytes());
    body.extend_from_slice(&[0; 8]);
    let mut m = Msg::new(RTM_NEWLINK, 0, &body);
    m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    request(&m.finish())
}

/// One attribute (header and padded data) as bytes, to nest in another.
fn nested(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut m = Msg(Vec::new());
    m.attr(ty, data);
    m.0
}

fn created(r: io::Result<()>, what: &str) -> io::Result<Added> {
    match r {
        Ok(()) => Ok(Added::Created),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Added::Existed),
        Err(e) => Err(annotate(e, what)),
    }
}

fn family(a: &IpAddr) -> u8 {
    if a.is_ipv4() {
        AF_INET as u8
    } else {
        AF_INET6 as u8
    }
}

fn ip_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// A netlink message under construction: header, fixed part, attributes.
struct Msg(Vec<u8>);

impl Msg {
    fn new(ty: u16, flags: u16, body: &[u8]) -> Msg {
        let mut v = vec![0u8; NLMSG_HDRLEN];
        v[4..6].copy_from_slice(&ty.to_ne_bytes());
        v[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        v[8..12].copy_from_slice(&1u32.to_ne_bytes());
        v.extend_from_slice(body);
        Msg(v)
    }
    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
    }
    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn address_msg(ty: u16, flags: u16, ifindex: u32, addr: IpAddr, prefix_len: u8) -> Vec<u8> {
    // struct ifaddrmsg { family, prefixlen, flags, scope, index }
    let mut body = vec![family(&addr), prefix_len, 0, RT_SCOPE_UNIVERSE];
    body.extend_from_slice(&ifindex.to_ne_bytes());
    let mut m = Msg::new(ty, flags, &body);
    m.attr(IFA_LOCAL, &ip_bytes(&addr));
    m.attr(IFA_ADDRESS, &ip_bytes(&addr));
    if addr.is_ipv6() {
        // Usable at once: duplicate address detection would hold it tentative.
        m.attr(IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
    }
    m.finish()
}

fn route_msg(ty: u16, flags: u16, dst: IpAddr, prefix_len: u8, via: Option<IpAddr>, oif: u32, metric: u32) -> Vec<u8> {
    // struct rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type, flags u32 }
    let scope = if via.is_some() { RT_SCOPE_UNIVERSE } else { RT_SCOPE_LINK };
    let mut body = vec![family(&dst), prefix_len, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST];
    body.extend_from_slice(&0u32.to_ne_bytes());
    let mut m = Msg::new(ty, flags, &body);
    m.attr(RTA_DST, &ip_bytes(&dst));
    if let Some(gw) = via {
        m.attr(RTA_GATEWAY, &ip_bytes(&gw));
    }
    m.attr(RTA_OIF, &oif.to_ne_bytes());
    m.attr(RTA_PRIORITY, &metric.to_ne_bytes());
    m.finish()
}

/// Send one request on a fresh socket and wait for its acknowledgement.
fn request(msg: &[u8]) -> io::Result<()> {
    let reply = query(msg)?;
    if reply.len() < NLMSG_HDRLEN + 4 || u16::from_ne_bytes([reply[4], reply[5]]) != NLMSG_ERROR {
        return Err(io::Error::other("unexpected netlink reply"));
    }
    Ok(()) // an acknowledgement with error 0 (query returns the others as errors)
}

/// A link as the kernel announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    pub ifindex: u32,
    pub name: String,
    /// Administratively up (IFF_UP).
    pub admin_up: bool,
    /// With a carrier (IFF_LOWER_UP): for a tap, a process (the VM) holds it.
    pub carrier: bool,
    /// The link was deleted.
    pub removed: bool,
}

/// Follows what changes in the kernel's links, addresses and routes of this
/// network namespace (rtnetlink multicast groups): someone removing a
/// provider address or route, an underlay link going down and up (which
/// takes its routes and IPv6 addresses with it), a VM's interface
/// appearing. Each change advances `changes`; link changes are also queued.
/// Messages lost to a full socket buffer also advance it: the reader then
/// re-checks everything, which is what it does on any change anyway.
pub struct Monitor {
    fd: OwnedFd,
    buf: Vec<u8>,
}

const RTM_DELLINK: u16 = 17;
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFF_LOWER_UP: u32 = 0x1_0000;
const IFINFOMSG_LEN: usize = 16;

impl Monitor {
    pub fn open() -> io::Result<Monitor> {
        const NETLINK_ROUTE: i32 = 0;
        // SAFETY: no pointers; a new descriptor or -1.
        let fd = owned(unsafe { socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE) })?;
        let groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE;
        let me = sockaddr_nl { family: AF_NETLINK as u16, pad: 0, pid: 0, groups };
        // SAFETY: `me` is a valid sockaddr_nl of the length given.
        cvt(unsafe { bind(fd.as_raw_fd(), &me as *const _ as *const _, std::mem::size_of::<sockaddr_nl>() as u32) })
            .map_err(|e| annotate(e, "following rtnetlink"))?;
        Ok(Monitor { fd, buf: vec![0; 64 * 1024] })
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Read what is waiting: whether anything changed, and the link events.
    pub fn read(&mut self, links: &mut Vec<LinkEvent>) -> bool {
        let mut changed = false;
        loop {
            // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
            let n = unsafe { recv(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), MSG_DONTWAIT) };
            match cvt_size(n) {
                Ok(n) => {
                    changed = true;
                    parse_links(&self.buf[..n], links);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return changed,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ENOBUFS: messages were lost; everything is re-checked anyway.
                Err(_) => return true,
            }
        }
    }
}

/// The RTM_NEWLINK / RTM_DELLINK messages of one datagram.
fn parse_links(mut data: &[u8], out: &mut Vec<LinkEvent>) {
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            return;
        }
        let ty = u16::from_ne_bytes([data[4], data[5]]);
        let body = &data[NLMSG_HDRLEN..len];
        if (ty == RTM_NEWLINK || ty == RTM_DELLINK) && body.len() >= IFINFOMSG_LEN {
            let ifindex = u32::from_ne_bytes(body[4..8].try_into().unwrap());
            let flags = u32::from_ne_bytes(body[8..12].try_into().unwrap());
            let name = attrs(&body[IFINFOMSG_LEN..])
                .find(|(t, _)| *t == IFLA_IFNAME)
                .map(|(_, v)| String::from_utf8_lossy(v.split(|&b| b == 0).next().unwrap_or(&[])).into_owned());
            if let Some(name) = name {
                let removed = ty == RTM_DELLINK;
                out.push(LinkEvent { ifindex, name, admin_up: flags & IFF_UP != 0, carrier: flags & IFF_LOWER_UP != 0, removed });
            }
        }
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
}

/// The (type, value) attributes of a netlink message's tail.
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & !NLA_F_NESTED;
        if len < 4 || len > data.len() {
            return None;
        }
        let value = &data[4..len];
        data = &data[len.next_multiple_of(4).min(data.len())..];
        Some((ty, value))
    })
}

#[cfg(test)]
mod monitor_test {
    use super::*;

    #[test]
    fn link_messages_parse_and_garbage_does_not_panic() {
        let mut msg = vec![0u8; NLMSG_HDRLEN];
        msg[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[4..8].copy_from_slice(&7u32.to_ne_bytes());
        body[8..12].copy_from_slice(&(IFF_UP | IFF_LOWER_UP).to_ne_bytes());
        msg.extend_from_slice(&body);
        msg.extend_from_slice(&[9, 0, IFLA_IFNAME as u8, 0, b'v', b'm', b'1', 0, 0, 0, 0, 0]);
        let len = msg.len() as u32;
        msg[..4].copy_from_slice(&len.to_ne_bytes());
        let mut out = Vec::new();
        parse_links(&msg, &mut out);
        assert_eq!(out, [LinkEvent { ifindex: 7, name: "vm1".into(), admin_up: true, carrier: true, removed: false }]);
        for cut in 0..msg.len() {
            parse_links(&msg[..cut], &mut Vec::new());
        }
        let mut lying = msg.clone();
        lying[NLMSG_HDRLEN + IFINFOMSG_LEN] = 0xff; // attribute length beyond the message
        parse_links(&lying, &mut Vec::new());
    }
}

/// Send one request on a fresh socket and return the kernel's first reply
/// message (an error reply is the error).
fn query(msg: &[u8]) -> io::Result<Vec<u8>> {
    const NETLINK_ROUTE: i32 = 0;
    // SAFETY: no pointers; a new descriptor or -1.
    let fd = owned(unsafe { socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE) })?;
    let kernel = sockaddr_nl { family: AF_NETLINK as u16, pad: 0, pid: 0, groups: 0 };
    // SAFETY: `msg` and `kernel` are live for the call, of the lengths given.
    cvt_size(unsafe { sendto(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0, &kernel as *const _ as *const _, std::mem::size_of::<sockaddr_nl>() as u32) })?;
    let mut reply = vec![0u8; 16 * 1024];
    // SAFETY: the kernel writes at most `reply.len()` bytes into it.
    let n = cvt_size(unsafe { recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) })?;
    reply.truncate(n);
    if n >= NLMSG_HDRLEN + 4 && u16::from_ne_bytes([reply[4], reply[5]]) == NLMSG_ERROR {
        let e = i32::from_ne_bytes(reply[NLMSG_HDRLEN..NLMSG_HDRLEN + 4].try_into().unwrap());
        if e != 0 {
            return Err(io::Error::from_raw_os_error(-e));
        }
    }
    Ok(reply)
}
