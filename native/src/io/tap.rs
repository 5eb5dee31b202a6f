//! TAP devices nvgred creates: one per VM network adapter of mode `tap`
//! (`IFF_TAP | IFF_NO_PI`).
//!
//! The TAP is the VM's NIC: its MAC is the adapter's, and with `netns` it is
//! created directly inside that namespace (a thread enters it, opens
//! `/dev/net/tun` and leaves), so the device never appears in ours. The
//! daemon holds the queue's descriptor; closing it removes the device.
//!
//! Offloads: every frame crosses with a virtio-net header (`IFF_VNET_HDR`),
//! and the TAP announces checksum and TSO offload, so the VM's stack hands
//! over TCP segments of up to 64 KB with checksums left to finish (see
//! `dp::offload`), and takes large segments back the same way.

use super::port::{vnet_frame, Device, Health, Registration};
use super::steering::Steering;
use super::sys::*;
use crate::dp::offload::VNET_HDR_LEN;
use crate::dp::{DropReason, PacketBuf};
use crate::wire::MacAddr;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub struct Tap {
    /// One queue per worker (`IFF_MULTI_QUEUE` when more than one): the
    /// steering program puts each flow the VM sends on one queue, so on one
    /// worker.
    queues: Vec<OwnedFd>,
    pub name: String,
    pub ifindex: u32,
    health: Health,
    /// Worker `i` waits on queue `i`.
    reg: Registration,
}

pub struct TapSpec<'a> {
    pub name: &'a str,
    pub netns: Option<&'a str>,
    pub mac: MacAddr,
    pub mtu: Option<u32>,
}

impl Tap {
    /// Create the TAP with a queue per worker of `reg`, steered by `steering`, and wait on them.
    pub fn create(spec: &TapSpec, reg: Registration, steering: Option<&Steering>) -> io::Result<Tap> {
        let tap = in_netns(spec.netns, || {
            let queues = reg.queues();
            let mut flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
            if queues > 1 {
                flags |= IFF_MULTI_QUEUE;
            }
            let queues = (0..queues.max(1)).map(|_| open_tap(spec.name, flags)).collect::<io::Result<Vec<OwnedFd>>>()?;
            if let Some(s) = steering {
                s.attach(&queues[0]).map_err(|e| annotate(e, &format!("steering the queues of TAP {}", spec.name)))?;
            }
            let name = spec.name.to_string();
            let ifindex = configure(&name, spec.mac, spec.mtu)?;
            Ok(Tap { queues, name, ifindex, health: Health::new(None), reg })
        })?;
        for q in 0..tap.reg.queues() {
            tap.reg.set(q, Some(tap.fd(q))).map_err(|e| annotate(e, &format!("waiting on TAP {}", tap.name)))?;
        }
        Ok(tap)
    }

    /// Worker `queue`'s descriptor.
    #[inline]
    fn fd(&self, queue: usize) -> RawFd {
        self.queues[queue % self.queues.len()].as_raw_fd()
    }
}

impl Device for Tap {
    fn name(&self) -> &str {
        &self.name
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// One read per frame (a TAP has no batch read); stops at an empty queue.
    fn recv(&self, queue: usize, bufs: &mut [PacketBuf]) -> io::Result<usize> {
        for (i, buf) in bufs.iter_mut().enumerate() {
            buf.reset();
            let spare = buf.spare_mut();
            // SAFETY: the kernel writes at most `spare.len()` bytes into `spare`.
            match cvt_size(unsafe { read(self.fd(queue), spare.as_mut_ptr().cast(), spare.len()) }) {
                Ok(n) => vnet_frame(buf, n),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return Ok(i),
                // Detached (deleted under us) or broken: it will not read again.
                Err(e) if i == 0 => return Err(e),
                Err(_) => return Ok(i),
            }
        }
        Ok(bufs.len())
    }

    /// Write one frame, preceded by the virtio-net header of its offload.
    fn send(&self, queue: usize, buf: &PacketBuf) -> Result<(), DropReason> {
        write_vnet_frame(self.fd(queue), buf).map_err(|_| DropReason::TxError)
    }

    fn failed(&self, queue: usize, e: io::Error) -> bool {
        let _ = self.reg.set(queue, None);
        self.health.down(format!("reading from {}: {e}", self.name))
    }

    fn is_up(&self) -> bool {
        self.health.is_up()
    }

    fn why_down(&self) -> Option<String> {
        self.health.error()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.reg.clear();
    }
}

/// Write `buf`'s frame to `fd` in one call, preceded by the virtio-net header of its offload.
pub fn write_vnet_frame(fd: RawFd, buf: &PacketBuf) -> io::Result<()> {
    let mut hdr = [0u8; VNET_HDR_LEN];
    buf.offload.emit(&mut hdr);
    let frame = buf.frame();
    let iov = [iovec { base: hdr.as_mut_ptr().cast(), len: hdr.len() }, iovec { base: frame.as_ptr() as *mut _, len: frame.len() }];
    // SAFETY: both iovecs point at live buffers of their lengths, which the kernel only reads.
    cvt_size(unsafe { writev(fd, iov.as_ptr(), 2) }).map(|_| ())
}

/// Open a queue of the TAP `name` (`flags`: IFF_TAP ...), with checksum and
/// TSO offloads: large TCP segments cross it whole, each way.
pub fn open_tap(name: &str, flags: i16) -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated path; a new descriptor or -1.
    let fd = owned(unsafe { open(c"/dev/net/tun".as_ptr(), O_RDWR | O_NONBLOCK | O_CLOEXEC) })?;
    let mut ifr = ifreq::new(name)?;
    ifr.set_i16(flags);
    // SAFETY: `ifr` is a live ifreq, as TUNSETIFF takes.
    cvt(unsafe { ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr) }).map_err(|e| annotate(e, &format!("creating TAP {name}")))?;
    let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    cvt(unsafe { ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, offloads) }).map_err(|e| annotate(e, &format!("enabling offloads on TAP {name}")))?;
    Ok(fd)
}

/// Set the MAC and MTU, bring the link up, return its ifindex. Runs in the
/// namespace where the device lives (the ioctl socket's namespace counts).
pub fn configure(name: &str, mac: MacAddr, mtu: Option<u32>) -> io::Result<u32> {
    let ctl = owned(unsafe { socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) })?;
    let ioc = |req, ifr: &mut ifreq, what: &str| {
        cvt(unsafe { ioctl(ctl.as_raw_fd(), req, ifr as *mut ifreq) })
            .map_err(|e| annotate(e, &format!("{what} on {name}")))
    };
    let mut ifr = ifreq::new(name)?;
    ifr.set_hwaddr(mac.as_bytes().try_into().unwrap());
    ioc(SIOCSIFHWADDR, &mut ifr, "setting the MAC")?;
    if let Some(mtu) = mtu {
        let mut ifr = ifreq::new(name)?;
        ifr.set_i32(mtu as i32);
        ioc(SIOCSIFMTU, &mut ifr, "setting the MTU")?;
    }
    let mut ifr = ifreq::new(name)?;
    ioc(SIOCGIFFLAGS, &mut ifr, "reading flags")?;
    let flags = ifr.get_i16() | IFF_UP;
    ifr.set_i16(flags);
    ioc(SIOCSIFFLAGS, &mut ifr, "bringing it up")?;
    let mut ifr = ifreq::new(name)?;
    ioc(SIOCGIFINDEX, &mut ifr, "reading the ifindex")?;
    Ok(ifr.get_i32() as u32)
}

/// Run `f` in the network namespace `netns` (a name under /run/netns or an
/// absolute path), on a thread of its own so no other thread changes namespace.
pub fn in_netns<T: Send>(netns: Option<&str>, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let Some(ns) = netns else { return f() };
    let path = if ns.starts_with('/') { ns.to_string() } else { format!("/run/netns/{ns}") };
    std::thread::scope(|s| {
        s.spawn(|| {
            let cpath = CString::new(path.clone()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let nsfd = owned(unsafe { open(cpath.as_ptr(), O_RDONLY | O_CLOEXEC) })
                .map_err(|e| annotate(e, &format!("opening network namespace {path}")))?;
            cvt(unsafe { setns(nsfd.as_raw_fd(), CLONE_NEWNET) })
                .map_err(|e| annotate(e, &format!("entering network namespace {path}")))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// Keep the errno's kind, add what we were doing.
pub fn annotate(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
