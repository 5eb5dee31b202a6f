//! Steps 3–5 of a worker's pipeline (see `io::worker`) as decisions without
//! I/O: given a batch's frames and the actions the core decided for them,
//! make what leaves besides the frames themselves (the MTU-sized segments of
//! a large TCP segment, a flow-4 probe's copy per L2Only PA), finish
//! checksums the VM left partial, merge consecutive decapsulated segments of
//! one TCP flow into one write, hand every write to [`Effects`] in order, and
//! count each packet once, after its outcome is known.
//!
//! Memory is bounded whatever a batch claims: extra packets come from a pool
//! of [`EXTRA_POOL`] buffers; when it is used up, the packets queued so far
//! are sent and the pool is used again. A 64 KB segment cut at the smallest
//! segment size the core lets through is simply sent in several rounds.

use super::learn::{self, Learned};
use super::offload::{self, Coalescer, Gso};
use super::{encapsulate, outer_header_len, Action, Counter, Counters, Direction, DropReason, PacketBuf, PortId, Snapshot, Via, Vsid};
use std::net::IpAddr;

/// Extra packets held at once (each at most the largest PA MTU).
pub const EXTRA_POOL: usize = 256;
/// The most a large segment leaving whole for the kernel to cut may be: an IPv4 total length.
pub const MAX_KERNEL_SEGMENTED: usize = 65_535;
/// An extra buffer's first size; one grows only for a segment that needs more (a jumbo PA MTU).
const EXTRA_CAPACITY: usize = 2048;

/// An encapsulated packet to send, outer header onwards, to `pa`.
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    pub buf: &'a PacketBuf,
    pub pa: IpAddr,
    /// A large TCP segment that leaves whole, out of this interface, for
    /// the kernel to cut if the path needs it.
    pub kernel_segments: Option<u32>,
}

/// What the pipeline needs of the world: the writes it decides, and where
/// its reports go. The worker's implementation does the I/O; a test's or
/// the fuzzer's only looks.
pub trait Effects {
    /// Write a frame to a local VM port now.
    fn to_port(&mut self, port: PortId, buf: &PacketBuf) -> Result<(), DropReason>;
    /// Whether the VM behind `port` takes large TCP segments of this kind (else they are cut first).
    fn port_takes(&self, port: PortId, gso: Gso) -> bool;
    /// The batch's writes to ports are done.
    fn flush_ports(&mut self);
    /// Send a frame out of the HNV gateway's uplink now.
    fn to_uplink(&mut self, buf: &PacketBuf) -> Result<(), DropReason>;
    /// Send encapsulated packets, in this order; `done(k, sent)` once for each.
    fn to_underlay(&mut self, pkts: &[Outgoing], done: &mut dyn FnMut(usize, bool));
    /// Whether a large TCP segment may leave whole for the kernel to cut.
    fn kernel_segments(&self) -> bool;
    /// Frame `frame` of the batch was dropped (already counted): for the rate-limited log.
    fn dropped(&mut self, frame: usize, reason: DropReason);
    /// An address for the control plane to learn or refresh (flow 4).
    fn learned(&mut self, learned: Learned);
}

/// Which buffer a queued packet is in.
#[derive(Clone, Copy)]
enum Held {
    Frame(usize),
    Extra(usize),
}

/// What a queued packet is of its frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The frame itself (or its first segment): sent, it reports its
    /// inner frame to learning, once per frame.
    First,
    /// Another segment of it.
    Segment,
    /// A flow-4 probe's copy.
    Probe,
}

/// An encapsulated packet waiting for the next send, made from frame `from`.
#[derive(Clone, Copy)]
struct Queued {
    held: Held,
    pa: IpAddr,
    kernel_segments: Option<u32>,
    from: usize,
    /// How it is counted once sent.
    action: Action,
    part: Part,
}

/// A worker's scratch state for carrying out batches; reused from batch to batch.
pub struct Pipeline {
    extra: Vec<PacketBuf>,
    /// Extra buffers holding queued packets.
    used: usize,
    queue: Vec<Queued>,
    /// Decapsulated TCP segments of one flow being merged for one write: to
    /// which port and VSID, and (frame index, length) of each.
    merge: PacketBuf,
    coalescer: Coalescer,
    merging: Option<(PortId, Vsid)>,
    merged: Vec<(usize, usize)>,
}

/// Everything one `carry_out` call works on.
pub struct Batch<'a> {
    pub snap: &'a Snapshot,
    pub dir: Direction,
    pub bufs: &'a mut [PacketBuf],
    pub actions: &'a [Action],
    /// The outer source address of each packet from the underlay (learning trusts only the PA a record names).
    pub outer_src: &'a [Option<IpAddr>],
    pub counters: &'a Counters,
}

impl Pipeline {
    /// `merge_capacity`: the largest frame a port takes (a merged segment grows to it).
    pub fn new(merge_capacity: usize) -> Pipeline {
        Pipeline {
            extra: Vec::new(),
            used: 0,
            queue: Vec::with_capacity(EXTRA_POOL),
            merge: PacketBuf::new(merge_capacity),
            coalescer: Coalescer::default(),
            merging: None,
            merged: Vec::new(),
        }
    }

    /// Forget a batch abandoned half way (a panic while carrying it out).
    pub fn reset(&mut self) {
        self.used = 0;
        self.queue.clear();
        self.coalescer = Coalescer::default();
        self.merging = None;
        self.merged.clear();
    }

    /// Extra buffers allocated so far (bounded by [`EXTRA_POOL`]).
    pub fn extra_buffers(&self) -> usize {
        self.extra.len()
    }

    /// Carry out the batch's actions, in frame order, and count each outcome.
    pub fn carry_out(&mut self, b: Batch, fx: &mut dyn Effects) {
        let Batch { snap, dir, bufs, actions, outer_src, counters } = b;
        for i in 0..actions.len() {
            let action = actions[i];
            // Consecutive TCP segments of one flow for one VM go up as one
            // (a segment the kernel already merged goes up as it is).
            // (To a VM that takes large segments, or they would only be cut again.)
            let mergeable = match (action, bufs[i].offload.gso) {
                (Action::Deliver { port, vsid, via: Via::Decapsulated }, Gso::None)
                    if fx.port_takes(port, Gso::Tcp4) && fx.port_takes(port, Gso::Tcp6) =>
                {
                    Some((port, vsid))
                }
                _ => None,
            };
            if let Some((port, vsid)) = mergeable {
                let frame = &bufs[i];
                if self.merging == Some((port, vsid)) && self.coalescer.append(&mut self.merge, frame.frame(), frame.offload) {
                    self.merged.push((i, frame.len()));
                    continue;
                }
                self.flush_merge(snap, dir, counters, fx);
                if self.coalescer.start(&mut self.merge, frame.frame(), frame.offload) {
                    self.merging = Some((port, vsid));
                    self.merged.push((i, frame.len()));
                    continue;
                }
            } else {
                self.flush_merge(snap, dir, counters, fx);
                if matches!(action, Action::Deliver { via: Via::Decapsulated, .. }) && bufs[i].offload.gso != Gso::None {
                    counters.inc(Counter::AggregatedPackets, 1);
                }
            }
            match action {
                Action::Deliver { port, .. } if bufs[i].offload.gso != Gso::None && !fx.port_takes(port, bufs[i].offload.gso) => {
                    self.deliver_cut(snap, dir, counters, fx, bufs, i, action, port);
                }
                Action::Deliver { port, vsid, via } => match fx.to_port(port, &bufs[i]) {
                    Ok(()) => {
                        counters.account(snap, dir, &action, bufs[i].len());
                        if let (Via::Decapsulated, Some(from)) = (via, outer_src.get(i).copied().flatten()) {
                            if let Some(l) = learn::from_underlay(snap, vsid, from, bufs[i].frame()) {
                                fx.learned(l);
                            }
                        }
                    }
                    Err(reason) => drop(counters, dir, fx, i, reason),
                },
                Action::Reject { port, .. } => match fx.to_port(port, &bufs[i]) {
                    Ok(()) => counters.account(snap, dir, &action, bufs[i].len()),
                    Err(reason) => drop(counters, dir, fx, i, reason),
                },
                Action::Flood { vsid, except } => {
                    flood(snap, dir, counters, fx, i, &bufs[i], vsid, except);
                    counters.account(snap, dir, &action, bufs[i].len());
                }
                Action::Probe { vsid, except } => {
                    flood(snap, dir, counters, fx, i, &bufs[i], vsid, Some(except));
                    counters.account(snap, dir, &action, bufs[i].len());
                    self.probe(snap, dir, counters, fx, bufs, i, vsid);
                }
                Action::Encap { pa, .. } => self.encap(snap, dir, counters, fx, bufs, i, action, pa),
                Action::Uplink => match fx.to_uplink(&bufs[i]) {
                    Ok(()) => counters.account(snap, dir, &action, bufs[i].len()),
                    Err(reason) => drop(counters, dir, fx, i, reason),
                },
                // The worker carries out the NAT before: one left is a bug.
                Action::Nat { .. } => drop(counters, dir, fx, i, DropReason::InternalError),
                Action::Consumed => {}
                Action::Drop(reason) => drop(counters, dir, fx, i, reason),
            }
        }
        self.flush_merge(snap, dir, counters, fx);
        self.send(snap, dir, bufs, counters, fx);
        fx.flush_ports();
    }

    /// A large TCP segment for a VM that does not take them: cut into
    /// segments (through the pool, in rounds) and written one by one;
    /// counted once, as the frame it was.
    #[allow(clippy::too_many_arguments)]
    fn deliver_cut(&mut self, snap: &Snapshot, dir: Direction, counters: &Counters, fx: &mut dyn Effects, bufs: &[PacketBuf], i: usize, action: Action, port: PortId) {
        let off = bufs[i].offload;
        let count = offload::segment_count(bufs[i].len(), &off);
        if count == 0 {
            return drop(counters, dir, fx, i, DropReason::Malformed);
        }
        // The pool's buffers are free: whatever is queued is sent first.
        self.send(snap, dir, bufs, counters, fx);
        let mut first = 0;
        while first < count {
            let n = (count - first).min(EXTRA_POOL);
            while self.extra.len() < n {
                self.extra.push(PacketBuf::new(EXTRA_CAPACITY));
            }
            if !offload::segment(bufs[i].frame(), 0, &off, first, &mut self.extra[..n]) {
                return drop(counters, dir, fx, i, DropReason::Malformed);
            }
            for seg in &self.extra[..n] {
                if let Err(reason) = fx.to_port(port, seg) {
                    return drop(counters, dir, fx, i, reason);
                }
            }
            first += n;
        }
        counters.account(snap, dir, &action, bufs[i].len());
    }

    /// Flow 4: a copy of the ARP request, encapsulated to each PA holding an L2Only record of the VSID.
    #[allow(clippy::too_many_arguments)]
    fn probe(&mut self, snap: &Snapshot, dir: Direction, counters: &Counters, fx: &mut dyn Effects, bufs: &[PacketBuf], i: usize, vsid: Vsid) {
        let Some(subnet) = snap.subnet(vsid) else { return };
        let frame = bufs[i].frame();
        for &t in &subnet.l2only_tunnels {
            let k = self.take_extra(snap, dir, counters, fx, bufs, frame.len());
            let copy = &mut self.extra[k];
            copy.spare_mut()[..frame.len()].copy_from_slice(frame);
            copy.set_len(frame.len());
            let action = encapsulate(copy, snap.tunnel(t), vsid, snap.flow_id, false);
            if let Action::Encap { pa, .. } = action {
                self.queue.push(Queued { held: Held::Extra(k), pa, kernel_segments: None, from: i, action, part: Part::Probe });
            } else {
                self.used -= 1;
                drop(counters, dir, fx, i, if let Action::Drop(reason) = action { reason } else { DropReason::NoProviderAddress });
            }
        }
    }

    /// An encapsulated frame: queued as it is (its partial checksum
    /// finished), whole for the kernel to cut, or cut here into segments.
    #[allow(clippy::too_many_arguments)]
    fn encap(&mut self, snap: &Snapshot, dir: Direction, counters: &Counters, fx: &mut dyn Effects, bufs: &mut [PacketBuf], i: usize, action: Action, pa: IpAddr) {
        let outer = outer_header_len(pa);
        let off = bufs[i].offload;
        let whole = |kernel_segments| Queued { held: Held::Frame(i), pa, kernel_segments, from: i, action, part: Part::First };
        if off.gso == Gso::None {
            if let Some((start, offset)) = off.csum {
                // The wire needs the checksum the VM left to finish.
                offload::complete_checksum(&mut bufs[i].frame_mut()[outer..], start as usize, offset as usize);
            }
            self.queue.push(whole(None));
            return;
        }
        let b = &bufs[i];
        if fx.kernel_segments() && b.len() <= MAX_KERNEL_SEGMENTED && off.csum.is_some() {
            if let Some(ifindex) = snap.pa_ifindex(pa).filter(|&x| x != 0) {
                counters.inc(Counter::KernelSegmentedFrames, 1);
                self.queue.push(whole(Some(ifindex)));
                return;
            }
        }
        let count = offload::segment_count(b.len() - outer, &off);
        if count == 0 {
            return drop(counters, dir, fx, i, DropReason::Malformed);
        }
        counters.inc(Counter::SegmentedFrames, 1);
        let mut first = 0;
        while first < count {
            if self.used == EXTRA_POOL {
                self.send(snap, dir, bufs, counters, fx);
            }
            let n = (count - first).min(EXTRA_POOL - self.used);
            while self.extra.len() < self.used + n {
                self.extra.push(PacketBuf::new(EXTRA_CAPACITY));
            }
            if !offload::segment(b.frame(), outer, &off, first, &mut self.extra[self.used..self.used + n]) {
                return drop(counters, dir, fx, i, DropReason::Malformed);
            }
            for k in self.used..self.used + n {
                let part = if k == self.used && first == 0 { Part::First } else { Part::Segment };
                self.queue.push(Queued { held: Held::Extra(k), pa, kernel_segments: None, from: i, action, part });
            }
            self.used += n;
            first += n;
        }
    }

    /// An empty extra buffer with room for `len` bytes, sending what is
    /// queued first if the pool is used up.
    fn take_extra(&mut self, snap: &Snapshot, dir: Direction, counters: &Counters, fx: &mut dyn Effects, bufs: &[PacketBuf], len: usize) -> usize {
        if self.used == EXTRA_POOL {
            self.send(snap, dir, bufs, counters, fx);
        }
        let k = self.used;
        if k == self.extra.len() {
            self.extra.push(PacketBuf::new(EXTRA_CAPACITY));
        }
        self.extra[k].reset();
        if self.extra[k].capacity() < len {
            self.extra[k] = PacketBuf::new(len);
        }
        self.used += 1;
        k
    }

    /// Write the merged segments (one large one, or the single copy) to their port.
    fn flush_merge(&mut self, snap: &Snapshot, dir: Direction, counters: &Counters, fx: &mut dyn Effects) {
        let Some((port, vsid)) = self.merging.take() else { return };
        counters.inc(Counter::CoalescedPackets, self.merged.len() as u64 - 1);
        self.coalescer.finish(&mut self.merge);
        let result = fx.to_port(port, &self.merge);
        for &(i, len) in &self.merged {
            match result {
                Ok(()) => counters.account(snap, dir, &Action::Deliver { port, vsid, via: Via::Decapsulated }, len),
                Err(reason) => drop(counters, dir, fx, i, reason),
            }
        }
        self.merged.clear();
    }

    /// Send every queued packet in one go and count each; the pool is free again.
    fn send(&mut self, snap: &Snapshot, dir: Direction, bufs: &[PacketBuf], counters: &Counters, fx: &mut dyn Effects) {
        if self.queue.is_empty() {
            self.used = 0;
            return;
        }
        let (queue, extra) = (&self.queue, &self.extra);
        let at = |h: Held| match h {
            Held::Frame(i) => &bufs[i],
            Held::Extra(k) => &extra[k],
        };
        let pkts: Vec<Outgoing> = queue.iter().map(|q| Outgoing { buf: at(q.held), pa: q.pa, kernel_segments: q.kernel_segments }).collect();
        let mut outcomes: Vec<(usize, bool)> = Vec::with_capacity(pkts.len());
        fx.to_underlay(&pkts, &mut |k, sent| outcomes.push((k, sent)));
        for (k, sent) in outcomes {
            let q = queue[k];
            if !sent {
                drop(counters, dir, fx, q.from, DropReason::TxError);
                continue;
            }
            let b = at(q.held);
            counters.account(snap, dir, &q.action, b.len());
            match (q.part, q.action) {
                (Part::Probe, _) => counters.inc(Counter::ArpProbes, 1),
                (Part::First, Action::Encap { vsid, .. }) => {
                    if let Some(l) = snap.local_pa_for(q.pa).and_then(|local| learn::from_vm(snap, vsid, local, &b.frame()[outer_header_len(q.pa)..])) {
                        fx.learned(l);
                    }
                }
                _ => {}
            }
        }
        self.queue.clear();
        self.used = 0;
    }
}

/// Write a broadcast to every port of the VSID but `except`; a port that fails counts a drop.
#[allow(clippy::too_many_arguments)]
fn flood(snap: &Snapshot, dir: Direction, counters: &Counters, fx: &mut dyn Effects, i: usize, b: &PacketBuf, vsid: Vsid, except: Option<PortId>) {
    let Some(subnet) = snap.subnet(vsid) else { return };
    for &p in subnet.ports.iter().filter(|&&p| Some(p) != except) {
        if let Err(reason) = fx.to_port(p, b) {
            drop(counters, dir, fx, i, reason);
        }
    }
}

fn drop(counters: &Counters, dir: Direction, fx: &mut dyn Effects, i: usize, reason: DropReason) {
    counters.count_drop(dir, reason);
    fx.dropped(i, reason);
}
