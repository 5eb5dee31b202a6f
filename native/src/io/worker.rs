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
//!    with a reason; a failed write is `tx_error`).

use super::sys::*;
use super::{Shared, State, Tap};
use crate::dp::{self, Action, Counter, Counters, Direction, DropReason, FxMap, PacketBuf, PortId};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Packets per read batch.
const BATCH: usize = 64;
/// Largest frame or reassembled underlay packet a buffer holds.
const MAX_PACKET: usize = 65535;
/// epoll timeout: the heartbeat advances at least this often.
const TICK_MS: i32 = 500;

const TOKEN_UNDERLAY: u64 = 1 << 32;
const TOKEN_WAKE: u64 = 2 << 32;

pub struct Context {
    pub shared: Arc<Shared>,
    pub wake: i32,
    pub counters: Arc<Counters>,
    pub heartbeat: Arc<AtomicU64>,
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
            ctx: self,
        };
        w.register(w.ctx.shared.underlay.fd(), TOKEN_UNDERLAY);
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
            for ev in events.iter().take(n.max(0) as usize) {
                match { ev.data } {
                    TOKEN_WAKE => {
                        let mut v = 0u64;
                        unsafe { read(self.ctx.wake, &mut v as *mut u64 as *mut _, 8) };
                    }
                    TOKEN_UNDERLAY => self.from_underlay(),
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
        for b in &mut self.bufs[..n] {
            self.actions.push(dp::on_vm_frame(&snap, port, b));
        }
        self.transmit(Direction::FromVm, n);
    }

    fn from_underlay(&mut self) {
        let n = self.ctx.shared.underlay.recv_batch(&mut self.bufs).unwrap_or(0);
        self.ctx.counters.inc(Counter::UnderlayRxPackets, n as u64);
        let snap = self.state.snapshot.clone();
        self.actions.clear();
        for b in &mut self.bufs[..n] {
            self.actions.push(dp::on_underlay_packet(&snap, b));
        }
        self.transmit(Direction::FromUnderlay, n);
    }

    /// Carry out the first `n` actions and count each outcome.
    fn transmit(&mut self, dir: Direction, n: usize) {
        let counters = &self.ctx.counters;
        let state = &self.state;
        let mut encap: Vec<(&PacketBuf, IpAddr)> = Vec::new();
        let mut encap_actions: Vec<Action> = Vec::new();
        for (b, action) in self.bufs[..n].iter().zip(&self.actions) {
            let result = match *action {
                Action::Deliver { port, .. } => send_to_port(state, port, b),
                Action::Flood { vsid, except } => {
                    if let Some(subnet) = state.snapshot.subnet(vsid) {
                        for &p in subnet.ports.iter().filter(|&&p| p != except) {
                            if let Err(reason) = send_to_port(state, p, b) {
                                counters.count_drop(dir, reason);
                            }
                        }
                    }
                    Ok(())
                }
                Action::Encap { pa, .. } => {
                    encap.push((b, pa));
                    encap_actions.push(*action);
                    continue;
                }
                Action::Drop(_) => Ok(()),
            };
            match result {
                Ok(()) => counters.account(&state.snapshot, dir, action, b.len()),
                Err(reason) => counters.count_drop(dir, reason),
            }
        }
        if !encap.is_empty() {
            self.ctx.shared.underlay.send_batch(&encap, |i, r| match r {
                Ok(()) => counters.account(&state.snapshot, dir, &encap_actions[i], encap[i].0.len()),
                Err(_) => counters.count_drop(dir, DropReason::TxError),
            });
        }
    }
}

fn send_to_port(state: &State, port: PortId, b: &PacketBuf) -> Result<(), DropReason> {
    let tap = state.taps.get(&port).ok_or(DropReason::PortGone)?;
    tap.send(b.frame()).map_err(|_| DropReason::TxError)
}
