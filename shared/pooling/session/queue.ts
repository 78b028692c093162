/**
 * The queue of responses a session expects from its backend, in the order the backend will send
 * them, including the ones the pooler synthesizes or swallows.
 *
 * @module
 */

/** Kinds of expected responses. */
export const Expect = {
  /** Nothing (the queue is empty). */
  none: 0,
  /** A client Query or FunctionCall: everything up to ReadyForQuery is forwarded. */
  query: 1,
  /** A client Sync: ReadyForQuery. */
  sync: 2,
  /** A client Parse: ParseComplete. */
  parse: 3,
  /** A client Bind: BindComplete. */
  bind: 4,
  /** A client Describe: ParameterDescription, then RowDescription or NoData. */
  describe: 5,
  /** A client Execute: rows, then CommandComplete, EmptyQueryResponse or PortalSuspended. */
  execute: 6,
  /** A client Close sent to the backend: CloseComplete. */
  close: 7,
  /** A ParseComplete the pooler sends itself (the statement is already on the backend). */
  synthParse: 8,
  /** A CloseComplete the pooler sends itself (statement closes are kept client-side). */
  synthClose: 9,
  /** A Parse the pooler injected before a Bind or Describe: its ParseComplete is swallowed. */
  injectedParse: 10,
  /** A simple query of the pooler's own (settings, evictions, ROLLBACK): all swallowed. */
  replay: 11,
  /** The pooler's end-of-transaction check: rows read, all swallowed. */
  verify: 12,
} as const;

/**
 * A FIFO of (kind, aux) pairs that allocates nothing per entry once warm: its arrays keep their
 * storage when emptied.
 */
export class ExpectQueue {
  #kinds: number[] = [];
  #aux: unknown[] = [];
  #head = 0;
  #tail = 0;

  /** Number of entries. */
  get size(): number {
    return this.#tail - this.#head;
  }

  /** Kind of the first entry, or {@linkcode Expect.none}. */
  get headKind(): number {
    return this.#head < this.#tail ? this.#kinds[this.#head]! : 0;
  }

  /** Aux data of the first entry. */
  get headAux(): unknown {
    return this.#head < this.#tail ? this.#aux[this.#head] : undefined;
  }

  /** Whether any entry has kind `kind`. */
  has(kind: number): boolean {
    for (let i = this.#head; i < this.#tail; i++) if (this.#kinds[i] === kind) return true;
    return false;
  }

  /** Calls `fn` for each entry after the first, in order. */
  forEach(fn: (kind: number, aux: unknown) => void): void {
    for (let i = this.#head + 1; i < this.#tail; i++) fn(this.#kinds[i]!, this.#aux[i]);
  }

  /** Appends an entry. */
  push(kind: number, aux?: unknown): void {
    const t = this.#tail++;
    if (t < this.#kinds.length) {
      this.#kinds[t] = kind;
      this.#aux[t] = aux;
    } else {
      this.#kinds.push(kind);
      this.#aux.push(aux);
    }
  }

  /** Removes the first entry. */
  shift(): void {
    this.#aux[this.#head] = undefined;
    if (++this.#head === this.#tail) this.#head = this.#tail = 0;
  }

  /** Removes every entry. */
  clear(): void {
    for (let i = this.#head; i < this.#tail; i++) this.#aux[i] = undefined;
    this.#head = this.#tail = 0;
    // A queue that grew large (a long pipeline) gives its storage back.
    if (this.#kinds.length > 1024) {
      this.#kinds = [];
      this.#aux = [];
    }
  }
}
