//! The port against a fake front-end that speaks the protocol as QEMU does
//! (and a guest driver's side of the rings): guest memory is a memfd both
//! sides map; the fake writes descriptors and frames into it, kicks, and
//! reads what the port wrote back. Then the same with a front-end and a
//! guest that lie.

use super::memory::{GuestMemory, RegionDesc};
use super::msg::{req, HDR_LEN, PROTOCOL_F_MQ, PROTOCOL_F_REPLY_ACK};
use super::net::*;
use super::*;
use crate::dp::offload::{Gso, Offload};
use std::fs::File;
use std::io::{Read, Write};
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
fn eventually(what: &str, f: impl Fn() -> bool) {
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

/// A temporary directory with the socket QEMU would listen on.
struct Lab {
    dir: PathBuf,
    listener: UnixListener,
}

impl Lab {
    fn new() -> Lab {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!("nvgred-vhost-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join("qemu.sock")).unwrap();
        listener.set_nonblocking(true).unwrap();
        Lab { dir, listener }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("qemu.sock")
    }

    fn spec(&self) -> VhostUserSpec {
        VhostUserSpec { name: "test0".into(), socket: self.path(), mode: SocketMode::Client }
    }

    /// A port connecting here, and the connection it made.
    fn start(&self) -> (VhostUserPort, Arc<Ready>, Frontend) {
        let ready = Arc::new(Ready::default());
        let port = VhostUserPort::start(&self.spec(), ready.clone()).unwrap();
        let fe = self.accept();
        (port, ready, fe)
    }

    fn accept(&self) -> Frontend {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.listener.accept() {
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
        assert_eq!(pf, PROTOCOL_F_MQ | PROTOCOL_F_REPLY_ACK);
        self.send(req::SET_PROTOCOL_FEATURES, &pf.to_ne_bytes(), &[]);
        assert_eq!(self.get_u64(req::GET_QUEUE_NUM), 1);
        self.send(req::SET_OWNER, &[], &[]);
        self.send(req::SET_FEATURES, &features.to_ne_bytes(), &[]);
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

    /// Offer `n` receive buffers of `len` bytes; their addresses.
    fn rx_buffers(&mut self, n: usize, len: u32) -> Vec<u64> {
        (0..n)
            .map(|_| {
                let addr = self.alloc(len as usize);
                let head = self.chain(RX, &[(addr, len, 2)]);
                self.make_avail(RX, head);
                addr
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

