//! Writes the seed corpus of the fuzz targets, `corpus/<target>/`:
//! - `test-*`: inputs made of the frames and packets the core's tests build
//!   (`dp::testkit`), for every packet flow of the reference policy, and of
//!   what the core answers to them (ARP and ND replies, ICMP errors);
//! - `pcap-*`: given a capture of the underlay (`make lab` writes
//!   `lab/out/underlay.pcap`), its NVGRE packets as underlay inputs, runs of
//!   one TCP flow as batches, and the frames Host 1's VMs sent as VM inputs.
//!
//! `fuzz.sh seed [PCAP]` (`make fuzz-seed PCAP=...`): rewrites the `test-*`
//! files, and the `pcap-*` files when given a capture.

use nvgred_fuzz::input::{nat_op, write_nat_op, write_underlay, write_vm_frames};
use nvgred_fuzz::reference::{self, *};
use nvgred_native::dp::offload::{Gso, Offload};
use nvgred_native::dp::testkit::*;
use nvgred_native::dp::{on_vm_frame, LookupRecord, PacketBuf, Policy, PolicyDelta, PortId, RecordChange, RecordType};
use nvgred_native::wire::*;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// `fuzz.sh`'s input limit for the wire target.
const WIRE_MAX_LEN: usize = 8192;
/// At most this many inputs per target from one capture.
const FROM_PCAP: usize = 60;

struct Corpus {
    root: PathBuf,
    written: usize,
}

impl Corpus {
    fn put(&mut self, target: &str, name: &str, data: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
        self.written += 1;
    }

    /// Remove the files of `target` whose names start with `prefix`.
    fn clear(&self, prefix: &str) {
        for dir in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            for f in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().starts_with(prefix) {
                    fs::remove_file(f.path()).unwrap();
                }
            }
        }
    }
}

fn port_index(port: PortId) -> u8 {
    PORTS.iter().position(|&p| p == port).unwrap_or(PORTS.len()) as u8
}

/// A TCP segment frame with `len` bytes of payload and a 32-byte header
/// (timestamps, as Linux sends), checksum whole or in partial form (the
/// pseudo-header sum, as an offload leaves it).
fn tcp(src: (&str, &str), dst_mac: MacAddr, dst_ip: &str, seq: u32, flags: TcpFlags, len: usize, partial: bool) -> Vec<u8> {
    let mut seg = vec![0u8; 32 + len];
    for (i, b) in seg[32..].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    {
        let mut t = TcpPacket::new_unchecked(&mut seg[..]);
        t.set_src_port(40000);
        t.set_dst_port(5201);
        t.set_seq_number(seq);
        t.set_ack_number(77);
        t.set_header_len(32);
        t.set_flags(flags);
        t.set_window_len(502);
        t.options_mut().copy_from_slice(&[1, 1, 8, 10, 0, 0, 1, 2, 0, 0, 3, 4]);
    }
    let is_v4 = src.0.contains('.');
    let (pseudo, ethertype) = if is_v4 {
        let mut t = TcpPacket::new_unchecked(&mut seg[..]);
        t.fill_checksum_v4(&v4(src.0), &v4(dst_ip));
        (checksum::pseudo_header_v4(v4(src.0), v4(dst_ip), 6, (32 + len) as u32), EtherType::Ipv4)
    } else {
        let mut t = TcpPacket::new_unchecked(&mut seg[..]);
        t.fill_checksum_v6(&v6(src.0), &v6(dst_ip));
        (checksum::pseudo_header_v6(v6(src.0), v6(dst_ip), 6, (32 + len) as u32), EtherType::Ipv6)
    };
    if partial {
        seg[16..18].copy_from_slice(&pseudo.to_be_bytes());
    }
    let ip = if is_v4 { ipv4(src.0, dst_ip, IpProtocol::Tcp, 64, 0, &seg) } else { ipv6(src.0, dst_ip, IpProtocol::Tcp, 64, &seg) };
    ethernet(mac(src.1), dst_mac, ethertype, &ip)
}

/// The offload a VM's TAP sets on a large TCP segment (its checksum partial).
fn gso(frame: &[u8], size: u16) -> Offload {
    let v4 = frame[12..14] == [0x08, 0x00];
    let tcp_at = if v4 { 34 } else { 54 };
    Offload { gso: if v4 { Gso::Tcp4 } else { Gso::Tcp6 }, gso_size: size, hdr_len: tcp_at + 32, csum: Some((tcp_at, 16)) }
}

fn partial_csum(frame: &[u8]) -> Offload {
    let tcp_at = if frame[12..14] == [0x08, 0x00] { 34 } else { 54 };
    Offload { csum: Some((tcp_at, 16)), ..Offload::default() }
}

/// A frame as Host 1's VM `port` sends it, and what the core answers in its place.
fn answered(port: PortId, frame: &[u8]) -> Vec<u8> {
    let mut b = PacketBuf::from_frame(frame);
    on_vm_frame(reference::snapshot(), port, &mut b);
    b.frame().to_vec()
}

/// A frame and the offload its virtio-net header carries.
type Framed = (Offload, Vec<u8>);

fn vm_seeds(c: &mut Corpus, wire: &mut Vec<(u8, Vec<u8>)>) {
    let none = Offload::default();
    let c1 = CONTOSO1;
    let bcast = MacAddr::BROADCAST;
    let gw = mac(HOST1_GW_MAC);
    let c3 = mac(CONTOSO3.1);
    let big6 = {
        let mut f = ping6(("fd00:1::101", c1.1), c3, "fd00:1::103", 64);
        f.resize(14 + 1400, 0);
        f[18..20].copy_from_slice(&(1400u16 - 40).to_be_bytes());
        f
    };
    let flow = |n: usize, seq: u32, dst: (&str, &str)| tcp(c1, mac(dst.1), dst.0, seq, TcpFlags::ACK | TcpFlags::PSH, n, true);
    let seeds: Vec<(&str, PortId, Vec<Framed>)> = vec![
        ("switched", PORT_CONTOSO1, vec![(none, ping(c1, mac(CONTOSO2.1), CONTOSO2.0, 64))]),
        ("arp-gateway", PORT_CONTOSO1, vec![(none, arp_request(mac(c1.1), c1.0, "10.0.1.1", bcast))]),
        ("arp-remote", PORT_CONTOSO1, vec![(none, arp_request(mac(c1.1), c1.0, CONTOSO3.0, bcast))]),
        ("arp-probe", PORT_CONTOSO1, vec![(none, arp_request(mac(c1.1), c1.0, "10.0.1.99", bcast))]),
        ("arp-reply-l2only", PORT_CONTOSO1, vec![(none, arp_reply(mac(c1.1), c1.0, mac(L2ONLY_HOST2), "10.0.1.120"))]),
        ("arp-reply-l2only-v6", PORT_CONTOSO1, vec![(none, arp_reply(mac(c1.1), c1.0, mac(L2ONLY_V6), "10.0.1.121"))]),
        ("echo-gateway", PORT_CONTOSO1, vec![(none, ping(c1, gw, "10.0.1.1", 64))]),
        ("echo-gateway-v6", PORT_CONTOSO1, vec![(none, ping6(("fd00:1::101", c1.1), gw, "fd00:1::1", 64))]),
        ("routed-mtgw", PORT_CONTOSO1, vec![(none, ping(c1, gw, MTGW.0, 64))]),
        ("routed-wildcard", PORT_CONTOSO1, vec![(none, ping(c1, gw, "10.0.2.77", 64))]),
        ("routed-default", PORT_CONTOSO1, vec![(none, ping(c1, gw, "10.1.3.100", 64))]),
        ("routed-local", PORT_CONTOSO1, vec![(none, ping(c1, gw, LOCAL_6001.0, 64))]),
        ("routed-v6", PORT_CONTOSO1, vec![(none, ping6(("fd00:1::101", c1.1), gw, "fd00:2::2", 64))]),
        ("routed-v6-wildcard", PORT_CONTOSO1, vec![(none, ping6(("fd00:1::101", c1.1), gw, "fd00:2::77", 64))]),
        ("routed-ttl-1", PORT_CONTOSO1, vec![(none, ping(c1, gw, MTGW.0, 1))]),
        ("encap-udp", PORT_CONTOSO1, vec![(none, udp(c1, c3, CONTOSO3.0, 4000, 5000, 10))]),
        ("too-big-v4", PORT_CONTOSO1, vec![(none, big_udp(c1, c3, CONTOSO3.0, 1300, true))]),
        ("too-big-v4-no-df", PORT_CONTOSO1, vec![(none, big_udp(c1, c3, CONTOSO3.0, 1300, false))]),
        ("too-big-v6", PORT_CONTOSO1, vec![(none, big6.clone())]),
        ("jumbo", PORT_CONTOSO1, vec![(none, big_udp(c1, mac(REMOTE_JUMBO.1), REMOTE_JUMBO.0, 8000, true))]),
        ("over-v6", PORT_CONTOSO1, vec![(none, udp(c1, mac(REMOTE_OVER_V6.1), REMOTE_OVER_V6.0, 1, 2, 0))]),
        ("over-v6-ping6", PORT_CONTOSO1, vec![(none, ping6(("fd00:1::101", c1.1), mac(REMOTE_OVER_V6.1), "fd00:1::133", 64))]),
        ("ns-gateway", PORT_CONTOSO1, vec![(none, neighbor_solicit(mac(c1.1), "fd00:1::101", "fd00:1::1"))]),
        ("ns-remote", PORT_CONTOSO1, vec![(none, neighbor_solicit(mac(c1.1), "fd00:1::101", "fd00:1::103"))]),
        ("ns-dad", PORT_CONTOSO1, vec![(none, neighbor_solicit(mac(c1.1), "::", "fd00:1::1"))]),
        ("no-translation", PORT_CONTOSO1, vec![(none, ping(c1, mac(NO_TRANSLATION.1), NO_TRANSLATION.0, 64))]),
        ("tcp-partial", PORT_CONTOSO1, vec![(partial_csum(&flow(100, 1, CONTOSO3)), flow(100, 1, CONTOSO3))]),
        ("tcp-gso", PORT_CONTOSO1, vec![(gso(&flow(5000, 1, CONTOSO3), 1000), flow(5000, 1, CONTOSO3))]),
        ("tcp-gso-64k", PORT_CONTOSO1, vec![(gso(&flow(65334, 1, CONTOSO3), 1000), flow(65334, 1, CONTOSO3))]),
        ("tcp-gso-jumbo", PORT_CONTOSO1, vec![(gso(&flow(30000, 1, REMOTE_JUMBO), 9000), flow(30000, 1, REMOTE_JUMBO))]),
        (
            "tcp-gso-v6",
            PORT_CONTOSO1,
            vec![{
                let f = tcp(("fd00:1::101", c1.1), mac(REMOTE_OVER_V6.1), "fd00:1::133", 9, TcpFlags::ACK, 20000, true);
                (gso(&f, 8000), f)
            }],
        ),
        (
            "batch",
            PORT_CONTOSO1,
            vec![
                (none, ping(c1, c3, CONTOSO3.0, 64)),
                (none, udp(c1, c3, CONTOSO3.0, 1, 2, 0)),
                (none, arp_request(mac(c1.1), c1.0, "10.0.1.99", bcast)),
                (none, ping(c1, mac(CONTOSO2.1), CONTOSO2.0, 64)),
                (none, ping(c1, c3, CONTOSO3.0, 64)),
            ],
        ),
        ("learned-ping", PORT_LEARNED, vec![(none, ping(LOCAL_LEARNED, c3, CONTOSO3.0, 64))]),
        ("learned-arp-reply", PORT_LEARNED, vec![(none, arp_reply(mac(LOCAL_LEARNED.1), LOCAL_LEARNED.0, c3, CONTOSO3.0))]),
        ("fabrikam", PORT_FABRIKAM1, vec![(none, udp(FABRIKAM1, mac(FABRIKAM3.1), FABRIKAM3.0, 1, 2, 0))]),
        ("vsid-6001", PORT_6001, vec![(none, ping(LOCAL_6001, mac(MTGW.1), MTGW.0, 64))]),
        ("vsid-6001-routed", PORT_6001, vec![(none, ping(LOCAL_6001, mac(DEFAULT_GW_MAC), c1.0, 64))]),
        ("unknown-port", UNKNOWN_PORT, vec![(none, ping(c1, c3, CONTOSO3.0, 64))]),
    ];
    for (name, port, frames) in &seeds {
        let refs: Vec<(Offload, &[u8])> = frames.iter().map(|(o, f)| (*o, &f[..])).collect();
        c.put("vm_frames", &format!("test-{name}"), &write_vm_frames(port_index(*port), &refs));
        for (_, f) in frames {
            wire.push((0, f.clone()));
            wire.push((0, answered(*port, f)));
        }
    }
    for (off, _) in seeds.iter().flat_map(|s| &s.2) {
        let mut h = [0u8; 10];
        off.emit(&mut h);
        wire.push((10, h.to_vec()));
    }
}

fn underlay_seeds(c: &mut Corpus) {
    let c1 = (CONTOSO1.0, mac(CONTOSO1.1));
    let flow = |seq: u32, n: usize, flags: TcpFlags, partial: bool| tcp(CONTOSO3, c1.1, c1.0, seq, flags, n, partial);
    let flow6 = |seq: u32, n: usize, flags: TcpFlags| tcp(("fd00:1::133", REMOTE_OVER_V6.1), c1.1, "fd00:1::101", seq, flags, n, false);
    let from_host2 = |inner: &[u8]| nvgre(HOST2_PA, HOST1_PA, 6000, 7, inner);
    let ack = TcpFlags::ACK;
    let v4: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("ping", vec![from_host2(&ping(CONTOSO3, c1.1, c1.0, 64))]),
        ("arp-flood", vec![from_host2(&arp_request(mac(CONTOSO3.1), CONTOSO3.0, c1.0, MacAddr::BROADCAST))]),
        ("arp-reply-learned", vec![from_host2(&arp_reply(mac(L2ONLY_HOST2), "10.0.1.120", c1.1, c1.0))]),
        ("dynamic-keepalive", vec![from_host2(&ping(REMOTE_LEARNED, c1.1, c1.0, 64))]),
        ("routed", vec![nvgre(GW_PA, HOST1_PA, 6000, 1, &ping(MTGW, c1.1, c1.0, 63))]),
        ("jumbo", vec![nvgre(REMOTE_LARGE_MTU, LARGE_MTU_PA, 6000, 2, &ping(REMOTE_JUMBO, c1.1, c1.0, 64))]),
        ("fabrikam", vec![nvgre(HOST2_PA, HOST1_PA, 7000, 3, &udp(FABRIKAM3, mac(FABRIKAM1.1), FABRIKAM1.0, 1, 2, 0))]),
        ("not-my-pa", vec![nvgre(HOST1_PA, HOST2_PA, 6000, 4, &ping(CONTOSO1, c3(), CONTOSO3.0, 64))]),
        ("tcp-flow", (0..4).map(|k| from_host2(&flow(1000 + k * 1000, 1000, if k == 3 { ack | TcpFlags::PSH } else { ack }, false))).collect()),
        ("tcp-flow-partial", (0..3).map(|k| from_host2(&flow(1 + k * 900, 900, ack, true))).collect()),
        ("tcp-gro", vec![from_host2(&flow(1, 5000, ack, false))]),
        ("mixed", vec![from_host2(&flow(1, 500, ack, false)), from_host2(&ping(CONTOSO3, c1.1, c1.0, 64)), from_host2(&flow(501, 500, ack, false))]),
    ];
    for (name, pkts) in &v4 {
        let refs: Vec<(u8, &[u8])> = pkts.iter().map(|p| (0, &p[..])).collect();
        c.put("underlay", &format!("test-v4-{name}"), &write_underlay(false, &refs));
    }
    // The IPv6 socket reads from GRE on; selector 0x01: from Host 2's IPv6 PA to ours.
    let gre = |inner: &[u8]| nvgre(HOST2_PA, HOST1_PA, 6000, 5, inner)[IPV4_HEADER_LEN..].to_vec();
    let v6: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("ping", vec![gre(&ping(REMOTE_OVER_V6, c1.1, c1.0, 64))]),
        ("arp-flood", vec![gre(&arp_request(mac(L2ONLY_V6), "10.0.1.121", c1.0, MacAddr::BROADCAST))]),
        ("tcp-flow", (0..3).map(|k| gre(&flow6(5 + k * 1200, 1200, ack))).collect()),
        ("tcp-gro", vec![gre(&flow6(5, 12000, ack))]),
    ];
    for (name, pkts) in &v6 {
        let refs: Vec<(u8, &[u8])> = pkts.iter().map(|p| (0x01, &p[..])).collect();
        c.put("underlay", &format!("test-v6-{name}"), &write_underlay(true, &refs));
    }
}

fn c3() -> MacAddr {
    mac(CONTOSO3.1)
}

/// Wire inputs from whole frames: each layer, with the selector of its format.
fn wire_seeds(c: &mut Corpus, frames: &[(u8, Vec<u8>)]) {
    let mut seen = HashSet::new();
    let mut put = |c: &mut Corpus, format: u8, bytes: &[u8]| {
        if bytes.len() >= WIRE_MAX_LEN {
            return; // longer than the target reads
        }
        let mut input = vec![format];
        input.extend_from_slice(bytes);
        if seen.insert(input.clone()) {
            c.put("wire", &format!("test-{format:02}-{:016x}", fnv1a(&input)), &input);
        }
    };
    for (format, f) in frames {
        if *format != 0 {
            put(c, *format, f);
            continue;
        }
        put(c, 0, f);
        let Ok(eth) = EthernetFrame::new_checked(&f[..]) else { continue };
        match eth.ethertype() {
            EtherType::Arp => put(c, 1, eth.payload()),
            EtherType::Ipv4 => {
                put(c, 2, eth.payload());
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { continue };
                match ip.next_header() {
                    IpProtocol::Icmp => put(c, 4, ip.payload()),
                    IpProtocol::Udp => put(c, 7, ip.payload()),
                    IpProtocol::Tcp => put(c, 9, ip.payload()),
                    _ => {}
                }
            }
            EtherType::Ipv6 => {
                put(c, 3, eth.payload());
                let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else { continue };
                match ip.next_header() {
                    IpProtocol::Icmpv6 => {
                        put(c, 5, ip.payload());
                        put(c, 6, ip.payload());
                    }
                    IpProtocol::Udp => put(c, 7, ip.payload()),
                    IpProtocol::Tcp => put(c, 9, ip.payload()),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let gre = nvgre(HOST2_PA, HOST1_PA, 6000, 7, &ping(CONTOSO3, mac(CONTOSO1.1), CONTOSO1.0, 64));
    put(c, 8, &gre[IPV4_HEADER_LEN..]);
    put(c, 11, &gre[..IPV4_HEADER_LEN]);
    put(c, 11, &gre);
    for text in ["60:00:60:00:01:01", "60-00-60-00-01-01", "600060000101"] {
        put(c, 12, text.as_bytes());
    }
}

/// A name for an input that stays the same while the input does.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn policy_seeds(c: &mut Corpus) {
    let empty = Policy {
        flow_id: Default::default(),
        default_gateway_mac: MacAddr::default(),
        provider_addresses: vec![],
        customer_routes: vec![],
        lookup_records: vec![],
        ports: vec![],
        uplink: None,
        nats: vec![],
    };
    for (name, p) in [("host1", host1()), ("dual-stack", host1_dual_stack()), ("reference", reference::policy()), ("empty", empty), ("gateway", gateway_policy())] {
        c.put("policy_decode", &format!("test-{name}"), &p.encode());
    }
    // Deltas of the reference policy: a new VM, a VM moved, a VM gone, the routes again.
    let reference = reference::policy();
    let first = reference.lookup_records.iter().find(|r| r.kind == RecordType::Static).unwrap().clone();
    let moved = LookupRecord { provider_address: ip(HOST2_PA), ..first.clone() };
    let new = LookupRecord { customer_address: ip("10.0.1.77"), mac: mac("60:00:60:00:07:07"), ..moved.clone() };
    for (name, changes, routes) in [
        ("put", vec![RecordChange::Put(new.clone())], None),
        ("replace", vec![RecordChange::Replace { previous: first.clone(), record: moved }], None),
        ("delete", vec![RecordChange::Delete(first)], None),
        ("routes", vec![RecordChange::Put(new)], Some(reference.customer_routes.clone())),
    ] {
        c.put("policy_delta", &format!("test-{name}"), &PolicyDelta { customer_routes: routes, changes }.encode());
    }
}

/// Each NAT flow of the tests as a sequence: what a tenant sends, the
/// answer from outside to the port the NAT gave it, time passing.
fn nat_seeds(c: &mut Corpus) {
    use nvgred_native::dp::nat::*;
    use nvgred_native::dp::Counters;
    let nats = Nats::new(gateway_nats(), 64).unwrap();
    let counters = Counters::default();
    let remote = "203.0.113.7";
    // The external port the NAT gives a tenant's packet (the target starts at 1000 s too).
    let port_of = |p: &[u8], rd, vsid| {
        let mut q = p.to_vec();
        NatTable::new(0, 1, 1000).outbound(&nats, rd, vsid, &mut q, 1500, 1000, |_| false, &counters);
        u16::from_be_bytes([q[20], q[21]])
    };
    let flows: [(&str, Vec<u8>, Box<dyn Fn(u16, &[u8]) -> Vec<u8>>); 4] = [
        ("tcp", ip_tcp("10.0.1.101", remote, 40000, 443, TcpFlags::SYN), Box::new(|port, _| ip_tcp(remote, NAT_EXTERNAL, 443, port, TcpFlags::SYN | TcpFlags::ACK))),
        ("udp", ip_udp("10.0.1.101", remote, 5000, 53, 8), Box::new(|port, _| ip_udp(remote, NAT_EXTERNAL, 53, port, 8))),
        ("echo", ip_echo("10.0.1.101", remote, 7, false), Box::new(|_, p| {
            let mut q = p.to_vec();
            NatTable::new(0, 1, 1000).outbound(&nats, CONTOSO, 6000, &mut q, 1500, 1000, |_| false, &counters);
            let ident = u16::from_be_bytes([q[24], q[25]]);
            ip_echo(remote, NAT_EXTERNAL, ident, true)
        })),
        ("unreachable", ip_udp("10.0.1.101", remote, 5001, 53, 0), Box::new(|_, p| {
            let mut q = p.to_vec();
            NatTable::new(0, 1, 1000).outbound(&nats, CONTOSO, 6000, &mut q, 1500, 1000, |_| false, &counters);
            ip_unreachable("198.51.100.254", &q)
        })),
    ];
    for (name, out, answer) in &flows {
        let mut input = Vec::new();
        write_nat_op(&mut input, nat_op::OUTBOUND, out);
        write_nat_op(&mut input, nat_op::INBOUND, &answer(port_of(out, CONTOSO, 6000), out));
        write_nat_op(&mut input, nat_op::OUTBOUND | 4, out); // Fabrikam's tenant with the same CA
        write_nat_op(&mut input, nat_op::TICK, &[20]);
        write_nat_op(&mut input, nat_op::OUTBOUND | 0x80, &ip_udp("10.0.1.101", remote, 5002, 53, 1000));
        c.put("nat", &format!("test-{name}"), &input);
    }
    let mut input = Vec::new();
    let syn = ip_tcp(remote, NAT_EXTERNAL, 51000, 443, TcpFlags::SYN);
    write_nat_op(&mut input, nat_op::INBOUND, &syn);
    let mut translated = syn.clone();
    NatTable::new(0, 1, 1000).inbound(&nats, &mut translated, 1500, 1000, &counters);
    write_nat_op(&mut input, nat_op::OUTBOUND, &ip_unreachable("10.0.0.100", &translated));
    let ev = MappingEvent {
        kind: EventKind::Created,
        inside: InsideKey { vsid: 6000, proto: Proto::Udp, addr: "10.0.1.101".parse().unwrap(), port: 5000 },
        external: NAT_EXTERNAL.parse().unwrap(),
        external_port: 2000,
        tcp: 0,
        remaining: 300,
    };
    let mut b = [0u8; EVENT_LEN];
    ev.encode(&mut b);
    write_nat_op(&mut input, nat_op::EVENT, &b);
    c.put("nat", "test-static", &input);
}

/// The packets of a classic pcap file (either byte order, µs or ns), as
/// IP packets: Ethernet (LINKTYPE 1) or raw IP (101).
fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(data.len() >= 24, "{}: not a pcap file", path.display());
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => panic!("{}: not a classic pcap file (pcapng? save it as pcap)", path.display()),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = data[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let link = u32_at(20);
    assert!(link == 1 || link == 101, "{}: link type {link}, not Ethernet or raw IP", path.display());
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let len = u32_at(at + 8) as usize;
        let Some(pkt) = data.get(at + 16..at + 16 + len) else { break };
        at += 16 + len;
        if link == 101 {
            out.push(pkt.to_vec());
        } else if let Ok(eth) = EthernetFrame::new_checked(pkt) {
            if matches!(eth.ethertype(), EtherType::Ipv4 | EtherType::Ipv6) {
                out.push(eth.payload().to_vec());
            }
        }
    }
    out
}

/// What tells packets apart for the seeds: addresses, inner ethertype and
/// protocol, ICMP type or TCP flags, size class.
fn shape(outer: &[u8], inner: &[u8]) -> Vec<u8> {
    let mut key = outer.get(12..20).unwrap_or(&[]).to_vec();
    key.extend_from_slice(inner.get(12..14).unwrap_or(&[]));
    key.extend_from_slice(inner.get(23..24).unwrap_or(&[]));
    key.extend_from_slice(inner.get(34..35).unwrap_or(&[]));
    key.extend_from_slice(inner.get(47..48).unwrap_or(&[]));
    key.push((inner.len() / 256) as u8);
    key
}

fn pcap_seeds(c: &mut Corpus, path: &Path) {
    let snap = reference::snapshot();
    let (mut seen, mut underlay, mut vm, mut runs) = (HashSet::new(), 0, 0, 0);
    let mut run: Vec<Vec<u8>> = Vec::new();
    let flush = |c: &mut Corpus, run: &mut Vec<Vec<u8>>, runs: &mut usize| {
        if run.len() > 1 && *runs < FROM_PCAP / 4 {
            let refs: Vec<(u8, &[u8])> = run.iter().map(|p| (0, &p[..])).collect();
            c.put("underlay", &format!("pcap-run-{runs:03}"), &write_underlay(false, &refs));
            *runs += 1;
        }
        run.clear();
    };
    for pkt in read_pcap(path) {
        let Ok(ip) = Ipv4Packet::new_checked(&pkt[..]) else { continue };
        if ip.next_header() != IpProtocol::Gre {
            continue;
        }
        let Ok(gre) = GrePacket::new_checked(ip.payload()) else { continue };
        let inner = gre.payload();
        // Runs of one TCP flow (same outer header but lengths, same inner headers) as one batch.
        let is_tcp = inner.get(12..14) == Some(&[8, 0]) && inner.get(23) == Some(&6);
        let continues = run.last().is_some_and(|p| flow_key(p) == flow_key(&pkt));
        if !(is_tcp && continues) || run.len() == input_batch() {
            flush(c, &mut run, &mut runs);
        }
        if is_tcp {
            run.push(pkt.clone());
        }
        if !seen.insert(shape(&pkt, inner)) {
            continue;
        }
        if underlay < FROM_PCAP {
            c.put("underlay", &format!("pcap-{underlay:03}"), &write_underlay(false, &[(0, &pkt[..])]));
            underlay += 1;
        }
        // What Host 1's VMs sent, as their port reads it.
        let from_host1 = ip.src_addr() == v4(HOST1_PA);
        let port = inner.get(6..12).and_then(|src| PORTS.iter().position(|&p| snap.port(p).is_some_and(|i| i.mac.as_bytes() == src)));
        if let (true, Some(port), true) = (from_host1, port, vm < FROM_PCAP) {
            c.put("vm_frames", &format!("pcap-{vm:03}"), &write_vm_frames(port as u8, &[(Offload::default(), inner)]));
            vm += 1;
        }
    }
    flush(c, &mut run, &mut runs);
    println!("{}: {underlay} underlay packets, {runs} TCP runs, {vm} VM frames", path.display());
}

/// Outer addresses, inner IPv4 addresses and ports (with an IHL of 5 throughout).
fn flow_key(pkt: &[u8]) -> Option<(&[u8], &[u8])> {
    Some((pkt.get(12..20)?, pkt.get(20 + 8 + 14 + 12..20 + 8 + 14 + 24)?))
}

fn input_batch() -> usize {
    nvgred_fuzz::input::MAX_BATCH
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut c = Corpus { root, written: 0 };
    c.clear("test-");
    let mut wire = Vec::new();
    vm_seeds(&mut c, &mut wire);
    underlay_seeds(&mut c);
    wire_seeds(&mut c, &wire);
    policy_seeds(&mut c);
    nat_seeds(&mut c);
    if let Some(pcap) = std::env::args_os().nth(1) {
        c.clear("pcap-");
        pcap_seeds(&mut c, Path::new(&pcap));
    }
    println!("wrote {} inputs under {}", c.written, c.root.display());
}
