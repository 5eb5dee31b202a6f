// Cross-record rules of a policy (shared/spec/config.md), checked on records
// that are each valid and normalized. Linear in the number of records: every
// rule is a Map/Set lookup keyed by canonical strings.
//
// Problems are reported at the later of two conflicting records, naming the
// earlier one.

import { fieldError, type ErrorCode, type FieldError } from '../errors.js';
import { isOnLink, type CustomerRoute, type LookupRecord, type Policy, type ProviderAddress, type ProviderRoute, type VmAdapter } from '../model/policy.js';
import { ZERO_MAC, defaultGatewayOf, familyOf } from './net.js';

/**
 * The record lists of a policy. Entries may be `undefined` (a record that
 * failed its own validation): they are skipped, and indices keep matching
 * the document's.
 */
export interface PolicyRecords {
  readonly provider_addresses: readonly (ProviderAddress | undefined)[];
  readonly provider_routes: readonly (ProviderRoute | undefined)[];
  readonly customer_routes: readonly (CustomerRoute | undefined)[];
  readonly lookup_records: readonly (LookupRecord | undefined)[];
  readonly vm_adapters: readonly (VmAdapter | undefined)[];
}

export interface InvariantOptions {
  /** VSIDs to treat as bound to some routing domain even without a valid customer route. */
  alsoBound?: ReadonlySet<number>;
  /** Addresses to treat as local PAs even without a valid provider_addresses entry. */
  alsoLocal?: ReadonlySet<string>;
  /**
   * Customer routes that failed validation on some field but have a valid
   * VSID and routing domain, by index: they still take part in the
   * one-routing-domain-per-VSID check.
   */
  partialRoutes?: ReadonlyMap<number, { vsid: number; routing_domain: string }>;
  /**
   * The place in the whole policy of the i-th of `lookup_records` (default:
   * i), when they are a part of it: errors then read as the whole policy's.
   */
  lookupPosition?: (i: number) => number;
}

/** The MAC tables of one routing domain (shared by its VSIDs): MAC -> record/adapter index. */
interface DomainMacs {
  /** first lookup record with the MAC */
  records: Map<string, number>;
  /** the default-gateway (`.1`) record with the MAC */
  gateways: Map<string, number>;
  /** the VM adapter with the MAC */
  adapters: Map<string, number>;
}

function inner<K, K2, V>(outer: Map<K, Map<K2, V>>, key: K): Map<K2, V> {
  let m = outer.get(key);
  if (m === undefined) {
    m = new Map();
    outer.set(key, m);
  }
  return m;
}

/** The cross-record checks of a validated policy; returns every problem (empty: consistent). */
export function checkPolicyInvariants(policy: Policy | PolicyRecords, opts: InvariantOptions = {}): FieldError[] {
  return collectInvariantErrors(policy, opts);
}

export function collectInvariantErrors(p: PolicyRecords, opts: InvariantOptions = {}): FieldError[] {
  const errs: FieldError[] = [];
  const push = (code: ErrorCode, path: string, value: unknown, reason: string): void => {
    errs.push(fieldError(code, path, value, reason));
  };
  const alsoBound = opts.alsoBound ?? new Set<number>();
  const L = opts.lookupPosition ?? ((i: number) => i);

  // ---- provider addresses: one entry per address
  const paSeen = new Map<string, number>();
  for (let i = 0; i < p.provider_addresses.length; i++) {
    const pa = p.provider_addresses[i];
    if (!pa) continue;
    const prev = paSeen.get(pa.address);
    if (prev !== undefined) {
      push('NVGRE_ERR_DUPLICATE', `provider_addresses[${i}].address`, pa.address, `is already configured by provider_addresses[${prev}]`);
    } else {
      paSeen.set(pa.address, i);
    }
  }

  // ---- provider routes: (destination_prefix, interface, next_hop) is the key
  const prSeen = new Map<string, number>();
  for (let i = 0; i < p.provider_routes.length; i++) {
    const r = p.provider_routes[i];
    if (!r) continue;
    const key = `${r.destination_prefix}|${r.interface}|${r.next_hop}`;
    const prev = prSeen.get(key);
    if (prev !== undefined) {
      push(
        'NVGRE_ERR_DUPLICATE',
        `provider_routes[${i}].destination_prefix`,
        r.destination_prefix,
        `is already routed via ${r.next_hop} on ${r.interface} by provider_routes[${prev}]`,
      );
    } else {
      prSeen.set(key, i);
    }
  }

  // ---- customer routes: bind each VSID to one routing domain
  const domainMacs = new Map<string, DomainMacs>();
  /** vsid -> its routing domain, the route that bound it, the domain's MAC tables */
  const vsidDomain = new Map<number, { rd: string; index: number; macs: DomainMacs }>();
  const crSeen = new Map<string, number>();
  const onLinkSeen = new Map<string, { vsid: number; index: number }>();
  /** vsid -> its default gateways (`.1` of each on-link subnet) and the routes defining them; few per VSID */
  const gateways = new Map<number, { addr: string; route: number }[]>();
  for (let i = 0; i < p.customer_routes.length; i++) {
    const route = p.customer_routes[i];
    const b = route ?? opts.partialRoutes?.get(i);
    if (!b) continue;
    const bound = vsidDomain.get(b.vsid);
    if (bound === undefined) {
      let macs = domainMacs.get(b.routing_domain);
      if (macs === undefined) {
        macs = { records: new Map(), gateways: new Map(), adapters: new Map() };
        domainMacs.set(b.routing_domain, macs);
      }
      vsidDomain.set(b.vsid, { rd: b.routing_domain, index: i, macs });
    } else if (bound.rd !== b.routing_domain) {
      push(
        'NVGRE_ERR_VSID_DOMAIN',
        `customer_routes[${i}].vsid`,
        b.vsid,
        `is already in routing domain ${bound.rd} (customer_routes[${bound.index}]) and cannot also be in ${b.routing_domain}: a VSID belongs to exactly one routing domain`,
      );
      continue;
    }
    if (!route) continue; // a partial route: binding only
    const r = route;
    const key = `${r.routing_domain}|${r.vsid}|${r.destination_prefix}`;
    const prev = crSeen.get(key);
    if (prev !== undefined) {
      push(
        'NVGRE_ERR_DUPLICATE',
        `customer_routes[${i}].destination_prefix`,
        r.destination_prefix,
        `is already routed in VSID ${r.vsid} by customer_routes[${prev}]`,
      );
      continue;
    }
    crSeen.set(key, i);
    if (isOnLink(r.next_hop)) {
      const lkey = `${r.routing_domain}|${r.destination_prefix}`;
      const other = onLinkSeen.get(lkey);
      if (other !== undefined) {
        push(
          'NVGRE_ERR_DUPLICATE',
          `customer_routes[${i}].destination_prefix`,
          r.destination_prefix,
          `is already an on-link subnet of VSID ${other.vsid} (customer_routes[${other.index}]) in routing domain ${r.routing_domain}`,
        );
        continue;
      }
      onLinkSeen.set(lkey, { vsid: r.vsid, index: i });
      const gw = defaultGatewayOf(r.destination_prefix);
      if (gw !== undefined) {
        const list = gateways.get(r.vsid);
        if (list === undefined) gateways.set(r.vsid, [{ addr: gw, route: i }]);
        else list.push({ addr: gw, route: i });
      }
    }
  }

  const unbound = (path: string, vsid: number): void => {
    push(
      'NVGRE_ERR_VSID_UNBOUND',
      path,
      vsid,
      `has no customer route, so it belongs to no routing domain (add a customer_routes entry for VSID ${vsid})`,
    );
  };

  // ---- lookup records
  // per VSID: CA -> index (static, dynamic), MAC -> index (l2only), family -> index (gateway_wildcard)
  const caSeen = new Map<number, Map<string, number>>();
  const l2Seen = new Map<number, Map<string, number>>();
  const wildcardSeen = new Map<number, Map<string, number>>();
  const localPAs = [...paSeen.keys(), ...(opts.alsoLocal ?? [])];
  const isLocal = (pa: string): boolean => paSeen.has(pa) || (opts.alsoLocal?.has(pa) ?? false);
  for (let i = 0; i < p.lookup_records.length; i++) {
    const r = p.lookup_records[i];
    if (!r) continue;
    const dom = vsidDomain.get(r.vsid);
    if (dom === undefined && !alsoBound.has(r.vsid)) unbound(`lookup_records[${L(i)}].vsid`, r.vsid);

    let gatewayOf: number | undefined;
    if (r.type === 'static' || r.type === 'dynamic') {
      const cas = inner(caSeen, r.vsid);
      const prev = cas.get(r.customer_address);
      if (prev !== undefined) {
        push(
          'NVGRE_ERR_DUPLICATE_CA',
          `lookup_records[${L(i)}].customer_address`,
          r.customer_address,
          `is already used in VSID ${r.vsid} by lookup_records[${L(prev)}]`,
        );
        continue;
      }
      cas.set(r.customer_address, i);
      const gws = gateways.get(r.vsid);
      if (gws !== undefined) {
        for (const g of gws) if (g.addr === r.customer_address) gatewayOf = g.route;
      }
      if (gatewayOf !== undefined && !isLocal(r.provider_address)) {
        const route = p.customer_routes[gatewayOf]!;
        push(
          'NVGRE_ERR_GATEWAY_PA',
          `lookup_records[${L(i)}].provider_address`,
          r.provider_address,
          `is not a provider address of this host, but ${r.customer_address} is the default gateway of ` +
            `${route.destination_prefix} (customer_routes[${gatewayOf}]), which this host answers for: its record must name a local PA` +
            (localPAs.length > 0 ? ` (${localPAs.slice(0, 4).join(', ')})` : ' (none is configured in provider_addresses)'),
        );
        continue;
      }
    } else if (r.type === 'l2only') {
      const macs = inner(l2Seen, r.vsid);
      const prev = macs.get(r.mac);
      if (prev !== undefined) {
        push('NVGRE_ERR_DUPLICATE', `lookup_records[${L(i)}].mac`, r.mac, `already has an l2only record in VSID ${r.vsid} (lookup_records[${L(prev)}])`);
        continue;
      }
      macs.set(r.mac, i);
    } else {
      const fam = familyOf(r.customer_address);
      const wcs = inner(wildcardSeen, r.vsid);
      const prev = wcs.get(String(fam));
      if (prev !== undefined) {
        push(
          'NVGRE_ERR_DUPLICATE',
          `lookup_records[${L(i)}].customer_address`,
          r.customer_address,
          `is a second IPv${fam} gateway_wildcard record in VSID ${r.vsid} (the first is lookup_records[${L(prev)}])`,
        );
        continue;
      }
      wcs.set(String(fam), i);
    }

    // A MAC is unique within a routing domain: every record with it is in the
    // same VSID and names the same PA (one VM may have several CAs).
    if (dom === undefined || r.mac === ZERO_MAC) continue;
    const first = dom.macs.records.get(r.mac);
    if (first === undefined) {
      dom.macs.records.set(r.mac, i);
    } else {
      const f = p.lookup_records[first]!;
      if (f.vsid !== r.vsid) {
        push(
          'NVGRE_ERR_DUPLICATE_MAC',
          `lookup_records[${L(i)}].mac`,
          r.mac,
          `is already used in VSID ${f.vsid} by lookup_records[${L(first)}]; a MAC is unique within routing domain ${dom.rd}`,
        );
        continue;
      }
      if (f.provider_address !== r.provider_address) {
        push(
          'NVGRE_ERR_DUPLICATE_MAC',
          `lookup_records[${L(i)}].mac`,
          r.mac,
          `is already mapped to PA ${f.provider_address} by lookup_records[${L(first)}]; records of one MAC must name the same PA, not ${r.provider_address}`,
        );
        continue;
      }
      // the default gateway's MAC is not a VM's MAC
      const firstIsGateway = dom.macs.gateways.has(r.mac);
      if (firstIsGateway !== (gatewayOf !== undefined)) {
        push(
          'NVGRE_ERR_DUPLICATE_MAC',
          `lookup_records[${L(i)}].mac`,
          r.mac,
          firstIsGateway
            ? `is the default-gateway MAC of VSID ${f.vsid} (lookup_records[${L(first)}], ${f.customer_address}); a VM cannot use it`
            : `is already the MAC of a VM (lookup_records[${L(first)}], ${f.customer_address}); the default gateway ${r.customer_address} needs its own MAC`,
        );
      }
      continue;
    }
    if (gatewayOf !== undefined) dom.macs.gateways.set(r.mac, i);
  }

  // ---- VM adapters
  const nameSeen = new Map<string, number>();
  for (let i = 0; i < p.vm_adapters.length; i++) {
    const a = p.vm_adapters[i];
    if (!a) continue;
    const prevName = nameSeen.get(a.name);
    if (prevName !== undefined) {
      push('NVGRE_ERR_DUPLICATE', `vm_adapters[${i}].name`, a.name, `is already the name of vm_adapters[${prevName}]`);
    } else {
      nameSeen.set(a.name, i);
    }
    const dom = vsidDomain.get(a.vsid);
    if (dom === undefined) {
      if (!alsoBound.has(a.vsid)) unbound(`vm_adapters[${i}].vsid`, a.vsid);
      continue;
    }
    const prev = dom.macs.adapters.get(a.mac);
    if (prev !== undefined) {
      push(
        'NVGRE_ERR_DUPLICATE_MAC',
        `vm_adapters[${i}].mac`,
        a.mac,
        `is already the MAC of vm_adapters[${prev}]; a MAC is unique within routing domain ${dom.rd}`,
      );
      continue;
    }
    dom.macs.adapters.set(a.mac, i);
    const gw = dom.macs.gateways.get(a.mac);
    if (gw !== undefined) {
      const g = p.lookup_records[gw]!;
      push(
        'NVGRE_ERR_DUPLICATE_MAC',
        `vm_adapters[${i}].mac`,
        a.mac,
        `is the default-gateway MAC of VSID ${g.vsid} (lookup_records[${L(gw)}], ${g.customer_address}); a VM adapter cannot use it`,
      );
      continue;
    }
    const rec = dom.macs.records.get(a.mac);
    if (rec !== undefined) {
      const r = p.lookup_records[rec]!;
      if (r.vsid !== a.vsid) {
        push(
          'NVGRE_ERR_DUPLICATE_MAC',
          `vm_adapters[${i}].mac`,
          a.mac,
          `is in VSID ${r.vsid} according to lookup_records[${L(rec)}], but this adapter is in VSID ${a.vsid}`,
        );
      }
    }
  }
  return errs;
}
