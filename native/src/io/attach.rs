//! VM adapters of mode `attach`: an interface that exists already (the tap
//! QEMU or libvirt made for a VM, a veth end), adopted by name. nvgred reads
//! and writes its kernel side through packet sockets, as Open vSwitch's
//! userspace datapath does with "system" ports:
//! - `PACKET_VNET_HDR`: every frame crosses with a virtio-net header, so the
//!   guest's TSO and checksum offload keep working both ways;
//! - `recvmmsg`: a batch of frames per system call;
//! - `PACKET_QDISC_BYPASS`: frames to the VM skip the qdisc layer;
//! - `PACKET_IGNORE_OUTGOING`: the frames nvgred writes are not read back;
//! - with several workers, one socket per worker in a fanout group steered
//!   by the TAPs' steering program (`io::steering`): a flow stays on one
//!   worker both ways, as for a created TAP.
//!
//! The interface comes and goes with its VM: absent, the adapter is down
//! ("waiting for the interface"); when it appears nvgred sets it up (quietly:
//! no ARP answers, no IPv6 link-local address, so the VM cannot reach the
//! host's own stack through it) and opens its sockets; when it goes (the VM
//! stopped) the adapter is down again. nvgred never deletes it.

use super::netlink::{self, LinkEvent};
use super::packet;
use super::port::{vnet_frame, Device, Health, Registration};
use super::steering::Steering;
use super::sys::*;
use super::tap::{annotate, write_vnet_frame};
use crate::dp::{DropReason, PacketBuf};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct AttachSpec<'a> {
    pub name: &'a str,
    pub mtu: Option<u32>,
    /// The fanout group of the port's sockets (unique per port in the namespace).
    pub group: u16,
}

/// The interface while it is there: its index and one socket per worker.
struct Link {
    ifindex: u32,
    sockets: Vec<Arc<OwnedFd>>,
}

pub struct Attached {
    name: String,
    mtu: Option<u32>,
    group: u16,
    steering: Option<Arc<Steering>>,
    health: Health,
    reg: Registration,
    link: Mutex<Option<Link>>,
    /// Frames from the VM the kernel dropped before a worker read them, over every socket this adapter had.
    overruns: AtomicU64,
}

impl Attached {
    /// Adopt `spec.name` now if it exists (setting it up), else wait for it.
    pub fn new(spec: &AttachSpec, reg: Registration, steering: Option<Arc<Steering>>) -> Attached {
        let a = Attached {
            name: spec.name.to_string(),
            mtu: spec.mtu,
            group: spec.group,
            steering,
            health: Health::new(Some(waiting(spec.name))),
            reg,
            link: Mutex::new(None),
            overruns: AtomicU64::new(0),
        };
        if let Ok(ifindex) = netlink::ifindex(&a.name) {
            // It may be down (QEMU makes its TAP down, and no announcement
            // follows): up first, or its sockets would be bound failed (ENETDOWN).
            match a.bring_up(ifindex) {
                Ok(()) => a.adopt(ifindex, None),
                Err(e) => a.detach(format!("setting {} up: {e}", a.name)),
            }
        }
        a
    }

    /// The kernel announced a change of some link: if it is ours, follow it.
    fn follow(&self, ev: &LinkEvent) {
        if ev.name != self.name {
            // Renamed away from our name: it is not ours any more.
            if self.current() == Some(ev.ifindex) {
                self.detach(format!("{} was renamed {}", self.name, ev.name));
            }
            return;
        }
        if ev.removed {
            self.detach(waiting(&self.name));
        } else {
            self.adopt(ev.ifindex, Some(ev));
        }
    }

    fn current(&self) -> Option<u32> {
        self.link.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|l| l.ifindex)
    }

    /// Set the interface up if it is not, and open its sockets once it
    /// has a carrier (a tap whose VM holds it).
    fn adopt(&self, ifindex: u32, ev: Option<&LinkEvent>) {
        if let Some(ev) = ev {
            if !ev.admin_up {
                if let Err(e) = self.bring_up(ifindex) {
                    self.detach(format!("setting {} up: {e}", self.name));
                }
                return; // its carrier comes with the next announcement
            }
            if !ev.carrier {
                self.detach(format!("{} has no carrier (its VM is not running)", self.name));
                return;
            }
        }
        if self.current() == Some(ifindex) {
            return;
        }
        match self.open(ifindex) {
            Ok(()) => self.health.up(),
            Err(e) => self.detach(format!("attaching to {}: {e}", self.name)),
        }
    }

    fn bring_up(&self, ifindex: u32) -> io::Result<()> {
        if let Some(mtu) = self.mtu {
            netlink::set_mtu(ifindex, mtu)?;
        }
        netlink::set_link_quiet_up(ifindex)
    }

    /// Open one socket per worker on `ifindex` and wait on them.
    fn open(&self, ifindex: u32) -> io::Result<()> {
        let queues = self.reg.queues();
        let sockets = (0..queues).map(|_| packet::open(ifindex, |_| Ok(()))).collect::<io::Result<Vec<_>>>()?;
        if queues > 1 {
            for s in &sockets {
                join_fanout(s, self.group, self.steering.as_deref())?;
            }
        }
        let sockets: Vec<Arc<OwnedFd>> = sockets.into_iter().map(Arc::new).collect();
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        for (q, s) in sockets.iter().enumerate() {
            self.reg.set(q, Some(s.as_raw_fd()))?;
        }
        *link = Some(Link { ifindex, sockets });
        Ok(())
    }

    /// Stop reading the interface (gone, down, or failing): the adapter is down.
    fn detach(&self, why: String) {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        self.reg.clear();
        if let Some(l) = link.as_ref() {
            self.count_overruns(l);
        }
        *link = None; // workers in a batch hold their own reference to its socket
        self.health.down(why);
    }

    /// Move the kernel's drop counts of `link`'s sockets into `overruns`.
    fn count_overruns(&self, link: &Link) {
        let n: u64 = link.sockets.iter().filter_map(|s| packet::take_drops(s).ok()).map(u64::from).sum();
        self.overruns.fetch_add(n, Ordering::Relaxed);
    }

    fn socket(&self, queue: usize) -> Option<Arc<OwnedFd>> {
        let link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        link.as_ref().and_then(|l| l.sockets.get(queue % l.sockets.len()).cloned())
    }
}

fn waiting(name: &str) -> String {
    format!("waiting for the interface {name} (its VM is not running)")
}

impl Device for Attached {
    fn name(&self) -> &str {
        &self.name
    }

    fn ifindex(&self) -> u32 {
        self.current().unwrap_or(0)
    }

    fn recv(&self, queue: usize, bufs: &mut [PacketBuf]) -> io::Result<usize> {
        let Some(sock) = self.socket(queue) else { return Ok(0) };
        let mut iovs = spare_iovecs(bufs);
        let mut msgs: Vec<mmsghdr> = iovs.iter_mut().map(|iov| mmsg(iov, None)).collect();
        // SAFETY: every message's iovec points at its buffer's spare room, which outlives the call.
        let got = unsafe { recvmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, MSG_DONTWAIT, std::ptr::null_mut()) };
        match cvt(got) {
            Ok(n) => {
                for (b, m) in bufs.iter_mut().zip(&msgs).take(n as usize) {
                    vnet_frame(b, m.len as usize);
                }
                Ok(n as usize)
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn send(&self, queue: usize, buf: &PacketBuf) -> Result<(), DropReason> {
        let sock = self.socket(queue).ok_or(DropReason::AdapterDown)?;
        write_vnet_frame(sock.as_raw_fd(), buf).map_err(|_| DropReason::TxError)
    }

    fn failed(&self, _queue: usize, e: io::Error) -> bool {
        let up = self.health.is_up();
        self.detach(format!("reading from {}: {e}", self.name));
        up
    }

    fn is_up(&self) -> bool {
        self.health.is_up()
    }

    fn why_down(&self) -> Option<String> {
        self.health.error()
    }

    fn link_changed(&self, ev: &LinkEvent) {
        self.follow(ev)
    }

    fn drops(&self, add: &mut dyn FnMut(DropReason, u64)) {
        if let Some(l) = self.link.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            self.count_overruns(l);
        }
        add(DropReason::RxOverrun, self.overruns.load(Ordering::Relaxed));
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.reg.clear();
    }
}

const PACKET_FANOUT_HASH: u32 = 0;
const PACKET_FANOUT_EBPF: u32 = 7;

/// Join the port's fanout group: frames spread over its sockets by the
/// steering program (a flow's FlowID picks the worker), or by the kernel's
/// flow hash without it.
fn join_fanout(fd: &OwnedFd, group: u16, steering: Option<&Steering>) -> io::Result<()> {
    let mode = if steering.is_some() { PACKET_FANOUT_EBPF } else { PACKET_FANOUT_HASH };
    packet::set(fd, packet::PACKET_FANOUT, (group as u32 | mode << 16) as i32).map_err(|e| annotate(e, "joining a fanout group"))?;
    if let Some(s) = steering {
        packet::set(fd, packet::PACKET_FANOUT_DATA, s.fd()).map_err(|e| annotate(e, "steering a fanout group"))?;
    }
    Ok(())
}
