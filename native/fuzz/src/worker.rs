//! What `io/worker.rs` does with a batch between the decision and the
//! sockets, without the sockets: its steps (`prepare_extras`, the merge
//! loop and learning calls of `transmit`) over the same `dp` functions, with
//! its buffer sizes, and with no GSO port (the worker segments itself).
//! A stand-in: when the worker's packet logic moves into `dp` as pure
//! functions, the targets call those and this file goes.

use nvgred_native::dp::offload::{self, Coalescer, Gso};
use nvgred_native::dp::{self, learn, Action, DropReason, Learned, PacketBuf, PortId, Snapshot, Via, Vsid};
use std::net::IpAddr;

/// As `io/worker.rs`: the largest frame or reassembled packet a buffer holds.
pub const MAX_PACKET: usize = 65535 + 256;
/// As `io/worker.rs`: the buffers of segments and probe copies.
pub const EXTRA_CAPACITY: usize = 9216;

/// How an encapsulated frame leaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Leaves {
    Whole,
    /// As the segments cut from it.
    Segmented,
}

/// An encapsulated packet made from frame `from` of the batch (a segment or
/// a probe copy), in `Extras::bufs[buf]`.
#[derive(Clone, Copy, Debug)]
pub struct Extra {
    pub buf: usize,
    pub from: usize,
    pub action: Action,
}

/// The packets `prepare_extras` makes, in reusable buffers.
#[derive(Default)]
pub struct Extras {
    pub bufs: Vec<PacketBuf>,
    pub list: Vec<Extra>,
    pub leaves: Vec<Leaves>,
}

/// `Worker::prepare_extras`: large TCP segments cut into encapsulated
/// segments, partial checksums finished, flow-4 probes copied per L2Only PA.
/// A segment that cannot be cut turns its frame's action into a drop.
pub fn prepare_extras(snap: &Snapshot, bufs: &mut [PacketBuf], actions: &mut [Action], x: &mut Extras) {
    x.list.clear();
    x.leaves.clear();
    x.leaves.resize(bufs.len(), Leaves::Whole);
    let mut used = 0;
    for i in 0..bufs.len() {
        match actions[i] {
            Action::Encap { pa, .. } => {
                let outer = dp::outer_header_len(pa);
                let b = &mut bufs[i];
                let off = b.offload;
                if off.gso != Gso::None {
                    let count = offload::segment_count(b.len() - outer, &off);
                    while x.bufs.len() < used + count {
                        x.bufs.push(PacketBuf::new(EXTRA_CAPACITY));
                    }
                    let ok = count > 0 && offload::segment(b.frame(), outer, &off, &mut x.bufs[used..used + count]);
                    x.leaves[i] = Leaves::Segmented;
                    if !ok {
                        actions[i] = Action::Drop(DropReason::Malformed);
                        continue;
                    }
                    for k in used..used + count {
                        x.list.push(Extra { buf: k, from: i, action: actions[i] });
                    }
                    used += count;
                } else if let Some((start, offset)) = off.csum {
                    offload::complete_checksum(&mut b.frame_mut()[outer..], start as usize, offset as usize);
                }
            }
            Action::Probe { vsid, .. } => {
                let Some(subnet) = snap.subnet(vsid) else { continue };
                for &t in &subnet.l2only_tunnels {
                    if used == x.bufs.len() {
                        x.bufs.push(PacketBuf::new(EXTRA_CAPACITY));
                    }
                    let copy = &mut x.bufs[used];
                    copy.reset();
                    let frame = bufs[i].frame();
                    copy.spare_mut()[..frame.len()].copy_from_slice(frame);
                    copy.set_len(frame.len());
                    let action = dp::encapsulate(copy, snap.tunnel(t), vsid, snap.flow_id, false);
                    x.list.push(Extra { buf: used, from: i, action });
                    used += 1;
                }
            }
            _ => {}
        }
    }
}

/// What leaves for the underlay, in the order `transmit` queues it: in frame
/// order, a frame whole or as its segments and probe copies. Each with the
/// frame it came from and its action.
pub fn encapsulated<'a>(bufs: &'a [PacketBuf], actions: &[Action], x: &'a Extras) -> Vec<(&'a PacketBuf, usize, Action)> {
    let mut out = Vec::new();
    let mut extras = x.list.iter().peekable();
    let mut take_extras = |upto: usize, out: &mut Vec<(&'a PacketBuf, usize, Action)>| {
        while let Some(e) = extras.next_if(|e| e.from < upto) {
            if matches!(e.action, Action::Encap { .. }) {
                out.push((&x.bufs[e.buf], e.from, e.action));
            }
        }
    };
    for (i, (b, &action)) in bufs.iter().zip(actions).enumerate() {
        take_extras(i, &mut out);
        if matches!(action, Action::Encap { .. }) && x.leaves[i] == Leaves::Whole {
            out.push((b, i, action));
        }
    }
    take_extras(bufs.len(), &mut out);
    out
}

/// The learning report `transmit` makes for a packet sent to the underlay
/// (from frame action `frame_action`, leaving with `action`).
pub fn learned_from_vm(snap: &Snapshot, frame_action: Action, action: Action, pkt: &PacketBuf) -> Option<Learned> {
    match (frame_action, action) {
        (Action::Probe { .. }, _) => None,
        (_, Action::Encap { pa, vsid, .. }) => {
            let local = snap.local_pa_for(pa)?;
            learn::from_vm(snap, vsid, local, &pkt.frame()[dp::outer_header_len(pa)..])
        }
        _ => None,
    }
}

/// One merge buffer, reused like the worker's.
pub struct Merger {
    pub buf: PacketBuf,
    coalescer: Coalescer,
}

impl Default for Merger {
    fn default() -> Merger {
        Merger { buf: PacketBuf::new(MAX_PACKET), coalescer: Coalescer::default() }
    }
}

/// A TAP write of decapsulated frames: one frame as it is, or several merged.
pub enum Write<'a> {
    Frame { i: usize },
    Merged { port: PortId, vsid: Vsid, frames: &'a [usize], buf: &'a PacketBuf },
}

/// The TAP side of `transmit` for a batch from the underlay: consecutive
/// decapsulated TCP segments of one flow for one port merged into one write,
/// and the learning report of each frame delivered as it is (sent from
/// `sources[i]`). `write` sees every TAP write and report in order.
pub fn deliver(
    snap: &Snapshot,
    bufs: &[PacketBuf],
    actions: &[Action],
    sources: &[IpAddr],
    m: &mut Merger,
    write: &mut dyn FnMut(Write, Option<Learned>),
) {
    let mut merging: Option<(PortId, Vsid)> = None;
    let mut merged: Vec<usize> = Vec::new();
    let flush = |m: &mut Merger, merging: &mut Option<(PortId, Vsid)>, merged: &mut Vec<usize>, write: &mut dyn FnMut(Write, Option<Learned>)| {
        let Some((port, vsid)) = merging.take() else { return };
        m.coalescer.finish(&mut m.buf);
        write(Write::Merged { port, vsid, frames: merged, buf: &m.buf }, None);
        merged.clear();
    };
    for (i, (b, &action)) in bufs.iter().zip(actions).enumerate() {
        if let (Action::Deliver { port, vsid, via: Via::Decapsulated }, Gso::None) = (action, b.offload.gso) {
            if merging == Some((port, vsid)) && m.coalescer.append(&mut m.buf, b.frame(), b.offload) {
                merged.push(i);
                continue;
            }
            flush(m, &mut merging, &mut merged, write);
            if m.coalescer.start(&mut m.buf, b.frame(), b.offload) {
                merging = Some((port, vsid));
                merged.push(i);
                continue;
            }
        } else {
            flush(m, &mut merging, &mut merged, write);
        }
        let report = match action {
            Action::Deliver { vsid, via: Via::Decapsulated, .. } => learn::from_underlay(snap, vsid, sources[i], b.frame()),
            _ => None,
        };
        write(Write::Frame { i }, report);
    }
    flush(m, &mut merging, &mut merged, write);
}
