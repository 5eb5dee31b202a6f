// Strict parsers and canonical forms for the config's network values:
// IP addresses, prefixes, MACs, routing-domain GUIDs, interface and
// namespace names, host:port. Each parser returns either the canonical value
// or a reason phrase that completes "<path>: <value> ...".
//
// Strict means: no whitespace, no IPv4 shorthand (`10.1`), no leading zeros
// in IPv4 octets (`010.0.0.1`), no zone ids, no IPv4-mapped IPv6 addresses.

export type Family = 4 | 6;

export type IpAddr =
  | { readonly family: 4; /** uint32 */ readonly n: number; readonly text: string }
  | { readonly family: 6; /** 8 groups of 16 bits */ readonly g: readonly number[]; readonly text: string };

export interface IpPrefix {
  readonly family: Family;
  /** The network address (no host bits). */
  readonly addr: IpAddr;
  readonly len: number;
  /** `<addr>/<len>` */
  readonly text: string;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const bad = <T>(reason: string): Parsed<T> => ({ ok: false, reason });

// ---------------------------------------------------------------- IPv4

/** Parse strict dotted-decimal IPv4; returns the uint32 or -1. */
export function parseIPv4(s: string): number {
  const len = s.length;
  if (len < 7 || len > 15) return -1;
  let n = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < len; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 /* . */) {
      if (digits === 0 || dots === 3) return -1;
      n = n * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return -1; // leading zero
      octet = octet * 10 + (c - 48);
      if (octet > 255) return -1;
      digits++;
    } else {
      return -1;
    }
  }
  if (dots !== 3 || digits === 0) return -1;
  return n * 256 + octet;
}

export function formatIPv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

// ---------------------------------------------------------------- IPv6

function parseHexGroup(s: string): number {
  if (s.length < 1 || s.length > 4) return -1;
  let v = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let d: number;
    if (c >= 48 && c <= 57) d = c - 48;
    else if (c >= 97 && c <= 102) d = c - 87;
    else if (c >= 65 && c <= 70) d = c - 55;
    else return -1;
    v = v * 16 + d;
  }
  return v;
}

/** Parse RFC 4291 text (including a trailing dotted quad); returns 8 groups or undefined. */
export function parseIPv6Groups(s: string): number[] | undefined {
  if (s.length < 2 || s.length > 45) return undefined;
  const dc = s.indexOf('::');
  if (dc !== -1 && s.indexOf('::', dc + 1) !== -1) return undefined; // two '::' (or ':::')
  const splitGroups = (part: string): string[] => (part === '' ? [] : part.split(':'));
  const head = dc === -1 ? splitGroups(s) : splitGroups(s.slice(0, dc));
  const tail = dc === -1 ? [] : splitGroups(s.slice(dc + 2));
  // A trailing dotted quad (only at the very end) supplies the last two groups.
  const last = dc === -1 ? head : tail;
  let quad: number[] = [];
  if (last.length > 0 && last[last.length - 1]!.includes('.')) {
    const v4 = parseIPv4(last.pop()!);
    if (v4 < 0) return undefined;
    quad = [v4 >>> 16, v4 & 0xffff];
  }
  const parse = (list: string[]): number[] | undefined => {
    const out: number[] = [];
    for (const p of list) {
      const v = parseHexGroup(p);
      if (v < 0) return undefined;
      out.push(v);
    }
    return out;
  };
  const h = parse(head);
  const t = parse(tail);
  if (!h || !t) return undefined;
  const explicit = h.length + t.length + quad.length;
  if (dc === -1) {
    if (explicit !== 8) return undefined;
    return [...h, ...quad];
  }
  if (explicit > 7) return undefined;
  return [...h, ...new Array<number>(8 - explicit).fill(0), ...t, ...quad];
}

/** RFC 5952 text: lowercase, no leading zeros, longest zero run (>= 2) compressed. */
export function formatIPv6(g: readonly number[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number, b: number): string =>
    g
      .slice(a, b)
      .map((x) => x.toString(16))
      .join(':');
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

// ---------------------------------------------------------------- IP (either family)

function v4(n: number, text = formatIPv4(n)): IpAddr {
  return { family: 4, n, text };
}

function v6(g: readonly number[]): IpAddr {
  return { family: 6, g, text: formatIPv6(g) };
}

const IP_REASON = 'is not a valid IP address';

/** Parse a strict IPv4 or IPv6 address into its canonical form. */
export function parseIp(s: string): Parsed<IpAddr> {
  // Fast path: the common case in large documents.
  const n = parseIPv4(s);
  if (n >= 0) return ok(v4(n, s)); // strict parsing: the input is already canonical
  if (/\s/.test(s)) return bad(`${IP_REASON} (it contains whitespace)`);
  if (s.includes('%')) return bad(`${IP_REASON}: zone ids (%...) are not allowed`);
  if (s.includes('/')) return bad(`${IP_REASON} (a plain address is expected here, not a prefix)`);
  if (s.includes(':')) {
    const g = parseIPv6Groups(s);
    if (!g) return bad(`${IP_REASON} (malformed IPv6 address)`);
    if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
      return bad(
        `is an IPv4-mapped IPv6 address, which is not allowed: write the IPv4 address ${formatIPv4(g[6]! * 65536 + g[7]!)}`,
      );
    }
    return ok(v6(g));
  }
  if (/^[0-9.]+$/.test(s)) {
    if (/(^|\.)0[0-9]/.test(s)) return bad(`${IP_REASON} (leading zeros are not allowed in IPv4 octets)`);
    return bad(`${IP_REASON} (an IPv4 address is four decimal octets 0..255: a.b.c.d)`);
  }
  return bad(IP_REASON);
}

export function familyOf(text: string): Family {
  return text.includes(':') ? 6 : 4;
}

export function isUnspecified(a: IpAddr): boolean {
  return a.family === 4 ? a.n === 0 : a.g.every((x) => x === 0);
}

export function unspecifiedOf(family: Family): string {
  return family === 4 ? '0.0.0.0' : '::';
}

/**
 * Why `a` cannot be a unicast host address (a CA, a PA, a next hop), or
 * undefined if it can.
 */
export function unicastProblem(a: IpAddr): string | undefined {
  if (a.family === 4) {
    const top = a.n >>> 24;
    if (a.n === 0) return 'is the unspecified address, not a unicast address';
    if (a.n === 0xffffffff) return 'is the broadcast address, not a unicast address';
    if (top === 0) return 'is in 0.0.0.0/8 ("this network"), not a unicast address';
    if (top === 127) return 'is a loopback address, not a usable unicast address';
    if (top >= 224 && top <= 239) return 'is a multicast address, not a unicast address';
    if (top >= 240) return 'is in the reserved range 240.0.0.0/4, not a unicast address';
    return undefined;
  }
  const g = a.g;
  if (g.every((x) => x === 0)) return 'is the unspecified address, not a unicast address';
  if (g[7] === 1 && g.slice(0, 7).every((x) => x === 0)) return 'is the loopback address, not a usable unicast address';
  if (g[0]! >>> 8 === 0xff) return 'is a multicast address, not a unicast address';
  return undefined;
}

// ---------------------------------------------------------------- prefixes

function maskV4(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

function networkV6(g: readonly number[], len: number): number[] {
  const out = new Array<number>(8);
  for (let i = 0; i < 8; i++) {
    const bits = Math.max(0, Math.min(16, len - i * 16));
    const m = bits === 0 ? 0 : (0xffff << (16 - bits)) & 0xffff;
    out[i] = g[i]! & m;
  }
  return out;
}

/** Prefix-length reason for a family, or undefined when `len` fits. */
export function prefixLengthProblem(len: number, family: Family): string | undefined {
  const max = family === 4 ? 32 : 128;
  return len >= 0 && len <= max ? undefined : `is out of range for an IPv${family} prefix (0..${max})`;
}

/** Parse `<address>/<length>` strictly; the address must be the network address. */
export function parsePrefix(s: string): { ok: true; value: IpPrefix } | { ok: false; reason: string; hostBits: boolean } {
  const slash = s.indexOf('/');
  if (slash < 0) return { ok: false, reason: 'is not a prefix: expected <address>/<length>', hostBits: false };
  if (s.indexOf('/', slash + 1) >= 0) return { ok: false, reason: 'is not a valid prefix (more than one "/")', hostBits: false };
  const addrText = s.slice(0, slash);
  const lenText = s.slice(slash + 1);
  const a = parseIp(addrText);
  if (!a.ok) return { ok: false, reason: `is not a valid prefix: the address ${a.reason}`, hostBits: false };
  if (!/^(0|[1-9][0-9]{0,2})$/.test(lenText)) {
    return { ok: false, reason: 'is not a valid prefix: the length must be a decimal integer without leading zeros', hostBits: false };
  }
  const len = Number(lenText);
  const addr = a.value;
  const lp = prefixLengthProblem(len, addr.family);
  if (lp) return { ok: false, reason: `is not a valid prefix: the length ${lp}`, hostBits: false };
  let net: IpAddr;
  if (addr.family === 4) {
    const n = (addr.n & maskV4(len)) >>> 0;
    net = v4(n);
    if (n !== addr.n) {
      return { ok: false, reason: `has host bits set (did you mean ${net.text}/${len}?)`, hostBits: true };
    }
  } else {
    const g = networkV6(addr.g, len);
    net = v6(g);
    if (net.text !== addr.text) {
      return { ok: false, reason: `has host bits set (did you mean ${net.text}/${len}?)`, hostBits: true };
    }
  }
  return { ok: true, value: { family: addr.family, addr: net, len, text: `${net.text}/${len}` } };
}

/** Whether `address` (of any family) is in the subnet of `host`/`len` (an interface address and its prefix length). */
export function inSubnet(host: string, len: number, address: string): boolean {
  const h = parseIp(host);
  const a = parseIp(address);
  if (!h.ok || !a.ok || h.value.family !== a.value.family) return false;
  if (h.value.family === 4 && a.value.family === 4) return ((h.value.n ^ a.value.n) & maskV4(len)) === 0;
  if (h.value.family === 6 && a.value.family === 6) return v6(networkV6(h.value.g, len)).text === v6(networkV6(a.value.g, len)).text;
  return false;
}

/**
 * The default gateway (the "`.1` address") of an on-link customer subnet:
 * the network address + 1. Undefined for prefixes too small to hold a
 * gateway and hosts (IPv4 /31, /32; IPv6 /127, /128) and for the /0 default.
 */
export function defaultGatewayOf(prefix: string): string | undefined {
  const p = parsePrefix(prefix);
  if (!p.ok) return undefined;
  const { addr, len } = p.value;
  if (len === 0) return undefined;
  if (addr.family === 4) return len <= 30 ? formatIPv4((addr.n | 1) >>> 0) : undefined;
  if (len > 126) return undefined;
  const g = addr.g.slice();
  g[7] = g[7]! | 1;
  return formatIPv6(g);
}

// ---------------------------------------------------------------- MAC

const MAC_SEP_RE = /^([0-9a-fA-F]{2})([:-])([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})$/;
const MAC_BARE_RE = /^[0-9a-fA-F]{12}$/;
const MAC_CANONICAL_RE = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/;

export const ZERO_MAC = '00:00:00:00:00:00';

/**
 * Parse a MAC in `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` or `aabbccddeeff`
 * form (any case) into lowercase colon form. Multicast (and broadcast) MACs
 * are rejected; the all-zero MAC only when `allowZero`.
 */
export function parseMac(s: string, allowZero = false): Parsed<string> {
  // Fast path: already canonical.
  if (MAC_CANONICAL_RE.test(s)) {
    const c = s.charCodeAt(1); // low nibble of the first octet
    const multicast = (c <= 57 ? c - 48 : c - 87) & 1;
    if (!multicast && (allowZero || s !== ZERO_MAC)) return ok(s);
  }
  let hex: string;
  const m = MAC_SEP_RE.exec(s);
  if (m) hex = m[1]! + m[3]! + m[4]! + m[5]! + m[6]! + m[7]!;
  else if (MAC_BARE_RE.test(s)) hex = s;
  else {
    return bad(
      'is not a valid MAC address (expected six hex octets as 60:00:60:00:01:01, 60-00-60-00-01-01 or 600060000101)',
    );
  }
  hex = hex.toLowerCase();
  const text = `${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}:${hex.slice(6, 8)}:${hex.slice(8, 10)}:${hex.slice(10, 12)}`;
  const first = parseInt(hex.slice(0, 2), 16);
  if (first & 1) {
    return bad(
      text === 'ff:ff:ff:ff:ff:ff'
        ? 'is the broadcast MAC; a MAC must be unicast'
        : 'is a multicast MAC (the low bit of the first octet is set); a MAC must be unicast',
    );
  }
  if (!allowZero && text === ZERO_MAC) return bad('is the all-zero MAC, not a station address');
  return ok(text);
}

// ---------------------------------------------------------------- routing domain GUID

const GUID_RE =
  /^(\{?)([0-9a-fA-F]{8})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-([0-9a-fA-F]{12})(\}?)$/;

/** `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}` with or without braces → lowercase, braces. */
export function parseRoutingDomain(s: string): Parsed<string> {
  const m = GUID_RE.exec(s);
  if (!m || m[1]!.length !== m[7]!.length) {
    return bad(
      'is not a valid routing domain ID (expected a GUID such as {12345678-1000-2000-3000-123456780001}, braces optional)',
    );
  }
  return ok(`{${m.slice(2, 7).join('-').toLowerCase()}}`);
}

// ---------------------------------------------------------------- names

function utf8Bytes(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;

/** Linux `dev_valid_name()`: 1..15 bytes, no '/', ':' or whitespace, not '.' or '..'. */
export function interfaceNameProblem(s: string): string | undefined {
  const what = 'is not a valid Linux interface name';
  if (s.length === 0) return `${what} (empty)`;
  if (utf8Bytes(s) > 15) return `${what} (longer than 15 bytes)`;
  if (s === '.' || s === '..') return what;
  if (/[/:\s]/.test(s) || CONTROL_RE.test(s)) return `${what} (no '/', ':', whitespace or control characters)`;
  return undefined;
}

/** A network namespace name (a file under /run/netns): 1..255 bytes, no '/', not '.' or '..'. */
export function netnsNameProblem(s: string): string | undefined {
  const what = 'is not a valid network namespace name';
  if (s.length === 0) return `${what} (empty)`;
  if (utf8Bytes(s) > 255) return `${what} (longer than 255 bytes)`;
  if (s === '.' || s === '..') return what;
  if (s.includes('/') || CONTROL_RE.test(s)) return `${what} (no '/' or control characters)`;
  return undefined;
}

/** A free-text label (host name, VM name): non-empty, no control characters, at most `max` characters. */
export function labelProblem(s: string, max: number): string | undefined {
  if (s.length === 0) return 'is empty';
  if ([...s].length > max) return `is longer than ${max} characters`;
  if (CONTROL_RE.test(s)) return 'contains control characters';
  return undefined;
}

/** An absolute filesystem path (no NUL, at most `maxBytes` bytes). */
export function absolutePathProblem(s: string, maxBytes = 4095): string | undefined {
  if (!s.startsWith('/')) return 'is not an absolute path (it must start with "/")';
  if (s.includes('\0')) return 'contains a NUL character';
  if (utf8Bytes(s) > maxBytes) return `is too long (at most ${maxBytes} bytes)`;
  return undefined;
}

// ---------------------------------------------------------------- host:port

const HOSTNAME_LABEL_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** `host:port` with the host an IPv4 address, `[IPv6]` or a DNS name; port 1..65535. */
export function parseHostPort(s: string): Parsed<string> {
  const what = 'is not a valid host:port (e.g. 127.0.0.1:9470, [::1]:9470, localhost:9470)';
  let host: string;
  let port: string;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0 || s[close + 1] !== ':') return bad(what);
    host = s.slice(1, close);
    port = s.slice(close + 2);
    const a = parseIp(host);
    if (!a.ok || a.value.family !== 6) return bad(`${what}: the address in brackets must be IPv6`);
    host = `[${a.value.text}]`;
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) return bad(`${what}: the port is missing`);
    host = s.slice(0, colon);
    port = s.slice(colon + 1);
    if (host.includes(':')) return bad(`${what}: write an IPv6 address in brackets, as [::1]:9470`);
    if (host === '') return bad(`${what}: the host is missing (use 0.0.0.0 or [::] for all addresses)`);
    if (/^[0-9.]+$/.test(host)) {
      const a = parseIp(host);
      if (!a.ok) return bad(`${what}: the host ${a.reason}`);
      host = a.value.text;
    } else {
      const labels = host.replace(/\.$/, '').split('.');
      if (host.length > 253 || !labels.every((l) => HOSTNAME_LABEL_RE.test(l))) {
        return bad(`${what}: the host is not an IP address or a DNS name`);
      }
      host = host.toLowerCase();
    }
  }
  if (!/^[1-9][0-9]{0,4}$/.test(port) || Number(port) > 65535) {
    return bad(`${what}: the port must be an integer in 1..65535`);
  }
  return ok(`${host}:${port}`);
}
