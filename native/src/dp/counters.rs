//! Per-worker counters: written by one worker thread, summed by readers.
//!
//! Each worker owns one [`Counters`]; only it writes, with relaxed load+store
//! (a plain add, no locked instruction), and the control plane sums all
//! workers in one bulk read per scrape. Layout: the [`Counter`] totals, then
//! one drop counter per (direction, reason).

use super::encap::outer_header_len;
use super::{Action, Direction, DropReason, Via};
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
    IcmpEchoReplies => "icmp_echo_replies",
    LocalSwitched => "local_switched_packets",
    Routed => "routed_packets",
    Flooded => "flooded_packets",
}

pub struct Counters {
    values: Box<[AtomicU64]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters { values: (0..Self::LEN).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl Counters {
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

    /// Single writer: only the owning worker calls this.
    #[inline]
    fn add(&self, i: usize, n: u64) {
        let c = &self.values[i];
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn inc(&self, c: Counter, n: u64) {
        self.add(c as usize, n)
    }

    #[inline]
    pub fn count_drop(&self, dir: Direction, reason: DropReason) {
        self.add(Counter::ALL.len() + dir as usize * DropReason::COUNT + reason as usize, 1);
    }

    /// Count an action once it has been carried out; `len` is the buffer's
    /// length as sent (outer header included for `Encap`).
    #[inline]
    pub fn account(&self, dir: Direction, action: &Action, len: usize) {
        match *action {
            Action::Deliver { via, .. } => match via {
                Via::Switched => self.inc(Counter::LocalSwitched, 1),
                Via::Routed => self.inc(Counter::Routed, 1),
                Via::ArpReply => self.inc(Counter::ArpReplies, 1),
                Via::EchoReply => self.inc(Counter::IcmpEchoReplies, 1),
                Via::Decapsulated => {
                    self.inc(Counter::DecapPackets, 1);
                    self.inc(Counter::DecapBytes, len as u64)
                }
            },
            Action::Flood { .. } => self.inc(Counter::Flooded, 1),
            Action::Encap { pa, routed, .. } => {
                self.inc(Counter::EncapPackets, 1);
                self.inc(Counter::EncapBytes, len.saturating_sub(outer_header_len(pa)) as u64);
                if routed {
                    self.inc(Counter::Routed, 1)
                }
            }
            Action::Drop(reason) => self.count_drop(dir, reason),
        }
    }

    /// Add this worker's values into `out` (of length [`Counters::LEN`]).
    pub fn sum_into(&self, out: &mut [u64]) {
        for (o, v) in out.iter_mut().zip(self.values.iter()) {
            *o = o.wrapping_add(v.load(Relaxed));
        }
    }
}
