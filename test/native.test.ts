// The addon's face: exported names match the hand-written index.d.ts, errors
// carry stable codes, and the counter layout covers every drop reason.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { native, packageRoot } from '../src/native.js';

const core = native();

describe('native binding', () => {
  it('exports exactly the functions index.d.ts declares', () => {
    const dts = readFileSync(join(packageRoot(), 'native', 'index.d.ts'), 'utf8');
    const declared = [...dts.matchAll(/^export function (\w+)\(/gm)].map((m) => m[1]).sort();
    expect(declared.length).toBeGreaterThan(5);
    expect(Object.keys(core).sort()).toEqual(declared);
    for (const name of declared) expect(typeof (core as unknown as Record<string, unknown>)[name!]).toBe('function');
  });

  it('lays out one drop counter per direction and reason', () => {
    const reasons = core.dropReasons();
    expect(reasons).toContain('spoofed_source');
    expect(reasons).toContain('gre_flags');
    expect(new Set(reasons).size).toBe(reasons.length);
    for (const r of reasons) expect(r).toMatch(/^[a-z][a-z0-9_]*$/);
    const names = core.counterNames();
    for (const dir of ['from_vm', 'from_underlay']) {
      for (const r of reasons) expect(names).toContain(`drop:${dir}:${r}`);
    }
    expect(names).toContain('encap_packets');
  });

  it('throws errors with stable codes', () => {
    const codeOf = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as { code?: string }).code;
      }
      return 'no error';
    };
    expect(codeOf(() => core.readCounters())).toBe('NVGRE_ERR_NATIVE_NOT_STARTED');
    expect(codeOf(() => core.setPolicy(Buffer.from('garbage')))).toBe('NVGRE_ERR_NATIVE_POLICY');
    expect(codeOf(() => core.applyDelta(Buffer.from('garbage')))).toBe('NVGRE_ERR_NATIVE_POLICY');
    expect(codeOf(() => core.addAddress('eth1', 'not-an-ip', 24))).toBe('NVGRE_ERR_NATIVE_ARGUMENT');
    expect(codeOf(() => (core.addPort as (...a: unknown[]) => number)('x'))).toBe('NVGRE_ERR_NATIVE_ARGUMENT');
  });
});
