// The big policies of the benchmarks: `records` remote VMs in 10.0.0.0/8,
// VSID 6000, each its own MAC, on 2,000 PAs (bench-memory, bench-policy).

export const BIG_VSID = 6000;
export const BIG_RD = '{12345678-1000-2000-3000-123456780009}';

const hex = (n: number) => n.toString(16).padStart(2, '0');

/** `records` lookup records (config-file shape), leaving out the CAs in `skip`. */
export function bigLookupRecords(records: number, skip: ReadonlySet<string> = new Set()): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (let i = 0; i < records; i++) {
    const ca = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    if (skip.has(ca) || ca === '10.0.0.1') continue; // 10.0.0.1: the subnet's default gateway
    const mac = `62:${hex((i >> 24) & 255)}:${hex((i >> 16) & 255)}:${hex((i >> 8) & 255)}:${hex(i & 255)}:01`;
    out.push({ customer_address: ca, vsid: BIG_VSID, mac, provider_address: `192.168.${10 + (i % 200)}.${1 + (i % 250)}` });
  }
  return out;
}
