// Waiting on something asynchronous that a test cannot be told about.

/** Polls `f` until it returns something truthy; fails, naming `what`, after `timeoutMs`. */
export async function until<T>(what: string, f: () => T | Promise<T>, timeoutMs = 20_000, everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
