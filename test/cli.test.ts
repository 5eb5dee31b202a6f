// nvgrectl against a fake control API: a node:http server on a temporary
// Unix socket records every request and answers canned responses; the CLI's
// run() is called in-process with captured stdout/stderr. Checked: for every
// object and command the method, path (encoded key segments), query and body;
// output formats; -j/-p; -batch; help; exit statuses for each HTTP status
// class and for an unreachable socket (missing, refused, permission denied).

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { EXIT, EXIT_CODE_TABLE, exitCodeForHttpStatus, run, splitLine } from '../src/cli/index.js';
import { readablePackage } from './helpers/readable-package.js';
import { scratchDir } from './helpers/scratch.js';

const ROOT = join(import.meta.dirname, '..');
const GOOD_CONFIG = join(ROOT, 'lab', 'configs', 'host1.yaml');
const RD = '{12345678-1000-2000-3000-123456780001}';
const RD_ENC = '%7B12345678-1000-2000-3000-123456780001%7D';

interface Recorded {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  text: string;
  body: unknown;
}
interface Reply {
  status?: number;
  body?: unknown;
  /** Sent as is instead of JSON.stringify(body). */
  raw?: string;
  type?: string;
  /** Never answer. */
  hang?: boolean;
  /** Send the head and the payload, but never end the response (an event stream). */
  keepOpen?: boolean;
}

const LR = {
  customer_address: '10.0.1.101',
  vsid: 6000,
  mac: '60:00:60:00:01:01',
  provider_address: '192.168.0.22',
  rule: 'encap',
  type: 'static',
  vm_name: 'Contoso1',
};
const LR2 = { customer_address: '10.0.1.1', vsid: 6000, mac: '60:00:60:00:01:00', provider_address: '192.168.0.22', rule: 'encap', type: 'static' };
const CR = { routing_domain: RD, vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0', metric: 0 };
const PAR = { address: '192.168.0.22', prefix_length: 24, interface: 'eth1', vlan_id: 0 };
const PR = { destination_prefix: '192.168.1.0/24', next_hop: '192.168.0.1', interface: 'eth1', metric: 0 };
const AD = { name: 'contoso1', vm_name: 'Contoso1', mac: '60:00:60:00:01:01', vsid: 6000, netns: 'nvlab-contoso1', mtu: 1458 };
const STATUS = {
  version: '0.1.0',
  host: 'host1',
  pid: 1234,
  uptime_seconds: 12.5,
  config_file: '/etc/nvgred/nvgred.yaml',
  state_dir: '/var/lib/nvgred',
  state_error: null,
  generation: 17,
  counts: { provider_addresses: 1, provider_routes: 0, customer_routes: 4, lookup_records: 8, vm_adapters: 4 },
  ports: [{ name: 'contoso1', vsid: 6000, mac: '60:00:60:00:01:01', netns: 'nvlab-contoso1', ifindex: 2, mtu: 1458, up: true }],
  last_reload: { successful: true, timestamp: '2026-11-21T12:00:00.000Z', error: null },
};
const POLICY = {
  host: { name: 'host1' },
  provider_addresses: [PAR],
  provider_routes: [],
  customer_routes: [CR],
  lookup_records: [LR],
  vm_adapters: [AD],
  encapsulation: { flow_id: 'hash' },
  api: { socket: '/run/nvgred/nvgred.sock' },
  metrics: { listen: '127.0.0.1:9470' },
};
const POLICY_YAML = 'host:\n  name: host1\nprovider_addresses: []\n';

/** What the fake daemon answers when no reply is queued. */
function defaultReply(r: Recorded): Reply {
  const path = r.url.split('?')[0]!;
  const lists: Record<string, [string, unknown[]]> = {
    '/v1/lookup-records': ['lookup_records', [LR, LR2]],
    '/v1/customer-routes': ['customer_routes', [CR]],
    '/v1/provider-addresses': ['provider_addresses', [PAR]],
    '/v1/provider-routes': ['provider_routes', [PR]],
    '/v1/vm-adapters': ['vm_adapters', [AD]],
  };
  if (path === '/v1/status') return { body: STATUS };
  if (path === '/v1/policy') {
    return /yaml/.test(String(r.headers.accept)) ? { raw: POLICY_YAML, type: 'application/yaml' } : { body: POLICY };
  }
  if (path === '/v1/reload') return { body: { applied: true, changes: {}, restart_required: [] } };
  if (path === '/v1/config/save') return { body: { path: '/etc/nvgred/nvgred.yaml' } };
  const list = lists[path];
  if (list) {
    if (r.method === 'GET') return { body: { [list[0]]: list[1] } };
    if (r.method === 'DELETE') return { body: { deleted: 3 } };
    if (r.method === 'POST') return { status: 201, body: r.body };
  }
  if (r.method === 'DELETE') return { body: { deleted: LR } };
  if (r.method === 'PUT' || r.method === 'PATCH') return { body: r.body };
  return { status: 404, body: { error: { code: 'NVGRE_ERR_NOT_FOUND', message: `no route for ${r.method} ${path}` } } };
}

const dir = scratchDir('cli');
chmodSync(dir, 0o755); // the permission test runs as another user
const SOCK = join(dir, 'api.sock');
let server: Server;
let requests: Recorded[] = [];
let queue: Reply[] = [];

function listen(srv: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(path, () => resolve());
  });
}

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        body = text;
      }
      const r: Recorded = { method: req.method!, url: req.url!, headers: req.headers, text, body };
      requests.push(r);
      const reply = queue.shift() ?? defaultReply(r);
      if (reply.hang) return;
      const payload = reply.raw ?? JSON.stringify(reply.body ?? {});
      res.writeHead(reply.status ?? 200, { 'content-type': reply.type ?? 'application/json' });
      if (reply.keepOpen) res.write(payload);
      else res.end(payload);
    });
  });
  await listen(server, SOCK);
});

afterAll(async () => {
  server.closeAllConnections(); // monitor's streams included
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

beforeEach(() => {
  requests = [];
  queue = [];
});

interface Result {
  code: number;
  out: string;
  err: string;
}

async function cli(
  argv: string[],
  opts: { stdin?: string; env?: Record<string, string>; socket?: string | null; timeoutMs?: number } = {},
): Promise<Result> {
  let out = '';
  let err = '';
  const sock = opts.socket === undefined ? ['-s', SOCK] : opts.socket === null ? [] : ['-s', opts.socket];
  const code = await run([...sock, ...argv], {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    stdin: opts.stdin === undefined ? Readable.from([]) : Readable.from([Buffer.from(opts.stdin)]),
    env: opts.env ?? {},
  }, opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs });
  return { code, out, err };
}

/** The one request a command made: method, url, body. */
function only(): { method: string; url: string; body: unknown } {
  expect(requests).toHaveLength(1);
  const r = requests[0]!;
  return { method: r.method, url: r.url, body: r.body };
}

async function ok(argv: string[]): Promise<Result> {
  const r = await cli(argv);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  return r;
}

// ------------------------------------------------------------------ lookup

describe('lookup', () => {
  it('add: POST the record in the config shape; prints nothing', async () => {
    const r = await ok(['lookup', 'add', '10.0.1.101', 'vsid', '6000', 'mac', '60:00:60:00:01:01', 'pa', '192.168.0.22', 'rule', 'encap', 'type', 'static', 'vm', 'Contoso1']);
    expect(r.out).toBe('');
    expect(only()).toEqual({ method: 'POST', url: '/v1/lookup-records', body: LR });
    expect(requests[0]!.headers['content-type']).toBe('application/json');
  });

  it('add: optional fields are left out (the daemon fills defaults)', async () => {
    await ok(['lookup', 'add', '10.0.1.102', 'vsid', '6000', 'mac', '60-00-60-00-01-02', 'pa', '192.168.0.22']);
    expect(only().body).toEqual({ customer_address: '10.0.1.102', vsid: 6000, mac: '60-00-60-00-01-02', provider_address: '192.168.0.22' });
  });

  it('add -j prints the API answer on one line', async () => {
    const r = await ok(['-j', 'lookup', 'add', '10.0.1.101', 'vsid', '6000', 'mac', '60:00:60:00:01:01', 'pa', '192.168.0.22', 'vm', 'Contoso1']);
    expect(r.out).toBe(`${JSON.stringify(requests[0]!.body)}\n`);
  });

  it('replace: PUT to vsid/CA', async () => {
    await ok(['lookup', 'replace', '10.0.1.101', 'vsid', '6000', 'mac', '60:00:60:00:01:01', 'pa', '192.168.0.22', 'rule', 'encap', 'type', 'static', 'vm', 'Contoso1']);
    expect(only()).toEqual({ method: 'PUT', url: '/v1/lookup-records/6000/10.0.1.101', body: LR });
  });

  it('replace of an L2Only record (CA 0.0.0.0): the MAC is the third key segment', async () => {
    await ok(['lookup', 'replace', '0.0.0.0', 'vsid', '6000', 'mac', '60:00:60:00:09:09', 'pa', '192.168.0.33', 'type', 'l2only']);
    expect(only()).toEqual({
      method: 'PUT',
      url: '/v1/lookup-records/6000/0.0.0.0/60%3A00%3A60%3A00%3A09%3A09',
      body: { customer_address: '0.0.0.0', vsid: 6000, mac: '60:00:60:00:09:09', provider_address: '192.168.0.33', type: 'l2only' },
    });
  });

  it('change: PATCH the given non-key fields; mac is a new value', async () => {
    await ok(['lookup', 'change', '10.0.1.101', 'vsid', '6000', 'pa', '192.168.0.33', 'mac', '60:00:60:00:02:01', 'vm', 'Moved']);
    expect(only()).toEqual({
      method: 'PATCH',
      url: '/v1/lookup-records/6000/10.0.1.101',
      body: { mac: '60:00:60:00:02:01', provider_address: '192.168.0.33', vm_name: 'Moved' },
    });
  });

  it('change of an L2Only record: mac is the key, not a value; IPv6 :: too', async () => {
    await ok(['lookup', 'change', '::', 'vsid', '6000', 'mac', '60:00:60:00:09:09', 'pa', 'fd00::33']);
    expect(only()).toEqual({
      method: 'PATCH',
      url: '/v1/lookup-records/6000/%3A%3A/60%3A00%3A60%3A00%3A09%3A09',
      body: { provider_address: 'fd00::33' },
    });
  });

  it('change without anything to change is a usage error (nothing sent)', async () => {
    const r = await cli(['lookup', 'change', '10.0.1.101', 'vsid', '6000']);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.err).toContain('Error: nothing to change');
    expect(requests).toHaveLength(0);
  });

  it('del: DELETE vsid/CA, with the MAC segment when given; IPv6 CA encoded', async () => {
    await ok(['lookup', 'del', '10.0.1.101', 'vsid', '6000']);
    expect(only()).toEqual({ method: 'DELETE', url: '/v1/lookup-records/6000/10.0.1.101', body: undefined });
    requests = [];
    await ok(['lookup', 'del', 'fd00::1:101', 'vsid', '6000', 'mac', '60-00-60-00-01-01']);
    expect(only().url).toBe('/v1/lookup-records/6000/fd00%3A%3A1%3A101/60-00-60-00-01-01');
  });

  it('del -j prints {"deleted": record}', async () => {
    const r = await ok(['-j', 'lookup', 'del', '10.0.1.101', 'vsid', '6000']);
    expect(JSON.parse(r.out)).toEqual({ deleted: LR });
  });

  it('flush with filters: DELETE with a query; prints how many', async () => {
    const r = await ok(['lookup', 'flush', 'vsid', '6000', 'pa', '192.168.0.33', 'type', 'static', 'ca', '10.0.1.0', 'mac', '60:00:60:00:01:01']);
    expect(only()).toEqual({
      method: 'DELETE',
      url: '/v1/lookup-records?vsid=6000&customer_address=10.0.1.0&mac=60%3A00%3A60%3A00%3A01%3A01&provider_address=192.168.0.33&type=static',
      body: undefined,
    });
    expect(r.out).toBe('Deleted 3 lookup records\n');
  });

  it('flush all: ?all=true; flush -j prints {"deleted": N}', async () => {
    queue.push({ body: { deleted: 1 } });
    const r = await ok(['lookup', 'flush', 'all']);
    expect(only().url).toBe('/v1/lookup-records?all=true');
    expect(r.out).toBe('Deleted 1 lookup record\n');
    requests = [];
    const j = await ok(['-j', 'lookup', 'flush', 'all']);
    expect(j.out).toBe('{"deleted":3}\n');
  });

  it('flush without a filter or "all", or with both, is a usage error', async () => {
    for (const argv of [['lookup', 'flush'], ['lookup', 'flush', 'all', 'vsid', '6000']]) {
      const r = await cli(argv);
      expect(r.code).toBe(EXIT.USAGE);
    }
    expect(requests).toHaveLength(0);
  });

  it('show: one line per record; filters in the query', async () => {
    const r = await ok(['lookup', 'show', 'vsid', '6000', 'pa', '192.168.0.22']);
    expect(only()).toEqual({ method: 'GET', url: '/v1/lookup-records?vsid=6000&provider_address=192.168.0.22', body: undefined });
    expect(r.out).toBe(
      '10.0.1.101 vsid 6000 mac 60:00:60:00:01:01 pa 192.168.0.22 rule encap type static vm Contoso1\n' +
        '10.0.1.1 vsid 6000 mac 60:00:60:00:01:00 pa 192.168.0.22 rule encap type static\n',
    );
  });

  it('show -j prints exactly the API JSON on one line; -p indents it', async () => {
    const j = await ok(['-j', 'lookup', 'show']);
    expect(j.out).toBe(`${JSON.stringify({ lookup_records: [LR, LR2] })}\n`);
    const p = await ok(['-j', '-p', 'lookup', 'show']);
    expect(p.out).toBe(`${JSON.stringify({ lookup_records: [LR, LR2] }, null, 2)}\n`);
    const p2 = await ok(['-pretty', 'lookup', 'show']);
    expect(p2.out).toBe(p.out);
  });

  it('an empty list prints nothing', async () => {
    queue.push({ body: { lookup_records: [] } });
    const r = await ok(['lookup', 'show']);
    expect(r.out).toBe('');
  });

  it('"lookup" alone is show; abbreviations and aliases', async () => {
    await ok(['lookup']);
    await ok(['l', 's']);
    await ok(['lookup', 'list']);
    await ok(['lo', 'd', '10.0.1.101', 'vsid', '6000']);
    await ok(['r']); // a prefix is the first object it begins, as in iproute2: route, not reload
    expect(requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      'GET /v1/lookup-records',
      'GET /v1/lookup-records',
      'GET /v1/lookup-records',
      'DELETE /v1/lookup-records/6000/10.0.1.101',
      'GET /v1/customer-routes',
    ]);
  });
});

// ------------------------------------------------------------------ route

describe('route', () => {
  it('add: on-link by default (0.0.0.0 / ::)', async () => {
    await ok(['route', 'add', '10.0.1.0/24', 'vsid', '6000', 'rdid', RD]);
    expect(only()).toEqual({ method: 'POST', url: '/v1/customer-routes', body: { routing_domain: RD, vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0' } });
    requests = [];
    await ok(['route', 'add', 'fd00:1::/64', 'vsid', '6000', 'rdid', RD, 'metric', '5']);
    expect(only().body).toEqual({ routing_domain: RD, vsid: 6000, destination_prefix: 'fd00:1::/64', next_hop: '::', metric: 5 });
  });

  it('replace: PUT rdid/vsid/prefix, encoded', async () => {
    await ok(['route', 'replace', '0.0.0.0/0', 'vsid', '6001', 'rdid', RD, 'via', '10.0.2.2', 'metric', '0']);
    expect(only()).toEqual({
      method: 'PUT',
      url: `/v1/customer-routes/${RD_ENC}/6001/0.0.0.0%2F0`,
      body: { routing_domain: RD, vsid: 6001, destination_prefix: '0.0.0.0/0', next_hop: '10.0.2.2', metric: 0 },
    });
  });

  it('change: PATCH next_hop/metric', async () => {
    await ok(['route', 'change', '0.0.0.0/0', 'vsid', '6001', 'rdid', RD, 'via', '10.0.2.3']);
    expect(only()).toEqual({ method: 'PATCH', url: `/v1/customer-routes/${RD_ENC}/6001/0.0.0.0%2F0`, body: { next_hop: '10.0.2.3' } });
  });

  it('del: DELETE rdid/vsid/prefix; missing rdid is a usage error', async () => {
    await ok(['route', 'del', '10.0.1.0/24', 'vsid', '6000', 'rdid', RD]);
    expect(only()).toEqual({ method: 'DELETE', url: `/v1/customer-routes/${RD_ENC}/6000/10.0.1.0%2F24`, body: undefined });
    requests = [];
    const r = await cli(['route', 'del', '10.0.1.0/24', 'vsid', '6000']);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.err).toContain('Error: missing "rdid GUID"');
    expect(requests).toHaveLength(0);
  });

  it('flush and show with filters', async () => {
    const f = await ok(['route', 'flush', 'rdid', RD]);
    expect(only()).toEqual({ method: 'DELETE', url: `/v1/customer-routes?routing_domain=${RD_ENC}`, body: undefined });
    expect(f.out).toBe('Deleted 3 customer routes\n');
    requests = [];
    const s = await ok(['route', 'show', 'vsid', '6000']);
    expect(only().url).toBe('/v1/customer-routes?vsid=6000');
    expect(s.out).toBe(`10.0.1.0/24 vsid 6000 rdid ${RD} via 0.0.0.0 metric 0\n`);
  });

  it('get: GET /v1/next-hop; encap and drop formats', async () => {
    queue.push({
      body: {
        vsid: 6000,
        destination: '10.1.3.100',
        routing_domain: RD,
        action: 'encap',
        customer_route: { routing_domain: RD, vsid: 6001, destination_prefix: '0.0.0.0/0', next_hop: '10.0.2.2', metric: 0 },
        lookup_record: { customer_address: '10.0.2.2', vsid: 6001, mac: '60:01:60:01:03:01', provider_address: '192.168.0.11', rule: 'encap', type: 'static' },
        provider_address: '192.168.0.11',
        local_provider_address: '192.168.0.22',
        encap_vsid: 6001,
      },
    });
    const r = await ok(['route', 'get', '10.1.3.100', 'vsid', '6000']);
    expect(only()).toEqual({ method: 'GET', url: '/v1/next-hop?vsid=6000&destination=10.1.3.100', body: undefined });
    expect(r.out).toBe('10.1.3.100 vsid 6000 via 10.0.2.2 vsid 6001 mac 60:01:60:01:03:01 pa 192.168.0.11 encap\n');

    queue.push({
      body: {
        vsid: 6000, destination: '10.9.9.9', routing_domain: RD, action: 'drop', drop_reason: 'no_route',
        customer_route: null, lookup_record: null, provider_address: null, local_provider_address: null, encap_vsid: null,
      },
    });
    const d = await ok(['ro', 'g', '10.9.9.9', 'vsid', '6000']);
    expect(d.out).toBe('10.9.9.9 vsid 6000 drop no_route\n');
  });

  it('get with an IPv6 CA: the query value is encoded', async () => {
    queue.push({ body: { vsid: 6000, destination: 'fd00::5', action: 'drop', drop_reason: 'no_route' } });
    await ok(['route', 'get', 'fd00::5', 'vsid', '6000']);
    expect(only().url).toBe('/v1/next-hop?vsid=6000&destination=fd00%3A%3A5');
  });
});

// ------------------------------------------------------------------ pa

describe('pa', () => {
  it('add: ADDR/LEN split into address and prefix_length', async () => {
    await ok(['pa', 'add', '192.168.0.22/24', 'dev', 'eth1', 'vlan', '10']);
    expect(only()).toEqual({
      method: 'POST',
      url: '/v1/provider-addresses',
      body: { address: '192.168.0.22', prefix_length: 24, interface: 'eth1', vlan_id: 10 },
    });
  });

  it('add with a MAC is a usage error: a provider address has its interface\'s MAC', async () => {
    const r = await cli(['pa', 'add', '192.168.0.22/24', 'dev', 'eth1', 'mac', '02:00:00:00:00:22']);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.err).toContain('mac');
    expect(requests).toHaveLength(0);
  });

  it('add without /LEN or with a non-numeric one is a usage error', async () => {
    expect((await cli(['pa', 'add', '192.168.0.22', 'dev', 'eth1'])).code).toBe(EXIT.USAGE);
    expect((await cli(['pa', 'add', '192.168.0.22/x', 'dev', 'eth1'])).code).toBe(EXIT.USAGE);
    expect(requests).toHaveLength(0);
  });

  it('replace: PUT to the address (IPv6 encoded)', async () => {
    await ok(['pa', 'replace', 'fd00::22/64', 'dev', 'eth1']);
    expect(only()).toEqual({ method: 'PUT', url: '/v1/provider-addresses/fd00%3A%3A22', body: { address: 'fd00::22', prefix_length: 64, interface: 'eth1' } });
  });

  it('change: a /LEN changes prefix_length', async () => {
    await ok(['pa', 'change', '192.168.0.22/16', 'vlan', '0']);
    expect(only()).toEqual({ method: 'PATCH', url: '/v1/provider-addresses/192.168.0.22', body: { prefix_length: 16, vlan_id: 0 } });
  });

  it('del (a /LEN is ignored), flush, show', async () => {
    await ok(['pa', 'del', '192.168.0.22/24']);
    expect(only()).toEqual({ method: 'DELETE', url: '/v1/provider-addresses/192.168.0.22', body: undefined });
    requests = [];
    const f = await ok(['pa', 'flush', 'dev', 'eth1']);
    expect(only().url).toBe('/v1/provider-addresses?interface=eth1');
    expect(f.out).toBe('Deleted 3 provider addresses\n');
    requests = [];
    const s = await ok(['pa', 'show', 'dev', 'eth1']);
    expect(only().url).toBe('/v1/provider-addresses?interface=eth1');
    expect(s.out).toBe('192.168.0.22/24 dev eth1 vlan 0\n');
  });
});

// ------------------------------------------------------------------ proute

describe('proute', () => {
  it('add: via given, or on-link', async () => {
    await ok(['proute', 'add', '192.168.1.0/24', 'via', '192.168.0.1', 'dev', 'eth1', 'metric', '10']);
    expect(only()).toEqual({ method: 'POST', url: '/v1/provider-routes', body: { destination_prefix: '192.168.1.0/24', next_hop: '192.168.0.1', interface: 'eth1', metric: 10 } });
    requests = [];
    await ok(['proute', 'add', '192.168.2.0/24', 'dev', 'eth1']);
    expect(only().body).toEqual({ destination_prefix: '192.168.2.0/24', next_hop: '0.0.0.0', interface: 'eth1' });
  });

  it('replace and change: key prefix/interface/next_hop', async () => {
    await ok(['proute', 'replace', '192.168.1.0/24', 'via', '192.168.0.1', 'dev', 'eth1']);
    expect(only()).toEqual({
      method: 'PUT',
      url: '/v1/provider-routes/192.168.1.0%2F24/eth1/192.168.0.1',
      body: { destination_prefix: '192.168.1.0/24', next_hop: '192.168.0.1', interface: 'eth1' },
    });
    requests = [];
    await ok(['proute', 'change', '192.168.1.0/24', 'via', '192.168.0.1', 'dev', 'eth1', 'metric', '7']);
    expect(only()).toEqual({ method: 'PATCH', url: '/v1/provider-routes/192.168.1.0%2F24/eth1/192.168.0.1', body: { metric: 7 } });
  });

  it('del: via omitted = on-link; flush; show', async () => {
    await ok(['proute', 'del', 'fd00:2::/64', 'dev', 'eth1']);
    expect(only()).toEqual({ method: 'DELETE', url: '/v1/provider-routes/fd00%3A2%3A%3A%2F64/eth1/%3A%3A', body: undefined });
    requests = [];
    await ok(['proute', 'flush', 'all']);
    expect(only().url).toBe('/v1/provider-routes?all=true');
    requests = [];
    const s = await ok(['proute', 'show']);
    expect(only().url).toBe('/v1/provider-routes');
    expect(s.out).toBe('192.168.1.0/24 via 192.168.0.1 dev eth1 metric 0\n');
  });
});

// ------------------------------------------------------------------ adapter

describe('adapter', () => {
  it('add and replace', async () => {
    await ok(['adapter', 'add', 'contoso1', 'mac', '60:00:60:00:01:01', 'vsid', '6000', 'netns', 'nvlab-contoso1', 'mtu', '1458', 'vm', 'Contoso1']);
    expect(only()).toEqual({ method: 'POST', url: '/v1/vm-adapters', body: AD });
    expect(Object.keys(requests[0]!.body as object)).toEqual(['name', 'vm_name', 'mac', 'vsid', 'netns', 'mtu']);
    requests = [];
    await ok(['adapter', 'replace', 'contoso1', 'mac', '60:00:60:00:01:01', 'vsid', '6000']);
    expect(only()).toEqual({ method: 'PUT', url: '/v1/vm-adapters/contoso1', body: { name: 'contoso1', mac: '60:00:60:00:01:01', vsid: 6000 } });
  });

  it('"name" spells out a NAME that looks like a keyword', async () => {
    await ok(['adapter', 'del', 'name', 'vsid']);
    expect(only().url).toBe('/v1/vm-adapters/vsid');
  });

  it('change, del, flush, show', async () => {
    await ok(['adapter', 'change', 'contoso1', 'mtu', '1400']);
    expect(only()).toEqual({ method: 'PATCH', url: '/v1/vm-adapters/contoso1', body: { mtu: 1400 } });
    requests = [];
    await ok(['adapter', 'del', 'contoso1']);
    expect(only()).toEqual({ method: 'DELETE', url: '/v1/vm-adapters/contoso1', body: undefined });
    requests = [];
    const f = await ok(['adapter', 'flush', 'all']);
    expect(only().url).toBe('/v1/vm-adapters?all=true');
    expect(f.out).toBe('Deleted 3 VM adapters\n');
    requests = [];
    const s = await ok(['adapter', 'show', 'vsid', '6000']);
    expect(only().url).toBe('/v1/vm-adapters?vsid=6000');
    expect(s.out).toBe('contoso1 mac 60:00:60:00:01:01 vsid 6000 netns nvlab-contoso1 mtu 1458 vm Contoso1\n');
  });
});

// ------------------------------------------------------------------ status, reload, config

describe('status, reload, config', () => {
  it('status: a short summary; -j the JSON', async () => {
    const r = await ok(['status']);
    expect(only()).toEqual({ method: 'GET', url: '/v1/status', body: undefined });
    expect(r.out).toContain('nvgred 0.1.0 host host1 pid 1234 up 12.5s generation 17');
    expect(r.out).toContain('config /etc/nvgred/nvgred.yaml state_dir /var/lib/nvgred');
    expect(r.out).toContain('records: provider_addresses 1, provider_routes 0, customer_routes 4, lookup_records 8, vm_adapters 4');
    expect(r.out).toContain('last reload: ok at 2026-11-21T12:00:00.000Z');
    expect(r.out).toContain('  contoso1 vsid 6000 mac 60:00:60:00:01:01 netns nvlab-contoso1 ifindex 2 mtu 1458 up');
    expect(r.out).not.toContain('NOT SAVED');
    const j = await ok(['-j', 'status']);
    expect(JSON.parse(j.out)).toEqual(STATUS);
    expect(j.out.trimEnd()).not.toContain('\n');
  });

  it('status: a state_dir that cannot be written is said plainly', async () => {
    const error = 'cannot save the policy to /var/lib/nvgred/policy.json: ENOSPC: no space left on device, write';
    queue.push({ body: { ...STATUS, state_error: error } });
    const r = await ok(['status']);
    expect(r.out).toContain(`config /etc/nvgred/nvgred.yaml state_dir /var/lib/nvgred\nstate NOT SAVED (changes are refused): ${error}\n`);
  });

  it('reload: prints what changed and what needs a restart', async () => {
    queue.push({
      body: {
        applied: true,
        changes: { lookup_records: { added: 1, removed: 0, changed: 2 }, customer_routes: { added: 0, removed: 0, changed: 0 } },
        restart_required: ['api.socket'],
      },
    });
    const r = await ok(['reload']);
    expect(only()).toEqual({ method: 'POST', url: '/v1/reload', body: {} });
    expect(r.out).toBe('lookup_records: 1 added, 0 removed, 2 changed\nrestart required for: api.socket (takes effect at the next start)\n');
    const n = await ok(['reload']);
    expect(n.out).toBe('no changes\n');
  });

  it('reload of a bad file: exit 4, the message and each detail indented', async () => {
    queue.push({
      status: 400,
      body: {
        error: {
          code: 'NVGRE_ERR_CONFIG',
          message: '/etc/nvgred/nvgred.yaml: config has 2 errors:\n  line 3:11: lookup_records[0].vsid: 4000 is out of range\n  line 9:5: bogus: unknown key',
          details: [
            { code: 'NVGRE_ERR_VSID_RANGE', path: 'lookup_records[0].vsid', value: 4000, message: 'lookup_records[0].vsid: 4000 is out of range', line: 3, column: 11 },
            { code: 'NVGRE_ERR_UNKNOWN_KEY', path: 'bogus', value: 1, message: 'bogus: unknown key', line: 9, column: 5 },
          ],
        },
      },
    });
    const r = await cli(['reload']);
    expect(r.code).toBe(EXIT.INVALID);
    expect(r.out).toBe('');
    expect(r.err).toBe(
      'Error: /etc/nvgred/nvgred.yaml: config has 2 errors:\n' +
        '  line 3:11: lookup_records[0].vsid: 4000 is out of range\n' +
        '  line 9:5: bogus: unknown key\n',
    );
  });

  it('config show: YAML (Accept: application/yaml); -j: the JSON policy', async () => {
    const r = await ok(['config', 'show']);
    expect(requests[0]!.headers.accept).toBe('application/yaml');
    expect(r.out).toBe(POLICY_YAML);
    requests = [];
    const j = await ok(['-j', 'config', 'show']);
    expect(requests[0]!.headers.accept).toBe('application/json');
    expect(JSON.parse(j.out)).toEqual(POLICY);
  });

  it('config show converts to YAML when the daemon answers JSON anyway', async () => {
    queue.push({ body: POLICY });
    const r = await ok(['config', 'show']);
    expect(parseYaml(r.out)).toEqual(POLICY);
  });

  it('config save: POST /v1/config/save {}', async () => {
    const r = await ok(['config', 'save']);
    expect(only()).toEqual({ method: 'POST', url: '/v1/config/save', body: {} });
    expect(r.out).toBe('');
  });

  it('config save FILE: the YAML policy written atomically (no temporary file left, mode kept)', async () => {
    const sub = join(dir, 'save');
    mkdirSync(sub);
    const file = join(sub, 'policy.yaml');
    await ok(['config', 'save', file]);
    expect(requests[0]!.method).toBe('GET');
    expect(requests[0]!.url).toBe('/v1/policy');
    expect(requests[0]!.headers.accept).toBe('application/yaml');
    expect(readFileSync(file, 'utf8')).toBe(POLICY_YAML);
    expect(readdirSync(sub)).toEqual(['policy.yaml']);
    chmodSync(file, 0o600);
    queue.push({ raw: 'host: {}\n', type: 'application/yaml' });
    await ok(['config', 'save', file]);
    expect(readFileSync(file, 'utf8')).toBe('host: {}\n');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(sub)).toEqual(['policy.yaml']);
  });

  it('config save FILE into a missing directory: exit 1', async () => {
    const r = await cli(['config', 'save', join(dir, 'no', 'such', 'dir', 'p.yaml')]);
    expect(r.code).toBe(EXIT.INTERNAL);
    expect(r.err).toMatch(/^Error: cannot write .*p\.yaml: no such file or directory/);
  });

  it('config save -: to stdout', async () => {
    const r = await ok(['config', 'save', '-']);
    expect(r.out).toBe(POLICY_YAML);
  });

  it('config check: a good file (no daemon needed)', async () => {
    const r = await cli(['config', 'check', GOOD_CONFIG], { socket: join(dir, 'nothing-here.sock') });
    expect(r).toEqual({ code: 0, out: `${GOOD_CONFIG}: ok\n`, err: '' });
    expect(requests).toHaveLength(0);
  });

  it('config check: a bad file prints each error with its line, exit 4', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      [
        'customer_routes:',
        '  - routing_domain: "{12345678-1000-2000-3000-123456780001}"',
        '    vsid: 4000',
        '    destination_prefix: 10.0.1.0/24',
        '    next_hop: 0.0.0.0',
        'bogus: 1',
        '',
      ].join('\n'),
    );
    const r = await cli(['config', 'check', bad]);
    expect(r.code).toBe(EXIT.INVALID);
    expect(r.out).toBe('');
    const lines = r.err.trimEnd().split('\n');
    expect(lines[0]).toBe(`Error: ${bad}: config has 2 errors:`);
    expect(lines).toHaveLength(3);
    expect(lines[1]).toMatch(/^ {2}line 3:\d+: customer_routes\[0\]\.vsid: 4000 /);
    expect(lines[2]).toMatch(/^ {2}line 6:\d+: .*bogus/);
  });

  it('config check: YAML syntax error exit 4; missing file exit 1', async () => {
    const bad = join(dir, 'syntax.yaml');
    writeFileSync(bad, 'lookup_records: [\n');
    const r = await cli(['config', 'check', bad]);
    expect(r.code).toBe(EXIT.INVALID);
    expect(r.err).toMatch(/^Error: /);
    const m = await cli(['config', 'check', join(dir, 'missing.yaml')]);
    expect(m.code).toBe(EXIT.INTERNAL);
    expect(m.err).toContain('no such file');
  });
});

// ------------------------------------------------------------------ errors and exit statuses

describe('exit statuses', () => {
  const cases: [number, string, number][] = [
    [400, 'NVGRE_ERR_VSID_RANGE', EXIT.INVALID],
    [403, 'NVGRE_ERR_PERMISSION', EXIT.FORBIDDEN],
    [404, 'NVGRE_ERR_NOT_FOUND', EXIT.NOT_FOUND],
    [405, 'NVGRE_ERR_METHOD', EXIT.INTERNAL],
    [409, 'NVGRE_ERR_EXISTS', EXIT.CONFLICT],
    [413, 'NVGRE_ERR_TOO_LARGE', EXIT.TOO_LARGE],
    [415, 'NVGRE_ERR_MEDIA_TYPE', EXIT.TOO_LARGE],
    [500, 'NVGRE_ERR_INTERNAL', EXIT.INTERNAL],
    [503, 'NVGRE_ERR_UNAVAILABLE', EXIT.INTERNAL],
  ];
  for (const [status, code, exit] of cases) {
    it(`HTTP ${status} ${code} -> exit ${exit}, the API's message on stderr`, async () => {
      queue.push({ status, body: { error: { code, message: `lookup record 6000/10.0.1.101: failed with ${code}` } } });
      const r = await cli(['lookup', 'add', '10.0.1.101', 'vsid', '6000', 'mac', '60:00:60:00:01:01', 'pa', '192.168.0.22']);
      expect(r.code).toBe(exit);
      expect(r.out).toBe('');
      expect(r.err).toBe(`Error: lookup record 6000/10.0.1.101: failed with ${code}\n`);
    });
  }

  it('no answer within the timeout: exit 1, naming the socket and request', async () => {
    queue.push({ hang: true });
    const r = await cli(['reload'], { timeoutMs: 300 });
    expect(r.code).toBe(EXIT.INTERNAL);
    expect(r.err).toBe(`Error: no answer from nvgred on ${SOCK} within 300 ms (POST /v1/reload)\n`);
  });

  it('a non-JSON error body: exit by status, the body quoted', async () => {
    queue.push({ status: 502, raw: 'Bad Gateway', type: 'text/plain' });
    const r = await cli(['status']);
    expect(r.code).toBe(EXIT.INTERNAL);
    expect(r.err).toBe('Error: the daemon answered HTTP 502: Bad Gateway\n');
  });

  it('validation error details are printed indented (without repeating them)', async () => {
    queue.push({
      status: 400,
      body: {
        error: {
          code: 'NVGRE_ERR_CONFIG',
          message: 'lookup record has 1 error:\n  vsid: 4000 is out of range (4096..16777214)',
          details: [{ code: 'NVGRE_ERR_VSID_RANGE', path: 'vsid', value: 4000, message: 'vsid: 4000 is out of range (4096..16777214)' }],
        },
      },
    });
    const r = await cli(['lookup', 'add', '10.0.1.101', 'vsid', '4000', 'mac', '60:00:60:00:01:01', 'pa', '192.168.0.22']);
    expect(r.code).toBe(EXIT.INVALID);
    expect(r.err).toBe('Error: lookup record has 1 error:\n  vsid: 4000 is out of range (4096..16777214)\n');
  });

  it('the central map: 2xx 0, 4xx by class, 5xx 1', () => {
    expect(exitCodeForHttpStatus(200)).toBe(0);
    expect(exitCodeForHttpStatus(201)).toBe(0);
    expect(exitCodeForHttpStatus(400)).toBe(4);
    expect(exitCodeForHttpStatus(422)).toBe(4);
    expect(exitCodeForHttpStatus(404)).toBe(5);
    expect(exitCodeForHttpStatus(409)).toBe(6);
    expect(exitCodeForHttpStatus(413)).toBe(7);
    expect(exitCodeForHttpStatus(415)).toBe(7);
    expect(exitCodeForHttpStatus(403)).toBe(8);
    expect(exitCodeForHttpStatus(500)).toBe(1);
    expect(exitCodeForHttpStatus(504)).toBe(1);
    expect(new Set(EXIT_CODE_TABLE.map(([c]) => c)).size).toBe(EXIT_CODE_TABLE.length);
  });

  it('usage errors: exit 2, nothing sent', async () => {
    const bad: [string[], RegExp][] = [
      [['bogus'], /^Error: object "bogus" is unknown\nTry "nvgrectl help"\.\n$/],
      [['lookup', 'frob'], /command "frob" is unknown\nTry "nvgrectl lookup help"/],
      [['lookup', 'add', '10.0.1.1', 'vsid', '6000', 'colour', 'red'], /unknown keyword "colour"/],
      [['lookup', 'add', '10.0.1.1', 'vsid'], /missing value after "vsid"/],
      [['lookup', 'add', '10.0.1.1', 'vsid', '6k', 'mac', 'x', 'pa', 'y'], /"vsid" needs a number, not "6k"/],
      [['lookup', 'add', '10.0.1.1', 'vsid', '1', 'vsid', '2'], /duplicate keyword "vsid"/],
      [['lookup', 'add', 'vsid', '6000', 'mac', 'x', 'pa', 'y'], /missing CA/],
      [['lookup', 'add', '10.0.1.1', 'vsid', '6000', 'pa', 'y'], /missing "mac MAC"/],
      [['adapter', 'add', 'a', 'mac', 'x', 'vsid', '6000', 'mtu', '-1'], /"mtu" needs a number/],
      [['-x', 'status'], /option "-x" is unknown/],
      [['-s'], /option "-s" needs a value/],
      [['status', 'extra'], /unknown keyword "extra"/],
    ];
    for (const [argv, re] of bad) {
      const r = await cli(argv);
      expect(r.code, argv.join(' ')).toBe(EXIT.USAGE);
      expect(r.err, argv.join(' ')).toMatch(re);
      expect(r.out).toBe('');
    }
    expect(requests).toHaveLength(0);
  });

  it('no arguments: usage on stderr, exit 2', async () => {
    const r = await cli([], { socket: null });
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.err).toContain('Usage: nvgrectl');
  });
});

// ------------------------------------------------------------------ unreachable daemon

describe('unreachable daemon: exit 3, the cause and the socket path', () => {
  it('socket missing (ENOENT)', async () => {
    const sock = join(dir, 'missing.sock');
    const r = await cli(['status'], { socket: sock });
    expect(r.code).toBe(EXIT.UNREACHABLE);
    expect(r.err).toBe(`Error: cannot reach nvgred: socket ${sock} does not exist (is nvgred running? use -s or $NVGRED_SOCKET for another socket)\n`);
  });

  it('connection refused (ECONNREFUSED: a socket file nobody listens on)', async () => {
    const sock = join(dir, 'stale.sock');
    // A process that binds and dies: the socket file stays, nothing listens.
    await new Promise<void>((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`]);
      child.on('exit', () => resolve());
      child.on('error', reject);
    });
    expect(existsSync(sock)).toBe(true);
    const r = await cli(['status'], { socket: sock });
    expect(r.code).toBe(EXIT.UNREACHABLE);
    expect(r.err).toBe(`Error: cannot reach nvgred: connection refused on ${sock} (nothing is listening: is nvgred running?)\n`);
  });

  it('$NVGRED_SOCKET is the default socket; -s overrides it', async () => {
    const r = await cli(['status'], { socket: null, env: { NVGRED_SOCKET: SOCK } });
    expect(r.code).toBe(0);
    const m = await cli(['status'], { socket: null, env: {} });
    if (!existsSync('/run/nvgred/nvgred.sock')) expect(m.err).toContain('/run/nvgred/nvgred.sock');
  });

  describe('permission denied (EACCES): a chmod 000 socket, as a non-root user', () => {
    const locked = join(dir, 'locked.sock');
    let lockedServer: Server;
    beforeAll(async () => {
      lockedServer = createServer((_req, res) => res.end('{}'));
      await listen(lockedServer, locked);
      chmodSync(locked, 0o000);
    });
    afterAll(async () => {
      await new Promise<void>((resolve) => lockedServer.close(() => resolve()));
    });
    const expected = `Error: cannot reach nvgred: permission denied on ${locked} (run as root or as a member of the daemon's group)\n`;

    // make test runs as root (namespaces need it): these drop to nobody.
    it('in-process, with the effective uid/gid of nobody (65534)', async () => {
      process.setegid!(65534);
      process.seteuid!(65534);
      let r: Result;
      try {
        r = await cli(['status'], { socket: locked });
      } finally {
        process.seteuid!(0);
        process.setegid!(0);
      }
      expect(r.code).toBe(EXIT.UNREACHABLE);
      expect(r.err).toBe(expected);
    });

    // A copy the user nobody can read, wherever the repository is cloned.
    const pkg = readablePackage();
    it('the compiled nvgrectl, run as nobody with setpriv (exit status of the process)', async () => {
      const main = join(pkg, 'dist', 'src', 'cli', 'main.js');
      const res = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, main, '-s', locked, 'status'], {
        encoding: 'utf8',
        cwd: '/',
      });
      expect(res.stderr).toBe(expected);
      expect(res.status).toBe(EXIT.UNREACHABLE);
    }, 60_000);
  });
});

// ------------------------------------------------------------------ batch

describe('-batch', () => {
  it('runs each line; blank lines and comments skipped; quotes', async () => {
    const file = join(dir, 'ok.batch');
    writeFileSync(
      file,
      [
        '# set up Contoso',
        '',
        `route add 10.0.1.0/24 vsid 6000 rdid ${RD}   # on-link`,
        '   lookup add 10.0.1.101 vsid 6000 mac 60:00:60:00:01:01 pa 192.168.0.22 vm "Contoso 1"',
        'lookup show',
      ].join('\n'),
    );
    const r = await ok(['-batch', file]);
    expect(requests.map((q) => `${q.method} ${q.url}`)).toEqual(['POST /v1/customer-routes', 'POST /v1/lookup-records', 'GET /v1/lookup-records']);
    expect((requests[1]!.body as { vm_name: string }).vm_name).toBe('Contoso 1');
    expect(r.out.split('\n')).toHaveLength(3);
  });

  it('stops at the first failing line: "Error: line N: …" and that command\'s exit status', async () => {
    const file = join(dir, 'fail.batch');
    writeFileSync(file, ['status', '# comment', 'lookup del 10.0.1.9 vsid 6000', 'status'].join('\n'));
    queue.push({ body: STATUS }, { status: 404, body: { error: { code: 'NVGRE_ERR_NOT_FOUND', message: 'no lookup record 6000/10.0.1.9' } } });
    const r = await cli(['-batch', file]);
    expect(r.code).toBe(EXIT.NOT_FOUND);
    expect(r.err).toBe('Error: line 3: no lookup record 6000/10.0.1.9\n');
    expect(requests).toHaveLength(2);
  });

  it('a usage error on a line: exit 2 with its line number', async () => {
    const r = await cli(['-b', '-'], { stdin: 'status\nlookup add 10.0.1.1 vsid six\nstatus\n' });
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.err).toMatch(/^Error: line 2: "vsid" needs a number, not "six"\n/);
    expect(requests).toHaveLength(1);
  });

  it('reads stdin with "-"; -j applies to every line', async () => {
    const r = await ok(['-j', '-batch', '-']);
    expect(r.out).toBe('');
    const s = await cli(['-j', '-batch', '-'], { stdin: 'status\nroute show\n' });
    expect(s.code).toBe(0);
    const lines = s.out.trimEnd().split('\n');
    expect(lines.map((l) => Object.keys(JSON.parse(l) as object)[0])).toEqual(['version', 'customer_routes']);
  });

  it('an unreadable batch file: exit 1; an OBJECT after -batch: exit 2', async () => {
    const r = await cli(['-batch', join(dir, 'nope.batch')]);
    expect(r.code).toBe(EXIT.INTERNAL);
    expect(r.err).toContain('cannot read batch file');
    const u = await cli(['-batch', '-', 'status'], { stdin: '' });
    expect(u.code).toBe(EXIT.USAGE);
  });

  it('splitLine: quotes, escapes, comments', () => {
    expect(splitLine(`  a 'b c' "d \\" e" f\\ g # h i`)).toEqual(['a', 'b c', 'd " e', 'f g']);
    expect(splitLine('# only')).toEqual([]);
    expect(splitLine('x#y')).toEqual(['x#y']);
    expect(() => splitLine('a "b')).toThrow(/unterminated quote/);
  });
});

// ------------------------------------------------------------------ monitor

describe('monitor', () => {
  const DYN = { customer_address: '10.0.1.105', vsid: 6000, mac: '60:00:60:00:02:05', provider_address: '192.168.0.33', rule: 'encap', type: 'dynamic' };
  const EVENTS = [
    { event: 'learned', time: '2026-11-21T12:00:00.000Z', record: DYN },
    { event: 'refused', time: '2026-11-21T12:00:01.000Z', record: { ...DYN, customer_address: '10.0.1.150' }, reason: 'limit' },
    { event: 'changed', time: '2026-11-21T12:00:02.000Z', record: { ...DYN, provider_address: '192.168.0.11' }, previous: DYN },
    { event: 'expired', time: '2026-11-21T12:00:03.000Z', record: DYN, last_seen: '2026-11-21T12:00:02.000Z' },
    { event: 'deleted', time: '2026-11-21T12:00:04.000Z', record: DYN, cause: 'api' },
  ];
  const sse = (evs: object[], extra = '') =>
    `: nvgred events\nretry: 2000\n\n${extra}` + evs.map((e, i) => `id: 1-${i + 1}\nevent: ${(e as { event: string }).event}\ndata: ${JSON.stringify(e)}\n\n`).join('');
  const stream = (evs: object[], keepOpen = true, extra = ''): Reply => ({ raw: sse(evs, extra), type: 'text/event-stream', keepOpen });

  it('GET /v1/events; one line per event in the words of the other commands; count N stops (exit 0)', async () => {
    queue.push(stream([...EVENTS, { event: 'newfangled', record: DYN }], true, ': heartbeat\n\n'));
    const r = await ok(['monitor', 'count', '5']);
    expect(r.out).toBe(
      [
        'learned 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33',
        'refused limit 10.0.1.150 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33',
        'changed 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.11 was mac 60:00:60:00:02:05 pa 192.168.0.33',
        'expired 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33 last_seen 2026-11-21T12:00:02.000Z',
        'deleted 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33 by api',
        '',
      ].join('\n'),
    );
    expect(only()).toEqual({ method: 'GET', url: '/v1/events', body: undefined });
    expect(requests[0]!.headers.accept).toBe('text/event-stream');
  });

  it('-j: each event\'s JSON on one line; event words filter', async () => {
    queue.push(stream(EVENTS));
    const j = await ok(['-j', 'monitor', 'count', '2']);
    expect(j.out.trim().split('\n').map((l) => JSON.parse(l))).toEqual(EVENTS.slice(0, 2));
    queue.push(stream(EVENTS));
    const f = await ok(['mon', 'expired', 'deleted', 'count', '2']);
    expect(f.out.trim().split('\n').map((l) => l.split(' ')[0])).toEqual(['expired', 'deleted']);
  });

  it('the daemon ending the stream is an error (exit 1) after the events it sent', async () => {
    queue.push(stream(EVENTS.slice(0, 1), false));
    const r = await cli(['monitor']);
    expect(r.code).toBe(EXIT.INTERNAL);
    expect(r.out).toBe('learned 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33\n');
    expect(r.err).toBe('Error: nvgred ended the event stream (the daemon is stopping or restarting)\n');
  });

  it('a daemon without the stream (404), a bad word, a bad count', async () => {
    queue.push({ status: 404, body: { error: { code: 'NVGRE_ERR_NOT_FOUND', message: 'no such path /v1/events' } } });
    const r = await cli(['monitor']);
    expect(r.code).toBe(EXIT.NOT_FOUND);
    expect(r.err).toBe('Error: no such path /v1/events\n');
    const bad = await cli(['monitor', 'learnt']);
    expect(bad.code).toBe(EXIT.USAGE);
    expect(bad.err).toMatch(/^Error: unknown keyword "learnt"\nTry "nvgrectl monitor help"/);
    expect((await cli(['monitor', 'count', '0'])).code).toBe(EXIT.USAGE);
    const unreachable = await cli(['monitor'], { socket: join(dir, 'nope.sock') });
    expect(unreachable.code).toBe(EXIT.UNREACHABLE);
  });

  it('help', async () => {
    const h = await ok(['monitor', 'help']);
    expect(h.out).toContain('Usage: nvgrectl monitor [ EVENT ... ] [ count N ]');
    expect(h.out).toContain('EVENT := { learned | changed | expired | deleted | refused | all }');
    expect(h.out).toContain('refused limit 10.0.1.150 vsid 6000');
    expect((await ok(['help'])).out).toContain('  monitor ');
    expect(requests).toHaveLength(0);
  });
});

// ------------------------------------------------------------------ help

describe('help at every level', () => {
  it('nvgrectl help / -h / --help: usage, objects, exit status table', async () => {
    for (const argv of [['help'], ['-h'], ['--help'], ['-help']]) {
      const r = await cli(argv, { socket: null });
      expect(r.code).toBe(0);
      expect(r.err).toBe('');
      expect(r.out).toContain('Usage: nvgrectl [ OPTIONS ] OBJECT { COMMAND | help }');
      for (const o of ['lookup', 'route', 'pa', 'proute', 'adapter', 'status', 'reload', 'config']) expect(r.out).toContain(`  ${o} `);
      expect(r.out).toContain('Exit status:');
      for (const [c, m] of EXIT_CODE_TABLE) expect(r.out).toContain(`  ${c}  ${m}`);
    }
    expect(requests).toHaveLength(0);
  });

  it('nvgrectl OBJECT help: every command of the object', async () => {
    const r = await ok(['lookup', 'help']);
    expect(r.out).toContain('Usage: nvgrectl lookup { add | replace } CA vsid N mac MAC pa PA [ rule RULE ] [ type TYPE ] [ vm NAME ]');
    for (const c of ['change', 'del', 'flush', 'show']) expect(r.out).toContain(`nvgrectl lookup ${c}`);
    expect(r.out).toContain('TYPE := { static | dynamic | l2only | gateway_wildcard }');
    for (const o of ['route', 'pa', 'proute', 'adapter', 'config']) {
      const h = await ok([o, 'help']);
      expect(h.out).toContain(`Usage: nvgrectl ${o} `);
    }
    expect((await ok(['route', '-h'])).out).toContain('nvgrectl route get CA vsid N');
    expect((await ok(['status', 'help'])).out).toContain('Usage: nvgrectl status');
    expect((await ok(['reload', 'help'])).out).toContain('Usage: nvgrectl reload');
    expect(requests).toHaveLength(0);
  });

  it('nvgrectl OBJECT COMMAND help: that command only', async () => {
    const r = await ok(['lookup', 'add', 'help']);
    expect(r.out).toContain('Usage: nvgrectl lookup add CA vsid N mac MAC pa PA');
    expect(r.out).not.toContain('lookup del');
    expect((await ok(['route', 'get', 'help'])).out).toContain('Usage: nvgrectl route get CA vsid N');
    expect((await ok(['config', 'check', 'help'])).out).toContain('Usage: nvgrectl config check FILE');
    expect((await ok(['pa', 'del', '--help'])).out).toContain('Usage: nvgrectl pa del ADDR');
    expect(requests).toHaveLength(0);
  });

  it('-V prints the version', async () => {
    const r = await ok(['-V']);
    expect(r.out).toMatch(/^nvgrectl \d+\.\d+\.\d+/);
  });
});
