// The HNV gateway's configuration (config.md `uplink`, `nat`, `nat_sync`):
// what is accepted, normalized and refused, with the field and value named;
// and its encoding for the packet core (src/model/snapshot.ts ↔ native
// dp/policy.rs, which tests the round trip on its side).

import { describe, expect, it } from 'vitest';
import { NvgreError, type FieldError } from '../src/errors.js';
import { validatePolicy } from '../src/config/index.js';
import { encodePolicy } from '../src/model/snapshot.js';

const CONTOSO = '{12345678-1000-2000-3000-123456780001}';
const FABRIKAM = '{12345678-1000-2000-3000-123456780002}';

/** The spec's gateway host: Contoso and Fabrikam (overlapping CAs), each with a NAT on one external address. */
function gateway(): Record<string, unknown> {
  return {
    provider_addresses: [{ address: '192.168.0.11', prefix_length: 24, interface: 'eth1' }],
    customer_routes: [
      { routing_domain: CONTOSO, vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0' },
      { routing_domain: CONTOSO, vsid: 6001, destination_prefix: '10.0.2.0/24', next_hop: '0.0.0.0' },
      { routing_domain: CONTOSO, vsid: 6001, destination_prefix: '0.0.0.0/0', next_hop: '10.0.2.2' },
      { routing_domain: FABRIKAM, vsid: 7000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0' },
      { routing_domain: FABRIKAM, vsid: 7001, destination_prefix: '10.0.2.0/24', next_hop: '0.0.0.0' },
    ],
    lookup_records: [
      { customer_address: '10.0.1.101', vsid: 6000, mac: '60:00:60:00:01:01', provider_address: '192.168.0.22' },
      { customer_address: '10.0.1.101', vsid: 7000, mac: '70:00:70:00:01:01', provider_address: '192.168.0.22' },
    ],
    uplink: { interface: 'eth2', addresses: ['131.107.10.12/24'], gateway: '131.107.10.1' },
    nat: [
      {
        name: 'Contoso',
        routing_domain: CONTOSO,
        vsid: 6001,
        internal_address: '10.0.2.2',
        mac: '60-01-60-01-03-01',
        external_address: '131.107.10.12',
        static_mappings: [{ protocol: 'tcp', external_port: 443, internal_address: '10.0.1.101', internal_port: 443 }],
      },
      { name: 'Fabrikam', routing_domain: FABRIKAM, vsid: 7001, internal_address: '10.0.2.2', mac: '70:01:70:01:03:01', external_address: '131.107.10.12', port_start: 20000, port_end: 29999 },
    ],
  };
}

function problems(doc: unknown): FieldError[] {
  try {
    validatePolicy(doc);
  } catch (e) {
    expect(e).toBeInstanceOf(NvgreError);
    return (e as NvgreError).details ?? [];
  }
  throw new Error('the document was accepted');
}

function withNat(change: (nat: Record<string, unknown>, doc: Record<string, unknown>) => void): Record<string, unknown> {
  const doc = gateway();
  change((doc.nat as Record<string, unknown>[])[0]!, doc);
  return doc;
}

describe('the gateway configuration', () => {
  it('is accepted and normalized, with the port range defaulted', () => {
    const p = validatePolicy(gateway());
    expect(p.uplink).toEqual({ interface: 'eth2', addresses: ['131.107.10.12/24'], gateway: '131.107.10.1' });
    expect(p.nat![0]).toMatchObject({ mac: '60:01:60:01:03:01', port_start: 1024, port_end: 65535 });
    expect(p.nat![1]!.static_mappings).toEqual([]);
  });

  it('leaves a policy without a gateway as it was', () => {
    const doc = gateway();
    delete doc.uplink;
    delete doc.nat;
    const p = validatePolicy(doc);
    expect('uplink' in p || 'nat' in p).toBe(false);
  });

  it('refuses nat_sync, naming it as not supported', () => {
    const doc = { ...gateway(), nat_sync: { peer: '192.168.0.12', shared_provider_address: '192.168.0.11' } };
    const [e] = problems(doc);
    expect(e!.path).toBe('nat_sync');
    expect(e!.message).toMatch(/not supported/);
  });

  it.each([
    ['a NAT without an uplink', (_n: Record<string, unknown>, d: Record<string, unknown>) => delete d.uplink, 'uplink', /needs its uplink/],
    ['an external address the uplink does not own', (n: Record<string, unknown>) => (n.external_address = '131.107.10.13'), 'nat[0].external_address', /not one of uplink.addresses/],
    ['a routing domain without customer routes', (n: Record<string, unknown>) => (n.routing_domain = '{12345678-1000-2000-3000-123456780009}'), 'nat[0].routing_domain', /no customer routes/],
    ['a VSID of another routing domain', (n: Record<string, unknown>) => (n.vsid = 7001), 'nat[0].vsid', /not a VSID of routing domain/],
    ['an inside address outside its VSID', (n: Record<string, unknown>) => (n.internal_address = '10.0.3.2'), 'nat[0].internal_address', /no on-link customer route of VSID 6001/],
    ['a port range upside down', (n: Record<string, unknown>) => Object.assign(n, { port_start: 3000, port_end: 2000 }), 'nat[0].port_end', /below port_start 3000/],
    ['port 0', (n: Record<string, unknown>) => (n.port_start = 0), 'nat[0].port_start', /out of range/],
    ['a second NAT for one routing domain', (n: Record<string, unknown>, d: Record<string, unknown>) => ((d.nat as Record<string, unknown>[])[1]!.routing_domain = n.routing_domain), 'nat[1].routing_domain', /already has a NAT/],
    ['a name used twice', (_n: Record<string, unknown>, d: Record<string, unknown>) => ((d.nat as Record<string, unknown>[])[1]!.name = 'Contoso'), 'nat[1].name', /already the name of nat\[0\]/],
    ['a MAC a VM record holds', (n: Record<string, unknown>) => (n.mac = '60:00:60:00:01:01'), 'nat[0].mac', /MAC of lookup_records\[0\]/],
    ['an IPv6 external address', (n: Record<string, unknown>) => (n.external_address = '2001:db8::1'), 'nat[0].external_address', /IPv4 only/],
    [
      'a static mapping to an address without a lookup record',
      (n: Record<string, unknown>) => ((n.static_mappings as Record<string, unknown>[])[0]!.internal_address = '10.0.1.55'),
      'nat[0].static_mappings[0].internal_address',
      /no lookup record in routing domain/,
    ],
    ['a static mapping of another protocol', (n: Record<string, unknown>) => ((n.static_mappings as Record<string, unknown>[])[0]!.protocol = 'icmp'), 'nat[0].static_mappings[0].protocol', /not one of tcp, udp/],
    ['an unknown key', (n: Record<string, unknown>) => (n.port_begin = 1), 'nat[0].port_begin', /unknown key/],
    ['an uplink gateway off its subnets', (_n: Record<string, unknown>, d: Record<string, unknown>) => ((d.uplink as Record<string, unknown>).gateway = '131.107.11.1'), 'uplink.gateway', /subnet of none/],
    ['an uplink address without a length', (_n: Record<string, unknown>, d: Record<string, unknown>) => ((d.uplink as Record<string, unknown>).addresses = ['131.107.10.12']), 'uplink.addresses[0]', /address\/prefix_length/],
  ])('refuses %s, naming the field and value', (_what, change, path, why) => {
    const errs = problems(withNat(change));
    const e = errs.find((x) => x.path === path);
    expect(e, JSON.stringify(errs)).toBeDefined();
    expect(e!.message).toMatch(why);
  });

  it('is encoded after the VM ports: the uplink, then each NAT, then the static mappings', () => {
    const p = validatePolicy(gateway());
    const buf = encodePolicy(p, new Map(), () => ({ mtu: 1500, ifindex: 0 }), () => ({ mtu: 1500, ifindex: 7, mac: '02:00:00:00:00:07' }));
    expect(buf.readUInt32LE(4)).toBe(5); // the encoding's version
    const gw = 32 + 28 + 5 * 48 + 2 * 48;
    expect(buf.readUInt32LE(gw)).toBe(7); // uplink ifindex
    expect(buf[gw + 6]).toBe(1); // present
    expect([...buf.subarray(gw + 16, gw + 20)]).toEqual([131, 107, 10, 1]);
    expect([buf.readUInt32LE(gw + 20), buf.readUInt32LE(gw + 24), buf.readUInt32LE(gw + 28)]).toEqual([1, 2, 1]);
    const nat1 = gw + 32 + 8 + 32;
    expect([buf.readUInt16LE(nat1 + 22), buf.readUInt16LE(nat1 + 24)]).toEqual([20000, 29999]);
    const st = nat1 + 32;
    // tcp, external port 443, the inside address's VSID resolved from its record
    expect([buf[st], buf.readUInt16LE(st + 2), buf.readUInt32LE(st + 4), buf.readUInt16LE(st + 12)]).toEqual([0, 443, 6000, 443]);
    expect(buf.length).toBe(st + 16);
  });
});
