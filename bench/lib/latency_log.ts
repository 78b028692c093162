/**
 * Reads pgbench's per-transaction logs (`--log`) and summarises the latencies: count, mean and
 * percentiles, with failed and skipped transactions counted apart.
 *
 * A line is `client_id transaction_no time script_no time_epoch time_us [schedule_lag]
 * [retries]`, `time` being the transaction's latency in microseconds, or the word `failed` or
 * `skipped` (PostgreSQL 15 and later).
 *
 * @module
 */

/** Summary of the latencies of one run. */
export interface LatencySummary {
  /** Transactions with a latency (completed). */
  count: number;
  /** Transactions logged as `failed`. */
  failed: number;
  /** Transactions logged as `skipped` (only with `--rate` and `--latency-limit`). */
  skipped: number;
  /** Mean latency in milliseconds; NaN when `count` is 0. */
  meanMs: number;
  /** Median latency in milliseconds. */
  p50Ms: number;
  /** 90th percentile in milliseconds. */
  p90Ms: number;
  /** 99th percentile in milliseconds. */
  p99Ms: number;
  /** 99.9th percentile in milliseconds. */
  p999Ms: number;
  /** Largest latency in milliseconds. */
  maxMs: number;
}

/**
 * The nearest-rank percentile `p` (0 < p ≤ 100) of `sorted` (ascending); NaN when empty.
 */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (!(p > 0 && p <= 100)) throw new RangeError(`'p' must be in (0, 100]: received ${p}`);
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** Accumulates latencies from log text (any number of files, in any order). */
export class LatencyCollector {
  #values = new Float64Array(1 << 16);
  #count = 0;
  #sum = 0;
  #failed = 0;
  #skipped = 0;
  #partial = "";

  /** Transactions with a latency seen so far. */
  get count(): number {
    return this.#count;
  }

  #push(us: number): void {
    if (this.#count === this.#values.length) {
      const grown = new Float64Array(this.#values.length * 2);
      grown.set(this.#values);
      this.#values = grown;
    }
    this.#values[this.#count++] = us;
    this.#sum += us;
  }

  /** Adds one log line; blank lines are ignored, a malformed line throws. */
  addLine(line: string): void {
    const text = line.trim();
    if (text === "") return;
    const fields = text.split(" ");
    const time = fields[2];
    if (fields.length < 6 || time === undefined) {
      throw new Error(`malformed pgbench log line: '${text}'`);
    }
    if (time === "failed") {
      this.#failed++;
      return;
    }
    if (time === "skipped") {
      this.#skipped++;
      return;
    }
    const us = Number(time);
    if (!Number.isFinite(us) || us < 0) {
      throw new Error(`malformed latency '${time}' in pgbench log line: '${text}'`);
    }
    this.#push(us);
  }

  /**
   * Adds a chunk of log text. Chunks may split lines anywhere; call {@linkcode flush} after the
   * last chunk of a file.
   */
  addText(chunk: string): void {
    const text = this.#partial + chunk;
    let start = 0;
    for (;;) {
      const end = text.indexOf("\n", start);
      if (end < 0) break;
      this.addLine(text.slice(start, end));
      start = end + 1;
    }
    this.#partial = text.slice(start);
  }

  /** Ends the current file: a last line without a newline is taken as complete. */
  flush(): void {
    const rest = this.#partial;
    this.#partial = "";
    this.addLine(rest);
  }

  /** The summary of everything added. */
  summary(): LatencySummary {
    const sorted = this.#values.slice(0, this.#count).sort();
    const ms = (us: number) => us / 1000;
    return {
      count: this.#count,
      failed: this.#failed,
      skipped: this.#skipped,
      meanMs: this.#count === 0 ? Number.NaN : ms(this.#sum / this.#count),
      p50Ms: ms(percentile(sorted, 50)),
      p90Ms: ms(percentile(sorted, 90)),
      p99Ms: ms(percentile(sorted, 99)),
      p999Ms: ms(percentile(sorted, 99.9)),
      maxMs: ms(this.#count === 0 ? Number.NaN : sorted[this.#count - 1]!),
    };
  }
}

/**
 * Reads every file in `dir` whose name starts with `prefix` (pgbench writes one per thread:
 * `pgbench_log.<pid>`, `pgbench_log.<pid>.1`, ...) and summarises them.
 */
export async function summariseLatencyLogs(
  dir: string,
  prefix = "pgbench_log",
): Promise<LatencySummary & { files: number }> {
  const collector = new LatencyCollector();
  let files = 0;
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile || !entry.name.startsWith(prefix)) continue;
    files++;
    const file = await Deno.open(`${dir}/${entry.name}`);
    const decoder = new TextDecoder();
    try {
      for await (const chunk of file.readable) {
        collector.addText(decoder.decode(chunk, { stream: true }));
      }
    } finally {
      try {
        file.close();
      } catch {
        // closed by the exhausted stream
      }
    }
    collector.addText(decoder.decode());
    collector.flush();
  }
  return { ...collector.summary(), files };
}
