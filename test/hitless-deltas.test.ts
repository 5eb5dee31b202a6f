// Deltas are hitless: while Contoso1 pings Contoso3 across hosts every 50 ms,
// host 1 takes thousands of lookup-record changes as deltas of the packet
// core's tables (lab/delta-host.ts stands in for its daemon and moves the
// policy only through HostDataplane.apply(next, changes)): rewrites of the
// flow's own records, single puts and deletes, and 5,000-record batches
// that push the overlay past its merge threshold, so merged tables are
// swapped in too. Not one ping is lost and not one change needs a full
// snapshot.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ping, repoRoot } from '../lab/netns.js';
import { buildTopology, configureVms, startDaemons, vm, type Daemon } from '../lab/topology.js';
import { scratchDir } from './helpers/scratch.js';

const lab = new Lab(`nvd${process.pid % 10000}-`);
const out = scratchDir('hitless-deltas');
let h1: Daemon;

beforeAll(async () => {
  await Lab.cleanStale(lab.prefix);
  await buildTopology(lab);
  [h1] = await startDaemons(lab, { hosts: ['host1'], logDir: out, daemonArgv: [process.execPath, join(repoRoot(), 'dist', 'lab', 'delta-host.js')] });
  await startDaemons(lab, { hosts: ['host2'], logDir: out });
  await configureVms(lab, { vms: ['contoso1', 'contoso3'] });
}, 120_000);

afterAll(async () => {
  expect((await lab.teardown()).errors).toEqual([]);
});

describe('hitless deltas', () => {
  it('loses no ping of a cross-host flow while thousands of record changes go through deltas', async () => {
    expect((await ping(lab.ns('contoso1'), vm('contoso3').ip, { count: 3 })).received).toBe(3);

    const COUNT = 500; // 25 s at 50 ms: longer than the changes take (fewer, sparser pings: a probe starved of CPU on a loaded machine falls behind its schedule)
    const flow = ping(lab.ns('contoso1'), vm('contoso3').ip, { count: COUNT, intervalMs: 50, timeoutMs: 2000 });
    const t0 = Date.now();
    writeFileSync(`${h1.configFile}.go`, '');
    const done = JSON.parse(await h1.proc.waitForLine((l) => l.includes('"deltas done"'), 60_000, { stream: 'stdout', what: 'deltas done' })) as {
      deltas: number;
      changes: number;
      full_applies: number;
    };
    const changeSeconds = (Date.now() - t0) / 1000;
    const result = await flow;
    const flowSeconds = (Date.now() - t0) / 1000;

    expect(done.full_applies).toBe(0); // every change went through a delta
    expect(done.changes).toBeGreaterThan(10_000);
    expect(changeSeconds).toBeLessThan(flowSeconds); // the changes happened while the flow ran
    expect(result, result.notes.join("; ")).toMatchObject({ transmitted: COUNT, received: COUNT, errors: 0 });
    console.log(
      `hitless deltas: ${done.changes} record changes in ${done.deltas} deltas in ${changeSeconds.toFixed(1)} s during ${COUNT} pings at 50 ms: ${COUNT - result.received} lost`,
    );
  }, 150_000);
});
