/**
 * Writers for availability benchmarks: a few connections inserting unique ids in a loop, each
 * remembering which commits were acknowledged and when the write was sent and acknowledged, so a
 * driver can measure the unavailability window around a failover and check afterwards that no
 * acknowledged commit was lost.
 *
 * @module
 */

import pg from "pg";

/** One acknowledged write: its id, when it was sent and when its commit was acknowledged. */
export interface Ack {
  /** Unique id inserted. */
  id: number;
  /** `Date.now()` just before the query was sent. */
  sentAt: number;
  /** `Date.now()` when the acknowledgement arrived. */
  ackedAt: number;
}

/** How writers connect and what they insert into. */
export interface WritersOptions {
  /** Connection URL, e.g. `postgres://postgres@127.0.0.1:15432/app`. */
  url: string;
  /** Concurrent connections. */
  connections: number;
  /** Table with columns `id bigint primary key, writer int`. */
  table: string;
  /** Connect timeout per attempt (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Pause after a failed write before reconnecting (default 50 ms). */
  retryDelayMs?: number;
  /** A write with no answer after this long counts as stalled and its connection is dropped
   * (default 20000 ms). */
  queryTimeoutMs?: number;
}

/** The acknowledgement time of the first write sent after `t`, or undefined. */
export function firstAckSentAfter(acks: readonly Ack[], t: number): number | undefined {
  let best: number | undefined;
  for (const a of acks) {
    if (a.sentAt > t && (best === undefined || a.ackedAt < best)) best = a.ackedAt;
  }
  return best;
}

/**
 * The longest gap between consecutive acknowledgements (in acknowledgement order) that overlaps
 * `[from, to]`: the gap from the last acknowledgement at or before `from` through the first at or
 * after `to` is covered. Undefined when no acknowledgement came after `to`.
 */
export function longestAckGap(
  acks: readonly Ack[],
  from: number,
  to: number,
): number | undefined {
  const times = acks.map((a) => a.ackedAt).sort((a, b) => a - b);
  const after = times.findIndex((t) => t >= to);
  if (after < 0) return undefined;
  let start = 0;
  for (let i = 0; i < times.length && times[i]! <= from; i++) start = i;
  let longest = 0;
  for (let i = start + 1; i <= after; i++) {
    longest = Math.max(longest, times[i]! - times[i - 1]!);
  }
  return longest;
}

/** Connections inserting unique ids and remembering which commits were acknowledged. */
export class Writers {
  /** Every acknowledged write, in acknowledgement order. */
  readonly acks: Ack[] = [];
  /** Failed writes and connection attempts (stalled writes included). */
  errors = 0;
  /** Writes that got no answer within `queryTimeoutMs`. */
  stalled = 0;
  /** Writer loops still running when `stop` gave up waiting for them. */
  stuckAtStop = 0;
  #options: WritersOptions;
  #next = 1;
  #stop = false;
  #done: Promise<void>[] = [];

  /** Prepares writers; nothing connects before `start`. */
  constructor(options: WritersOptions) {
    this.#options = options;
  }

  /** Starts the writer loops. */
  start(): void {
    for (let w = 0; w < this.#options.connections; w++) this.#done.push(this.#run(w));
  }

  /** Ids of every acknowledged write so far. */
  ackedIds(): number[] {
    return this.acks.map((a) => a.id);
  }

  async #run(w: number): Promise<void> {
    const sql = `insert into ${this.#options.table} (id, writer) values ($1, $2)`;
    let client: pg.Client | undefined;
    while (!this.#stop) {
      try {
        if (client === undefined) {
          client = new pg.Client({
            connectionString: this.#options.url,
            connectionTimeoutMillis: this.#options.connectTimeoutMs ?? 5000,
            query_timeout: this.#options.queryTimeoutMs ?? 20_000,
          });
          client.on("error", () => {});
          await client.connect();
        }
        const id = this.#next++;
        const sentAt = Date.now();
        await client.query(sql, [id, w]);
        this.acks.push({ id, sentAt, ackedAt: Date.now() });
      } catch (err) {
        this.errors++;
        if ((err as Error).message === "Query read timeout") this.stalled++;
        const dead = client;
        client = undefined;
        await closeWithin(dead, 2000);
        await new Promise((r) => setTimeout(r, this.#options.retryDelayMs ?? 50));
      }
    }
    await closeWithin(client, 2000);
  }

  /**
   * Stops every loop after its current write and closes the connections; gives up on loops still
   * running after `graceMs` (counted in `stuckAtStop`).
   */
  async stop(graceMs = 30_000): Promise<void> {
    this.#stop = true;
    let finished = 0;
    const all = this.#done.map((p) => p.then(() => void finished++));
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(all),
      new Promise((r) => timer = setTimeout(r, graceMs)),
    ]);
    clearTimeout(timer);
    this.stuckAtStop = this.#done.length - finished;
  }
}

/** Ends `client`, or destroys its socket when the server does not close it within `ms`. */
async function closeWithin(client: pg.Client | undefined, ms: number): Promise<void> {
  if (client === undefined) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ended = await Promise.race([
    client.end().then(() => true, () => true),
    new Promise<boolean>((r) => timer = setTimeout(() => r(false), ms)),
  ]);
  clearTimeout(timer);
  if (!ended) {
    (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream
      ?.destroy();
  }
}

/** The ids in `ids` that are not in `table`, read through `url`. */
export async function missingIds(url: string, table: string, ids: number[]): Promise<number[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  client.on("error", () => {});
  await client.connect();
  try {
    const res = await client.query(
      `select a.id from unnest($1::bigint[]) a(id) left join ${table} c on c.id = a.id ` +
        "where c.id is null",
      [ids],
    );
    return res.rows.map((r: { id: string }) => Number(r.id));
  } finally {
    await client.end().catch(() => {});
  }
}
