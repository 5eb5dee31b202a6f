// Bad input to the control API: each request gets a clear error (HTTP
// status, NVGRE_ERR_ code, a message naming the field and the value) and
// leaves the running policy byte for byte as it was: the raw body of
// GET /v1/policy, the raw bytes of <state_dir>/policy.json and `generation`
// are compared before and after every case.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { Lab } from '../lab/netns.js';
import { keyPath, rawRequest, type ApiClient, type ApiResponse } from './helpers/api.js';
import { RD1, RD2, TestDaemon, baseConfig, createHostEnv, type HostEnv } from './helpers/daemon.js';

const lab = new Lab(`nvbad${process.pid % 10000}-`);
let env: HostEnv;
let d: TestDaemon;
let api: ApiClient;
let base: Record<string, any>;

beforeAll(async () => {
  env = await createHostEnv(lab, 'nvgred-bad-');
  d = new TestDaemon(env, env.writeConfig(baseConfig(env)));
  await d.start();
  api = d.api;
  base = (await api.get('/v1/policy')).body;
});

afterAll(async () => {
  const report = await lab.teardown();
  env?.cleanup();
  expect(report.errors).toEqual([]);
});

interface Snapshot {
  policy: Buffer;
  state: Buffer;
  generation: number;
}

async function snapshot(): Promise<Snapshot> {
  const p = await api.get('/v1/policy');
  expect(p.status).toBe(200);
  return { policy: p.raw, state: readFileSync(join(env.stateDir, 'policy.json')), generation: (await api.status()).generation };
}

function expectSame(before: Snapshot, after: Snapshot): void {
  expect(after.generation, 'generation').toBe(before.generation);
  expect(after.policy.equals(before.policy), 'GET /v1/policy bytes').toBe(true);
  expect(after.state.equals(before.state), 'state_dir/policy.json bytes').toBe(true);
}

/** A copy of the policy the daemon started with, `f` applied (built when the case runs). */
function doc(f: (d: Record<string, any>) => void): () => Record<string, any> {
  return () => {
    const x = structuredClone(base);
    f(x);
    return x;
  };
}

const rec = (o: Record<string, unknown> = {}) => ({
  customer_address: '10.0.1.150',
  vsid: 6000,
  mac: '60:00:60:00:01:50',
  provider_address: '192.168.0.33',
  ...o,
});

interface Case {
  name: string;
  send: () => Promise<ApiResponse>;
  status: number;
  code: string;
  /** Strings the error message must contain (the field, the value...). */
  mentions: string[];
  /** A details entry that must be present. */
  detail?: { code: string; path: string | RegExp; value?: unknown };
}

const lazy = (b: unknown): unknown => (typeof b === 'function' ? (b as () => unknown)() : b);
const post = (path: string, body: unknown) => () => api.post(path, lazy(body));
const put = (path: string, body: unknown) => () => api.put(path, lazy(body));
const patch = (path: string, body: unknown) => () => api.patch(path, lazy(body));
const send = (method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}) => () =>
  api.request(method, path, body, headers);
const LR = '/v1/lookup-records';
/** index of the next lookup record appended to the base policy */
const NEXT_LR = 5;

const cases: Array<[group: string, Case[]]> = [
  [
    'VSIDs out of range or reserved',
    [
      { name: 'VSID 0 in a lookup record', send: post(LR, rec({ vsid: 0 })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['vsid', ': 0 ', '4096..16777214'], detail: { code: 'NVGRE_ERR_VSID_RANGE', path: 'lookup_record.vsid', value: 0 } },
      { name: 'VSID 4095 in a lookup record', send: post(LR, rec({ vsid: 4095 })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['vsid', '4095'], detail: { code: 'NVGRE_ERR_VSID_RANGE', path: 'lookup_record.vsid', value: 4095 } },
      { name: 'VSID 16777215 in a customer route', send: post('/v1/customer-routes', { routing_domain: RD1, vsid: 16777215, destination_prefix: '10.7.0.0/16', next_hop: '0.0.0.0' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['vsid', '16777215'], detail: { code: 'NVGRE_ERR_VSID_RANGE', path: 'customer_route.vsid', value: 16777215 } },
      { name: 'VSID 4095 in a VM adapter (PUT)', send: put(keyPath('vm-adapters', 'vm9'), { name: 'vm9', mac: '60:00:60:00:01:09', vsid: 4095 }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['vsid', '4095'], detail: { code: 'NVGRE_ERR_VSID_RANGE', path: 'vm_adapter.vsid', value: 4095 } },
      { name: 'VSID 0 by PATCH', send: patch(keyPath('vm-adapters', 'vm1'), { vsid: 0 }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['vsid', ': 0 '], detail: { code: 'NVGRE_ERR_VSID_RANGE', path: 'vm_adapter.vsid', value: 0 } },
      { name: 'VSID 16777215 in a bulk document', send: put('/v1/policy', doc((x) => (x.customer_routes[3].vsid = 16777215))), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['customer_routes[3].vsid', '16777215'], detail: { code: 'NVGRE_ERR_VSID_RANGE', path: 'customer_routes[3].vsid', value: 16777215 } },
    ],
  ],
  [
    'malformed addresses',
    [
      { name: 'IPv4 with an octet over 255', send: post(LR, rec({ customer_address: '10.0.1.256' })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['customer_address', '10.0.1.256'], detail: { code: 'NVGRE_ERR_ADDRESS', path: 'lookup_record.customer_address', value: '10.0.1.256' } },
      { name: 'IPv4 with three octets', send: post(LR, rec({ customer_address: '10.0.1' })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['customer_address', '"10.0.1"'], detail: { code: 'NVGRE_ERR_ADDRESS', path: 'lookup_record.customer_address', value: '10.0.1' } },
      { name: 'IPv6 with two "::"', send: post(LR, rec({ provider_address: '2001:db8::1::2' })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['provider_address', '2001:db8::1::2'], detail: { code: 'NVGRE_ERR_ADDRESS', path: 'lookup_record.provider_address', value: '2001:db8::1::2' } },
      { name: 'IPv6 with a bad hex digit', send: post(LR, rec({ provider_address: 'fd00::zz' })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['provider_address', 'fd00::zz'], detail: { code: 'NVGRE_ERR_ADDRESS', path: 'lookup_record.provider_address', value: 'fd00::zz' } },
      { name: 'provider address 192.168.0.300', send: post('/v1/provider-addresses', { address: '192.168.0.300', prefix_length: 24, interface: 'eth1' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['address', '192.168.0.300'], detail: { code: 'NVGRE_ERR_ADDRESS', path: /^provider_address\.address$/, value: '192.168.0.300' } },
      { name: 'a next hop of the wrong family', send: post('/v1/customer-routes', { routing_domain: RD1, vsid: 6000, destination_prefix: '10.7.0.0/16', next_hop: 'fd00::1' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['next_hop', 'fd00::1'], detail: { code: 'NVGRE_ERR_FAMILY', path: 'customer_route.next_hop', value: 'fd00::1' } },
    ],
  ],
  [
    'bad MACs',
    [
      { name: 'multicast MAC', send: post(LR, rec({ mac: '61:00:60:00:01:50' })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['mac', '61:00:60:00:01:50'], detail: { code: 'NVGRE_ERR_MAC', path: 'lookup_record.mac', value: '61:00:60:00:01:50' } },
      { name: 'short MAC', send: post(LR, rec({ mac: '60:00:60:00:01' })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['mac', '60:00:60:00:01'], detail: { code: 'NVGRE_ERR_MAC', path: 'lookup_record.mac', value: '60:00:60:00:01' } },
      { name: 'MAC with bad characters', send: post(LR, rec({ mac: '60:00:60:00:01:zz' })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['mac', '60:00:60:00:01:zz'], detail: { code: 'NVGRE_ERR_MAC', path: 'lookup_record.mac', value: '60:00:60:00:01:zz' } },
      { name: 'broadcast MAC on a VM adapter', send: post('/v1/vm-adapters', { name: 'vm9', mac: 'ff:ff:ff:ff:ff:ff', vsid: 6000 }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['mac', 'ff:ff:ff:ff:ff:ff'], detail: { code: 'NVGRE_ERR_MAC', path: 'vm_adapter.mac', value: 'ff:ff:ff:ff:ff:ff' } },
      { name: 'all-zero MAC on a static record', send: post(LR, rec({ mac: '00:00:00:00:00:00' })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['mac', '00:00:00:00:00:00'], detail: { code: 'NVGRE_ERR_MAC', path: 'lookup_record.mac', value: '00:00:00:00:00:00' } },
      { name: 'a MAC as a number', send: post(LR, rec({ mac: 600060000150 })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['mac', '600060000150'], detail: { code: 'NVGRE_ERR_TYPE', path: 'lookup_record.mac', value: 600060000150 } },
    ],
  ],
  [
    'prefixes',
    [
      { name: 'customer prefix with host bits', send: post('/v1/customer-routes', { routing_domain: RD1, vsid: 6000, destination_prefix: '10.5.0.1/16', next_hop: '0.0.0.0' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['destination_prefix', '10.5.0.1/16'], detail: { code: 'NVGRE_ERR_PREFIX_HOST_BITS', path: 'customer_route.destination_prefix', value: '10.5.0.1/16' } },
      { name: 'provider prefix with host bits', send: post('/v1/provider-routes', { destination_prefix: '192.168.7.1/24', next_hop: '192.168.0.1', interface: 'eth1' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['destination_prefix', '192.168.7.1/24'], detail: { code: 'NVGRE_ERR_PREFIX_HOST_BITS', path: 'provider_route.destination_prefix', value: '192.168.7.1/24' } },
      { name: 'IPv4 prefix length 33', send: post('/v1/customer-routes', { routing_domain: RD1, vsid: 6000, destination_prefix: '10.5.0.0/33', next_hop: '0.0.0.0' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['destination_prefix', '10.5.0.0/33'], detail: { code: 'NVGRE_ERR_PREFIX', path: 'customer_route.destination_prefix', value: '10.5.0.0/33' } },
      { name: 'host bits in a bulk document', send: put('/v1/policy', doc((x) => (x.customer_routes[0].destination_prefix = '10.0.1.1/24'))), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['customer_routes[0].destination_prefix', '10.0.1.1/24'], detail: { code: 'NVGRE_ERR_PREFIX_HOST_BITS', path: 'customer_routes[0].destination_prefix', value: '10.0.1.1/24' } },
    ],
  ],
  [
    'policy rules across records',
    [
      { name: 'duplicate (vsid, CA) by POST', send: post(LR, rec({ customer_address: '10.0.1.103', mac: '60:00:60:00:01:50' })), status: 409, code: 'NVGRE_ERR_EXISTS', mentions: ['6000', '10.0.1.103'] },
      { name: 'duplicate (vsid, CA) in a bulk document', send: put('/v1/policy', doc((x) => x.lookup_records.push(rec({ customer_address: '10.0.1.103' })))), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: [`lookup_records[${NEXT_LR}].customer_address`, '10.0.1.103', 'VSID 6000'], detail: { code: 'NVGRE_ERR_DUPLICATE_CA', path: `lookup_records[${NEXT_LR}].customer_address`, value: '10.0.1.103' } },
      { name: 'one MAC in two VSIDs of a routing domain (POST)', send: post(LR, rec({ vsid: 6001, customer_address: '10.0.2.50', mac: '60-00-60-00-02-03' })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: [`lookup_records[${NEXT_LR}].mac`, '60:00:60:00:02:03', 'VSID 6000'], detail: { code: 'NVGRE_ERR_DUPLICATE_MAC', path: `lookup_records[${NEXT_LR}].mac`, value: '60:00:60:00:02:03' } },
      { name: 'one MAC in two VSIDs of a routing domain (bulk)', send: put('/v1/policy', doc((x) => x.lookup_records.push(rec({ vsid: 6001, customer_address: '10.0.2.50', mac: '60:00:60:00:02:03' })))), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['60:00:60:00:02:03'], detail: { code: 'NVGRE_ERR_DUPLICATE_MAC', path: `lookup_records[${NEXT_LR}].mac`, value: '60:00:60:00:02:03' } },
      { name: 'a VSID in two routing domains', send: post('/v1/customer-routes', { routing_domain: RD2, vsid: 6000, destination_prefix: '10.7.0.0/16', next_hop: '0.0.0.0' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['customer_routes[4].vsid', '6000', RD1, RD2], detail: { code: 'NVGRE_ERR_VSID_DOMAIN', path: 'customer_routes[4].vsid', value: 6000 } },
      { name: 'a lookup record whose VSID has no customer route', send: post(LR, rec({ vsid: 8000 })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: [`lookup_records[${NEXT_LR}].vsid`, '8000'], detail: { code: 'NVGRE_ERR_VSID_UNBOUND', path: `lookup_records[${NEXT_LR}].vsid`, value: 8000 } },
      { name: 'a VM adapter whose VSID has no customer route', send: post('/v1/vm-adapters', { name: 'vm9', mac: '60:00:60:00:01:09', vsid: 8000 }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['vm_adapters[1].vsid', '8000'], detail: { code: 'NVGRE_ERR_VSID_UNBOUND', path: 'vm_adapters[1].vsid', value: 8000 } },
      { name: 'a default-gateway record on a remote PA', send: post(LR, rec({ vsid: 6001, customer_address: '10.0.2.1', mac: '60:01:60:01:00:01', provider_address: '192.168.0.33' })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['provider_address', '192.168.0.33', '10.0.2.1'], detail: { code: 'NVGRE_ERR_GATEWAY_PA', path: `lookup_records[${NEXT_LR}].provider_address`, value: '192.168.0.33' } },
      { name: 'deleting the route that binds a VSID in use', send: () => api.delete(keyPath('customer-routes', RD2, 7000, '10.0.1.0/24')), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['7000'], detail: { code: 'NVGRE_ERR_VSID_UNBOUND', path: 'lookup_records[4].vsid', value: 7000 } },
    ],
  ],
  [
    'unknown keys',
    [
      { name: 'unknown key in a record body', send: post(LR, rec({ colour: 'blue' })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['colour', 'blue'], detail: { code: 'NVGRE_ERR_UNKNOWN_KEY', path: 'lookup_record.colour', value: 'blue' } },
      { name: 'a PowerShell-style key, with a hint', send: post(LR, { customer_address: '10.0.1.150', VirtualSubnetId: 6000, mac: '60:00:60:00:01:50', provider_address: '192.168.0.33' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['VirtualSubnetId', 'did you mean "vsid"'], detail: { code: 'NVGRE_ERR_UNKNOWN_KEY', path: 'lookup_record.VirtualSubnetId', value: 6000 } },
      { name: 'unknown key in a PATCH body', send: patch(keyPath('lookup-records', 6000, '10.0.1.103'), { colour: 'blue' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['colour', 'blue'], detail: { code: 'NVGRE_ERR_UNKNOWN_KEY', path: 'lookup_record.colour', value: 'blue' } },
      { name: 'unknown top-level key in a bulk document', send: put('/v1/policy', doc((x) => (x.colour = 'blue'))), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['colour', 'blue'], detail: { code: 'NVGRE_ERR_UNKNOWN_KEY', path: 'colour', value: 'blue' } },
      { name: 'unknown key nested in a record of a bulk document', send: put('/v1/policy', doc((x) => (x.lookup_records[2].colour = 'blue'))), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['lookup_records[2].colour', 'blue'], detail: { code: 'NVGRE_ERR_UNKNOWN_KEY', path: 'lookup_records[2].colour', value: 'blue' } },
      { name: 'unknown key nested in a section of a bulk document', send: put('/v1/policy', doc((x) => (x.api.mode = '0666'))), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['api.mode', '0666'], detail: { code: 'NVGRE_ERR_UNKNOWN_KEY', path: 'api.mode', value: '0666' } },
      { name: 'unknown key in a YAML bulk document', send: send('PUT', '/v1/policy', 'host: { name: x, colour: blue }\n', { 'content-type': 'application/yaml' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['host.colour', 'blue'], detail: { code: 'NVGRE_ERR_UNKNOWN_KEY', path: 'host.colour', value: 'blue' } },
    ],
  ],
  [
    'wrong JSON types',
    [
      { name: 'VSID as a string', send: post(LR, rec({ vsid: '6000' })), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['vsid', '"6000"', 'a string'], detail: { code: 'NVGRE_ERR_TYPE', path: 'lookup_record.vsid', value: '6000' } },
      { name: 'a fractional prefix length', send: post('/v1/provider-addresses', { address: '192.168.50.1', prefix_length: 24.5, interface: 'eth1' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['prefix_length', '24.5'], detail: { code: 'NVGRE_ERR_TYPE', path: /\.prefix_length$/, value: 24.5 } },
      { name: 'MTU as a boolean', send: post('/v1/vm-adapters', { name: 'vm9', mac: '60:00:60:00:01:09', vsid: 6000, mtu: true }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['mtu', 'true'], detail: { code: 'NVGRE_ERR_TYPE', path: 'vm_adapter.mtu', value: true } },
      { name: 'a record body that is a list', send: post(LR, [rec()]), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['a list', 'a lookup record'], detail: { code: 'NVGRE_ERR_TYPE', path: 'lookup_record' } },
      { name: 'a record body that is null', send: send('POST', LR, 'null', { 'content-type': 'application/json' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['null'], detail: { code: 'NVGRE_ERR_TYPE', path: 'lookup_record', value: null } },
      { name: 'a PATCH body that is a list', send: patch(keyPath('lookup-records', 6000, '10.0.1.103'), ['vm_name']), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['object'] },
      { name: 'a section that is a mapping, not a list', send: put('/v1/policy', doc((x) => (x.lookup_records = { a: 1 }))), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['lookup_records', 'a mapping', 'expected a list'], detail: { code: 'NVGRE_ERR_TYPE', path: 'lookup_records' } },
      { name: 'a bulk document that is a string', send: send('PUT', '/v1/policy', '"hello"', { 'content-type': 'application/json' }), status: 400, code: 'NVGRE_ERR_CONFIG', mentions: ['"hello"', 'a string'], detail: { code: 'NVGRE_ERR_TYPE', path: '', value: 'hello' } },
    ],
  ],
  [
    'bodies',
    [
      { name: 'truncated JSON', send: send('POST', LR, JSON.stringify(rec()).slice(0, 40), { 'content-type': 'application/json' }), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['not valid JSON'] },
      { name: 'truncated JSON bulk document', send: send('PUT', '/v1/policy', JSON.stringify({ lookup_records: [rec()] }).slice(0, 30), { 'content-type': 'application/json' }), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['not valid JSON'] },
      { name: 'an empty body', send: send('POST', LR, '', { 'content-type': 'application/json' }), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['not valid JSON'] },
      { name: 'a non-UTF-8 record body', send: send('POST', LR, Buffer.concat([Buffer.from('{"vm_name": "'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]), { 'content-type': 'application/json' }), status: 400, code: 'NVGRE_ERR_ENCODING', mentions: ['UTF-8', '0xc3', 'offset 13'] },
      { name: 'a non-UTF-8 YAML document', send: send('PUT', '/v1/policy', Buffer.from([0x68, 0x6f, 0x73, 0x74, 0x3a, 0x20, 0xff, 0x0a]), { 'content-type': 'application/yaml' }), status: 400, code: 'NVGRE_ERR_ENCODING', mentions: ['UTF-8', '0xff'] },
      { name: 'a YAML syntax error', send: send('PUT', '/v1/policy', 'lookup_records: [ {\n', { 'content-type': 'application/yaml' }), status: 400, code: 'NVGRE_ERR_YAML', mentions: ['YAML'] },
      { name: 'text/plain', send: send('POST', LR, JSON.stringify(rec()), { 'content-type': 'text/plain' }), status: 415, code: 'NVGRE_ERR_MEDIA_TYPE', mentions: ['text/plain', 'application/json'] },
      { name: 'YAML where only JSON is accepted', send: send('POST', LR, 'vsid: 6000\n', { 'content-type': 'application/yaml' }), status: 415, code: 'NVGRE_ERR_MEDIA_TYPE', mentions: ['application/yaml'] },
      { name: 'form data on a bulk apply', send: send('PUT', '/v1/policy', 'a=1', { 'content-type': 'application/x-www-form-urlencoded' }), status: 415, code: 'NVGRE_ERR_MEDIA_TYPE', mentions: ['application/x-www-form-urlencoded'] },
    ],
  ],
  [
    'paths and methods',
    [
      { name: 'a path outside /v1', send: send('GET', '/v2/status'), status: 404, code: 'NVGRE_ERR_NOT_FOUND', mentions: ['/v2/status'] },
      { name: 'an unknown resource', send: send('GET', '/v1/lookup-recordz'), status: 404, code: 'NVGRE_ERR_NOT_FOUND', mentions: ['/v1/lookup-recordz'] },
      { name: 'an unknown config action', send: send('POST', '/v1/config/load', '{}', { 'content-type': 'application/json' }), status: 404, code: 'NVGRE_ERR_NOT_FOUND', mentions: ['/v1/config/load'] },
      { name: 'too many key segments', send: send('GET', `${keyPath('lookup-records', 6000, '10.0.1.1', '60:00:60:00:01:00')}/extra`), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['vsid/customer_address/[mac]', '4 path segments'] },
      { name: 'too few key segments', send: send('DELETE', keyPath('customer-routes', RD1, 6000)), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['routing_domain/vsid/destination_prefix', '2 path segments'] },
      { name: 'PATCH on a collection', send: send('PATCH', LR, '{}', { 'content-type': 'application/json' }), status: 405, code: 'NVGRE_ERR_METHOD', mentions: ['PATCH', '/v1/lookup-records'] },
      { name: 'POST on a record', send: send('POST', keyPath('vm-adapters', 'vm1'), '{}', { 'content-type': 'application/json' }), status: 405, code: 'NVGRE_ERR_METHOD', mentions: ['POST'] },
      { name: 'POST /v1/status', send: send('POST', '/v1/status'), status: 405, code: 'NVGRE_ERR_METHOD', mentions: ['POST', '/v1/status'] },
      { name: 'DELETE /v1/policy', send: send('DELETE', '/v1/policy'), status: 405, code: 'NVGRE_ERR_METHOD', mentions: ['DELETE', '/v1/policy'] },
      { name: 'GET /v1/reload', send: send('GET', '/v1/reload'), status: 405, code: 'NVGRE_ERR_METHOD', mentions: ['GET', '/v1/reload'] },
      { name: 'PUT /v1/next-hop', send: send('PUT', '/v1/next-hop', '{}', { 'content-type': 'application/json' }), status: 405, code: 'NVGRE_ERR_METHOD', mentions: ['PUT', '/v1/next-hop'] },
      { name: 'GET /v1/config/save', send: send('GET', '/v1/config/save'), status: 405, code: 'NVGRE_ERR_METHOD', mentions: ['GET', '/v1/config/save'] },
    ],
  ],
  [
    'key segments and filters',
    [
      { name: 'a truncated percent-encoding in a prefix segment', send: send('GET', `/v1/customer-routes/${encodeURIComponent(RD1)}/6000/10.0.1.0%2`), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['percent-encoding', '10.0.1.0%2'] },
      { name: 'an invalid UTF-8 percent-encoding (DELETE)', send: send('DELETE', '/v1/vm-adapters/%E0%A4%A'), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['percent-encoding', '%E0%A4%A'] },
      { name: 'a bad percent-encoding in a PUT key', send: send('PUT', '/v1/lookup-records/6000/10.0.1.%ZZ', JSON.stringify(rec()), { 'content-type': 'application/json' }), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['percent-encoding', '%ZZ'] },
      { name: 'a key value that is not a VSID', send: send('DELETE', keyPath('lookup-records', 'abc', '10.0.1.103')), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['vsid', '"abc"'], detail: { code: 'NVGRE_ERR_VALUE', path: 'vsid', value: 'abc' } },
      { name: 'a key value that is not a prefix', send: send('DELETE', keyPath('customer-routes', RD1, 6000, '10.0.1.0/99')), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['destination_prefix', '10.0.1.0/99'] },
      { name: 'a key value that is not a routing domain', send: send('GET', keyPath('customer-routes', '{not-a-guid}', 6000, '10.0.1.0/24')), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['routing_domain', '{not-a-guid}'] },
      { name: 'an unknown filter field (list)', send: send('GET', `${LR}?colour=red`), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['"colour"', 'vsid'] },
      { name: 'an unknown filter field (flush)', send: send('DELETE', `${LR}?colour=red`), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['"colour"'] },
      { name: 'an unknown filter field next to a good one (flush)', send: send('DELETE', `${LR}?vsid=6000&colour=red`), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['"colour"'] },
      { name: 'a bad filter value', send: send('GET', `${LR}?mac=60:00:zz`), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['mac', '60:00:zz'], detail: { code: 'NVGRE_ERR_VALUE', path: 'mac', value: '60:00:zz' } },
      { name: 'a bad filter value (flush)', send: send('DELETE', `${LR}?vsid=-1`), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['vsid', '"-1"'] },
      { name: 'a flush with all=yes', send: send('DELETE', `${LR}?all=yes`), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['all=true'] },
      { name: 'a next hop with a bad VSID', send: send('GET', '/v1/next-hop?vsid=x&destination=10.0.1.1'), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['vsid', '"x"'] },
      { name: 'a log level that does not exist', send: put('/v1/log', { level: 'loud' }), status: 400, code: 'NVGRE_ERR_VALUE', mentions: ['level', '"loud"'] },
      { name: 'a log component that does not exist', send: put('/v1/log', { level: 'debug', component: 'nowhere' }), status: 404, code: 'NVGRE_ERR_NOT_FOUND', mentions: ['"nowhere"'] },
      { name: 'a config save to a relative path', send: post('/v1/config/save', { path: 'x.yaml' }), status: 400, code: 'NVGRE_ERR_BAD_REQUEST', mentions: ['path', '"x.yaml"'] },
    ],
  ],
];

for (const [group, list] of cases) {
  describe(group, () => {
    for (const c of list) {
      it(`${c.name}: ${c.status} ${c.code}, nothing changes`, async () => {
        const before = await snapshot();
        const r = await c.send();
        expect(r.status, r.raw.toString()).toBe(c.status);
        expect(r.headers['content-type']).toBe('application/json');
        const e = r.body?.error;
        expect(e, r.raw.toString()).toBeDefined();
        expect(e.code).toBe(c.code);
        expect(Array.isArray(e.details)).toBe(true);
        for (const m of c.mentions) expect(e.message, `message mentions ${m}`).toContain(m);
        if (c.detail) {
          const want = c.detail;
          const found = (e.details as Array<{ code: string; path: string; value: unknown; message: string }>).find(
            (x) => x.code === want.code && (typeof want.path === 'string' ? x.path === want.path : want.path.test(x.path)),
          );
          expect(found, JSON.stringify(e.details)).toBeDefined();
          if ('value' in want) expect(found!.value).toEqual(want.value);
          expect(found!.message).toContain(String(found!.path));
        }
        expectSame(before, await snapshot());
      });
    }
  });
}

describe('a 100 MB body', () => {
  const MB = 1024 * 1024;
  function* pieces(n: number): Generator<Buffer> {
    for (let i = 0; i < n; i++) yield Buffer.alloc(MB, 0x20);
  }

  it('with a declared Content-Length: 413 NVGRE_ERR_TOO_LARGE at once, and the daemon stays healthy', async () => {
    const before = await snapshot();
    const r = await rawRequest(env.socket, 'POST', '/v1/lookup-records', { 'content-type': 'application/json', 'content-length': 100 * MB }, pieces(100));
    expect(r.status, r.raw.toString()).toBe(413);
    expect(r.body.error.code).toBe('NVGRE_ERR_TOO_LARGE');
    expect(r.body.error.message).toContain(String(64 * MB));
    // refused from the head: (almost) nothing of the body was needed
    expect(r.bytesSent).toBeLessThan(64 * MB);
    expectSame(before, await snapshot());
    const s = await api.status();
    expect(s.pid).toBe(d.pid);
    expect(d.proc!.running).toBe(true);
  });

  it('chunked (no length): 413 once 64 MiB are read, and the daemon stays healthy', async () => {
    const before = await snapshot();
    const r = await rawRequest(env.socket, 'PUT', '/v1/policy', { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, pieces(100), {
      chunked: true,
      pauseAfterBytes: 65 * MB,
    });
    expect(r.status, r.raw.toString()).toBe(413);
    expect(r.body.error.code).toBe('NVGRE_ERR_TOO_LARGE');
    expect(r.bytesSent).toBeGreaterThan(64 * MB);
    expectSame(before, await snapshot());
    expect((await api.status()).pid).toBe(d.pid);
    // and still applies good changes
    const ok = await api.post('/v1/lookup-records', rec());
    expect(ok.status).toBe(201);
    expect((await api.delete(keyPath('lookup-records', 6000, '10.0.1.150'))).status).toBe(200);
  });
});

describe('YAML bodies: at most 128 KiB (the parser needs far more time and heap per byte than JSON)', () => {
  const LIMIT = 128 * 1024;
  /** The running policy as a YAML document of exactly `size` bytes (a comment pads it). */
  const yamlOf = (size: number): Buffer => {
    const text = toYaml(base);
    const pad = size - Buffer.byteLength(text) - 2;
    expect(pad).toBeGreaterThan(0);
    return Buffer.from(`${text}#${'x'.repeat(pad)}\n`);
  };

  it('one byte over, with a declared length: 413 NVGRE_ERR_TOO_LARGE from the head, pointing to JSON', async () => {
    const before = await snapshot();
    const r = await rawRequest(env.socket, 'PUT', '/v1/policy', { 'content-type': 'application/yaml', 'content-length': LIMIT + 1 }, [yamlOf(LIMIT + 1)]);
    expect(r.status, r.raw.toString()).toBe(413);
    expect(r.body.error.code).toBe('NVGRE_ERR_TOO_LARGE');
    expect(r.body.error.message).toContain(`larger than ${LIMIT} bytes, the limit for YAML: send larger documents as JSON`);
    expectSame(before, await snapshot());
  });

  it('chunked (no length): 413 once the limit is passed', async () => {
    const before = await snapshot();
    const r = await rawRequest(env.socket, 'PUT', '/v1/policy', { 'content-type': 'application/yaml', 'transfer-encoding': 'chunked' }, [yamlOf(LIMIT + 1)], { chunked: true });
    expect(r.status, r.raw.toString()).toBe(413);
    expect(r.body.error.code).toBe('NVGRE_ERR_TOO_LARGE');
    expectSame(before, await snapshot());
  });

  it('exactly at the limit: parsed and applied; JSON of the same size is not limited by it', async () => {
    const y = await api.put('/v1/policy', yamlOf(LIMIT), { 'content-type': 'application/yaml' });
    expect(y.status, y.raw.toString()).toBe(200);
    const json = JSON.stringify(base);
    const j = await api.put('/v1/policy', json + ' '.repeat(2 * LIMIT - json.length), { 'content-type': 'application/json' });
    expect(j.status, j.raw.toString()).toBe(200);
    expect((await api.get('/v1/policy')).body).toEqual(base);
  });
});

describe('the daemon after the battery', () => {
  it('still runs the policy it started with and logged no internal error', async () => {
    expect((await api.get('/v1/policy')).body).toEqual(base);
    expect(d.proc!.running).toBe(true);
    const internal = d.logLines().filter((l) => l.level === 'error' || l.level === 'fatal');
    expect(internal).toEqual([]);
  });
});
