// Access to the control API is the socket's file mode: 0660, the daemon's
// user and group only. A caller outside both cannot even connect (EACCES),
// so the daemon sees, logs and changes nothing; a caller in the socket's
// group can.

import { lstatSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, run, sleep } from '../lab/netns.js';
import type { ApiClient } from './helpers/api.js';
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
 * request, print one JSON line: {"connected": bool, "code": errno, "status": http status}.
 */
const CLIENT = `
const net = require('node:net');
const [sock, method, path, body] = process.argv.slice(1);
const c = net.createConnection(sock);
let data = '';
let connected = false;
c.on('connect', () => {
  connected = true;
  c.write(method + ' ' + path + ' HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\ncontent-type: application/json\\r\\ncontent-length: ' + Buffer.byteLength(body) + '\\r\\n\\r\\n' + body);
});
c.on('data', (b) => (data += b));
c.on('error', (e) => { console.log(JSON.stringify({ connected, code: e.code })); process.exit(3); });
c.on('close', () => {
  const m = /^HTTP\\/1\\.1 (\\d+)/.exec(data);
  console.log(JSON.stringify({ connected, status: m ? Number(m[1]) : null, uid: process.getuid(), gid: process.getgid() }));
});
`;

async function clientAs(uid: number, gid: number, method: string, path: string, body = '') {
  const prefix = asUser(uid, gid);
  const r = await run([...prefix, process.execPath, '-e', CLIENT, env.socket, method, path, body], { timeoutMs: 15_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return { exit: r.code, out: (line.startsWith('{') ? JSON.parse(line) : {}) as { connected?: boolean; code?: string; status?: number; uid?: number; gid?: number }, stderr: r.stderr };
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
    expect(r.out, r.stderr).toEqual({ connected: true, status: 200, uid: NOBODY, gid });
  });
});
