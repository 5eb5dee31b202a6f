#!/usr/bin/env node
// nvgred: the NVGRE dataplane daemon. Loads and validates the whole config,
// restores runtime changes saved in state_dir, creates the host's provider
// addresses, routes and VM adapters, hands the packet core one table
// snapshot, serves the control API and metrics, reloads on SIGHUP, and on
// SIGTERM/SIGINT removes everything it placed.

import type { Server } from 'node:http';
import { parseArgs } from 'node:util';
import { EventBus } from '../api/events.js';
import { serveApi } from '../api/server.js';
import { loadConfigFile, validatePolicy } from '../config/index.js';
import { isNvgreError } from '../errors.js';
import { Metrics, serveMetrics } from '../metrics/index.js';
import type { Policy } from '../model/policy.js';
import { native } from '../native.js';
import { HostDataplane } from './host.js';
import { isLogLevel, LOG_LEVELS, Logs, type Logger } from './log.js';
import { logPacketEvents } from './events.js';
import { Learning } from './learning.js';
import { StateFile, type SavedState } from './state.js';
import { PolicyStore } from './store.js';
import { supervise } from './supervisor.js';
import { Systemd } from './systemd.js';

const USAGE = `Usage: nvgred --config FILE [--workers N] [--segmentation auto|userspace] [--poll-us N] [--log-level LEVEL]

  -c, --config FILE     the host's policy (YAML, see the config contract)
      --workers N       packet worker threads (default 1)
      --segmentation M  who cuts VMs' large TCP segments into MTU-sized NVGRE
                        packets: auto (the kernel or the NIC, on the way out,
                        where the kernel can: Linux 6.6, CAP_BPF; else nvgred)
                        or userspace (always nvgred) (default auto)
      --poll-us N       how long a worker keeps polling after its last packet
                        before it sleeps: CPU time for latency (default 50)
      --log-level LEVEL ${LOG_LEVELS.join(' | ')} (default info)
  -h, --help            this text
  -V, --version         print the version

Signals: SIGHUP reloads the config file; SIGTERM and SIGINT stop.
`;

/** Exit statuses: 0 clean stop, 1 runtime failure, 2 usage or config error. */
const EXIT_RUNTIME = 1;
const EXIT_CONFIG = 2;

const SEGMENTATION = ['auto', 'userspace'] as const;
type Segmentation = (typeof SEGMENTATION)[number];

interface CommandLine {
  config: string;
  workers: number;
  segmentation: Segmentation;
  pollMicros: number;
  level: string;
}

function parseCommandLine(): CommandLine | number {
  let args;
  try {
    args = parseArgs({
      options: {
        config: { type: 'string', short: 'c' },
        workers: { type: 'string', default: '1' },
        segmentation: { type: 'string', default: 'auto' },
        'poll-us': { type: 'string', default: '50' },
        'log-level': { type: 'string', default: 'info' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
      strict: true,
    }).values;
  } catch (err) {
    process.stderr.write(`nvgred: ${(err as Error).message}\n${USAGE}`);
    return EXIT_CONFIG;
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (args.version) {
    process.stdout.write(`nvgred ${native().version()}\n`);
    return 0;
  }
  const level = args['log-level']!;
  const workers = Number(args.workers);
  const segmentation = args.segmentation as Segmentation;
  const pollMicros = Number(args['poll-us']);
  const bad = [
    !isLogLevel(level) && `--log-level ${level}`,
    !(Number.isInteger(workers) && workers >= 1) && `--workers ${args.workers}`,
    !SEGMENTATION.includes(segmentation) && `--segmentation ${args.segmentation}`,
    !(Number.isInteger(pollMicros) && pollMicros >= 0 && pollMicros <= 1_000_000) && `--poll-us ${args['poll-us']} (0 to 1000000)`,
  ].filter(Boolean);
  if (!args.config || bad.length) {
    process.stderr.write(`nvgred: ${!args.config ? '--config is required' : `bad ${bad.join(', ')}`}\n${USAGE}`);
    return EXIT_CONFIG;
  }
  return { config: args.config, workers, segmentation, pollMicros, level };
}

/**
 * The policy to start with: the one saved in state_dir (runtime changes
 * included) if there is one, else the config file's. Settings that are read
 * only at start always come from the config file.
 */
function initialPolicy(file: Policy, saved: SavedState | undefined, state: StateFile | undefined, log: Logger): Policy {
  if (saved === undefined) {
    if (!state) log.warn('no state_dir (nor $STATE_DIRECTORY): runtime policy changes will not survive a restart');
    return file;
  }
  const policy = validatePolicy({ ...(saved.policy as object), api: file.api, metrics: file.metrics, state_dir: file.state_dir }, { source: state!.path });
  log.info({ state: state!.path }, 'restored the saved running policy (nvgrectl reload applies the config file instead)');
  return policy;
}

async function main(): Promise<number> {
  const cl = parseCommandLine();
  if (typeof cl === 'number') return cl;

  let logs = new Logs(cl.level as never);
  let log: Logger = logs.root;
  let file: Policy;
  let state: StateFile | undefined;
  let policy: Policy;
  let saved: SavedState | undefined;
  try {
    file = await loadConfigFile(cl.config);
    logs = new Logs(cl.level as never, file.host.name);
    log = logs.root;
    const stateDir = file.state_dir ?? process.env.STATE_DIRECTORY;
    state = stateDir ? new StateFile(stateDir) : undefined;
    saved = state?.load();
    policy = initialPolicy(file, saved, state, log);
  } catch (err) {
    if (!isNvgreError(err)) throw err;
    log.fatal({ code: err.code, errors: err.details, config: cl.config }, err.message);
    return EXIT_CONFIG;
  }

  const core = native();
  const startedAt = Date.now();
  const host = new HostDataplane(core, logs.component('dataplane'));
  const systemd = new Systemd(core, logs.component('systemd'));
  let store: PolicyStore | undefined;
  let learning: Learning | undefined;
  const events = new EventBus();
  const servers: Server[] = [];

  let stop: (why: string, code?: number) => void = () => undefined;
  const stopped = new Promise<number>((resolve) => {
    let stopping = false;
    stop = (why: string, code = 0) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal: why }, 'stopping');
      systemd.stopping();
      learning?.stop(); // saves the learned records' last-seen times
      events.close(); // ends the event streams, so the API server can close
      for (const s of servers) s.close();
      try {
        host.stop();
        log.info('stopped');
        resolve(code);
      } catch (err) {
        log.error({ err }, 'stop failed');
        resolve(EXIT_RUNTIME);
      }
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });

  try {
    host.start({
      workers: cl.workers,
      vsidCounters: file.metrics.per_vsid ? file.metrics.per_vsid_max : 0,
      kernelSegmentation: cl.segmentation === 'auto',
      pollMicros: cl.pollMicros,
    });
    if (saved) host.adopt(saved.owned);
    host.apply(policy);
    store = new PolicyStore(
      host,
      state,
      file,
      cl.config,
      logs.component('policy'),
      {
        start: () => systemd.reloading(),
        end: () => systemd.ready(`${store!.policy.lookup_records.length} lookup records, ${host.portStates().length} VM adapters`),
      },
      { events, learned: saved?.learned ?? [], learningLog: logs.component('learning') },
    );
    store.saveState();
    const metrics = new Metrics({
      core,
      version: core.version(),
      hostName: file.host.name,
      perVsid: file.metrics.per_vsid,
      policy: () => store!.policy,
      adapters: () => {
        const up = new Set(host.portStates().filter((p) => p.up).map((p) => p.name));
        return store!.policy.vm_adapters.map((a) => ({ name: a.name, up: up.has(a.name) }));
      },
      lastReload: () => store!.lastReload,
      learning: () => ({ records: store!.learnedCount, ...store!.learningStats }),
    });
    servers.push(await serveMetrics(metrics, file.metrics.listen));
    servers.push(
      await serveApi(
        { store, host, core, events, log: logs.component('api'), logs, version: core.version(), startedAt, stateDir: state?.dir },
        file.api.socket,
      ),
    );
  } catch (err) {
    log.fatal({ err }, 'start failed');
    for (const s of servers) s.close();
    host.stop();
    return EXIT_RUNTIME;
  }
  process.on('SIGHUP', () => {
    log.info({ signal: 'SIGHUP' }, 'reloading the config file');
    store!.reload().catch(() => undefined); // logged by the store; the running policy stays
  });

  const stopSupervising = supervise(core, systemd, logs.component('supervisor'), {
    ports: () => host.portStates(),
    onDead: () => stop('a packet worker died', EXIT_RUNTIME),
    onKernelChange: () => host.reconcile(),
  });
  const stopEvents = logPacketEvents(core, (id) => host.portName(id), logs.component('packets'));
  learning = new Learning(core, store!, logs.component('learning'));
  learning.start();
  stopped.finally(() => {
    stopSupervising();
    stopEvents();
  });
  systemd.ready(`${policy.lookup_records.length} lookup records, ${host.portStates().length} VM adapters`);
  log.info(
    {
      config: cl.config,
      api: file.api.socket,
      metrics: file.metrics.listen,
      state_dir: state?.dir,
      provider_addresses: policy.provider_addresses.map((p) => p.address),
      vm_adapters: host.portStates(),
      lookup_records: policy.lookup_records.length,
      customer_routes: policy.customer_routes.length,
    },
    'ready',
  );
  return stopped;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`nvgred: ${err?.stack ?? err}\n`);
    process.exit(EXIT_RUNTIME);
  },
);
