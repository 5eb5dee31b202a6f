// The config's address and prefix parsers (src/config/net.ts) are written by
// hand: strict, and fast enough for a million lookup records (ip-num takes
// about 25 times as long per address). ip-num is the reference they are
// held to here, on thousands of generated values: the same address, the
// same network of a prefix, the same host-bits verdict, the same gateway
// (network + 1). Seeded, so a failure reproduces.

import { IPv4, IPv4CidrRange, IPv6, IPv6CidrRange, collapseIPv6Number } from 'ip-num';
import { describe, expect, it } from 'vitest';
import { defaultGatewayOf, parseIp, parsePrefix } from '../src/config/index.js';

/** xorshift32: the same values on every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const N = 3000;

/** IPv6 text in the forms people write: full, with zero runs compressed anywhere, mixed case, leading zeros. */
function ipv6Text(r: () => number): string {
  const groups = Array.from({ length: 8 }, () => (r() < 0.4 ? 0 : Math.floor(r() * 0x10000)));
  const hex = (g: number) => {
    const h = g.toString(16);
    const padded = r() < 0.2 ? h.padStart(4, '0') : h;
    return r() < 0.2 ? padded.toUpperCase() : padded;
  };
  const runs: Array<[number, number]> = [];
  for (let i = 0; i < 8; i++) {
    if (groups[i] !== 0) continue;
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    runs.push([i, j]);
    i = j;
  }
  const run = runs.length && r() < 0.8 ? runs[Math.floor(r() * runs.length)]! : undefined;
  if (!run) return groups.map(hex).join(':');
  return `${groups.slice(0, run[0]).map(hex).join(':')}::${groups.slice(run[1]).map(hex).join(':')}`;
}

function ipv4Text(r: () => number): string {
  return Array.from({ length: 4 }, () => Math.floor(r() * 256)).join('.');
}

describe('src/config/net.ts against ip-num', () => {
  it(`IPv6 addresses: ${N} generated texts parse to the address ip-num reads, in RFC 5952 text`, () => {
    const r = rng(6000);
    for (let i = 0; i < N; i++) {
      const text = ipv6Text(r);
      const reference = IPv6.fromString(text).getValue();
      const ours = parseIp(text);
      if (!ours.ok) {
        // Refused on purpose: IPv4-mapped addresses (::ffff:a.b.c.d written as hex groups).
        expect(ours.reason, text).toContain('IPv4-mapped');
        continue;
      }
      expect(IPv6.fromString(ours.value.text).getValue(), text).toBe(reference);
      // RFC 5952: lowercase, no leading zeros, the first longest run of two or more zero groups as "::".
      expect(ours.value.text, text).toBe(collapseIPv6Number(IPv6.fromString(text).toString()).toLowerCase());
      expect(parseIp(ours.value.text), `${text}: canonical text is a fixed point`).toEqual(ours);
    }
  });

  it(`IPv4 addresses: ${N} generated texts agree`, () => {
    const r = rng(7000);
    for (let i = 0; i < N; i++) {
      const text = ipv4Text(r);
      const ours = parseIp(text);
      expect(ours.ok, text).toBe(true);
      if (ours.ok && ours.value.family === 4) expect(BigInt(ours.value.n), text).toBe(IPv4.fromString(text).getValue());
    }
  });

  it(`prefixes of both families: the network, the host-bits verdict and the gateway agree (${2 * N} prefixes)`, () => {
    const r = rng(8000);
    for (let i = 0; i < 2 * N; i++) {
      const v6 = i % 2 === 1;
      const addr = v6 ? ipv6Text(r) : ipv4Text(r);
      const len = Math.floor(r() * ((v6 ? 128 : 32) + 1));
      const range = v6 ? IPv6CidrRange.fromCidr(`${addr}/${len}`) : IPv4CidrRange.fromCidr(`${addr}/${len}`);
      const network = range.getFirst();
      const ours = parsePrefix(`${addr}/${len}`);
      const hostBits = network.getValue() !== (v6 ? IPv6.fromString(addr) : IPv4.fromString(addr)).getValue();
      if (!ours.ok) {
        if (!ours.hostBits && ours.reason.includes('IPv4-mapped')) continue;
        expect(ours.hostBits, `${addr}/${len}: ${ours.reason}`).toBe(true);
        expect(hostBits, `${addr}/${len}`).toBe(true);
        // The suggestion names ip-num's network.
        const suggested = /did you mean (\S+)\//.exec(ours.reason)![1]!;
        expect((v6 ? IPv6.fromString(suggested) : IPv4.fromString(suggested)).getValue(), `${addr}/${len}`).toBe(network.getValue());
        continue;
      }
      expect(hostBits, `${addr}/${len}`).toBe(false);
      const text = ours.value.addr.text;
      expect((v6 ? IPv6.fromString(text) : IPv4.fromString(text)).getValue(), `${addr}/${len}`).toBe(network.getValue());
      const gw = defaultGatewayOf(ours.value.text);
      if (len === 0 || len > (v6 ? 126 : 30)) {
        expect(gw, `${ours.value.text} holds no gateway and hosts`).toBeUndefined();
      } else {
        const next = network.nextIPNumber();
        expect((v6 ? IPv6.fromString(gw!) : IPv4.fromString(gw!)).getValue(), ours.value.text).toBe(next.getValue());
      }
    }
  });
});
