// GET /v1/nat: the HNV gateway's live NAT mappings (like `conntrack -L`),
// read from the packet core's workers in one bulk crossing and named here
// (the core numbers NATs by their place in the policy's `nat` list).

import { nvgreError } from '../errors.js';
import { formatIPv4 } from '../config/net.js';
import type { NativeCore } from '../native.js';
import type { Policy } from '../model/policy.js';
import { NAT_MAPPING_FIELDS, NAT_PROTOCOL_NAMES } from '../metrics/index.js';

export interface NatMapping {
  nat: string;
  protocol: (typeof NAT_PROTOCOL_NAMES)[number];
  vsid: number;
  internal_address: string;
  /** ICMP: the echo identifier. */
  internal_port: number;
  external_address: string;
  external_port: number;
  /** Seconds before it expires unless a packet refreshes it. */
  expires_in: number;
  /** TCP only: both sides seen, no FIN from both, no RST. */
  established?: boolean;
}

/** The mappings, filtered by `name` (a NAT's) and `protocol`, sorted by NAT, protocol, external port. */
export function natMappings(core: NativeCore, policy: Policy, params: URLSearchParams): { mappings: NatMapping[] } {
  const nats = policy.nat ?? [];
  for (const key of params.keys()) {
    if (key !== 'name' && key !== 'protocol') throw nvgreError('NVGRE_ERR_BAD_REQUEST', `unknown query parameter ${JSON.stringify(key)} (the filters are name, protocol)`);
  }
  const name = params.get('name');
  if (name !== null && !nats.some((n) => n.name === name)) {
    throw nvgreError('NVGRE_ERR_NOT_FOUND', `no NAT named ${JSON.stringify(name)} (the NATs are: ${nats.map((n) => n.name).join(', ') || 'none'})`, { path: 'name', value: name });
  }
  const protocol = params.get('protocol');
  if (protocol !== null && !(NAT_PROTOCOL_NAMES as readonly string[]).includes(protocol)) {
    throw nvgreError('NVGRE_ERR_BAD_REQUEST', `protocol ${JSON.stringify(protocol)} is not one of ${NAT_PROTOCOL_NAMES.join(', ')}`, { path: 'protocol', value: protocol });
  }
  if (!nats.length) return { mappings: [] };
  const raw = core.natMappings();
  const out: NatMapping[] = [];
  for (let i = 0; i + NAT_MAPPING_FIELDS <= raw.length; i += NAT_MAPPING_FIELDS) {
    const v = (k: number) => Number(raw[i + k]);
    const nat = nats[v(0)]?.name;
    const proto = NAT_PROTOCOL_NAMES[v(2)];
    if (nat === undefined || proto === undefined || (name !== null && nat !== name) || (protocol !== null && proto !== protocol)) continue;
    out.push({
      nat,
      protocol: proto,
      vsid: v(1),
      internal_address: formatIPv4(v(3)),
      internal_port: v(4),
      external_address: formatIPv4(v(5)),
      external_port: v(6),
      expires_in: v(7),
      ...(proto === 'tcp' ? { established: v(8) === 1 } : {}),
    });
  }
  const rank = new Map(nats.map((n, k) => [n.name, k]));
  out.sort((a, b) => rank.get(a.nat)! - rank.get(b.nat)! || a.protocol.localeCompare(b.protocol) || a.external_port - b.external_port);
  return { mappings: out };
}
