//! The port against a fake front-end that speaks the protocol as QEMU does
//! (and a guest driver's side of the rings): guest memory is a memfd both
//! sides map; the fake writes descriptors and frames into it, kicks, and
//! reads what the port wrote back. Then the same with a front-end and a
//! guest that lie.

use super::memory::{GuestMemory, RegionDesc};
use super::msg::{req, HDR_LEN, PROTOCOL_F_MQ, PROTOCOL_F_NET_MTU, PROTOCOL_F_REPLY_ACK};
use super::net::*;
use super::*;
use crate::dp::offload::{Gso, Offload};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// A memfd of `len` bytes.
pub(super) fn memfd(len: u64) -> OwnedFd {
    // SAFETY: a C string literal and flags; the result is checked by `owned`.
    let fd = owned(unsafe { memfd_create(c"nvgred-vhost-test".as_ptr(), MFD_CLOEXEC) }).unwrap();
    let f = File::from(fd);
    f.set_len(len).unwrap();
    f.into()
}

fn new_eventfd() -> OwnedFd {
    // SAFETY: plain syscall; checked by `owned`.
    owned(unsafe { eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) }).unwrap()
}

/// Read an eventfd's count (0 if it was not signalled).
fn take_events(fd: &OwnedFd) -> u64 {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into a live local.
    let n = unsafe { read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    if n == 8 {
        v
    } else {
        0
    }
}

fn readable(fd: RawFd) -> bool {
    msg::wait_readable(&[fd], Some(Duration::ZERO)).is_some()
}

/// Wait (up to 5 s) for `f` to hold.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Records what the port says to wait on.
#[derive(Default)]
struct Ready(Mutex<Vec<Option<RawFd>>>);

impl Readiness for Ready {
    fn set(&self, fd: Option<RawFd>) {
        lock(&self.0).push(fd);
    }
}

impl Ready {
    fn current(&self) -> Option<RawFd> {
        lock(&self.0).last().copied().flatten()
    }
}

/// Guest physical address of guest memory, and where the front-end has it.
const GPA: u64 = 0x10_0000;
const UVA: u64 = 0x7f12_3400_0000;
const MEM_LEN: u64 = 8 << 20;
const QSIZE: u16 = 256;
/// Frame buffers live from here on.
const BUFFERS: u64 = GPA + 0x4_0000;

/// Where queue `q`'s ring parts are (guest physical).
fn ring_gpa(q: usize) -> (u64, u64, u64) {
    let base = GPA + q as u64 * 0x1_0000;
    (base, base + 0x4000, base + 0x8000)
}

fn uva(gpa: u64) -> u64 {
    UVA + (gpa - GPA)
}

const FEATURES: u64 = OFFERED;

/// A front-end (QEMU's side of the socket) and a guest driver (its side of
/// the rings), in one.
struct Frontend {
    conn: UnixStream,
    mem: GuestMemory,
    memfd: OwnedFd,
    kick: [OwnedFd; 2],
    call: [OwnedFd; 2],
    err: [OwnedFd; 2],
    avail: [u16; 2],
    used_seen: [u16; 2],
    next_desc: [u16; 2],
    next_buf: u64,
    features: u64,
}

/// A temporary directory with the socket: QEMU's (the port a client), or
/// the port's (a server).
struct Lab {
    dir: PathBuf,
    listener: Option<UnixListener>,
}

impl Lab {
    fn dir() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!("nvgred-vhost-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The front-end listens, the port connects.
    fn new() -> Lab {
        let dir = Self::dir();
        let listener = UnixListener::bind(dir.join("qemu.sock")).unwrap();
        listener.set_nonblocking(true).unwrap();
        Lab { dir, listener: Some(listener) }
    }

    /// The port listens, front-ends connect (and reconnect without waiting).
    fn server() -> Lab {
        Lab { dir: Self::dir(), listener: None }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("qemu.sock")
    }

    fn spec(&self) -> VhostUserSpec {
        let mode = if self.listener.is_some() { SocketMode::Client } else { SocketMode::Server };
        VhostUserSpec { name: "test0".into(), socket: self.path(), mode }
    }

    /// A port, and a connection to it.
    fn start(&self) -> (VhostUserPort, Arc<Ready>, Frontend) {
        let ready = Arc::new(Ready::default());
        let port = VhostUserPort::start(&self.spec(), ready.clone()).unwrap();
        let fe = self.accept();
        (port, ready, fe)
    }

    /// The next connection between the port and a front-end.
    fn accept(&self) -> Frontend {
        let Some(listener) = &self.listener else { return Frontend::new(UnixStream::connect(self.path()).unwrap()) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match listener.accept() {
                Ok((s, _)) => return Frontend::new(s),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => panic!("the port did not connect: {e}"),
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Send one message with descriptors, as QEMU does (one sendmsg).
fn send_raw(sock: RawFd, bytes: &[u8], fds: &[RawFd]) {
    let mut control = [0u64; cmsg_space(8 * 4) / 8];
    let mut iov = iovec { base: bytes.as_ptr() as *mut _, len: bytes.len() };
    let mut mh = msghdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: std::ptr::null_mut(),
        controllen: 0,
        flags: 0,
    };
    if !fds.is_empty() {
        let hlen = cmsg_align(std::mem::size_of::<cmsghdr>());
        // SAFETY: `control` is 8-aligned and larger than one cmsghdr plus 8 fds.
        let c = unsafe { std::slice::from_raw_parts_mut(control.as_mut_ptr().cast::<u8>(), cmsg_space(8 * 4)) };
        c[..8].copy_from_slice(&(hlen + 4 * fds.len()).to_ne_bytes());
        c[8..12].copy_from_slice(&SOL_SOCKET.to_ne_bytes());
        c[12..16].copy_from_slice(&SCM_RIGHTS.to_ne_bytes());
        for (i, fd) in fds.iter().enumerate() {
            c[hlen + 4 * i..hlen + 4 * i + 4].copy_from_slice(&fd.to_ne_bytes());
        }
        mh.control = control.as_mut_ptr().cast();
        mh.controllen = cmsg_space(4 * fds.len());
    }
    // SAFETY: every pointer in `mh` is live for the call.
    let n = unsafe { sendmsg(sock, &mh, MSG_NOSIGNAL) };
    assert_eq!(n, bytes.len() as isize, "sendmsg: {}", io::Error::last_os_error());
}

fn message(request: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&request.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

const NEED_REPLY: u32 = 0x1 | 0x8;

fn state(index: u32, num: u32) -> Vec<u8> {
    msg::state_payload(index, num).to_vec()
}

impl Frontend {
    fn new(conn: UnixStream) -> Frontend {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let memfd = memfd(MEM_LEN);
        let region = RegionDesc { guest_addr: GPA, size: MEM_LEN, user_addr: UVA, mmap_offset: 0 };
        let mem = GuestMemory::map(&[region], vec![memfd.try_clone().unwrap()]).unwrap();
        Frontend {
            conn,
            mem,
            memfd,
            kick: [new_eventfd(), new_eventfd()],
            call: [new_eventfd(), new_eventfd()],
            err: [new_eventfd(), new_eventfd()],
            avail: [0; 2],
            used_seen: [0; 2],
            next_desc: [0; 2],
            next_buf: BUFFERS,
            features: FEATURES,
        }
    }

    fn send(&self, request: u32, payload: &[u8], fds: &[RawFd]) {
        send_raw(self.conn.as_raw_fd(), &message(request, 1, payload), fds);
    }

    /// Read a reply to `request`.
    fn reply(&mut self, request: u32) -> Vec<u8> {
        let mut h = [0u8; HDR_LEN];
        self.conn.read_exact(&mut h).expect("a reply");
        let w = |i: usize| u32::from_ne_bytes(h[i..i + 4].try_into().unwrap());
        assert_eq!((w(0), w(4)), (request, 0x5), "reply header");
        let mut p = vec![0u8; w(8) as usize];
        self.conn.read_exact(&mut p).unwrap();
        p
    }

    /// Send with need_reply and expect success (the message is applied).
    fn acked(&mut self, request: u32, payload: &[u8], fds: &[RawFd]) {
        send_raw(self.conn.as_raw_fd(), &message(request, NEED_REPLY, payload), fds);
        assert_eq!(self.reply(request), 0u64.to_ne_bytes(), "request {request} acknowledged");
    }

    fn get_u64(&mut self, request: u32) -> u64 {
        self.send(request, &[], &[]);
        u64::from_ne_bytes(self.reply(request).try_into().unwrap())
    }

    fn mem_table(&self) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&1u32.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        for v in [GPA, MEM_LEN, UVA, 0] {
            p.extend_from_slice(&v.to_ne_bytes());
        }
        p
    }

    fn ring_addr(q: usize) -> Vec<u8> {
        let (d, a, u) = ring_gpa(q);
        let mut p = Vec::new();
        p.extend_from_slice(&(q as u32).to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        for v in [uva(d), uva(u), uva(a), 0] {
            p.extend_from_slice(&v.to_ne_bytes());
        }
        p
    }

    /// What QEMU sends when the guest's driver starts the device.
    fn setup(&mut self, features: u64) {
        self.features = features;
        assert_eq!(self.get_u64(req::GET_FEATURES), OFFERED);
        let pf = self.get_u64(req::GET_PROTOCOL_FEATURES);
        assert_eq!(pf, PROTOCOL_F_MQ | PROTOCOL_F_REPLY_ACK | PROTOCOL_F_NET_MTU);
        self.send(req::SET_PROTOCOL_FEATURES, &pf.to_ne_bytes(), &[]);
        assert_eq!(self.get_u64(req::GET_QUEUE_NUM), 1);
        self.send(req::SET_OWNER, &[], &[]);
        self.send(req::SET_FEATURES, &features.to_ne_bytes(), &[]);
        if features & F_MTU != 0 {
            self.acked(req::NET_SET_MTU, &1458u64.to_ne_bytes(), &[]);
        }
        self.acked(req::SET_MEM_TABLE, &self.mem_table(), &[self.memfd.as_raw_fd()]);
        for q in 0..2 {
            self.start_ring(q, 0);
        }
        for q in 0..2 {
            self.acked(req::SET_VRING_ENABLE, &state(q as u32, 1), &[]);
        }
    }

    fn start_ring(&mut self, q: usize, base: u16) {
        self.send(req::SET_VRING_NUM, &state(q as u32, QSIZE as u32), &[]);
        self.send(req::SET_VRING_BASE, &state(q as u32, base as u32), &[]);
        self.send(req::SET_VRING_ADDR, &Self::ring_addr(q), &[]);
        self.send(req::SET_VRING_KICK, &(q as u64).to_ne_bytes(), &[self.kick[q].as_raw_fd()]);
        self.send(req::SET_VRING_CALL, &(q as u64).to_ne_bytes(), &[self.call[q].as_raw_fd()]);
        self.acked(req::SET_VRING_ERR, &(q as u64).to_ne_bytes(), &[self.err[q].as_raw_fd()]);
        self.avail[q] = base;
        self.used_seen[q] = base;
    }

    // --- the guest driver's side ---

    fn alloc(&mut self, len: usize) -> u64 {
        let at = self.next_buf;
        self.next_buf += (len as u64).next_multiple_of(64);
        assert!(self.next_buf <= GPA + MEM_LEN, "test guest memory exhausted");
        at
    }

    fn write_desc(&self, q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        assert!(self.mem.write(ring_gpa(q).0 + 16 * i as u64, &d));
    }

    /// A chain of the given (address, length, flags) buffers; its head.
    fn chain(&mut self, q: usize, segs: &[(u64, u32, u16)]) -> u16 {
        let first = self.next_desc[q];
        for (k, &(addr, len, flags)) in segs.iter().enumerate() {
            let i = (first + k as u16) % QSIZE;
            let last = k + 1 == segs.len();
            let next = (i + 1) % QSIZE;
            self.write_desc(q, i, addr, len, flags | if last { 0 } else { 1 }, if last { 0 } else { next });
        }
        self.next_desc[q] = (first + segs.len() as u16) % QSIZE;
        first
    }

    fn idx(&self, gpa: u64) -> &AtomicU16 {
        self.mem.slice(gpa, 2).unwrap().u16_at(0).unwrap()
    }

    /// Make `head` available (the index stored last, with Release).
    fn make_avail(&mut self, q: usize, head: u16) {
        let (_, avail, _) = ring_gpa(q);
        let slot = self.avail[q] % QSIZE;
        assert!(self.mem.write(avail + 4 + 2 * slot as u64, &head.to_le_bytes()));
        self.avail[q] = self.avail[q].wrapping_add(1);
        self.idx(avail + 2).store(self.avail[q].to_le(), Ordering::Release);
    }

    fn kick(&self, q: usize) {
        signal(self.kick[q].as_raw_fd());
    }

    /// The guest sends `frame` with header `hdr` in one buffer.
    fn tx(&mut self, hdr: &[u8], frame: &[u8]) -> u16 {
        let addr = self.alloc(hdr.len() + frame.len());
        assert!(self.mem.write(addr, hdr) && self.mem.write(addr + hdr.len() as u64, frame));
        let head = self.chain(TX, &[(addr, (hdr.len() + frame.len()) as u32, 0)]);
        self.make_avail(TX, head);
        head
    }

    /// Used entries since last asked: (id, len).
    fn used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let (_, _, used) = ring_gpa(q);
        let idx = u16::from_le(self.idx(used + 2).load(Ordering::Acquire));
        let mut out = Vec::new();
        while self.used_seen[q] != idx {
            let mut e = [0u8; 8];
            assert!(self.mem.read(used + 4 + 8 * (self.used_seen[q] % QSIZE) as u64, &mut e));
            out.push((u32::from_le_bytes(e[..4].try_into().unwrap()), u32::from_le_bytes(e[4..].try_into().unwrap())));
            self.used_seen[q] = self.used_seen[q].wrapping_add(1);
        }
        out
    }

    /// Offer `n` receive buffers of `len` bytes: (head, address) each.
    fn rx_buffers(&mut self, n: usize, len: u32) -> Vec<(u32, u64)> {
        (0..n)
            .map(|_| {
                let addr = self.alloc(len as usize);
                let head = self.chain(RX, &[(addr, len, 2)]);
                self.make_avail(RX, head);
                (head as u32, addr)
            })
            .collect()
    }

    fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        assert!(self.mem.read(gpa, &mut v));
        v
    }

    fn set_u16(&self, gpa: u64, v: u16) {
        self.idx(gpa).store(v.to_le(), Ordering::SeqCst);
    }
}

fn hdr12(off: &Offload) -> [u8; 12] {
    let mut h = [0u8; 12];
    off.emit((&mut h[..10]).try_into().unwrap());
    h
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn bufs(n: usize) -> Vec<PacketBuf> {
    (0..n).map(|_| PacketBuf::new(65_536 + 128)).collect()
}

/// A port and a front-end that has set it up with `features`.
fn running(features: u64) -> (Lab, VhostUserPort, Arc<Ready>, Frontend) {
    let lab = Lab::new();
    let (port, ready, mut fe) = lab.start();
    fe.setup(features);
    eventually("the port is up", || port.is_up());
    (lab, port, ready, fe)
}

#[test]
fn frames_from_the_guest_arrive_with_their_offload() {
    let (_lab, port, ready, mut fe) = running(FEATURES);
    assert_eq!(port.guest_mtu(), Some(1458), "what QEMU announces to the guest");
    let waits_on = ready.current().expect("the worker is told what to wait on");
    let small = frame(64, 1);
    let tso = Offload { gso: Gso::Tcp4, gso_size: 1448, hdr_len: 66, csum: Some((34, 16)) };
    let big = frame(30_000, 2);
    fe.tx(&hdr12(&Offload::default()), &small);
    // The header in its own descriptor, the frame over two (ANY_LAYOUT).
    let (h, a, b) = (fe.alloc(12), fe.alloc(10_000), fe.alloc(20_000));
    assert!(fe.mem.write(h, &hdr12(&tso)) && fe.mem.write(a, &big[..10_000]) && fe.mem.write(b, &big[10_000..]));
    let head = fe.chain(TX, &[(h, 12, 0), (a, 10_000, 0), (b, 20_000, 0)]);
    fe.make_avail(TX, head);
    assert!(!readable(waits_on));
    fe.kick(TX);
    assert!(readable(waits_on), "it is the TX kick");
    let mut bs = bufs(8);
    assert_eq!(port.recv(&mut bs), 2);
    assert_eq!(bs[0].frame(), &small[..]);
    assert_eq!(bs[0].offload, Offload::default());
    assert_eq!(bs[1].frame(), &big[..]);
    assert_eq!(bs[1].offload, tso);
    assert_eq!(fe.used(TX).len(), 2, "both chains handed back");
    assert!(!readable(waits_on), "the kick was consumed");
    assert_eq!(port.recv(&mut bs), 0);
    assert_eq!(port.stats(), Stats { connections: 1, ..Stats::default() });
}


/// The header the guest should find in front of a frame sent to it.
fn rx_hdr(off: &Offload, num_buffers: u16) -> [u8; 12] {
    let mut h = hdr12(off);
    h[10..].copy_from_slice(&num_buffers.to_le_bytes());
    h
}

fn with_offload(f: &[u8], off: Offload) -> PacketBuf {
    let mut b = PacketBuf::from_frame(f);
    b.offload = off;
    b
}

#[test]
fn frames_to_the_guest_take_one_buffer_each_without_mergeable_buffers() {
    let (_lab, port, _ready, mut fe) = running(FEATURES & !F_MRG_RXBUF);
    let rx = fe.rx_buffers(3, 2048);
    let off = Offload { csum: Some((34, 16)), ..Offload::default() };
    let f = frame(1000, 3);
    port.send(&with_offload(&f, off)).unwrap();
    assert_eq!(take_events(&fe.call[RX]), 0, "no interrupt before the flush");
    port.flush();
    assert_eq!(take_events(&fe.call[RX]), 1, "one interrupt for the batch");
    assert_eq!(fe.used(RX), vec![(rx[0].0, 1012)]);
    assert_eq!(fe.read(rx[0].1, 12), rx_hdr(&off, 1), "VERSION_1: a 12-byte header, num_buffers 1");
    assert_eq!(fe.read(rx[0].1 + 12, 1000), f);

    // Larger than a buffer: refused, and the buffer it tried stays the guest's.
    assert_eq!(port.send(&PacketBuf::from_frame(&frame(3000, 4))), Err(SendError::TooLarge));
    assert!(fe.used(RX).is_empty());
    let g = frame(60, 5);
    port.send(&PacketBuf::from_frame(&g)).unwrap();
    assert_eq!(fe.used(RX), vec![(rx[1].0, 72)]);
    assert_eq!(fe.read(rx[1].1 + 12, 60), g);
    assert_eq!(port.stats().rx_too_large, 1);
}

#[test]
fn a_frame_spans_mergeable_buffers() {
    let (_lab, port, _ready, mut fe) = running(FEATURES);
    let rx = fe.rx_buffers(4, 1024);
    let tso = Offload { gso: Gso::Tcp6, gso_size: 1200, hdr_len: 86, csum: Some((54, 16)) };
    let f = frame(2500, 6);
    port.send(&with_offload(&f, tso)).unwrap();
    let used = fe.used(RX);
    assert_eq!(used, vec![(rx[0].0, 1024), (rx[1].0, 1024), (rx[2].0, 12 + 2500 - 2048)]);
    let mut got = Vec::new();
    for ((_, len), (_, addr)) in used.iter().zip(&rx) {
        got.extend(fe.read(*addr, *len as usize));
    }
    assert_eq!(got[..12], rx_hdr(&tso, 3), "num_buffers counts the buffers");
    assert_eq!(&got[12..], &f[..]);

    // One buffer left: a frame needing two takes none of it.
    assert_eq!(port.send(&PacketBuf::from_frame(&frame(1500, 7))), Err(SendError::NoBuffers));
    assert!(fe.used(RX).is_empty());
    port.send(&PacketBuf::from_frame(&frame(100, 8))).unwrap();
    assert_eq!(fe.used(RX), vec![(rx[3].0, 112)]);
    assert_eq!(port.stats().rx_no_buffers, 1);
    fe.rx_buffers(2, 1024);
    port.send(&PacketBuf::from_frame(&frame(1500, 7))).unwrap();
    assert_eq!(fe.used(RX).len(), 2);
}

#[test]
fn without_version_1_the_header_is_10_bytes() {
    let features = FEATURES & !(F_VERSION_1 | F_MRG_RXBUF);
    let (_lab, port, _ready, mut fe) = running(features);
    let off = Offload { csum: Some((34, 16)), ..Offload::default() };
    let f = frame(200, 9);
    fe.tx(&hdr12(&off)[..10], &f);
    let mut bs = bufs(2);
    assert_eq!(port.recv(&mut bs), 1);
    assert_eq!((bs[0].frame(), bs[0].offload), (&f[..], off));
    let rx = fe.rx_buffers(1, 2048);
    port.send(&with_offload(&f, off)).unwrap();
    assert_eq!(fe.used(RX), vec![(rx[0].0, 210)]);
    assert_eq!(fe.read(rx[0].1, 10), hdr12(&off)[..10]);
}

#[test]
fn offloads_the_guest_did_not_negotiate_are_not_sent_to_it() {
    let (_lab, port, _ready, mut fe) = running(FEATURES & !(F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6));
    assert_eq!(port.guest_offloads(), GuestOffloads::default());
    let rx = fe.rx_buffers(2, 4096);
    let tso = Offload { gso: Gso::Tcp4, gso_size: 1448, hdr_len: 54, csum: Some((34, 16)) };
    assert_eq!(port.send(&with_offload(&frame(3000, 1), tso)), Err(SendError::Offload));
    assert_eq!(port.stats().rx_offload, 1);
    // A checksum left to finish is finished on the way in.
    let mut f = frame(100, 2);
    f[50..52].copy_from_slice(&[0x12, 0x34]); // the pseudo-header sum, say
    port.send(&with_offload(&f, Offload { csum: Some((34, 16)), ..Offload::default() })).unwrap();
    assert_eq!(fe.used(RX), vec![(rx[0].0, 112)]);
    assert_eq!(fe.read(rx[0].1, 12), rx_hdr(&Offload::default(), 1), "no NEEDS_CSUM for this guest");
    let got = fe.read(rx[0].1 + 12, 100);
    assert_eq!(crate::wire::checksum::combine(&[0x1234, crate::wire::checksum::data(&got[34..])]), 0xffff);
    assert_eq!((&got[..50], &got[52..]), (&f[..50], &f[52..]), "only the checksum changed");
}

#[test]
fn bad_chains_from_the_guest_are_dropped_and_counted() {
    let (_lab, port, _ready, mut fe) = running(FEATURES);
    let h = hdr12(&Offload::default());
    let good = frame(100, 1);
    let ok = fe.alloc(112);
    assert!(fe.mem.write(ok, &h) && fe.mem.write(ok + 12, &good));
    let bad = |fe: &mut Frontend, segs: &[(u64, u32, u16)]| {
        let head = fe.chain(TX, segs);
        fe.make_avail(TX, head);
    };
    // Outside guest memory; running past its end; pointing the wrong way.
    bad(&mut fe, &[(GPA - 0x1000, 112, 0)]);
    bad(&mut fe, &[(ok, 12, 0), (GPA + MEM_LEN - 50, 100, 0)]);
    bad(&mut fe, &[(ok, 112, 2)]);
    // `next` beyond the table.
    let i = fe.next_desc[TX];
    fe.write_desc(TX, i, ok, 112, 1, QSIZE + 7);
    fe.next_desc[TX] += 1;
    fe.make_avail(TX, i);
    // A loop: two descriptors naming each other.
    let (a, b) = (fe.next_desc[TX], fe.next_desc[TX] + 1);
    fe.write_desc(TX, a, ok, 12, 1, b);
    fe.write_desc(TX, b, ok, 12, 1, a);
    fe.next_desc[TX] += 2;
    fe.make_avail(TX, a);
    // Indirect tables: outside memory, a length not of whole descriptors,
    // one nesting another, one with a loop.
    bad(&mut fe, &[(GPA + MEM_LEN, 32, 4)]);
    let table = fe.alloc(64);
    bad(&mut fe, &[(table, 20, 4)]);
    let write_table = |fe: &Frontend, at: u64, descs: &[(u64, u32, u16, u16)]| {
        for (k, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..].copy_from_slice(&next.to_le_bytes());
            assert!(fe.mem.write(at + 16 * k as u64, &d));
        }
    };
    let nested = fe.alloc(32);
    write_table(&fe, nested, &[(table, 32, 4, 0)]);
    bad(&mut fe, &[(nested, 16, 4)]);
    let looping = fe.alloc(32);
    write_table(&fe, looping, &[(ok, 12, 1, 1), (ok, 12, 1, 0)]);
    bad(&mut fe, &[(looping, 32, 4)]);
    // Headers that lie: gso_size 0; hdr_len beyond the frame; a chain shorter than a header.
    let liar = |off: Offload| hdr12(&off);
    fe.tx(&liar(Offload { gso: Gso::Tcp4, gso_size: 0, hdr_len: 54, csum: Some((34, 16)) }), &good);
    fe.tx(&liar(Offload { gso: Gso::Tcp4, gso_size: 1448, hdr_len: 500, csum: Some((34, 16)) }), &good);
    bad(&mut fe, &[(ok, 8, 0)]);
    // Larger than the worker's buffer.
    fe.tx(&h, &frame(5000, 3));
    // And a good one, through an indirect table: header and frame apart.
    let ind = fe.alloc(32);
    write_table(&fe, ind, &[(ok, 12, 1, 1), (ok + 12, 100, 0, 0)]);
    bad(&mut fe, &[(ind, 32, 4)]);
    fe.kick(TX);

    let mut bs: Vec<PacketBuf> = (0..32).map(|_| PacketBuf::new(4096)).collect();
    assert_eq!(port.recv(&mut bs), 1, "only the good frame");
    assert_eq!(bs[0].frame(), &good[..]);
    assert_eq!(fe.used(TX).len(), 14, "every chain is handed back");
    let s = port.stats();
    assert_eq!((s.bad_descriptors, s.looping_chains, s.bad_headers, s.oversized), (7, 2, 3, 1), "{s:?}");
    assert!(port.is_up(), "bad chains are bad frames, not a bad ring");
}

#[test]
fn indirect_chains_need_the_feature() {
    let (_lab, port, _ready, mut fe) = running(FEATURES & !F_INDIRECT_DESC);
    let ok = fe.alloc(112);
    assert!(fe.mem.write(ok, &hdr12(&Offload::default())));
    let table = fe.alloc(16);
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&ok.to_le_bytes());
    d[8..12].copy_from_slice(&112u32.to_le_bytes());
    assert!(fe.mem.write(table, &d));
    let head = fe.chain(TX, &[(table, 16, 4)]);
    fe.make_avail(TX, head);
    assert_eq!(port.recv(&mut bufs(1)), 0);
    assert_eq!(port.stats().bad_descriptors, 1);
}

#[test]
fn a_ring_whose_indices_lie_is_stopped_until_restarted() {
    let (_lab, port, ready, mut fe) = running(FEATURES);
    let (_, avail, _) = ring_gpa(TX);
    fe.set_u16(avail + 2, 1000); // 1000 entries "available" in a ring of 256
    fe.kick(TX);
    let mut bs = bufs(4);
    assert_eq!(port.recv(&mut bs), 0);
    assert_eq!(port.stats().broken_rings, 1);
    assert!(!port.is_up());
    assert_eq!(take_events(&fe.err[TX]), 1, "the front-end hears of it");
    assert!(!readable(ready.current().unwrap()), "and the worker is not woken again for it");
    fe.kick(TX);
    assert_eq!(port.recv(&mut bs), 0);
    assert_eq!(port.stats().broken_rings, 1);

    // A head beyond the table, on the receive side.
    let (_, rx_avail, _) = ring_gpa(RX);
    assert!(fe.mem.write(rx_avail + 4, &999u16.to_le_bytes()));
    fe.set_u16(rx_avail + 2, 1);
    assert_eq!(port.send(&PacketBuf::from_frame(&frame(60, 1))), Err(SendError::Down));
    assert_eq!(port.stats().broken_rings, 2);

    // The front-end stops and restarts the ring (as on a guest driver reset).
    fe.send(req::GET_VRING_BASE, &state(TX as u32, 0), &[]);
    assert_eq!(fe.reply(req::GET_VRING_BASE), state(TX as u32, 0));
    fe.set_u16(avail + 2, 0);
    fe.set_u16(ring_gpa(TX).2 + 2, 0);
    fe.start_ring(TX, 0);
    fe.tx(&hdr12(&Offload::default()), &frame(60, 2));
    assert_eq!(port.recv(&mut bs), 1);
}

#[test]
fn bad_receive_buffers_are_handed_back_empty() {
    let (_lab, port, _ready, mut fe) = running(FEATURES);
    // Read-only, then outside memory.
    let a = fe.alloc(2048);
    let h = fe.chain(RX, &[(a, 2048, 0)]);
    fe.make_avail(RX, h);
    assert_eq!(port.send(&PacketBuf::from_frame(&frame(100, 1))), Err(SendError::GuestFault));
    let h2 = fe.chain(RX, &[(GPA + MEM_LEN - 100, 2048, 2)]);
    fe.make_avail(RX, h2);
    assert_eq!(port.send(&PacketBuf::from_frame(&frame(500, 1))), Err(SendError::GuestFault));
    assert_eq!(fe.used(RX), vec![(h as u32, 0), (h2 as u32, 0)]);
    // A frame across a good and a bad buffer: neither carries any of it.
    let rx = fe.rx_buffers(1, 1024);
    let h3 = fe.chain(RX, &[(GPA - 4096, 1024, 2)]);
    fe.make_avail(RX, h3);
    assert_eq!(port.send(&PacketBuf::from_frame(&frame(1500, 1))), Err(SendError::GuestFault));
    assert_eq!(fe.used(RX), vec![(rx[0].0, 0), (h3 as u32, 0)]);
    assert_eq!(port.stats().bad_descriptors, 3);
    assert!(port.is_up());
}

#[test]
fn the_guest_is_kicked_and_interrupted_only_as_it_asks() {
    let (_lab, port, ready, mut fe) = running(FEATURES);
    let waits_on = ready.current().unwrap();
    let (_, _, tx_used) = ring_gpa(TX);
    let avail_event = tx_used + 4 + 8 * QSIZE as u64;
    let h = hdr12(&Offload::default());
    for i in 0..3 {
        fe.tx(&h, &frame(60, i));
    }
    fe.kick(TX);
    let mut two = bufs(2);
    assert_eq!(port.recv(&mut two), 2);
    assert!(readable(waits_on), "frames left over: the worker comes back");
    assert_eq!(port.recv(&mut two), 1);
    assert!(!readable(waits_on));
    assert_eq!(u16::from_le(fe.idx(avail_event).load(Ordering::SeqCst)), 3, "kick me after entry 3");

    // EVENT_IDX on the receive side: the guest wants an interrupt only once
    // the used index passes 4.
    let (_, rx_avail, _) = ring_gpa(RX);
    let used_event = rx_avail + 4 + 2 * QSIZE as u64;
    fe.set_u16(used_event, 4);
    fe.rx_buffers(8, 2048);
    for i in 0..8 {
        port.send(&PacketBuf::from_frame(&frame(60, i))).unwrap();
        port.flush();
        let expected = u64::from(i == 4);
        assert_eq!(take_events(&fe.call[RX]), expected, "after frame {i}");
    }
}

#[test]
fn without_event_idx_the_flags_say_it() {
    let (_lab, port, _ready, mut fe) = running(FEATURES & !F_EVENT_IDX);
    let (_, rx_avail, _) = ring_gpa(RX);
    let (_, _, tx_used) = ring_gpa(TX);
    assert_eq!(fe.idx(ring_gpa(RX).2).load(Ordering::SeqCst), 1, "we never wait for receive buffers: no kicks");
    assert_eq!(fe.idx(tx_used).load(Ordering::SeqCst), 0, "kicks wanted for frames from the guest");
    fe.rx_buffers(2, 2048);
    fe.set_u16(rx_avail, 1); // VRING_AVAIL_F_NO_INTERRUPT
    port.send(&PacketBuf::from_frame(&frame(60, 1))).unwrap();
    port.flush();
    assert_eq!(take_events(&fe.call[RX]), 0);
    fe.set_u16(rx_avail, 0);
    port.send(&PacketBuf::from_frame(&frame(60, 2))).unwrap();
    port.flush();
    assert_eq!(take_events(&fe.call[RX]), 1);
}

impl Frontend {
    /// Whether the port closed this connection (within 5 s). Closed with
    /// our bytes unread, it is reset rather than ended.
    fn closed_by_port(&mut self) -> bool {
        let mut b = [0u8; 64];
        match self.conn.read(&mut b) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn a_bad_message_closes_the_connection() {
    let lab = Lab::server();
    let (port, _ready, fe) = lab.start();
    let junk = memfd(4096);
    let (mem, ev) = (memfd(MEM_LEN), new_eventfd());
    let mut mem_table_beyond_file = fe.mem_table();
    mem_table_beyond_file[16..24].copy_from_slice(&(MEM_LEN * 2).to_ne_bytes());
    let mut truncated = message(req::SET_VRING_ADDR, 1, &Frontend::ring_addr(0));
    truncated.truncate(HDR_LEN + 10);
    let cases: Vec<(&str, Vec<u8>, Vec<RawFd>)> = vec![
        ("bad version", message(req::GET_FEATURES, 2, &[]), vec![]),
        ("reply flag from the front-end", message(req::GET_FEATURES, 0x5, &[]), vec![]),
        ("payload too large", message(req::SET_FEATURES, 1, &[0; 5000]), vec![]),
        ("payload too short", message(req::SET_FEATURES, 1, &[1, 2, 3]), vec![]),
        ("descriptors where none belong", message(req::GET_FEATURES, 1, &[]), vec![junk.as_raw_fd()]),
        ("features not offered", message(req::SET_FEATURES, 1, &(1u64 << 26).to_ne_bytes()), vec![]),
        ("region beyond its file", message(req::SET_MEM_TABLE, 1, &mem_table_beyond_file), vec![mem.as_raw_fd()]),
        ("fewer descriptors than regions", message(req::SET_MEM_TABLE, 1, &fe.mem_table()), vec![]),
        ("a kick that is no eventfd", message(req::SET_VRING_KICK, 1, &1u64.to_ne_bytes()), vec![junk.as_raw_fd()]),
        ("a kick without a descriptor", message(req::SET_VRING_KICK, 1, &(1u64 | 1 << 8).to_ne_bytes()), vec![]),
        ("a kick before the ring exists", message(req::SET_VRING_KICK, 1, &1u64.to_ne_bytes()), vec![ev.as_raw_fd()]),
        ("queue 5", message(req::SET_VRING_NUM, 1, &state(5, 256)), vec![]),
        ("queue size not a power of 2", message(req::SET_VRING_NUM, 1, &state(0, 100)), vec![]),
        ("an unknown request", message(99, 1, &[]), vec![]),
        ("an MTU of 20", message(req::NET_SET_MTU, 1, &20u64.to_ne_bytes()), vec![]),
        ("truncated (stalls)", truncated, vec![]),
    ];
    let mut fe = fe;
    for (i, (what, bytes, fds)) in cases.iter().enumerate() {
        send_raw(fe.conn.as_raw_fd(), bytes, fds);
        assert!(fe.closed_by_port(), "{what}: closed");
        assert_eq!(port.stats().protocol_errors, i as u64 + 1, "{what}: counted");
        assert!(port.last_error().is_some());
        fe = lab.accept();
    }
    // After all that, a well-behaved front-end gets a working device.
    fe.setup(FEATURES);
    eventually("the port is up", || port.is_up());
}

#[test]
fn when_the_front_end_goes_the_device_goes_down_at_once_and_comes_back() {
    let lab = Lab::new();
    let (port, ready, mut fe) = lab.start();
    fe.setup(FEATURES);
    eventually("up", || port.is_up());
    assert!(ready.current().is_some());
    drop(fe);
    eventually("down", || !port.is_up());
    eventually("the worker stops waiting on the kick", || ready.current().is_none());
    assert_eq!(port.recv(&mut bufs(4)), 0);
    assert_eq!(port.send(&PacketBuf::from_frame(&frame(60, 1))), Err(SendError::Down));
    assert!(port.shared.device().memory.is_none(), "guest memory unmapped");

    // QEMU restarts: a new connection, the whole setup again.
    let mut fe = lab.accept();
    fe.setup(FEATURES);
    eventually("up again", || port.is_up());
    fe.tx(&hdr12(&Offload::default()), &frame(60, 2));
    assert_eq!(port.recv(&mut bufs(4)), 1);
    assert_eq!(port.stats().connections, 2);
    assert_eq!(port.stats().protocol_errors, 0);

    // A front-end that refuses us is not hammered: the next try is a second later.
    fe.send(99, &[], &[]);
    assert!(fe.closed_by_port());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(port.stats().connections, 2, "no reconnection at once");
    lab.accept();
    assert_eq!(port.stats().connections, 3);
}

#[test]
fn rings_wait_for_enable_only_with_protocol_features() {
    // As QEMU does: SET_VRING_ENABLE (to disable) right after setting
    // protocol features, before SET_FEATURES.
    let lab = Lab::server();
    let (port, _ready, mut fe) = lab.start();
    fe.send(req::SET_PROTOCOL_FEATURES, &PROTOCOL_F_REPLY_ACK.to_ne_bytes(), &[]);
    fe.acked(req::SET_VRING_ENABLE, &state(0, 0), &[]);
    fe.send(req::SET_FEATURES, &(FEATURES & !F_PROTOCOL_FEATURES).to_ne_bytes(), &[]);
    fe.acked(req::SET_MEM_TABLE, &fe.mem_table(), &[fe.memfd.as_raw_fd()]);
    fe.start_ring(RX, 0);
    fe.start_ring(TX, 0);
    assert!(!port.is_up(), "started, not enabled");
    fe.acked(req::SET_VRING_ENABLE, &state(0, 1), &[]);
    fe.acked(req::SET_VRING_ENABLE, &state(1, 1), &[]);
    assert!(port.is_up());

    // Without protocol features, rings are enabled once started.
    drop(fe);
    eventually("down", || !port.is_up());
    let mut fe = lab.accept();
    fe.send(req::SET_FEATURES, &(FEATURES & !F_PROTOCOL_FEATURES).to_ne_bytes(), &[]);
    fe.send(req::SET_MEM_TABLE, &fe.mem_table(), &[fe.memfd.as_raw_fd()]);
    fe.send(req::SET_VRING_ENABLE, &state(0, 1), &[]);
    assert!(fe.closed_by_port(), "no SET_VRING_ENABLE without protocol features");
    let fe = lab.accept();
    fe.send(req::SET_FEATURES, &(FEATURES & !F_PROTOCOL_FEATURES).to_ne_bytes(), &[]);
    fe.send(req::SET_MEM_TABLE, &fe.mem_table(), &[fe.memfd.as_raw_fd()]);
    for q in 0..2 {
        fe.send(req::SET_VRING_NUM, &state(q as u32, QSIZE as u32), &[]);
        fe.send(req::SET_VRING_ADDR, &Frontend::ring_addr(q), &[]);
        fe.send(req::SET_VRING_KICK, &(q as u64).to_ne_bytes(), &[fe.kick[q].as_raw_fd()]);
    }
    eventually("up without SET_VRING_ENABLE", || port.is_up());
}

#[test]
fn the_client_keeps_trying_until_the_front_end_listens() {
    let lab = Lab::new();
    let path = lab.dir.join("later.sock");
    let spec = VhostUserSpec { name: "test1".into(), socket: path.clone(), mode: SocketMode::Client };
    let port = VhostUserPort::start(&spec, Arc::new(Ready::default())).unwrap();
    eventually("a failed attempt", || port.last_error().is_some());
    let l = UnixListener::bind(&path).unwrap();
    let (conn, _) = l.accept().unwrap(); // within the retry interval
    let mut fe = Frontend::new(conn);
    fe.setup(FEATURES);
    eventually("up", || port.is_up());
}

#[test]
fn as_a_server_it_serves_one_front_end_at_a_time_and_removes_its_socket() {
    let lab = Lab::new();
    let path = lab.dir.join("nvgred.sock");
    let spec = VhostUserSpec { name: "test2".into(), socket: path.clone(), mode: SocketMode::Server };
    let port = VhostUserPort::start(&spec, Arc::new(Ready::default())).unwrap();
    let mut fe = Frontend::new(UnixStream::connect(&path).unwrap());
    fe.setup(FEATURES);
    eventually("up", || port.is_up());
    let mut second = Frontend::new(UnixStream::connect(&path).unwrap());
    assert!(second.closed_by_port(), "a second front-end is turned away");
    assert!(port.is_up(), "the first is still served");
    // A second port cannot take over a live socket.
    assert!(VhostUserPort::start(&spec, Arc::new(Ready::default())).is_err());
    drop(fe);
    eventually("down", || !port.is_up());
    let mut again = Frontend::new(UnixStream::connect(&path).unwrap());
    again.setup(FEATURES);
    eventually("up again", || port.is_up());
    drop(port);
    assert!(!path.exists(), "the socket is removed");
    // A stale socket (nobody listening) is replaced; a file that is not a socket is not.
    drop(UnixListener::bind(&path).unwrap());
    drop(VhostUserPort::start(&spec, Arc::new(Ready::default())).unwrap());
    std::fs::write(&path, b"not a socket").unwrap();
    assert!(VhostUserPort::start(&spec, Arc::new(Ready::default())).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}

#[test]
fn get_vring_base_stops_the_ring_where_it_was() {
    let (_lab, port, ready, mut fe) = running(FEATURES);
    let h = hdr12(&Offload::default());
    for i in 0..3 {
        fe.tx(&h, &frame(60, i));
    }
    assert_eq!(port.recv(&mut bufs(8)), 3);
    fe.send(req::GET_VRING_BASE, &state(TX as u32, 0), &[]);
    assert_eq!(fe.reply(req::GET_VRING_BASE), state(TX as u32, 3));
    assert!(ready.current().is_none(), "nothing to wait on");
    assert!(!port.is_up());
    fe.tx(&h, &frame(60, 9));
    assert_eq!(port.recv(&mut bufs(8)), 0, "a stopped ring is not touched");
    fe.start_ring(TX, 3);
    assert!(ready.current().is_some());
    let mut bs = bufs(8);
    assert_eq!(port.recv(&mut bs), 1);
    assert_eq!(bs[0].frame(), &frame(60, 9)[..]);
}

#[test]
fn a_new_memory_table_replaces_the_old_one_while_running() {
    let (_lab, port, _ready, mut fe) = running(FEATURES);
    let h = hdr12(&Offload::default());
    fe.tx(&h, &frame(60, 1));
    // The same memory again, now from a second region layout: the old mapping goes.
    fe.acked(req::SET_MEM_TABLE, &fe.mem_table(), &[fe.memfd.as_raw_fd()]);
    assert_eq!(port.recv(&mut bufs(8)), 1);
    // A table that no longer holds the rings breaks them (counted), no crash.
    let mut small = fe.mem_table();
    small[16..24].copy_from_slice(&0x1000u64.to_ne_bytes());
    fe.acked(req::SET_MEM_TABLE, &small, &[fe.memfd.as_raw_fd()]);
    fe.tx(&h, &frame(60, 2));
    assert_eq!(port.recv(&mut bufs(8)), 0);
    assert_eq!(port.send(&PacketBuf::from_frame(&frame(60, 1))), Err(SendError::Down));
    assert_eq!(port.stats().broken_rings, 2);
}

/// Workers hammer the port while the front-end connects, sets up and goes
/// away over and over: memory is never unmapped under them.
#[test]
fn workers_survive_the_front_end_coming_and_going() {
    let lab = Lab::server();
    let ready = Arc::new(Ready::default());
    let port = Arc::new(VhostUserPort::start(&lab.spec(), ready).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (port, done) = (port.clone(), done.clone());
            std::thread::spawn(move || {
                let mut bs = bufs(16);
                let f = PacketBuf::from_frame(&frame(1500, 1));
                let mut got = 0;
                while !done.load(Relaxed) {
                    if w == 0 {
                        got += port.recv(&mut bs);
                    }
                    let _ = port.send(&f);
                    port.flush();
                }
                got
            })
        })
        .collect();
    let h = hdr12(&Offload::default());
    for round in 0..20u8 {
        let mut fe = lab.accept();
        fe.setup(FEATURES);
        fe.rx_buffers(64, 2048);
        for i in 0..64 {
            fe.tx(&h, &frame(100, i));
        }
        fe.kick(TX);
        let mut taken = 0;
        eventually("frames taken", || {
            taken += fe.used(TX).len();
            taken == 64 || round % 2 == 1
        });
        drop(fe); // sometimes mid-traffic
    }
    done.store(true, Relaxed);
    let received: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(received >= 640, "the even rounds' frames arrived ({received})");
}

/// QEMU, killed when dropped.
struct Qemu(std::process::Child);

impl Qemu {
    /// Debian 12's QEMU 7.2 under TCG (see machine-notes), listening for
    /// its vhost-user back-end on `sock`; no kernel: SeaBIOS hands over to
    /// the virtio-net option ROM (iPXE), which drives the device.
    fn start(sock: &Path, log: &Path) -> Qemu {
        let chardev = format!("socket,id=vu,path={},server=on,wait=off", sock.display());
        let child = std::process::Command::new("qemu-system-x86_64")
            .args(["-machine", "pc,accel=tcg,memory-backend=mem", "-m", "256M", "-nodefaults", "-display", "none"])
            .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
            .args(["-chardev", &chardev, "-netdev", "vhost-user,id=n0,chardev=vu"])
            .args(["-device", "virtio-net-pci,netdev=n0,vectors=0,mac=52:54:00:00:09:01,host_mtu=1458"])
            .args(["-boot", "n"])
            .stdin(std::process::Stdio::null())
            .stdout(File::create(log).unwrap())
            .stderr(File::create(log.with_extension("err")).unwrap())
            .spawn()
            .expect("qemu-system-x86_64 runs");
        Qemu(child)
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 9, 1];

/// The DHCP message type (option 53) and transaction ID of a DHCP frame
/// from the guest, if it is one.
fn dhcp_from_guest(f: &[u8]) -> Option<(u8, [u8; 4])> {
    // Ethernet, IPv4 without options, UDP to port 67, BOOTP, magic cookie.
    if f.len() < 282 || f[6..12] != GUEST_MAC || f[12..14] != [8, 0] || f[23] != 17 || f[36..38] != [0, 67] {
        return None;
    }
    let bootp = &f[42..];
    let xid = bootp[4..8].try_into().unwrap();
    let mut opts = &bootp[240..];
    while opts.len() >= 2 && opts[0] != 255 {
        if opts[0] == 53 {
            return Some((opts[2], xid));
        }
        opts = opts.get(2 + opts[1] as usize..)?;
    }
    None
}

/// A DHCP offer of 192.0.2.10 (TEST-NET-1: this never leaves the test) for transaction `xid`.
fn dhcp_offer(xid: [u8; 4]) -> Vec<u8> {
    use crate::dp::testkit::{ethernet, ipv4};
    use crate::wire::{EtherType, IpProtocol, MacAddr};
    let mut bootp = vec![0u8; 240];
    bootp[..4].copy_from_slice(&[2, 1, 6, 0]);
    bootp[4..8].copy_from_slice(&xid);
    bootp[16..20].copy_from_slice(&[192, 0, 2, 10]);
    bootp[28..34].copy_from_slice(&GUEST_MAC);
    bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
    bootp.extend_from_slice(&[53, 1, 2, 54, 4, 192, 0, 2, 1, 1, 4, 255, 255, 255, 0, 51, 4, 0, 0, 14, 16, 255]);
    let mut udp = vec![0, 67, 0, 68];
    udp.extend_from_slice(&((8 + bootp.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]); // no checksum
    udp.extend_from_slice(&bootp);
    let ip = ipv4("192.0.2.1", "255.255.255.255", IpProtocol::Udp, 64, 0, &udp);
    ethernet(MacAddr([0x52, 0x54, 0, 0, 0, 1]), MacAddr([0xff; 6]), EtherType::Ipv4, &ip)
}

#[test]
#[ignore = "needs qemu-system-x86_64 (Debian's qemu-system-x86): cargo test vhost_user::tests::qemu -- --ignored"]
fn qemu_drives_the_device_and_either_side_may_restart() {
    let lab = Lab::new();
    let sock = lab.dir.join("vm.sock");
    let log = lab.dir.join("qemu.log");
    let mut qemu = Qemu::start(&sock, &log);
    eventually("QEMU listens", || sock.exists());
    let spec = VhostUserSpec { name: "vm0".into(), socket: sock.clone(), mode: SocketMode::Client };
    let ready = Arc::new(Ready::default());
    let port = VhostUserPort::start(&spec, ready.clone()).unwrap();
    // Wait for a DHCP message of `kind` from the guest (its firmware's
    // iPXE), as a worker would: on the kick descriptor, then recv.
    let dhcp = |port: &VhostUserPort, kind: u8| -> [u8; 4] {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut bs = bufs(8);
        loop {
            assert!(Instant::now() < deadline, "no DHCP {kind} from the guest; {:?} {:?}", port.stats(), port.last_error());
            match ready.current() {
                Some(fd) => drop(msg::wait_readable(&[fd], Some(Duration::from_millis(100)))),
                None => std::thread::sleep(Duration::from_millis(100)),
            }
            let n = port.recv(&mut bs);
            if let Some((_, xid)) = bs[..n].iter().filter_map(|b| dhcp_from_guest(b.frame())).find(|d| d.0 == kind) {
                return xid;
            }
        }
    };
    const DISCOVER: u8 = 1;
    const REQUEST: u8 = 3;
    let xid = dhcp(&port, DISCOVER);
    assert!(port.is_up());
    assert_eq!(port.guest_mtu(), Some(1458), "QEMU's host_mtu");
    // Frames go the other way too: the guest takes our offer and requests it.
    port.send(&PacketBuf::from_frame(&dhcp_offer(xid))).unwrap();
    port.flush();
    assert_eq!(dhcp(&port, REQUEST), xid);

    // QEMU goes away: the port goes down at once, and reconnects to the next one.
    drop(qemu);
    eventually("down", || !port.is_up());
    assert!(port.shared.device().memory.is_none());
    qemu = Qemu::start(&sock, &log);
    dhcp(&port, DISCOVER);

    // The port goes away: QEMU takes the next one, which finds the rings as they were.
    drop(port);
    let port = VhostUserPort::start(&spec, ready.clone()).unwrap();
    let xid = dhcp(&port, DISCOVER);
    port.send(&PacketBuf::from_frame(&dhcp_offer(xid))).unwrap();
    port.flush();
    assert_eq!(dhcp(&port, REQUEST), xid);
    let s = port.stats();
    assert_eq!(s, Stats { connections: 1, ..Stats::default() });
    drop(qemu);
}

/// ns per frame through `recv` and `send` against the fake front-end, in
/// batches of 32 as a worker would take them: each `recv` batch ends on an
/// empty ring (so drains the kick and asks for the next), each `send` batch
/// ends with a `flush` that interrupts the guest (it asks for one every batch).
#[test]
#[ignore = "a measurement: cargo test --release vhost_user::tests::bench -- --ignored --nocapture"]
fn bench_recv_and_send_per_frame() {
    const BATCH: usize = 32;
    const ROUNDS: usize = 20_000;
    let (_lab, port, _ready, mut fe) = running(FEATURES);
    for len in [64usize, 1500] {
        let h = hdr12(&Offload::default());
        let f = frame(len, 1);
        let tx: Vec<u16> = (0..BATCH)
            .map(|_| {
                let a = fe.alloc(12 + len);
                assert!(fe.mem.write(a, &h) && fe.mem.write(a + 12, &f));
                fe.chain(TX, &[(a, (12 + len) as u32, 0)])
            })
            .collect();
        let rx: Vec<u16> = (0..BATCH)
            .map(|_| {
                let a = fe.alloc(2048);
                fe.chain(RX, &[(a, 2048, 2)])
            })
            .collect();
        let mut bs = bufs(2 * BATCH);
        let out = PacketBuf::from_frame(&f);
        let (_, rx_avail, _) = ring_gpa(RX);
        let used_event = rx_avail + 4 + 2 * QSIZE as u64;
        let (mut t_recv, mut t_send) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..ROUNDS {
            tx.iter().for_each(|&h| fe.make_avail(TX, h));
            let t = Instant::now();
            let n = port.recv(&mut bs);
            t_recv += t.elapsed();
            assert_eq!(n, BATCH);
            assert_eq!(fe.used(TX).len(), BATCH);

            rx.iter().for_each(|&h| fe.make_avail(RX, h));
            fe.set_u16(used_event, fe.used_seen[RX]);
            let t = Instant::now();
            for _ in 0..BATCH {
                port.send(&out).unwrap();
            }
            port.flush();
            t_send += t.elapsed();
            assert_eq!(fe.used(RX).len(), BATCH);
            assert_eq!(take_events(&fe.call[RX]), 1);
        }
        let per = |t: Duration| t.as_nanos() as f64 / (ROUNDS * BATCH) as f64;
        eprintln!("{len:>5}-byte frames: recv {:6.1} ns/frame, send {:6.1} ns/frame", per(t_recv), per(t_send));
    }
}
