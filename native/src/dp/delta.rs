//! A snapshot made from its predecessor and a [`PolicyDelta`], at a cost in
//! proportion to the change: the tables are shared, the changed lookup
//! records go into the overlay, tunnels to new PAs are appended, and only
//! what a changed record or route touches is copied (routes, wildcards,
//! L2Only tunnels of a VSID).
//!
//! The result equals [`Snapshot::build`] of the changed policy where the
//! order of the policy's records cannot matter; where it could, the delta is
//! refused and the caller builds the whole policy: a record at a VSID's
//! gateway address (it sets the gateway MAC), a replace or delete where
//! several records share the MAC index entry, and customer routes that
//! change a VSID's routing domain or a gateway address.

use super::policy::{CustomerRoute, LookupRecord, PolicyDelta, RecordChange, RecordType, Vsid};
use super::tables::{add_l2only, ca4_key, index_routes, locate, mac_key, remove_l2only, Location, Overlay, Record, Snapshot};
use crate::wire::MacAddr;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;

/// Overlay entries past which the overlay is merged into new tables (see
/// [`Snapshot::merged`]): lookups stay one probe of the overlay, and the
/// copy a delta makes of it stays small.
pub const MERGE_AT: usize = 8192;

/// Why a delta cannot be applied; the whole policy must be built instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl Snapshot {
    /// The snapshot of the policy after `delta`, or why it must be built whole.
    pub fn apply_delta(&self, delta: &PolicyDelta) -> Result<Snapshot, Refused> {
        let mut s = self.clone();
        if let Some(routes) = &delta.customer_routes {
            s.set_routes(routes)?;
        }
        let mut o = s.overlay.take().unwrap_or_default();
        for c in &delta.changes {
            match c {
                RecordChange::Put(r) => s.put(&mut o, r, true)?,
                RecordChange::Delete(r) => s.delete(&mut o, r, true)?,
                RecordChange::Replace { previous, record } => s.replace(&mut o, previous, record)?,
            }
        }
        s.overlay = (o.len() > 0).then_some(o);
        Ok(s)
    }

    /// Entries in the overlay (0 after a full build or a merge).
    pub fn overlay_len(&self) -> usize {
        self.overlay.as_ref().map_or(0, |o| o.len())
    }

    /// The same snapshot with the overlay folded into new tables (copied
    /// from the shared ones, then changed in place).
    pub fn merged(&self) -> Snapshot {
        let mut s = self.clone();
        let Some(o) = s.overlay.take() else { return s };
        for (&k, v) in &o.ca4 {
            match v {
                Some(r) => s.by_ca4.insert(k, *r),
                None => s.by_ca4.remove(k),
            }
        }
        for (&k, v) in &o.mac {
            match v {
                Some(r) => s.by_mac.insert(k, *r),
                None => s.by_mac.remove(k),
            }
        }
        if !o.ca6.is_empty() {
            let by_ca6 = Arc::make_mut(&mut s.by_ca6);
            for (&k, v) in &o.ca6 {
                match v {
                    Some(r) => by_ca6.insert(k, *r),
                    None => by_ca6.remove(&k),
                };
            }
        }
        if !o.mac_sharers.is_empty() {
            let sharers = Arc::make_mut(&mut s.mac_sharers);
            for (&k, &n) in &o.mac_sharers {
                if n == 0 {
                    sharers.remove(&k);
                } else {
                    sharers.insert(k, n);
                }
            }
        }
        s
    }

    /// New customer routes, if they keep every VSID's routing domain and
    /// gateway addresses (else records would be indexed differently).
    fn set_routes(&mut self, routes: &[CustomerRoute]) -> Result<(), Refused> {
        let (subnets, by_rd, gateways) = index_routes(routes, MacAddr([0; 6]));
        let same_subnets = subnets.len() == self.subnets.len()
            && subnets.iter().all(|(vsid, n)| {
                self.subnets.get(vsid).is_some_and(|o| {
                    (o.routing_domain, o.gateway_v4, o.gateway_v6) == (n.routing_domain, n.gateway_v4, n.gateway_v6)
                })
            });
        if !same_subnets || gateways != *self.gateways {
            return Err(Refused("customer routes change a VSID's routing domain or gateway addresses".into()));
        }
        self.routes = Arc::new(by_rd);
        Ok(())
    }

    /// The MAC index key of a record, if it is indexed at all (its VSID has
    /// a subnet; `build` skips the others).
    fn mac_index_key(&self, r: &LookupRecord) -> Option<u64> {
        self.subnets.get(&r.vsid).map(|s| mac_key(s.routing_domain, r.mac))
    }

    fn mac_entry(&self, o: &Overlay, k: u64) -> Option<Record> {
        match o.mac.get(&k) {
            Some(changed) => *changed,
            None => self.by_mac.get(k).copied(),
        }
    }

    fn sharers(&self, o: &Overlay, k: u64) -> u32 {
        o.mac_sharers.get(&k).or_else(|| self.mac_sharers.get(&k)).copied().unwrap_or(0)
    }

    /// Set a MAC index entry in the overlay; an entry equal to the tables'
    /// leaves the overlay, so changes undone cost nothing.
    fn set_mac(&self, o: &mut Overlay, k: u64, v: Option<Record>) {
        if self.by_mac.get(k).copied() == v {
            o.mac.remove(&k);
        } else {
            o.mac.insert(k, v);
        }
    }

    fn set_sharers(&self, o: &mut Overlay, k: u64, n: u32) {
        if self.mac_sharers.get(&k).copied().unwrap_or(0) == n {
            o.mac_sharers.remove(&k);
        } else {
            o.mac_sharers.insert(k, n);
        }
    }

    fn ca_entry(&self, o: &Overlay, vsid: Vsid, ca: IpAddr) -> Option<Record> {
        match ca {
            IpAddr::V4(a) => match o.ca4.get(&ca4_key(vsid, a)) {
                Some(changed) => *changed,
                None => self.by_ca4.get(ca4_key(vsid, a)).copied(),
            },
            IpAddr::V6(a) => match o.ca6.get(&(vsid, a)) {
                Some(changed) => *changed,
                None => self.by_ca6.get(&(vsid, a)).copied(),
            },
        }
    }

    fn set_ca(&self, o: &mut Overlay, vsid: Vsid, ca: IpAddr, v: Option<Record>) {
        match ca {
            IpAddr::V4(a) => {
                let k = ca4_key(vsid, a);
                if self.by_ca4.get(k).copied() == v {
                    o.ca4.remove(&k);
                } else {
                    o.ca4.insert(k, v);
                }
            }
            IpAddr::V6(a) => {
                if self.by_ca6.get(&(vsid, a)).copied() == v {
                    o.ca6.remove(&(vsid, a));
                } else {
                    o.ca6.insert((vsid, a), v);
                }
            }
        }
    }

    /// A record at a VSID's own gateway address with a local PA names the
    /// VSID's gateway MAC (see `build`): which one wins depends on order.
    fn refuse_gateway_record(&self, r: &LookupRecord, location: Location) -> Result<(), Refused> {
        let rd = self.subnets[&r.vsid].routing_domain;
        if location == Location::Local && self.gateways.get(&(rd, r.customer_address)) == Some(&r.vsid) {
            return Err(Refused(format!("record for gateway address {} of VSID {}", r.customer_address, r.vsid)));
        }
        Ok(())
    }

    /// `record` in the place of `previous`. The MAC index entry of records
    /// sharing a MAC is the last static one's, else the first other's: a
    /// replace in place keeps it where the replaced record did not hold it
    /// and cannot take it; a record alone with its MAC is deleted and put.
    fn replace(&mut self, o: &mut Overlay, previous: &LookupRecord, record: &LookupRecord) -> Result<(), Refused> {
        let is_static = |r: &LookupRecord| matches!(r.kind, RecordType::Static | RecordType::Dynamic);
        let (kp, kr) = (self.mac_index_key(previous), self.mac_index_key(record));
        if let Some(kp) = kp.filter(|&k| self.sharers(o, k) > 0) {
            let held_by_previous = self.mac_entry(o, kp) == Some(self.record_of(previous)?);
            if kr != Some(kp) || held_by_previous || (!is_static(previous) && is_static(record)) {
                return Err(Refused(format!("replaced record's MAC {} is shared", previous.mac)));
            }
            self.delete(o, previous, false)?;
            return self.put(o, record, false);
        }
        self.delete(o, previous, true)?;
        if kr.is_some_and(|k| self.mac_entry(o, k).is_some()) {
            return Err(Refused(format!("replacing record's MAC {} is shared", record.mac)));
        }
        self.put(o, record, true)
    }

    /// How the core holds a record of the policy (its tunnel exists).
    fn record_of(&self, r: &LookupRecord) -> Result<Record, Refused> {
        let location = if self.is_local_pa(r.provider_address) {
            Location::Local
        } else {
            match self.tunnel_index.get(&r.provider_address) {
                Some(&t) => Location::Remote(t),
                None => return Err(Refused(format!("record's PA {} has no tunnel", r.provider_address))),
            }
        };
        Ok(Record { vsid: r.vsid, mac: r.mac, rule: r.rule, kind: r.kind, location })
    }

    /// Add a record, as `build` would if it came last in the policy (with
    /// `index_mac` false, the MAC index is left as it is).
    fn put(&mut self, o: &mut Overlay, r: &LookupRecord, index_mac: bool) -> Result<(), Refused> {
        let Some(k) = self.mac_index_key(r) else { return Ok(()) };
        let pa = r.provider_address;
        let location = if self.is_local_pa(pa) {
            Location::Local
        } else if let Some(&t) = self.tunnel_index.get(&pa) {
            Location::Remote(t)
        } else {
            // A new PA: its tunnel is appended (the tunnel list is copied).
            locate(
                &self.local_pas,
                &self.provider_addresses,
                Arc::make_mut(&mut self.tunnels),
                Arc::make_mut(&mut self.tunnel_index),
                r.provider_address,
            )
        };
        self.refuse_gateway_record(r, location)?;
        let rec = Record { vsid: r.vsid, mac: r.mac, rule: r.rule, kind: r.kind, location };
        // Without `index_mac`, as if the entry were held by another record.
        let had_mac = !index_mac || self.mac_entry(o, k).is_some();
        if had_mac && index_mac {
            let n = self.sharers(o, k) + 1;
            self.set_sharers(o, k, n);
        }
        match r.kind {
            RecordType::Static | RecordType::Dynamic => {
                self.set_ca(o, r.vsid, r.customer_address, Some(rec));
                if index_mac {
                    self.set_mac(o, k, Some(rec));
                }
            }
            RecordType::L2Only => {
                if !had_mac {
                    self.set_mac(o, k, Some(rec));
                }
                if let Location::Remote(t) = location {
                    let subnet = Arc::make_mut(&mut self.subnets).get_mut(&r.vsid).unwrap();
                    add_l2only(subnet, Arc::make_mut(&mut self.l2only_refs), r.vsid, t);
                }
            }
            RecordType::GatewayWildcard => {
                Arc::make_mut(&mut self.wildcards).insert((r.vsid, r.customer_address.is_ipv4()), rec);
                if !had_mac {
                    self.set_mac(o, k, Some(rec));
                }
            }
        }
        Ok(())
    }

    /// Remove a record the policy had (with `index_mac` false, the MAC
    /// index is left as it is).
    fn delete(&mut self, o: &mut Overlay, r: &LookupRecord, index_mac: bool) -> Result<(), Refused> {
        let Some(k) = self.mac_index_key(r) else { return Ok(()) };
        let rec = self.record_of(r)?;
        let location = rec.location;
        self.refuse_gateway_record(r, location)?;
        let absent = || Refused(format!("deleted record {} of VSID {} is not the one held", r.customer_address, r.vsid));
        match r.kind {
            RecordType::Static | RecordType::Dynamic => {
                if self.ca_entry(o, r.vsid, r.customer_address) != Some(rec) {
                    return Err(absent());
                }
                self.set_ca(o, r.vsid, r.customer_address, None);
            }
            RecordType::L2Only => {
                if let Location::Remote(t) = location {
                    let subnet = Arc::make_mut(&mut self.subnets).get_mut(&r.vsid).unwrap();
                    remove_l2only(subnet, Arc::make_mut(&mut self.l2only_refs), r.vsid, t);
                }
            }
            RecordType::GatewayWildcard => {
                let key = (r.vsid, r.customer_address.is_ipv4());
                if self.wildcards.get(&key) != Some(&rec) {
                    return Err(absent());
                }
                Arc::make_mut(&mut self.wildcards).remove(&key);
            }
        }
        if !index_mac {
            return Ok(());
        }
        let sharers = self.sharers(o, k);
        let held = self.mac_entry(o, k);
        if sharers == 0 {
            // Alone with its MAC: the entry goes.
            if held != Some(rec) {
                return Err(absent());
            }
            self.set_mac(o, k, None);
        } else if held != Some(rec) {
            // Another record holds the entry and keeps it.
            self.set_sharers(o, k, sharers - 1);
        } else {
            return Err(Refused(format!("deleted record's MAC {} is shared", r.mac)));
        }
        Ok(())
    }

    /// Everything a packet can observe of the snapshot, in a canonical text
    /// (tunnels by their addresses, not their numbers; sets sorted): two
    /// snapshots with the same text decide every packet alike.
    pub fn canonical(&self) -> String {
        let tunnel = |l: Location| match l {
            Location::Local => None,
            Location::Remote(t) => Some(*self.tunnel(t)),
        };
        let rec = |r: &Record| (r.vsid, r.mac, r.rule, r.kind, tunnel(r.location));
        let mut out = String::new();
        let _ = writeln!(out, "flow_id {:?} local_pas {:?} pas {:?}", self.flow_id, self.local_pas, self.provider_addresses);
        let subnets: BTreeMap<_, _> = self
            .subnets
            .iter()
            .map(|(v, s)| {
                let mut l2: Vec<_> = s.l2only_tunnels.iter().map(|&t| *self.tunnel(t)).map(|t| (t.remote, t.local)).collect();
                l2.sort();
                (v, (s.routing_domain, s.gateway_mac, &s.ports, s.counter_slot, s.gateway_v4, s.gateway_v6, l2))
            })
            .collect();
        let _ = writeln!(out, "subnets {subnets:?}");
        let _ = writeln!(out, "ports {:?}", self.ports.iter().collect::<BTreeMap<_, _>>());
        let _ = writeln!(out, "port_by_mac {:?}", self.port_by_mac.iter().map(|((v, m), p)| ((v, m.0), p)).collect::<BTreeMap<_, _>>());
        let _ = writeln!(out, "routes {:?}", self.routes.iter().collect::<BTreeMap<_, _>>());
        let _ = writeln!(out, "gateways {:?}", self.gateways.iter().collect::<BTreeMap<_, _>>());
        let mut ca4: BTreeMap<u64, Record> = self.by_ca4.iter().map(|(k, v)| (k, *v)).collect();
        let mut ca6: BTreeMap<_, Record> = self.by_ca6.iter().map(|(k, v)| (*k, *v)).collect();
        let mut mac: BTreeMap<u64, Record> = self.by_mac.iter().map(|(k, v)| (k, *v)).collect();
        let mut sharers: BTreeMap<u64, u32> = self.mac_sharers.iter().map(|(k, v)| (*k, *v)).collect();
        if let Some(o) = &self.overlay {
            fn over<K: Ord + Copy, V: Copy>(m: &mut BTreeMap<K, V>, changes: impl Iterator<Item = (K, Option<V>)>) {
                for (k, v) in changes {
                    match v {
                        Some(v) => m.insert(k, v),
                        None => m.remove(&k),
                    };
                }
            }
            over(&mut ca4, o.ca4.iter().map(|(k, v)| (*k, *v)));
            over(&mut ca6, o.ca6.iter().map(|(k, v)| (*k, *v)));
            over(&mut mac, o.mac.iter().map(|(k, v)| (*k, *v)));
            over(&mut sharers, o.mac_sharers.iter().map(|(k, &n)| (*k, (n > 0).then_some(n))));
        }
        let _ = writeln!(out, "by_ca4 {:?}", ca4.iter().map(|(k, v)| (k, rec(v))).collect::<Vec<_>>());
        let _ = writeln!(out, "by_ca6 {:?}", ca6.iter().map(|(k, v)| (k, rec(v))).collect::<Vec<_>>());
        let _ = writeln!(out, "by_mac {:?}", mac.iter().map(|(k, v)| (k, rec(v))).collect::<Vec<_>>());
        let _ = writeln!(out, "mac_sharers {sharers:?}");
        let wildcards: BTreeMap<_, _> = self.wildcards.iter().map(|(k, v)| (*k, rec(v))).collect();
        let _ = writeln!(out, "wildcards {wildcards:?}");
        out
    }
}
