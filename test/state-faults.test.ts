// A state_dir that cannot take a write does not take the host down. On a full
// filesystem and on a read-only one the daemon starts (restoring what was
// saved) and forwards; a change it cannot save is refused (nvgrectl exits 1,
// the API answers 500 NVGRE_ERR_IO) and changes nothing, not the policy, not
// the saved state, not the kernel; once the filesystem takes writes again,
// changes are saved again.
//
// state_dir is a small tmpfs mounted in a mount namespace of the test's own:
// `ip netns exec` gives the holder process (in the lab's host namespace) a
// private copy of the mount table, the tmpfs is mounted there, and the
// daemon joins it with nsenter. The root mount table never sees it, and it
// is gone when the holder (which also exits once this test process is gone)
// and the daemon are: on every exit path.

import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, linkExists, ping, run, waitFor, type LabProcess } from '../lab/netns.js';
import { loadConfigFile } from '../src/config/index.js';
import { packageRoot } from '../src/native.js';
import { keyPath, type ApiClient } from './helpers/api.js';
import { TestDaemon, baseConfig, createHostEnv, type HostEnv } from './helpers/daemon.js';

const CLI = join(packageRoot(), 'dist', 'src', 'cli', 'main.js');
const FS_BYTES = 256 * 1024;
const lab = new Lab(`nvsf${process.pid % 10000}-`);
let env: HostEnv;
let vmb: string;
let holder: LabProcess;
let d: TestDaemon;
let api: ApiClient;

/** The two VMs: vm1 (baseConfig's) and vm2 in a namespace of its own, both local, VSID 6000. */
const VM1 = { tap: 'vm1', ip: '10.0.1.101', mac: '60:00:60:00:01:01' };
const VM2 = { tap: 'vm2', ip: '10.0.1.102', mac: '60:00:60:00:01:02' };

function config(): string {
  return baseConfig(env)
    .replace('lookup_records:\n', `lookup_records:\n  - { customer_address: ${VM2.ip}, vsid: 6000, mac: "${VM2.mac}", provider_address: 192.168.0.22, vm_name: Contoso2 }\n`)
    .replace('vm_adapters:\n', `vm_adapters:\n  - { name: ${VM2.tap}, vm_name: Contoso2, mac: "${VM2.mac}", vsid: 6000, netns: ${vmb} }\n`);
}

/** A path inside the tmpfs, as this process reaches it (through the holder's root). */
const inState = (name: string) => join(`/proc/${holder.pid}/root`, env.stateDir, name);

/** Run `argv` in the test's mount namespace. */
const inMountNs = (argv: string[]) => lab.exec(['nsenter', `--mount=/proc/${holder.pid}/ns/mnt`, '--', ...argv]);

/** Fill the tmpfs with one file until it has no room left. */
function fill(): void {
  const fd = openSync(inState('fill'), 'w');
  const chunk = Buffer.alloc(16 * 1024, 0xa5);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
}

/** The TAPs are new after every start: address them again. */
async function vmsUp(): Promise<void> {
  for (const [ns, v] of [
    [env.vm, VM1],
    [vmb, VM2],
  ] as const) {
    await waitFor(() => linkExists(ns, v.tap), 10_000, { what: `TAP ${v.tap} in ${ns}` });
    await lab.nsExec(ns, ['sysctl', '-qw', `net.ipv6.conf.${v.tap}.disable_ipv6=1`], { check: false });
    await lab.addr(ns, v.tap, `${v.ip}/24`);
    await lab.up(ns, v.tap);
  }
}

/** vm1 pings vm2 `count` times; every reply must come. */
async function forwards(count: number, intervalMs = 20): Promise<void> {
  const p = await ping(env.vm, VM2.ip, { count, intervalMs, timeoutMs: 2000 });
  expect(p, JSON.stringify(p)).toMatchObject({ transmitted: count, received: count });
}

async function nvgrectl(...args: string[]) {
  return run([process.execPath, CLI, '-s', env.socket, ...args], { timeoutMs: 30_000 });
}

/** What a refused change must leave as it was. */
async function snapshot() {
  return {
    policy: (await api.get('/v1/policy')).raw.toString(),
    state: readFileSync(inState('policy.json'), 'utf8'),
    generation: (await api.status()).generation,
  };
}

/** Try a change of every kind; each must be refused with the state_dir's error, and leave everything as it was. */
async function refusedChanges(why: RegExp): Promise<void> {
  const before = await snapshot();
  const add = await nvgrectl('lookup', 'add', '10.0.1.170', 'vsid', '6000', 'mac', '60:00:60:00:01:70', 'pa', '192.168.0.33');
  expect(add.code, add.stderr).toBe(1);
  expect(add.stderr).toMatch(/cannot save the policy to .*policy\.json/);
  expect(add.stderr).toMatch(why);
  expect(add.stderr).toContain('the change was not applied');
  const del = await api.delete(keyPath('lookup-records', 6000, '10.0.1.103'));
  expect(del.status).toBe(500);
  expect(del.body.error.code).toBe('NVGRE_ERR_IO');
  // A new VM adapter: its TAP is created for the change, and removed with it.
  const adapter = await api.post('/v1/vm-adapters', { name: 'vm3', mac: '60:00:60:00:01:03', vsid: 6000, netns: vmb });
  expect(adapter.status).toBe(500);
  expect(await linkExists(vmb, 'vm3')).toBe(false);
  expect(await snapshot()).toEqual(before);
  expect((await api.status()).state_error).toMatch(why);
}

beforeAll(async () => {
  env = await createHostEnv(lab, 'nvgred-statefault-');
  vmb = await lab.addNamespace('vmb');
  mkdirSync(env.stateDir);
  holder = await lab.spawn('host', [
    'sh',
    '-c',
    `mount -t tmpfs -o size=${FS_BYTES},mode=0750 nvgred-test-state "$0" && echo mounted && while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done`,
    env.stateDir,
  ]);
  await holder.waitForLine((l) => l === 'mounted', 10_000, { what: 'the tmpfs mounted' });
  d = new TestDaemon(env, env.writeConfig(config()), [], ['nsenter', `--mount=/proc/${holder.pid}/ns/mnt`, '--']);
  api = d.api;
});

afterAll(async () => {
  const report = await lab.teardown();
  // The tmpfs went with its mount namespace, and was never in the root one.
  expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(env.stateDir);
  env?.cleanup();
  expect(report.errors).toEqual([]);
});

describe('a state_dir on a full filesystem', () => {
  it('(the daemon starts on the empty tmpfs and saves there; the VMs forward)', async () => {
    await d.start();
    await vmsUp();
    await forwards(3);
    expect(JSON.parse(readFileSync(inState('policy.json'), 'utf8')).format).toBe('nvgred-state/1');
    expect((await api.status()).state_error).toBeNull();
    // one runtime change that must survive everything below
    expect((await nvgrectl('lookup', 'add', '10.0.1.140', 'vsid', '6000', 'mac', '60:00:60:00:01:40', 'pa', '192.168.0.33')).code).toBe(0);
  });

  it('refuses every change it cannot save, changing nothing, while the VMs keep forwarding', async () => {
    fill();
    const flow = forwards(150);
    try {
      await refusedChanges(/no space left on device/i);
    } finally {
      await flow;
    }
    // no temporary file left behind
    expect(readdirSync(inState('.')).sort()).toEqual(['fill', 'policy.json']);
  });

  it('starts on the full filesystem: restores the saved policy, forwards, refuses changes', async () => {
    const saved = (await api.get('/v1/policy')).raw.toString();
    expect((await d.stop()).code).toBe(0);
    await d.start();
    expect(d.logLines().some((l) => l.level === 'error' && String(l.msg).startsWith('cannot save the running policy in state_dir'))).toBe(true);
    expect((await api.get('/v1/policy')).raw.toString()).toBe(saved);
    await vmsUp();
    await forwards(20);
    await refusedChanges(/no space left on device/i);
  });

  it('saves changes again once there is room, and they survive a restart', async () => {
    rmSync(inState('fill'));
    const add = await nvgrectl('lookup', 'add', '10.0.1.150', 'vsid', '6000', 'mac', '60:00:60:00:01:50', 'pa', '192.168.0.33');
    expect(add.code, add.stderr).toBe(0);
    expect((await api.status()).state_error).toBeNull();
    const cas = (JSON.parse(readFileSync(inState('policy.json'), 'utf8')).policy.lookup_records as Array<{ customer_address: string }>).map((r) => r.customer_address);
    expect(cas).toEqual(expect.arrayContaining(['10.0.1.140', '10.0.1.150']));
    expect((await d.stop()).code).toBe(0);
    await d.start();
    expect((await api.get(keyPath('lookup-records', 6000, '10.0.1.150'))).status).toBe(200);
    expect((await api.get(keyPath('lookup-records', 6000, '10.0.1.140'))).status).toBe(200);
  });
});

describe('a read-only state_dir at start', () => {
  it('starts, restores the saved policy, forwards, and refuses changes; saves again once writable', async () => {
    const saved = (await api.get('/v1/policy')).raw.toString();
    expect((await d.stop()).code).toBe(0);
    // a write's leftover temporary file, which a read-only directory cannot lose
    writeFileSync(inState('.4242.1700000000000.tmp'), '{"format": "nvgred-state/1", "pol');
    await inMountNs(['mount', '-o', 'remount,ro', env.stateDir]);
    try {
      await d.start();
      expect((await api.get('/v1/policy')).raw.toString()).toBe(saved);
      await vmsUp();
      await forwards(20);
      await refusedChanges(/read-only file system/i);
    } finally {
      await inMountNs(['mount', '-o', 'remount,rw', env.stateDir]);
    }
    const add = await nvgrectl('lookup', 'add', '10.0.1.160', 'vsid', '6000', 'mac', '60:00:60:00:01:60', 'pa', '192.168.0.33');
    expect(add.code, add.stderr).toBe(0);
    expect((await api.status()).state_error).toBeNull();
    expect(readFileSync(inState('policy.json'), 'utf8')).toContain('10.0.1.160');
  });

  it('a damaged saved state it cannot set aside: runs the config file, and sets it aside at a start that can', async () => {
    expect((await d.stop()).code).toBe(0);
    writeFileSync(inState('policy.json'), 'not json at all');
    await inMountNs(['mount', '-o', 'remount,ro', env.stateDir]);
    try {
      await d.start();
      expect((await api.get('/v1/policy')).body).toEqual(await loadConfigFile(d.configPath));
      expect(d.logLines().some((l) => l.level === 'error' && String(l.msg).startsWith('the saved running policy cannot be used, nor set aside'))).toBe(true);
      await vmsUp();
      await forwards(20);
      expect(readFileSync(inState('policy.json'), 'utf8')).toBe('not json at all');
    } finally {
      await inMountNs(['mount', '-o', 'remount,rw', env.stateDir]);
    }
    expect((await d.stop()).code).toBe(0);
    await d.start();
    const aside = readdirSync(inState('.')).filter((f) => f.startsWith('policy.json.bad-'));
    expect(aside).toHaveLength(1);
    expect(readFileSync(inState(aside[0]!), 'utf8')).toBe('not json at all');
    expect(JSON.parse(readFileSync(inState('policy.json'), 'utf8')).format).toBe('nvgred-state/1');
  });
});
