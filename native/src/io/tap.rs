//! TAP devices: one per VM network adapter (`IFF_TAP | IFF_NO_PI`).
//!
//! The TAP is the VM's NIC: its MAC is the adapter's, and with `netns` it is
//! created directly inside that namespace (a thread enters it, opens
//! `/dev/net/tun` and leaves), so the device never appears in ours. The
//! daemon holds the queue's descriptor; closing it removes the device.

use super::sys::*;
use crate::wire::MacAddr;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub struct Tap {
    fd: OwnedFd,
    pub name: String,
    pub ifindex: u32,
}

pub struct TapSpec<'a> {
    pub name: &'a str,
    pub netns: Option<&'a str>,
    pub mac: MacAddr,
    pub mtu: Option<u32>,
}

impl Tap {
    pub fn create(spec: &TapSpec) -> io::Result<Tap> {
        in_netns(spec.netns, || {
            let fd = owned(unsafe { open(c"/dev/net/tun".as_ptr(), O_RDWR | O_NONBLOCK | O_CLOEXEC) })?;
            let mut ifr = ifreq::new(spec.name)?;
            ifr.set_i16(IFF_TAP | IFF_NO_PI);
            cvt(unsafe { ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr) })
                .map_err(|e| annotate(e, &format!("creating TAP {}", spec.name)))?;
            let name = spec.name.to_string();
            let ifindex = configure(&name, spec.mac, spec.mtu)?;
            Ok(Tap { fd, name, ifindex })
        })
    }

    #[inline]
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Read one frame; `Ok(None)` when the queue is empty.
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match cvt_size(unsafe { read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) }) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[inline]
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        cvt_size(unsafe { write(self.fd(), frame.as_ptr().cast(), frame.len()) }).map(|_| ())
    }
}

/// Set the MAC and MTU, bring the link up, return its ifindex. Runs in the
/// namespace where the device lives (the ioctl socket's namespace counts).
fn configure(name: &str, mac: MacAddr, mtu: Option<u32>) -> io::Result<u32> {
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
