//! Packet sockets (`AF_PACKET`) on an interface, with virtio-net headers:
//! how nvgred reads and writes the kernel side of an adopted VM interface
//! (`attach`) and of a provider address's VLAN (`vlan`). Every frame of the
//! interface, large segments whole (`PACKET_VNET_HDR`); writes skip the
//! qdisc layer; what nvgred writes is not read back.

use super::sys::*;
use super::tap::annotate;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

pub const SOL_PACKET: i32 = 263;
const ETH_P_ALL: u16 = 0x0003;
pub const PACKET_AUXDATA: i32 = 8;
pub const PACKET_FANOUT: i32 = 18;
const PACKET_VNET_HDR: i32 = 15;
const PACKET_QDISC_BYPASS: i32 = 20;
pub const PACKET_FANOUT_DATA: i32 = 22;
const PACKET_IGNORE_OUTGOING: i32 = 23;

/// Set a `SOL_PACKET` option.
pub fn set(fd: &OwnedFd, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live i32 of the length given.
    cvt(unsafe { setsockopt(fd.as_raw_fd(), SOL_PACKET, name, &value as *const i32 as *const _, 4) }).map(drop)
}

/// A packet socket for every frame of `ifindex`; `prepare` sets what must
/// be there before frames arrive (a filter, auxiliary data).
pub fn open(ifindex: u32, prepare: impl FnOnce(&OwnedFd) -> io::Result<()>) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; a new descriptor or -1.
    let fd = owned(unsafe { socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, ETH_P_ALL.to_be() as i32) })
        .map_err(|e| annotate(e, "opening a packet socket (needs CAP_NET_RAW)"))?;
    set(&fd, PACKET_VNET_HDR, 1)?;
    set(&fd, PACKET_QDISC_BYPASS, 1)?;
    set(&fd, PACKET_IGNORE_OUTGOING, 1).map_err(|e| annotate(e, "PACKET_IGNORE_OUTGOING (Linux 4.20)"))?;
    // Room for a burst of 64 KB segments between two wake-ups (FORCE needs CAP_NET_ADMIN).
    set_socket_buffers(&fd)?;
    prepare(&fd)?;
    let addr = sockaddr_ll { family: AF_PACKET as u16, protocol: ETH_P_ALL.to_be(), ifindex: ifindex as i32, hatype: 0, pkttype: 0, halen: 0, addr: [0; 8] };
    // SAFETY: `addr` is a valid sockaddr_ll of the length given.
    cvt(unsafe { bind(fd.as_raw_fd(), &addr as *const _ as *const _, std::mem::size_of::<sockaddr_ll>() as u32) })?;
    Ok(fd)
}
