// The host's dataplane as the control plane sees it: the running policy and
// the kernel objects it owns (provider addresses, the VLAN interfaces of
// those on a VLAN, provider routes, TAPs).
// `apply(next)` moves from the running policy to `next` by difference, and
// undoes its own steps if one fails: nothing is ever half applied. Given the
// changes that make `next`, and they only touch lookup records and customer
// routes, the packet core takes them as a delta instead of a whole snapshot.

import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import type { Logger } from 'pino';
import type { NativeCore } from '../native.js';
import {
  emptyPolicy,
  isOnLink,
  splitPrefix,
  type Policy,
  type ProviderAddress,
  type ProviderRoute,
  type AdapterMode,
  type VmAdapter,
} from '../model/policy.js';
import type { PolicyChange } from '../model/change.js';
import { defaultGatewayMac, encodeDelta, encodePolicy, type UnderlayInterface, type UplinkInterface } from '../model/snapshot.js';
import { inSubnet } from '../config/net.js';
import { nvgreError } from '../errors.js';

/** Outer IPv4 (20) + GRE (8) + inner Ethernet (14): what NVGRE adds to a VM's IP packet. */
const NVGRE_OVERHEAD_V4 = 42;
/** Outer IPv6 (40) + GRE (8) + inner Ethernet (14). */
const NVGRE_OVERHEAD_V6 = 62;
const FALLBACK_UNDERLAY_MTU = 1500;

const paKey = (pa: ProviderAddress) => `${pa.interface}|${pa.vlan_id}|${pa.address}/${pa.prefix_length}`;
/** A provider route as placed: on `device` (its interface, or the VLAN interface of the PA it reaches through). */
type PlacedRoute = ProviderRoute & { device: string };
const routeKey = (r: PlacedRoute) => `${r.device}|${r.destination_prefix}|${r.next_hop}|${r.metric}`;
/** The interface nvgred serves for provider addresses on a VLAN (native io/vlan.rs). */
interface VlanInterface {
  name: string;
  parent: string;
  vlan_id: number;
}
/** Adapter fields that live in the device itself: a change makes it again. */
const deviceKey = (a: VmAdapter, mtu: number | undefined) => `${a.mode ?? 'tap'}|${a.mac}|${a.netns ?? ''}|${mtu ?? ''}|${a.socket ?? ''}|${a.socket_mode ?? ''}`;

/** An undo log: steps run in reverse if the apply fails part way. */
class Undo {
  private steps: Array<() => void> = [];
  push(step: () => void): void {
    this.steps.push(step);
  }
  run(log: Logger): void {
    for (const step of this.steps.reverse()) {
      try {
        step();
      } catch (err) {
        log.error({ err }, 'rollback step failed');
      }
    }
  }
}

export interface OwnedKernelObjects {
  provider_addresses: ProviderAddress[];
  /** Each with the device it was placed on (absent in states saved before VLANs: its interface). */
  provider_routes: Array<ProviderRoute & { device?: string }>;
}

/**
 * The interface a provider address lives on: its `interface`, or for a
 * VLAN the VLAN interface `<interface>.<vlan>` (when that fits a name,
 * else `nv<ifindex>.<vlan>`) nvgred makes for it.
 */
export function paDevice(pa: ProviderAddress): string {
  if (!pa.vlan_id) return pa.interface;
  const name = `${pa.interface}.${pa.vlan_id}`;
  return Buffer.byteLength(name) <= 15 ? name : `nv${underlayInterface(pa.interface).ifindex}.${pa.vlan_id}`;
}

/**
 * The device a provider route goes on: its interface, unless it reaches its
 * next hop (or, on-link, only) through provider addresses on one VLAN of
 * that interface: then that VLAN's interface. Routes follow their PA's VLAN.
 */
function routeDevice(r: ProviderRoute, pas: readonly ProviderAddress[]): string {
  const mine = pas.filter((pa) => pa.interface === r.interface);
  const through = isOnLink(r.next_hop) ? mine : mine.filter((pa) => inSubnet(pa.address, pa.prefix_length, r.next_hop));
  const devices = new Set(through.map(paDevice));
  return devices.size === 1 ? [...devices][0]! : r.interface;
}

/**
 * Run a call into the addon, turning its errors (code NVGRE_ERR_NATIVE_*)
 * into the control plane's: the API answers them with their message.
 */
function native<T>(call: () => T): T {
  try {
    return call();
  } catch (err) {
    const e = err as Error & { code?: string };
    if (e.code?.startsWith('NVGRE_ERR_NATIVE')) throw nvgreError('NVGRE_ERR_NATIVE', e.message, { cause: e });
    throw err;
  }
}

export interface PortState {
  name: string;
  mode: AdapterMode;
  id: number;
  ifindex: number;
  mtu: number;
  /** The device works; when it does not, `error` says why. */
  up: boolean;
  error?: string;
}

interface Port extends Omit<PortState, 'up' | 'error' | 'mode'> {
  adapter: VmAdapter;
  /** The device's identity (see deviceKey). */
  key: string;
}

export class HostDataplane {
  private running: Policy = emptyPolicy();
  private ports = new Map<string, Port>();
  private nextPortId = 1;
  /** Kernel objects this daemon placed (and so removes); pre-existing ones are left alone. */
  private owned: { addresses: Map<string, ProviderAddress>; routes: Map<string, PlacedRoute>; vlans: Map<string, VlanInterface> } = {
    addresses: new Map(),
    routes: new Map(),
    vlans: new Map(),
  };
  private started = false;
  /** The underlay interfaces' index/MTU the running snapshot was encoded with. */
  private underlaySeen = '';

  constructor(
    private readonly core: NativeCore,
    private readonly log: Logger,
  ) {}

  /** Start the packet workers (see the native `start`). */
  start(o: { workers: number; vsidCounters: number; kernelSegmentation: boolean; pollMicros: number }): void {
    const segmentation = this.core.start(o.workers, o.vsidCounters, o.kernelSegmentation ? 1 : 0, o.pollMicros);
    this.log.info({ workers: o.workers, segmentation, poll_us: o.pollMicros }, 'packet workers started');
    this.started = true;
  }

  get policy(): Policy {
    return this.running;
  }

  portStates(): PortState[] {
    const health = this.started ? new Map(this.core.portStates().map((h) => [h.id, h])) : new Map();
    return [...this.ports.values()].map(({ name, id, ifindex, mtu, adapter }) => {
      const h = health.get(id);
      const mode = adapter.mode ?? 'tap';
      return { name, mode, id, ifindex: h?.ifindex ?? ifindex, mtu: h?.mtu ?? mtu, up: h?.up ?? false, ...(h?.error ? { error: h.error } : {}) };
    });
  }

  /** The uplink's device: up, or down and why (its interface is absent, say). */
  uplinkState(): { ifindex: number | null; up: boolean; error: string | null } {
    const s = this.started && this.running.uplink ? this.core.uplinkState() : undefined;
    return { ifindex: s?.ifindex || null, up: s?.up ?? false, error: s?.error ?? null };
  }

  /** The adapter a port id belongs to. */
  portName(id: number): string | undefined {
    for (const p of this.ports.values()) if (p.id === id) return p.name;
    return undefined;
  }

  private createPort(a: VmAdapter, mtu: number | undefined, id = this.nextPortId++): Port {
    const mode = a.mode ?? 'tap';
    const ifindex = native(() => this.core.addPort(id, mode, a.name, a.netns ?? null, a.mac, mtu ?? null, a.socket, a.socket_mode ?? 'client'));
    this.log.info({ adapter: a.name, mode, vm: a.vm_name, vsid: a.vsid, netns: a.netns, mtu, ifindex }, mode === 'tap' ? 'vm adapter up' : 'vm adapter added');
    return { name: a.name, id, ifindex, mtu: mtu ?? 0, adapter: a, key: deviceKey(a, mtu) };
  }

  /** The MTU a VM adapter gets when its config leaves it out: the underlay's, less NVGRE's overhead. */
  defaultMtu(policy: Policy): number {
    const mtus = policy.provider_addresses.map((pa) => {
      const overhead = isIPv4(pa.address) ? NVGRE_OVERHEAD_V4 : NVGRE_OVERHEAD_V6;
      return underlayInterface(paDevice(pa)).mtu - overhead;
    });
    return mtus.length ? Math.min(...mtus) : FALLBACK_UNDERLAY_MTU - NVGRE_OVERHEAD_V4;
  }

  /**
   * Move the dataplane from the running policy to `next`, or leave it
   * untouched. `changes`, if given, are what makes `next` of the running
   * policy: when a delta can carry them, only they cross to the packet core.
   */
  apply(next: Policy, changes?: readonly PolicyChange[]): void {
    if (changes && this.applyDelta(next, changes)) return;
    const prev = this.running;
    const undo = new Undo();
    const core = this.core;
    try {
      // 1. New provider addresses (on their VLAN's interface, made first) and
      //    routes first: traffic to new PAs needs them.
      const prevPas = new Set(prev.provider_addresses.map(paKey));
      for (const pa of next.provider_addresses) {
        const key = paKey(pa);
        if (prevPas.has(key)) continue;
        const device = this.vlanFor(pa, undo);
        const added = native(() => core.addAddress(device, pa.address, pa.prefix_length));
        if (added) {
          this.owned.addresses.set(key, pa);
          undo.push(() => {
            core.delAddress(device, pa.address, pa.prefix_length);
            this.owned.addresses.delete(key);
          });
        }
        this.log.info({ pa: pa.address, interface: device, vlan: pa.vlan_id || undefined, preexisting: !added && !this.owned.addresses.has(key) }, 'provider address up');
      }
      const prevRoutes = new Set(placedRoutes(prev).map(routeKey));
      for (const r of placedRoutes(next)) {
        const key = routeKey(r);
        if (prevRoutes.has(key)) continue;
        const [prefix, len] = splitPrefix(r.destination_prefix);
        const via = isOnLink(r.next_hop) ? null : r.next_hop;
        if (native(() => core.addRoute(prefix, len, via, r.device, r.metric))) {
          this.owned.routes.set(key, r);
          undo.push(() => {
            core.delRoute(prefix, len, via, r.device, r.metric);
            this.owned.routes.delete(key);
          });
        }
        this.log.info({ route: r.destination_prefix, via: r.next_hop, interface: r.device }, 'provider route up');
      }

      // 2. VM adapters: create new TAPs (and recreate changed ones) before the
      //    snapshot that names them; removed ones go once it no longer does.
      const mtu = this.defaultMtu(next);
      const nextPorts = new Map<string, Port>();
      // A TAP it created that failed (deleted under the daemon) is made again;
      // an adopted interface or a vhost-user socket down is its VM's business.
      const failed = this.failedTaps();
      for (const a of next.vm_adapters) {
        // A created TAP gets the default MTU; an adopted interface keeps its own unless told.
        const portMtu = (a.mode ?? 'tap') === 'tap' ? (a.mtu ?? mtu) : a.mtu;
        const key = deviceKey(a, portMtu);
        const cur = this.ports.get(a.name);
        if (cur?.key === key && !failed.has(cur.id)) {
          nextPorts.set(a.name, cur);
          continue;
        }
        if (cur) {
          // Same name, new device: the old TAP must go first to free the name.
          native(() => core.removePort(cur.id));
          undo.push(() => this.ports.set(cur.name, this.createPort(cur.adapter, cur.adapter.mtu ?? (cur.mtu || undefined), cur.id)));
        }
        const port = this.createPort(a, portMtu);
        undo.push(() => core.removePort(port.id));
        nextPorts.set(a.name, port);
      }

      // 3. The HNV gateway's uplink (adopted like an attached adapter), then
      //    one snapshot, swapped in whole.
      const uplinkWas = prev.uplink?.interface ?? null;
      const uplinkNow = next.uplink?.interface ?? null;
      if (uplinkNow !== uplinkWas) {
        native(() => core.setUplink(uplinkNow));
        undo.push(() => core.setUplink(uplinkWas));
        this.log.info({ interface: uplinkNow ?? undefined, was: uplinkWas ?? undefined }, uplinkNow ? 'uplink adopted' : 'uplink let go');
      }
      this.publish(next, nextPorts);

      // 4. What the new policy no longer names.
      for (const [name, p] of this.ports) {
        if (next.vm_adapters.some((a) => a.name === name)) continue;
        this.bestEffort(() => core.removePort(p.id));
        this.log.info({ adapter: name }, 'vm adapter removed');
      }
      this.removeStale(next);
      this.ports = nextPorts;
      this.running = next;
    } catch (err) {
      undo.run(this.log);
      throw err;
    }
  }

  /**
   * Hand the packet core `changes` as a delta; false, changing nothing,
   * when they need the whole apply: they touch another section, something
   * outside the sections changed that the snapshot holds, or the core
   * cannot apply them exactly (it says so).
   */
  private applyDelta(next: Policy, changes: readonly PolicyChange[]): boolean {
    const prev = this.running;
    if (!this.started || next.encapsulation.flow_id !== prev.encapsulation.flow_id || defaultGatewayMac(next) !== defaultGatewayMac(prev)) return false;
    // The gateway (uplink, NATs) goes in the whole policy only.
    if (JSON.stringify([next.uplink, next.nat]) !== JSON.stringify([prev.uplink, prev.nat])) return false;
    if (underlayKey(next) !== this.underlaySeen) return false;
    const delta = encodeDelta(next, changes);
    if (!delta) return false;
    if (!native(() => this.core.applyDelta(delta))) {
      this.log.debug({ changes: changes.length }, 'the packet core needs the whole policy for these changes');
      return false;
    }
    this.running = next;
    return true;
  }

  /** The interface `pa` lives on, its VLAN interface made first if it is on a VLAN and that is new. */
  private vlanFor(pa: ProviderAddress, undo?: Undo): string {
    const device = paDevice(pa);
    if (!pa.vlan_id || this.owned.vlans.has(device)) return device;
    native(() => this.core.addVlan(pa.interface, device, pa.vlan_id));
    this.owned.vlans.set(device, { name: device, parent: pa.interface, vlan_id: pa.vlan_id });
    this.log.info({ interface: device, parent: pa.interface, vlan: pa.vlan_id }, 'VLAN interface made for provider addresses');
    undo?.push(() => {
      this.core.delVlan(device);
      this.owned.vlans.delete(device);
    });
    return device;
  }

  /** Make again the VM adapters whose device failed (deleted under the daemon); the rest is left alone. */
  repair(): void {
    if (this.started && this.failedTaps().size) this.apply(this.running);
  }

  /** The ids of created TAPs that are down: deleted under the daemon. */
  private failedTaps(): Set<number> {
    const taps = new Set([...this.ports.values()].filter((p) => (p.adapter.mode ?? 'tap') === 'tap').map((p) => p.id));
    return new Set(this.core.portStates().filter((h) => !h.up && taps.has(h.id)).map((h) => h.id));
  }

  /**
   * Put back what the running policy places in the kernel and someone (or
   * something: an underlay link going down takes its routes and IPv6
   * addresses with it) removed: provider addresses and routes. Called when
   * the kernel reports a change; what cannot be placed yet (its link is
   * down) is tried again at the next change. The snapshot is re-encoded if
   * an underlay interface's index or MTU moved (it was re-created).
   */
  reconcile(): void {
    if (!this.started) return;
    for (const pa of this.running.provider_addresses) {
      const device = paDevice(pa);
      try {
        if (pa.vlan_id) this.core.addVlan(pa.interface, device, pa.vlan_id); // made again if it failed (deleted under us)
        if (this.core.addAddress(device, pa.address, pa.prefix_length)) {
          this.owned.addresses.set(paKey(pa), pa);
          this.log.warn({ pa: pa.address, interface: device }, 'provider address was removed by someone else: restored');
        }
      } catch (err) {
        this.log.debug({ pa: pa.address, interface: device, err: (err as Error).message }, 'provider address cannot be restored yet');
      }
    }
    for (const r of placedRoutes(this.running)) {
      const [prefix, len] = splitPrefix(r.destination_prefix);
      try {
        if (this.core.addRoute(prefix, len, isOnLink(r.next_hop) ? null : r.next_hop, r.device, r.metric)) {
          this.owned.routes.set(routeKey(r), r);
          this.log.warn({ route: r.destination_prefix, via: r.next_hop, interface: r.device }, 'provider route was removed: restored');
        }
      } catch (err) {
        this.log.debug({ route: r.destination_prefix, err: (err as Error).message }, 'provider route cannot be restored yet');
      }
    }
    if (underlayKey(this.running) !== this.underlaySeen) {
      this.publish(this.running, this.ports);
      this.log.info({ underlay: this.underlaySeen }, 'underlay interfaces changed: tables rebuilt');
    }
  }

  /** Hand the packet core the snapshot of `policy` with these ports. */
  private publish(policy: Policy, ports: ReadonlyMap<string, Port>): void {
    native(() => this.core.setPolicy(encodePolicy(policy, new Map([...ports].map(([n, p]) => [n, p.id])), (pa) => underlayInterface(paDevice(pa)), uplinkInterface)));
    this.underlaySeen = underlayKey(policy);
  }

  /** Remove the provider addresses, routes and VLAN interfaces this daemon placed that `next` does not have. */
  private removeStale(next: Policy): void {
    const keepRoutes = new Set(placedRoutes(next).map(routeKey));
    for (const [key, r] of this.owned.routes) {
      if (keepRoutes.has(key)) continue;
      const [prefix, len] = splitPrefix(r.destination_prefix);
      this.bestEffort(() => this.core.delRoute(prefix, len, isOnLink(r.next_hop) ? null : r.next_hop, r.device, r.metric));
      this.owned.routes.delete(key);
    }
    const keepPas = new Set(next.provider_addresses.map(paKey));
    for (const [key, pa] of this.owned.addresses) {
      if (keepPas.has(key)) continue;
      this.bestEffort(() => this.core.delAddress(paDevice(pa), pa.address, pa.prefix_length));
      this.owned.addresses.delete(key);
    }
    const keepVlans = new Set(next.provider_addresses.filter((pa) => pa.vlan_id).map(paDevice));
    for (const [name, v] of this.owned.vlans) {
      if (keepVlans.has(name)) continue;
      this.bestEffort(() => this.core.delVlan(name));
      this.owned.vlans.delete(name);
      this.log.info({ interface: name, parent: v.parent, vlan: v.vlan_id }, 'VLAN interface removed');
    }
  }

  /** What this daemon placed in the kernel, to be saved with the policy. */
  ownedKernelObjects(): OwnedKernelObjects {
    return { provider_addresses: [...this.owned.addresses.values()], provider_routes: [...this.owned.routes.values()] };
  }

  /**
   * Take over what an earlier run of this daemon placed and could not remove
   * (it was killed): the next apply keeps what the policy still names and
   * removes the rest.
   */
  adopt(saved: OwnedKernelObjects): void {
    for (const pa of saved.provider_addresses) this.owned.addresses.set(paKey({ ...pa, vlan_id: pa.vlan_id ?? 0 }), pa);
    for (const r of saved.provider_routes) {
      const placed = { ...r, device: r.device ?? r.interface };
      this.owned.routes.set(routeKey(placed), placed);
    }
  }

  private bestEffort(f: () => void): void {
    try {
      f();
    } catch (err) {
      this.log.warn({ err }, 'cleanup step failed');
    }
  }

  /** Stop the workers, remove every TAP, and the addresses and routes this daemon placed. */
  stop(): void {
    if (!this.started) return;
    // What it placed goes first, VLAN interfaces last; then the workers and every TAP.
    this.removeStale(emptyPolicy());
    this.started = false;
    this.core.stop();
    this.ports.clear();
    this.running = emptyPolicy();
  }
}

/** The underlay interfaces' (and the uplink's) index and MTU (and MAC), as a snapshot encodes them. */
function underlayKey(p: Policy): string {
  const uplink = p.uplink ? uplinkInterface(p.uplink.interface) : undefined;
  return [...p.provider_addresses.map((pa) => underlayInterface(paDevice(pa))), ...(uplink ? [uplink] : [])].map((u) => `${u.ifindex}/${u.mtu}/${'mac' in u ? u.mac : ''}`).join(',');
}

/** The uplink's interface as the core needs it: ifindex 0 and a zero MAC while it is absent. */
function uplinkInterface(ifname: string): UplinkInterface {
  let mac = '00:00:00:00:00:00';
  try {
    mac = readFileSync(`/sys/class/net/${ifname}/address`, 'utf8').trim();
  } catch {
    // absent: the snapshot is made again when it appears (reconcile)
  }
  return { ...underlayInterface(ifname), mac };
}

/** The policy's provider routes with the device each goes on. */
function placedRoutes(p: Policy): PlacedRoute[] {
  return p.provider_routes.map((r) => ({ ...r, device: routeDevice(r, p.provider_addresses) }));
}

function underlayInterface(ifname: string): UnderlayInterface {
  const read = (attr: string) => {
    try {
      return Number(readFileSync(`/sys/class/net/${ifname}/${attr}`, 'utf8').trim()) || 0;
    } catch {
      return 0;
    }
  };
  return { mtu: read('mtu') || FALLBACK_UNDERLAY_MTU, ifindex: read('ifindex') };
}
