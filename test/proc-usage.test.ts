// lab/netns.ts procUsage() and fdKinds(), with which make soak (and
// make bench-memory) sample the daemons, read on this very process.

import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { fdKinds, procUsage } from '../lab/netns.js';

const sum = (kinds: Record<string, number>): number => Object.values(kinds).reduce((a, b) => a + b, 0);

describe('procUsage and fdKinds', () => {
  it("read a process's resident and anonymous memory, threads, CPU time and descriptors from /proc", () => {
    const u = procUsage(process.pid);
    const status = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(readFileSync(`/proc/${process.pid}/status`, 'utf8'))?.[1]);
    expect(u.anonKiB).toBeGreaterThan(0);
    expect(u.rssKiB).toBeGreaterThan(u.anonKiB); // the binary and its libraries are mapped files
    expect(Math.abs(u.rssKiB - status('VmRSS'))).toBeLessThan(u.rssKiB / 2);
    expect(u.threads).toBe(status('Threads'));
    expect(u.cpuSeconds).toBeGreaterThan(0);
    expect(Number.isInteger(u.fds) && u.fds > 2).toBe(true);
  });

  it('count each descriptor once, by kind: a listening socket is one more socket', async () => {
    const before = fdKinds(process.pid);
    expect(sum(before)).toBe(readdirSync(`/proc/${process.pid}/fd`).length - 1); // less the directory fdKinds had open
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const during = fdKinds(process.pid);
      expect(during['socket']).toBe((before['socket'] ?? 0) + 1);
      expect(sum(during)).toBe(sum(before) + 1);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    expect(fdKinds(process.pid)['socket'] ?? 0).toBe(before['socket'] ?? 0);
  });
});
