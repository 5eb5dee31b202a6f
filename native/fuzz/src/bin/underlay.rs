//! Packets from the underlay, as a worker reads a batch from the IPv4 raw
//! socket (outer IPv4 header onwards) or the IPv6 one (GRE onwards, with
//! the outer addresses): the decision, then the worker's pipeline
//! (`dp::Pipeline`: merging consecutive segments of a flow, learning
//! reports) against a recorder instead of ports.
#![no_main]

use nvgred_fuzz::{check, input, reference};
use nvgred_native::dp::testkit::Recorder;
use nvgred_native::dp::{self, Action, Batch, Counters, Direction, PacketBuf, Pipeline};
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};

const MAX_PACKET: usize = 65535 + 256;

struct State {
    bufs: Vec<PacketBuf>,
    actions: Vec<Action>,
    pipeline: Pipeline,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        bufs: (0..input::MAX_BATCH).map(|_| PacketBuf::new(MAX_PACKET)).collect(),
        actions: Vec::new(),
        pipeline: Pipeline::new(MAX_PACKET),
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
    STATE.with_borrow_mut(|State { bufs, actions, pipeline }| {
        let n = packets.len();
        for (b, (_, p)) in bufs.iter_mut().zip(&packets) {
            b.reset();
            b.spare_mut()[..p.len()].copy_from_slice(p);
            b.set_len(p.len());
        }
        actions.clear();
        // The interface each came in on: unknown (no VLAN PA in the reference policy).
        let addrs: Vec<(IpAddr, IpAddr)> = if v6 {
            let addrs: Vec<_> = packets.iter().map(|&(a, _)| reference::v6_addresses(a)).collect();
            for (b, &(src, dst)) in bufs.iter_mut().zip(&addrs) {
                actions.push(dp::on_underlay_gre(snap, src, dst, 0, b));
            }
            addrs
        } else {
            dp::on_underlay_packets(snap, &mut bufs[..n], &[], actions);
            packets.iter().map(|(_, p)| (ipv4_address(p, 12), ipv4_address(p, 16))).collect()
        };
        assert_eq!(actions.len(), n, "one action per packet");
        for i in 0..n {
            let (src, dst) = addrs[i];
            check::underlay_action(snap, v6, packets[i].1, src, dst, &bufs[i], actions[i]);
        }
        let delivered: Vec<Vec<u8>> = bufs[..n].iter().map(|b| b.frame().to_vec()).collect();
        let sources: Vec<Option<IpAddr>> = addrs.iter().map(|&(src, _)| Some(src)).collect();
        let mut rec = Recorder::default();
        let counters = Counters::default();
        pipeline.carry_out(Batch { snap, dir: Direction::FromUnderlay, bufs: &mut bufs[..n], actions, outer_src: &sources, counters: &counters }, &mut rec);
        check::underlay_pipeline(snap, actions, &delivered, &rec);
    });
}

nvgred_fuzz::fuzz_target!(one);
