/**
 * A millisecond wall clock that the event loop's driver reads once per round, so that code on
 * the hot path (a pool's wait times, a backend's last use) does not read the system clock for
 * every transaction. A reading costs about 100 ns on this project's machines (`Date.now`, a
 * call into the runtime and the vDSO); a pooled transaction read it three times.
 *
 * Outside a round (no driver, or between rounds) {@linkcode now} is `Date.now()` itself, so the
 * value is never older than the round that is running: at most a few milliseconds under load.
 *
 * @module
 */

let cached = 0;
let inRound = false;

/** Milliseconds since the epoch: the current round's reading, else `Date.now()`. */
export function now(): number {
  return inRound ? cached : Date.now();
}

/**
 * Starts a round: the clock is read once and {@linkcode now} returns that reading until
 * {@linkcode endRound}. Called by the event loop's driver (the fast network reactor) before it
 * dispatches a batch of events.
 */
export function beginRound(): number {
  inRound = true;
  return cached = Date.now();
}

/** Ends the round: {@linkcode now} reads the system clock again. */
export function endRound(): void {
  inRound = false;
}
