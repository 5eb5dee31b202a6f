// The lab's guest image: a Debian kernel and a cpio initramfs, made from
// Debian packages only, cached under a directory named by everything that
// goes into it (so a second build is a lookup).
//
// - kernel: `linux-image-cloud-amd64`'s image (or the generic one), fetched
//   with `apt-get download` and unpacked with `dpkg-deb -x`; its virtio-net
//   modules (and their dependencies, read from each module's .modinfo) go
//   into the initramfs with the order to load them in;
// - busybox-static (fetched the same way): the shell, ip, ping, nc,
//   sha256sum, timeout...;
// - iperf3 and ethtool: the host's own binaries (Debian's packages, installed
//   with apt when missing) with the shared libraries ldd names;
// - /init: lab/vm/init.sh (NIC from the kernel command line, a command
//   channel on ttyS0; see there).
//
// The image directory holds `vmlinuz`, `initrd.img` (gzip-compressed newc)
// and `image.json` (what went in). The only network used is the Debian
// mirror apt is configured with.

import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { gzipSync } from 'node:zlib';
import { repoRoot, run, runOk } from '../netns.js';

/** Bump when the image's layout changes without any input changing. */
const FORMAT = 1;

export const DEFAULT_CACHE_DIR = '/var/cache/nvgred-lab';
/** Image directories kept in the cache (newest first); older ones are removed after a build. */
const KEEP_IMAGES = 3;

/** The modules the guest needs for a virtio-net NIC on PCI; their dependencies are added. */
const GUEST_MODULES = ['virtio_pci', 'virtio_net'];
/** Host programs copied into the guest with their libraries, by the Debian package that ships them. */
const GUEST_TOOLS: Record<string, string> = { iperf3: 'iperf3', ethtool: 'ethtool' };

export type KernelFlavor = 'cloud' | 'generic';

export interface ImageOptions {
  /** Default: $NVGRED_VM_CACHE or /var/cache/nvgred-lab. */
  cacheDir?: string;
  /** Default 'cloud': fewer drivers to probe, LZ4-compressed (boots faster under TCG). */
  flavor?: KernelFlavor;
  log?: (msg: string) => void;
}

export interface VmImage {
  dir: string;
  kernel: string;
  initrd: string;
  /** Names the cache directory: a hash of every input. */
  key: string;
  /** `uname -r` of the guest. */
  kernelRelease: string;
  /** Debian package → version, for what was downloaded and for what the guest tools came from. */
  packages: Record<string, string>;
  /** Modules /init loads, in order. */
  modules: string[];
  initrdBytes: number;
  /** False when the image came from the cache. */
  built: boolean;
  ms: number;
}

interface Manifest extends Omit<VmImage, 'dir' | 'kernel' | 'initrd' | 'built' | 'ms'> {
  files: string[];
}

const LONG = { timeoutMs: 300_000 };

// ---------------------------------------------------------------------------
// apt

/**
 * Install the Debian packages of `names` that are missing (`dpkg -s`), with
 * apt, without recommends. One apt-get update first if any is missing.
 */
export async function ensureDebianPackages(names: readonly string[], log: (msg: string) => void = () => undefined): Promise<void> {
  const missing: string[] = [];
  for (const n of names) if ((await run(['dpkg', '-s', n])).code !== 0) missing.push(n);
  if (!missing.length) return;
  log(`installing ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  await runOk(['apt-get', 'update', '-q'], { ...LONG, env });
  await runOk(['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...missing], { ...LONG, env });
}

interface Candidate {
  version: string;
  depends: string;
}

/**
 * Candidate versions (and Depends) of packages, from apt's lists. apt-cache
 * takes seconds here (the machine's apt keeps no pkgcache.bin), so answers
 * are remembered in `memoFile` until the lists change. A package apt does
 * not know is absent from the result.
 */
async function aptCandidates(pkgs: readonly string[], memoFile: string): Promise<Map<string, Candidate>> {
  const lists = '/var/lib/apt/lists';
  const fingerprint = sha256(
    (existsSync(lists) ? readdirSync(lists) : [])
      .sort()
      .map((n) => {
        const st = statSync(join(lists, n));
        return `${n} ${st.size} ${st.mtimeMs}`;
      })
      .join('\n'),
  );
  let memo: { lists: string; candidates: Record<string, Candidate> } = { lists: fingerprint, candidates: {} };
  try {
    const m = JSON.parse(readFileSync(memoFile, 'utf8')) as typeof memo;
    if (m.lists === fingerprint) memo = m;
  } catch {
    /* no memo yet */
  }
  const unknown = pkgs.filter((p) => !memo.candidates[p]);
  if (unknown.length) {
    // Exit status 100 when one of them is unknown; the others are still printed.
    const r = await run(['apt-cache', 'show', '--no-all-versions', ...unknown], { timeoutMs: 60_000 });
    for (const stanza of r.stdout.split(/\n\s*\n/)) {
      const field = (f: string): string => new RegExp(`^${f}: (.*)$`, 'm').exec(stanza)?.[1]?.trim() ?? '';
      if (field('Package') && field('Version')) memo.candidates[field('Package')] = { version: field('Version'), depends: field('Depends') };
    }
    if (unknown.every((p) => memo.candidates[p])) writeFileSync(memoFile, JSON.stringify(memo));
  }
  return new Map(pkgs.filter((p) => memo.candidates[p]).map((p) => [p, memo.candidates[p]!]));
}

interface Sources {
  kernelPackage: string;
  packages: Record<string, string>;
  /** Absolute host path → sha256 of the guest tools and their libraries. */
  hostFiles: Record<string, string>;
}

/** What the image would be made of now: package versions from apt's lists, host files by content. */
async function resolveSources(flavor: KernelFlavor, cacheDir: string, log: (msg: string) => void): Promise<Sources> {
  const meta = flavor === 'cloud' ? 'linux-image-cloud-amd64' : 'linux-image-amd64';
  const memo = join(cacheDir, 'apt-candidates.json');
  let c = await aptCandidates([meta, 'busybox-static'], memo);
  if (c.size < 2) {
    log('apt lacks the kernel or busybox-static: apt-get update');
    await runOk(['apt-get', 'update', '-q'], LONG);
    c = await aptCandidates([meta, 'busybox-static'], memo);
  }
  const m = c.get(meta);
  const busybox = c.get('busybox-static');
  if (!m || !busybox) throw new Error(`apt has no candidate for ${m ? 'busybox-static' : meta} (is a Debian main repository configured?)`);
  // The metapackage depends on exactly one image: "linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)".
  const dep = /^(linux-image-[^\s,]+)\s*\(=\s*([^)\s]+)\)/.exec(m.depends);
  if (!dep) throw new Error(`${meta} ${m.version}: unexpected Depends ${JSON.stringify(m.depends)}`);
  await ensureDebianPackages(Object.values(GUEST_TOOLS), log);
  const packages: Record<string, string> = { [dep[1]!]: dep[2]!, 'busybox-static': busybox.version };
  const hostFiles: Record<string, string> = {};
  for (const [tool, pkg] of Object.entries(GUEST_TOOLS)) {
    packages[pkg] = (await runOk(['dpkg-query', '-W', '-f', '${Version}', pkg])).stdout.trim();
    const bin = which(tool);
    for (const f of [bin, ...(await sharedLibraries(bin))]) hostFiles[f] = sha256(readFileSync(f));
  }
  return { kernelPackage: dep[1]!, packages, hostFiles };
}

function which(prog: string): string {
  for (const d of (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    const p = join(d, prog);
    if (existsSync(p) && statSync(p).isFile()) return p;
  }
  throw new Error(`${prog} not found in PATH`);
}

/** The libraries (and the dynamic loader) `ldd` lists for a binary, as the loader will look them up. */
async function sharedLibraries(binary: string): Promise<string[]> {
  const r = await runOk(['ldd', binary]);
  const libs: string[] = [];
  for (const line of r.stdout.split('\n')) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m) libs.push(m[1]!);
    else if (line.includes('not found')) throw new Error(`ldd ${binary}: ${line.trim()}`);
  }
  return libs;
}

const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

// ---------------------------------------------------------------------------
// The build

/**
 * The guest image for the current package versions: from the cache when an
 * image with the same inputs exists, else built (about 10-20 s: downloads
 * ~28 MB for the cloud kernel) and cached. Safe to call from several
 * processes at once: a build happens in a private directory renamed into
 * place.
 */
export async function buildImage(opts: ImageOptions = {}): Promise<VmImage> {
  const started = Date.now();
  const log = opts.log ?? (() => undefined);
  const cacheDir = opts.cacheDir ?? process.env['NVGRED_VM_CACHE'] ?? DEFAULT_CACHE_DIR;
  const flavor = opts.flavor ?? 'cloud';
  const initScript = readFileSync(join(repoRoot(), 'lab', 'vm', 'init.sh'));
  mkdirSync(cacheDir, { recursive: true });
  const src = await resolveSources(flavor, cacheDir, log);
  const key = sha256(JSON.stringify({ FORMAT, flavor, GUEST_MODULES, packages: src.packages, hostFiles: src.hostFiles, init: sha256(initScript) })).slice(0, 16);
  const dir = join(cacheDir, `vm-${key}`);
  const cached = readManifest(dir);
  if (cached) return image(dir, cached, false, started);

  removeAbandonedBuilds(cacheDir);
  const work = mkdtempSync(join(cacheDir, '.build-'));
  try {
    log(`building guest image vm-${key} (${Object.entries(src.packages).map(([p, v]) => `${p} ${v}`).join(', ')})`);
    const debs = join(work, 'debs');
    mkdirSync(debs);
    const wanted = [src.kernelPackage, 'busybox-static'].map((p) => `${p}=${src.packages[p]}`);
    // apt-get download runs as root in a directory _apt cannot write: it says so on stderr and downloads anyway.
    await runOk(['apt-get', 'download', '-q', ...wanted], { ...LONG, cwd: debs });
    const x = join(work, 'x');
    for (const deb of readdirSync(debs)) await runOk(['dpkg-deb', '-x', join(debs, deb), x], LONG);

    const root = join(work, 'root');
    for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'tmp', 'etc', 'root', 'lib/modules']) mkdirSync(join(root, d), { recursive: true });
    copyFileSync(join(x, 'bin', 'busybox'), join(root, 'bin', 'busybox'));
    chmodSync(join(root, 'bin', 'busybox'), 0o755);
    // One link per applet, where busybox says it belongs (bin/sh, sbin/ip, usr/bin/sha256sum...).
    for (const path of (await runOk([join(root, 'bin', 'busybox'), '--list-full'])).stdout.split('\n').filter(Boolean)) {
      const dst = join(root, path);
      if (existsSync(dst)) continue;
      mkdirSync(dirname(dst), { recursive: true });
      symlinkSync(relative(dirname(dst), join(root, 'bin', 'busybox')), dst);
    }
    for (const f of Object.keys(src.hostFiles)) {
      const dst = join(root, f);
      mkdirSync(dirname(dst), { recursive: true });
      copyFileSync(f, dst); // follows symlinks: the file ldd named holds the library
      chmodSync(dst, 0o755);
    }
    writeFileSync(join(root, 'init'), initScript, { mode: 0o755 });
    writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');

    const modDir = readdirSync(join(x, 'lib', 'modules'));
    if (modDir.length !== 1) throw new Error(`${src.kernelPackage}: expected one lib/modules/<release>, found ${modDir.join(' ')}`);
    const kernelRelease = modDir[0]!;
    const modules = moduleLoadOrder(join(x, 'lib', 'modules', kernelRelease), GUEST_MODULES);
    for (const m of modules) copyFileSync(m.path, join(root, 'lib', 'modules', `${m.name}.ko`));
    writeFileSync(join(root, 'lib', 'modules', 'order'), modules.map((m) => `${m.name}\n`).join(''));

    const out = join(work, 'out');
    mkdirSync(out);
    copyFileSync(join(x, 'boot', `vmlinuz-${kernelRelease}`), join(out, 'vmlinuz'));
    const cpio = newcArchive(root, [{ path: 'dev/console', mode: 0o020600, rdev: [5, 1] }]);
    const initrd = gzipSync(cpio.data, { level: 6 });
    writeFileSync(join(out, 'initrd.img'), initrd);
    const manifest: Manifest = {
      key,
      kernelRelease,
      packages: src.packages,
      modules: modules.map((m) => m.name),
      initrdBytes: initrd.length,
      files: cpio.names,
    };
    writeFileSync(join(out, 'image.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    try {
      renameSync(out, dir);
    } catch (e) {
      // Another process built the same image meanwhile: use theirs.
      const theirs = readManifest(dir);
      if (!theirs) throw e;
      return image(dir, theirs, false, started);
    }
    pruneCache(cacheDir, dir, log);
    const img = image(dir, manifest, true, started);
    log(`guest image ${dir}: kernel ${kernelRelease}, initrd ${(initrd.length / 1e6).toFixed(1)} MB, built in ${(img.ms / 1000).toFixed(1)} s`);
    return img;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function image(dir: string, m: Manifest, built: boolean, started: number): VmImage {
  const { files: _files, ...rest } = m;
  return { ...rest, dir, kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), built, ms: Date.now() - started };
}

function readManifest(dir: string): Manifest | null {
  try {
    const m = JSON.parse(readFileSync(join(dir, 'image.json'), 'utf8')) as Manifest;
    return existsSync(join(dir, 'vmlinuz')) && existsSync(join(dir, 'initrd.img')) ? m : null;
  } catch {
    return null;
  }
}

/** Build directories of processes that died mid-build (an hour old: no build takes that long). */
function removeAbandonedBuilds(cacheDir: string): void {
  for (const n of readdirSync(cacheDir)) {
    const p = join(cacheDir, n);
    if (n.startsWith('.build-') && Date.now() - statSync(p).mtimeMs > 3_600_000) rmSync(p, { recursive: true, force: true });
  }
}

/** Keep the newest KEEP_IMAGES images (and always `current`). */
function pruneCache(cacheDir: string, current: string, log: (msg: string) => void): void {
  const images = readdirSync(cacheDir)
    .filter((n) => n.startsWith('vm-'))
    .map((n) => join(cacheDir, n))
    .filter((p) => p !== current)
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  for (const p of images.slice(KEEP_IMAGES - 1)) {
    log(`removing old guest image ${p}`);
    rmSync(p, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Kernel modules

interface Module {
  name: string;
  path: string;
}

/**
 * `wanted` and every module they depend on, dependencies first, skipping
 * modules built into the kernel (modules.builtin). Dependencies are read from
 * each module's `.modinfo` section (`depends=a,b`): the package ships no
 * modules.dep (depmod makes it at install time).
 */
export function moduleLoadOrder(releaseDir: string, wanted: readonly string[]): Module[] {
  const norm = (n: string): string => n.replace(/-/g, '_');
  const files = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ko')) files.set(norm(e.name.slice(0, -3)), p);
    }
  };
  walk(join(releaseDir, 'kernel'));
  const builtinFile = join(releaseDir, 'modules.builtin');
  const builtin = new Set(
    existsSync(builtinFile) ? readFileSync(builtinFile, 'utf8').split('\n').filter(Boolean).map((l) => norm(basename(l, '.ko'))) : [],
  );
  const order: Module[] = [];
  const visiting = new Set<string>();
  const visit = (name: string, from: string): void => {
    if (builtin.has(name) || order.some((m) => m.name === name)) return;
    if (visiting.has(name)) throw new Error(`module dependency cycle through ${name}`);
    const path = files.get(name);
    if (!path) throw new Error(`module ${name} (needed by ${from}) is neither in ${releaseDir}/kernel nor built in`);
    visiting.add(name);
    for (const d of modinfo(readFileSync(path)).get('depends')?.split(',').filter(Boolean) ?? []) visit(norm(d), name);
    visiting.delete(name);
    order.push({ name, path });
  };
  for (const w of wanted) visit(norm(w), 'the guest');
  return order;
}

/** The key=value strings of an ELF64 little-endian module's `.modinfo` section. */
export function modinfo(ko: Buffer): Map<string, string> {
  if (ko.readUInt32BE(0) !== 0x7f454c46 || ko[4] !== 2 || ko[5] !== 1) throw new Error('not an ELF64 little-endian file');
  const shoff = Number(ko.readBigUInt64LE(0x28));
  const shentsize = ko.readUInt16LE(0x3a);
  const shnum = ko.readUInt16LE(0x3c);
  const shstrndx = ko.readUInt16LE(0x3e);
  const section = (i: number) => {
    const h = shoff + i * shentsize;
    return { name: ko.readUInt32LE(h), offset: Number(ko.readBigUInt64LE(h + 0x18)), size: Number(ko.readBigUInt64LE(h + 0x20)) };
  };
  const names = section(shstrndx);
  const out = new Map<string, string>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    const end = ko.indexOf(0, names.offset + s.name);
    if (ko.toString('latin1', names.offset + s.name, end) !== '.modinfo') continue;
    for (const kv of ko.toString('latin1', s.offset, s.offset + s.size).split('\0')) {
      const eq = kv.indexOf('=');
      if (eq > 0 && !out.has(kv.slice(0, eq))) out.set(kv.slice(0, eq), kv.slice(eq + 1));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// cpio "newc" (what the kernel unpacks as an initramfs)

interface ExtraNode {
  path: string;
  /** Full st_mode, type bits included. */
  mode: number;
  rdev: [number, number];
}

/**
 * A newc archive of the tree under `root` (sorted, owner root, mtime 0:
 * the same tree gives the same bytes), plus device nodes that cannot be
 * created without privileges in a directory.
 */
export function newcArchive(root: string, extra: readonly ExtraNode[] = []): { data: Buffer; names: string[] } {
  const parts: Buffer[] = [];
  const names: string[] = [];
  let ino = 1;
  const entry = (name: string, mode: number, data: Buffer, rdev: [number, number] = [0, 0]): void => {
    const fields = [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], Buffer.byteLength(name) + 1, 0];
    const head = Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}${name}\0`, 'latin1');
    parts.push(head, Buffer.alloc(pad4(head.length)), data, Buffer.alloc(pad4(data.length)));
    if (name !== 'TRAILER!!!') names.push(name);
  };
  const walk = (rel: string): void => {
    for (const n of readdirSync(join(root, rel)).sort()) {
      const r = rel ? `${rel}/${n}` : n;
      const p = join(root, r);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) entry(r, 0o120777, Buffer.from(readlinkSync(p)));
      else if (st.isDirectory()) {
        entry(r, 0o040755, Buffer.alloc(0));
        walk(r);
      } else entry(r, 0o100000 | (st.mode & 0o777), readFileSync(p));
    }
  };
  walk('');
  for (const e of extra) entry(e.path, e.mode, Buffer.alloc(0), e.rdev);
  entry('TRAILER!!!', 0, Buffer.alloc(0));
  return { data: Buffer.concat(parts), names };
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;
