//! One worker's mappings: found without locks, ports allocated from the
//! worker's shards, idle mappings expired by a timer wheel, every change
//! queued for the standby as a [`MappingEvent`].

use super::mirror::{EventKind, MappingEvent};
use super::translate::{self, Parsed, Side};
use super::{shard_of_port, worker_of_shard, InsideKey, Nat, NatIndex, NatVerdict, Nats, Proto, SHARDS};
use crate::dp::icmp::frag_needed_v4;
use crate::dp::index::IndexTable;
use crate::dp::{Counter, Counters, DropReason, FxMap, RoutingDomain, Vsid};
use crate::wire::TcpFlags;
use std::net::Ipv4Addr;

/// Seconds the timer wheel spans; a longer expiry is parked in the wheel's
/// last second and looked at again then.
const WHEEL: u32 = 8192;
/// Words of a port bitmap (one bit per port; bit `i` of word `k` is port
/// `64 k + i`, of shard `i`).
const PORT_WORDS: usize = 65536 / 64;

/// TCP state of a mapping, as bits: enough to tell established from
/// transitory (RFC 5382 REQ-5).
pub(super) mod tcp {
    pub const OUT: u8 = 1;
    pub const IN: u8 = 2;
    pub const FIN_OUT: u8 = 4;
    pub const FIN_IN: u8 = 8;
    pub const RST: u8 = 16;
    pub const ALL: u8 = 31;
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    inside: InsideKey,
    external: Ipv4Addr,
    port: u16,
    nat: NatIndex,
    /// `tcp::*` bits (0 for UDP and ICMP).
    tcp: u8,
    live: bool,
    expires: u32,
    /// The second of the wheel bucket that holds it (older buckets may
    /// still name the slot: they are ignored).
    wheel_at: u32,
    /// The expiry the standby last heard of.
    mirrored: u32,
}

/// A mapping as the control plane lists it (`nvgrectl nat show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingView {
    pub nat: NatIndex,
    pub inside: InsideKey,
    pub external: Ipv4Addr,
    pub external_port: u16,
    /// Seconds left.
    pub expires_in: u32,
    pub tcp_established: bool,
}

/// Used ports of one (external address, protocol), and where each shard's
/// search goes on.
struct PortMap {
    used: Box<[u64; PORT_WORDS]>,
    cursor: [u16; SHARDS],
}

/// The mappings of one worker. Its shards are those `s` with
/// `s % workers == worker`; it translates only packets steered to it
/// ([`super::outbound_shard`], [`super::inbound_shard`]).
pub struct NatTable {
    worker: usize,
    workers: usize,
    slots: Vec<Mapping>,
    free: Vec<u32>,
    /// [`InsideKey::hash64`] → slot (the slot's key is compared too).
    by_inside: IndexTable<u32>,
    /// (external address, protocol, port) packed by [`outside_key`].
    by_outside: IndexTable<u32>,
    ports: FxMap<(Ipv4Addr, Proto), PortMap>,
    /// Live mappings per NAT and protocol.
    live: Vec<[u32; 3]>,
    total: u32,
    wheel: Vec<Vec<u32>>,
    last_tick: u32,
    mirroring: bool,
    events: Vec<MappingEvent>,
}

fn outside_key(addr: Ipv4Addr, proto: Proto, port: u16) -> u64 {
    u64::from(u32::from(addr)) << 24 | (proto as u64) << 16 | u64::from(port)
}

fn tcp_bits(flags: TcpFlags, outbound: bool) -> u8 {
    let (seen, fin) = if outbound { (tcp::OUT, tcp::FIN_OUT) } else { (tcp::IN, tcp::FIN_IN) };
    seen | if flags.contains(TcpFlags::FIN) { fin } else { 0 } | if flags.contains(TcpFlags::RST) { tcp::RST } else { 0 }
}

fn established(bits: u8) -> bool {
    bits & (tcp::OUT | tcp::IN) == tcp::OUT | tcp::IN
        && bits & tcp::RST == 0
        && bits & (tcp::FIN_OUT | tcp::FIN_IN) != tcp::FIN_OUT | tcp::FIN_IN
}

impl Mapping {
    fn timeout(&self, nat: &Nat) -> u32 {
        let t = &nat.timeouts;
        match self.inside.proto {
            Proto::Tcp if established(self.tcp) => t.tcp_established,
            Proto::Tcp => t.tcp_transitory,
            Proto::Udp => t.udp,
            Proto::Icmp => t.icmp,
        }
    }

    fn event(&self, kind: EventKind, now: u32) -> MappingEvent {
        MappingEvent {
            kind,
            inside: self.inside,
            external: self.external,
            external_port: self.port,
            tcp: self.tcp,
            remaining: self.expires.saturating_sub(now),
        }
    }
}

impl NatTable {
    /// The table of worker `worker` of `workers` (at most [`SHARDS`]).
    pub fn new(worker: usize, workers: usize, now: u32) -> NatTable {
        let workers = workers.clamp(1, SHARDS);
        NatTable {
            worker,
            workers,
            slots: Vec::new(),
            free: Vec::new(),
            by_inside: IndexTable::default(),
            by_outside: IndexTable::default(),
            ports: FxMap::default(),
            live: Vec::new(),
            total: 0,
            wheel: Vec::new(),
            last_tick: now,
            mirroring: false,
            events: Vec::new(),
        }
    }

    /// Queue a [`MappingEvent`] for every mapping created, changed or
    /// removed (on while a standby is there to hear them).
    pub fn set_mirroring(&mut self, on: bool) {
        self.mirroring = on;
        if !on {
            self.events.clear();
        }
    }

    /// The events queued since the last call, in order.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, MappingEvent> {
        self.events.drain(..)
    }

    /// Live mappings of this worker.
    pub fn len(&self) -> usize {
        self.total as usize
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Live mappings of this worker for a NAT and protocol (a gauge, summed
    /// over workers).
    pub fn count(&self, nat: NatIndex, proto: Proto) -> u32 {
        self.live.get(usize::from(nat)).map_or(0, |c| c[proto as usize])
    }

    /// Whether this worker owns the shard.
    pub fn owns(&self, shard: usize) -> bool {
        worker_of_shard(shard, self.workers) == self.worker
    }

    /// Every live mapping.
    pub fn mappings(&self, now: u32) -> impl Iterator<Item = MappingView> + '_ {
        self.slots.iter().filter(|m| m.live).map(move |m| MappingView {
            nat: m.nat,
            inside: m.inside,
            external: m.external,
            external_port: m.port,
            expires_in: m.expires.saturating_sub(now),
            tcp_established: m.inside.proto == Proto::Tcp && established(m.tcp),
        })
    }

    /// A Created event for every live mapping: what a standby that starts
    /// late or reconnects hears first.
    pub fn dump(&self, now: u32, out: &mut Vec<MappingEvent>) {
        out.extend(self.slots.iter().filter(|m| m.live).map(|m| m.event(EventKind::Created, now)));
    }

    /// Translate an IPv4 packet (at the start of `ip`) sent by a tenant of
    /// `vsid` in routing domain `rd` to the NAT: source → the NAT's
    /// external address and a port of its range. `inside(dst)` says whether
    /// a customer route of the routing domain covers `dst` (never
    /// translated). `mtu`: the largest packet the uplink takes.
    #[allow(clippy::too_many_arguments)]
    pub fn outbound(
        &mut self,
        nats: &Nats,
        rd: RoutingDomain,
        vsid: Vsid,
        ip: &mut [u8],
        mtu: u16,
        now: u32,
        inside: impl Fn(Ipv4Addr) -> bool,
        counters: &Counters,
    ) -> NatVerdict {
        let Some(n) = nats.of_routing_domain(rd) else { return NatVerdict::Drop(DropReason::NoRoute) };
        let p = match translate::parse(ip) {
            Ok(p) => p,
            Err(reason) => return NatVerdict::Drop(reason),
        };
        let key = translate::outbound_key(&p, vsid);
        let remote = if p.quote.is_some() { p.src } else { p.dst };
        if inside(remote) {
            return NatVerdict::Drop(DropReason::NatInsideDestination);
        }
        if p.ttl <= 1 {
            return NatVerdict::Drop(DropReason::TtlExceeded);
        }
        if p.total_len > mtu {
            return too_big(ip, nats.entries()[usize::from(n)].internal_address, mtu);
        }
        let (external, port) = if let Some((sn, port)) = nats.static_out(&key) {
            (nats.entries()[usize::from(sn)].external_address, port)
        } else {
            let slot = match self.find(&key) {
                Some(slot) => {
                    self.touch(nats, slot, &p, true, now);
                    slot
                }
                // Only a packet that starts a flow makes a mapping: an error
                // about a packet no mapping took is unsolicited.
                None if p.quote.is_none() && p.echo != Some(crate::wire::Icmpv4Message::EchoReply) => {
                    let tcp = if p.proto == Proto::Tcp { tcp_bits(p.tcp_flags, true) } else { 0 };
                    match self.create(nats, n, key, tcp, now, counters) {
                        Ok(slot) => slot,
                        Err(reason) => return NatVerdict::Drop(reason),
                    }
                }
                None => return NatVerdict::Drop(DropReason::NatNoMapping),
            };
            let m = &self.slots[slot as usize];
            (m.external, m.port)
        };
        translate::rewrite(ip, &p, Side::Src, external, port);
        counters.inc(Counter::NatOutboundPackets, 1);
        NatVerdict::Uplink { nat: n }
    }

    /// Translate an IPv4 packet from the uplink (at the start of `ip`) back
    /// to the inside endpoint of the mapping, dynamic or static, that its
    /// destination address and port name. `mtu`: the largest packet that
    /// reaches a tenant once encapsulated.
    pub fn inbound(&mut self, nats: &Nats, ip: &mut [u8], mtu: u16, now: u32, counters: &Counters) -> NatVerdict {
        let p = match translate::parse(ip) {
            Ok(p) => p,
            Err(reason) => return NatVerdict::Drop(reason),
        };
        let (addr, port) = translate::inbound_target(&p);
        if p.quote.is_none() && p.echo == Some(crate::wire::Icmpv4Message::EchoRequest) {
            // Mappings are for echo replies: a request is for the gateway.
            return NatVerdict::Drop(DropReason::NatNoMapping);
        }
        let (nat, inside, slot) = if let Some(t) = nats.static_in(addr, p.proto, port) {
            (t.nat, t.inside, None)
        } else {
            match self.by_outside.get(outside_key(addr, p.proto, port)) {
                Some(&slot) => {
                    let m = &self.slots[slot as usize];
                    (m.nat, m.inside, Some(slot))
                }
                None => return NatVerdict::Drop(DropReason::NatNoMapping),
            }
        };
        if p.ttl <= 1 {
            return NatVerdict::Drop(DropReason::TtlExceeded);
        }
        if p.total_len > mtu {
            return too_big(ip, addr, mtu);
        }
        if let Some(slot) = slot {
            self.touch(nats, slot, &p, false, now);
        }
        translate::rewrite(ip, &p, Side::Dst, inside.addr, inside.port);
        counters.inc(Counter::NatInboundPackets, 1);
        NatVerdict::Tenant { nat, vsid: inside.vsid }
    }

    /// The live mapping of an inside endpoint.
    fn find(&self, key: &InsideKey) -> Option<u32> {
        self.by_inside.get(key.hash64()).copied().filter(|&s| self.slots[s as usize].inside == *key)
    }

    /// Start loading what [`outbound`](Self::outbound) will look up for
    /// this packet: call it over a batch first, and the cache misses of a
    /// large table overlap instead of adding up.
    pub fn prefetch_outbound(&self, ip: &[u8], vsid: Vsid) {
        if let Ok(p) = translate::parse(ip) {
            self.by_inside.prefetch(translate::outbound_key(&p, vsid).hash64());
        }
    }

    /// The same for [`inbound`](Self::inbound).
    pub fn prefetch_inbound(&self, ip: &[u8]) {
        if let Ok(p) = translate::parse(ip) {
            let (addr, port) = translate::inbound_target(&p);
            self.by_outside.prefetch(outside_key(addr, p.proto, port));
        }
    }

    /// A packet of a mapping went through: its idle timer restarts, its TCP
    /// state moves on, the standby hears of it when its expiry moved by
    /// half a timeout or its state changed.
    fn touch(&mut self, nats: &Nats, slot: u32, p: &Parsed, outbound: bool, now: u32) {
        if p.quote.is_some() {
            return; // an ICMP error is not traffic of the mapping
        }
        let m = &mut self.slots[slot as usize];
        let before = m.tcp;
        if p.proto == Proto::Tcp {
            m.tcp |= tcp_bits(p.tcp_flags, outbound);
        }
        let timeout = m.timeout(&nats.entries()[usize::from(m.nat)]);
        m.expires = now.saturating_add(timeout);
        if self.mirroring && (m.tcp != before || m.expires.saturating_sub(m.mirrored) >= timeout / 2) {
            m.mirrored = m.expires;
            self.events.push(m.event(EventKind::Changed, now));
        }
    }

    fn refuse(counters: &Counters, reason: DropReason) -> Result<u32, DropReason> {
        counters.inc(Counter::NatMappingsRefused, 1);
        Err(reason)
    }

    /// A new mapping for `key` in NAT `n`, within the limits.
    fn create(&mut self, nats: &Nats, n: NatIndex, key: InsideKey, tcp: u8, now: u32, counters: &Counters) -> Result<u32, DropReason> {
        let nat = &nats.entries()[usize::from(n)];
        // Each worker holds its share of the limits: the inside endpoints
        // spread evenly over the shards.
        let share = |limit: u32| limit.div_ceil(self.workers as u32);
        let held: u32 = self.live.get(usize::from(n)).map_or(0, |c| c.iter().sum());
        // Another endpoint with the same 64-bit hash (about one in 2^64 per
        // pair): refused like a full table rather than mistaken for it.
        if held >= share(nat.max_mappings) || self.total >= share(nats.max_total()) || self.by_inside.get(key.hash64()).is_some() {
            return Self::refuse(counters, DropReason::NatTableFull);
        }
        let Some(port) = self.allocate(nats, nat, key) else {
            return Self::refuse(counters, DropReason::NatPortsExhausted);
        };
        let slot = self.insert(n, key, nat.external_address, port, tcp, now);
        let m = &mut self.slots[slot as usize];
        m.expires = now.saturating_add(m.timeout(nat));
        self.schedule(slot, now);
        counters.inc(Counter::NatMappingsCreated, 1);
        if self.mirroring {
            let m = &mut self.slots[slot as usize];
            m.mirrored = m.expires;
            self.events.push(m.event(EventKind::Created, now));
        }
        Ok(slot)
    }

    /// A free port of the NAT's range in the key's shard, not statically
    /// mapped, marked used.
    fn allocate(&mut self, nats: &Nats, nat: &Nat, key: InsideKey) -> Option<u16> {
        let shard = key.shard();
        let map = self.ports.entry((nat.external_address, key.proto)).or_insert_with(PortMap::new);
        let (first, last) = (usize::from(nat.port_start) / 64, usize::from(nat.port_end) / 64);
        let words = last - first + 1;
        let start = usize::from(map.cursor[shard]).clamp(first, last) - first;
        for i in 0..words {
            let k = first + (start + i) % words;
            let port = (k * 64 + shard) as u16;
            if map.used[k] & 1 << shard != 0
                || !(nat.port_start..=nat.port_end).contains(&port)
                || nats.static_in(nat.external_address, key.proto, port).is_some()
            {
                continue;
            }
            map.used[k] |= 1 << shard;
            map.cursor[shard] = (k + 1) as u16;
            return Some(port);
        }
        None
    }

    /// Store a mapping whose port is taken (its expiry still to set).
    fn insert(&mut self, n: NatIndex, key: InsideKey, external: Ipv4Addr, port: u16, tcp: u8, now: u32) -> u32 {
        let m = Mapping {
            inside: key,
            external,
            port,
            nat: n,
            tcp,
            live: true,
            expires: now,
            wheel_at: 0,
            mirrored: 0,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = m;
                s
            }
            None => {
                self.slots.push(m);
                (self.slots.len() - 1) as u32
            }
        };
        self.by_inside.insert(key.hash64(), slot);
        self.by_outside.insert(outside_key(external, key.proto, port), slot);
        if self.live.len() <= usize::from(n) {
            self.live.resize(usize::from(n) + 1, [0; 3]);
        }
        self.live[usize::from(n)][key.proto as usize] += 1;
        self.total += 1;
        slot
    }

    fn remove(&mut self, slot: u32, now: u32) {
        let m = self.slots[slot as usize];
        self.by_inside.remove(m.inside.hash64());
        self.by_outside.remove(outside_key(m.external, m.inside.proto, m.port));
        if let Some(map) = self.ports.get_mut(&(m.external, m.inside.proto)) {
            map.used[usize::from(m.port) / 64] &= !(1 << shard_of_port(m.port));
        }
        self.live[usize::from(m.nat)][m.inside.proto as usize] -= 1;
        self.total -= 1;
        self.slots[slot as usize].live = false;
        self.free.push(slot);
        if self.mirroring {
            self.events.push(m.event(EventKind::Removed, now));
        }
    }

    /// Put the mapping in the wheel at its expiry (at most the wheel's span
    /// ahead: a longer one is looked at again then).
    fn schedule(&mut self, slot: u32, now: u32) {
        if self.wheel.is_empty() {
            // Made on first use: a worker that never maps holds none.
            self.wheel.resize_with(WHEEL as usize, Vec::new);
        }
        let m = &mut self.slots[slot as usize];
        let at = m.expires.clamp(now.saturating_add(1), now.saturating_add(WHEEL - 1));
        m.wheel_at = at;
        self.wheel[(at % WHEEL) as usize].push(slot);
    }

    /// Expire the mappings idle past their timeout, up to `now`. Call it
    /// every second or so; each mapping is looked at about once per
    /// timeout, not per call.
    pub fn tick(&mut self, now: u32, counters: &Counters) {
        if now <= self.last_tick || self.wheel.is_empty() {
            self.last_tick = self.last_tick.max(now);
            return;
        }
        // After a long pause every bucket is due once.
        let from = self.last_tick.saturating_add(1).max(now.saturating_sub(WHEEL - 1));
        for t in from..=now {
            let bucket = (t % WHEEL) as usize;
            let mut due = std::mem::take(&mut self.wheel[bucket]);
            for slot in due.drain(..) {
                let m = self.slots[slot as usize];
                if !m.live || m.wheel_at % WHEEL != t % WHEEL {
                    continue; // moved on since it was put here
                }
                if m.wheel_at > now {
                    self.wheel[bucket].push(slot); // a round of the wheel ahead (after a long pause)
                } else if m.expires <= now {
                    self.remove(slot, now);
                    counters.inc(Counter::NatMappingsExpired, 1);
                } else {
                    self.schedule(slot, now);
                }
            }
            // Keep the bucket's allocation for the next round of the wheel.
            due.append(&mut self.wheel[bucket]);
            self.wheel[bucket] = due;
        }
        self.last_tick = now;
    }

    /// Take a new set of NAT entries: mappings of a NAT whose name, routing
    /// domain, external address and port range are unchanged stay (their
    /// port not now statically mapped); the others are removed.
    pub fn reconcile(&mut self, old: &Nats, new: &Nats, now: u32, counters: &Counters) {
        let same = |o: &Nat, n: &Nat| {
            o.routing_domain == n.routing_domain
                && o.external_address == n.external_address
                && (o.port_start, o.port_end) == (n.port_start, n.port_end)
        };
        let kept: Vec<Option<NatIndex>> = old
            .entries()
            .iter()
            .map(|o| new.index_of(&o.name).filter(|&i| same(o, &new.entries()[usize::from(i)])))
            .collect();
        let mut live = vec![[0u32; 3]; new.entries().len()];
        for slot in 0..self.slots.len() as u32 {
            let m = self.slots[slot as usize];
            if !m.live {
                continue;
            }
            match kept.get(usize::from(m.nat)).copied().flatten() {
                Some(i) if new.static_in(m.external, m.inside.proto, m.port).is_none() => {
                    self.slots[slot as usize].nat = i;
                    live[usize::from(i)][m.inside.proto as usize] += 1;
                }
                _ => {
                    // Counted where it was, then gone.
                    self.remove(slot, now);
                    counters.inc(Counter::NatMappingsRemoved, 1);
                }
            }
        }
        self.live = live;
    }

    /// Take a mapping the active gateway mirrored (hnv-gateway.md): the
    /// standby's worker for the event's shard ([`MappingEvent::shard`])
    /// applies it as is, limits aside (the active one enforced them).
    /// `rd`: the routing domain of the event's VSID. The standby keeps a
    /// mapping half a timeout longer than it heard, since the active one
    /// mirrors a refreshed expiry only once it moved by half a timeout.
    pub fn apply(&mut self, nats: &Nats, rd: RoutingDomain, ev: &MappingEvent, now: u32, counters: &Counters) -> Result<(), super::MirrorError> {
        use super::MirrorError;
        let n = nats.of_routing_domain(rd).ok_or(MirrorError::NoNat)?;
        let nat = &nats.entries()[usize::from(n)];
        if ev.external != nat.external_address || !(nat.port_start..=nat.port_end).contains(&ev.external_port) {
            return Err(MirrorError::NotThisNat);
        }
        let outside = outside_key(ev.external, ev.inside.proto, ev.external_port);
        let same = self.by_outside.get(outside).copied().filter(|&s| self.slots[s as usize].inside == ev.inside);
        // Whatever else holds the key or the port gives way to what the active one says.
        for slot in [self.by_inside.get(ev.inside.hash64()).copied(), self.by_outside.get(outside).copied()].into_iter().flatten() {
            if Some(slot) != same && self.slots[slot as usize].live {
                self.remove(slot, now);
            }
        }
        counters.inc(Counter::NatMirrorApplied, 1);
        if ev.kind == EventKind::Removed {
            if let Some(slot) = same {
                self.remove(slot, now);
            }
            return Ok(());
        }
        let slot = match same {
            Some(slot) => slot,
            None => {
                let map = self.ports.entry((ev.external, ev.inside.proto)).or_insert_with(PortMap::new);
                map.used[usize::from(ev.external_port) / 64] |= 1 << shard_of_port(ev.external_port);
                self.insert(n, ev.inside, ev.external, ev.external_port, 0, now)
            }
        };
        let m = &mut self.slots[slot as usize];
        m.tcp = ev.tcp & tcp::ALL;
        let slack = m.timeout(nat) / 2;
        m.expires = now.saturating_add(ev.remaining).saturating_add(slack);
        self.schedule(slot, now);
        Ok(())
    }
}

impl PortMap {
    fn new() -> PortMap {
        PortMap { used: Box::new([0; PORT_WORDS]), cursor: [0; SHARDS] }
    }
}

/// Replace the packet by "fragmentation needed" for its sender, from `from`.
fn too_big(ip: &mut [u8], from: Ipv4Addr, mtu: u16) -> NatVerdict {
    match frag_needed_v4(ip, Some(from), mtu) {
        Some(len) => NatVerdict::Reject { len, reason: DropReason::MtuExceeded },
        None => NatVerdict::Drop(DropReason::MtuExceeded),
    }
}
