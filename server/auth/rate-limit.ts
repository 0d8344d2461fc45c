// Login attempts counted in memory per key (an address, a user name): after too many failures in
// a window a key is locked for a while, twice as long with each further failure.

const MAX_LOCKOUT_MS = 15 * 60_000;
const MAX_KEYS = 10_000;
/** 2^5 minutes already passes the 15-minute ceiling; the level stops counting well beyond. */
const MAX_LEVEL = 32;

export interface LoginRateLimiterOptions {
  /** Failures within the window that lock a key; 5. */
  maxFailures?: number;
  /** How long a failure counts; 15 minutes. */
  windowMs?: number;
  /** The first lockout, from the latest failure; each further failure doubles it, up to 15 minutes. */
  lockoutMs?: number;
  /** The clock, for tests. */
  now?: () => number;
}

export type RateLimitDecision = { allowed: true } | { allowed: false; retryAfterSeconds: number };

interface KeyState {
  /** The latest failures, at most maxFailures of them, oldest first. */
  recent: number[];
  last: number;
  /**
   * Set once the key is locked: how many failures came after. It ends only after a quiet
   * window following the lockout, not as the first failures age out of it: otherwise, while an attacker waited out
   * the doubled lockouts, the window would empty and the lockout fall back to its first length.
   */
  level?: number;
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a positive number, not ${value}`);
  return value;
}

export class LoginRateLimiter {
  readonly #maxFailures: number;
  readonly #windowMs: number;
  readonly #lockoutMs: number;
  readonly #now: () => number;
  /**
   * A failure re-inserts its key, so the map's own order is that of each key's latest failure,
   * oldest first: pruning and the key bound only look at the front.
   */
  readonly #keys = new Map<string, KeyState>();

  constructor(options: LoginRateLimiterOptions = {}) {
    this.#maxFailures = Math.ceil(positive(options.maxFailures, 5, 'maxFailures'));
    this.#windowMs = positive(options.windowMs, 15 * 60_000, 'windowMs');
    this.#lockoutMs = positive(options.lockoutMs, 60_000, 'lockoutMs');
    this.#now = options.now ?? Date.now;
  }

  /** Refused while any of the keys is locked; the wait is that of the longest lockout. */
  check(keys: string[]): RateLimitDecision {
    const now = this.#now();
    let waitMs = 0;
    for (const key of keys) {
      const state = this.#keys.get(key);
      if (state) waitMs = Math.max(waitMs, this.#lockedForMs(state, now));
    }
    if (waitMs <= 0) return { allowed: true };
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)) };
  }

  recordFailure(keys: string[]): void {
    const now = this.#now();
    this.#prune(now);
    for (const key of new Set(keys)) {
      let state = this.#keys.get(key);
      if (!state || this.#expired(state, now)) state = { recent: [], last: now };
      state.recent.push(now);
      if (state.recent.length > this.#maxFailures) state.recent.shift();
      state.last = now;
      if (state.level !== undefined) {
        state.level = Math.min(state.level + 1, MAX_LEVEL);
      } else if (state.recent.filter((t) => t > now - this.#windowMs).length >= this.#maxFailures) {
        state.level = 0;
      }
      this.#keys.delete(key);
      this.#keys.set(key, state);
    }
    // The oldest keys go first: under a flood of invented user names the limiter forgets the
    // quiet keys rather than growing without bound.
    for (const key of this.#keys.keys()) {
      if (this.#keys.size <= MAX_KEYS) break;
      this.#keys.delete(key);
    }
  }

  /**
   * Clears exactly the keys it is given. The login route should pass the user key only:
   * clearing the address key as well would let an attacker who holds any account reset their
   * address's count by logging into it between guesses at other accounts. An address's count
   * after a legitimate user's typos simply ages out of the window.
   */
  recordSuccess(keys: string[]): void {
    for (const key of keys) this.#keys.delete(key);
  }

  /** How many keys are remembered. */
  get size(): number {
    return this.#keys.size;
  }

  #lockoutMsOf(state: KeyState): number {
    if (state.level === undefined) return 0;
    // A lockoutMs configured above 15 minutes is kept as it is, only never doubled.
    return Math.min(this.#lockoutMs * 2 ** state.level, Math.max(this.#lockoutMs, MAX_LOCKOUT_MS));
  }

  #lockedForMs(state: KeyState, now: number): number {
    return state.last + this.#lockoutMsOf(state) - now;
  }

  /**
   * Quiet for a whole window after its lockout ended: the key starts afresh. Counted from the
   * lockout's end, since waiting out a 15-minute lockout is no sign of a reformed client.
   */
  #expired(state: KeyState, now: number): boolean {
    return now - state.last >= this.#lockoutMsOf(state) + this.#windowMs;
  }

  #prune(now: number): void {
    for (const [key, state] of this.#keys) {
      if (!this.#expired(state, now)) break;
      this.#keys.delete(key);
    }
  }
}
