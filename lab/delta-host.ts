// Stands in for nvgred on one lab host and moves its policy only by deltas
// (HostDataplane.apply(next, changes)): test/hitless.test.ts runs it where
// the daemon would be (`startDaemons(..., { daemonArgv })`), until the
// policy store hands the host its changes itself.
//
// `node dist/lab/delta-host.js --config <file>`: applies the config's policy,
// prints the daemon's ready line, waits for `<file>.go` to exist, then makes
// the record changes below, one delta each, prints
// {"msg":"deltas done", deltas, changes, full_applies} and serves on;
// SIGTERM stops it.
//
// The changes: every few deltas the records of the flow's two VMs
// (Contoso1, Contoso3) are rewritten (deleted and put again, replaced, in one
// delta); the rest put and delete records of VMs that do not exist,
// including batches big enough that the overlay is merged into new tables
// in the background and swapped in.

import { existsSync } from 'node:fs';
import { pino } from 'pino';
import { loadConfigFile } from '../src/config/load.js';
import { HostDataplane } from '../src/daemon/host.js';
import type { PolicyChange } from '../src/model/change.js';
import type { LookupRecord, Policy } from '../src/model/policy.js';
import { native, type NativeCore } from '../src/native.js';

const FLOW = ['10.0.1.101', '10.0.1.103'];
const ROUNDS = 2000;
/** Records put in one delta, then deleted in one: 2 index entries each, past the merge threshold. */
const BATCH = 5000;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function main(): Promise<void> {
  const file = process.argv[process.argv.indexOf('--config') + 1]!;
  const log = pino({ level: 'warn' });
  const real = native();
  let fullApplies = 0;
  const core: NativeCore = { ...real, setPolicy: (b: Buffer) => (fullApplies++, real.setPolicy(b)) };
  const host = new HostDataplane(core, log);
  process.on('SIGTERM', () => {
    host.stop();
    process.exit(0);
  });
  host.start({ workers: 2, vsidCounters: 0, kernelSegmentation: false, pollMicros: 50 });
  let policy: Policy = await loadConfigFile(file);
  host.apply(policy);
  fullApplies = 0;
  console.log(JSON.stringify({ msg: 'ready' }));
  while (!existsSync(`${file}.go`)) await sleep(50);

  let deltas = 0;
  let changes = 0;
  const apply = (next: Policy, cs: PolicyChange[]) => {
    host.apply(next, cs);
    policy = next;
    deltas++;
    changes += cs.length;
  };
  const extra = (i: number): LookupRecord => ({
    customer_address: `10.0.${200 + (i >> 8)}.${i & 0xff}`,
    vsid: 6000,
    mac: `62:00:00:00:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`,
    provider_address: '192.168.0.33',
    rule: 'encap',
    type: 'static',
  });
  for (let round = 0; round < ROUNDS; round++) {
    if (round % 4 === 0) {
      // Rewrite the flow's own records within one delta: Contoso3's deleted
      // and put again, Contoso1's replaced (by equal records: the flow must
      // keep working, and no packet may see the moment between).
      const [c1, c3] = FLOW.map((ca) => policy.lookup_records.find((r) => r.vsid === 6000 && r.customer_address === ca)!);
      const c1again = { ...c1! };
      const c3again = { ...c3! };
      const records = policy.lookup_records.filter((r) => r !== c3).map((r) => (r === c1 ? c1again : r));
      apply({ ...policy, lookup_records: [...records, c3again] }, [
        { op: 'delete', section: 'lookup_records', record: c3! },
        { op: 'put', section: 'lookup_records', record: c3again },
        { op: 'put', section: 'lookup_records', record: c1again, previous: c1! },
      ]);
    }
    if (round % 250 === 100) {
      const batch = Array.from({ length: BATCH }, (_, i) => extra(i));
      apply({ ...policy, lookup_records: [...policy.lookup_records, ...batch] }, batch.map((record) => ({ op: 'put', section: 'lookup_records', record })));
      await sleep(200); // the merge runs meanwhile; the next delta swaps it in
      const gone = new Set(batch.map((r) => r.customer_address));
      apply(
        { ...policy, lookup_records: policy.lookup_records.filter((r) => !gone.has(r.customer_address)) },
        batch.map((record) => ({ op: 'delete', section: 'lookup_records', record })),
      );
    }
    const r = extra(BATCH + (round % 200));
    apply({ ...policy, lookup_records: [...policy.lookup_records, r] }, [{ op: 'put', section: 'lookup_records', record: r }]);
    apply(
      { ...policy, lookup_records: policy.lookup_records.filter((x) => x !== r) },
      [{ op: 'delete', section: 'lookup_records', record: r }],
    );
    if (round % 10 === 0) await sleep(10); // spread over the flow, and leave the ping its CPU
  }
  console.log(JSON.stringify({ msg: 'deltas done', deltas, changes, full_applies: fullApplies }));
  // Serve on until SIGTERM (the workers' threads do not keep Node running).
  setInterval(() => undefined, 1 << 30);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
