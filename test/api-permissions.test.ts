// Access to the control API: the socket's file mode (0660, the daemon's
// user and group) decides who can connect. A caller outside both cannot
// even connect (EACCES), so the daemon sees, logs and changes nothing. A
// caller in the socket's group can connect and read; what it may change is
// decided by its credentials (SO_PEERCRED): changes need root or the
// daemon's own user, and anything else is refused with 403 before its body
// is read.

import { existsSync, lstatSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, run, sleep } from '../lab/netns.js';
import type { ApiClient } from './helpers/api.js';
import { readablePackage } from './helpers/readable-package.js';
import { TestDaemon, baseConfig, createHostEnv, type HostEnv } from './helpers/daemon.js';

const lab = new Lab(`nvprm${process.pid % 10000}-`);
let env: HostEnv;
let d: TestDaemon;
let api: ApiClient;

const NOBODY = 65534;

/** argv prefix that runs a command as uid `uid`, gid `gid`, no supplementary groups (setpriv: util-linux, which `make test` installs). */
function asUser(uid: number, gid: number): string[] {
  return ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups'];
}

/**
 * A tiny client run as another user: connect to the socket, send one
 * request, print one JSON line: {"connected": bool, "code": errno, "status": http status, "body": the JSON body}.
 * With a declared length, only the head is sent (Content-Length: that length, no body).
 * With `head`, it stops once the response's head is in (for streams).
 */
const CLIENT = `
const net = require('node:net');
const [sock, method, path, body, declared, type, head] = process.argv.slice(1);
const c = net.createConnection(sock);
let data = '';
let connected = false;
const done = () => {
  const m = /^HTTP\\/1\\.1 (\\d+)/.exec(data);
  const text = data.split('\\r\\n\\r\\n').slice(1).join('\\r\\n\\r\\n');
  let parsed = null;
  try { parsed = JSON.parse(text); } catch {}
  console.log(JSON.stringify({ connected, status: m ? Number(m[1]) : null, uid: process.getuid(), gid: process.getgid(), body: parsed }));
  process.exit(0);
};
c.on('connect', () => {
  connected = true;
  const length = declared ? Number(declared) : Buffer.byteLength(body);
  c.write(method + ' ' + path + ' HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\ncontent-type: ' + (type || 'application/json') + '\\r\\ncontent-length: ' + length + '\\r\\n\\r\\n' + (declared ? '' : body));
});
c.on('data', (b) => {
  data += b;
  if (head && data.includes('\\r\\n\\r\\n')) done();
});
c.on('error', (e) => { console.log(JSON.stringify({ connected, code: e.code })); process.exit(3); });
c.on('close', done);
`;

interface ClientOut {
  connected?: boolean;
  code?: string;
  status?: number;
  uid?: number;
  gid?: number;
  body?: any;
}

async function clientAs(uid: number, gid: number, method: string, path: string, body = '', opts: { declared?: number; type?: string; head?: boolean } = {}) {
  const prefix = asUser(uid, gid);
  const args = [env.socket, method, path, body, opts.declared ? String(opts.declared) : '', opts.type ?? '', opts.head ? '1' : ''];
  const r = await run([...prefix, process.execPath, '-e', CLIENT, ...args], { timeoutMs: 15_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return { exit: r.code, out: (line.startsWith('{') ? JSON.parse(line) : {}) as ClientOut, stderr: r.stderr };
}

async function observe() {
  await sleep(200); // let any log line the daemon might write arrive
  return {
    policy: (await api.get('/v1/policy')).raw,
    state: readFileSync(join(env.stateDir, 'policy.json')),
    generation: (await api.status()).generation,
    logLines: d.proc!.tail(2000).split('\n').length,
  };
}

beforeAll(async () => {
  env = await createHostEnv(lab, 'nvgred-perm-');
  d = new TestDaemon(env, env.writeConfig(baseConfig(env)));
  await d.start();
  api = d.api;
});

afterAll(async () => {
  const report = await lab.teardown();
  env?.cleanup();
  expect(report.errors).toEqual([]);
});

describe('the API socket', () => {
  it('is a socket of mode 0660, owned by the daemon user, in a directory anyone may traverse', () => {
    const st = lstatSync(env.socket);
    expect(st.isSocket()).toBe(true);
    expect((st.mode & 0o7777).toString(8)).toBe('660');
    expect(st.uid).toBe(process.getuid!());
    expect(st.gid).toBe(process.getgid!());
    // so that only the socket's own mode decides below
    expect(statSync(dirname(env.socket)).mode & 0o005).toBe(0o005);
  });

  it('refuses a caller outside its user and group: EACCES on connect; the daemon logs and changes nothing', async () => {
    const before = await observe();
    const write = await clientAs(NOBODY, NOBODY, 'POST', '/v1/lookup-records', JSON.stringify({ customer_address: '10.0.1.170', vsid: 6000, mac: '60:00:60:00:01:70', provider_address: '192.168.0.33' }));
    expect(write.out, write.stderr).toEqual({ connected: false, code: 'EACCES' });
    expect(write.exit).toBe(3);
    const read = await clientAs(NOBODY, NOBODY, 'GET', '/v1/status');
    expect(read.out, read.stderr).toEqual({ connected: false, code: 'EACCES' });
    const after = await observe();
    expect(after.generation).toBe(before.generation);
    expect(after.policy.equals(before.policy)).toBe(true);
    expect(after.state.equals(before.state)).toBe(true);
    expect(after.logLines).toBe(before.logLines);
    expect((await api.get('/v1/lookup-records?customer_address=10.0.1.170')).body).toEqual({ lookup_records: [] });
  });

  it('refuses curl run as nobody too (exit 7, cannot connect)', async () => {
    const before = await observe();
    const r = await run([...asUser(NOBODY, NOBODY), '/usr/bin/curl', '-sS', '--unix-socket', env.socket, 'http://nvgred/v1/status'], { timeoutMs: 15_000 });
    expect(r.code).toBe(7);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/Permission denied|Couldn't connect/i);
    const after = await observe();
    expect(after.generation).toBe(before.generation);
    expect(after.logLines).toBe(before.logLines);
  });

  it('lets a caller in the socket group in (the mode, not the uid, decides)', async () => {
    const gid = lstatSync(env.socket).gid;
    const r = await clientAs(NOBODY, gid, 'GET', '/v1/status');
    expect(r.out, r.stderr).toMatchObject({ connected: true, status: 200, uid: NOBODY, gid });
  });
});

describe('a caller in the socket group who is neither root nor the daemon user', () => {
  let gid: number;
  beforeAll(() => {
    gid = lstatSync(env.socket).gid;
  });

  const record = JSON.stringify({ customer_address: '10.0.1.171', vsid: 6000, mac: '60:00:60:00:01:71', provider_address: '192.168.0.33' });

  it('reads everything: status, policy, records, learned records, log levels, next hop, the event stream', async () => {
    for (const path of ['/v1/status', '/v1/policy', '/v1/lookup-records?vsid=6000', '/v1/learned', '/v1/log', '/v1/next-hop?vsid=6000&destination=10.0.1.103']) {
      const r = await clientAs(NOBODY, gid, 'GET', path);
      expect(r.out.status, `${path}: ${JSON.stringify(r.out)}`).toBe(200);
    }
    const stream = await clientAs(NOBODY, gid, 'GET', '/v1/events', '', { head: true });
    expect(stream.out.status).toBe(200);
  });

  it('is refused every change (403 NVGRE_ERR_PERMISSION naming its uid), and nothing changes: policy, state, config file, log levels', async () => {
    const before = await observe();
    const config = readFileSync(d.configPath);
    const levels = (await api.get('/v1/log')).body;
    const changes: Array<[method: string, path: string, body?: string, type?: string]> = [
      ['POST', '/v1/lookup-records', record],
      ['PUT', '/v1/lookup-records/6000/10.0.1.171', record],
      ['PATCH', '/v1/lookup-records/6000/10.0.1.103', JSON.stringify({ provider_address: '192.168.0.44' })],
      ['DELETE', '/v1/lookup-records/6000/10.0.1.103'],
      ['DELETE', '/v1/lookup-records?all=true'],
      ['PUT', '/v1/policy', JSON.stringify({})],
      ['PUT', '/v1/policy', 'lookup_records: []\n', 'application/yaml'],
      ['POST', '/v1/reload'],
      ['PUT', '/v1/log', JSON.stringify({ level: 'trace' })],
      ['POST', '/v1/config/save', JSON.stringify({})],
      ['POST', '/v1/config/save', JSON.stringify({ path: join(env.dir, 'mine.yaml') })],
    ];
    for (const [method, path, body, type] of changes) {
      const r = await clientAs(NOBODY, gid, method, path, body ?? '', type ? { type } : {});
      expect(r.out.status, `${method} ${path}: ${JSON.stringify(r.out)}`).toBe(403);
      expect(r.out.body.error.code).toBe('NVGRE_ERR_PERMISSION');
      expect(r.out.body.error.message).toContain(`uid ${NOBODY}`);
      expect(r.out.body.error.message).toContain('may only read; changes need root (uid 0)');
    }
    const after = await observe();
    expect(after.generation).toBe(before.generation);
    expect(after.policy.equals(before.policy)).toBe(true);
    expect(after.state.equals(before.state)).toBe(true);
    expect(readFileSync(d.configPath).equals(config)).toBe(true);
    expect(existsSync(join(env.dir, 'mine.yaml'))).toBe(false);
    expect((await api.get('/v1/log')).body).toEqual(levels);
    // One log line for the lot: a caller that keeps trying cannot flood the journal.
    const refusals = d.logLines().filter((l) => l.uid === NOBODY && String(l.msg).includes('may only read'));
    expect(refusals).toHaveLength(1);
    expect(refusals[0]!.level).toBe('warn');
  });

  it('is answered from the request head: a refused body is never read', async () => {
    const r = await clientAs(NOBODY, gid, 'PUT', '/v1/policy', '', { declared: 100 * 1024 * 1024 });
    expect(r.out.status).toBe(403);
    expect(r.out.body.error.code).toBe('NVGRE_ERR_PERMISSION');
  });

  // A copy the caller can read, wherever the repository is cloned.
  const pkg = readablePackage();
  it('nvgrectl run by it: show works, a change exits 8 with the daemon\'s reason', async () => {
    const cli = join(pkg, 'dist', 'src', 'cli', 'main.js');
    const show = await run([...asUser(NOBODY, gid), process.execPath, cli, '-s', env.socket, 'lookup', 'show', 'vsid', '6000'], { timeoutMs: 15_000 });
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toContain('10.0.1.103');
    const add = await run([...asUser(NOBODY, gid), process.execPath, cli, '-s', env.socket, 'lookup', 'add', '10.0.1.171', 'vsid', '6000', 'mac', '60:00:60:00:01:71', 'pa', '192.168.0.33'], { timeoutMs: 15_000 });
    expect(add.code).toBe(8);
    expect(add.stderr).toMatch(new RegExp(`^Error: POST /v1/lookup-records: uid ${NOBODY} \\(pid \\d+\\) may only read; changes need root \\(uid 0\\)`));
  });

  it('while root, on the same socket, changes as before', async () => {
    const r = await api.post('/v1/lookup-records', JSON.parse(record));
    expect(r.status, r.raw.toString()).toBe(201);
    expect((await api.delete('/v1/lookup-records/6000/10.0.1.171')).status).toBe(200);
  });
});
