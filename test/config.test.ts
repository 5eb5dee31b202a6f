import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it, expect } from 'vitest';
import { ERROR_CODES, NvgreError, statusOf, type FieldError } from '../src/errors.js';
import {
  checkPolicyInvariants,
  defaultGatewayOf,
  loadConfigFile,
  JSON_ONLY_ABOVE_CHARS,
  loadConfigText,
  parseConfigText,
  parseIp,
  parseMac,
  parsePath,
  parsePrefix,
  validateLearning,
  validateLookupRecord,
  validatePolicy,
  validateProviderAddress,
  validateVmAdapter,
} from '../src/config/index.js';
import {
  DEFAULT_API_SOCKET,
  DEFAULT_LEARNING_MAX_PER_VSID,
  DEFAULT_LEARNING_TTL_SECONDS,
  DEFAULT_METRICS_LISTEN,
  VSID_MAX,
  VSID_MIN,
  type Policy,
} from '../src/model/policy.js';

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

const RD = '{12345678-1000-2000-3000-123456780001}';
const RD2 = '{12345678-1000-2000-3000-123456780002}';

/** A small valid document (plain objects, as from YAML or an API body). */
function base(): Record<string, any> {
  return {
    provider_addresses: [{ address: '192.168.0.22', prefix_length: 24, interface: 'eth1' }],
    customer_routes: [
      { routing_domain: RD, vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0' },
      { routing_domain: RD, vsid: 6001, destination_prefix: '10.0.2.0/24', next_hop: '0.0.0.0' },
    ],
    lookup_records: [
      { customer_address: '10.0.1.101', vsid: 6000, mac: '60:00:60:00:01:01', provider_address: '192.168.0.22' },
      { customer_address: '10.0.1.103', vsid: 6000, mac: '60:00:60:00:02:03', provider_address: '192.168.0.33' },
    ],
    vm_adapters: [{ name: 'contoso1', mac: '60:00:60:00:01:01', vsid: 6000 }],
  };
}

function thrown(fn: () => unknown): NvgreError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(NvgreError);
    return e as NvgreError;
  }
  throw new Error('expected an NvgreError, nothing was thrown');
}

async function rejected(p: Promise<unknown>): Promise<NvgreError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(NvgreError);
    return e as NvgreError;
  }
  throw new Error('expected an NvgreError, the promise resolved');
}

function errorsOf(doc: unknown): FieldError[] {
  const e = thrown(() => validatePolicy(doc));
  expect(e.code).toBe('NVGRE_ERR_CONFIG');
  expect(e.status).toBe(400);
  expect(e.details?.length).toBeGreaterThan(0);
  return e.details!;
}

/** The document has exactly one problem: `code` at `path`, its message naming the path and `shown`. */
function expectOnly(doc: unknown, code: string, path: string, shown: string | number): FieldError {
  const errs = errorsOf(doc);
  expect(errs.map((e) => `${e.code} ${e.message}`)).toHaveLength(1);
  const [e] = errs;
  expect(e!.code).toBe(code);
  expect(e!.path).toBe(path);
  expect(e!.message.startsWith(`${path === '' ? '(root)' : path}: `)).toBe(true);
  expect(e!.message).toContain(String(shown));
  return e!;
}

const HOST1: Policy = {
  host: { name: 'host1' },
  provider_addresses: [{ address: '192.168.0.22', prefix_length: 24, interface: 'eth1', vlan_id: 0 }],
  provider_routes: [{ destination_prefix: '192.168.1.0/24', next_hop: '192.168.0.1', interface: 'eth1', metric: 0 }],
  customer_routes: [
    { routing_domain: RD, vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0', metric: 0 },
    { routing_domain: RD, vsid: 6001, destination_prefix: '10.0.2.0/24', next_hop: '0.0.0.0', metric: 0 },
    { routing_domain: RD, vsid: 6001, destination_prefix: '0.0.0.0/0', next_hop: '10.0.2.2', metric: 10 },
  ],
  lookup_records: [
    { customer_address: '10.0.1.101', vsid: 6000, mac: '60:00:60:00:01:01', provider_address: '192.168.0.22', rule: 'encap', type: 'static', vm_name: 'Contoso1' },
    { customer_address: '10.0.1.102', vsid: 6000, mac: '60:00:60:00:01:02', provider_address: '192.168.0.22', rule: 'encap', type: 'static', vm_name: 'Contoso2' },
    { customer_address: '10.0.1.103', vsid: 6000, mac: '60:00:60:00:02:03', provider_address: '192.168.0.33', rule: 'encap', type: 'static', vm_name: 'Contoso3' },
    { customer_address: '10.0.2.2', vsid: 6001, mac: '60:01:60:01:03:01', provider_address: '192.168.0.11', rule: 'encap', type: 'static', vm_name: 'MT-GW' },
    { customer_address: '10.0.1.1', vsid: 6000, mac: '60:00:60:00:01:00', provider_address: '192.168.0.22', rule: 'encap', type: 'static' },
  ],
  vm_adapters: [
    { name: 'contoso1', vm_name: 'Contoso1', mac: '60:00:60:00:01:01', vsid: 6000, netns: 'contoso1' },
    { name: 'contoso2', vm_name: 'Contoso2', mac: '60:00:60:00:01:02', vsid: 6000, netns: 'contoso2', mtu: 1458 },
  ],
  encapsulation: { flow_id: 'hash' },
  learning: { max_per_vsid: 1024, ttl_seconds: 300 },
  state_dir: '/var/lib/nvgred',
  api: { socket: '/run/nvgred/nvgred.sock' },
  metrics: { listen: '127.0.0.1:9470', per_vsid: true, per_vsid_max: 256 },
};

describe('reference topology, Host 1', () => {
  it('validates and normalizes', async () => {
    const policy = await loadConfigFile(fixture('host1.yaml'));
    expect(policy).toEqual(HOST1);
    // absent optionals are absent, not undefined-valued
    expect('mtu' in policy.vm_adapters[0]!).toBe(false);
    expect('mac' in policy.provider_addresses[0]!).toBe(false);
    expect('vm_name' in policy.lookup_records[4]!).toBe(false);
    // the same object validates again unchanged (API round trip)
    expect(validatePolicy(JSON.parse(JSON.stringify(policy)))).toEqual(HOST1);
    expect(checkPolicyInvariants(policy)).toEqual([]);
  });

  it("rejects the spec table's PA MAC 33:44:55:66:77:88 (multicast)", async () => {
    const e = await rejected(loadConfigFile(fixture('pa-multicast-mac.yaml')));
    expect(e).toBeInstanceOf(NvgreError);
    expect(e.code).toBe('NVGRE_ERR_CONFIG');
    expect(e.details).toHaveLength(1);
    const d = e.details![0]!;
    expect(d).toMatchObject({ code: 'NVGRE_ERR_MAC', path: 'provider_addresses[0].mac', value: '33:44:55:66:77:88', line: 10, column: 5 });
    expect(d.message).toContain('"33:44:55:66:77:88"');
    expect(d.message).toContain('multicast');
    expect(e.message).toContain(fixture('pa-multicast-mac.yaml'));
    expect(e.message).toContain('config has 1 error:');
  });
});

describe('empty and minimal documents', () => {
  const EMPTY: Policy = {
    host: {},
    provider_addresses: [],
    provider_routes: [],
    customer_routes: [],
    lookup_records: [],
    vm_adapters: [],
    encapsulation: { flow_id: 'hash' },
    learning: { max_per_vsid: DEFAULT_LEARNING_MAX_PER_VSID, ttl_seconds: DEFAULT_LEARNING_TTL_SECONDS },
    api: { socket: DEFAULT_API_SOCKET },
    metrics: { listen: DEFAULT_METRICS_LISTEN, per_vsid: true, per_vsid_max: 256 },
  };

  it('an empty file is a valid empty policy with defaults', () => {
    expect(loadConfigText('')).toEqual(EMPTY);
    expect(loadConfigText('# only a comment\n\n')).toEqual(EMPTY);
    expect(loadConfigText('---\n')).toEqual(EMPTY);
    expect(validatePolicy(undefined)).toEqual(EMPTY);
    expect(validatePolicy({})).toEqual(EMPTY);
  });

  it('null sections and optionals mean "default"', () => {
    expect(loadConfigText('host:\nlookup_records:\napi:\nmetrics:\n  listen:\n')).toEqual(EMPTY);
  });

  it('the root must be a mapping', () => {
    expectOnly([1, 2], 'NVGRE_ERR_TYPE', '', '[1, 2]');
    expectOnly('hello', 'NVGRE_ERR_TYPE', '', '"hello"');
    const e = thrown(() => loadConfigText('- a\n- b\n'));
    expect(e.details![0]).toMatchObject({ code: 'NVGRE_ERR_TYPE', path: '' });
    expect(e.details![0]!.message).toContain('(root)');
  });

  it('defaults are filled in', () => {
    const p = validatePolicy(base());
    expect(p.lookup_records[0]).toEqual({
      customer_address: '10.0.1.101',
      vsid: 6000,
      mac: '60:00:60:00:01:01',
      provider_address: '192.168.0.22',
      rule: 'encap',
      type: 'static',
    });
    expect(p.provider_addresses[0]!.vlan_id).toBe(0);
    expect(p.customer_routes[0]!.metric).toBe(0);
    expect(p.encapsulation.flow_id).toBe('hash');
    expect(p.vm_adapters[0]!.mtu).toBeUndefined();
    expect('state_dir' in p).toBe(false);
  });
});

describe('VSIDs', () => {
  it.each([0, 4095, 16777215, -1, 2 ** 24])('rejects %d', (vsid) => {
    const doc = base();
    doc.lookup_records[1].vsid = vsid;
    const e = expectOnly(doc, 'NVGRE_ERR_VSID_RANGE', 'lookup_records[1].vsid', vsid);
    expect(e.value).toBe(vsid);
    expect(e.message).toBe(`lookup_records[1].vsid: ${vsid} is out of range (a VSID is an integer in 4096..16777214)`);
  });

  it('accepts the bounds', () => {
    const doc = base();
    doc.customer_routes.push({ routing_domain: RD, vsid: VSID_MIN, destination_prefix: '10.9.0.0/24', next_hop: '0.0.0.0' });
    doc.customer_routes.push({ routing_domain: RD, vsid: VSID_MAX, destination_prefix: '10.9.1.0/24', next_hop: '0.0.0.0' });
    doc.vm_adapters.push({ name: 'lo-vsid', mac: '02:00:00:00:00:01', vsid: VSID_MIN });
    doc.vm_adapters.push({ name: 'hi-vsid', mac: '02:00:00:00:00:02', vsid: VSID_MAX });
    expect(validatePolicy(doc).vm_adapters.map((a) => a.vsid)).toEqual([6000, 4096, 16777214]);
  });

  it.each([
    ['"6000"', '6000'],
    ['6000.5', 6000.5],
    ['true', true],
  ])('rejects a non-integer vsid %s', (shown, vsid) => {
    const doc = base();
    doc.vm_adapters[0].vsid = vsid;
    expectOnly(doc, 'NVGRE_ERR_TYPE', 'vm_adapters[0].vsid', shown);
  });

  it('rejects a VSID in two routing domains', () => {
    const doc = base();
    doc.customer_routes.push({ routing_domain: RD2, vsid: 6001, destination_prefix: '10.0.3.0/24', next_hop: '0.0.0.0' });
    const e = expectOnly(doc, 'NVGRE_ERR_VSID_DOMAIN', 'customer_routes[2].vsid', 6001);
    expect(e.message).toContain(RD);
    expect(e.message).toContain(RD2);
    expect(e.message).toContain('customer_routes[1]');
  });

  it('rejects records and adapters whose VSID has no customer route', () => {
    const doc = base();
    doc.lookup_records[1].vsid = 7000;
    doc.vm_adapters[0].vsid = 7001;
    const errs = errorsOf(doc);
    expect(errs.map((e) => [e.code, e.path])).toEqual([
      ['NVGRE_ERR_VSID_UNBOUND', 'lookup_records[1].vsid'],
      ['NVGRE_ERR_VSID_UNBOUND', 'vm_adapters[0].vsid'],
    ]);
    expect(errs[0]!.message).toContain('7000');
    expect(errs[1]!.message).toContain('7001');
  });

  it('still finds a VSID in two routing domains when the second route has another error', () => {
    const doc = base();
    doc.customer_routes.push({ routing_domain: RD2, vsid: 6001, destination_prefix: '10.0.3.0/24', next_hop: '::' });
    expect(errorsOf(doc).map((e) => [e.code, e.path])).toEqual([
      ['NVGRE_ERR_FAMILY', 'customer_routes[2].next_hop'],
      ['NVGRE_ERR_VSID_DOMAIN', 'customer_routes[2].vsid'],
    ]);
  });

  it('does not cascade VSID_UNBOUND from a customer route rejected for another field', () => {
    const doc = base();
    doc.customer_routes[0].destination_prefix = '10.0.1.1/24';
    expectOnly(doc, 'NVGRE_ERR_PREFIX_HOST_BITS', 'customer_routes[0].destination_prefix', '10.0.1.1/24');
  });
});

describe('addresses', () => {
  it.each([
    '010.0.1.5',
    '10.1',
    '10.0.1',
    '10.0.1.256',
    '10.0.1.5.6',
    ' 10.0.1.5',
    '10.0.1.5 ',
    '10.0.1.5/32',
    '::ffff:10.0.1.5',
    '::ffff:a00:105',
    'fe80::1%eth0',
    '1:2:3:4:5:6:7:8:9',
    '1::2::3',
    'gggg::1',
    '2001:db8::12345',
    '',
    'localhost',
  ])('rejects customer_address %j', (ca) => {
    const doc = base();
    doc.lookup_records[1].customer_address = ca;
    expectOnly(doc, 'NVGRE_ERR_ADDRESS', 'lookup_records[1].customer_address', JSON.stringify(ca));
  });

  it.each(['0.0.0.0', '224.0.0.5', '255.255.255.255', '127.0.0.1', '::', 'ff02::1', '::1'])(
    'rejects non-unicast CA %s in a static record',
    (ca) => {
      const doc = base();
      doc.lookup_records[1].customer_address = ca;
      expectOnly(doc, 'NVGRE_ERR_ADDRESS', 'lookup_records[1].customer_address', ca);
    },
  );

  it('rejects a non-unicast PA', () => {
    const doc = base();
    doc.lookup_records[1].provider_address = '239.1.1.1';
    expectOnly(doc, 'NVGRE_ERR_ADDRESS', 'lookup_records[1].provider_address', '239.1.1.1');
  });

  it('normalizes IPv6 to RFC 5952 text', () => {
    const cases: [string, string][] = [
      ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
      ['2001:0db8:0000:0001:0000:0000:0000:0001', '2001:db8:0:1::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['2001:db8:1:1:1:1:0:1', '2001:db8:1:1:1:1:0:1'],
      ['fd00::', 'fd00::'],
      ['64:ff9b::192.0.2.1', '64:ff9b::c000:201'],
    ];
    for (const [input, want] of cases) {
      const r = parseIp(input);
      expect(r.ok && r.value.text, input).toBe(want);
    }
    const doc = base();
    doc.customer_routes.push({ routing_domain: RD, vsid: 6000, destination_prefix: '2001:DB8:0:1::/64', next_hop: '::' });
    doc.lookup_records.push({ customer_address: '2001:db8:0:1:0:0:0:65', vsid: 6000, mac: '60-00-60-00-01-01', provider_address: '192.168.0.22' });
    const p = validatePolicy(doc);
    expect(p.customer_routes[2]!.destination_prefix).toBe('2001:db8:0:1::/64');
    expect(p.lookup_records[2]!.customer_address).toBe('2001:db8:0:1::65');
  });
});

describe('prefixes', () => {
  it.each([
    ['10.0.1.1/24', 'NVGRE_ERR_PREFIX_HOST_BITS', '10.0.1.0/24'],
    ['2001:db8::1/64', 'NVGRE_ERR_PREFIX_HOST_BITS', '2001:db8::/64'],
    ['0.0.0.1/0', 'NVGRE_ERR_PREFIX_HOST_BITS', '0.0.0.0/0'],
    ['10.0.1.0/33', 'NVGRE_ERR_PREFIX', undefined],
    ['2001:db8::/129', 'NVGRE_ERR_PREFIX', undefined],
    ['10.0.1.0', 'NVGRE_ERR_PREFIX', undefined],
    ['10.0.1.0/024', 'NVGRE_ERR_PREFIX', undefined],
    ['10.0.1.0/', 'NVGRE_ERR_PREFIX', undefined],
    ['10.0.1/24', 'NVGRE_ERR_PREFIX', undefined],
  ])('rejects destination_prefix %s', (prefix, code, hint) => {
    const doc = base();
    doc.customer_routes[1].destination_prefix = prefix;
    const e = expectOnly(doc, code, 'customer_routes[1].destination_prefix', JSON.stringify(prefix));
    if (hint) expect(e.message).toContain(`did you mean ${hint}?`);
  });

  it('parsePrefix canonicalizes', () => {
    const r = parsePrefix('2001:0DB8:0000::/48');
    expect(r.ok && r.value.text).toBe('2001:db8::/48');
    expect(defaultGatewayOf('10.0.1.0/24')).toBe('10.0.1.1');
    expect(defaultGatewayOf('10.0.1.0/31')).toBeUndefined();
    expect(defaultGatewayOf('2001:db8::/64')).toBe('2001:db8::1');
  });

  it('requires next_hop in the family of the prefix', () => {
    const doc = base();
    doc.customer_routes[1].next_hop = '::';
    const e = expectOnly(doc, 'NVGRE_ERR_FAMILY', 'customer_routes[1].next_hop', '::');
    expect(e.message).toContain('10.0.2.0/24');
    const doc2 = base();
    doc2.provider_routes = [{ destination_prefix: '2001:db8:99::/48', next_hop: '192.168.0.1', interface: 'eth1' }];
    expectOnly(doc2, 'NVGRE_ERR_FAMILY', 'provider_routes[0].next_hop', '192.168.0.1');
  });

  it('rejects a multicast next hop', () => {
    const doc = base();
    doc.customer_routes.push({ routing_domain: RD, vsid: 6001, destination_prefix: '0.0.0.0/0', next_hop: '224.0.0.1' });
    expectOnly(doc, 'NVGRE_ERR_ADDRESS', 'customer_routes[2].next_hop', '224.0.0.1');
  });

  it('rejects duplicate routes and one on-link subnet in two VSIDs of a domain', () => {
    const doc = base();
    doc.customer_routes.push({ ...doc.customer_routes[0], metric: 5 });
    doc.customer_routes.push({ routing_domain: RD, vsid: 6002, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0' });
    doc.customer_routes.push({ routing_domain: RD2, vsid: 6003, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0' });
    const errs = errorsOf(doc);
    expect(errs.map((e) => [e.code, e.path])).toEqual([
      ['NVGRE_ERR_DUPLICATE', 'customer_routes[2].destination_prefix'],
      ['NVGRE_ERR_DUPLICATE', 'customer_routes[3].destination_prefix'],
    ]);
  });
});

describe('MACs', () => {
  it.each([
    ['01:00:5e:00:00:01', 'multicast'],
    ['33:33:00:00:00:01', 'multicast'],
    ['ff:ff:ff:ff:ff:ff', 'broadcast'],
    ['00:00:00:00:00:00', 'all-zero'],
    ['60:00:60:00:01', 'not a valid MAC'],
    ['60:00:60:00:01:01:01', 'not a valid MAC'],
    ['60:00:60:00:01:0g', 'not a valid MAC'],
    ['60:00-60:00:01:01', 'not a valid MAC'],
    ['6000.6000.0101', 'not a valid MAC'],
    ['60000060000101', 'not a valid MAC'],
    ['6:0:60:0:1:1', 'not a valid MAC'],
  ])('rejects %s (%s)', (mac, why) => {
    const doc = base();
    doc.vm_adapters[0].mac = mac;
    doc.lookup_records[0].mac = '60:00:60:00:01:09';
    const e = expectOnly(doc, 'NVGRE_ERR_MAC', 'vm_adapters[0].mac', JSON.stringify(mac));
    expect(e.message).toContain(why);
  });

  it('normalizes the three accepted spellings, any case', () => {
    for (const m of ['60:00:60:00:01:0A', '60-00-60-00-01-0a', '60006000010A', '60006000010a']) {
      const r = parseMac(m);
      expect(r.ok && r.value).toBe('60:00:60:00:01:0a');
    }
  });

  it('explains an unquoted numeric MAC', () => {
    const e = thrown(() =>
      loadConfigText(`customer_routes:
  - {routing_domain: "${RD}", vsid: 6000, destination_prefix: 10.0.1.0/24, next_hop: 0.0.0.0}
vm_adapters:
  - name: tap0
    mac: 600060000101
    vsid: 6000
`),
    );
    expect(e.details).toHaveLength(1);
    expect(e.details![0]).toMatchObject({ code: 'NVGRE_ERR_TYPE', path: 'vm_adapters[0].mac', value: 600060000101, line: 5, column: 5 });
    expect(e.details![0]!.message).toContain('quote');
  });

  it('rejects one MAC in two VSIDs of a routing domain', () => {
    const doc = base();
    doc.lookup_records.push({ customer_address: '10.0.2.5', vsid: 6001, mac: '60:00:60:00:02:03', provider_address: '192.168.0.33' });
    const e = expectOnly(doc, 'NVGRE_ERR_DUPLICATE_MAC', 'lookup_records[2].mac', '60:00:60:00:02:03');
    expect(e.message).toContain('VSID 6000');
    expect(e.message).toContain('lookup_records[1]');
  });

  it('rejects one MAC at two PAs', () => {
    const doc = base();
    doc.lookup_records.push({ customer_address: '10.0.1.104', vsid: 6000, mac: '60:00:60:00:02:03', provider_address: '192.168.0.44' });
    const e = expectOnly(doc, 'NVGRE_ERR_DUPLICATE_MAC', 'lookup_records[2].mac', '60:00:60:00:02:03');
    expect(e.message).toContain('192.168.0.33');
  });

  it('accepts one MAC for a VM with an IPv4 and an IPv6 CA, and the same MAC in another routing domain', () => {
    const doc = base();
    doc.customer_routes.push({ routing_domain: RD, vsid: 6000, destination_prefix: 'fd00:1::/64', next_hop: '::' });
    doc.customer_routes.push({ routing_domain: RD2, vsid: 7000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0' });
    doc.lookup_records.push({ customer_address: 'fd00:1::103', vsid: 6000, mac: '600060000203', provider_address: '192.168.0.33' });
    doc.lookup_records.push({ customer_address: '10.0.1.103', vsid: 7000, mac: '600060000203', provider_address: '192.168.0.55' });
    expect(validatePolicy(doc).lookup_records).toHaveLength(4);
  });

  it('rejects two adapters with one MAC in a routing domain, and an adapter disagreeing with a record', () => {
    const doc = base();
    doc.vm_adapters.push({ name: 'contoso1b', mac: '60:00:60:00:01:01', vsid: 6000 });
    doc.vm_adapters.push({ name: 'gw-user', mac: '60:00:60:00:02:03', vsid: 6001 });
    const errs = errorsOf(doc);
    expect(errs.map((e) => [e.code, e.path])).toEqual([
      ['NVGRE_ERR_DUPLICATE_MAC', 'vm_adapters[1].mac'],
      ['NVGRE_ERR_DUPLICATE_MAC', 'vm_adapters[2].mac'],
    ]);
    expect(errs[1]!.message).toContain('VSID 6000');
  });
});

describe('uniqueness and record types', () => {
  it('rejects a duplicate (vsid, customer_address)', () => {
    const doc = base();
    doc.lookup_records.push({ customer_address: '10.0.1.101', vsid: 6000, mac: '60:00:60:00:01:07', provider_address: '192.168.0.22' });
    const e = expectOnly(doc, 'NVGRE_ERR_DUPLICATE_CA', 'lookup_records[2].customer_address', '10.0.1.101');
    expect(e.message).toContain('lookup_records[0]');
  });

  it('allows the same CA in another VSID of another routing domain', () => {
    const doc = base();
    doc.customer_routes.push({ routing_domain: RD2, vsid: 7000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0' });
    doc.lookup_records.push({ customer_address: '10.0.1.101', vsid: 7000, mac: '60:00:70:00:01:01', provider_address: '192.168.0.22' });
    expect(validatePolicy(doc).lookup_records).toHaveLength(3);
  });

  it('l2only: CA 0.0.0.0 or ::, unique per (vsid, mac)', () => {
    const doc = base();
    doc.lookup_records.push({ customer_address: '0.0.0.0', vsid: 6000, mac: '60:00:60:00:02:03', provider_address: '192.168.0.33', type: 'l2only' });
    expect(validatePolicy(doc).lookup_records[2]!.type).toBe('l2only');
    doc.lookup_records.push({ customer_address: '::', vsid: 6000, mac: '60:00:60:00:02:03', provider_address: '192.168.0.33', type: 'l2only' });
    expectOnly(doc, 'NVGRE_ERR_DUPLICATE', 'lookup_records[3].mac', '60:00:60:00:02:03');
    const doc2 = base();
    doc2.lookup_records[1].type = 'l2only';
    expectOnly(doc2, 'NVGRE_ERR_ADDRESS', 'lookup_records[1].customer_address', '10.0.1.103');
  });

  it('gateway_wildcard: CA unspecified, at most one per (vsid, family), zero MAC allowed', () => {
    const doc = base();
    doc.lookup_records.push({ customer_address: '0.0.0.0', vsid: 6001, mac: '000000000000', provider_address: '192.168.0.11', type: 'gateway_wildcard' });
    doc.lookup_records.push({ customer_address: '::', vsid: 6001, mac: '00:00:00:00:00:00', provider_address: '192.168.0.11', type: 'gateway_wildcard' });
    expect(validatePolicy(doc).lookup_records.slice(2).map((r) => r.mac)).toEqual(['00:00:00:00:00:00', '00:00:00:00:00:00']);
    doc.lookup_records.push({ customer_address: '0.0.0.0', vsid: 6001, mac: '60:01:60:01:03:01', provider_address: '192.168.0.12', type: 'gateway_wildcard' });
    expectOnly(doc, 'NVGRE_ERR_DUPLICATE', 'lookup_records[4].customer_address', '0.0.0.0');
  });

  it('rejects bad rule and type values', () => {
    const doc = base();
    doc.lookup_records[0].rule = 'TranslationMethodEncap';
    doc.lookup_records[1].type = 'Static';
    const errs = errorsOf(doc);
    expect(errs.map((e) => [e.code, e.path])).toEqual([
      ['NVGRE_ERR_VALUE', 'lookup_records[0].rule'],
      ['NVGRE_ERR_VALUE', 'lookup_records[1].type'],
    ]);
    expect(errs[0]!.message).toContain('did you mean "encap"?');
    expect(errs[1]!.message).toContain('"Static"');
  });

  it("the .1 record must name a local PA", () => {
    const doc = base();
    doc.lookup_records.push({ customer_address: '10.0.1.1', vsid: 6000, mac: '60:00:60:00:02:00', provider_address: '192.168.0.33' });
    const e = expectOnly(doc, 'NVGRE_ERR_GATEWAY_PA', 'lookup_records[2].provider_address', '192.168.0.33');
    expect(e.message).toContain('192.168.0.22');
  });

  it('the gateway MAC is not a VM MAC (IPv4 and IPv6 gateways may share it)', () => {
    const doc = base();
    doc.customer_routes.push({ routing_domain: RD, vsid: 6000, destination_prefix: 'fd00:1::/64', next_hop: '::' });
    doc.lookup_records.push({ customer_address: '10.0.1.1', vsid: 6000, mac: '60:00:60:00:01:00', provider_address: '192.168.0.22' });
    doc.lookup_records.push({ customer_address: 'fd00:1::1', vsid: 6000, mac: '60:00:60:00:01:00', provider_address: '192.168.0.22' });
    expect(validatePolicy(doc).lookup_records).toHaveLength(4);
    doc.lookup_records.push({ customer_address: '10.0.1.77', vsid: 6000, mac: '60:00:60:00:01:00', provider_address: '192.168.0.22' });
    expectOnly(doc, 'NVGRE_ERR_DUPLICATE_MAC', 'lookup_records[4].mac', '60:00:60:00:01:00');
    const doc2 = base();
    doc2.lookup_records.push({ customer_address: '10.0.1.1', vsid: 6000, mac: '60:00:60:00:01:01', provider_address: '192.168.0.22' });
    const e = expectOnly(doc2, 'NVGRE_ERR_DUPLICATE_MAC', 'lookup_records[2].mac', '60:00:60:00:01:01');
    expect(e.message).toContain('needs its own MAC');
  });

  it('an adapter cannot use the gateway MAC', () => {
    const doc = base();
    doc.lookup_records.push({ customer_address: '10.0.1.1', vsid: 6000, mac: '60:00:60:00:01:00', provider_address: '192.168.0.22' });
    doc.vm_adapters.push({ name: 'evil', mac: '60:00:60:00:01:00', vsid: 6000 });
    expectOnly(doc, 'NVGRE_ERR_DUPLICATE_MAC', 'vm_adapters[1].mac', '60:00:60:00:01:00');
  });

  it('rejects duplicate PAs, adapter names and provider routes', () => {
    const doc = base();
    doc.provider_addresses.push({ address: '192.168.0.22', prefix_length: 24, interface: 'eth2' });
    doc.provider_routes = [
      { destination_prefix: '192.168.1.0/24', next_hop: '192.168.0.1', interface: 'eth1' },
      { destination_prefix: '192.168.1.0/24', next_hop: '192.168.0.1', interface: 'eth1', metric: 7 },
    ];
    doc.vm_adapters.push({ name: 'contoso1', mac: '60:00:60:00:01:05', vsid: 6000 });
    const errs = errorsOf(doc);
    expect(errs.map((e) => [e.code, e.path])).toEqual([
      ['NVGRE_ERR_DUPLICATE', 'provider_addresses[1].address'],
      ['NVGRE_ERR_DUPLICATE', 'provider_routes[1].destination_prefix'],
      ['NVGRE_ERR_DUPLICATE', 'vm_adapters[1].name'],
    ]);
  });
});

describe('routing domains', () => {
  it('normalizes with or without braces, any case', () => {
    const doc = base();
    doc.customer_routes[0].routing_domain = '12345678-1000-2000-3000-123456780001';
    doc.customer_routes[1].routing_domain = '{12345678-1000-2000-3000-12345678000A}'.toUpperCase();
    const p = validatePolicy(doc);
    expect(p.customer_routes[0]!.routing_domain).toBe(RD);
    expect(p.customer_routes[1]!.routing_domain).toBe('{12345678-1000-2000-3000-12345678000a}');
  });

  it.each(['{12345678-1000-2000-3000-123456780001', '12345678-1000-2000-3000-12345678000', 'contoso', '{12345678100020003000123456780001}'])(
    'rejects %s',
    (rd) => {
      const doc = base();
      doc.customer_routes[1].routing_domain = rd;
      expectOnly(doc, 'NVGRE_ERR_ROUTING_DOMAIN', 'customer_routes[1].routing_domain', rd);
    },
  );

  it('explains an unquoted {GUID} (a YAML flow mapping)', () => {
    const e = thrown(() =>
      loadConfigText('customer_routes:\n  - routing_domain: {12345678-1000-2000-3000-123456780001}\n    vsid: 6000\n    destination_prefix: 10.0.1.0/24\n    next_hop: 0.0.0.0\n'),
    );
    expect(e.details).toHaveLength(1);
    expect(e.details![0]).toMatchObject({ code: 'NVGRE_ERR_TYPE', path: 'customer_routes[0].routing_domain', line: 2 });
    expect(e.details![0]!.message).toContain('quote');
  });
});

describe('keys and types', () => {
  it('rejects unknown keys at the top level', () => {
    const doc = base();
    doc.lookup_record = [];
    const e = expectOnly(doc, 'NVGRE_ERR_UNKNOWN_KEY', 'lookup_record', 'lookup_record');
    expect(e.message).toContain('did you mean "lookup_records"?');
  });

  it('rejects unknown keys in records and sections', () => {
    const doc = base();
    doc.lookup_records[1].VirtualSubnetID = 6000;
    doc.vm_adapters[0].colour = 'red';
    doc.api = { socket: '/run/x.sock', port: 80 };
    doc.host = { name: 'h', nmae: 'h' };
    const errs = errorsOf(doc);
    expect(errs.map((e) => [e.code, e.path])).toEqual([
      ['NVGRE_ERR_UNKNOWN_KEY', 'host.nmae'],
      ['NVGRE_ERR_UNKNOWN_KEY', 'lookup_records[1].VirtualSubnetID'],
      ['NVGRE_ERR_UNKNOWN_KEY', 'vm_adapters[0].colour'],
      ['NVGRE_ERR_UNKNOWN_KEY', 'api.port'],
    ]);
    expect(errs[1]!.message).toContain('did you mean "vsid"?');
    expect(errs[2]!.message).toContain('"colour"');
  });

  it('quotes odd keys in paths', () => {
    const doc = base();
    doc.lookup_records[0]['my key'] = 1;
    const e = expectOnly(doc, 'NVGRE_ERR_UNKNOWN_KEY', 'lookup_records[0]["my key"]', 'my key');
    expect(parsePath(e.path)).toEqual(['lookup_records', 0, 'my key']);
  });

  it('reports missing and null required fields', () => {
    const doc = base();
    delete doc.lookup_records[1].mac;
    doc.lookup_records[0].provider_address = null;
    const errs = errorsOf(doc);
    expect(errs.map((e) => [e.code, e.path, e.value])).toEqual([
      ['NVGRE_ERR_REQUIRED', 'lookup_records[0].provider_address', null],
      ['NVGRE_ERR_REQUIRED', 'lookup_records[1].mac', undefined],
    ]);
    expect(errs[1]!.message).toBe('lookup_records[1].mac: is missing; mac (the VM\'s MAC) is required');
  });

  it.each([
    ['lookup_records', { a: 1 }, 'lookup_records', 'NVGRE_ERR_TYPE', '{a: 1}'],
    ['host', 'host1', 'host', 'NVGRE_ERR_TYPE', '"host1"'],
    ['state_dir', 42, 'state_dir', 'NVGRE_ERR_TYPE', '42'],
    ['state_dir', 'var/lib/nvgred', 'state_dir', 'NVGRE_ERR_VALUE', '"var/lib/nvgred"'],
    ['api', { socket: 'nvgred.sock' }, 'api.socket', 'NVGRE_ERR_VALUE', '"nvgred.sock"'],
    ['api', { socket: `/run/${'x'.repeat(120)}.sock` }, 'api.socket', 'NVGRE_ERR_VALUE', '"/run/xxxx'],
    ['metrics', { listen: 9470 }, 'metrics.listen', 'NVGRE_ERR_TYPE', '9470'],
    ['metrics', { listen: '::1:9470' }, 'metrics.listen', 'NVGRE_ERR_VALUE', '"::1:9470"'],
    ['metrics', { listen: '127.0.0.1:0' }, 'metrics.listen', 'NVGRE_ERR_VALUE', '"127.0.0.1:0"'],
    ['metrics', { listen: '127.0.0.1:65536' }, 'metrics.listen', 'NVGRE_ERR_VALUE', '"127.0.0.1:65536"'],
    ['metrics', { listen: '127.0.0.1' }, 'metrics.listen', 'NVGRE_ERR_VALUE', '"127.0.0.1"'],
    ['metrics', { listen: '10.1:9470' }, 'metrics.listen', 'NVGRE_ERR_VALUE', '"10.1:9470"'],
    ['metrics', { per_vsid: 'yes' }, 'metrics.per_vsid', 'NVGRE_ERR_TYPE', '"yes"'],
    ['metrics', { per_vsid_max: -1 }, 'metrics.per_vsid_max', 'NVGRE_ERR_VALUE', '-1'],
    ['metrics', { per_vsid_max: 70000 }, 'metrics.per_vsid_max', 'NVGRE_ERR_VALUE', '70000'],
    ['encapsulation', { flow_id: 'random' }, 'encapsulation.flow_id', 'NVGRE_ERR_VALUE', '"random"'],
    ['encapsulation', { flow_id: true }, 'encapsulation.flow_id', 'NVGRE_ERR_TYPE', 'true'],
    ['learning', 1024, 'learning', 'NVGRE_ERR_TYPE', '1024'],
    ['learning', { max_per_vsid: -1 }, 'learning.max_per_vsid', 'NVGRE_ERR_VALUE', '-1'],
    ['learning', { max_per_vsid: 1048577 }, 'learning.max_per_vsid', 'NVGRE_ERR_VALUE', '1048577'],
    ['learning', { max_per_vsid: 1.5 }, 'learning.max_per_vsid', 'NVGRE_ERR_TYPE', '1.5'],
    ['learning', { max_per_vsid: '1024' }, 'learning.max_per_vsid', 'NVGRE_ERR_TYPE', '"1024"'],
    ['learning', { ttl_seconds: 0 }, 'learning.ttl_seconds', 'NVGRE_ERR_VALUE', '0'],
    ['learning', { ttl_seconds: 604801 }, 'learning.ttl_seconds', 'NVGRE_ERR_VALUE', '604801'],
    ['learning', { ttl_seconds: true }, 'learning.ttl_seconds', 'NVGRE_ERR_TYPE', 'true'],
    ['host', { name: '' }, 'host.name', 'NVGRE_ERR_VALUE', '""'],
    ['host', { name: 'h'.repeat(65) }, 'host.name', 'NVGRE_ERR_VALUE', '"hhhh'],
    ['host', { name: 7 }, 'host.name', 'NVGRE_ERR_TYPE', '7'],
  ])('rejects %s = %j', (key, value, path, code, shown) => {
    const doc = base();
    doc[key] = value;
    expectOnly(doc, code, path, shown);
  });

  it('learning: optional, defaults filled in, bounds accepted, unknown keys refused', () => {
    expect(validatePolicy(base()).learning).toEqual({ max_per_vsid: 1024, ttl_seconds: 300 });
    expect(validatePolicy({ ...base(), learning: null }).learning).toEqual({ max_per_vsid: 1024, ttl_seconds: 300 });
    expect(validatePolicy({ ...base(), learning: { ttl_seconds: 3 } }).learning).toEqual({ max_per_vsid: 1024, ttl_seconds: 3 });
    expect(validatePolicy({ ...base(), learning: { max_per_vsid: 0, ttl_seconds: 604800 } }).learning).toEqual({ max_per_vsid: 0, ttl_seconds: 604800 });
    expect(validatePolicy({ ...base(), learning: { max_per_vsid: 1048576, ttl_seconds: 1 } }).learning).toEqual({ max_per_vsid: 1048576, ttl_seconds: 1 });
    expect(loadConfigText('learning:\n  max_per_vsid: 5\n  ttl_seconds: 3\n').learning).toEqual({ max_per_vsid: 5, ttl_seconds: 3 });
    const e = expectOnly({ ...base(), learning: { max_per_vsid: 5, ttlSeconds: 3 } }, 'NVGRE_ERR_UNKNOWN_KEY', 'learning.ttlSeconds', 'ttlSeconds');
    expect(e.message).toContain('did you mean "ttl_seconds"?');
    expect(expectOnly({ ...base(), learning: { ttl: 3 } }, 'NVGRE_ERR_UNKNOWN_KEY', 'learning.ttl', 'ttl').message).toContain('the keys of learning are: max_per_vsid, ttl_seconds');
    expect(errorsOf({ ...base(), learning: { max_per_vsid: -5, ttl_seconds: 0 } }).map((x) => x.path)).toEqual(['learning.max_per_vsid', 'learning.ttl_seconds']);
    // the top-level key's place in the document order of errors: after encapsulation, before api
    const errs = errorsOf({ ...base(), api: { socket: 'x' }, learning: { ttl_seconds: 0 }, encapsulation: { flow_id: 'x' } });
    expect(errs.map((x) => x.path)).toEqual(['encapsulation.flow_id', 'learning.ttl_seconds', 'api.socket']);
    // the per-section validator
    expect(validateLearning({ max_per_vsid: 7 })).toEqual({ max_per_vsid: 7, ttl_seconds: 300 });
    expect(thrown(() => validateLearning({ ttl_seconds: -1 }, 'learning')).details![0]!.path).toBe('learning.ttl_seconds');
  });

  it('accepts listen forms and normalizes them', () => {
    for (const [given, want] of [
      ['[::1]:9470', '[::1]:9470'],
      ['[0:0:0:0:0:0:0:1]:9470', '[::1]:9470'],
      ['0.0.0.0:9100', '0.0.0.0:9100'],
      ['LocalHost:9470', 'localhost:9470'],
    ]) {
      expect(validatePolicy({ metrics: { listen: given } }).metrics.listen).toBe(want);
    }
  });

  it('checks provider address fields', () => {
    const doc = base();
    doc.provider_addresses = [
      { address: '192.168.0.22', prefix_length: 33, interface: 'eth1' },
      { address: '192.168.0.23', prefix_length: '24', interface: 'eth1' },
      { address: '192.168.0.24', prefix_length: 24, interface: 'eth1', vlan_id: 4095 },
      { address: '192.168.0.25', prefix_length: 24, interface: 'this-is-too-long0' },
      { address: '2001:db8::22', prefix_length: 64, interface: 'eth1.100', vlan_id: 0 },
    ];
    const errs = errorsOf(doc);
    expect(errs.map((e) => [e.code, e.path])).toEqual([
      ['NVGRE_ERR_PREFIX', 'provider_addresses[0].prefix_length'],
      ['NVGRE_ERR_TYPE', 'provider_addresses[1].prefix_length'],
      ['NVGRE_ERR_VALUE', 'provider_addresses[2].vlan_id'],
      ['NVGRE_ERR_VALUE', 'provider_addresses[3].interface'],
    ]);
    expect(errs[0]!.message).toContain('33');
    expect(errs[2]!.message).toContain('4095');
  });

  // A contract key that would be parsed and ignored is refused instead.
  it('takes a provider address on a VLAN (1..4094) and refuses a provider address MAC: not supported', () => {
    const doc = base();
    doc.provider_addresses = [
      { address: '192.168.0.22', prefix_length: 24, interface: 'eth1', vlan_id: 100 },
      { address: '192.168.0.23', prefix_length: 24, interface: 'eth1', vlan_id: 4094 },
      { address: '192.168.0.24', prefix_length: 24, interface: 'eth1', mac: '02-00-00-00-00-24' },
      { address: '192.168.0.25', prefix_length: 24, interface: 'eth1', vlan_id: 0 },
    ];
    const errs = errorsOf(doc);
    expect(errs.map((e) => [e.code, e.path, e.value])).toEqual([['NVGRE_ERR_VALUE', 'provider_addresses[2].mac', '02-00-00-00-00-24']]);
    expect(errs[0]!.message).toBe(
      'provider_addresses[2].mac: "02-00-00-00-00-24" is refused: a provider address\'s own MAC is not supported (NVGRE packets leave with the MAC of its interface)',
    );
    expect(validateProviderAddress({ address: '192.168.0.22', prefix_length: 24, interface: 'eth1', vlan_id: 7 })).toEqual({
      address: '192.168.0.22',
      prefix_length: 24,
      interface: 'eth1',
      vlan_id: 7,
    });
  });

  it('checks VM adapter names, netns and mtu', () => {
    const doc = base();
    doc.vm_adapters = [
      { name: 'a/b', mac: '02:00:00:00:00:01', vsid: 6000 },
      { name: '..', mac: '02:00:00:00:00:02', vsid: 6000 },
      { name: 'tap 0', mac: '02:00:00:00:00:03', vsid: 6000 },
      { name: 'x'.repeat(16), mac: '02:00:00:00:00:04', vsid: 6000 },
      { name: 'ok0', mac: '02:00:00:00:00:05', vsid: 6000, netns: 'a/b' },
      { name: 'ok1', mac: '02:00:00:00:00:06', vsid: 6000, netns: '' },
      { name: 'ok2', mac: '02:00:00:00:00:07', vsid: 6000, mtu: 67 },
      { name: 'ok3', mac: '02:00:00:00:00:08', vsid: 6000, mtu: 65536 },
      { name: 'ok4', mac: '02:00:00:00:00:09', vsid: 6000, mtu: '1500' },
      { name: 'ök5', mac: '02:00:00:00:00:0a', vsid: 6000, mtu: 68, netns: 'lab-ns' },
    ];
    const errs = errorsOf(doc);
    expect(errs.map((e) => [e.code, e.path])).toEqual([
      ['NVGRE_ERR_VALUE', 'vm_adapters[0].name'],
      ['NVGRE_ERR_VALUE', 'vm_adapters[1].name'],
      ['NVGRE_ERR_VALUE', 'vm_adapters[2].name'],
      ['NVGRE_ERR_VALUE', 'vm_adapters[3].name'],
      ['NVGRE_ERR_VALUE', 'vm_adapters[4].netns'],
      ['NVGRE_ERR_VALUE', 'vm_adapters[5].netns'],
      ['NVGRE_ERR_VALUE', 'vm_adapters[6].mtu'],
      ['NVGRE_ERR_VALUE', 'vm_adapters[7].mtu'],
      ['NVGRE_ERR_TYPE', 'vm_adapters[8].mtu'],
    ]);
    for (const e of errs) expect(e.message.startsWith(`${e.path}: `)).toBe(true);
  });
});

describe('YAML', () => {
  it('reports a syntax error with its position', () => {
    const e = thrown(() => parseConfigText('lookup_records:\n  - vsid: [6000\n    mac: x\n', 'nvgred.yaml'));
    expect(e.code).toBe('NVGRE_ERR_YAML');
    expect(e.status).toBe(400);
    expect(e.line).toBeGreaterThanOrEqual(2);
    expect(e.column).toBeGreaterThanOrEqual(1);
    expect(e.message).toMatch(/^nvgred\.yaml:\d+:\d+: YAML error: /);
  });

  it('rejects duplicate keys, with position', () => {
    const e = thrown(() => parseConfigText('host:\n  name: a\n  name: b\n'));
    expect(e.code).toBe('NVGRE_ERR_YAML');
    expect(e).toMatchObject({ line: 3, column: 3 });
    expect(e.message).toContain('line 3, column 3');
    expect(e.message).toContain('unique');
  });

  it('finds every duplicate key, in block and flow mappings at any depth, each with its position', () => {
    const e = thrown(() => parseConfigText('host: {name: a}\nlookup_records:\n  - {vsid: 1, mac: x, vsid: 2}\n  - mac: x\n    mac: y\nhost: {}\n', 'p.yaml'));
    expect(e.code).toBe('NVGRE_ERR_YAML');
    expect(e.details!.map((d) => [d.line, d.column])).toEqual([
      [3, 23],
      [5, 5],
      [6, 1],
    ]);
    expect(e.message).toBe('p.yaml:3:23: YAML error: Map keys must be unique (and 2 more YAML errors)');
    // the same key in different mappings, and keys equal only as text, are not duplicates
    expect(parseConfigText('a: {x: 1}\nb: {x: 1}\nc: {1: a, "1": b}\n')).toEqual({ a: { x: 1 }, b: { x: 1 }, c: { 1: 'b' } });
  });

  it('reports each of thousands of duplicate keys on one long line, at its own column', () => {
    const n = 5000;
    const text = `{${Array.from({ length: n }, (_, i) => `k${i % 2500}: 0`).join(', ')}}`;
    const e = thrown(() => parseConfigText(text));
    expect(e.details).toHaveLength(n - 2500);
    expect(e.details![0]).toMatchObject({ line: 1, column: text.indexOf('k0', 1 + 1) + 1 });
  });

  it('a JSON document of normal size goes through the YAML parser: duplicate keys are still refused', () => {
    const e = thrown(() => loadConfigText('{"host": {"name": "a", "name": "b"}}', 'nvgred.json'));
    expect(e.code).toBe('NVGRE_ERR_YAML');
    expect(e.message).toContain('unique');
  });

  it(`a JSON document beyond ${JSON_ONLY_ABOVE_CHARS / 1024 / 1024} MiB is read as JSON: it loads, and its errors name the field`, () => {
    const doc = base();
    const one = JSON.stringify(doc.lookup_records[1]).length + 1;
    const n = Math.ceil(JSON_ONLY_ABOVE_CHARS / one) + 10;
    for (let i = 0; i < n; i++) {
      doc.lookup_records.push({ customer_address: `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, vsid: 6000, mac: '60:00:60:00:02:03', provider_address: '192.168.0.33', type: 'dynamic' });
    }
    const text = JSON.stringify(doc);
    expect(text.length).toBeGreaterThan(JSON_ONLY_ABOVE_CHARS);
    expect(loadConfigText(text).lookup_records).toHaveLength(n + 2);
    doc.lookup_records[n].vsid = 99;
    const e = thrown(() => loadConfigText(JSON.stringify(doc), 'big.json'));
    expect(e.code).toBe('NVGRE_ERR_CONFIG');
    expect(e.message).toContain(`lookup_records[${n}].vsid`);
    expect(thrown(() => loadConfigText(`${text.slice(0, -1)},}`, 'big.json')).message).toContain('must be JSON');
  });

  it('uses the YAML 1.2 core schema: yes is a string, 1.1 directives are refused', () => {
    expect(parseConfigText('a: yes\nb: 0x10\nc: 60:00:60:00:01:01\n')).toEqual({ a: 'yes', b: 16, c: '60:00:60:00:01:01' });
    const doc = base();
    doc.encapsulation = { flow_id: parseConfigText('x: yes') && 'yes' };
    expectOnly(doc, 'NVGRE_ERR_VALUE', 'encapsulation.flow_id', '"yes"');
    expect(thrown(() => parseConfigText('%YAML 1.1\n---\na: yes\n')).code).toBe('NVGRE_ERR_YAML');
  });

  it('refuses unknown tags and several documents', () => {
    expect(thrown(() => parseConfigText('a: !!binary aGk=\n')).code).toBe('NVGRE_ERR_YAML');
    expect(thrown(() => parseConfigText('a: !custom x\n')).code).toBe('NVGRE_ERR_YAML');
    expect(thrown(() => parseConfigText('a: 1\n---\nb: 2\n')).code).toBe('NVGRE_ERR_YAML');
  });

  it('stops alias bombs', () => {
    const lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 0; i < 8; i++) {
      const p = String.fromCharCode(97 + i);
      const n = String.fromCharCode(98 + i);
      lines.push(`${n}: &${n} [*${p},*${p},*${p},*${p},*${p},*${p},*${p},*${p},*${p}]`);
    }
    const e = thrown(() => parseConfigText(lines.join('\n')));
    expect(e.code).toBe('NVGRE_ERR_YAML');
    expect(e.message).toContain('alias');
    // a few aliases are fine
    expect(parseConfigText('x: &pa 192.168.0.22\ny: *pa\n')).toEqual({ x: '192.168.0.22', y: '192.168.0.22' });
  });

  it('gives validation errors their line and column', () => {
    const e = thrown(() => loadConfigText(`customer_routes:
  - routing_domain: "${RD}"
    vsid: 6000
    destination_prefix: 10.0.1.0/24
    next_hop: 0.0.0.0
lookup_records:
  - customer_address: 10.0.1.101
    vsid: 4000
    mac: "60:00:60:00:01:01"
    provider_address: 192.168.0.22
  - customer_address: 10.0.1.102
    mac: "60:00:60:00:01:02"
    provider_address: 192.168.0.22
`, 'test.yaml'));
    expect(e.details!.map((d) => [d.path, d.line, d.column])).toEqual([
      ['lookup_records[0].vsid', 8, 5],
      ['lookup_records[1].vsid', 11, 5],
    ]);
    expect(e.message).toContain('test.yaml: config has 2 errors:');
    expect(e.message).toContain('line 8:5: lookup_records[0].vsid: 4000 is out of range (a VSID is an integer in 4096..16777214)');
  });
});

describe('files', () => {
  it('rejects bytes that are not UTF-8, naming the position', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nvgred-config-'));
    try {
      const file = join(dir, 'bad.yaml');
      await writeFile(file, Buffer.concat([Buffer.from('host:\n  name: caf'), Buffer.from([0xe9]), Buffer.from('\n')]));
      const e = await rejected(loadConfigFile(file));
      expect(e).toBeInstanceOf(NvgreError);
      expect(e.code).toBe('NVGRE_ERR_ENCODING');
      expect(e.line).toBe(2);
      expect(e.message).toContain('0xe9');
      expect(e.message).toContain(file);
      // overlong and surrogate encodings are refused too
      await writeFile(file, Buffer.from([0x61, 0x3a, 0x20, 0xc0, 0xaf]));
      expect((await rejected(loadConfigFile(file))).code).toBe('NVGRE_ERR_ENCODING');
      await writeFile(file, Buffer.from([0x61, 0x3a, 0x20, 0xed, 0xa0, 0x80]));
      expect((await rejected(loadConfigFile(file))).code).toBe('NVGRE_ERR_ENCODING');
      // a BOM and non-ASCII UTF-8 are fine
      await writeFile(file, '\ufeffhost:\n  name: café\n');
      expect((await loadConfigFile(file)).host).toEqual({ name: 'café' });
      // size limit
      expect((await rejected(loadConfigFile(file, { maxBytes: 4 }))).code).toBe('NVGRE_ERR_TOO_LARGE');
      // missing file
      const missing = await rejected(loadConfigFile(join(dir, 'nope.yaml')));
      expect(missing.code).toBe('NVGRE_ERR_IO');
      expect(missing.message).toContain('ENOENT');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('aggregate errors and the per-record API', () => {
  it('reports several errors together, in document order', () => {
    const doc = base();
    doc.vm_adapters[0].mtu = 10;
    doc.lookup_records[1].vsid = 4095;
    doc.lookup_records[0].mac = '01:00:00:00:00:01';
    doc.customer_routes[1].destination_prefix = '10.0.2.1/24';
    doc.bogus = true;
    doc.lookup_records.push({ customer_address: '10.0.1.50', vsid: 6000, mac: '60:00:60:00:01:50', provider_address: '192.168.0.22' });
    doc.lookup_records.push({ customer_address: '10.0.1.50', vsid: 6000, mac: '60:00:60:00:01:51', provider_address: '192.168.0.22' });
    const e = thrown(() => validatePolicy(doc, { source: 'x.yaml' }));
    expect(e.code).toBe('NVGRE_ERR_CONFIG');
    expect(e.details!.map((d) => [d.code, d.path])).toEqual([
      ['NVGRE_ERR_UNKNOWN_KEY', 'bogus'],
      ['NVGRE_ERR_PREFIX_HOST_BITS', 'customer_routes[1].destination_prefix'],
      ['NVGRE_ERR_MAC', 'lookup_records[0].mac'],
      ['NVGRE_ERR_VSID_RANGE', 'lookup_records[1].vsid'],
      ['NVGRE_ERR_DUPLICATE_CA', 'lookup_records[3].customer_address'],
      ['NVGRE_ERR_VALUE', 'vm_adapters[0].mtu'],
    ]);
    expect(e.message.split('\n')[0]).toBe('x.yaml: config has 6 errors:');
    for (const d of e.details!) expect(e.message).toContain(d.message);
  });

  it('lists every error in details but abbreviates the message', () => {
    const doc = base();
    for (let i = 0; i < 50; i++) doc.lookup_records.push({ customer_address: `10.0.1.${i + 1}`, vsid: 1, mac: '02:00:00:00:00:01', provider_address: '192.168.0.22' });
    const e = thrown(() => validatePolicy(doc));
    expect(e.details).toHaveLength(50);
    expect(e.message).toContain('... and 30 more');
  });

  it('per-record validators throw or collect', () => {
    const rec = validateLookupRecord({ customer_address: '10.0.1.7', vsid: 6000, mac: '60-00-60-00-01-07', provider_address: '192.168.0.22', type: 'dynamic' });
    expect(rec).toEqual({ customer_address: '10.0.1.7', vsid: 6000, mac: '60:00:60:00:01:07', provider_address: '192.168.0.22', rule: 'encap', type: 'dynamic' });
    const e = thrown(() => validateLookupRecord({ customer_address: '10.0.1.7', vsid: 5, mac: 'zz' }));
    expect(e.code).toBe('NVGRE_ERR_CONFIG');
    expect(e.details!.map((d) => [d.code, d.path])).toEqual([
      ['NVGRE_ERR_VSID_RANGE', 'vsid'],
      ['NVGRE_ERR_MAC', 'mac'],
      ['NVGRE_ERR_REQUIRED', 'provider_address'],
    ]);
    expect(e.message.split('\n')[0]).toBe('lookup record has 3 errors:');
    const errs: FieldError[] = [];
    expect(validateVmAdapter({ name: 'tap0', mac: '02:00:00:00:00:01', vsid: 6000, mtu: 9000 }, 'body', errs)).toEqual({ name: 'tap0', mac: '02:00:00:00:00:01', vsid: 6000, mtu: 9000 });
    expect(validateVmAdapter({ name: 'tap0', mac: '02:00:00:00:00:01' }, 'body', errs)).toBeUndefined();
    expect(errs.map((d) => d.path)).toEqual(['body.vsid']);
  });

  it('checkPolicyInvariants works on a validated policy', () => {
    const p = validatePolicy(base());
    p.lookup_records.push({ ...p.lookup_records[0]!, mac: '60:00:60:00:09:09' });
    expect(checkPolicyInvariants(p).map((d) => [d.code, d.path])).toEqual([['NVGRE_ERR_DUPLICATE_CA', 'lookup_records[2].customer_address']]);
  });

  it('the code table maps codes to HTTP statuses', () => {
    expect(statusOf('NVGRE_ERR_VSID_RANGE')).toBe(400);
    expect(statusOf('NVGRE_ERR_NOT_FOUND')).toBe(404);
    expect(statusOf('NVGRE_ERR_EXISTS')).toBe(409);
    expect(statusOf('NVGRE_ERR_TOO_LARGE')).toBe(413);
    expect(statusOf('NVGRE_ERR_MEDIA_TYPE')).toBe(415);
    expect(statusOf('NVGRE_ERR_INTERNAL')).toBe(500);
    expect(statusOf('whatever')).toBe(500);
    for (const code of Object.keys(ERROR_CODES)) expect(code).toMatch(/^NVGRE_ERR_[A-Z0-9_]+$/);
    const e = new NvgreError('NVGRE_ERR_NOT_FOUND', 'no such record');
    expect(JSON.parse(JSON.stringify(e))).toEqual({ code: 'NVGRE_ERR_NOT_FOUND', status: 404, message: 'no such record' });
  });
});

describe('scale', () => {
  it('validates 1,000,000 lookup records', () => {
    const N = 1_000_000;
    const VSIDS = 1000;
    const customer_routes: object[] = [];
    for (let v = 0; v < VSIDS; v++) {
      const routing_domain = `{00000000-0000-0000-0000-${String(v).padStart(12, '0')}}`;
      customer_routes.push({ routing_domain, vsid: 10000 + v, destination_prefix: '10.0.0.0/8', next_hop: '0.0.0.0' });
      customer_routes.push({ routing_domain, vsid: 10000 + v, destination_prefix: 'fd00::/16', next_hop: '::' });
    }
    const pas = Array.from({ length: 8 }, (_, i) => `192.168.0.${i + 10}`);
    const hex2 = (n: number): string => (n & 255).toString(16).padStart(2, '0');
    const lookup_records = new Array<object>(N);
    for (let k = 0; k < N; k++) {
      // every 10th record is the IPv6 CA of the VM before it: same MAC, VSID and PA
      const v6 = k % 10 === 9;
      const vm = v6 ? k - 1 : k;
      const n = 0x0a000100 + k;
      lookup_records[k] = {
        customer_address: v6 ? `fd00::${(k >>> 16).toString(16)}:${(k & 0xffff).toString(16)}` : `10.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`,
        vsid: 10000 + (vm % VSIDS),
        mac: `02:00:${hex2(vm >>> 24)}:${hex2(vm >>> 16)}:${hex2(vm >>> 8)}:${hex2(vm)}`,
        provider_address: pas[vm % 8],
      };
    }
    const doc = { customer_routes, lookup_records };
    const policy = validatePolicy(doc);
    expect(policy.lookup_records).toHaveLength(N);
    expect(policy.lookup_records[9]).toEqual({
      customer_address: 'fd00::9',
      vsid: 10008,
      mac: '02:00:00:00:00:08',
      provider_address: '192.168.0.10',
      rule: 'encap',
      type: 'static',
    });
    expect(policy.lookup_records[N - 2]!.customer_address).toBe('10.15.67.62');

    // one conflicting record at the end is found and named
    policy.lookup_records.push({ ...policy.lookup_records[0]!, mac: '02:ff:00:00:00:00' });
    expect(checkPolicyInvariants(policy).map((d) => [d.code, d.path])).toEqual([
      ['NVGRE_ERR_DUPLICATE_CA', `lookup_records[${N}].customer_address`],
    ]);
  });
});
