/**
 * Undoing a component's start-up in reverse order, so that a start that fails half way and a
 * normal shutdown release the same things the same way.
 *
 * @module
 */

/** A stack of clean-up steps, run last-in first-out. */
export class CleanupStack {
  #steps: (() => Promise<void> | void)[] = [];
  #running: Promise<void> | undefined;

  /** Adds a step to run at {@linkcode run}. */
  push(step: () => Promise<void> | void): void {
    this.#steps.push(step);
  }

  /**
   * Runs every step, newest first; a failing step does not stop the others. Later calls return
   * the same promise.
   */
  run(): Promise<void> {
    this.#running ??= (async () => {
      for (const step of this.#steps.reverse()) {
        try {
          await step();
        } catch {
          // best effort: the remaining steps must still run
        }
      }
    })();
    return this.#running;
  }
}
