//! A worker thread: epoll over the underlay socket, every TAP and a wake-up
//! eventfd.
//!
//! Pipeline, per ready descriptor:
//! 1. read a batch (up to `BATCH` frames from one TAP, or `recvmmsg` from the underlay)
//!    into buffers with headroom;
//! 2. decide each packet with the core against the batch's one snapshot
//!    (`dp::on_vm_frame` / `dp::on_underlay_packet`); the core rewrites the
//!    buffer in place (encapsulation goes into the headroom);
//! 3. carry out the actions: encapsulated packets leave in one `sendmmsg`,
//!    frames for VMs are written to their TAPs;
//! 4. count every packet once, after its outcome is known (sent, or dropped
//!    with a reason; a failed write is `tx_error`); a drop may also become a
//!    rate-limited event for the log (io::events).

use super::events::{drop_event, Limiter, Source, DROP_PACE, LEARN_PACE};
use super::sys::*;
use super::{Shared, State, Tap};
use crate::dp::{self, learn, Action, Counter, Counters, Direction, DropReason, FxMap, Learned, PacketBuf, PortId, Via};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Packets per read batch.
const BATCH: usize = 64;
/// Largest frame or reassembled underlay packet a buffer holds.
const MAX_PACKET: usize = 65535;
/// epoll timeout: the heartbeat advances at least this often.
const TICK_MS: i32 = 500;

const TOKEN_UNDERLAY_V4: u64 = 1 << 32;
const TOKEN_UNDERLAY_V6: u64 = 3 << 32;
const TOKEN_WAKE: u64 = 2 << 32;

pub struct Context {
    pub shared: Arc<Shared>,
    pub wake: i32,
    pub counters: Arc<Counters>,
    pub heartbeat: Arc<AtomicU64>,
    pub seen: Arc<AtomicU64>,
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
    /// Scratch buffers for flow-4 probe copies, and the batch's probes:
    /// (buffer index, index of the frame copied, its encapsulation).
    probe_bufs: Vec<PacketBuf>,
    probes: Vec<(usize, usize, Action)>,
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
            probe_bufs: Vec::new(),
            probes: Vec::new(),
            drops: Limiter::new(DROP_PACE),
            learning: Limiter::new(LEARN_PACE),
            now: Instant::now(),
            ctx: self,
        };
        w.register(w.ctx.shared.underlay.fd_v4(), TOKEN_UNDERLAY_V4);
        if let Some(fd) = w.ctx.shared.underlay.fd_v6() {
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
        while !self.ctx.shared.stop.load(Ordering::Acquire) {
            self.ctx.heartbeat.fetch_add(1, Ordering::Relaxed);
            self.refresh();
            let n = unsafe { epoll_wait(self.epoll_fd(), events.as_mut_ptr(), events.len() as i32, TICK_MS) };
            self.now = Instant::now();
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
            unsafe { epoll_ctl(self.epoll_fd(), EPOLL_CTL_DEL, tap.fd(), std::ptr::null_mut()) };
        }
        let state = self.state.clone();
        for (id, tap) in &state.taps {
            if !self.registered.contains_key(id) {
                self.register(tap.fd(), *id as u64);
                self.registered.insert(*id, tap.clone());
            }
        }
        // The old state (and any TAP only it held) is released: say so.
        self.ctx.seen.store(generation, Ordering::Release);
    }

    fn from_vm(&mut self, port: PortId) {
        let Some(tap) = self.registered.get(&port).cloned() else { return };
        let mut n = 0;
        while n < BATCH {
            let b = &mut self.bufs[n];
            b.reset();
            match tap.recv(b.spare_mut()) {
                Ok(Some(len)) => {
                    b.set_len(len);
                    n += 1;
                }
                _ => break,
            }
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
        let n = self.ctx.shared.underlay.recv_v4(&mut self.bufs).unwrap_or(0);
        self.ctx.counters.inc(Counter::UnderlayRxPackets, n as u64);
        let snap = self.state.snapshot.clone();
        self.actions.clear();
        self.sources.clear();
        self.sources.extend(self.bufs[..n].iter().map(|b| ipv4_source(b.frame())));
        dp::on_underlay_packets(&snap, &mut self.bufs[..n], &mut self.actions);
        self.transmit(Direction::FromUnderlay, n);
    }

    fn from_underlay_v6(&mut self) {
        let n = self.ctx.shared.underlay.recv_v6(&mut self.bufs, &mut self.addrs).unwrap_or(0);
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

    /// Encapsulated copies of the batch's flow-4 ARP probes, one per L2Only
    /// PA, each with the index of the frame it copies.
    fn prepare_probes(&mut self, n: usize) {
        self.probes.clear();
        let snap = &self.state.snapshot;
        let mut used = 0;
        for (i, action) in self.actions[..n].iter().enumerate() {
            let Action::Probe { vsid, .. } = *action else { continue };
            let Some(subnet) = snap.subnet(vsid) else { continue };
            for &t in &subnet.l2only_tunnels {
                if used == self.probe_bufs.len() {
                    self.probe_bufs.push(PacketBuf::new(MAX_PACKET));
                }
                let copy = &mut self.probe_bufs[used];
                copy.reset();
                let frame = self.bufs[i].frame();
                copy.spare_mut()[..frame.len()].copy_from_slice(frame);
                copy.set_len(frame.len());
                let encap = dp::encapsulate(copy, snap.tunnel(t), vsid, snap.flow_id, false);
                self.probes.push((used, i, encap));
                used += 1;
            }
        }
    }

    /// Carry out the first `n` actions and count each outcome. A drop is
    /// also offered to the event limiter, with where it came from.
    fn transmit(&mut self, dir: Direction, n: usize) {
        self.prepare_probes(n);
        let Worker { ctx, state, bufs, actions, sources, drops, learning, now, probe_bufs, probes, .. } = self;
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
        // Encapsulated packets leave together: (buffer, PA, the frame's index, its action).
        let mut encap: Vec<(&PacketBuf, IpAddr, usize, Action)> = Vec::new();
        for (i, (b, action)) in bufs[..n].iter().zip(actions.iter()).enumerate() {
            let flood = |vsid, except: Option<PortId>, dropped: &mut dyn FnMut(DropReason, usize)| {
                if let Some(subnet) = snap.subnet(vsid) {
                    for &p in subnet.ports.iter().filter(|&&p| Some(p) != except) {
                        if let Err(reason) = send_to_port(state, p, b) {
                            dropped(reason, i);
                        }
                    }
                }
            };
            let result = match *action {
                Action::Deliver { port, .. } | Action::Reject { port, .. } => send_to_port(state, port, b),
                Action::Flood { vsid, except } => {
                    flood(vsid, except, &mut dropped);
                    Ok(())
                }
                Action::Probe { vsid, except } => {
                    flood(vsid, Some(except), &mut dropped);
                    Ok(())
                }
                Action::Encap { pa, .. } => {
                    encap.push((b, pa, i, *action));
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
        for &(k, i, action) in probes.iter() {
            match action {
                Action::Encap { pa, .. } => encap.push((&probe_bufs[k], pa, i, action)),
                Action::Drop(reason) => dropped(reason, i),
                _ => {}
            }
        }
        if encap.is_empty() {
            return;
        }
        let packets: Vec<(&PacketBuf, IpAddr)> = encap.iter().map(|&(b, pa, _, _)| (b, pa)).collect();
        ctx.shared.underlay.send_batch(&packets, |k, r| {
            let (b, pa, i, action) = encap[k];
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

/// The outer source address of a packet the IPv4 underlay socket read.
fn ipv4_source(pkt: &[u8]) -> Option<Source> {
    let src: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
    Some(Source::Underlay(IpAddr::from(src)))
}

fn send_to_port(state: &State, port: PortId, b: &PacketBuf) -> Result<(), DropReason> {
    let tap = state.taps.get(&port).ok_or(DropReason::PortGone)?;
    tap.send(b.frame()).map_err(|_| DropReason::TxError)
}
