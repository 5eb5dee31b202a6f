//! vhost-user: a VM's virtio-net device served from here. QEMU (the
//! front-end) shares the guest's memory and the two rings over a Unix
//! socket (`msg`, `control`); the workers then move frames straight between
//! the guest's buffers and theirs (`virtq`), with the virtio-net header
//! read into / written from an [`Offload`](crate::dp::offload::Offload) (`net`).
//!
//! The guest is untrusted input: its memory is touched only through
//! checked copies (`memory`); a bad descriptor or header drops that frame, a
//! ring whose indices lie stops that ring; each is counted in [`Stats`].
//!
//! The control thread and the workers share the device under a read-write
//! lock: a worker holds it for reading across one batch (`recv`, or one
//! `send`), the control thread for writing while it changes the device. So
//! when the connection drops or the front-end replaces the memory table, no
//! worker is inside the old mapping when it is unmapped.

mod control;
mod memory;
mod msg;
mod net;
mod virtq;
#[cfg(test)]
mod tests;

use super::sys::*;
use crate::dp::offload::VNET_HDR_LEN;
use crate::dp::PacketBuf;
use memory::GuestMemory;
use net::{header_len, F_MRG_RXBUF, HDR_LEN_MRG};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use virtq::{Broken, Cursor, Fault, PushError, Ring, RingAddrs, Stream};

pub use net::GuestOffloads;

/// Tells the worker that owns a port which descriptor to wait on for
/// frames from the VM: the guest's transmit queue's kick eventfd once the
/// ring starts, None when it stops. The descriptor stays open until the
/// next call has returned.
pub trait Readiness: Send + Sync {
    fn set(&self, fd: Option<RawFd>);
}

/// Who listens on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketMode {
    /// QEMU listens (`server=on`); we connect, and reconnect while it is away.
    Client,
    /// We listen; one front-end at a time.
    Server,
}

/// A vhost-user port. (No MAC: the guest's comes from QEMU's `-device
/// virtio-net-pci,mac=`, and QEMU answers the driver's questions about it.)
#[derive(Debug, Clone)]
pub struct VhostUserSpec {
    /// The adapter's name (names the control thread).
    pub name: String,
    pub socket: PathBuf,
    pub mode: SocketMode,
}

/// Why a frame did not go into the guest's receive ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No guest (driver not started, ring disabled or broken, not connected).
    Down,
    /// The guest has no receive buffers free.
    NoBuffers,
    /// Larger than the guest's buffers (without mergeable buffers).
    TooLarge,
    /// A large segment the guest did not negotiate (see `guest_offloads`).
    Offload,
    /// The guest's buffers were bad (counted in `Stats::bad_descriptors`).
    GuestFault,
}

macro_rules! stats {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// What the port dropped or refused and why, and connections made
        /// (counts since the port started).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        #[derive(Default)]
        struct Counters {
            $($name: AtomicU64,)*
        }

        impl Counters {
            fn snapshot(&self) -> Stats {
                Stats { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

stats! {
    /// Chains given up for a descriptor outside guest memory, pointing the
    /// wrong way, with a `next` beyond its table, or a bad indirect table.
    bad_descriptors,
    /// Chains longer than their table: a loop.
    looping_chains,
    /// Rings stopped because their indices lied (the available index ran
    /// more than a queue ahead, a head beyond the table) or they left guest memory.
    broken_rings,
    /// Frames from the guest whose virtio-net header lied (or was cut short).
    bad_headers,
    /// Frames from the guest larger than the buffer they were read into.
    oversized,
    /// Frames from the guest discarded while its transmit ring was disabled.
    discarded,
    /// Frames for the guest while its receive ring was not running.
    rx_down,
    /// Frames for the guest without a free receive buffer.
    rx_no_buffers,
    /// Frames for the guest larger than its buffers.
    rx_too_large,
    /// Large segments for a guest that did not negotiate them.
    rx_offload,
    /// Connections closed over a malformed message or descriptor.
    protocol_errors,
    /// Connections made (client) or accepted (server).
    connections,
}

/// Queue 0 carries frames to the guest, queue 1 frames from it.
const RX: usize = 0;
const TX: usize = 1;

/// One queue as the front-end set it up.
#[derive(Default)]
struct Queue {
    size: u16,
    /// Where a starting ring takes its first entry (`SET_VRING_BASE`).
    base: u16,
    addrs: Option<RingAddrs>,
    kick: Option<OwnedFd>,
    call: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// Between its kick descriptor and `GET_VRING_BASE`.
    started: bool,
    enabled: bool,
    /// Set by the data path when the ring lies; cleared when it restarts.
    broken: AtomicBool,
    cursor: Mutex<Cursor>,
}

impl Queue {
    fn running(&self) -> bool {
        self.started && self.enabled && !self.broken.load(Relaxed)
    }

    /// The ring as it lies in `mem` now (None: stopped, or not in memory).
    fn ring<'m>(&self, mem: Option<&'m GuestMemory>, features: u64) -> Option<Ring<'m>> {
        Ring::new(mem?, self.size, self.addrs.as_ref()?, features)
    }
}

#[derive(Default)]
struct Device {
    /// Acknowledged by the front-end (`SET_FEATURES`).
    features: u64,
    /// Set by `SET_PROTOCOL_FEATURES`.
    protocol_features: Option<u64>,
    /// The MTU announced to the guest (`NET_SET_MTU`).
    mtu: Option<u16>,
    memory: Option<GuestMemory>,
    queues: [Queue; 2],
}

impl Device {
    /// Protocol features in use: rings then start disabled until
    /// `SET_VRING_ENABLE`. QEMU sets protocol features without always
    /// acknowledging the feature bit that announced them.
    fn protocol_negotiated(&self) -> bool {
        self.protocol_features.is_some() || self.features & net::F_PROTOCOL_FEATURES != 0
    }

    fn up(&self) -> bool {
        self.memory.is_some() && self.queues.iter().all(Queue::running)
    }
}

struct Shared {
    name: String,
    device: RwLock<Device>,
    up: AtomicBool,
    counters: Counters,
    last_error: Mutex<Option<String>>,
    /// Readable when the port is dropped.
    stop: OwnedFd,
}

/// A poisoned lock only means a thread panicked while holding it; the
/// device state is plain data, valid either way.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn device(&self) -> RwLockReadGuard<'_, Device> {
        self.device.read().unwrap_or_else(|e| e.into_inner())
    }

    fn device_mut(&self) -> RwLockWriteGuard<'_, Device> {
        self.device.write().unwrap_or_else(|e| e.into_inner())
    }

    fn note_error(&self, e: String) {
        *lock(&self.last_error) = Some(e);
    }

    /// The ring of `q` lied: stop using it until the front-end restarts it,
    /// and tell the front-end (its error eventfd).
    fn break_queue(&self, q: &Queue) {
        if !q.broken.swap(true, Relaxed) {
            self.counters.broken_rings.fetch_add(1, Relaxed);
            self.up.store(false, Relaxed);
            if let Some(err) = &q.err {
                signal(err.as_raw_fd());
            }
        }
    }

    fn count_fault(&self, f: Fault) {
        let c = match f {
            Fault::BadDescriptor => &self.counters.bad_descriptors,
            Fault::Loop => &self.counters.looping_chains,
            Fault::Oversized => &self.counters.oversized,
            Fault::Short => &self.counters.bad_headers,
        };
        c.fetch_add(1, Relaxed);
    }
}

/// Add one to an eventfd (a kick, an interrupt, an error). Non-blocking:
/// eventfds from the front-end are made so when they arrive.
fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local.
    unsafe { write(fd, (&one as *const u64).cast(), 8) };
}

/// Empty an eventfd, so a level-triggered wait on it quiets.
fn drain(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live local.
    unsafe { read(fd, (&mut v as *mut u64).cast(), 8) };
}

pub struct VhostUserPort {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// In server mode: the socket we created (path, device, inode), removed
    /// when we go if it is still ours.
    created: Option<(PathBuf, u64, u64)>,
}

impl VhostUserPort {
    /// Start serving `spec.socket`: as a client, connect and keep
    /// reconnecting every second while unconnected; as a server, listen and
    /// serve one front-end at a time. The port's control thread handles the
    /// protocol; `readiness` hears of the transmit queue's kick descriptor.
    pub fn start(spec: &VhostUserSpec, readiness: Arc<dyn Readiness>) -> io::Result<VhostUserPort> {
        let (listener, created) = match spec.mode {
            SocketMode::Client => (None, None),
            SocketMode::Server => {
                let l = control::listen(&spec.socket)?;
                let m = std::fs::metadata(&spec.socket)?;
                (Some(l), Some((spec.socket.clone(), m.dev(), m.ino())))
            }
        };
        // SAFETY: plain syscall; the result is checked by `owned`.
        let stop = owned(unsafe { eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) })?;
        let shared = Arc::new(Shared {
            name: spec.name.clone(),
            device: RwLock::new(Device::default()),
            up: AtomicBool::new(false),
            counters: Counters::default(),
            last_error: Mutex::new(None),
            stop,
        });
        let ctl = control::Control::new(shared.clone(), readiness, spec.socket.clone(), listener);
        let thread = std::thread::Builder::new().name(format!("vhost-{}", spec.name)).spawn(move || ctl.run())?;
        Ok(VhostUserPort { shared, thread: Some(thread), created })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Read frames the guest sent (its transmit queue) into `bufs`, each
    /// with its virtio-net header in `offload`; returns how many. One
    /// worker calls this. Consumes the kick, and asks the guest to kick
    /// again only once the ring is empty (re-checking it afterwards, so no
    /// frame waits without a kick). Returns `bufs.len()` with frames left
    /// over, and then leaves the kick descriptor readable.
    pub fn recv(&self, bufs: &mut [PacketBuf]) -> usize {
        let dev = self.shared.device();
        let q = &dev.queues[TX];
        let Some(kick) = q.kick.as_ref().filter(|_| q.started).map(AsRawFd::as_raw_fd) else { return 0 };
        if q.broken.load(Relaxed) {
            drain(kick);
            return 0;
        }
        let Some(ring) = q.ring(dev.memory.as_ref(), dev.features) else {
            self.shared.break_queue(q);
            drain(kick);
            return 0;
        };
        let mut cur = lock(&q.cursor);
        let mut n = 0;
        let r = self.take_frames(&dev, &ring, &mut cur, bufs, &mut n, kick);
        cur.publish(&ring);
        if r.is_err() {
            self.shared.break_queue(q);
            drain(kick);
        }
        if cur.wants_interrupt(&ring) {
            if let Some(call) = &q.call {
                signal(call.as_raw_fd());
            }
        }
        n
    }

    /// The body of `recv`: frames into `bufs[*n..]` until the ring is empty
    /// (then asking for kicks) or `bufs` full.
    fn take_frames(
        &self,
        dev: &Device,
        ring: &Ring,
        cur: &mut Cursor,
        bufs: &mut [PacketBuf],
        n: &mut usize,
        kick: RawFd,
    ) -> Result<(), Broken> {
        let hlen = header_len(dev.features);
        if cur.kicks() && cur.pending(ring)? {
            cur.set_kicks(ring, false);
        }
        loop {
            while *n < bufs.len() {
                let Some(head) = cur.take(ring)? else { break };
                let buf = &mut bufs[*n];
                buf.reset();
                let mut hdr = [0u8; HDR_LEN_MRG];
                let got = ring.read_chain(head, &mut hdr[..hlen], buf.spare_mut());
                cur.give_back(ring, head, 0);
                let len = match got {
                    Ok(len) => len,
                    Err(f) => {
                        self.shared.count_fault(f);
                        continue;
                    }
                };
                let Some(off) = net::parse_guest_header(hdr[..VNET_HDR_LEN].try_into().unwrap(), len, dev.features) else {
                    self.shared.counters.bad_headers.fetch_add(1, Relaxed);
                    continue;
                };
                if !dev.queues[TX].enabled {
                    self.shared.counters.discarded.fetch_add(1, Relaxed);
                    continue;
                }
                buf.set_len(len);
                buf.offload = off;
                *n += 1;
            }
            if *n == bufs.len() {
                if cur.pending(ring)? {
                    signal(kick); // come back for the rest
                }
                return Ok(());
            }
            // Empty: quiet the descriptor, ask for kicks (with EVENT_IDX:
            // after what we took last, so again each time), look once more.
            drain(kick);
            cur.set_kicks(ring, true);
            if !cur.pending_after_asking(ring)? {
                return Ok(());
            }
            cur.set_kicks(ring, false);
        }
    }

    /// Put a frame (its offload as the virtio-net header) into the guest's
    /// receive queue, across several buffers if the guest negotiated
    /// mergeable ones. Callable from several workers (serialised here).
    /// The guest sees it at once; it is interrupted at [`flush`](Self::flush).
    pub fn send(&self, buf: &PacketBuf) -> Result<(), SendError> {
        let r = self.try_send(buf);
        if let Err(e) = r {
            let c = &self.shared.counters;
            match e {
                SendError::Down => &c.rx_down,
                SendError::NoBuffers => &c.rx_no_buffers,
                SendError::TooLarge => &c.rx_too_large,
                SendError::Offload => &c.rx_offload,
                SendError::GuestFault => return r, // counted by its fault
            }
            .fetch_add(1, Relaxed);
        }
        r
    }

    fn try_send(&self, buf: &PacketBuf) -> Result<(), SendError> {
        let dev = self.shared.device();
        let q = &dev.queues[RX];
        if !q.running() {
            return Err(SendError::Down);
        }
        let Some(ring) = q.ring(dev.memory.as_ref(), dev.features) else {
            self.shared.break_queue(q);
            return Err(SendError::Down);
        };
        let frame = buf.frame();
        let takes = GuestOffloads::from_features(dev.features);
        let g = net::to_guest(frame, &buf.offload, takes).ok_or(SendError::Offload)?;
        let mut hdr = [0u8; HDR_LEN_MRG];
        hdr[..VNET_HDR_LEN].copy_from_slice(&g.header);
        hdr[VNET_HDR_LEN..].copy_from_slice(&1u16.to_le_bytes()); // num_buffers
        let hdr = &hdr[..header_len(dev.features)];
        let parts: [&[u8]; 4] = match &g.finished {
            None => [hdr, frame, &[], &[]],
            Some((at, sum)) => [hdr, &frame[..*at], sum, &frame[at + 2..]],
        };
        let mut src = Stream::new(parts, VNET_HDR_LEN);
        let mut cur = lock(&q.cursor);
        let r = cur.push(&ring, &mut src, dev.features & F_MRG_RXBUF != 0);
        cur.publish(&ring);
        match r {
            Ok(()) => Ok(()),
            Err(PushError::NoRoom) => Err(SendError::NoBuffers),
            Err(PushError::TooLarge) => Err(SendError::TooLarge),
            Err(PushError::Fault(f)) => {
                self.shared.count_fault(f);
                Err(SendError::GuestFault)
            }
            Err(PushError::Broken) => {
                self.shared.break_queue(q);
                Err(SendError::Down)
            }
        }
    }

    /// End of a batch of sends: interrupt the guest once, if it wants to be.
    pub fn flush(&self) {
        let dev = self.shared.device();
        let q = &dev.queues[RX];
        let (Some(call), Some(ring)) = (&q.call, q.ring(dev.memory.as_ref(), dev.features)) else { return };
        if q.started && lock(&q.cursor).wants_interrupt(&ring) {
            signal(call.as_raw_fd());
        }
    }

    /// Both rings started and enabled: the guest's driver is running.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Relaxed)
    }

    /// What the guest takes in frames sent to it: a large segment it did
    /// not negotiate must be segmented first; a checksum it cannot finish
    /// is finished by `send`.
    pub fn guest_offloads(&self) -> GuestOffloads {
        GuestOffloads::from_features(self.shared.device().features)
    }

    /// The MTU QEMU announces to the guest (`-device virtio-net-pci,host_mtu=`), if any.
    pub fn guest_mtu(&self) -> Option<u16> {
        self.shared.device().mtu
    }

    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Why the last connection attempt failed or the last connection ended.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }
}

impl Drop for VhostUserPort {
    /// Stop the control thread, which takes the device down (rings
    /// stopped, memory unmapped, descriptors closed); remove the socket we
    /// created if it is still ours.
    fn drop(&mut self) {
        signal(self.shared.stop.as_raw_fd());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some((path, dev, ino)) = &self.created {
            if std::fs::metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// A vhost-user port as the workers drive it (`io::port::Device`): one
/// worker, the port's owner, reads the guest's transmit ring (its kick
/// descriptor registered with that worker's epoll as the ring starts); any
/// worker writes into its receive ring, and interrupts the guest once per
/// batch.
pub struct VhostUserDevice {
    port: VhostUserPort,
    reg: Arc<super::port::Registration>,
    owner: usize,
    socket: PathBuf,
}

/// The owner worker waits on the kick descriptor the control thread hands over.
struct OwnerReadiness {
    reg: Arc<super::port::Registration>,
    owner: usize,
}

impl Readiness for OwnerReadiness {
    fn set(&self, fd: Option<RawFd>) {
        // An epoll set that refuses an eventfd is out of memory: the port then stays unread (and down).
        let _ = self.reg.set(self.owner, fd);
    }
}

impl VhostUserDevice {
    /// Serve `spec` with worker `owner` reading the guest's frames.
    pub fn start(spec: &VhostUserSpec, reg: super::port::Registration, owner: usize) -> io::Result<VhostUserDevice> {
        let reg = Arc::new(reg);
        let readiness = Arc::new(OwnerReadiness { reg: reg.clone(), owner });
        let port = VhostUserPort::start(spec, readiness)?;
        Ok(VhostUserDevice { port, reg, owner, socket: spec.socket.clone() })
    }
}

impl super::port::Device for VhostUserDevice {
    fn name(&self) -> &str {
        self.port.name()
    }

    fn ifindex(&self) -> u32 {
        0
    }

    fn recv(&self, queue: usize, bufs: &mut [PacketBuf]) -> io::Result<usize> {
        Ok(if queue == self.owner { self.port.recv(bufs) } else { 0 })
    }

    fn send(&self, _queue: usize, buf: &PacketBuf) -> Result<(), crate::dp::DropReason> {
        use crate::dp::DropReason;
        self.port.send(buf).map_err(|e| match e {
            SendError::Down => DropReason::AdapterDown,
            SendError::GuestFault => DropReason::GuestRing,
            // The guest's receive ring is full, or its buffers too small: as a full TAP queue.
            SendError::NoBuffers | SendError::TooLarge | SendError::Offload => DropReason::TxError,
        })
    }

    fn flush(&self, _queue: usize) {
        self.port.flush();
    }

    fn takes(&self, gso: crate::dp::offload::Gso) -> bool {
        self.port.guest_offloads().takes(gso)
    }

    fn failed(&self, _queue: usize, _e: io::Error) -> bool {
        false // recv reports no errors: a broken ring is counted and stopped inside
    }

    fn is_up(&self) -> bool {
        self.port.is_up()
    }

    fn mtu(&self) -> Option<u32> {
        self.port.guest_mtu().map(u32::from)
    }

    fn why_down(&self) -> Option<String> {
        (!self.port.is_up()).then(|| {
            self.port.last_error().unwrap_or_else(|| format!("waiting for the VM on {} (its virtio-net driver starts the device)", self.socket.display()))
        })
    }

    fn drops(&self, add: &mut dyn FnMut(crate::dp::DropReason, u64)) {
        use crate::dp::DropReason;
        let s = self.port.stats();
        add(DropReason::GuestRing, s.bad_descriptors + s.looping_chains + s.broken_rings);
        add(DropReason::Malformed, s.bad_headers + s.oversized);
        add(DropReason::AdapterDown, s.discarded);
    }
}

impl Drop for VhostUserDevice {
    fn drop(&mut self) {
        self.reg.clear();
    }
}
