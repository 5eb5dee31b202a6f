//! The policy the control plane hands the core, and its bulk encoding.
//!
//! The control plane (TypeScript, `src/model/snapshot.ts`) validates the whole
//! policy and encodes it into one buffer; [`Policy::decode`] reads it back and
//! [`Snapshot::build`](super::Snapshot::build) indexes it. One crossing per
//! policy change, whatever the number of records.
//!
//! Encoding (little endian). Header, 32 bytes:
//! `magic "NVGP"`, `version u32 = 5`, `flow_id u8` (0 hash, 1 zero), 1 byte pad,
//! `default_gateway_mac [6]`, then the counts `u32` of provider addresses,
//! customer routes, lookup records and ports. Then the sections, in that order,
//! of fixed-size entries. An IP address is `family u8` (4 or 6) elsewhere in
//! the entry plus 16 bytes (IPv4 in the first 4).
//! - provider address (28): family u8, prefix_len u8, mtu u16 (of its
//!   interface: the largest outer packet), address 16, ifindex u32 (of its
//!   interface, its VLAN's for a PA on a VLAN; 0 if unknown), vlan_id u16
//!   (0: untagged), pad 2
//! - customer route (48): routing_domain u32, vsid u32, family u8, prefix_len u8,
//!   on_link u8, pad 1, metric u32, prefix 16, next_hop 16
//! - lookup record (48): vsid u32, ca_family u8, pa_family u8, rule u8, type u8,
//!   customer_address 16, provider_address 16, mac 6, pad 2
//! - port (16): id u32, vsid u32, mac 6, pad 2
//!
//! Then the HNV gateway (hnv-gateway.md), IPv4 only, addresses in 4 bytes in
//! network order: a header (32): uplink ifindex u32, uplink mtu u16, uplink
//! present u8, pad 1, uplink mac 6, pad 2, gateway 4, then the counts `u32`
//! of uplink addresses, NATs and static mappings; the uplink addresses (8):
//! address 4, prefix_len u8, pad 3; the NATs (32): routing_domain u32, vsid
//! u32, internal_address 4, external_address 4, mac 6, port_start u16,
//! port_end u16, static mappings u16 (theirs follow those of the NATs
//! before), pad 4; the static mappings (16): protocol u8 (0 tcp, 1 udp), pad
//! 1, external_port u16, vsid u32, internal_address 4, internal_port u16,
//! pad 2. A change to any of it goes as a whole policy, never a delta.
//!
//! A delta ([`PolicyDelta`]) changes the running policy's lookup records and
//! customer routes. Header, 16 bytes: `magic "NVGD"`, `version u32 = 1`,
//! `routes u32` (how many customer routes follow: the whole new list; `u32::MAX`:
//! unchanged, none follow), `changes u32`. Then the routes, then the record
//! changes in the order they apply, 100 bytes each: `op u8` (0 put, 1 replace,
//! 2 delete), pad 3, the record (48), and for a replace the record it
//! replaces (48; zeros otherwise). Entries are encoded as in a policy.

use super::nat::{Nat, Proto, StaticMapping, Timeouts, DEFAULT_MAX_MAPPINGS};
use crate::wire::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub type Vsid = u32;
pub type PortId = u32;
/// A routing domain, numbered by the control plane (the GUID stays there).
pub type RoutingDomain = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowIdMode {
    /// A hash of the inner flow in the key's low byte (RFC 7637 §3.1).
    #[default]
    Hash,
    /// Always 0, for peers that match the whole 32-bit key.
    Zero,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Encap = 0,
    None = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    Static = 0,
    Dynamic = 1,
    L2Only = 2,
    GatewayWildcard = 3,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAddress {
    pub address: IpAddr,
    pub prefix_len: u8,
    /// The MTU of its interface: the largest outer packet sent from it.
    pub mtu: u16,
    /// Its interface (0: unknown), its VLAN's for a PA on a VLAN: where
    /// large packets are handed to the kernel to segment, and where NVGRE
    /// for a PA on a VLAN must arrive.
    pub ifindex: u32,
    /// Its VLAN (0: untagged).
    pub vlan_id: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRoute {
    pub routing_domain: RoutingDomain,
    pub vsid: Vsid,
    pub prefix: IpAddr,
    pub prefix_len: u8,
    /// `None` = on-link: the destination CA itself is looked up.
    pub next_hop: Option<IpAddr>,
    pub metric: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRecord {
    pub vsid: Vsid,
    pub customer_address: IpAddr,
    pub mac: MacAddr,
    pub provider_address: IpAddr,
    pub rule: Rule,
    pub kind: RecordType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub id: PortId,
    pub vsid: Vsid,
    pub mac: MacAddr,
}

/// The HNV gateway's external network (config.md `uplink`): plain IPv4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Its interface (0: not there now).
    pub ifindex: u32,
    pub mtu: u16,
    /// The interface's MAC: the source of what is sent there.
    pub mac: MacAddr,
    /// The next hop of every external destination.
    pub gateway: Ipv4Addr,
    /// The addresses nvgred owns there, with their prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
}

/// A NAT (config.md `nat`): what the translation needs ([`Nat`]), and where
/// its inside address lives (tenants send to that MAC in that VSID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayNat {
    pub nat: Nat,
    pub vsid: Vsid,
    pub mac: MacAddr,
}

/// A host's whole policy, as validated by the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub flow_id: FlowIdMode,
    /// The gateway MAC of VSIDs whose `.1` has no lookup record with a local PA.
    pub default_gateway_mac: MacAddr,
    pub provider_addresses: Vec<ProviderAddress>,
    pub customer_routes: Vec<CustomerRoute>,
    pub lookup_records: Vec<LookupRecord>,
    pub ports: Vec<Port>,
    /// Present on an HNV gateway host.
    pub uplink: Option<Uplink>,
    pub nats: Vec<GatewayNat>,
}

/// Why a policy buffer was refused (the control plane wrote it wrongly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

const MAGIC: &[u8; 4] = b"NVGP";
const DELTA_MAGIC: &[u8; 4] = b"NVGD";
const DELTA_VERSION: u32 = 1;
const DELTA_HEADER_LEN: usize = 16;
const CHANGE_LEN: usize = 4 + 2 * RECORD_LEN;
const ROUTES_UNCHANGED: u32 = u32::MAX;
/// Routing domains are numbered from 0; the MAC index packs the number in 16 bits.
pub const MAX_ROUTING_DOMAIN: RoutingDomain = 0xfffe;
const VERSION: u32 = 5;
const HEADER_LEN: usize = 32;
const GATEWAY_LEN: usize = 32;
const UPLINK_ADDRESS_LEN: usize = 8;
const NAT_LEN: usize = 32;
const STATIC_LEN: usize = 16;
const PA_LEN: usize = 28;
const ROUTE_LEN: usize = 48;
const RECORD_LEN: usize = 48;
const PORT_LEN: usize = 16;

/// Reads fixed-size fields in order; every read is bounds-checked by the
/// section length check done before.
struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (h, t) = self.b.split_at(n);
        self.b = t;
        h
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take(2).try_into().unwrap())
    }
    fn mac(&mut self) -> MacAddr {
        MacAddr::from_bytes(self.take(6))
    }
    fn v4(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(<[u8; 4]>::try_from(self.take(4)).unwrap())
    }
    fn ip(&mut self, family: u8) -> Result<IpAddr, DecodeError> {
        let raw: [u8; 16] = self.take(16).try_into().unwrap();
        match family {
            4 => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(raw))),
            f => Err(DecodeError(format!("address family {f}"))),
        }
    }
}

// What the control plane validated is checked again where trusting it
// could break an index or an arithmetic: prefix lengths, host bits, 24-bit VSIDs.
fn vsid_ok(v: Vsid) -> Result<Vsid, DecodeError> {
    if v <= MAX_VSID {
        Ok(v)
    } else {
        Err(DecodeError(format!("VSID {v} beyond 24 bits")))
    }
}

fn prefix_ok(a: IpAddr, len: u8) -> Result<u8, DecodeError> {
    let max = if a.is_ipv4() { 32 } else { 128 };
    if len > max {
        Err(DecodeError(format!("prefix length {len} for {a}")))
    } else {
        Ok(len)
    }
}

impl Cursor<'_> {
    /// One customer route entry (ROUTE_LEN bytes).
    fn route(&mut self) -> Result<CustomerRoute, DecodeError> {
        let routing_domain = self.u32();
        if routing_domain > MAX_ROUTING_DOMAIN {
            return Err(DecodeError(format!("routing domain number {routing_domain} (at most {MAX_ROUTING_DOMAIN})")));
        }
        let vsid = vsid_ok(self.u32())?;
        let fam = self.u8();
        let prefix_len = self.u8();
        let on_link = self.u8() != 0;
        self.take(1);
        let metric = self.u32();
        let prefix = self.ip(fam)?;
        let prefix_len = prefix_ok(prefix, prefix_len)?;
        if masked(prefix, prefix_len) != prefix {
            return Err(DecodeError(format!("route {prefix}/{prefix_len} has host bits set")));
        }
        let next_hop = self.ip(fam)?;
        Ok(CustomerRoute { routing_domain, vsid, prefix, prefix_len, next_hop: if on_link { None } else { Some(next_hop) }, metric })
    }

    /// One lookup record entry (RECORD_LEN bytes).
    fn record(&mut self) -> Result<LookupRecord, DecodeError> {
        let vsid = vsid_ok(self.u32())?;
        let ca_family = self.u8();
        let pa_family = self.u8();
        let rule = match self.u8() {
            0 => Rule::Encap,
            1 => Rule::None,
            r => return Err(DecodeError(format!("rule {r}"))),
        };
        let kind = match self.u8() {
            0 => RecordType::Static,
            1 => RecordType::Dynamic,
            2 => RecordType::L2Only,
            3 => RecordType::GatewayWildcard,
            t => return Err(DecodeError(format!("record type {t}"))),
        };
        let customer_address = self.ip(ca_family)?;
        let provider_address = self.ip(pa_family)?;
        let mac = self.mac();
        self.take(2);
        Ok(LookupRecord { vsid, customer_address, mac, provider_address, rule, kind })
    }
}

impl Cursor<'_> {
    /// The gateway section (its length checked before).
    fn gateway(&mut self) -> Result<(Option<Uplink>, Vec<GatewayNat>), DecodeError> {
        let ifindex = self.u32();
        let mtu = self.u16();
        let present = self.u8() != 0;
        self.take(1);
        let mac = self.mac();
        self.take(2);
        let gateway = self.v4();
        let (addresses, nats, statics) = (self.u32() as usize, self.u32() as usize, self.u32() as usize);
        let mut uplink = Uplink { ifindex, mtu, mac, gateway, addresses: Vec::with_capacity(addresses) };
        for _ in 0..addresses {
            let a = self.v4();
            let len = prefix_ok(IpAddr::V4(a), self.u8())?;
            self.take(3);
            uplink.addresses.push((a, len));
        }
        let mut out = Vec::with_capacity(nats);
        let mut wanted = 0;
        for i in 0..nats {
            let routing_domain = self.u32();
            let vsid = vsid_ok(self.u32())?;
            let internal_address = self.v4();
            let external_address = self.v4();
            let mac = self.mac();
            let (port_start, port_end, count) = (self.u16(), self.u16(), self.u16());
            self.take(4);
            wanted += usize::from(count);
            let nat = Nat {
                // The control plane keeps the names; the core's messages say which entry.
                name: format!("nat[{i}]"),
                routing_domain,
                internal_address,
                external_address,
                port_start,
                port_end,
                static_mappings: Vec::with_capacity(usize::from(count)),
                max_mappings: DEFAULT_MAX_MAPPINGS,
                timeouts: Timeouts::default(),
            };
            out.push((GatewayNat { nat, vsid, mac }, count));
        }
        if wanted != statics {
            return Err(DecodeError(format!("{statics} static mappings, the NATs say {wanted}")));
        }
        for (g, count) in out.iter_mut() {
            for _ in 0..*count {
                let proto = match self.u8() {
                    0 => Proto::Tcp,
                    1 => Proto::Udp,
                    p => return Err(DecodeError(format!("static mapping protocol {p}"))),
                };
                self.take(1);
                let external_port = self.u16();
                let vsid = vsid_ok(self.u32())?;
                let internal_address = self.v4();
                let internal_port = self.u16();
                self.take(2);
                g.nat.static_mappings.push(StaticMapping { proto, external_port, vsid, internal_address, internal_port });
            }
        }
        Ok((present.then_some(uplink), out.into_iter().map(|(g, _)| g).collect()))
    }
}

fn put_gateway(out: &mut Vec<u8>, uplink: Option<&Uplink>, nats: &[GatewayNat]) {
    let none = Uplink { ifindex: 0, mtu: 0, mac: MacAddr([0; 6]), gateway: Ipv4Addr::UNSPECIFIED, addresses: Vec::new() };
    let u = uplink.unwrap_or(&none);
    out.extend_from_slice(&u.ifindex.to_le_bytes());
    out.extend_from_slice(&u.mtu.to_le_bytes());
    out.extend_from_slice(&[uplink.is_some() as u8, 0]);
    out.extend_from_slice(u.mac.as_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&u.gateway.octets());
    let statics: usize = nats.iter().map(|g| g.nat.static_mappings.len()).sum();
    for n in [u.addresses.len(), nats.len(), statics] {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    for (a, len) in &u.addresses {
        out.extend_from_slice(&a.octets());
        out.extend_from_slice(&[*len, 0, 0, 0]);
    }
    for g in nats {
        out.extend_from_slice(&g.nat.routing_domain.to_le_bytes());
        out.extend_from_slice(&g.vsid.to_le_bytes());
        out.extend_from_slice(&g.nat.internal_address.octets());
        out.extend_from_slice(&g.nat.external_address.octets());
        out.extend_from_slice(g.mac.as_bytes());
        for v in [g.nat.port_start, g.nat.port_end, g.nat.static_mappings.len() as u16] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[0; 4]);
    }
    for s in nats.iter().flat_map(|g| &g.nat.static_mappings) {
        out.extend_from_slice(&[if s.proto == Proto::Udp { 1 } else { 0 }, 0]);
        out.extend_from_slice(&s.external_port.to_le_bytes());
        out.extend_from_slice(&s.vsid.to_le_bytes());
        out.extend_from_slice(&s.internal_address.octets());
        out.extend_from_slice(&s.internal_port.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
    }
}

fn put_route(out: &mut Vec<u8>, r: &CustomerRoute) {
    out.extend_from_slice(&r.routing_domain.to_le_bytes());
    out.extend_from_slice(&r.vsid.to_le_bytes());
    out.extend_from_slice(&[family(&r.prefix), r.prefix_len, r.next_hop.is_none() as u8, 0]);
    out.extend_from_slice(&r.metric.to_le_bytes());
    put_ip(out, &r.prefix);
    put_ip(out, &r.next_hop.unwrap_or(r.prefix));
}

fn put_record(out: &mut Vec<u8>, r: &LookupRecord) {
    out.extend_from_slice(&r.vsid.to_le_bytes());
    out.extend_from_slice(&[family(&r.customer_address), family(&r.provider_address), r.rule as u8, r.kind as u8]);
    put_ip(out, &r.customer_address);
    put_ip(out, &r.provider_address);
    out.extend_from_slice(r.mac.as_bytes());
    out.extend_from_slice(&[0, 0]);
}

fn put_ip(out: &mut Vec<u8>, a: &IpAddr) {
    let mut raw = [0u8; 16];
    match a {
        IpAddr::V4(v4) => raw[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => raw = v6.octets(),
    }
    out.extend_from_slice(&raw);
}

/// VSIDs are 24 bits (RFC 7637); the core's index keys rely on it.
pub const MAX_VSID: Vsid = 0xff_ffff;

/// `a` with the bits past `len` cleared.
fn masked(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => IpAddr::V4((u32::from(v) & u32::MAX.checked_shl(32 - len as u32).unwrap_or(0)).into()),
        IpAddr::V6(v) => IpAddr::V6((u128::from(v) & u128::MAX.checked_shl(128 - len as u32).unwrap_or(0)).into()),
    }
}

fn family(a: &IpAddr) -> u8 {
    if a.is_ipv4() {
        4
    } else {
        6
    }
}

impl Policy {
    pub fn decode(buf: &[u8]) -> Result<Policy, DecodeError> {
        if buf.len() < HEADER_LEN || &buf[..4] != MAGIC {
            return Err(DecodeError("not a policy buffer".into()));
        }
        let mut c = Cursor { b: &buf[4..] };
        let version = c.u32();
        if version != VERSION {
            return Err(DecodeError(format!("policy encoding version {version}, expected {VERSION}")));
        }
        let flow_id = match c.u8() {
            0 => FlowIdMode::Hash,
            1 => FlowIdMode::Zero,
            m => return Err(DecodeError(format!("flow_id mode {m}"))),
        };
        c.u8();
        let default_gateway_mac = c.mac();
        let counts = [c.u32() as usize, c.u32() as usize, c.u32() as usize, c.u32() as usize];
        let records = HEADER_LEN
            + counts[0] * PA_LEN
            + counts[1] * ROUTE_LEN
            + counts[2] * RECORD_LEN
            + counts[3] * PORT_LEN;
        let gateway = buf.get(records..records + GATEWAY_LEN).ok_or_else(|| DecodeError(format!("policy buffer is {} bytes, counts say at least {}", buf.len(), records + GATEWAY_LEN)))?;
        let gw_count = |at: usize| u32::from_le_bytes(gateway[at..at + 4].try_into().unwrap()) as usize;
        let expected = records + GATEWAY_LEN + gw_count(20) * UPLINK_ADDRESS_LEN + gw_count(24) * NAT_LEN + gw_count(28) * STATIC_LEN;
        if buf.len() != expected {
            return Err(DecodeError(format!("policy buffer is {} bytes, counts say {expected}", buf.len())));
        }

        let mut provider_addresses = Vec::with_capacity(counts[0]);
        for _ in 0..counts[0] {
            let fam = c.u8();
            let prefix_len = c.u8();
            let mtu = u16::from_le_bytes(c.take(2).try_into().unwrap());
            let address = c.ip(fam)?;
            let prefix_len = prefix_ok(address, prefix_len)?;
            let ifindex = c.u32();
            let vlan_id = u16::from_le_bytes(c.take(2).try_into().unwrap());
            c.take(2);
            provider_addresses.push(ProviderAddress { address, prefix_len, mtu, ifindex, vlan_id });
        }
        let customer_routes = (0..counts[1]).map(|_| c.route()).collect::<Result<_, _>>()?;
        let lookup_records = (0..counts[2]).map(|_| c.record()).collect::<Result<_, _>>()?;
        let mut ports = Vec::with_capacity(counts[3]);
        for _ in 0..counts[3] {
            let id = c.u32();
            let vsid = vsid_ok(c.u32())?;
            let mac = c.mac();
            c.take(2);
            ports.push(Port { id, vsid, mac });
        }
        let (uplink, nats) = c.gateway()?;
        Ok(Policy { flow_id, default_gateway_mac, provider_addresses, customer_routes, lookup_records, ports, uplink, nats })
    }

    /// The inverse of [`decode`](Self::decode), for tests and benchmarks that
    /// build policies in Rust.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER_LEN
                + self.provider_addresses.len() * PA_LEN
                + self.customer_routes.len() * ROUTE_LEN
                + self.lookup_records.len() * RECORD_LEN
                + self.ports.len() * PORT_LEN,
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(match self.flow_id {
            FlowIdMode::Hash => 0,
            FlowIdMode::Zero => 1,
        });
        out.push(0);
        out.extend_from_slice(self.default_gateway_mac.as_bytes());
        for n in [
            self.provider_addresses.len(),
            self.customer_routes.len(),
            self.lookup_records.len(),
            self.ports.len(),
        ] {
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        for pa in &self.provider_addresses {
            out.extend_from_slice(&[family(&pa.address), pa.prefix_len]);
            out.extend_from_slice(&pa.mtu.to_le_bytes());
            put_ip(&mut out, &pa.address);
            out.extend_from_slice(&pa.ifindex.to_le_bytes());
            out.extend_from_slice(&pa.vlan_id.to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        for r in &self.customer_routes {
            put_route(&mut out, r);
        }
        for r in &self.lookup_records {
            put_record(&mut out, r);
        }
        for p in &self.ports {
            out.extend_from_slice(&p.id.to_le_bytes());
            out.extend_from_slice(&p.vsid.to_le_bytes());
            out.extend_from_slice(p.mac.as_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        put_gateway(&mut out, self.uplink.as_ref(), &self.nats);
        out
    }
}

/// One change to the running policy's lookup records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordChange {
    /// A record the policy did not have.
    Put(LookupRecord),
    /// `record` takes the place of `previous` (same identity).
    Replace { previous: LookupRecord, record: LookupRecord },
    /// A record the policy had.
    Delete(LookupRecord),
}

/// What changed in a running policy: record changes and, when the customer
/// routes changed, all of them (they are few, and indexed together).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyDelta {
    pub customer_routes: Option<Vec<CustomerRoute>>,
    pub changes: Vec<RecordChange>,
}

impl PolicyDelta {
    pub fn decode(buf: &[u8]) -> Result<PolicyDelta, DecodeError> {
        if buf.len() < DELTA_HEADER_LEN || &buf[..4] != DELTA_MAGIC {
            return Err(DecodeError("not a policy delta buffer".into()));
        }
        let mut c = Cursor { b: &buf[4..] };
        let version = c.u32();
        if version != DELTA_VERSION {
            return Err(DecodeError(format!("policy delta encoding version {version}, expected {DELTA_VERSION}")));
        }
        let routes = c.u32();
        let changes = c.u32() as usize;
        let route_count = if routes == ROUTES_UNCHANGED { 0 } else { routes as usize };
        let expected = DELTA_HEADER_LEN + route_count * ROUTE_LEN + changes * CHANGE_LEN;
        if buf.len() != expected {
            return Err(DecodeError(format!("policy delta buffer is {} bytes, counts say {expected}", buf.len())));
        }
        let customer_routes = if routes == ROUTES_UNCHANGED {
            None
        } else {
            Some((0..route_count).map(|_| c.route()).collect::<Result<_, _>>()?)
        };
        let mut out = Vec::with_capacity(changes);
        for _ in 0..changes {
            let op = c.u8();
            c.take(3);
            let record = c.record()?;
            let previous = c.take(RECORD_LEN);
            out.push(match op {
                0 => RecordChange::Put(record),
                1 => RecordChange::Replace { previous: Cursor { b: previous }.record()?, record },
                2 => RecordChange::Delete(record),
                op => return Err(DecodeError(format!("record change op {op}"))),
            });
        }
        Ok(PolicyDelta { customer_routes, changes: out })
    }

    /// The inverse of [`decode`](Self::decode), for tests and benchmarks.
    pub fn encode(&self) -> Vec<u8> {
        let routes = self.customer_routes.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(DELTA_HEADER_LEN + routes.len() * ROUTE_LEN + self.changes.len() * CHANGE_LEN);
        out.extend_from_slice(DELTA_MAGIC);
        out.extend_from_slice(&DELTA_VERSION.to_le_bytes());
        let route_count = self.customer_routes.as_ref().map_or(ROUTES_UNCHANGED, |r| r.len() as u32);
        out.extend_from_slice(&route_count.to_le_bytes());
        out.extend_from_slice(&(self.changes.len() as u32).to_le_bytes());
        for r in routes {
            put_route(&mut out, r);
        }
        for c in &self.changes {
            let (op, record, previous) = match c {
                RecordChange::Put(r) => (0, r, None),
                RecordChange::Replace { previous, record } => (1, record, Some(previous)),
                RecordChange::Delete(r) => (2, r, None),
            };
            out.extend_from_slice(&[op, 0, 0, 0]);
            put_record(&mut out, record);
            match previous {
                Some(p) => put_record(&mut out, p),
                None => out.extend_from_slice(&[0; RECORD_LEN]),
            }
        }
        out
    }
}
