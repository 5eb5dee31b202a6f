//! The immutable table snapshot the decision core reads.
//!
//! Built from a [`Policy`], or from its predecessor and a
//! [`PolicyDelta`](super::PolicyDelta) (see `delta.rs`), then shared
//! read-only by every worker: a packet sees one snapshot from start to end,
//! so a change lands whole or not at all.
//!
//! The large parts are shared between a snapshot and the ones a delta makes
//! of it (`Arc`s, the index tables' slots); what a delta changes in the
//! lookup-record indexes sits in a small [`Overlay`] read before the tables.

use super::policy::{FlowIdMode, Policy, PortId, RecordType, RoutingDomain, Rule, Vsid};
use super::DropReason;
use crate::wire::MacAddr;
use std::collections::HashMap;
use super::encap::Template;
use super::index::IndexTable;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;

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
    pub(super) fn new(index: usize) -> TunnelId {
        TunnelId(NonZeroU32::new(index as u32 + 1).expect("fewer than 2^32 tunnels"))
    }
    #[inline]
    pub(super) fn index(self) -> usize {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
pub(super) fn ca4_key(vsid: Vsid, ca: Ipv4Addr) -> u64 {
    (vsid as u64) << 32 | u32::from(ca) as u64
}

#[inline]
pub(super) fn mac_key(rd: RoutingDomain, mac: MacAddr) -> u64 {
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

#[derive(Debug, Clone, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortInfo {
    pub vsid: Vsid,
    pub mac: MacAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub(super) fn gateway_address(&self) -> Option<IpAddr> {
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

/// What deltas changed in the lookup-record indexes since the tables were
/// built: a key here hides the tables' entry (`None`: removed). Small by
/// construction: past `delta::MERGE_AT` entries it is merged into new tables.
#[derive(Default, Clone)]
pub(super) struct Overlay {
    pub(super) ca4: FxMap<u64, Option<Record>>,
    pub(super) ca6: FxMap<(Vsid, Ipv6Addr), Option<Record>>,
    pub(super) mac: FxMap<u64, Option<Record>>,
    /// `mac_sharers` as changed (0: none).
    pub(super) mac_sharers: FxMap<u64, u32>,
}

impl Overlay {
    pub(super) fn len(&self) -> usize {
        self.ca4.len() + self.ca6.len() + self.mac.len() + self.mac_sharers.len()
    }
}

#[derive(Default, Clone)]
pub struct Snapshot {
    pub flow_id: FlowIdMode,
    pub local_pas: Vec<IpAddr>,
    pub(super) provider_addresses: Vec<super::policy::ProviderAddress>,
    /// Some PA is on a VLAN (then where NVGRE arrives is checked).
    has_vlans: bool,
    /// Append-only between full builds: a delta adds the tunnels of new PAs.
    pub tunnels: Arc<Vec<Tunnel>>,
    pub(super) tunnel_index: Arc<FxMap<IpAddr, TunnelId>>,
    pub(super) subnets: Arc<FxMap<Vsid, Subnet>>,
    pub(super) ports: Arc<FxMap<PortId, PortInfo>>,
    pub(super) port_by_mac: Arc<FxMap<(Vsid, MacAddr), PortId>>,
    /// Customer routes per routing domain, longest prefix first, then lowest metric.
    pub(super) routes: Arc<FxMap<RoutingDomain, Vec<Route>>>,
    /// Host-owned `.1` addresses: (routing domain, address) → VSID.
    pub(super) gateways: Arc<FxMap<(RoutingDomain, IpAddr), Vsid>>,
    /// Lookup records by IPv4 CA (the common case, in a prefetchable table) and by IPv6 CA.
    pub(super) by_ca4: IndexTable<Record>,
    pub(super) by_ca6: Arc<FxMap<(Vsid, Ipv6Addr), Record>>,
    pub(super) by_mac: IndexTable<Record>,
    /// How many records beyond the one `by_mac` holds have that MAC key
    /// (absent: none): a delta that removes the record `by_mac` holds can
    /// only tell what takes its place when none does.
    pub(super) mac_sharers: Arc<FxMap<u64, u32>>,
    /// Gateway wildcard records: (VSID, is IPv4) → the HNV gateway that takes
    /// destinations routed into that VSID without an exact record.
    pub(super) wildcards: Arc<FxMap<(Vsid, bool), Record>>,
    /// How many L2Only records of a VSID name a tunnel (`Subnet::l2only_tunnels`).
    pub(super) l2only_refs: Arc<FxMap<(Vsid, TunnelId), u32>>,
    /// What deltas changed since the tables were built; none after a full build.
    pub(super) overlay: Option<Box<Overlay>>,
    /// The HNV gateway: made by a full build only (a delta keeps it).
    pub(super) gateway: Arc<super::gateway::Gateway>,
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
            gateway: Arc::new(super::gateway::Gateway::build(policy)),
            ..Default::default()
        };
        let (subnets, routes, gateways) = index_routes(&policy.customer_routes, policy.default_gateway_mac);
        s.subnets = Arc::new(subnets);
        s.routes = Arc::new(routes);
        s.gateways = Arc::new(gateways);
        // Written in place while this snapshot is the only holder.
        let subnets = Arc::get_mut(&mut s.subnets).unwrap();
        let tunnels = Arc::get_mut(&mut s.tunnels).unwrap();
        let tunnel_index = Arc::get_mut(&mut s.tunnel_index).unwrap();
        let by_ca6 = Arc::get_mut(&mut s.by_ca6).unwrap();
        let mac_sharers = Arc::get_mut(&mut s.mac_sharers).unwrap();
        let wildcards = Arc::get_mut(&mut s.wildcards).unwrap();
        let l2only_refs = Arc::get_mut(&mut s.l2only_refs).unwrap();
        for r in &policy.lookup_records {
            let Some(subnet) = subnets.get_mut(&r.vsid) else { continue };
            let rd = subnet.routing_domain;
            let location = locate(&s.local_pas, &policy.provider_addresses, tunnels, tunnel_index, r.provider_address);
            let rec = Record { vsid: r.vsid, mac: r.mac, rule: r.rule, kind: r.kind, location };
            // A `.1` record with a local PA names the gateway MAC of its VSID.
            if location == Location::Local && s.gateways.get(&(rd, r.customer_address)) == Some(&r.vsid) {
                subnet.gateway_mac = r.mac;
                continue;
            }
            let mk = mac_key(rd, r.mac);
            let had_mac = s.by_mac.get(mk).is_some();
            if had_mac {
                *mac_sharers.entry(mk).or_default() += 1;
            }
            match r.kind {
                RecordType::Static | RecordType::Dynamic => {
                    match r.customer_address {
                        IpAddr::V4(ca) => s.by_ca4.insert(ca4_key(r.vsid, ca), rec),
                        IpAddr::V6(ca) => {
                            by_ca6.insert((r.vsid, ca), rec);
                        }
                    }
                    s.by_mac.insert(mk, rec);
                }
                RecordType::L2Only => {
                    if !had_mac {
                        s.by_mac.insert(mk, rec);
                    }
                    if let Location::Remote(t) = location {
                        add_l2only(subnet, l2only_refs, r.vsid, t);
                    }
                }
                RecordType::GatewayWildcard => {
                    wildcards.insert((r.vsid, r.customer_address.is_ipv4()), rec);
                    // Its traffic comes back from the gateway's MAC: the
                    // underlay check needs it, unless a static record has it.
                    if !had_mac {
                        s.by_mac.insert(mk, rec);
                    }
                }
            }
        }

        let ports = Arc::get_mut(&mut s.ports).unwrap();
        let port_by_mac = Arc::get_mut(&mut s.port_by_mac).unwrap();
        for p in &policy.ports {
            let Some(subnet) = subnets.get_mut(&p.vsid) else { continue };
            subnet.ports.push(p.id);
            ports.insert(p.id, PortInfo { vsid: p.vsid, mac: p.mac });
            port_by_mac.insert((p.vsid, p.mac), p.id);
        }
        s
    }

    /// The HNV gateway's uplink and NATs (the same `Arc` until a full build).
    pub fn hnv_gateway(&self) -> &Arc<super::gateway::Gateway> {
        &self.gateway
    }

    /// Give every VSID its per-VSID counter slot, while slots last.
    pub fn assign_counter_slots(&mut self, slots: &mut super::VsidSlots) {
        let subnets = Arc::make_mut(&mut self.subnets);
        let mut vsids: Vec<Vsid> = subnets.keys().copied().collect();
        vsids.sort_unstable();
        for vsid in vsids {
            subnets.get_mut(&vsid).unwrap().counter_slot = slots.slot(vsid);
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

    /// The record of a CA: the overlay's, if a delta changed it, else the tables'.
    #[inline]
    pub fn record_by_ca(&self, vsid: Vsid, ca: IpAddr) -> Option<&Record> {
        match ca {
            IpAddr::V4(ca) => {
                let key = ca4_key(vsid, ca);
                if let Some(changed) = self.overlay.as_ref().and_then(|o| o.ca4.get(&key)) {
                    return changed.as_ref();
                }
                self.by_ca4.get(key)
            }
            IpAddr::V6(ca) => {
                if let Some(changed) = self.overlay.as_ref().and_then(|o| o.ca6.get(&(vsid, ca))) {
                    return changed.as_ref();
                }
                self.by_ca6.get(&(vsid, ca))
            }
        }
    }

    #[inline]
    pub fn record_by_mac(&self, rd: RoutingDomain, mac: MacAddr) -> Option<&Record> {
        let key = mac_key(rd, mac);
        if let Some(changed) = self.overlay.as_ref().and_then(|o| o.mac.get(&key)) {
            return changed.as_ref();
        }
        self.by_mac.get(key)
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
        self.by_ca4.heap_bytes()
            + self.by_mac.heap_bytes()
            + self.by_ca6.capacity() * std::mem::size_of::<((Vsid, Ipv6Addr), Record)>()
            + self.mac_sharers.capacity() * std::mem::size_of::<(u64, u32)>()
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

/// Subnets, routes (sorted) and gateway addresses of a policy's customer routes.
#[allow(clippy::type_complexity)]
pub(super) fn index_routes(
    customer_routes: &[super::policy::CustomerRoute],
    default_gateway_mac: MacAddr,
) -> (FxMap<Vsid, Subnet>, FxMap<RoutingDomain, Vec<Route>>, FxMap<(RoutingDomain, IpAddr), Vsid>) {
    let mut subnets: FxMap<Vsid, Subnet> = FxMap::default();
    let mut routes: FxMap<RoutingDomain, Vec<Route>> = FxMap::default();
    let mut gateways = FxMap::default();
    for r in customer_routes {
        let subnet = subnets.entry(r.vsid).or_insert_with(|| Subnet {
            routing_domain: r.routing_domain,
            gateway_mac: default_gateway_mac,
            ports: Vec::new(),
            counter_slot: None,
            gateway_v4: None,
            gateway_v6: None,
            l2only_tunnels: Vec::new(),
        });
        let route = Route { vsid: r.vsid, prefix: r.prefix, prefix_len: r.prefix_len, next_hop: r.next_hop, metric: r.metric };
        if let Some(gw) = route.gateway_address() {
            gateways.insert((r.routing_domain, gw), r.vsid);
            let slot = if gw.is_ipv4() { &mut subnet.gateway_v4 } else { &mut subnet.gateway_v6 };
            slot.get_or_insert(gw);
        }
        routes.entry(r.routing_domain).or_default().push(route);
    }
    for routes in routes.values_mut() {
        routes.sort_by(|a, b| b.prefix_len.cmp(&a.prefix_len).then(a.metric.cmp(&b.metric)));
    }
    (subnets, routes, gateways)
}

/// Where a record's PA is: local, or the tunnel to it (made and appended if new).
pub(super) fn locate(
    local_pas: &[IpAddr],
    pas: &[super::policy::ProviderAddress],
    tunnels: &mut Vec<Tunnel>,
    tunnel_index: &mut FxMap<IpAddr, TunnelId>,
    pa: IpAddr,
) -> Location {
    if local_pas.contains(&pa) {
        return Location::Local;
    }
    Location::Remote(*tunnel_index.entry(pa).or_insert_with(|| {
        let local = pick_source(pas, pa);
        let local_address = local.map(|l| l.address).unwrap_or(unspecified(pa));
        tunnels.push(Tunnel {
            local: local_address,
            remote: pa,
            mtu: local.map(|l| l.mtu).unwrap_or(0),
            template: local.and_then(|_| Template::new(local_address, pa)),
        });
        TunnelId::new(tunnels.len() - 1)
    }))
}

/// Count one more L2Only record of VSID `vsid` behind tunnel `t`.
pub(super) fn add_l2only(subnet: &mut Subnet, refs: &mut FxMap<(Vsid, TunnelId), u32>, vsid: Vsid, t: TunnelId) {
    let n = refs.entry((vsid, t)).or_default();
    *n += 1;
    if *n == 1 {
        subnet.l2only_tunnels.push(t);
    }
}

/// Count one L2Only record of VSID `vsid` behind tunnel `t` less.
pub(super) fn remove_l2only(subnet: &mut Subnet, refs: &mut FxMap<(Vsid, TunnelId), u32>, vsid: Vsid, t: TunnelId) {
    let Some(n) = refs.get_mut(&(vsid, t)) else { return };
    *n -= 1;
    if *n == 0 {
        refs.remove(&(vsid, t));
        subnet.l2only_tunnels.retain(|&x| x != t);
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
