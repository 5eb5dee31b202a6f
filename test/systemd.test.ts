// Service integration: `make install` lays out a working tree under DESTDIR,
// systemd-analyze accepts the unit and scores its hardening, and the daemon
// speaks systemd's notify protocol: READY once up, WATCHDOG while its
// workers live, RELOADING/READY around a reload, STOPPING at stop.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, run } from '../lab/netns.js';
import { packageRoot } from '../src/native.js';
import { NotifyReceiver } from './helpers/notify.js';
import { scratchDir } from './helpers/scratch.js';

const root = packageRoot();
const dir = scratchDir('systemd');
const destdir = join(dir, 'root');

describe('make install', () => {
  beforeAll(async () => {
    const r = await run(['make', '-s', 'install', `DESTDIR=${destdir}`, 'PREFIX=/usr'], { cwd: root, timeoutMs: 300_000 });
    expect(r.code, r.stderr).toBe(0);
  }, 300_000);

  it('installs the daemon, the CLI, the unit, the sysusers entry and an example config', async () => {
    for (const f of [
      'usr/bin/nvgred',
      'usr/bin/nvgrectl',
      'usr/lib/systemd/system/nvgred.service',
      'usr/lib/sysusers.d/nvgred.conf',
      'etc/nvgred/nvgred.yaml',
      'usr/lib/nvgred/native/build/nvgred.node',
      'usr/share/doc/nvgred/README.md',
    ]) {
      expect(existsSync(join(destdir, f)), f).toBe(true);
    }
    const version = await run([join(destdir, 'usr/bin/nvgred'), '--version']);
    expect(version.stdout.trim()).toMatch(/^nvgred \d+\.\d+\.\d+$/);
    const check = await run([join(destdir, 'usr/bin/nvgrectl'), 'config', 'check', join(destdir, 'etc/nvgred/nvgred.yaml')]);
    expect(check.code, check.stderr + check.stdout).toBe(0);
    // Development-only packages stay out of the installed tree.
    expect(existsSync(join(destdir, 'usr/lib/nvgred/node_modules/vitest'))).toBe(false);
    expect(existsSync(join(destdir, 'usr/lib/nvgred/node_modules/prom-client'))).toBe(true);
  });

  it('systemd-analyze verify accepts the unit without a warning', async () => {
    // verify wants ExecStart's binaries to exist: point the unit at the DESTDIR tree.
    const unit = readFileSync(join(destdir, 'usr/lib/systemd/system/nvgred.service'), 'utf8');
    expect(unit).toContain('ExecStart=/usr/bin/nvgred --config /etc/nvgred/nvgred.yaml');
    const local = join(dir, 'nvgred.service');
    writeFileSync(local, unit.replaceAll('/usr/bin/', `${destdir}/usr/bin/`));
    const r = await run(['systemd-analyze', 'verify', local]);
    expect(r.code).toBe(0);
    expect((r.stdout + r.stderr).trim()).toBe('');
    for (const directive of ['Type=notify', 'WatchdogSec=', 'ExecReload=', 'AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW', 'DeviceAllow=/dev/net/tun rw', 'ProtectSystem=strict']) {
      expect(unit).toContain(directive);
    }
    expect(unit).not.toMatch(/^MemoryDenyWriteExecute=yes/m);
  });

  it('systemd-analyze security scores the unit as OK or better', async () => {
    const unitDir = join(dir, 'etc/systemd/system');
    await run(['mkdir', '-p', unitDir], { check: true });
    writeFileSync(join(unitDir, 'nvgred.service'), readFileSync(join(destdir, 'usr/lib/systemd/system/nvgred.service')));
    const r = await run(['systemd-analyze', 'security', '--offline=yes', `--root=${dir}`, 'nvgred.service']);
    const m = /Overall exposure level for nvgred\.service: (\d+\.\d+) (\w+)/.exec(r.stdout);
    expect(m, r.stdout + r.stderr).not.toBeNull();
    expect(Number(m![1])).toBeLessThanOrEqual(3.0);
  });
});

describe('sd_notify protocol', () => {
  const lab = new Lab(`nvs${process.pid % 10000}-`);
  const socketPath = join(dir, 'notify.sock');
  let receiver: NotifyReceiver;

  beforeAll(async () => {
    await Lab.cleanStale(lab.prefix);
    await lab.addNamespace('host');
    await lab.veth('host', 'eth1', 'host', 'eth1peer');
    await lab.up('host', 'eth1');
    receiver = await NotifyReceiver.start(socketPath);
  });

  afterAll(async () => {
    receiver?.stop();
    expect((await lab.teardown()).errors).toEqual([]);
  });

  it('sends READY when up, WATCHDOG while alive, RELOADING/READY on reload, STOPPING at stop', async () => {
    const config = join(dir, 'nvgred.yaml');
    writeFileSync(
      config,
      `provider_addresses: [{ address: 192.168.0.22, prefix_length: 24, interface: eth1 }]\napi: { socket: ${dir}/api.sock }\nstate_dir: ${dir}/state\n`,
    );
    const proc = await lab.spawn('host', ['env', `NOTIFY_SOCKET=${socketPath}`, 'WATCHDOG_USEC=1000000', process.execPath, join(root, 'dist/src/daemon/main.js'), '--config', config]);
    await proc.waitForLine((l) => l.includes('"msg":"ready"'), 15_000);
    await new Promise((r) => setTimeout(r, 1800));
    process.kill(proc.pid, 'SIGHUP');
    await new Promise((r) => setTimeout(r, 600));
    const stopped = await lab.stop(proc, { timeoutMs: 10_000 });
    expect(stopped.code).toBe(0);
    await new Promise((r) => setTimeout(r, 200));

    const received = receiver.received;
    const kinds = received.map((r) => r.msg.split('\n')[0]!.split('=')[0]);
    expect(kinds[0]).toBe('READY');
    expect(received[0]!.msg).toMatch(/^READY=1\nSTATUS=/);
    const watchdogs = receiver.watchdogs();
    expect(watchdogs.length).toBeGreaterThanOrEqual(3); // every 500 ms for ~2.4 s
    const reloading = kinds.indexOf('RELOADING');
    expect(reloading).toBeGreaterThan(kinds.indexOf('WATCHDOG'));
    expect(received[reloading]!.msg).toMatch(/^RELOADING=1\nMONOTONIC_USEC=\d+$/);
    expect(kinds.slice(reloading + 1)).toContain('READY');
    expect(kinds.at(-1)).toBe('STOPPING');
    // Each ping arrives within WatchdogSec (1 s here) of the previous one, or systemd would kill the daemon.
    const gaps = watchdogs.slice(1).map((w, i) => w.t - watchdogs[i]!.t);
    for (const g of gaps) expect(g).toBeLessThan(1.0);
  });
});
