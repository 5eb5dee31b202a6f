//! vhost-user messages (QEMU's `docs/interop/vhost-user.rst`): a 12-byte
//! header (request, flags, payload size; native byte order), a payload, and
//! file descriptors in `SCM_RIGHTS` ancillary data. Framing and payload
//! decoding only; what a message does is the device's business.

use super::super::sys::*;
use super::memory::{GuestMemory, RegionDesc};
use super::virtq::RingAddrs;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Front-end requests (the subset a virtio-net front-end sends us).
pub mod req {
    pub const GET_FEATURES: u32 = 1;
    pub const SET_FEATURES: u32 = 2;
    pub const SET_OWNER: u32 = 3;
    pub const RESET_OWNER: u32 = 4;
    pub const SET_MEM_TABLE: u32 = 5;
    pub const SET_VRING_NUM: u32 = 8;
    pub const SET_VRING_ADDR: u32 = 9;
    pub const SET_VRING_BASE: u32 = 10;
    pub const GET_VRING_BASE: u32 = 11;
    pub const SET_VRING_KICK: u32 = 12;
    pub const SET_VRING_CALL: u32 = 13;
    pub const SET_VRING_ERR: u32 = 14;
    pub const GET_PROTOCOL_FEATURES: u32 = 15;
    pub const SET_PROTOCOL_FEATURES: u32 = 16;
    pub const GET_QUEUE_NUM: u32 = 17;
    pub const SET_VRING_ENABLE: u32 = 18;
    pub const NET_SET_MTU: u32 = 20;
}

/// Protocol features (`VHOST_USER_PROTOCOL_F_*`).
pub const PROTOCOL_F_MQ: u64 = 1 << 0;
pub const PROTOCOL_F_REPLY_ACK: u64 = 1 << 3;
pub const PROTOCOL_F_NET_MTU: u64 = 1 << 4;

pub const HDR_LEN: usize = 12;
const VERSION: u32 = 0x1;
const VERSION_MASK: u32 = 0x3;
const FLAG_REPLY: u32 = 1 << 2;
const FLAG_NEED_REPLY: u32 = 1 << 3;
/// Larger than any payload we accept (a full memory table is 264 bytes).
pub const MAX_PAYLOAD: usize = 4096;
/// The most descriptors one message carries (a memory table's).
pub const MAX_FDS: usize = GuestMemory::MAX_REGIONS;
/// `SET_VRING_KICK`/`CALL`/`ERR`: the queue index and "no descriptor".
const VRING_IDX_MASK: u64 = 0xff;
const VRING_NOFD: u64 = 1 << 8;
/// A message must arrive whole within this once its first byte has.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Message {
    pub request: u32,
    flags: u32,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// `SET_VRING_KICK`/`CALL`/`ERR`: a queue and its eventfd (None: the front-end polls).
pub struct VringFd {
    pub index: u32,
    pub fd: Option<OwnedFd>,
}

impl Message {
    pub fn need_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }

    /// The payload's first `N` bytes.
    fn bytes<const N: usize>(&self) -> Result<[u8; N], String> {
        self.payload.get(..N).and_then(|b| b.try_into().ok()).ok_or_else(|| {
            format!("request {}: payload of {} bytes, {N} expected", self.request, self.payload.len())
        })
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_ne_bytes(self.payload[at..at + 8].try_into().unwrap())
    }

    pub fn u64(&self) -> Result<u64, String> {
        self.bytes::<8>().map(u64::from_ne_bytes)
    }

    /// A vring state: (index, num).
    pub fn state(&self) -> Result<(u32, u32), String> {
        let b = self.bytes::<8>()?;
        Ok((u32::from_ne_bytes(b[..4].try_into().unwrap()), u32::from_ne_bytes(b[4..].try_into().unwrap())))
    }

    /// A vring address: (index, addresses). The flags and the log address
    /// are for dirty logging, which we do not offer.
    pub fn addr(&self) -> Result<(u32, RingAddrs), String> {
        self.bytes::<40>()?;
        let index = u32::from_ne_bytes(self.payload[..4].try_into().unwrap());
        Ok((index, RingAddrs { desc: self.u64_at(8), used: self.u64_at(16), avail: self.u64_at(24) }))
    }

    /// A memory table: its regions, one descriptor each.
    pub fn memory(&self) -> Result<Vec<RegionDesc>, String> {
        let n = u32::from_ne_bytes(self.bytes::<8>()?[..4].try_into().unwrap()) as usize;
        if n == 0 || n > GuestMemory::MAX_REGIONS || self.payload.len() < 8 + 32 * n {
            return Err(format!("memory table of {n} regions in {} bytes", self.payload.len()));
        }
        Ok((0..n)
            .map(|i| {
                let at = 8 + 32 * i;
                RegionDesc {
                    guest_addr: self.u64_at(at),
                    size: self.u64_at(at + 8),
                    user_addr: self.u64_at(at + 16),
                    mmap_offset: self.u64_at(at + 24),
                }
            })
            .collect())
    }

    /// The payload and descriptor of `SET_VRING_KICK`/`CALL`/`ERR`: a
    /// descriptor unless the "no descriptor" bit says so, nothing else set.
    pub fn vring_fd(&mut self) -> Result<VringFd, String> {
        let v = self.u64()?;
        let nofd = v & VRING_NOFD != 0;
        if v & !(VRING_IDX_MASK | VRING_NOFD) != 0 || self.fds.len() != usize::from(!nofd) {
            return Err(format!("request {}: payload {v:#x} with {} descriptors", self.request, self.fds.len()));
        }
        Ok(VringFd { index: (v & VRING_IDX_MASK) as u32, fd: self.fds.pop() })
    }
}

/// A reply to `request` carrying `payload`.
pub fn reply(request: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HDR_LEN + payload.len());
    m.extend_from_slice(&request.to_ne_bytes());
    m.extend_from_slice(&(VERSION | FLAG_REPLY).to_ne_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

/// A vring state as a payload.
pub fn state_payload(index: u32, num: u32) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&index.to_ne_bytes());
    p[4..].copy_from_slice(&num.to_ne_bytes());
    p
}

/// Read one message from the non-blocking socket `fd`, which has data.
/// `Ok(None)` when the front-end has closed the connection; an error for a
/// malformed message, one that stops arriving, or `stop` becoming readable.
pub fn read_message(fd: RawFd, stop: RawFd) -> Result<Option<Message>, String> {
    let deadline = Instant::now() + MESSAGE_TIMEOUT;
    let mut fds = Vec::new();
    let mut hdr = [0u8; HDR_LEN];
    if !read_full(fd, stop, &mut hdr, &mut fds, deadline)? {
        return Ok(None);
    }
    let word = |i: usize| u32::from_ne_bytes(hdr[i..i + 4].try_into().unwrap());
    let (request, flags, size) = (word(0), word(4), word(8) as usize);
    if flags & VERSION_MASK != VERSION || flags & FLAG_REPLY != 0 {
        return Err(format!("request {request}: flags {flags:#x} (version 1, no reply bit expected)"));
    }
    if size > MAX_PAYLOAD {
        return Err(format!("request {request}: payload of {size} bytes"));
    }
    let mut payload = vec![0u8; size];
    if !read_full(fd, stop, &mut payload, &mut fds, deadline)? {
        return Err(format!("request {request}: connection closed within the message"));
    }
    Ok(Some(Message { request, flags, payload, fds }))
}

/// Fill `buf` from the socket, collecting descriptors; false if the peer
/// closed the connection before the first byte.
fn read_full(fd: RawFd, stop: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>, deadline: Instant) -> Result<bool, String> {
    let mut got = 0;
    while got < buf.len() {
        match recv_with_fds(fd, &mut buf[got..], fds) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err("connection closed within a message".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err("message incomplete after 1 s".into());
                }
                if wait_readable(&[fd, stop], Some(left)) == Some(1) {
                    return Err("stopping".into());
                }
            }
            Err(e) => return Err(format!("reading the socket: {e}")),
        }
    }
    Ok(true)
}

/// One `recvmsg`: bytes into `buf`, descriptors appended to `fds` (each
/// owned at once, so closed on any error path). Too many descriptors for
/// the room we give (the kernel closes the rest) is an error.
fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> std::io::Result<usize> {
    const SPACE: usize = cmsg_space(MAX_FDS * 4);
    let mut control = [0u64; SPACE / 8];
    let mut iov = iovec { base: buf.as_mut_ptr().cast(), len: buf.len() };
    let mut mh = msghdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: control.as_mut_ptr().cast(),
        controllen: SPACE,
        flags: 0,
    };
    // SAFETY: every pointer in `mh` is to a live local of the stated length.
    let n = cvt_size(unsafe { recvmsg(fd, &mut mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) })?;
    // SAFETY: the kernel wrote `controllen` bytes of `control`; viewing
    // initialised u64s as bytes is sound.
    let control = unsafe { std::slice::from_raw_parts(control.as_ptr().cast::<u8>(), mh.controllen.min(SPACE)) };
    let mut at = 0;
    let hlen = std::mem::size_of::<cmsghdr>();
    while at + hlen <= control.len() {
        let len = usize::from_ne_bytes(control[at..at + 8].try_into().unwrap());
        let level = i32::from_ne_bytes(control[at + 8..at + 12].try_into().unwrap());
        let ty = i32::from_ne_bytes(control[at + 12..at + 16].try_into().unwrap());
        if len < hlen || at + len > control.len() {
            break;
        }
        if level == SOL_SOCKET && ty == SCM_RIGHTS {
            for c in control[at + cmsg_align(hlen)..at + len].chunks_exact(4) {
                let raw = i32::from_ne_bytes(c.try_into().unwrap());
                // SAFETY: SCM_RIGHTS just installed this descriptor in our
                // table for us; nothing else refers to it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        at += cmsg_align(len);
    }
    if mh.flags & MSG_CTRUNC != 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "more descriptors than a message carries"));
    }
    Ok(n)
}

/// Send a whole message without blocking (replies are a few bytes: a full
/// socket buffer means the front-end stopped reading).
pub fn send_message(fd: RawFd, bytes: &[u8]) -> Result<(), String> {
    // SAFETY: `bytes` is live for the call; no address.
    let n = unsafe { sendto(fd, bytes.as_ptr().cast(), bytes.len(), MSG_NOSIGNAL | MSG_DONTWAIT, std::ptr::null(), 0) };
    match cvt_size(n) {
        Ok(n) if n == bytes.len() => Ok(()),
        Ok(n) => Err(format!("reply cut short ({n} of {} bytes)", bytes.len())),
        Err(e) => Err(format!("replying: {e}")),
    }
}

/// Wait until one of `fds` is readable (or hung up); its position, or None
/// on timeout.
pub fn wait_readable(fds: &[RawFd], timeout: Option<Duration>) -> Option<usize> {
    let mut p: Vec<pollfd> = fds.iter().map(|&fd| pollfd { fd, events: POLLIN, revents: 0 }).collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
    // SAFETY: `p` is a live array of `p.len()` pollfds.
    let r = unsafe { poll(p.as_mut_ptr(), p.len() as _, ms) };
    if r <= 0 {
        return None;
    }
    p.iter().position(|x| x.revents & (POLLIN | POLLHUP | POLLERR) != 0)
}
