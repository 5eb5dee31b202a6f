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
const PACKET_STATISTICS: i32 = 6;

/// Set a `SOL_PACKET` option.
pub fn set(fd: &OwnedFd, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live i32 of the length given.
    cvt(unsafe { setsockopt(fd.as_raw_fd(), SOL_PACKET, name, &value as *const i32 as *const _, 4) }).map(drop)
}

/// The frames the kernel dropped for want of room in the socket's queue
/// since the last call (reading the statistics resets them).
pub fn take_drops(fd: &OwnedFd) -> io::Result<u32> {
    // struct tpacket_stats: packets, drops.
    let mut stats = [0u32; 2];
    let mut len = std::mem::size_of_val(&stats) as socklen_t;
    // SAFETY: `stats` is live and writable for the `len` bytes given.
    cvt(unsafe { getsockopt(fd.as_raw_fd(), SOL_PACKET, PACKET_STATISTICS, stats.as_mut_ptr().cast(), &mut len) })?;
    Ok(stats[1])
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::raw::{c_int, c_void};

    extern "C" {
        fn unshare(flags: c_int) -> c_int;
    }

    /// Frames that find a socket's queue full are the kernel's drops, which
    /// `take_drops` reports once.
    #[test]
    fn a_full_queue_drops_are_counted_and_taken_once() {
        std::thread::spawn(|| {
            // SAFETY: no pointers; moves only this thread into a new network namespace.
            cvt(unsafe { unshare(CLONE_NEWNET) }).expect("unshare (make test runs as root)");
            const LO: u32 = 1;
            super::super::netlink::set_link_quiet_up(LO).expect("lo up");
            let rx = open(LO, |_| Ok(())).unwrap();
            let tiny: c_int = 0; // the kernel's minimum: a frame or two
            // SAFETY: `tiny` is a live c_int of the length given.
            cvt(unsafe { setsockopt(rx.as_raw_fd(), SOL_SOCKET, SO_RCVBUF, &tiny as *const c_int as *const c_void, 4) }).unwrap();
            // SAFETY: no pointers; a new descriptor or -1.
            let tx = owned(unsafe { socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0) }).unwrap();
            let ethertype: u16 = 0x88b5; // IEEE 802 local experimental
            let to = sockaddr_ll { family: AF_PACKET as u16, protocol: ethertype.to_be(), ifindex: LO as i32, hatype: 0, pkttype: 0, halen: 6, addr: [0; 8] };
            let mut frame = [0u8; 600];
            frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
            for _ in 0..100 {
                // SAFETY: `frame` and `to` are live for the call, of the lengths given.
                cvt_size(unsafe { sendto(tx.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0, &to as *const _ as *const _, std::mem::size_of::<sockaddr_ll>() as u32) }).unwrap();
            }
            let dropped = take_drops(&rx).unwrap();
            assert!(dropped > 50, "{dropped} of 100 frames dropped");
            assert_eq!(take_drops(&rx).unwrap(), 0);
        })
        .join()
        .unwrap();
    }
}
