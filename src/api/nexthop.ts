// Select-NetVirtualizationNextHop: what a packet from a VSID to a CA would
// do, decided by the packet core's own routing code on the running snapshot
// and reported with the policy records it used.

import { nvgreError } from '../errors.js';
import type { CustomerRoute, LookupRecord, Policy } from '../model/policy.js';
import { normalizeField } from '../model/resources.js';
import type { NativeCore } from '../native.js';

export interface NextHop {
  vsid: number;
  destination: string;
  routing_domain: string | null;
  action: 'deliver' | 'encap' | 'gateway' | 'drop';
  drop_reason?: string;
  customer_route: CustomerRoute | null;
  lookup_record: LookupRecord | null;
  provider_address: string | null;
  local_provider_address: string | null;
  encap_vsid: number | null;
}

export function resolveNextHop(core: NativeCore, policy: Policy, query: URLSearchParams): NextHop {
  const need = (name: string, field: string) => {
    const v = query.get(name);
    if (v === null) throw nvgreError('NVGRE_ERR_BAD_REQUEST', `next-hop needs ?vsid=N&destination=CA (missing ${name})`);
    return normalizeField(field, v, 'next-hop');
  };
  const vsid = Number(need('vsid', 'vsid'));
  const destination = need('destination', 'customer_address');
  const n = core.nextHop(vsid, destination);
  const rd = policy.customer_routes.find((r) => r.vsid === vsid)?.routing_domain ?? null;
  const route =
    n.route_prefix === undefined
      ? null
      : (policy.customer_routes.find((r) => r.routing_domain === rd && r.vsid === n.route_vsid && r.destination_prefix === n.route_prefix) ?? null);
  // A target with no record of its own was reached through its VSID's
  // gateway wildcard of the same family (the core's lookup order).
  const record =
    n.target === undefined
      ? null
      : (policy.lookup_records.find((r) => r.vsid === n.record_vsid && r.customer_address === n.target) ??
        policy.lookup_records.find(
          (r) => r.vsid === n.record_vsid && r.type === 'gateway_wildcard' && r.customer_address.includes(':') === n.target!.includes(':'),
        ) ??
        null);
  return {
    vsid,
    destination,
    routing_domain: rd,
    action: n.action,
    ...(n.drop_reason !== undefined ? { drop_reason: n.drop_reason } : {}),
    customer_route: route,
    lookup_record: record,
    provider_address: n.pa ?? null,
    local_provider_address: n.local_pa ?? null,
    encap_vsid: n.action === 'encap' ? (n.record_vsid ?? null) : null,
  };
}
