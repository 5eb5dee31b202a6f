//! A worker thread: epoll over the underlay sockets, the VM ports' queues
//! and a wake-up eventfd.
//!
//! Pipeline, per ready descriptor:
//! 1. read a batch (up to `BATCH` frames from one port, or `recvmmsg` from
//!    the underlay) into buffers with headroom;
//! 2. decide each packet with the core against the batch's one snapshot
//!    (`dp::on_vm_frames` / `dp::on_underlay_packets`); the core rewrites
//!    the buffer in place (encapsulation goes into the headroom);
//! 3. to 5. carry out the actions (`dp::Pipeline`: segments, probe copies,
//!    checksums, merging, counting), with the writes done here: frames to
//!    VM ports, encapsulated packets in `sendmmsg` batches; a drop may also
//!    become a rate-limited event for the log (io::events).
//!
//! The HNV gateway's uplink is one more descriptor: its frames are decided
//! by `dp::gateway::on_uplink_frame` with the worker's NAT table; what the
//! underlay brings for a NAT (`Action::Nat`) goes through
//! `dp::gateway::nat_outbound` before step 3. The table is reconciled with
//! every new gateway the control plane publishes, and its timers run on a
//! clock of whole seconds since the worker started.
//!
//! A batch whose handling panics (a bug, met by some packet) is dropped and
//! counted, and the worker goes on; a port whose device fails (deleted under
//! us) is marked down and no longer waited on.

use super::events::{drop_event, Limiter, Pace, PanicEvent, Source, DROP_PACE, LEARN_PACE};
use super::panics;
use super::sys::{epoll_event, EventFd, Epoll};
use super::underlay::Underlay;
use super::{Device, Shared, State};
use crate::dp::gateway::{self, Gateway};
use crate::dp::nat::NatTable;
use crate::dp::offload::Gso;
use crate::dp::{self, Action, Batch, Counter, Counters, Direction, DropReason, Effects, Learned, Outgoing, PacketBuf, Pipeline, PortId};
use crate::wire::MacAddr;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Packets per read batch.
const BATCH: usize = 64;
/// Largest frame (a 64 KB TCP segment with headers) or reassembled underlay packet a buffer holds.
const MAX_PACKET: usize = 65535 + 256;
/// epoll timeout: the heartbeat advances at least this often.
const TICK_MS: i32 = 500;
/// Panics reported per place in the source: at most once a minute, 10 a second in all.
const PANIC_PACE: Pace = DROP_PACE;

pub const TOKEN_UNDERLAY_V4: u64 = 1 << 32;
pub const TOKEN_UNDERLAY_V6: u64 = 3 << 32;
pub const TOKEN_WAKE: u64 = 2 << 32;
pub const TOKEN_UPLINK: u64 = 4 << 32;
/// How often the uplink's gateway is asked for its MAC while it is not known, and again once it is.
const ARP_RETRY: Duration = Duration::from_secs(1);
const ARP_REFRESH: Duration = Duration::from_secs(60);

pub struct Context {
    /// This worker's number: its queue of each port.
    pub index: usize,
    pub epoll: Arc<Epoll>,
    /// Its own underlay sockets (each keeps its share of the flows).
    pub underlay: Underlay,
    pub shared: Arc<Shared>,
    pub wake: Arc<EventFd>,
    pub counters: Arc<Counters>,
    pub heartbeat: Arc<AtomicU64>,
    pub seen: Arc<AtomicU64>,
    /// Set if the thread ends without being asked to.
    pub died: Arc<Mutex<Option<String>>>,
    /// How long to keep polling after the last packet before sleeping.
    pub poll: Duration,
}

struct Worker {
    ctx: Context,
    state: Arc<State>,
    generation: u64,
    bufs: Vec<PacketBuf>,
    actions: Vec<Action>,
    /// Where each packet of the batch came from (for drop events and learning).
    sources: Vec<Option<Source>>,
    outer_src: Vec<Option<IpAddr>>,
    /// Outer (source, destination) of each IPv6 underlay packet of the batch.
    addrs: Vec<(IpAddr, IpAddr)>,
    /// The interface each underlay packet of the batch came in on.
    arrived: Vec<u32>,
    pipeline: Pipeline,
    /// Packets of the batch being handled (a panic drops them).
    in_flight: usize,
    /// Failpoint: end the thread with a panic outside the per-batch guard.
    die: bool,
    /// Ports written to in the batch being carried out.
    written: Vec<PortId>,
    drops: Limiter<(Direction, DropReason, Source)>,
    learning: Limiter<Learned>,
    panics: Limiter<String>,
    /// The time of this wake-up: one clock read per batch, not per packet.
    now: Instant,
    /// The NAT mappings this worker owns, and the gateway they were reconciled with.
    nat: NatTable,
    nat_of: Arc<Gateway>,
    /// The NAT's clock starts here.
    started: Instant,
    /// When the uplink's gateway was last asked for its MAC.
    arp_sent: Option<Instant>,
    /// The last listing of the NAT mappings this worker answered.
    listed: u64,
}

/// Records why the thread ended if it ends without being asked to (a
/// panic outside a batch): the daemon sees it and exits.
struct Lifeline {
    shared: Arc<Shared>,
    died: Arc<Mutex<Option<String>>>,
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        if !self.shared.stop.load(Ordering::Acquire) {
            let why = if std::thread::panicking() { panics::take_last() } else { "the thread ended".to_string() };
            *self.died.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        }
    }
}

impl Context {
    pub fn run(self) {
        let _lifeline = Lifeline { shared: self.shared.clone(), died: self.died.clone() };
        let state = self.shared.state.lock().unwrap().clone();
        let mut w = Worker {
            state,
            generation: u64::MAX,
            bufs: (0..BATCH).map(|_| PacketBuf::new(MAX_PACKET)).collect(),
            actions: Vec::with_capacity(BATCH),
            sources: Vec::with_capacity(BATCH),
            outer_src: Vec::with_capacity(BATCH),
            addrs: vec![(IpAddr::from([0u8; 4]), IpAddr::from([0u8; 4])); BATCH],
            arrived: vec![0; BATCH],
            pipeline: Pipeline::new(MAX_PACKET),
            in_flight: 0,
            die: false,
            written: Vec::new(),
            drops: Limiter::new(DROP_PACE),
            learning: Limiter::new(LEARN_PACE),
            panics: Limiter::new(PANIC_PACE),
            now: Instant::now(),
            nat: NatTable::new(self.index, 1, 0),
            nat_of: Arc::default(),
            started: Instant::now(),
            arp_sent: None,
            listed: 0,
            ctx: self,
        };
        w.run();
    }
}

impl Worker {
    fn run(&mut self) {
        let mut events = [epoll_event { events: 0, data: 0 }; 64];
        // Until when to poll without sleeping (see `Options::poll`).
        let mut spin_until = self.now;
        while !self.ctx.shared.stop.load(Ordering::Acquire) {
            self.ctx.heartbeat.fetch_add(1, Ordering::Relaxed);
            self.refresh();
            let spinning = self.now < spin_until;
            if spinning {
                // Give the CPU to anything runnable (the VM answering, say); come back at once if nothing is.
                std::thread::yield_now();
            }
            let epoll = self.ctx.epoll.clone();
            let ready = epoll.wait(&mut events, if spinning { 0 } else { TICK_MS }).expect("epoll_wait on our own epoll set");
            self.now = Instant::now();
            if !ready.is_empty() {
                spin_until = self.now + self.ctx.poll;
            }
            assert!(!self.die, "failpoint: the worker dies");
            self.gateway_timers();
            self.list_mappings();
            for ev in ready {
                match { ev.data } {
                    TOKEN_WAKE => self.ctx.wake.clear(),
                    TOKEN_UPLINK => self.guarded(Direction::FromUplink, Self::from_uplink),
                    TOKEN_UNDERLAY_V4 => self.guarded(Direction::FromUnderlay, Self::from_underlay_v4),
                    TOKEN_UNDERLAY_V6 => self.guarded(Direction::FromUnderlay, Self::from_underlay_v6),
                    port => self.guarded(Direction::FromVm, |w| w.from_vm(port as PortId)),
                }
            }
        }
    }

    /// Run one batch; if its handling panics, drop it (every packet of it
    /// counted as `internal_error`), report the panic, and go on.
    fn guarded(&mut self, dir: Direction, batch: impl FnOnce(&mut Self)) {
        self.in_flight = 0;
        if catch_unwind(AssertUnwindSafe(|| batch(self))).is_ok() {
            return;
        }
        let message = panics::take_last();
        self.ctx.counters.inc(Counter::WorkerPanics, 1);
        self.ctx.counters.count_drops(dir, DropReason::InternalError, self.in_flight as u64);
        self.pipeline.reset();
        if let Some(suppressed) = self.panics.admit(message.clone(), self.now) {
            self.ctx.shared.panics.push(PanicEvent { worker: self.ctx.index, message, suppressed });
        }
    }

    /// Pick up a newly published state.
    fn refresh(&mut self) {
        let generation = self.ctx.shared.generation.load(Ordering::Acquire);
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        self.state = self.ctx.shared.state.lock().unwrap().clone();
        let gateway = self.state.snapshot.hnv_gateway();
        if !Arc::ptr_eq(gateway, &self.nat_of) {
            // Mappings of NATs gone or changed go; the rest stay.
            let now = self.clock();
            self.nat.reconcile(&self.nat_of.nats, &gateway.nats, now, &self.ctx.counters);
            self.nat_of = gateway.clone();
        }
        // The old state (and any port only it held) is released: say so.
        self.ctx.seen.store(generation, Ordering::Release);
    }

    fn from_vm(&mut self, port: PortId) {
        let Some(dev) = self.state.ports.get(&port).cloned() else { return };
        let n = match dev.recv(self.ctx.index, &mut self.bufs) {
            Ok(n) => n,
            Err(e) => {
                self.port_failed(dev.as_ref(), e);
                0
            }
        };
        self.in_flight = n;
        self.ctx.counters.inc(Counter::VmRxPackets, n as u64);
        match panics::failpoints::hit(self.bufs[..n].iter().map(|b| b.frame())) {
            Some(panics::failpoints::PANIC_MARK) => panic!("failpoint: a batch's handling panics"),
            Some(_) => self.die = true,
            None => {}
        }
        self.sources.clear();
        self.sources.resize(n, Some(Source::Port(port)));
        self.outer_src.clear();
        let snap = self.state.snapshot.clone();
        self.actions.clear();
        dp::on_vm_frames(&snap, port, &mut self.bufs[..n], &mut self.actions);
        self.to_nat(Direction::FromVm, n);
        self.carry_out(Direction::FromVm, n);
    }

    /// The port's device failed (deleted under us, typically): it stops
    /// being waited on (an error reading is reported again and again) and
    /// is down; counted once.
    fn port_failed(&mut self, dev: &dyn Device, e: std::io::Error) {
        if dev.failed(self.ctx.index, e) {
            self.ctx.counters.inc(Counter::VmAdapterErrors, 1);
        }
    }

    fn from_underlay_v4(&mut self) {
        let n = self.ctx.underlay.recv_v4(&mut self.bufs, &mut self.arrived).unwrap_or(0);
        self.in_flight = n;
        self.ctx.counters.inc(Counter::UnderlayRxPackets, n as u64);
        self.outer_src.clear();
        self.outer_src.extend(self.bufs[..n].iter().map(|b| ipv4_source(b.frame())));
        self.sources.clear();
        self.sources.extend(self.outer_src.iter().map(|a| a.map(Source::Underlay)));
        let snap = self.state.snapshot.clone();
        self.actions.clear();
        dp::on_underlay_packets(&snap, &mut self.bufs[..n], &self.arrived[..n], &mut self.actions);
        self.to_nat(Direction::FromUnderlay, n);
        self.carry_out(Direction::FromUnderlay, n);
    }

    fn from_underlay_v6(&mut self) {
        let n = self.ctx.underlay.recv_v6(&mut self.bufs, &mut self.addrs, &mut self.arrived).unwrap_or(0);
        self.in_flight = n;
        self.ctx.counters.inc(Counter::UnderlayRxPackets, n as u64);
        self.outer_src.clear();
        self.outer_src.extend(self.addrs[..n].iter().map(|&(src, _)| Some(src)));
        self.sources.clear();
        self.sources.extend(self.outer_src.iter().map(|a| a.map(Source::Underlay)));
        let snap = self.state.snapshot.clone();
        self.actions.clear();
        for ((b, &(src, dst)), &ifindex) in self.bufs[..n].iter_mut().zip(&self.addrs).zip(&self.arrived) {
            self.actions.push(dp::on_underlay_gre(&snap, src, dst, ifindex, b));
        }
        self.to_nat(Direction::FromUnderlay, n);
        self.carry_out(Direction::FromUnderlay, n);
    }

    /// Seconds since the worker started: the NAT's clock.
    fn clock(&self) -> u32 {
        self.now.saturating_duration_since(self.started).as_secs() as u32
    }

    /// The uplink's gateway's MAC, as any worker learned it.
    fn router(&self) -> Option<MacAddr> {
        let v = self.ctx.shared.uplink_router.load(Ordering::Acquire);
        (v != 0).then(|| MacAddr::from_bytes(&v.to_be_bytes()[2..]))
    }

    fn set_router(&self, mac: MacAddr) {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(mac.as_bytes());
        self.ctx.shared.uplink_router.store(u64::from_be_bytes(b), Ordering::Release);
    }

    /// Carry out the batch's `Action::Nat`s with this worker's table.
    fn to_nat(&mut self, dir: Direction, n: usize) {
        if !self.actions.iter().any(|a| matches!(a, Action::Nat { .. })) {
            return;
        }
        let (now, router, snap) = (self.clock(), self.router(), self.state.snapshot.clone());
        for (a, b) in self.actions.iter_mut().zip(&mut self.bufs[..n]) {
            if let Action::Nat { vsid } = *a {
                *a = gateway::nat_outbound(&snap, &mut self.nat, dir, vsid, b, now, router, &self.ctx.counters);
            }
        }
    }

    /// A batch from the uplink: ARP answered or learned from, the NAT's replies translated back to their tenants.
    fn from_uplink(&mut self) {
        let Some(dev) = self.state.uplink.clone() else { return };
        let n = match dev.recv(self.ctx.index, &mut self.bufs) {
            Ok(n) => n,
            Err(e) => {
                let _ = dev.failed(self.ctx.index, e);
                0
            }
        };
        self.in_flight = n;
        self.ctx.counters.inc(Counter::UplinkRxPackets, n as u64);
        self.sources.clear();
        self.sources.resize(n, None);
        self.outer_src.clear();
        let (now, snap) = (self.clock(), self.state.snapshot.clone());
        let mut router = self.router();
        let known = router;
        self.actions.clear();
        for b in &mut self.bufs[..n] {
            self.actions.push(gateway::on_uplink_frame(&snap, &mut self.nat, b, now, &mut router, &self.ctx.counters));
        }
        if let Some(mac) = router.filter(|&m| Some(m) != known) {
            self.set_router(mac);
        }
        self.carry_out(Direction::FromUplink, n);
    }

    /// Answer a listing of the NAT mappings asked for since the last one.
    fn list_mappings(&mut self) {
        let asked = self.ctx.shared.nat_listing.load(Ordering::Acquire);
        if asked == self.listed {
            return;
        }
        self.listed = asked;
        let now = self.clock();
        let mut out = Vec::with_capacity(self.nat.len() * super::NAT_MAPPING_FIELDS);
        for m in self.nat.mappings(now) {
            let k = m.inside;
            out.extend_from_slice(&[
                u64::from(m.nat),
                u64::from(k.vsid),
                k.proto as u64,
                u64::from(u32::from(k.addr)),
                u64::from(k.port),
                u64::from(u32::from(m.external)),
                u64::from(m.external_port),
                u64::from(m.expires_in),
                u64::from(m.tcp_established),
            ]);
        }
        self.ctx.shared.nat_answers.lock().unwrap_or_else(|p| p.into_inner())[self.ctx.index] = (asked, out);
    }

    /// Once a wake-up: expire idle mappings; ask the uplink's gateway for
    /// its MAC while it is not known (and now and then once it is).
    fn gateway_timers(&mut self) {
        if self.nat_of.nats.entries().is_empty() && self.state.uplink.is_none() {
            return;
        }
        let now = self.clock();
        self.nat.tick(now, &self.ctx.counters);
        let Some(dev) = self.state.uplink.clone() else { return };
        let every = if self.router().is_some() { ARP_REFRESH } else { ARP_RETRY };
        if self.ctx.index != 0 || !dev.is_up() || self.arp_sent.is_some_and(|t| self.now < t + every) {
            return;
        }
        self.arp_sent = Some(self.now);
        let b = &mut self.bufs[0];
        if gateway::gateway_arp_request(&self.state.snapshot, b) && dev.send(self.ctx.index, b).is_ok() {
            self.ctx.counters.inc(Counter::UplinkTxPackets, 1);
        }
    }

    /// Steps 3 to 5 of the pipeline for the batch's `n` packets.
    fn carry_out(&mut self, dir: Direction, n: usize) {
        let Worker { ctx, state, bufs, actions, sources, outer_src, pipeline, drops, learning, now, written, .. } = self;
        let mut io = WorkerIo { ctx, state, dir, sources, drops, learning, now: *now, written };
        let batch = Batch { snap: &state.snapshot, dir, bufs: &mut bufs[..n], actions, outer_src, counters: &ctx.counters };
        pipeline.carry_out(batch, &mut io);
    }
}

/// The worker's side of the pipeline: the writes, and the reports.
struct WorkerIo<'a> {
    ctx: &'a Context,
    state: &'a State,
    dir: Direction,
    sources: &'a [Option<Source>],
    drops: &'a mut Limiter<(Direction, DropReason, Source)>,
    learning: &'a mut Limiter<Learned>,
    now: Instant,
    /// Ports written to in this batch (to flush at its end).
    written: &'a mut Vec<PortId>,
}

impl Effects for WorkerIo<'_> {
    fn to_port(&mut self, port: PortId, buf: &PacketBuf) -> Result<(), DropReason> {
        let dev = self.state.ports.get(&port).ok_or(DropReason::PortGone)?;
        if !dev.is_up() {
            return Err(DropReason::AdapterDown);
        }
        if !self.written.contains(&port) {
            self.written.push(port);
        }
        dev.send(self.ctx.index, buf)
    }

    fn to_uplink(&mut self, buf: &PacketBuf) -> Result<(), DropReason> {
        let dev = self.state.uplink.as_ref().ok_or(DropReason::AdapterDown)?;
        if !dev.is_up() {
            return Err(DropReason::AdapterDown);
        }
        dev.send(self.ctx.index, buf)
    }

    fn port_takes(&self, port: PortId, gso: Gso) -> bool {
        self.state.ports.get(&port).is_some_and(|d| d.takes(gso))
    }

    fn flush_ports(&mut self) {
        for port in self.written.drain(..) {
            if let Some(dev) = self.state.ports.get(&port) {
                dev.flush(self.ctx.index);
            }
        }
    }

    fn to_underlay(&mut self, pkts: &[Outgoing], done: &mut dyn FnMut(usize, bool)) {
        self.ctx.underlay.send_batch(pkts, |k, r| done(k, r.is_ok()));
    }

    fn kernel_segments(&self) -> bool {
        self.ctx.underlay.kernel_segmentation()
    }

    fn dropped(&mut self, frame: usize, reason: DropReason) {
        if let Some(ev) = self.sources.get(frame).copied().flatten().and_then(|src| drop_event(self.drops, self.dir, reason, src, self.now)) {
            self.ctx.shared.drops.push(ev);
        }
    }

    fn learned(&mut self, l: Learned) {
        if self.learning.admit(l, self.now).is_some() {
            self.ctx.shared.learned.push(l);
        }
    }
}

/// The outer source address of a packet the IPv4 underlay socket read.
fn ipv4_source(pkt: &[u8]) -> Option<IpAddr> {
    let src: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
    Some(IpAddr::from(src))
}
