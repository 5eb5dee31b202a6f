//! The invariants every outcome must hold, as assertions: a failure panics
//! with what broke, and libFuzzer keeps the input. Headers are read back
//! with the `wire` views, independently of how `dp` wrote them.

use nvgred_native::dp::testkit::Recorder;
use nvgred_native::dp::offload::{complete_checksum, Gso, Offload};
use nvgred_native::dp::{self, Action, DropReason, Learned, Location, PacketBuf, PortId, RecordType, Snapshot, Tunnel, Via, Vsid};
use nvgred_native::wire::*;
use std::net::IpAddr;

const ETH: usize = ETHERNET_HEADER_LEN;

/// The tunnel an encapsulated packet to `pa` takes.
pub fn tunnel(snap: &Snapshot, pa: IpAddr) -> &Tunnel {
    snap.tunnels.iter().find(|t| t.remote == pa).unwrap_or_else(|| panic!("encapsulated to {pa}, which no tunnel has"))
}

/// An encapsulated packet: a whole outer header toward `pa` from the
/// tunnel's local PA (lengths, IPv4 checksum, DF, GRE with the key of
/// `vsid`) in front of an Ethernet frame, which is returned.
pub fn encapsulated<'a>(snap: &Snapshot, pkt: &'a [u8], pa: IpAddr, vsid: Vsid) -> &'a [u8] {
    let t = tunnel(snap, pa);
    let outer = dp::outer_header_len(pa);
    assert!(pkt.len() >= outer + ETH, "an encapsulated packet of {} bytes", pkt.len());
    let (ip_len, src, dst) = match pa {
        IpAddr::V4(_) => {
            let ip = Ipv4Packet::new_checked(pkt).expect("outer IPv4 header");
            let repr = Ipv4Repr::parse(&ip).expect("outer IPv4 header valid (version, checksum)");
            // A large segment longer than an IP packet is cut before it leaves: its length saturates until then.
            assert_eq!(ip.total_len() as usize, pkt.len().min(u16::MAX as usize), "outer IPv4 total length");
            assert_eq!(ip.header_len() as usize, IPV4_HEADER_LEN, "outer IPv4 header length");
            assert!(repr.dont_frag, "outer IPv4 without DF");
            assert_eq!(repr.next_header, IpProtocol::Gre);
            (IPV4_HEADER_LEN, IpAddr::V4(repr.src_addr), IpAddr::V4(repr.dst_addr))
        }
        IpAddr::V6(_) => {
            let ip = Ipv6Packet::new_checked(pkt).expect("outer IPv6 header");
            let repr = Ipv6Repr::parse(&ip).expect("outer IPv6 header valid");
            assert_eq!(repr.payload_len, (pkt.len() - IPV6_HEADER_LEN).min(u16::MAX as usize), "outer IPv6 payload length");
            assert_eq!(repr.next_header, IpProtocol::Gre);
            (IPV6_HEADER_LEN, IpAddr::V6(repr.src_addr), IpAddr::V6(repr.dst_addr))
        }
    };
    assert_eq!((src, dst), (t.local, pa), "outer addresses");
    let gre = GrePacket::new_checked(&pkt[ip_len..]).expect("GRE header");
    let nvgre = NvgreRepr::parse(&gre).expect("a valid NVGRE header");
    assert_eq!(nvgre.vsid, vsid, "the key's VSID");
    &pkt[outer..]
}

/// A packet that leaves for the underlay fits the tunnel's MTU: NVGRE is
/// never fragmented, and a raw socket refuses anything longer.
pub fn fits(snap: &Snapshot, pa: IpAddr, len: usize, what: &str) {
    let mtu = tunnel(snap, pa).mtu as usize;
    assert!(len <= mtu, "{what} of {len} bytes to {pa}, whose path MTU is {mtu}");
}

/// Where a frame's TCP header starts and its headers end, over IPv4 or not.
#[derive(Debug, Clone, Copy)]
pub struct Tcp {
    pub v4: bool,
    pub at: usize,
    pub hdr_len: usize,
    /// Where the IP packet (hence the segment) ends.
    pub end: usize,
}

/// The TCP segment of an Ethernet frame, by the IP header's lengths.
pub fn tcp(frame: &[u8]) -> Option<Tcp> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (v4, at, end) = match eth.ethertype() {
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            (ip.next_header() == IpProtocol::Tcp).then_some(())?;
            (true, ETH + ip.header_len() as usize, ETH + ip.total_len() as usize)
        }
        EtherType::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            (ip.next_header() == IpProtocol::Tcp).then_some(())?;
            (false, ETH + IPV6_HEADER_LEN, ETH + IPV6_HEADER_LEN + ip.payload_len() as usize)
        }
        _ => return None,
    };
    let t = TcpPacket::new_checked(frame.get(at..end)?).ok()?;
    Some(Tcp { v4, at, hdr_len: at + t.header_len() as usize, end })
}

/// Where the IP packet of an Ethernet frame ends, by its header.
fn ip_end(frame: &[u8]) -> Option<usize> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    match eth.ethertype() {
        EtherType::Ipv4 => Some(ETH + Ipv4Packet::new_checked(eth.payload()).ok()?.total_len() as usize),
        EtherType::Ipv6 => Some(ETH + IPV6_HEADER_LEN + Ipv6Packet::new_checked(eth.payload()).ok()?.payload_len() as usize),
        _ => None,
    }
}

fn tcp_checksum_ok(frame: &[u8], t: &Tcp) -> bool {
    let seg = TcpPacket::new_unchecked(&frame[t.at..t.end]);
    if t.v4 {
        let ip = Ipv4Packet::new_unchecked(&frame[ETH..]);
        seg.verify_checksum_v4(&ip.src_addr(), &ip.dst_addr())
    } else {
        let ip = Ipv6Packet::new_unchecked(&frame[ETH..]);
        seg.verify_checksum_v6(&ip.src_addr(), &ip.dst_addr())
    }
}

/// The IP header of a TCP frame nvgred wrote is whole: lengths match the frame, IPv4 checksum.
fn ip_whole(frame: &[u8], t: &Tcp, what: &str) {
    assert_eq!(t.end, frame.len(), "{what}: IP length against a frame of {} bytes", frame.len());
    if t.v4 {
        assert!(Ipv4Packet::new_unchecked(&frame[ETH..]).verify_checksum(), "{what}: IPv4 header checksum");
    }
}

/// A TCP frame with an offload for the VM (a large segment, a checksum to
/// finish) is one the VM's stack accepts: its offload describes its headers
/// (the IP header is the sender's, but its length must be the frame's, which
/// the checksum covers), and finishing the checksum as the TAP does gives a valid one.
pub fn offload_for_vm(frame: &[u8], off: Offload, what: &str) {
    if off == Offload::default() {
        return;
    }
    let end = ip_end(frame).unwrap_or_else(|| panic!("{what}: an offload {off:?} on a frame that is not IP"));
    assert_eq!(end, frame.len(), "{what}: an offload on a frame with bytes beyond its IP length");
    let t = tcp(frame).unwrap_or_else(|| panic!("{what}: an offload {off:?} on a frame that is not TCP"));
    assert_eq!(off.csum, Some((t.at as u16, 16)), "{what}: checksum offsets");
    if off.gso != Gso::None {
        assert_eq!(off.gso == Gso::Tcp4, t.v4, "{what}: segmentation type against the IP version");
        assert_eq!(off.hdr_len as usize, t.hdr_len, "{what}: header length");
        assert!(off.gso_size > 0, "{what}: segment size 0");
        assert!(frame.len() > t.hdr_len, "{what}: a large segment without payload");
    }
    let mut finished = frame.to_vec();
    assert!(complete_checksum(&mut finished, t.at, 16), "{what}: checksum field outside the frame");
    assert!(tcp_checksum_ok(&finished, &t), "{what}: the finished TCP checksum is wrong");
}

/// The outcome of a frame from VM port `port`: `before` as read (with its
/// offload), `after` the buffer once decided.
pub fn vm_action(snap: &Snapshot, port: PortId, before: &[u8], off: Offload, after: &PacketBuf, action: Action) {
    let Some(from) = snap.port(port) else {
        assert_eq!(action, Action::Drop(DropReason::PortGone), "a frame from unknown port {port}");
        return;
    };
    let (own_vsid, own_mac) = (from.vsid, from.mac);
    let frame = after.frame();
    let reply_to_sender = |to: PortId, vsid: Vsid| {
        assert_eq!((to, vsid), (port, own_vsid), "{action:?}: a reply goes back to the port it answers");
        assert_eq!(EthernetFrame::new_unchecked(frame).dst_addr(), own_mac, "{action:?}: destination MAC");
        assert_eq!(after.offload, Offload::default(), "{action:?}: a reply has no offload");
    };
    match action {
        Action::Drop(_) => {}
        Action::Deliver { port: to, vsid, via } => {
            let dest = snap.port(to).unwrap_or_else(|| panic!("{action:?}: to a port the snapshot lacks"));
            assert_eq!(dest.vsid, vsid, "{action:?}: the port's VSID");
            match via {
                Via::Switched => {
                    assert_eq!(vsid, own_vsid, "switched out of its VSID");
                    assert_eq!(frame, before, "a switched frame is unchanged");
                }
                Via::Routed => {
                    assert_eq!(frame.len(), before.len(), "a routed frame keeps its length");
                    let eth = EthernetFrame::new_unchecked(frame);
                    assert_eq!(eth.dst_addr(), dest.mac, "routed: destination MAC");
                    assert_eq!(Some(eth.src_addr()), snap.subnet(vsid).map(|s| s.gateway_mac), "routed: from the gateway");
                }
                Via::ArpReply => {
                    reply_to_sender(to, vsid);
                    let eth = EthernetFrame::new_checked(frame).expect("ARP reply frame");
                    let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).expect("ARP packet")).expect("valid ARP");
                    let ArpRepr::EthernetIpv4 { operation, source_hardware_addr, target_hardware_addr, .. } = arp;
                    assert_eq!(operation, ArpOperation::Reply);
                    assert_eq!((source_hardware_addr, target_hardware_addr), (eth.src_addr(), own_mac), "ARP reply addresses");
                }
                Via::EchoReply => {
                    reply_to_sender(to, vsid);
                    assert_eq!(frame.len(), before.len(), "an echo reply keeps the request's length");
                    icmp_valid(frame, "echo reply", false);
                }
                Via::NeighborAdvert => {
                    reply_to_sender(to, vsid);
                    icmp_valid(frame, "neighbor advertisement", true);
                }
                Via::Decapsulated => panic!("a frame from a VM delivered as decapsulated"),
            }
        }
        Action::Flood { vsid, except } => {
            assert_eq!((vsid, except), (own_vsid, Some(port)), "flooded within its VSID, but to its sender");
            assert_eq!(frame, before, "a flooded frame is unchanged");
        }
        Action::Probe { vsid, except } => {
            assert_eq!((vsid, except), (own_vsid, port), "probed within its VSID");
            assert!(snap.has_l2only(vsid), "a probe in a VSID without L2Only records");
            // The request alone crosses, whatever padding the VM added.
            assert_eq!(frame, &before[..frame.len()], "a probing ARP request is the request");
            assert_eq!(frame.len(), ETH + 28, "a probe carries the ARP request, not its padding");
        }
        Action::Nat { vsid } => {
            assert_eq!(vsid, own_vsid, "for the NAT, keyed by its sender's VSID");
            assert!(!snap.hnv_gateway().nats.entries().is_empty(), "for a NAT on a host without one");
        }
        Action::Uplink | Action::Consumed => panic!("a frame from a VM decided for the HNV gateway's uplink: {action:?}"),
        Action::Reject { port: to, vsid, reason } => {
            reply_to_sender(to, vsid);
            assert_eq!(reason, DropReason::MtuExceeded);
            icmp_valid(frame, "ICMP too big", true);
        }
        Action::Encap { pa, vsid, routed } => {
            let inner = encapsulated(snap, frame, pa, vsid);
            if routed {
                assert_eq!(inner.len(), before.len(), "a routed frame keeps its length");
            } else {
                assert_eq!(vsid, own_vsid, "switched out of its VSID");
                assert_eq!(inner, before, "an encapsulated switched frame is the frame");
            }
            // As the core took it: checked, the header length the frame's own.
            assert_eq!(Some(after.offload), off.validated(before), "encapsulation keeps the (checked) offload");
            if off.gso == Gso::None {
                fits(snap, pa, frame.len(), "an encapsulated frame");
            }
        }
    }
}

/// An IPv4 or IPv6 packet with ICMP from the host: whole headers, valid
/// checksums. One it `wrote` whole (an error, an advertisement) is exactly
/// its IP length, and an ICMPv6 error fits the minimum MTU; an echo reply,
/// written over the request, keeps whatever trailed it (Ethernet padding).
fn icmp_valid(frame: &[u8], what: &str, wrote: bool) {
    let eth = EthernetFrame::new_checked(frame).unwrap_or_else(|_| panic!("{what}: Ethernet header"));
    let l3 = eth.payload().len();
    let length_ok = |ip_len: usize| if wrote { ip_len == l3 } else { ip_len <= l3 };
    match eth.ethertype() {
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap_or_else(|_| panic!("{what}: IPv4 header"));
            let repr = Ipv4Repr::parse(&ip).unwrap_or_else(|e| panic!("{what}: IPv4 header {e}"));
            assert!(length_ok(repr.payload_len + IPV4_HEADER_LEN), "{what}: IPv4 length {} in {l3} bytes", repr.payload_len + IPV4_HEADER_LEN);
            let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap_or_else(|_| panic!("{what}: ICMP header"));
            assert!(icmp.verify_checksum(), "{what}: ICMP checksum");
        }
        EtherType::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).unwrap_or_else(|_| panic!("{what}: IPv6 header"));
            let repr = Ipv6Repr::parse(&ip).unwrap_or_else(|e| panic!("{what}: IPv6 header {e}"));
            assert!(length_ok(repr.payload_len + IPV6_HEADER_LEN), "{what}: IPv6 length {} in {l3} bytes", repr.payload_len + IPV6_HEADER_LEN);
            assert!(!wrote || l3 <= 1280, "{what}: longer than the minimum IPv6 MTU");
            let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap_or_else(|_| panic!("{what}: ICMPv6 header"));
            assert!(icmp.verify_checksum(&repr.src_addr, &repr.dst_addr), "{what}: ICMPv6 checksum");
        }
        other => panic!("{what}: ethertype {other:?}"),
    }
}

/// The segments cut from the encapsulated large segment `pkt` (to `pa`,
/// offload `off`): each a whole NVGRE packet within the MTU carrying a TCP
/// segment with valid checksums, in sequence, together the original payload.
pub fn segments(snap: &Snapshot, pkt: &[u8], pa: IpAddr, vsid: Vsid, off: Offload, segs: &[&[u8]]) {
    let inner = &pkt[dp::outer_header_len(pa)..];
    assert_eq!(ip_end(inner), Some(inner.len()), "a large segment with bytes beyond its IP length is cut");
    let t = tcp(inner).expect("only TCP is segmented");
    let seq = TcpPacket::new_unchecked(&inner[t.at..]).seq_number();
    let mut payload = Vec::new();
    for (k, s) in segs.iter().enumerate() {
        let what = format!("segment {k} of {}", segs.len());
        fits(snap, pa, s.len(), &what);
        let frame = encapsulated(snap, s, pa, vsid);
        let st = tcp(frame).unwrap_or_else(|| panic!("{what}: not TCP"));
        ip_whole(frame, &st, &what);
        assert!(tcp_checksum_ok(frame, &st), "{what}: TCP checksum");
        let mss = off.gso_size as u32;
        let sseq = TcpPacket::new_unchecked(&frame[st.at..]).seq_number();
        assert_eq!(sseq, seq.wrapping_add(k as u32 * mss), "{what}: sequence number");
        assert!(frame.len() - st.hdr_len <= mss as usize, "{what}: more payload than the segment size");
        payload.extend_from_slice(&frame[st.hdr_len..]);
    }
    assert_eq!(payload, inner[t.hdr_len..t.end], "the segments carry the payload");
}

/// A learning report from a frame a local VM sent encapsulated (`inner`):
/// about that VM, at a local PA, by a record that makes it learnable.
pub fn learned_from_vm(snap: &Snapshot, l: Learned, inner: &[u8]) {
    let eth = EthernetFrame::new_checked(inner).expect("a frame teaches");
    assert_eq!(l.mac, eth.src_addr(), "the report is about the sender");
    assert!(snap.is_local_pa(l.provider_address), "reported at {}, not a local PA", l.provider_address);
    learnable(snap, l, Location::Local);
}

fn learnable(snap: &Snapshot, l: Learned, at: Location) {
    let subnet = snap.subnet(l.vsid).unwrap_or_else(|| panic!("a report in VSID {}, unknown", l.vsid));
    let rec = snap.record_by_mac(subnet.routing_domain, l.mac).expect("a report about a MAC without a record");
    assert!(matches!(rec.kind, RecordType::L2Only | RecordType::Dynamic), "a report about a {:?} record", rec.kind);
    assert_eq!(rec.location, at, "a report about a VM elsewhere");
}

/// The inner frame of an underlay packet as read: an IPv4 packet from the
/// IPv4 socket, the GRE packet from the IPv6 one.
fn inner_of(pkt: &[u8], v6: bool) -> &[u8] {
    if v6 {
        return &pkt[GRE_HEADER_LEN..];
    }
    let ip = Ipv4Packet::new_checked(pkt).expect("decided IPv4");
    &pkt[ip.header_len() as usize + GRE_HEADER_LEN..ip.total_len() as usize]
}

/// The outcome of a packet from the underlay (`before` as read, from `src`
/// to `dst`), `after` the buffer once decided.
pub fn underlay_action(snap: &Snapshot, v6: bool, before: &[u8], src: IpAddr, dst: IpAddr, after: &PacketBuf, action: Action) {
    let frame = after.frame();
    match action {
        Action::Drop(_) => return,
        Action::Deliver { port, vsid, via: Via::Decapsulated } => {
            let to = snap.port(port).unwrap_or_else(|| panic!("{action:?}: to a port the snapshot lacks"));
            assert_eq!(to.vsid, vsid, "{action:?}: the port's VSID");
            let inner = inner_of(before, v6);
            assert_eq!(frame.len(), inner.len(), "a decapsulated frame is the inner frame");
            assert_eq!(EthernetFrame::new_unchecked(frame).dst_addr(), to.mac, "to the port's MAC");
            // Only the source MAC (routed: the VM's gateway) and the checksum field (left to finish) may change.
            let mut expected = inner.to_vec();
            let rd = snap.subnet(vsid).expect("a known VSID").routing_domain;
            let sender = snap.record_by_mac(rd, EthernetFrame::new_unchecked(inner).src_addr()).expect("a sender with a record");
            if sender.vsid != vsid {
                expected[6..12].copy_from_slice(snap.subnet(vsid).unwrap().gateway_mac.as_bytes());
            }
            if let Some((start, offset)) = after.offload.csum {
                let at = (start + offset) as usize;
                expected[at..at + 2].copy_from_slice(&frame[at..at + 2]);
            }
            assert_eq!(frame, &expected[..], "a decapsulated frame is the inner frame");
            offload_for_vm(frame, after.offload, "a decapsulated frame");
        }
        Action::Flood { vsid: _, except: None } => {
            let inner = inner_of(before, v6);
            assert_eq!(frame, inner, "a flooded frame is the inner frame");
            let eth = EthernetFrame::new_unchecked(frame);
            assert!(eth.dst_addr().is_broadcast() && eth.ethertype() == EtherType::Arp, "only ARP broadcasts flood from the underlay");
        }
        other => panic!("{other:?} from the underlay"),
    }
    assert!(snap.is_local_pa(dst), "{action:?} for {dst}, not a local PA");
    let eth = EthernetFrame::new_unchecked(inner_of(before, v6));
    let rd = match action {
        Action::Deliver { vsid, .. } | Action::Flood { vsid, .. } => snap.subnet(vsid).expect("a known VSID").routing_domain,
        _ => unreachable!(),
    };
    let rec = snap.record_by_mac(rd, eth.src_addr()).expect("accepted from a MAC without a record");
    match rec.location {
        Location::Remote(t) => assert_eq!(snap.tunnel(t).remote, src, "accepted from a PA the sender's record does not name"),
        Location::Local => panic!("accepted from the underlay a frame of a local VM"),
    }
}

/// What the pipeline made of a batch from a VM (`decided`: each frame and
/// offload as the core left it): in frame order, an encapsulated frame leaves
/// whole (its checksum finished), or whole for the kernel to cut, or as the
/// segments cut from it; a probe as one copy per L2Only PA; each a whole
/// NVGRE packet within the path MTU; learning reports about local VMs.
pub fn vm_pipeline(snap: &Snapshot, actions: &[Action], decided: &[(Vec<u8>, Offload)], rec: &Recorder) {
    let mut sent = rec.to_underlay.iter();
    let dropped = |i: usize| rec.drops.iter().any(|&(f, _)| f == i);
    for (i, (&action, (frame, off))) in actions.iter().zip(decided).enumerate() {
        match action {
            Action::Encap { pa, vsid, .. } if !dropped(i) => {
                if off.gso == Gso::None {
                    let (to, pkt, whole) = sent.next().expect("an encapsulated frame leaves");
                    assert_eq!((*to, *whole), (pa, None), "frame {i} leaves to its PA, cut to the path");
                    encapsulated(snap, pkt, pa, vsid);
                    fits(snap, pa, pkt.len(), "an encapsulated frame");
                    if let Some((start, offset)) = off.csum {
                        let mut finished = frame.clone();
                        complete_checksum(&mut finished[dp::outer_header_len(pa)..], start as usize, offset as usize);
                        assert_eq!(pkt, &finished, "a checksum the VM left is finished on the way out");
                    } else {
                        assert_eq!(pkt, frame, "an encapsulated frame leaves as the core left it");
                    }
                } else if rec.kernel_segments && snap.pa_ifindex(pa).is_some_and(|x| x != 0) && frame.len() <= dp::MAX_KERNEL_SEGMENTED && off.csum.is_some() {
                    let (_, pkt, whole) = sent.next().expect("a large segment leaves whole");
                    assert_eq!(*whole, snap.pa_ifindex(pa), "out of its PA's interface");
                    assert_eq!(pkt, frame, "a large segment leaves whole as the core left it");
                } else {
                    let count = dp::offload::segment_count(frame.len() - dp::outer_header_len(pa), off);
                    let segs: Vec<&[u8]> = (0..count).map(|_| sent.next().expect("every segment leaves").1.as_slice()).collect();
                    segments(snap, frame, pa, vsid, *off, &segs);
                }
            }
            Action::Probe { vsid, .. } => {
                let subnet = snap.subnet(vsid).expect("a probe in a known VSID");
                for &t in &subnet.l2only_tunnels {
                    let tunnel = snap.tunnel(t);
                    if tunnel.template.is_none() {
                        continue; // no local PA of its family: dropped, counted
                    }
                    let (to, pkt, _) = sent.next().expect("a probe copy per L2Only PA");
                    assert_eq!(*to, tunnel.remote, "a probe copy to its L2Only PA");
                    let inner = encapsulated(snap, pkt, tunnel.remote, vsid);
                    assert_eq!(inner, &frame[..], "a probe copy is the request");
                    fits(snap, tunnel.remote, pkt.len(), "a flow-4 probe");
                }
            }
            _ => {}
        }
    }
    assert!(sent.next().is_none(), "nothing else leaves");
    for &l in &rec.learned {
        assert!(snap.is_local_pa(l.provider_address), "reported at {}, not a local PA", l.provider_address);
        learnable(snap, l, Location::Local);
    }
}

/// The TCP payload of a frame, if it is TCP.
fn tcp_payload(frame: &[u8]) -> Option<&[u8]> {
    let t = tcp(frame)?;
    frame.get(t.hdr_len..t.end)
}

/// What the pipeline made of a batch from the underlay (`delivered`: each
/// packet as the core left it): every write to a VM is one it accepts
/// (offload, checksums), merging loses and adds no TCP payload, and learning
/// reports are about remote VMs at their record's PA.
pub fn underlay_pipeline(snap: &Snapshot, actions: &[Action], delivered: &[Vec<u8>], rec: &Recorder) {
    for (_, frame, off) in &rec.to_ports {
        offload_for_vm(frame, *off, "a write to a VM");
    }
    let into: usize = actions
        .iter()
        .zip(delivered)
        .filter(|(a, _)| matches!(a, Action::Deliver { via: Via::Decapsulated, .. }))
        .filter_map(|(_, f)| tcp_payload(f).map(<[u8]>::len))
        .sum();
    let out: usize = rec
        .to_ports
        .iter()
        .filter(|(_, f, _)| EthernetFrame::new_unchecked(&f[..]).ethertype() != EtherType::Arp)
        .filter_map(|(_, f, _)| tcp_payload(f).map(<[u8]>::len))
        .sum();
    assert_eq!(out, into, "the TCP payload written to VMs is what was delivered");
    for &l in &rec.learned {
        let Location::Remote(t) = location(snap, l) else { panic!("a report about a local VM from the underlay") };
        assert_eq!(snap.tunnel(t).remote, l.provider_address, "a report from a PA other than the record's");
        learnable(snap, l, Location::Remote(t));
    }
}

fn location(snap: &Snapshot, l: Learned) -> Location {
    let rd = snap.subnet(l.vsid).expect("a report in a known VSID").routing_domain;
    snap.record_by_mac(rd, l.mac).expect("a report about a MAC with a record").location
}
