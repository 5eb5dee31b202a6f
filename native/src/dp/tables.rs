//! The immutable table snapshot the decision core reads.
//!
//! Built once per policy change from a [`Policy`], then shared read-only by
//! every worker: a packet sees one snapshot from start to end, so a change
//! lands whole or not at all.

use super::policy::{FlowIdMode, Policy, PortId, RecordType, RoutingDomain, Rule, Vsid};
use super::DropReason;
use crate::wire::MacAddr;
use std::collections::HashMap;
use super::encap::Template;
use super::index::IndexTable;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;

/// A multiply-rotate hash per word (rustc's Fx), with a final mix: a
/// multiplication only carries low bits upward, and the table indexes
/// buckets by the low bits, so without the mix keys that differ in their
/// high bytes (10.0.x.y) would all collide. Keys come from the policy;
/// packets only look up.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64)
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64)
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i)
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64)
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The 64-bit finalizer of MurmurHash3: every input bit reaches every output bit.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A tunnel of the snapshot (see [`Snapshot::tunnel`]); never zero, so a
/// [`Location`] fits in four bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelId(NonZeroU32);

impl TunnelId {
    fn new(index: usize) -> TunnelId {
        TunnelId(NonZeroU32::new(index as u32 + 1).expect("fewer than 2^32 tunnels"))
    }
    #[inline]
    fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

/// Where a lookup record's VM lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Behind one of this host's provider addresses.
    Local,
    /// Behind another host.
    Remote(TunnelId),
}

/// A lookup record as the core keeps it, in 16 bytes, inline in the index
/// tables (the CA or the MAC is the key).
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub vsid: Vsid,
    pub mac: MacAddr,
    pub rule: Rule,
    pub kind: RecordType,
    pub location: Location,
}

impl Default for Record {
    fn default() -> Record {
        Record { vsid: 0, mac: MacAddr([0; 6]), rule: Rule::Encap, kind: RecordType::Static, location: Location::Local }
    }
}

/// Index keys: a VSID and an IPv4 CA; a routing domain and a MAC.
#[inline]
fn ca4_key(vsid: Vsid, ca: Ipv4Addr) -> u64 {
    (vsid as u64) << 32 | u32::from(ca) as u64
}

#[inline]
fn mac_key(rd: RoutingDomain, mac: MacAddr) -> u64 {
    let m = mac.0;
    (rd as u64) << 48 | u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
}

/// The path to one remote provider address, with the local PA to send from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    pub local: IpAddr,
    pub remote: IpAddr,
    /// The largest outer packet the local PA's interface sends.
    pub mtu: u16,
    /// The outer header; none without a local PA of the remote's family.
    pub template: Option<Template>,
}

#[derive(Debug, Clone)]
pub struct Subnet {
    pub routing_domain: RoutingDomain,
    /// MAC_DFGW: the MAC the host answers with for the `.1` of this VSID.
    pub gateway_mac: MacAddr,
    /// Local VM ports of this VSID, for flooding.
    pub ports: Vec<PortId>,
    /// Its per-VSID counters, if it has a slot (see `VsidSlots`).
    pub counter_slot: Option<u32>,
    /// The host's own (`.1`) address in the subnet, per family: the source of
    /// the ICMP errors it sends the VMs.
    pub gateway_v4: Option<IpAddr>,
    pub gateway_v6: Option<IpAddr>,
    /// Tunnels to the PAs of the VSID's L2Only records (flow 4 probes).
    pub l2only_tunnels: Vec<TunnelId>,
}

#[derive(Debug, Clone, Copy)]
pub struct PortInfo {
    pub vsid: Vsid,
    pub mac: MacAddr,
}

#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub vsid: Vsid,
    pub prefix: IpAddr,
    pub prefix_len: u8,
    pub next_hop: Option<IpAddr>,
    pub metric: u32,
}

impl Route {
    fn contains(&self, a: IpAddr) -> bool {
        match (self.prefix, a) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix_len as u32).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix_len as u32).unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// The subnet's first host address, owned by the host as its default
    /// gateway; none for routes via a next hop and for /0 (not a subnet).
    fn gateway_address(&self) -> Option<IpAddr> {
        if self.next_hop.is_some() || self.prefix_len == 0 {
            return None;
        }
        match self.prefix {
            IpAddr::V4(p) if self.prefix_len <= 30 => Some(IpAddr::V4((u32::from(p) + 1).into())),
            IpAddr::V6(p) if self.prefix_len <= 126 => Some(IpAddr::V6((u128::from(p) + 1).into())),
            _ => None,
        }
    }
}

/// Where the distributed router sends a packet for a destination CA.
#[derive(Debug, Clone, Copy)]
pub enum NextHop<'a> {
    /// A gateway address: the host answers it itself.
    Gateway,
    /// By `route` to the VM of `record`: the destination's, or the route's next hop's.
    Vm { route: &'a Route, target: IpAddr, record: &'a Record },
}

/// How this host reaches the VM a lookup record names.
#[derive(Debug, Clone, Copy)]
pub enum Reach<'a> {
    Port(PortId),
    Tunnel(&'a Tunnel),
}

#[derive(Default)]
pub struct Snapshot {
    pub flow_id: FlowIdMode,
    pub local_pas: Vec<IpAddr>,
    provider_addresses: Vec<super::policy::ProviderAddress>,
    /// Some PA is on a VLAN (then where NVGRE arrives is checked).
    has_vlans: bool,
    pub tunnels: Vec<Tunnel>,
    subnets: FxMap<Vsid, Subnet>,
    ports: FxMap<PortId, PortInfo>,
    port_by_mac: FxMap<(Vsid, MacAddr), PortId>,
    /// Customer routes per routing domain, longest prefix first, then lowest metric.
    routes: FxMap<RoutingDomain, Vec<Route>>,
    /// Host-owned `.1` addresses: (routing domain, address) → VSID.
    gateways: FxMap<(RoutingDomain, IpAddr), Vsid>,
    /// Lookup records by IPv4 CA (the common case, in a prefetchable table) and by IPv6 CA.
    by_ca4: IndexTable<Record>,
    by_ca6: FxMap<(Vsid, Ipv6Addr), Record>,
    by_mac: IndexTable<Record>,
    /// Gateway wildcard records: (VSID, is IPv4) → the HNV gateway that takes
    /// destinations routed into that VSID without an exact record.
    wildcards: FxMap<(Vsid, bool), Record>,
}

impl Snapshot {
    /// Index a validated policy. The control plane has enforced the config
    /// contract; anything inconsistent that slips through is skipped here
    /// rather than trusted (a port or record whose VSID has no route).
    pub fn build(policy: &Policy) -> Snapshot {
        let records = policy.lookup_records.len();
        let mut s = Snapshot {
            by_ca4: IndexTable::with_capacity(records),
            by_mac: IndexTable::with_capacity(records),
            flow_id: policy.flow_id,
            local_pas: policy.provider_addresses.iter().map(|p| p.address).collect(),
            has_vlans: policy.provider_addresses.iter().any(|p| p.vlan_id != 0),
            provider_addresses: policy.provider_addresses.clone(),
            ..Default::default()
        };
        for r in &policy.customer_routes {
            s.subnets.entry(r.vsid).or_insert_with(|| Subnet {
                routing_domain: r.routing_domain,
                gateway_mac: policy.default_gateway_mac,
                ports: Vec::new(),
                counter_slot: None,
                gateway_v4: None,
                gateway_v6: None,
                l2only_tunnels: Vec::new(),
            });
            let route = Route {
                vsid: r.vsid,
                prefix: r.prefix,
                prefix_len: r.prefix_len,
                next_hop: r.next_hop,
                metric: r.metric,
            };
            if let Some(gw) = route.gateway_address() {
                s.gateways.insert((r.routing_domain, gw), r.vsid);
                let subnet = s.subnets.get_mut(&r.vsid).unwrap();
                let slot = if gw.is_ipv4() { &mut subnet.gateway_v4 } else { &mut subnet.gateway_v6 };
                slot.get_or_insert(gw);
            }
            s.routes.entry(r.routing_domain).or_default().push(route);
        }
        for routes in s.routes.values_mut() {
            routes.sort_by(|a, b| b.prefix_len.cmp(&a.prefix_len).then(a.metric.cmp(&b.metric)));
        }

        let mut tunnel_index: FxMap<IpAddr, TunnelId> = FxMap::default();
        for r in &policy.lookup_records {
            let Some(subnet) = s.subnets.get(&r.vsid) else { continue };
            let rd = subnet.routing_domain;
            let location = if s.local_pas.contains(&r.provider_address) {
                Location::Local
            } else {
                let next = TunnelId::new(s.tunnels.len());
                let idx = *tunnel_index.entry(r.provider_address).or_insert_with(|| next);
                if idx == next {
                    let local = pick_source(&policy.provider_addresses, r.provider_address);
                    let local_address = local.map(|pa| pa.address).unwrap_or(unspecified(r.provider_address));
                    s.tunnels.push(Tunnel {
                        local: local_address,
                        remote: r.provider_address,
                        mtu: local.map(|pa| pa.mtu).unwrap_or(0),
                        template: local.and_then(|_| Template::new(local_address, r.provider_address)),
                    });
                }
                Location::Remote(idx)
            };
            let rec = Record { vsid: r.vsid, mac: r.mac, rule: r.rule, kind: r.kind, location };
            // A `.1` record with a local PA names the gateway MAC of its VSID.
            if location == Location::Local && s.gateways.get(&(rd, r.customer_address)) == Some(&r.vsid) {
                s.subnets.get_mut(&r.vsid).unwrap().gateway_mac = r.mac;
                continue;
            }
            match r.kind {
                RecordType::Static | RecordType::Dynamic => {
                    match r.customer_address {
                        IpAddr::V4(ca) => s.by_ca4.insert(ca4_key(r.vsid, ca), rec),
                        IpAddr::V6(ca) => {
                            s.by_ca6.insert((r.vsid, ca), rec);
                        }
                    }
                    s.by_mac.insert(mac_key(rd, r.mac), rec);
                }
                RecordType::L2Only => {
                    s.by_mac.insert_if_absent(mac_key(rd, r.mac), rec);
                    if let Location::Remote(t) = location {
                        let tunnels = &mut s.subnets.get_mut(&r.vsid).unwrap().l2only_tunnels;
                        if !tunnels.contains(&t) {
                            tunnels.push(t);
                        }
                    }
                }
                RecordType::GatewayWildcard => {
                    s.wildcards.insert((r.vsid, r.customer_address.is_ipv4()), rec);
                    // Its traffic comes back from the gateway's MAC: the
                    // underlay check needs it, unless a static record has it.
                    s.by_mac.insert_if_absent(mac_key(rd, r.mac), rec);
                }
            }
        }

        for p in &policy.ports {
            let Some(subnet) = s.subnets.get_mut(&p.vsid) else { continue };
            subnet.ports.push(p.id);
            s.ports.insert(p.id, PortInfo { vsid: p.vsid, mac: p.mac });
            s.port_by_mac.insert((p.vsid, p.mac), p.id);
        }
        s
    }

    /// Give every VSID its per-VSID counter slot, while slots last.
    pub fn assign_counter_slots(&mut self, slots: &mut super::VsidSlots) {
        let mut vsids: Vec<Vsid> = self.subnets.keys().copied().collect();
        vsids.sort_unstable();
        for vsid in vsids {
            self.subnets.get_mut(&vsid).unwrap().counter_slot = slots.slot(vsid);
        }
    }

    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortInfo> {
        self.ports.get(&id)
    }

    #[inline]
    pub fn port_by_mac(&self, vsid: Vsid, mac: MacAddr) -> Option<PortId> {
        self.port_by_mac.get(&(vsid, mac)).copied()
    }

    #[inline]
    pub fn subnet(&self, vsid: Vsid) -> Option<&Subnet> {
        self.subnets.get(&vsid)
    }

    #[inline]
    pub fn record_by_ca(&self, vsid: Vsid, ca: IpAddr) -> Option<&Record> {
        match ca {
            IpAddr::V4(ca) => self.by_ca4.get(ca4_key(vsid, ca)),
            IpAddr::V6(ca) => self.by_ca6.get(&(vsid, ca)),
        }
    }

    #[inline]
    pub fn record_by_mac(&self, rd: RoutingDomain, mac: MacAddr) -> Option<&Record> {
        self.by_mac.get(mac_key(rd, mac))
    }

    /// Start loading what `record_by_mac` will read (batches overlap their misses).
    #[inline]
    pub fn prefetch_mac(&self, rd: RoutingDomain, mac: MacAddr) {
        self.by_mac.prefetch(mac_key(rd, mac))
    }

    /// Start loading what `record_by_ca` will read for an IPv4 CA.
    #[inline]
    pub fn prefetch_ca4(&self, vsid: Vsid, ca: Ipv4Addr) {
        self.by_ca4.prefetch(ca4_key(vsid, ca))
    }

    /// Heap bytes of the lookup-record indexes (the per-record cost).
    pub fn record_index_bytes(&self) -> usize {
        self.by_ca4.heap_bytes() + self.by_mac.heap_bytes() + self.by_ca6.capacity() * std::mem::size_of::<((Vsid, Ipv6Addr), Record)>()
    }

    /// The VSID whose `.1` this address is, if the host owns it in `rd`.
    #[inline]
    pub fn gateway(&self, rd: RoutingDomain, addr: IpAddr) -> Option<Vsid> {
        self.gateways.get(&(rd, addr)).copied()
    }

    /// Longest-prefix match among the routing domain's customer routes.
    pub fn route(&self, rd: RoutingDomain, dst: IpAddr) -> Option<&Route> {
        self.routes.get(&rd)?.iter().find(|r| r.contains(dst))
    }

    /// The routing decision for `dst` in routing domain `rd`, before any
    /// rewrite: what the packet path does, and what `route get` reports.
    pub fn next_hop(&self, rd: RoutingDomain, dst: IpAddr) -> Result<NextHop<'_>, DropReason> {
        if self.gateway(rd, dst).is_some() {
            return Ok(NextHop::Gateway);
        }
        let route = self.route(rd, dst).ok_or(DropReason::NoRoute)?;
        let target = route.next_hop.unwrap_or(dst);
        let record = self
            .record_by_ca(route.vsid, target)
            .or_else(|| self.wildcards.get(&(route.vsid, target.is_ipv4())))
            .ok_or(DropReason::NoLookupRecord)?;
        Ok(NextHop::Vm { route, target, record })
    }

    /// A local port, or the tunnel to the record's PA.
    pub fn reach(&self, rec: &Record) -> Result<Reach<'_>, DropReason> {
        match rec.location {
            Location::Local => self.port_by_mac(rec.vsid, rec.mac).map(Reach::Port).ok_or(DropReason::UnknownDestination),
            Location::Remote(_) if rec.rule == Rule::None => Err(DropReason::TranslationNone),
            Location::Remote(t) => {
                let tunnel = self.tunnel(t);
                if tunnel.local.is_unspecified() {
                    Err(DropReason::NoProviderAddress)
                } else {
                    Ok(Reach::Tunnel(tunnel))
                }
            }
        }
    }

    /// Does the VSID have L2Only records on other hosts (flow 4)?
    #[inline]
    pub fn has_l2only(&self, vsid: Vsid) -> bool {
        self.subnets.get(&vsid).is_some_and(|s| !s.l2only_tunnels.is_empty())
    }

    /// The host's gateway address in the VSID's subnet, of the given family.
    pub fn gateway_address(&self, vsid: Vsid, v4: bool) -> Option<IpAddr> {
        let s = self.subnets.get(&vsid)?;
        if v4 {
            s.gateway_v4
        } else {
            s.gateway_v6
        }
    }

    /// The local PA that packets to `remote` leave from.
    pub fn local_pa_for(&self, remote: IpAddr) -> Option<IpAddr> {
        pick_source(&self.provider_addresses, remote).map(|pa| pa.address)
    }

    /// The interface (ifindex, 0 if unknown) of the local PA that packets to `remote` leave from.
    pub fn pa_ifindex(&self, remote: IpAddr) -> Option<u32> {
        pick_source(&self.provider_addresses, remote).map(|pa| pa.ifindex)
    }

    #[inline]
    pub fn is_local_pa(&self, a: IpAddr) -> bool {
        self.local_pas.contains(&a)
    }

    /// Whether an NVGRE packet for local PA `dst` arrived where that PA
    /// lives: one on a VLAN takes only what came in on its VLAN interface,
    /// an untagged one nothing that came in on a PA's VLAN. (`ifindex` 0:
    /// not known, as in tests.)
    #[inline]
    pub fn arrived_on_its_vlan(&self, dst: IpAddr, ifindex: u32) -> bool {
        if !self.has_vlans || ifindex == 0 {
            return true;
        }
        let on_a_vlan = |i: u32| self.provider_addresses.iter().any(|p| p.vlan_id != 0 && p.ifindex == i);
        match self.provider_addresses.iter().find(|p| p.address == dst) {
            Some(pa) if pa.vlan_id != 0 => ifindex == pa.ifindex,
            Some(_) => !on_a_vlan(ifindex),
            None => false,
        }
    }

    #[inline]
    pub fn tunnel(&self, id: TunnelId) -> &Tunnel {
        &self.tunnels[id.index()]
    }
}

/// The local PA to send from: one of the remote's family whose prefix holds
/// it, else the first of that family. A remote of a family with no local PA
/// gets none, and packets to it are dropped.
fn pick_source(pas: &[super::policy::ProviderAddress], remote: IpAddr) -> Option<&super::policy::ProviderAddress> {
    let contains = |pa: &&super::policy::ProviderAddress| {
        Route { vsid: 0, prefix: pa.address, prefix_len: pa.prefix_len, next_hop: None, metric: 0 }.contains(remote)
    };
    pas.iter().find(contains).or_else(|| pas.iter().find(|pa| pa.address.is_ipv4() == remote.is_ipv4()))
}

fn unspecified(of: IpAddr) -> IpAddr {
    if of.is_ipv4() {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    }
}
