// systemd integration (sd_notify(3)): READY when ports, sockets and the API
// are up, RELOADING/READY around a reload, STOPPING at stop, and WATCHDOG
// pings only while every packet worker is alive. Outside systemd (no
// $NOTIFY_SOCKET) every call is a no-op.

import type { NativeCore } from '../native.js';
import type { Logger } from './log.js';

export class Systemd {
  private readonly socket: string | undefined;
  /** Half of WatchdogSec, when systemd asked this process for pings. */
  readonly watchdogIntervalMs: number | undefined;

  constructor(
    private readonly core: NativeCore,
    private readonly log: Logger,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.socket = env.NOTIFY_SOCKET || undefined;
    const usec = Number(env.WATCHDOG_USEC);
    const forUs = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === process.pid;
    this.watchdogIntervalMs = this.socket && forUs && usec > 0 ? usec / 2000 : undefined;
  }

  private notify(message: string): void {
    if (!this.socket) return;
    try {
      this.core.sdNotify(this.socket, message);
    } catch (err) {
      this.log.warn({ err }, 'sd_notify failed');
    }
  }

  ready(status: string): void {
    this.notify(`READY=1\nSTATUS=${status}`);
  }

  reloading(): void {
    const monotonicUsec = process.hrtime.bigint() / 1000n;
    this.notify(`RELOADING=1\nMONOTONIC_USEC=${monotonicUsec}`);
  }

  stopping(): void {
    this.notify('STOPPING=1');
  }

  watchdog(): void {
    this.notify('WATCHDOG=1');
  }
}
