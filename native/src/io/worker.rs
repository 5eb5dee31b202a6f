//! A worker thread: epoll over the underlay socket, every TAP and a wake-up
//! eventfd.
//!
//! Pipeline, per ready descriptor:
//! 1. read a batch (up to `BATCH` frames from one TAP, or `recvmmsg` from the underlay)
//!    into buffers with headroom;
//! 2. decide each packet with the core against the batch's one snapshot
//!    (`dp::on_vm_frames` / `dp::on_underlay_packets`); the core rewrites the
//!    buffer in place (encapsulation goes into the headroom);
//! 3. prepare what leaves encapsulated besides the frames themselves: a large
//!    TCP segment from a VM is split into MTU-sized NVGRE packets, partial
//!    checksums are finished, flow-4 ARP probes are copied per L2Only PA;
//! 4. carry out the actions: encapsulated packets leave in one `sendmmsg`;
//!    frames for VMs are written to their TAPs, consecutive segments of one
//!    TCP flow from the underlay merged into one large segment first;
//! 5. count every packet once, after its outcome is known (sent, or dropped
//!    with a reason; a failed write is `tx_error`); a drop may also become a
//!    rate-limited event for the log (io::events).

use super::events::{drop_event, Limiter, Source, DROP_PACE, LEARN_PACE};
use super::sys::*;
use super::underlay::{Outgoing, Underlay};
use super::{Shared, State, Tap};
use crate::dp::offload::{self, Coalescer, Gso};
use crate::dp::{self, learn, Action, Counter, Counters, Direction, DropReason, FxMap, Learned, PacketBuf, PortId, Via, Vsid};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Packets per read batch.
const BATCH: usize = 64;
/// Largest frame (a 64 KB TCP segment with headers) or reassembled underlay packet a buffer holds.
const MAX_PACKET: usize = 65535 + 256;
/// Segments and probes: an MTU-sized frame plus its outer header, with room to spare.
const EXTRA_CAPACITY: usize = 9216;
/// epoll timeout: the heartbeat advances at least this often.
const TICK_MS: i32 = 500;

const TOKEN_UNDERLAY_V4: u64 = 1 << 32;
const TOKEN_UNDERLAY_V6: u64 = 3 << 32;
const TOKEN_WAKE: u64 = 2 << 32;

pub struct Context {
    /// This worker's number: its TAP queue.
    pub index: usize,
    /// Its own underlay sockets (each keeps its share of the flows).
    pub underlay: Underlay,
    pub shared: Arc<Shared>,
    pub wake: i32,
    pub counters: Arc<Counters>,
    pub heartbeat: Arc<AtomicU64>,
    pub seen: Arc<AtomicU64>,
    /// How long to keep polling after the last packet before sleeping.
    pub poll: Duration,
}

struct Worker {
    ctx: Context,
    epoll: std::os::fd::OwnedFd,
    state: Arc<State>,
    generation: u64,
    /// The TAPs registered with our epoll (kept alive until deregistered).
    registered: FxMap<PortId, Arc<Tap>>,
    bufs: Vec<PacketBuf>,
    actions: Vec<Action>,
    /// Where each packet of the batch came from (for drop events).
    sources: Vec<Option<Source>>,
    /// Outer (source, destination) of each IPv6 underlay packet of the batch.
    addrs: Vec<(IpAddr, IpAddr)>,
    /// Encapsulated packets made from the batch's frames (segments of large
    /// TCP segments, flow-4 probes), in reusable buffers: `extras` says which
    /// buffer, from which frame, with which encapsulation.
    extra_bufs: Vec<PacketBuf>,
    extras: Vec<Extra>,
    /// How each encapsulated frame of the batch leaves.
    leaves: Vec<Leaves>,
    /// Decapsulated TCP segments of one flow being merged for one TAP write.
    merge: PacketBuf,
    coalescer: Coalescer,
    /// The port, VSID, and (frame index, length) of each segment merged.
    merging: Option<(PortId, Vsid)>,
    merged: Vec<(usize, usize)>,
    drops: Limiter<(Direction, DropReason, Source)>,
    learning: Limiter<Learned>,
    /// The time of this wake-up: one clock read per batch, not per packet.
    now: Instant,
}

impl Context {
    pub fn run(self) {
        let epoll = match owned(unsafe { epoll_create1(EPOLL_CLOEXEC) }) {
            Ok(e) => e,
            Err(e) => panic!("epoll_create1: {e}"),
        };
        let state = self.shared.state.lock().unwrap().clone();
        let mut w = Worker {
            epoll,
            state,
            generation: u64::MAX,
            registered: FxMap::default(),
            bufs: (0..BATCH).map(|_| PacketBuf::new(MAX_PACKET)).collect(),
            actions: Vec::with_capacity(BATCH),
            sources: Vec::with_capacity(BATCH),
            addrs: vec![(IpAddr::from([0u8; 4]), IpAddr::from([0u8; 4])); BATCH],
            extra_bufs: Vec::new(),
            extras: Vec::new(),
            leaves: vec![Leaves::Whole; BATCH],
            merge: PacketBuf::new(MAX_PACKET),
            coalescer: Coalescer::default(),
            merging: None,
            merged: Vec::with_capacity(BATCH),
            drops: Limiter::new(DROP_PACE),
            learning: Limiter::new(LEARN_PACE),
            now: Instant::now(),
            ctx: self,
        };
        w.register(w.ctx.underlay.fd_v4(), TOKEN_UNDERLAY_V4);
        if let Some(fd) = w.ctx.underlay.fd_v6() {
            w.register(fd, TOKEN_UNDERLAY_V6);
        }
        w.register(w.ctx.wake, TOKEN_WAKE);
        w.run();
    }
}

impl Worker {
    fn register(&self, fd: i32, token: u64) {
        let mut ev = epoll_event { events: EPOLLIN, data: token };
        unsafe { epoll_ctl(self.epoll_fd(), EPOLL_CTL_ADD, fd, &mut ev) };
    }

    fn epoll_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.epoll.as_raw_fd()
    }

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
                unsafe { sched_yield() };
            }
            let timeout = if spinning { 0 } else { TICK_MS };
            let n = unsafe { epoll_wait(self.epoll_fd(), events.as_mut_ptr(), events.len() as i32, timeout) };
            self.now = Instant::now();
            if n > 0 {
                spin_until = self.now + self.ctx.poll;
            }
            for ev in events.iter().take(n.max(0) as usize) {
                match { ev.data } {
                    TOKEN_WAKE => {
                        let mut v = 0u64;
                        unsafe { read(self.ctx.wake, &mut v as *mut u64 as *mut _, 8) };
                    }
                    TOKEN_UNDERLAY_V4 => self.from_underlay_v4(),
                    TOKEN_UNDERLAY_V6 => self.from_underlay_v6(),
                    port => self.from_vm(port as PortId),
                }
            }
        }
    }

    /// Pick up a newly published state and (de)register TAPs to match.
    fn refresh(&mut self) {
        let generation = self.ctx.shared.generation.load(Ordering::Acquire);
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        self.state = self.ctx.shared.state.lock().unwrap().clone();
        let gone: Vec<PortId> =
            self.registered.keys().copied().filter(|id| !self.state.taps.contains_key(id)).collect();
        for id in gone {
            let tap = self.registered.remove(&id).unwrap();
            unsafe { epoll_ctl(self.epoll_fd(), EPOLL_CTL_DEL, tap.fd(self.ctx.index), std::ptr::null_mut()) };
        }
        let state = self.state.clone();
        for (id, tap) in &state.taps {
            if !self.registered.contains_key(id) {
                self.register(tap.fd(self.ctx.index), *id as u64);
                self.registered.insert(*id, tap.clone());
            }
        }
        // The old state (and any TAP only it held) is released: say so.
        self.ctx.seen.store(generation, Ordering::Release);
    }

    fn from_vm(&mut self, port: PortId) {
        let Some(tap) = self.registered.get(&port).cloned() else { return };
        let mut n = 0;
        while n < BATCH && matches!(tap.recv(self.ctx.index, &mut self.bufs[n]), Ok(true)) {
            n += 1;
        }
        self.ctx.counters.inc(Counter::VmRxPackets, n as u64);
        let snap = self.state.snapshot.clone();
        self.actions.clear();
        self.sources.clear();
        self.sources.resize(n, Some(Source::Port(port)));
        dp::on_vm_frames(&snap, port, &mut self.bufs[..n], &mut self.actions);
        self.transmit(Direction::FromVm, n);
    }

    fn from_underlay_v4(&mut self) {
        let n = self.ctx.underlay.recv_v4(&mut self.bufs).unwrap_or(0);
        self.ctx.counters.inc(Counter::UnderlayRxPackets, n as u64);
        let snap = self.state.snapshot.clone();
        self.actions.clear();
        self.sources.clear();
        self.sources.extend(self.bufs[..n].iter().map(|b| ipv4_source(b.frame())));
        dp::on_underlay_packets(&snap, &mut self.bufs[..n], &mut self.actions);
        self.transmit(Direction::FromUnderlay, n);
    }

    fn from_underlay_v6(&mut self) {
        let n = self.ctx.underlay.recv_v6(&mut self.bufs, &mut self.addrs).unwrap_or(0);
        self.ctx.counters.inc(Counter::UnderlayRxPackets, n as u64);
        let snap = self.state.snapshot.clone();
        self.actions.clear();
        self.sources.clear();
        for (b, &(src, dst)) in self.bufs[..n].iter_mut().zip(&self.addrs) {
            self.sources.push(Some(Source::Underlay(src)));
            self.actions.push(dp::on_underlay_gre(&snap, src, dst, b));
        }
        self.transmit(Direction::FromUnderlay, n);
    }

    /// A buffer for an extra encapsulated packet (the pool only grows to the largest batch).
    fn extra_buf(bufs: &mut Vec<PacketBuf>, used: usize) -> &mut PacketBuf {
        if used == bufs.len() {
            bufs.push(PacketBuf::new(EXTRA_CAPACITY));
        }
        &mut bufs[used]
    }

    /// Step 3 of the pipeline: segments of large TCP segments (with their
    /// checksums) unless the kernel segments them, finished partial
    /// checksums, and flow-4 probes.
    fn prepare_extras(&mut self, n: usize) {
        self.extras.clear();
        self.leaves.clear();
        self.leaves.resize(n, Leaves::Whole);
        let snap = self.state.snapshot.clone();
        let mut used = 0;
        for i in 0..n {
            match self.actions[i] {
                Action::Encap { pa, .. } => {
                    let outer = dp::outer_header_len(pa);
                    let b = &mut self.bufs[i];
                    let off = b.offload;
                    if off.gso != Gso::None {
                        if let Some(ifindex) = self.ctx.underlay.kernel_segments(b, &snap, pa) {
                            self.leaves[i] = Leaves::KernelSegmented(ifindex);
                            self.ctx.counters.inc(Counter::KernelSegmentedFrames, 1);
                            continue;
                        }
                        let count = offload::segment_count(b.len() - outer, &off);
                        while self.extra_bufs.len() < used + count {
                            self.extra_bufs.push(PacketBuf::new(EXTRA_CAPACITY));
                        }
                        let ok = count > 0 && offload::segment(b.frame(), outer, &off, &mut self.extra_bufs[used..used + count]);
                        self.leaves[i] = Leaves::Segmented;
                        if !ok {
                            self.actions[i] = Action::Drop(DropReason::Malformed);
                            continue;
                        }
                        for k in used..used + count {
                            self.extras.push(Extra { buf: k, from: i, action: self.actions[i] });
                        }
                        used += count;
                        self.ctx.counters.inc(Counter::SegmentedFrames, 1);
                    } else if let Some((start, offset)) = off.csum {
                        // The wire needs the checksum the VM left to finish.
                        offload::complete_checksum(&mut b.frame_mut()[outer..], start as usize, offset as usize);
                    }
                }
                Action::Probe { vsid, .. } => {
                    let Some(subnet) = snap.subnet(vsid) else { continue };
                    for &t in &subnet.l2only_tunnels {
                        let copy = Self::extra_buf(&mut self.extra_bufs, used);
                        copy.reset();
                        let frame = self.bufs[i].frame();
                        copy.spare_mut()[..frame.len()].copy_from_slice(frame);
                        copy.set_len(frame.len());
                        let action = dp::encapsulate(copy, snap.tunnel(t), vsid, snap.flow_id, false);
                        self.extras.push(Extra { buf: used, from: i, action });
                        used += 1;
                    }
                }
                _ => {}
            }
        }
    }

    /// Carry out the first `n` actions and count each outcome. A drop is
    /// also offered to the event limiter, with where it came from.
    fn transmit(&mut self, dir: Direction, n: usize) {
        self.prepare_extras(n);
        let Worker {
            ctx, state, bufs, actions, sources, drops, learning, now, extra_bufs, extras, leaves, merge, coalescer, merging, merged, ..
        } = self;
        let counters = &ctx.counters;
        let snap = &state.snapshot;
        let mut dropped = |reason: DropReason, i: usize| {
            counters.count_drop(dir, reason);
            if let Some(ev) = sources[i].and_then(|src| drop_event(drops, dir, reason, src, *now)) {
                ctx.shared.drops.push(ev);
            }
        };
        let mut learn = |learned: Option<Learned>| {
            if let Some(l) = learned.filter(|l| learning.admit(*l, *now).is_some()) {
                ctx.shared.learned.push(l);
            }
        };
        // Write the merged segments (one large one, or the single copy) to their port.
        let flush = |merge: &mut PacketBuf, coalescer: &mut Coalescer, merging: &mut Option<(PortId, Vsid)>, merged: &mut Vec<(usize, usize)>, dropped: &mut dyn FnMut(DropReason, usize)| {
            let Some((port, vsid)) = merging.take() else { return };
            counters.inc(Counter::CoalescedPackets, merged.len() as u64 - 1);
            coalescer.finish(merge);
            let result = send_to_port(state, ctx.index, port, merge);
            for &(i, len) in merged.iter() {
                match result {
                    Ok(()) => counters.account(snap, dir, &Action::Deliver { port, vsid, via: Via::Decapsulated }, len),
                    Err(reason) => dropped(reason, i),
                }
            }
            merged.clear();
        };
        // Encapsulated packets leave together, in frame order: (the packet, the frame's index, its action).
        let mut encap: Vec<(Outgoing, usize, Action)> = Vec::new();
        let mut extra_at = 0;
        for (i, (b, action)) in bufs[..n].iter().zip(actions.iter()).enumerate() {
            take_extras(extras, extra_bufs, &mut extra_at, i, &mut encap, &mut dropped);
            // Consecutive TCP segments of one flow for one VM go up as one
            // (a segment the kernel already merged goes up as it is).
            if let (Action::Deliver { port, vsid, via: Via::Decapsulated }, Gso::None) = (*action, b.offload.gso) {
                if *merging == Some((port, vsid)) && coalescer.append(merge, b.frame(), b.offload) {
                    merged.push((i, b.len()));
                    continue;
                }
                flush(merge, coalescer, merging, merged, &mut dropped);
                if coalescer.start(merge, b.frame(), b.offload) {
                    *merging = Some((port, vsid));
                    merged.push((i, b.len()));
                    continue;
                }
            } else {
                flush(merge, coalescer, merging, merged, &mut dropped);
                if matches!(*action, Action::Deliver { via: Via::Decapsulated, .. }) {
                    counters.inc(Counter::AggregatedPackets, 1);
                }
            }
            let flood = |vsid, except: Option<PortId>, dropped: &mut dyn FnMut(DropReason, usize)| {
                if let Some(subnet) = snap.subnet(vsid) {
                    for &p in subnet.ports.iter().filter(|&&p| Some(p) != except) {
                        if let Err(reason) = send_to_port(state, ctx.index, p, b) {
                            dropped(reason, i);
                        }
                    }
                }
            };
            let result = match *action {
                Action::Deliver { port, .. } | Action::Reject { port, .. } => send_to_port(state, ctx.index, port, b),
                Action::Flood { vsid, except } => {
                    flood(vsid, except, &mut dropped);
                    Ok(())
                }
                Action::Probe { vsid, except } => {
                    flood(vsid, Some(except), &mut dropped);
                    Ok(())
                }
                Action::Encap { pa, .. } => {
                    match leaves[i] {
                        Leaves::Whole => encap.push((Outgoing { buf: b, pa, kernel_segments: None }, i, *action)),
                        Leaves::KernelSegmented(ifindex) => encap.push((Outgoing { buf: b, pa, kernel_segments: Some(ifindex) }, i, *action)),
                        Leaves::Segmented => {}
                    }
                    continue;
                }
                Action::Drop(reason) => Err(reason),
            };
            match result {
                Ok(()) => {
                    counters.account(snap, dir, action, b.len());
                    if let (Action::Deliver { vsid, via: Via::Decapsulated, .. }, Some(Source::Underlay(from))) = (*action, sources[i]) {
                        learn(learn::from_underlay(snap, vsid, from, b.frame()));
                    }
                }
                Err(reason) => dropped(reason, i),
            }
        }
        flush(merge, coalescer, merging, merged, &mut dropped);
        take_extras(extras, extra_bufs, &mut extra_at, n, &mut encap, &mut dropped);
        if encap.is_empty() {
            return;
        }
        let packets: Vec<Outgoing> = encap.iter().map(|&(o, _, _)| o).collect();
        ctx.underlay.send_batch(&packets, |k, r| {
            let (Outgoing { buf: b, pa, .. }, i, action) = encap[k];
            match r {
                Ok(()) => {
                    counters.account(snap, dir, &action, b.len());
                    if matches!(actions[i], Action::Probe { .. }) {
                        counters.inc(Counter::ArpProbes, 1);
                    } else if let Action::Encap { vsid, .. } = action {
                        if let Some(local) = snap.local_pa_for(pa) {
                            learn(learn::from_vm(snap, vsid, local, &b.frame()[dp::outer_header_len(pa)..]));
                        }
                    }
                }
                Err(_) => dropped(DropReason::TxError, i),
            }
        });
    }
}

/// Queue the segments and probe copies of the frames before `upto` (from
/// `*at` on) in their frame's place: a flow's next frame must not overtake them.
fn take_extras<'a>(
    extras: &[Extra],
    extra_bufs: &'a [PacketBuf],
    at: &mut usize,
    upto: usize,
    encap: &mut Vec<(Outgoing<'a>, usize, Action)>,
    dropped: &mut dyn FnMut(DropReason, usize),
) {
    while let Some(e) = extras.get(*at).filter(|e| e.from < upto) {
        match e.action {
            Action::Encap { pa, .. } => encap.push((Outgoing { buf: &extra_bufs[e.buf], pa, kernel_segments: None }, e.from, e.action)),
            Action::Drop(reason) => dropped(reason, e.from),
            _ => {}
        }
        *at += 1;
    }
}

/// How an encapsulated frame leaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaves {
    /// As it is.
    Whole,
    /// As the MTU-sized segments cut from it (in `extras`).
    Segmented,
    /// As one packet that the kernel cuts if the path needs it, out of this interface.
    KernelSegmented(u32),
}

/// An encapsulated packet made from frame `from` of the batch.
#[derive(Clone, Copy)]
struct Extra {
    buf: usize,
    from: usize,
    action: Action,
}

/// The outer source address of a packet the IPv4 underlay socket read.
fn ipv4_source(pkt: &[u8]) -> Option<Source> {
    let src: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
    Some(Source::Underlay(IpAddr::from(src)))
}

fn send_to_port(state: &State, queue: usize, port: PortId, b: &PacketBuf) -> Result<(), DropReason> {
    let tap = state.taps.get(&port).ok_or(DropReason::PortGone)?;
    tap.send(queue, b).map_err(|_| DropReason::TxError)
}
