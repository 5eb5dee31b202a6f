// The HNV gateway's cross-checks (hnv-gateway.md, config.md `uplink`, `nat`):
// each NAT against the routing domains, lookup records, VM adapters and the
// uplink, on a policy whose records are each valid.

import { fieldError, type ErrorCode, type FieldError } from '../errors.js';
import { isOnLink, type CustomerRoute, LookupRecord, Nat, ProviderAddress, UplinkSection, VmAdapter } from '../model/policy.js';
import { inSubnet } from './net.js';

export interface GatewayRecords {
  readonly uplink: UplinkSection | undefined;
  readonly nat: readonly Nat[];
  readonly customer_routes: readonly CustomerRoute[];
  readonly provider_addresses: readonly ProviderAddress[];
  readonly lookup_records: readonly LookupRecord[];
  readonly vm_adapters: readonly VmAdapter[];
}

/** The VSIDs of each routing domain, by its customer routes. */
function domains(routes: readonly CustomerRoute[]): Map<string, Set<number>> {
  const out = new Map<string, Set<number>>();
  for (const r of routes) {
    let s = out.get(r.routing_domain);
    if (!s) out.set(r.routing_domain, (s = new Set()));
    s.add(r.vsid);
  }
  return out;
}

/**
 * The lookup records of routing domain `rd` for CA `address` (in any of its
 * VSIDs): a static mapping's inside address must have exactly one, which
 * gives its VSID.
 */
export function insideRecords(p: Pick<GatewayRecords, 'customer_routes' | 'lookup_records'>, rd: string, address: string): LookupRecord[] {
  const vsids = domains(p.customer_routes).get(rd) ?? new Set<number>();
  return p.lookup_records.filter((r) => r.customer_address === address && vsids.has(r.vsid));
}

/** Every problem of the policy's `uplink` and `nat` (empty: consistent). */
export function natProblems(p: GatewayRecords): FieldError[] {
  const errs: FieldError[] = [];
  const push = (code: ErrorCode, path: string, value: unknown, reason: string): void => {
    errs.push(fieldError(code, path, value, reason));
  };
  if (p.nat.length && !p.uplink) {
    push('NVGRE_ERR_REQUIRED', 'uplink', undefined, 'is missing; a host with nat entries is an HNV gateway and needs its uplink (the external network)');
  }
  const rds = domains(p.customer_routes);
  const uplinkAddresses = new Set((p.uplink?.addresses ?? []).map((a) => a.split('/')[0]!));
  const names = new Map<string, number>();
  const byRd = new Map<string, number>();
  // (external address, protocol, port) and (vsid, protocol, address, port) of static mappings.
  const outside = new Map<string, string>();
  const inside = new Map<string, string>();
  const local = new Set(p.provider_addresses.map((pa) => pa.address));
  for (let i = 0; i < p.nat.length; i++) {
    const n = p.nat[i]!;
    const at = (k: string) => `nat[${i}].${k}`;
    const prevName = names.get(n.name);
    if (prevName !== undefined) push('NVGRE_ERR_DUPLICATE', at('name'), n.name, `is already the name of nat[${prevName}]`);
    else names.set(n.name, i);
    const prevRd = byRd.get(n.routing_domain);
    if (prevRd !== undefined) push('NVGRE_ERR_DUPLICATE', at('routing_domain'), n.routing_domain, `already has a NAT (nat[${prevRd}]); one NAT per routing domain`);
    else byRd.set(n.routing_domain, i);
    const vsids = rds.get(n.routing_domain);
    if (!vsids) {
      push('NVGRE_ERR_ROUTING_DOMAIN', at('routing_domain'), n.routing_domain, 'has no customer routes: no such routing domain on this host');
      continue;
    }
    if (!vsids.has(n.vsid)) {
      push('NVGRE_ERR_VSID_DOMAIN', at('vsid'), n.vsid, `is not a VSID of routing domain ${n.routing_domain} (its customer routes name ${[...vsids].join(', ')})`);
    } else {
      const subnets = p.customer_routes.filter((r) => r.vsid === n.vsid && isOnLink(r.next_hop) && r.destination_prefix.includes('.'));
      if (!subnets.some((r) => inSubnet(r.destination_prefix.split('/')[0]!, Number(r.destination_prefix.split('/')[1]), n.internal_address))) {
        push('NVGRE_ERR_ADDRESS', at('internal_address'), n.internal_address, `is in no on-link customer route of VSID ${n.vsid} (${subnets.map((r) => r.destination_prefix).join(', ') || 'it has no IPv4 subnet'})`);
      }
    }
    // The NAT's MAC is its own in the routing domain: a lookup record may
    // name it only for the NAT's own address (and then from this host).
    for (let k = 0; k < p.vm_adapters.length; k++) {
      const a = p.vm_adapters[k]!;
      if (a.mac === n.mac && vsids.has(a.vsid)) push('NVGRE_ERR_DUPLICATE_MAC', at('mac'), n.mac, `is the MAC of vm_adapters[${k}] (${a.name}); the NAT's MAC is its own`);
    }
    for (let k = 0; k < p.lookup_records.length; k++) {
      const r = p.lookup_records[k]!;
      if (!vsids.has(r.vsid)) continue;
      const own = r.vsid === n.vsid && r.customer_address === n.internal_address;
      if (own && r.mac !== n.mac) {
        push('NVGRE_ERR_DUPLICATE_CA', at('internal_address'), n.internal_address, `has lookup_records[${k}] with MAC ${r.mac}, not the NAT's ${n.mac}`);
      } else if (own && !local.has(r.provider_address)) {
        push('NVGRE_ERR_GATEWAY_PA', at('internal_address'), n.internal_address, `has lookup_records[${k}] naming PA ${r.provider_address}, not a provider address of this host (the NAT lives here)`);
      } else if (!own && r.mac === n.mac) {
        push('NVGRE_ERR_DUPLICATE_MAC', at('mac'), n.mac, `is the MAC of lookup_records[${k}] (${r.customer_address} in VSID ${r.vsid}); the NAT's MAC is its own`);
      }
    }
    if (p.uplink && !uplinkAddresses.has(n.external_address)) {
      push('NVGRE_ERR_ADDRESS', at('external_address'), n.external_address, `is not one of uplink.addresses (${[...uplinkAddresses].join(', ')})`);
    }
    for (let k = 0; k < n.static_mappings.length; k++) {
      const s = n.static_mappings[k]!;
      const sp = (f: string) => `nat[${i}].static_mappings[${k}].${f}`;
      const o = `${n.external_address}|${s.protocol}|${s.external_port}`;
      const prevOut = outside.get(o);
      if (prevOut !== undefined) push('NVGRE_ERR_DUPLICATE', sp('external_port'), s.external_port, `${s.protocol} ${n.external_address}:${s.external_port} is already mapped by ${prevOut}`);
      else outside.set(o, `nat[${i}].static_mappings[${k}]`);
      const recs = insideRecords(p, n.routing_domain, s.internal_address);
      if (recs.length !== 1) {
        push(
          'NVGRE_ERR_ADDRESS',
          sp('internal_address'),
          s.internal_address,
          recs.length
            ? `has lookup records in several VSIDs of routing domain ${n.routing_domain} (${recs.map((r) => r.vsid).join(', ')}); which one is meant?`
            : `has no lookup record in routing domain ${n.routing_domain}: inbound packets could not reach it`,
        );
        continue;
      }
      const key = `${recs[0]!.vsid}|${s.protocol}|${s.internal_address}|${s.internal_port}`;
      const prevIn = inside.get(key);
      if (prevIn !== undefined) push('NVGRE_ERR_DUPLICATE', sp('internal_port'), s.internal_port, `${s.protocol} ${s.internal_address}:${s.internal_port} is already mapped by ${prevIn}`);
      else inside.set(key, `nat[${i}].static_mappings[${k}]`);
    }
  }
  return errs;
}
