//! Packets from the underlay, as a worker reads a batch from the IPv4 raw
//! socket (outer IPv4 header onwards) or the IPv6 one (GRE onwards, with the
//! outer addresses): the decision, then the TAP side of the worker (merging
//! consecutive segments of a flow, learning reports).
#![no_main]

use nvgred_fuzz::worker::{self, Merger};
use nvgred_fuzz::{check, input, reference};
use nvgred_native::dp::{self, Action, PacketBuf};
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};

struct Batch {
    bufs: Vec<PacketBuf>,
    actions: Vec<Action>,
    merger: Merger,
}

thread_local! {
    static BATCH: RefCell<Batch> = RefCell::new(Batch {
        bufs: (0..input::MAX_BATCH).map(|_| PacketBuf::new(worker::MAX_PACKET)).collect(),
        actions: Vec::new(),
        merger: Merger::default(),
    });
}

/// The outer source (at 12) or destination (at 16) of an IPv4 packet, as
/// the worker takes the source for reports.
fn ipv4_address(pkt: &[u8], at: usize) -> IpAddr {
    let a: [u8; 4] = pkt.get(at..at + 4).and_then(|s| s.try_into().ok()).unwrap_or([0; 4]);
    IpAddr::V4(Ipv4Addr::from(a))
}

fn one(data: &[u8]) {
    let snap = reference::snapshot();
    let (v6, packets) = input::underlay(data);
    BATCH.with_borrow_mut(|Batch { bufs, actions, merger }| {
        let n = packets.len();
        for (b, (_, p)) in bufs.iter_mut().zip(&packets) {
            b.reset();
            b.spare_mut()[..p.len()].copy_from_slice(p);
            b.set_len(p.len());
        }
        actions.clear();
        let addrs: Vec<(IpAddr, IpAddr)> = if v6 {
            let addrs: Vec<_> = packets.iter().map(|&(a, _)| reference::v6_addresses(a)).collect();
            for (b, &(src, dst)) in bufs.iter_mut().zip(&addrs) {
                actions.push(dp::on_underlay_gre(snap, src, dst, b));
            }
            addrs
        } else {
            dp::on_underlay_packets(snap, &mut bufs[..n], actions);
            packets.iter().map(|(_, p)| (ipv4_address(p, 12), ipv4_address(p, 16))).collect()
        };
        assert_eq!(actions.len(), n, "one action per packet");
        for i in 0..n {
            let (src, dst) = addrs[i];
            check::underlay_action(snap, v6, packets[i].1, src, dst, &bufs[i], actions[i]);
        }
        let sources: Vec<IpAddr> = addrs.iter().map(|&(src, _)| src).collect();
        worker::deliver(snap, &bufs[..n], actions, &sources, merger, &mut |w, report| {
            check::tap_write(snap, &bufs[..n], actions, &sources, &w, report)
        });
    });
}

nvgred_fuzz::fuzz_target!(one);
