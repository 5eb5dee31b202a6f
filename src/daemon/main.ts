#!/usr/bin/env node
// nvgred: the NVGRE dataplane daemon. Loads and validates the whole config,
// restores runtime changes saved in state_dir, creates the host's provider
// addresses, routes and VM adapters, hands the packet core one table
// snapshot, serves the control API and metrics, reloads on SIGHUP, and on
// SIGTERM/SIGINT removes everything it placed. A state_dir it cannot write
// does not stop it: it forwards, and refuses changes it cannot save.

import type { Server } from 'node:http';
import { parseArgs } from 'node:util';
import { EventBus } from '../api/events.js';
import { serveApi } from '../api/server.js';
import { readConfigFile, validatePolicy, type LoadedConfig } from '../config/index.js';
import { isNvgreError, type NvgreError } from '../errors.js';
import { Metrics, serveMetrics } from '../metrics/index.js';
import type { Policy } from '../model/policy.js';
import { native } from '../native.js';
import { HostDataplane, type OwnedKernelObjects } from './host.js';
import { isLogLevel, LOG_LEVELS, Logs, type Logger } from './log.js';
import { logPacketEvents } from './events.js';
import { Learning } from './learning.js';
import { StateFile, type LearnedState, type SavedState } from './state.js';
import { countChanges, documentChanges, keepLearned, learnedEntries, learnedStates, PolicyStore } from './store.js';
import { supervise } from './supervisor.js';
import { Etcd } from '../fleet/etcd.js';
import { FleetSource } from '../fleet/source.js';
import { FleetWriter } from '../fleet/writer.js';
import { FleetLearning } from '../fleet/learning.js';
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

/** What a start runs: the policy, and what it takes over from the saved state. */
interface Start {
  policy: Policy;
  /** Kernel objects an earlier run placed (see HostDataplane.adopt). */
  owned?: OwnedKernelObjects;
  learned: LearnedState[];
}

/**
 * The policy to start with (config.md): the config file's, unless the
 * saved running policy in state_dir grew from this very file (same
 * SHA-256), then the saved one with its runtime changes. A saved state that
 * cannot be read or no longer validates is set aside and the file runs; one
 * saved before nvgred recorded the file's digest is restored (as it was
 * then) and counts as grown from the present file. Settings read only at
 * start always come from the config file.
 */
function initialPolicy(configPath: string, config: LoadedConfig, state: StateFile | undefined, log: Logger, learnLog: Logger): Start {
  const file = config.policy;
  const ofFile: Start = { policy: file, learned: [] };
  if (!state) {
    log.warn('no state_dir (nor $STATE_DIRECTORY): runtime policy changes will not survive a restart');
    return ofFile;
  }
  let saved: SavedState | undefined;
  let policy: Policy;
  try {
    saved = state.load();
    if (!saved) {
      log.info({ config: configPath, state: state.path }, 'no saved running policy yet: running the config file');
      return ofFile;
    }
    policy = validatePolicy({ ...(saved.policy as object), api: file.api, metrics: file.metrics, state_dir: file.state_dir }, { source: state.path });
  } catch (err) {
    if (!isNvgreError(err)) throw err;
    setAside(state, err, log);
    return ofFile;
  }
  const where = { config: configPath, state: state.path };
  if (saved.configSha256 === config.sha256) {
    log.info(where, 'restored the saved running policy: the config file is unchanged since it grew from it (nvgrectl reload applies the file)');
    return { policy, owned: saved.owned, learned: saved.learned };
  }
  if (saved.configSha256 === undefined) {
    log.warn(where, 'restored the saved running policy: it does not record which config file it grew from (saved by an older nvgred), so it counts as grown from this one (nvgrectl reload applies the file)');
    return { policy, owned: saved.owned, learned: saved.learned };
  }
  const next = keepLearned(policy, learnedEntries(saved.learned, Date.now()), file, learnLog, 'start');
  log.info(
    { ...where, replaced: countChanges(documentChanges(policy, next.doc)) },
    'running the config file: it changed since the saved running policy grew from it (the saved runtime changes are replaced, as by nvgrectl reload)',
  );
  return { policy: next.doc, owned: saved.owned, learned: learnedStates(next.learned) };
}

/** Rename a saved state that cannot be used out of the way (kept for the operator), saying why. */
function setAside(state: StateFile, why: NvgreError, log: Logger): void {
  const reason = { state: state.path, code: why.code, reason: why.message, errors: why.details };
  try {
    const to = state.setAside();
    log.error({ ...reason, set_aside_as: to }, 'the saved running policy cannot be used: set aside, running the config file');
  } catch (err) {
    log.error({ ...reason, err }, 'the saved running policy cannot be used, nor set aside: running the config file');
  }
}

async function main(): Promise<number> {
  const cl = parseCommandLine();
  if (typeof cl === 'number') return cl;

  let logs = new Logs(cl.level as never);
  let log: Logger = logs.root;
  let config: LoadedConfig;
  try {
    config = await readConfigFile(cl.config);
  } catch (err) {
    if (!isNvgreError(err)) throw err;
    log.fatal({ code: err.code, errors: err.details, config: cl.config }, err.message);
    return EXIT_CONFIG;
  }
  const file = config.policy;
  logs = new Logs(cl.level as never, file.host.name);
  log = logs.root;
  if (file.policy_store && file.customer_routes.length) {
    // fleet.md: the fleet's customer routes live in the store alone.
    const first = file.customer_routes[0]!;
    log.fatal({ config: cl.config, path: 'customer_routes[0]', value: first }, 'customer_routes: a host whose policy is in policy_store has none in its file (they are the fleet\'s, in etcd)');
    return EXIT_CONFIG;
  }
  if (file.uplink && cl.workers > 1) {
    // Both directions of a NAT mapping must meet in the worker that owns it; the hand-off between workers is not built.
    log.fatal({ config: cl.config, path: 'uplink', value: file.uplink, workers: cl.workers }, 'uplink: the HNV gateway runs with a single packet worker for now; start it with --workers 1');
    return EXIT_CONFIG;
  }
  const stateDir = file.state_dir ?? process.env.STATE_DIRECTORY;
  const state = stateDir ? new StateFile(stateDir) : undefined;
  const start = initialPolicy(cl.config, config, state, log, logs.component('learning'));
  const policy = start.policy;

  const core = native();
  const startedAt = Date.now();
  const host = new HostDataplane(core, logs.component('dataplane'));
  const systemd = new Systemd(core, logs.component('systemd'));
  let store: PolicyStore | undefined;
  let learning: Learning | undefined;
  let fleet: FleetSource | undefined;
  let fleetLearning: FleetLearning | undefined;
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
      fleetLearning?.stop();
      void fleet?.stop(); // its status key goes with its lease (revoked now, else in 10 s)
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
    if (start.owned) host.adopt(start.owned);
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
      { events, learned: start.learned, learningLog: logs.component('learning'), configSha256: config.sha256 },
    );
    try {
      store.saveState();
    } catch (err) {
      // Forwarding matters more: run, and refuse the changes that cannot be saved (NVGRE_ERR_IO) until a write succeeds.
      log.error({ err, state_dir: state?.dir }, 'cannot save the running policy in state_dir: forwarding goes on; policy changes are refused until it can be saved');
    }
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
    if (file.policy_store) {
      const etcd = new Etcd(file.policy_store.etcd.endpoints);
      fleet = new FleetSource({
        etcd,
        prefix: file.policy_store.etcd.prefix,
        host: file.host.name!,
        file,
        store,
        log: logs.component('fleet'),
        version: core.version(),
        registry: metrics.registry,
      });
    }
    servers.push(await serveMetrics(metrics, file.metrics.listen));
    servers.push(
      await serveApi(
        { store, host, core, events, fleet: fleet && new FleetWriter(fleet, store), log: logs.component('api'), logs, version: core.version(), startedAt, stateDir: state?.dir },
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
    if (fleet) fleet.reloadFile(cl.config).catch(() => undefined); // logged; the running policy stays
    else store!.reload().catch(() => undefined); // logged by the store; the running policy stays
  });

  const stopSupervising = supervise(core, systemd, logs.component('supervisor'), {
    ports: () => host.portStates(),
    onDead: () => stop('a packet worker died', EXIT_RUNTIME),
    onKernelChange: () => host.reconcile(),
  });
  const stopEvents = logPacketEvents(core, (id) => host.portName(id), logs.component('packets'));
  learning = new Learning(core, store!, logs.component('learning'));
  learning.start();
  if (fleet) {
    fleet.start(); // the daemon is ready with what it runs; the store's policy follows when it answers
    fleetLearning = new FleetLearning(fleet, store!, events, logs.component('learning'));
    fleetLearning.start();
  }
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
