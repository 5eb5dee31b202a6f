// Stand-ins for what the control plane's tests do not need real.

import type { Policy } from '../../src/model/policy.js';

/**
 * The dataplane, reduced to what the PolicyStore uses: every snapshot it is
 * given is kept. No device of the fake fails, so `repair` has nothing to
 * make again, and it owns no kernel object.
 */
export class FakeHost {
  applied: Policy[] = [];
  constructor(public policy: Policy) {}
  apply(next: Policy): void {
    this.applied.push(next);
    this.policy = next;
  }
  repair(): void {}
  ownedKernelObjects() {
    return { provider_addresses: [], provider_routes: [] };
  }
}
