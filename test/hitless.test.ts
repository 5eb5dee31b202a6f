// Policy changes are hitless: while Contoso1 pings Contoso3 across hosts every
// 10 ms, both hosts take 1,000 lookup-record changes unrelated to that flow
// and 100 reloads of their config file (each applying a real difference),
// and not one ping is lost.

import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ping } from '../lab/netns.js';
import { buildTopology, configureVms, startDaemons, vm, type Daemon } from '../lab/topology.js';
import { scratchDir } from './helpers/scratch.js';

const lab = new Lab(`nvh${process.pid % 10000}-`);
const out = scratchDir('hitless');
let daemons: Daemon[] = [];

function api(socketPath: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request({ socketPath, method, path, headers: data ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

beforeAll(async () => {
  await Lab.cleanStale(lab.prefix);
  await buildTopology(lab);
  daemons = await startDaemons(lab, { hosts: ['host1', 'host2'], logDir: out });
  await configureVms(lab, { vms: ['contoso1', 'contoso3'] });
}, 120_000);

afterAll(async () => {
  expect((await lab.teardown()).errors).toEqual([]);
});

describe('hitless policy changes', () => {
  it('loses no ping of a cross-host flow during 1,000 record changes and 100 reloads', async () => {
    const [h1, h2] = daemons as [Daemon, Daemon];
    // Each reload toggles one unrelated record in the file, so it applies a real change.
    const files = [h1, h2].map((d) => {
      const text = readFileSync(d.configFile, 'utf8');
      const doc = parse(text);
      doc.lookup_records.push({ customer_address: '10.0.1.250', vsid: 6000, mac: '60:00:60:00:0f:fa', provider_address: '192.168.0.11' });
      return { path: d.configFile, without: text, with: stringify(doc) };
    });

    // Warm the flow (ARP) so the count starts on a steady path.
    expect((await ping(lab.ns('contoso1'), vm('contoso3').ip, { count: 3 })).received).toBe(3);

    const COUNT = 3000; // 30 s at 10 ms: longer than the changes take
    const flow = ping(lab.ns('contoso1'), vm('contoso3').ip, { count: COUNT, intervalMs: 10, timeoutMs: 2000 });
    const t0 = Date.now();
    let changes = 0;
    let reloads = 0;
    let reloadChanges = 0;
    for (let i = 0; i < 500; i++) {
      const d = i % 2 ? h2 : h1;
      const ca = `10.0.1.${10 + (i % 80)}`;
      const rec = { customer_address: ca, vsid: 6000, mac: `60:00:60:00:0e:${(10 + (i % 80)).toString(16).padStart(2, '0')}`, provider_address: '192.168.0.11' };
      expect((await api(d.socket!, 'POST', '/v1/lookup-records', rec)).status).toBe(201);
      expect((await api(d.socket!, 'DELETE', `/v1/lookup-records/6000/${ca}`)).status).toBe(200);
      changes += 2;
      if (i % 5 === 4) {
        const f = files[reloads % 2]!;
        writeFileSync(f.path, Math.floor(reloads / 2) % 2 === 0 ? f.with : f.without);
        const r = await api((reloads % 2 ? h2 : h1).socket!, 'POST', '/v1/reload');
        expect(r.status).toBe(200);
        reloadChanges += r.body.changes.lookup_records.added + r.body.changes.lookup_records.removed;
        reloads++;
      }
    }
    const changeSeconds = (Date.now() - t0) / 1000;
    const result = await flow;
    const flowSeconds = (Date.now() - t0) / 1000;

    expect(changes).toBe(1000);
    expect(reloads).toBe(100);
    expect(reloadChanges).toBe(100); // every reload added or removed the toggled record
    expect(changeSeconds).toBeLessThan(flowSeconds); // the changes happened while the flow ran
    expect(result.transmitted).toBe(COUNT);
    expect(result.received).toBe(COUNT);
    console.log(
      `hitless: ${changes} record changes + ${reloads} reloads in ${changeSeconds.toFixed(1)} s during ${COUNT} pings at 10 ms: ${COUNT - result.received} lost`,
    );
  }, 120_000);
});
