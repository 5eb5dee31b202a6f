//! Provider addresses on a VLAN (`provider_addresses[].vlan_id`). Such a PA
//! lives on an interface of its own, `<interface>.<vlan>`, as it would on a
//! kernel 802.1Q interface: the kernel answers ARP/ND for it there, routes
//! and resolves next hops through it, and the underlay sockets, the GSO
//! port and everything else work through it unchanged. The interface is a
//! TAP that nvgred makes and serves itself, because kernels without 802.1Q
//! support exist (these machines': `CONFIG_VLAN_8021Q` unset): what the
//! kernel sends on it leaves the parent interface tagged, and what arrives
//! on the parent tagged with the VLAN goes up through it untagged.
//!
//! One thread moves the frames of every such interface, in batches:
//! - from the TAP (virtio-net header, so large segments stay whole) to a
//!   packet socket on the parent, the 802.1Q tag inserted after the MACs;
//! - from the packet socket, which a classic BPF filter gives only the
//!   VLAN's frames (the kernel hands the tag over as metadata), to the TAP.
//!
//! Frames of the VLAN that would go to the parent's own stack are dropped
//! there (no 802.1Q interface takes them); NVGRE for a PA on a VLAN that
//! arrives untagged reaches the underlay sockets on the parent, and the core
//! drops it as `wrong_vlan` (see `Snapshot::arrived_on_its_vlan`).

use super::packet;
use super::port::vnet_frame;
use super::sys::*;
use super::tap::{annotate, configure, open_tap, write_vnet_frame};
use crate::dp::offload::VNET_HDR_LEN;
use crate::dp::{FxMap, PacketBuf};
use crate::wire::MacAddr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Frames per read.
const BATCH: usize = 64;
/// A frame with its virtio-net header and the tag inserted.
const MAX_FRAME: usize = 65535 + 256;
const TAG_LEN: usize = 4;
const MACS: usize = 12;
const TOKEN_STOP: u64 = u64::MAX;

/// One VLAN interface: its TAP and the packet socket on its parent.
struct Shim {
    name: String,
    vid: u16,
    ifindex: u32,
    tap: OwnedFd,
    sock: OwnedFd,
    /// Set when a read or write fails for good (the TAP deleted under us): made again at the next add.
    failed: AtomicBool,
}

/// Every VLAN interface of the dataplane, and the thread that serves them.
pub struct VlanShims {
    shims: Arc<Mutex<FxMap<u64, Arc<Shim>>>>,
    epoll: Arc<Epoll>,
    stop: Arc<EventFd>,
    next: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl VlanShims {
    pub fn start() -> io::Result<VlanShims> {
        let epoll = Arc::new(Epoll::new()?);
        let stop = Arc::new(EventFd::new()?);
        epoll.add(stop.fd(), TOKEN_STOP)?;
        let shims: Arc<Mutex<FxMap<u64, Arc<Shim>>>> = Arc::default();
        let (e, s) = (epoll.clone(), shims.clone());
        let thread = std::thread::Builder::new().name("nvgre-vlan".into()).spawn(move || serve(&e, &s))?;
        Ok(VlanShims { shims, epoll, stop, next: AtomicU64::new(0), thread: Some(thread) })
    }

    /// The VLAN interface `name` (VLAN `vid` of `parent`): made now, or the
    /// one there already (made again if it failed). Returns its ifindex.
    pub fn add(&self, parent: &str, name: &str, vid: u16) -> io::Result<u32> {
        let mut shims = self.shims.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((&id, s)) = shims.iter().find(|(_, s)| s.name == name) {
            if s.vid != vid {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{name} is VLAN {} already", s.vid)));
            }
            if !s.failed.load(Ordering::Acquire) {
                return Ok(s.ifindex);
            }
            self.forget(&mut shims, id);
        }
        let shim = Arc::new(make(parent, name, vid)?);
        let id = self.next.fetch_add(2, Ordering::Relaxed);
        self.epoll.add(shim.tap.as_raw_fd(), id)?;
        self.epoll.add(shim.sock.as_raw_fd(), id + 1)?;
        let ifindex = shim.ifindex;
        shims.insert(id, shim);
        Ok(ifindex)
    }

    /// Remove the VLAN interface `name` (its TAP disappears with its descriptor).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let mut shims = self.shims.lock().unwrap_or_else(|p| p.into_inner());
        let id = shims.iter().find(|(_, s)| s.name == name).map(|(&id, _)| id);
        let id = id.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no VLAN interface {name}")))?;
        self.forget(&mut shims, id);
        Ok(())
    }

    fn forget(&self, shims: &mut FxMap<u64, Arc<Shim>>, id: u64) {
        if let Some(s) = shims.remove(&id) {
            self.epoll.delete(s.tap.as_raw_fd());
            self.epoll.delete(s.sock.as_raw_fd());
        }
    }
}

impl Drop for VlanShims {
    fn drop(&mut self) {
        self.stop.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Make the TAP `name` with the parent's MAC and MTU, up, and the packet
/// socket that takes the VLAN's frames on the parent.
fn make(parent: &str, name: &str, vid: u16) -> io::Result<Shim> {
    let parent_index = super::netlink::ifindex(parent)?;
    let read = |attr: &str| std::fs::read_to_string(format!("/sys/class/net/{parent}/{attr}"));
    let mac: MacAddr = read("address")?.trim().parse().map_err(|_| io::Error::other(format!("the MAC of {parent}")))?;
    let mtu: u32 = read("mtu")?.trim().parse().map_err(|_| io::Error::other(format!("the MTU of {parent}")))?;
    let tap = open_tap(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)?;
    let ifindex = configure(name, mac, Some(mtu))?;
    let sock = vlan_socket(parent_index, vid).map_err(|e| annotate(e, &format!("VLAN {vid} of {parent}")))?;
    Ok(Shim { name: name.to_string(), vid, ifindex, tap, sock, failed: AtomicBool::new(false) })
}

const TP_STATUS_VLAN_VALID: u32 = 1 << 4;

/// A packet socket on `parent` for the frames of VLAN `vid` (a classic BPF
/// filter on the tag the kernel took off), with virtio-net headers.
fn vlan_socket(parent: u32, vid: u16) -> io::Result<OwnedFd> {
    packet::open(parent, |fd| {
        packet::set(fd, packet::PACKET_AUXDATA, 1)?;
        // Ancillary loads (SKF_AD_OFF + n): the tag the kernel took off the frame.
        const SKF_AD_VLAN_TAG: u32 = 0xffff_f000 + 44;
        const SKF_AD_VLAN_TAG_PRESENT: u32 = 0xffff_f000 + 48;
        let ins = |code: u16, jt: u8, jf: u8, k: u32| sock_filter { code, jt, jf, k };
        let prog = [
            ins(0x20, 0, 0, SKF_AD_VLAN_TAG_PRESENT), // ld [present]
            ins(0x15, 0, 3, 1),                       // jeq #1, next, drop
            ins(0x20, 0, 0, SKF_AD_VLAN_TAG),         // ld [tci]
            ins(0x54, 0, 0, 0x0fff),                  // and #vid mask
            ins(0x15, 1, 0, vid as u32),              // jeq #vid, accept, drop
            ins(0x06, 0, 0, 0),                       // drop: ret #0
            ins(0x06, 0, 0, u32::MAX),                // accept: ret #-1
        ];
        let fprog = sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() };
        // SAFETY: `fprog` points at `prog`, both live for the call.
        cvt(unsafe { setsockopt(fd.as_raw_fd(), SOL_SOCKET, SO_ATTACH_FILTER, &fprog as *const _ as *const _, std::mem::size_of::<sock_fprog>() as u32) })
            .map(drop)
    })
}

/// The thread: wait, move what is waiting, until told to stop.
fn serve(epoll: &Epoll, shims: &Mutex<FxMap<u64, Arc<Shim>>>) {
    let mut events = [epoll_event { events: 0, data: 0 }; 16];
    let mut bufs: Vec<PacketBuf> = (0..BATCH).map(|_| PacketBuf::new(MAX_FRAME)).collect();
    loop {
        let Ok(ready) = epoll.wait(&mut events, 1000) else { return };
        for ev in ready {
            let token = ev.data;
            if token == TOKEN_STOP {
                return;
            }
            let Some(shim) = shims.lock().unwrap_or_else(|p| p.into_inner()).get(&(token & !1)).cloned() else { continue };
            let moved = if token & 1 == 0 { to_wire(&shim, &mut bufs) } else { up(&shim, &mut bufs) };
            if moved.is_err() {
                // Deleted under us: stop waiting on it (no spinning); an add makes it again.
                shim.failed.store(true, Ordering::Release);
                epoll.delete(shim.tap.as_raw_fd());
                epoll.delete(shim.sock.as_raw_fd());
            }
        }
    }
}

/// What the kernel sent on the VLAN interface: tagged, out of the parent.
fn to_wire(shim: &Shim, bufs: &mut [PacketBuf]) -> io::Result<usize> {
    let mut n = 0;
    while n < bufs.len() {
        let b = &mut bufs[n];
        b.reset();
        // Read behind room for the tag, then move the header and MACs up into it.
        let spare = &mut b.spare_mut()[TAG_LEN..];
        // SAFETY: the kernel writes at most `spare.len()` bytes into `spare`.
        match cvt_size(unsafe { read(shim.tap.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) }) {
            Ok(len) if len >= VNET_HDR_LEN + MACS => {
                b.set_len(len + TAG_LEN);
                tag(b.frame_mut(), shim.vid);
                n += 1;
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => break,
            Err(e) => return Err(e),
        }
    }
    let mut iovs: Vec<iovec> = bufs[..n].iter().map(|b| iovec { base: b.frame().as_ptr() as *mut _, len: b.len() }).collect();
    let mut msgs: Vec<mmsghdr> = iovs.iter_mut().map(|iov| mmsg(iov, None)).collect();
    let mut sent = 0;
    while sent < n {
        // SAFETY: every message points at a live frame of its length, which the kernel only reads.
        match cvt(unsafe { sendmmsg(shim.sock.as_raw_fd(), msgs[sent..].as_mut_ptr(), (n - sent) as u32, MSG_DONTWAIT) }) {
            Ok(k) => sent += k as usize,
            // A full queue drops the rest of this batch, as a full NIC queue would.
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// Insert the 802.1Q tag into `[virtio-net header | 4 bytes of room | frame]`
/// read that way: header and MACs move up 4 bytes, the tag follows them,
/// and the header's offsets account for it.
fn tag(b: &mut [u8], vid: u16) {
    b.copy_within(TAG_LEN..TAG_LEN + VNET_HDR_LEN + MACS, 0);
    let at = VNET_HDR_LEN + MACS;
    b[at..at + 2].copy_from_slice(&0x8100u16.to_be_bytes());
    b[at + 2..at + 4].copy_from_slice(&vid.to_be_bytes());
    let shift = |i: usize, b: &mut [u8]| {
        let v = u16::from_le_bytes([b[i], b[i + 1]]).wrapping_add(TAG_LEN as u16);
        b[i..i + 2].copy_from_slice(&v.to_le_bytes());
    };
    if b[0] & 1 != 0 {
        shift(6, b); // csum_start
    }
    if b[1] != 0 {
        shift(2, b); // hdr_len
    }
}

/// What arrived on the parent tagged with the VLAN: up through the TAP, untagged.
fn up(shim: &Shim, bufs: &mut [PacketBuf]) -> io::Result<usize> {
    let mut iovs = spare_iovecs(bufs);
    let mut control = vec![[0u64; CONTROL_LEN / 8]; bufs.len()];
    let mut msgs: Vec<mmsghdr> = iovs.iter_mut().zip(control.iter_mut()).map(|(iov, ctl)| with_control(mmsg(iov, None), ctl)).collect();
    // SAFETY: every message points at its buffer's spare room and its control buffer, live for the call.
    let got = match cvt(unsafe { recvmmsg(shim.sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, MSG_DONTWAIT, std::ptr::null_mut()) }) {
        Ok(n) => n as usize,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for i in 0..got {
        // The filter let only the VLAN through; the auxdata says so again.
        // struct tpacket_auxdata { u32 status, len, snaplen; u16 mac, net, vlan_tci, vlan_tpid; }
        let aux = control_data(&control[i], msgs[i].hdr.controllen, packet::SOL_PACKET, packet::PACKET_AUXDATA).filter(|d| d.len() >= 18);
        let ours = aux.is_some_and(|d| {
            let status = u32::from_ne_bytes(d[0..4].try_into().unwrap());
            let tci = u16::from_ne_bytes([d[16], d[17]]);
            status & TP_STATUS_VLAN_VALID != 0 && tci & 0x0fff == shim.vid
        });
        if !ours {
            continue;
        }
        vnet_frame(&mut bufs[i], msgs[i].len as usize);
        if write_vnet_frame(shim.tap.as_raw_fd(), &bufs[i]).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}
