//! Per-worker counters: written by one worker thread, summed by readers.
//!
//! Each worker owns one [`Counters`]; only it writes, with relaxed load+store
//! (a plain add, no locked instruction), and the control plane sums all
//! workers in one bulk read per scrape. Layout: the [`Counter`] totals, then
//! one drop counter per (direction, reason).

use super::encap::outer_header_len;
use super::{Action, Direction, DropReason, FxMap, Snapshot, Via, Vsid};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($variant:ident => $name:literal,)*) => {
        /// Totals besides drops. Byte counts are of the tenant's Ethernet
        /// frames (the inner frame), so they compare across directions.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Counter { $($variant,)* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];
            pub fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }
        }
    };
}

counters! {
    VmRxPackets => "vm_rx_packets",
    UnderlayRxPackets => "underlay_rx_packets",
    EncapPackets => "encap_packets",
    EncapBytes => "encap_bytes",
    DecapPackets => "decap_packets",
    DecapBytes => "decap_bytes",
    ArpReplies => "arp_replies",
    NdReplies => "nd_replies",
    IcmpErrors => "icmp_errors",
    ArpProbes => "arp_probes",
    SegmentedFrames => "segmented_frames",
    KernelSegmentedFrames => "kernel_segmented_frames",
    CoalescedPackets => "coalesced_packets",
    AggregatedPackets => "aggregated_packets",
    IcmpEchoReplies => "icmp_echo_replies",
    LocalSwitched => "local_switched_packets",
    Routed => "routed_packets",
    Flooded => "flooded_packets",
    WorkerPanics => "worker_panics",
    VmAdapterErrors => "vm_adapter_errors",
    NatOutboundPackets => "nat_outbound_packets",
    NatInboundPackets => "nat_inbound_packets",
    NatMappingsCreated => "nat_mappings_created",
    NatMappingsExpired => "nat_mappings_expired",
    NatMappingsRefused => "nat_mappings_refused",
    NatMappingsRemoved => "nat_mappings_removed",
    NatMirrorApplied => "nat_mirror_applied",
    UplinkRxPackets => "uplink_rx_packets",
    UplinkTxPackets => "uplink_tx_packets",
}

/// Per-VSID slots: encap packets, encap bytes, decap packets, decap bytes.
pub const VSID_COUNTERS: usize = 4;

pub struct Counters {
    values: Box<[AtomicU64]>,
    /// `VSID_COUNTERS` per slot of [`VsidSlots`].
    per_vsid: Box<[AtomicU64]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new(0)
    }
}

fn zeroed(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Which VSIDs have their own counters. A slot, once given, stays with its
/// VSID for the life of the dataplane, so its counters only ever grow;
/// VSIDs beyond the capacity are counted in the totals only (a host with
/// 10,000 tenants must not explode the series count).
#[derive(Debug, Default)]
pub struct VsidSlots {
    slots: FxMap<Vsid, u32>,
    capacity: u32,
}

impl VsidSlots {
    pub fn new(capacity: u32) -> VsidSlots {
        VsidSlots { slots: FxMap::default(), capacity }
    }

    /// The VSID's slot, assigning the next free one while there is one.
    pub fn slot(&mut self, vsid: Vsid) -> Option<u32> {
        let next = self.slots.len() as u32;
        if next < self.capacity {
            Some(*self.slots.entry(vsid).or_insert(next))
        } else {
            self.slots.get(&vsid).copied()
        }
    }

    /// Every VSID that has a slot, with it.
    pub fn assigned(&self) -> impl Iterator<Item = (Vsid, u32)> + '_ {
        self.slots.iter().map(|(v, s)| (*v, *s))
    }
}

impl Counters {
    /// Counters with room for `vsid_slots` per-VSID slots.
    pub fn new(vsid_slots: u32) -> Counters {
        Counters { values: zeroed(Self::LEN), per_vsid: zeroed(vsid_slots as usize * VSID_COUNTERS) }
    }

    pub const LEN: usize = Counter::ALL.len() + Direction::ALL.len() * DropReason::COUNT;

    /// Names of the slots, in layout order: totals, then `drop:<direction>:<reason>`.
    pub fn names() -> Vec<String> {
        let mut names: Vec<String> = Counter::ALL.iter().map(|c| c.name().to_string()).collect();
        for d in Direction::ALL {
            for r in DropReason::ALL {
                names.push(format!("drop:{}:{}", d.name(), r.name()));
            }
        }
        names
    }

    #[inline]
    pub fn inc(&self, c: Counter, n: u64) {
        add(&self.values[c as usize], n)
    }

    #[inline]
    pub fn count_drop(&self, dir: Direction, reason: DropReason) {
        self.count_drops(dir, reason, 1)
    }

    /// Where the drop counter of (`dir`, `reason`) is in the layout.
    pub const fn drop_slot(dir: Direction, reason: DropReason) -> usize {
        Counter::ALL.len() + dir as usize * DropReason::COUNT + reason as usize
    }

    /// `n` drops at once (a batch lost whole).
    pub fn count_drops(&self, dir: Direction, reason: DropReason, n: u64) {
        add(&self.values[Self::drop_slot(dir, reason)], n);
    }

    #[inline]
    fn inc_vsid(&self, snap: &Snapshot, vsid: Vsid, first: usize, bytes: usize) {
        if let Some(slot) = snap.subnet(vsid).and_then(|s| s.counter_slot) {
            let base = slot as usize * VSID_COUNTERS + first;
            add(&self.per_vsid[base], 1);
            add(&self.per_vsid[base + 1], bytes as u64);
        }
    }

    /// Count an action once it has been carried out; `len` is the buffer's
    /// length as sent (outer header included for `Encap`).
    #[inline]
    pub fn account(&self, snap: &Snapshot, dir: Direction, action: &Action, len: usize) {
        match *action {
            Action::Deliver { via, .. } => match via {
                Via::Switched => self.inc(Counter::LocalSwitched, 1),
                Via::Routed => self.inc(Counter::Routed, 1),
                Via::ArpReply => self.inc(Counter::ArpReplies, 1),
                Via::NeighborAdvert => self.inc(Counter::NdReplies, 1),
                Via::EchoReply => self.inc(Counter::IcmpEchoReplies, 1),
                Via::Decapsulated => {
                    self.inc(Counter::DecapPackets, 1);
                    self.inc(Counter::DecapBytes, len as u64);
                    if let Action::Deliver { vsid, .. } = *action {
                        self.inc_vsid(snap, vsid, 2, len);
                    }
                }
            },
            Action::Flood { .. } | Action::Probe { .. } => self.inc(Counter::Flooded, 1),
            Action::Reject { reason, .. } => {
                self.count_drop(dir, reason);
                self.inc(Counter::IcmpErrors, 1)
            }
            Action::Encap { pa, vsid, routed } => {
                let inner = len.saturating_sub(outer_header_len(pa));
                self.inc(Counter::EncapPackets, 1);
                self.inc(Counter::EncapBytes, inner as u64);
                self.inc_vsid(snap, vsid, 0, inner);
                if routed {
                    self.inc(Counter::Routed, 1)
                }
            }
            Action::Drop(reason) => self.count_drop(dir, reason),
            Action::Uplink => self.inc(Counter::UplinkTxPackets, 1),
            // Carried out (and counted) by the worker before: never here.
            Action::Nat { .. } => self.count_drop(dir, DropReason::InternalError),
            Action::Consumed => {}
        }
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Relaxed)
    }

    /// Add this worker's values into `out` (of length [`Counters::LEN`]).
    pub fn sum_into(&self, out: &mut [u64]) {
        sum(&self.values, out)
    }

    /// Add this worker's per-VSID values into `out` (`VSID_COUNTERS` per slot).
    pub fn sum_vsid_into(&self, out: &mut [u64]) {
        sum(&self.per_vsid, out)
    }
}

/// Single writer: only the owning worker adds, so a relaxed load and store
/// (a plain add, no locked instruction) is enough.
#[inline]
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

fn sum(values: &[AtomicU64], out: &mut [u64]) {
    for (o, v) in out.iter_mut().zip(values.iter()) {
        *o = o.wrapping_add(v.load(Relaxed));
    }
}
