// The policy a host runs from the store's keys (fleet.md), without a store:
// keys of every record type, precedence (the file over hosts/<me>/ over
// fleet-wide keys), other hosts' keys ignored, bad values and values whose
// identity disagrees with their key.

import { describe, expect, it } from 'vitest';
import { validatePolicy } from '../src/config/index.js';
import { FleetView, identityOf, placeOf, recordKey } from '../src/fleet/view.js';

const RD = '{12345678-1000-2000-3000-123456780001}';
const route = { routing_domain: RD, vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0', metric: 0 };
const rec = (ca: string, pa: string, mac = '60:00:60:00:01:01') => ({ customer_address: ca, vsid: 6000, mac, provider_address: pa, rule: 'encap', type: 'static' });
const file = () =>
  validatePolicy({
    host: { name: 'host1' },
    provider_addresses: [{ address: '192.168.0.22', prefix_length: 24, interface: 'eth1' }],
    policy_store: { etcd: { endpoints: ['http://127.0.0.1:2379'] } },
  });
const J = JSON.stringify;

describe('keys', () => {
  it('puts every record type at the key fleet.md gives it', () => {
    expect(recordKey('customer_routes', route as never)).toBe('customer_routes/6000/10.0.1.0/24');
    expect(recordKey('lookup_records', rec('10.0.1.101', '192.168.0.22') as never)).toBe('lookup_records/6000/10.0.1.101');
    expect(recordKey('lookup_records', { ...rec('0.0.0.0', '192.168.0.33'), type: 'l2only' } as never)).toBe('lookup_records/6000/l2only/60:00:60:00:01:01');
    expect(recordKey('lookup_records', { ...rec('::', '192.168.0.33'), type: 'gateway_wildcard' } as never)).toBe('lookup_records/6000/gateway_wildcard/::');
    expect(recordKey('vm_adapters', { name: 'contoso1' } as never, 'host1')).toBe('hosts/host1/vm_adapters/contoso1');
    expect(recordKey('provider_routes', { destination_prefix: '192.168.1.0/24' } as never, 'h')).toBe('hosts/h/provider_routes/192.168.1.0/24');
    expect(placeOf('hosts/h/status')).toEqual({ kind: 'status', host: 'h' });
    expect(placeOf('hosts/h/lookup_records/6000/10.0.1.1')).toEqual({ kind: 'record', section: 'lookup_records', host: 'h' });
    expect(placeOf('hosts/h/customer_routes/6000/10.0.1.0/24').kind).toBe('unknown');
    expect(placeOf('provider_addresses/192.168.0.1').kind).toBe('unknown');
  });
});

describe('FleetView', () => {
  it("runs the fleet's records and its own host keys, not another host's", () => {
    const v = new FleetView('host1', file());
    v.set('customer_routes/6000/10.0.1.0/24', J(route));
    v.set('lookup_records/6000/10.0.1.101', J(rec('10.0.1.101', '192.168.0.22')));
    v.set('hosts/host1/vm_adapters/contoso1', J({ name: 'contoso1', mac: '60:00:60:00:01:01', vsid: 6000 }));
    v.set('hosts/host2/vm_adapters/contoso2', J({ name: 'contoso2', mac: '60:00:60:00:01:02', vsid: 6000 }));
    v.set('hosts/host2/provider_addresses/192.168.0.33', J({ address: '192.168.0.33', prefix_length: 24, interface: 'eth1' }));
    const p = validatePolicy(v.policy());
    expect(p.customer_routes).toHaveLength(1);
    expect(p.lookup_records.map((r) => r.customer_address)).toEqual(['10.0.1.101']);
    expect(p.vm_adapters.map((a) => a.name)).toEqual(['contoso1']);
    expect(p.provider_addresses.map((a) => a.address)).toEqual(['192.168.0.22']);
    expect(p.policy_store?.etcd.prefix).toBe('/nvgred');
    expect(v.errors.size).toBe(0);
  });

  it('a host-scoped record replaces the fleet record of its VSID and CA; the file replaces both; deletes fall back', () => {
    const f = validatePolicy({ ...file(), lookup_records: [rec('10.0.1.7', '192.168.0.22', '60:00:60:00:00:07')], customer_routes: [route] });
    const v = new FleetView('host1', f);
    const ca = (who: string) => v.policy().lookup_records.find((r) => r.customer_address === who);
    v.set('lookup_records/6000/10.0.1.1', J(rec('10.0.1.1', '192.168.0.99', '60:00:60:00:00:99')));
    expect(ca('10.0.1.1')?.provider_address).toBe('192.168.0.99');
    const touched = v.set('hosts/host1/lookup_records/6000/10.0.1.1', J(rec('10.0.1.1', '192.168.0.22', '60:00:60:00:00:01')));
    expect(touched).toHaveLength(1);
    expect(ca('10.0.1.1')?.provider_address).toBe('192.168.0.22');
    v.set('hosts/host1/lookup_records/6000/10.0.1.1', undefined);
    expect(ca('10.0.1.1')?.provider_address).toBe('192.168.0.99');
    // The file's record wins over the store's for the same VSID and CA.
    v.set('lookup_records/6000/10.0.1.7', J(rec('10.0.1.7', '192.168.0.99', '60:00:60:00:00:77')));
    expect(ca('10.0.1.7')?.mac).toBe('60:00:60:00:00:07');
    expect(v.origin(identityOf('lookup_records', rec('10.0.1.7', '192.168.0.99') as never))).toBe('file');
    v.set('lookup_records/6000/10.0.1.1', undefined);
    expect(ca('10.0.1.1')).toBeUndefined();
  });

  it('a bad value, or one whose identity disagrees with its key, is an error of that key until it is fixed or deleted', () => {
    const v = new FleetView('host1', file());
    v.set('lookup_records/6000/10.0.1.5', '{not json');
    v.set('lookup_records/6000/10.0.1.6', J(rec('10.0.1.9', '192.168.0.22')));
    v.set('lookup_records/6001/10.0.1.7', J({ ...rec('10.0.1.7', '192.168.0.22'), vsid: 99 }));
    expect([...v.errors.keys()]).toEqual(['lookup_records/6000/10.0.1.5', 'lookup_records/6000/10.0.1.6', 'lookup_records/6001/10.0.1.7']);
    expect(v.errors.get('lookup_records/6000/10.0.1.6')).toMatch(/put it at lookup_records\/6000\/10\.0\.1\.9/);
    expect(v.errors.get('lookup_records/6001/10.0.1.7')).toMatch(/vsid/);
    expect(v.policy().lookup_records).toHaveLength(0);
    v.set('lookup_records/6000/10.0.1.5', undefined);
    v.set('lookup_records/6000/10.0.1.6', J(rec('10.0.1.6', '192.168.0.22')));
    v.set('lookup_records/6001/10.0.1.7', undefined);
    expect(v.errors.size).toBe(0);
    expect(v.policy().lookup_records).toHaveLength(1);
  });

  it('keeps every host status, and a new file replaces the old file records', () => {
    const v = new FleetView('host1', file());
    v.set('hosts/host2/status', J({ revision: 5 }));
    expect(v.statuses.get('host2')).toBe(J({ revision: 5 }));
    const next = validatePolicy({ ...file(), provider_addresses: [{ address: '192.168.0.23', prefix_length: 24, interface: 'eth1' }] });
    expect(v.setFile(next)).toHaveLength(2);
    expect(v.policy().provider_addresses.map((a) => a.address)).toEqual(['192.168.0.23']);
  });
});

describe('policy_store in the config', () => {
  const errs = (doc: object) => {
    try {
      validatePolicy(doc);
      return [];
    } catch (err) {
      return (err as { details: Array<{ path: string; value: unknown; message: string }> }).details;
    }
  };
  it('takes http://host:port and unix:///path endpoints and a prefix; needs host.name', () => {
    const p = validatePolicy({ host: { name: 'h' }, policy_store: { etcd: { endpoints: ['http://10.0.0.5:2379/', 'unix:///run/etcd.sock'], prefix: '/lab' } } });
    expect(p.policy_store).toEqual({ etcd: { endpoints: ['http://10.0.0.5:2379', 'unix:///run/etcd.sock'], prefix: '/lab' } });
    expect(errs({ policy_store: { etcd: { endpoints: ['http://10.0.0.5:2379'] } } }).map((e) => e.path)).toEqual(['host.name']);
  });
  it('names the field and value of every bad one', () => {
    const e = errs({
      host: { name: 'h' },
      policy_store: { etcd: { endpoints: ['https://10.0.0.5:2379', 'http://10.0.0.5', 'unix://rel'], prefix: 'nvgred/', tls: true } },
    });
    expect(e.map((x) => [x.path, x.value])).toEqual([
      ['policy_store.etcd.tls', true],
      ['policy_store.etcd.endpoints[0]', 'https://10.0.0.5:2379'],
      ['policy_store.etcd.endpoints[1]', 'http://10.0.0.5'],
      ['policy_store.etcd.endpoints[2]', 'unix://rel'],
      ['policy_store.etcd.prefix', 'nvgred/'],
    ]);
    expect(e[1]!.message).toMatch(/TLS .* not supported/);
    expect(errs({ host: { name: 'h' }, policy_store: { etcd: { endpoints: [] } } }).map((x) => x.path)).toEqual(['policy_store.etcd.endpoints']);
    expect(errs({ host: { name: 'h' }, policy_store: {} }).map((x) => x.path)).toEqual(['policy_store.etcd']);
  });
});
