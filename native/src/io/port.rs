//! The seam between the workers and a VM adapter's device, whatever its
//! kind: a TAP nvgred creates (`tap`), an interface that exists already
//! (a QEMU or libvirt tap, a veth end) adopted through packet sockets
//! (`attach`), a vhost-user virtio-net device (`vhost_user`). The workers
//! drive every kind through [`Device`] and never ask which kind they hold;
//! the decision core sees frames, not devices.
//!
//! A device tells the workers what to wait on through its [`Registration`]:
//! a TAP's queues are there from the start; an attached interface's sockets
//! come and go with the interface; a vhost-user guest's kick eventfd arrives
//! with its driver.

use super::sys::Epoll;
use crate::dp::offload::{Gso, Offload, VNET_HDR_LEN};
use crate::dp::{DropReason, PacketBuf};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A VM adapter's device, as the workers drive it. Worker `queue` reads
/// the frames of its queue (a flow's frames arrive on one queue); any
/// worker may write.
pub trait Device: Send + Sync {
    /// The interface's name (for logs).
    fn name(&self) -> &str;
    /// Its ifindex, or 0 when it has none (vhost-user) or none now.
    fn ifindex(&self) -> u32;
    /// Read up to `bufs.len()` frames from the VM on `queue`, each with its
    /// virtio-net header in `offload`; 0 when there are none. An error is
    /// the device's: the worker reports it with [`Device::failed`].
    fn recv(&self, queue: usize, bufs: &mut [PacketBuf]) -> io::Result<usize>;
    /// Write one frame to the VM.
    fn send(&self, queue: usize, buf: &PacketBuf) -> Result<(), DropReason>;
    /// The writes of a batch are done (vhost-user: one interrupt for all).
    fn flush(&self, _queue: usize) {}
    /// Whether the VM takes large TCP segments of this kind (else they are cut first).
    fn takes(&self, _gso: Gso) -> bool {
        true
    }
    /// The worker of `queue` could not read: stop waiting on it, and say
    /// why; true if this took the device down.
    fn failed(&self, queue: usize, e: io::Error) -> bool;
    /// The device works: frames can go to the VM.
    fn is_up(&self) -> bool;
    /// Why it does not (None while it does).
    fn why_down(&self) -> Option<String>;
    /// The kernel announced a change of some link (devices that follow their interface act on it).
    fn link_changed(&self, _ev: &super::netlink::LinkEvent) {}
    /// The MTU the VM was told, when the device tells it one (vhost-user's host_mtu).
    fn mtu(&self) -> Option<u32> {
        None
    }
    /// Frames from the VM the device itself dropped since it was added (a
    /// guest that broke its rings), by reason.
    fn drops(&self, _add: &mut dyn FnMut(DropReason, u64)) {}
}

/// Whether a device works, and if not, why.
pub struct Health {
    down: AtomicBool,
    why: Mutex<Option<String>>,
}

impl Health {
    /// Up, or down until [`Health::up`] with `why`.
    pub fn new(why_down: Option<String>) -> Health {
        Health { down: AtomicBool::new(why_down.is_some()), why: Mutex::new(why_down) }
    }

    /// The device does not work, for this reason (the latest one wins); true if it was up.
    pub fn down(&self, why: String) -> bool {
        let mut w = self.why.lock().unwrap_or_else(|p| p.into_inner());
        *w = Some(why);
        !self.down.swap(true, Ordering::AcqRel)
    }

    pub fn up(&self) {
        let mut w = self.why.lock().unwrap_or_else(|p| p.into_inner());
        *w = None;
        self.down.store(false, Ordering::Release);
    }

    #[inline]
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    /// Why the device is down (None while it is up).
    pub fn error(&self) -> Option<String> {
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Where a device's descriptors are waited on: worker `i`'s epoll set for
/// queue `i`, under the port's token. Set by whoever learns the descriptor
/// changed (the control thread, the rtnetlink thread, a vhost-user
/// connection's thread); epoll sets take changes from any thread.
pub struct Registration {
    token: u64,
    epolls: Vec<Arc<Epoll>>,
    current: Mutex<Vec<Option<RawFd>>>,
}

impl Registration {
    pub fn new(token: u64, epolls: Vec<Arc<Epoll>>) -> Registration {
        let current = Mutex::new(vec![None; epolls.len()]);
        Registration { token, epolls, current }
    }

    /// Queues (= workers).
    pub fn queues(&self) -> usize {
        self.epolls.len()
    }

    /// Worker `queue` waits on `fd` now (None: on nothing). The descriptor
    /// must stay open until it is replaced here.
    pub fn set(&self, queue: usize, fd: Option<RawFd>) -> io::Result<()> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = cur.get_mut(queue) else { return Ok(()) };
        if *slot == fd {
            return Ok(());
        }
        if let Some(old) = slot.take() {
            self.epolls[queue].delete(old);
        }
        if let Some(new) = fd {
            self.epolls[queue].add(new, self.token)?;
            *slot = Some(new);
        }
        Ok(())
    }

    /// Wait on nothing any more (the device is going).
    pub fn clear(&self) {
        for q in 0..self.queues() {
            let _ = self.set(q, None);
        }
    }
}

/// Take the frame that a read of `n` bytes put in `buf` (its virtio-net
/// header first); a read shorter than the header is an empty frame, which
/// the core drops as truncated.
pub fn vnet_frame(buf: &mut PacketBuf, n: usize) {
    if n < VNET_HDR_LEN {
        buf.set_len(0);
        return;
    }
    buf.set_len(n);
    buf.offload = Offload::parse(&buf.frame()[..VNET_HDR_LEN]);
    buf.narrow(VNET_HDR_LEN, n - VNET_HDR_LEN);
}
