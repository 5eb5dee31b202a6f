//! No input from a VM or the underlay may panic, loop, or allocate without
//! bound. Each test is an input that once did, through the decision core and
//! the pipeline that carries out its actions, with no I/O.

use super::offload::{Gso, Offload};
use super::testkit::*;
use super::*;
use crate::wire::*;

/// The largest frame a worker reads.
const MAX_FRAME: usize = 65535 + 256;

/// Decide and carry out a batch of frames from `port`, as a worker does.
fn through_vm(snap: &Snapshot, port: PortId, frames: Vec<(Vec<u8>, Offload)>, kernel_segments: bool) -> (Vec<Action>, Recorder, Pipeline) {
    let mut bufs: Vec<PacketBuf> = frames
        .into_iter()
        .map(|(f, off)| {
            let mut b = PacketBuf::new(MAX_FRAME);
            b.spare_mut()[..f.len()].copy_from_slice(&f);
            b.set_len(f.len());
            b.offload = off;
            b
        })
        .collect();
    let mut actions = Vec::new();
    on_vm_frames(snap, port, &mut bufs, &mut actions);
    let mut rec = Recorder { kernel_segments, ..Recorder::default() };
    let mut pipeline = Pipeline::new(MAX_FRAME);
    let counters = Counters::default();
    pipeline.carry_out(Batch { snap, dir: Direction::FromVm, bufs: &mut bufs, actions: &actions, outer_src: &[], counters: &counters }, &mut rec);
    (actions, rec, pipeline)
}

fn with_pa_mtu(mut p: Policy, mtu: u16) -> Policy {
    for pa in &mut p.provider_addresses {
        pa.mtu = mtu;
    }
    p
}

/// The TCP segments inside encapsulated packets: (sequence number, payload length), checksums verified.
fn inner_segments(pkts: &[(std::net::IpAddr, Vec<u8>, Option<u32>)]) -> Vec<(u32, usize)> {
    pkts.iter()
        .map(|(_, p, _)| {
            let outer = Ipv4Packet::new_checked(&p[..]).unwrap();
            assert!(outer.verify_checksum());
            assert_eq!(outer.total_len() as usize, p.len());
            let gre = GrePacket::new_checked(outer.payload()).unwrap();
            let eth = EthernetFrame::new_checked(gre.payload()).unwrap();
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(tcp.verify_checksum_v4(&ip.src_addr(), &ip.dst_addr()));
            (tcp.seq_number(), tcp.payload().len())
        })
        .collect()
}

#[test]
fn a_short_ipv6_frame_too_big_for_a_small_underlay_gets_its_packet_too_big() {
    // PA MTU 1280, the adapter's above its default: a 1,260-byte frame does
    // not fit once encapsulated, and its ICMPv6 error is longer than it.
    let s = Snapshot::build(&with_pa_mtu(host1_dual_stack(), 1280));
    let ip = ipv6("fd00:1::101", "fd00:1::103", IpProtocol::Udp, 64, &vec![0u8; 1260 - 14 - 40]);
    let frame = ethernet(mac(CONTOSO1.1), mac(CONTOSO3.1), EtherType::Ipv6, &ip);
    let mut b = PacketBuf::from_frame(&frame);
    let a = on_vm_frame(&s, PORT_CONTOSO1, &mut b);
    assert_eq!(a, Action::Reject { port: PORT_CONTOSO1, vsid: 6000, reason: DropReason::MtuExceeded });
    assert_eq!(b.len(), 14 + 40 + 8 + 1232, "headers and as much of the packet as fits 1280 bytes");
    let ip = Ipv6Packet::new_checked(&b.frame()[14..]).unwrap();
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.mtu()), (Icmpv6Message::PacketTooBig, 1280 - 28 - 14));
    assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
    assert_eq!(&ip.payload()[8..8 + 40], &frame[14..14 + 40], "the invoking header is quoted");
}

/// Host 1 where VSID 6000 learns addresses (flow 4) from `pas` other hosts.
fn learning_host(pas: usize) -> Snapshot {
    let mut p = host1();
    for i in 0..pas {
        p.lookup_records.push(LookupRecord {
            vsid: 6000,
            customer_address: ip("0.0.0.0"),
            mac: MacAddr([0x60, 0, 0x60, 0, (i >> 8) as u8 | 0x10, i as u8]),
            provider_address: std::net::IpAddr::V4(std::net::Ipv4Addr::from(0xc0a8_0100 + i as u32)),
            rule: Rule::Encap,
            kind: RecordType::L2Only,
        });
    }
    Snapshot::build(&p)
}

#[test]
fn a_padded_arp_request_from_a_jumbo_adapter_probes_with_the_request_alone() {
    let s = learning_host(EXTRA_POOL + 44);
    let mut request = arp_request(mac(CONTOSO1.1), CONTOSO1.0, "10.0.1.150", MacAddr::BROADCAST);
    request.resize(9300, 0);
    let (actions, rec, pipeline) = through_vm(&s, PORT_CONTOSO1, vec![(request, Offload::default())], false);
    assert_eq!(actions, [Action::Probe { vsid: 6000, except: PORT_CONTOSO1 }]);
    assert_eq!(rec.to_underlay.len(), EXTRA_POOL + 44, "one copy per L2Only PA");
    assert!(rec.to_underlay.iter().all(|(_, p, _)| p.len() == 20 + 8 + 14 + 28), "the request, not its padding");
    assert!(rec.largest_send <= EXTRA_POOL && pipeline.extra_buffers() <= EXTRA_POOL, "the pool stays bounded");
    assert_eq!(rec.to_ports.iter().map(|(p, f, _)| (*p, f.len())).collect::<Vec<_>>(), [(PORT_CONTOSO2, 42)], "flooded locally too");
}

#[test]
fn segments_for_a_pa_mtu_above_9216_are_cut_to_it() {
    let s = Snapshot::build(&with_pa_mtu(host1(), 16000));
    let mss = 16000 - 28 - 54;
    let mut f = tcp_segment(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 1000, 60_000);
    let off = tso(&mut f, mss as u16);
    let (actions, rec, _) = through_vm(&s, PORT_CONTOSO1, vec![(f, off)], false);
    assert!(matches!(actions[0], Action::Encap { .. }));
    assert!(rec.drops.is_empty());
    let segs = inner_segments(&rec.to_underlay);
    assert_eq!(segs.iter().map(|s| s.1).sum::<usize>(), 60_000);
    assert!(rec.to_underlay.iter().all(|(_, p, _)| p.len() <= 16000));
    assert!(rec.to_underlay.iter().any(|(_, p, _)| p.len() > 9216), "jumbo segments");
}

#[test]
fn a_tiny_segment_size_cannot_grow_memory_without_bound() {
    let s = Snapshot::build(&host1());
    let frames: Vec<_> = (0..64u32)
        .map(|k| {
            let mut f = tcp_segment(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, k * 65_000, 65_000);
            let off = tso(&mut f, offload::MIN_GSO_SIZE);
            (f, off)
        })
        .collect();
    let (_, rec, pipeline) = through_vm(&s, PORT_CONTOSO1, frames, false);
    assert!(rec.drops.is_empty());
    let per_frame = 65_000usize.div_ceil(offload::MIN_GSO_SIZE as usize);
    assert_eq!(rec.to_underlay.len(), 64 * per_frame);
    assert!(pipeline.extra_buffers() <= EXTRA_POOL && rec.largest_send <= EXTRA_POOL, "sent in rounds from a bounded pool");
    let segs = inner_segments(&rec.to_underlay);
    let mut seq = 0u32;
    for (got, len) in segs {
        assert_eq!(got, seq, "in order");
        seq += len as u32;
    }
    assert_eq!(seq, 64 * 65_000);
}

#[test]
fn a_segment_longer_than_an_ip_packet_is_encapsulated_without_wrapping_and_cut() {
    let s = Snapshot::build(&host1());
    let mut f = tcp_segment(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 1, 65_535 - 20 - 20);
    assert_eq!(f.len(), 65_549);
    let off = tso(&mut f, 1400);
    let mut b = PacketBuf::new(MAX_FRAME);
    b.spare_mut()[..f.len()].copy_from_slice(&f);
    b.set_len(f.len());
    b.offload = off;
    assert!(matches!(on_vm_frame(&s, PORT_CONTOSO1, &mut b), Action::Encap { .. }));
    assert_eq!(Ipv4Packet::new_unchecked(b.frame()).total_len(), u16::MAX, "the length field saturates");
    for kernel in [false, true] {
        let (_, rec, _) = through_vm(&s, PORT_CONTOSO1, vec![(f.clone(), off)], kernel);
        assert!(rec.to_underlay.iter().all(|(_, p, whole)| whole.is_none() && p.len() <= 1500), "too long to leave whole: cut here");
        assert_eq!(inner_segments(&rec.to_underlay).iter().map(|s| s.1).sum::<usize>(), 65_495);
    }
}

#[test]
fn the_guests_offload_header_is_checked_before_anything_acts_on_it() {
    let s = Snapshot::build(&host1());
    let frame = || {
        let mut f = tcp_segment(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 1, 10_000);
        let off = tso(&mut f, 1400);
        (f, off)
    };
    let decide = |f: &[u8], off: Offload| {
        let mut b = PacketBuf::new(MAX_FRAME);
        b.spare_mut()[..f.len()].copy_from_slice(f);
        b.set_len(f.len());
        b.offload = off;
        (on_vm_frame(&s, PORT_CONTOSO1, &mut b), b.offload)
    };
    let (f, good) = frame();
    let lies = [
        ("checksum beyond the frame", Offload { csum: Some((10_050, 16)), ..good }),
        ("checksum inside the Ethernet header", Offload { csum: Some((4, 6)), ..good }),
        ("segment size 0", Offload { gso_size: 0, ..good }),
        ("segment size below the floor", Offload { gso_size: offload::MIN_GSO_SIZE - 1, ..good }),
        ("IPv6 segmentation of an IPv4 frame", Offload { gso: Gso::Tcp6, ..good }),
        ("a type never offered (UDP)", Offload { gso: Gso::Unknown(5), ..good }),
        ("a checksum that is not TCP's", Offload { csum: Some((34, 6)), ..good }),
    ];
    for (what, off) in lies {
        assert_eq!(decide(&f, off).0, Action::Drop(DropReason::Malformed), "{what}");
    }
    let udp = udp(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 1, 2, 0);
    assert_eq!(decide(&udp, Offload { gso: Gso::Tcp4, gso_size: 1400, ..Offload::default() }).0, Action::Drop(DropReason::Malformed), "segmentation of UDP");
    // The header length is the frame's own, whatever the guest said (it reaches the kernel through the GSO port).
    let (a, off) = decide(&f, Offload { hdr_len: 2000, ..good });
    assert!(matches!(a, Action::Encap { .. }));
    assert_eq!(off.hdr_len, 54);
    // A checksum to finish on a plain frame only has to lie inside it.
    let (a, _) = decide(&udp, Offload { csum: Some((34, 6)), ..Offload::default() });
    assert!(matches!(a, Action::Encap { .. }));
}

#[test]
fn decapsulated_segments_of_one_flow_go_up_merged() {
    let s = Snapshot::build(&host1());
    let mut bufs: Vec<PacketBuf> = (0..4u32)
        .map(|k| {
            let inner = tcp_segment(CONTOSO3, mac(CONTOSO1.1), CONTOSO1.0, k * 1000, 1000);
            PacketBuf::from_frame(&nvgre(HOST2_PA, HOST1_PA, 6000, 0, &inner))
        })
        .collect();
    let mut actions = Vec::new();
    on_underlay_packets(&s, &mut bufs, &[], &mut actions);
    let mut rec = Recorder::default();
    let counters = Counters::default();
    let outer_src = vec![Some(ip(HOST2_PA)); 4];
    Pipeline::new(MAX_FRAME).carry_out(Batch { snap: &s, dir: Direction::FromUnderlay, bufs: &mut bufs, actions: &actions, outer_src: &outer_src, counters: &counters }, &mut rec);
    assert_eq!(rec.to_ports.len(), 1, "one write");
    let (port, frame, off) = &rec.to_ports[0];
    assert_eq!((*port, frame.len(), off.gso, off.gso_size), (PORT_CONTOSO1, 54 + 4000, Gso::Tcp4, 1000));
    assert_eq!(counters.get(Counter::DecapPackets), 4);
    assert_eq!(counters.get(Counter::CoalescedPackets), 3);
}

#[test]
fn a_large_segment_for_a_vm_that_takes_none_is_cut_and_nothing_is_merged_for_it() {
    let s = Snapshot::build(&host1());
    // A segment GRO merged on the underlay (longer than one wire packet), then two plain ones.
    let big = tcp_segment(CONTOSO3, mac(CONTOSO1.1), CONTOSO1.0, 0, 20_000);
    let small = |seq| tcp_segment(CONTOSO3, mac(CONTOSO1.1), CONTOSO1.0, seq, 1000);
    let mut bufs: Vec<PacketBuf> = [big, small(20_000), small(21_000)]
        .iter()
        .map(|inner| {
            let mut b = PacketBuf::new(MAX_FRAME);
            let pkt = nvgre(HOST2_PA, HOST1_PA, 6000, 0, inner);
            b.spare_mut()[..pkt.len()].copy_from_slice(&pkt);
            b.set_len(pkt.len());
            b
        })
        .collect();
    let mut actions = Vec::new();
    on_underlay_packets(&s, &mut bufs, &[], &mut actions);
    assert_eq!(bufs[0].offload.gso, Gso::Tcp4, "the long one goes up as a large segment");
    let mut rec = Recorder { no_gso_ports: vec![PORT_CONTOSO1], ..Recorder::default() };
    let counters = Counters::default();
    let outer_src = vec![Some(ip(HOST2_PA)); 3];
    Pipeline::new(MAX_FRAME).carry_out(Batch { snap: &s, dir: Direction::FromUnderlay, bufs: &mut bufs, actions: &actions, outer_src: &outer_src, counters: &counters }, &mut rec);
    assert!(rec.to_ports.iter().all(|(p, f, off)| *p == PORT_CONTOSO1 && off.gso == Gso::None && f.len() <= 1500), "cut to wire size, none merged");
    let payload: usize = rec.to_ports.iter().map(|(_, f, _)| f.len() - 54).sum();
    assert_eq!(payload, 22_000);
    assert_eq!(counters.get(Counter::DecapPackets), 3, "counted as the frames they were");
    assert_eq!(rec.flushes, 1, "one flush for the batch");
}
