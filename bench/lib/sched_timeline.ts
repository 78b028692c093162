/**
 * What each CPU was running at the same instants, from `perf sched timehist`: on a saturated
 * 2-core machine, the share of time in which the pooler ran while the other CPU sat idle is the time
 * everything else waited for it. Two poolers can use the same CPU per transaction and still differ
 * there (`bench/RESULTS.md`, 2026-12-07): that is what this measures.
 *
 * By hand, while pgbench runs against one pooler:
 *
 * ```sh
 * perf sched record -o /tmp/s.data -- sleep 2
 * perf sched timehist -i /tmp/s.data | deno run bench/lib/sched_timeline.ts --pooler deno
 * ```
 *
 * `--pooler NAME` is the pooler's thread name (`pgbouncer`, or `deno` for Tessera's main thread;
 * its other threads have names of their own). Prints, for every combination of what the CPUs ran
 * (pooler, postgres, pgbench, idle, other), its share of the time, and each CPU's idle share.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** What a CPU ran during an interval, grouped for this analysis. */
export type SchedClass = "pooler" | "postgres" | "pgbench" | "idle" | "other";

/** One stretch of time during which a CPU ran one task. */
export interface SchedInterval {
  /** Start, in seconds. */
  start: number;
  /** End, in seconds. */
  end: number;
  /** What ran. */
  what: SchedClass;
}

/** The class of a task from its `perf sched timehist` name (`comm[tid]` or `comm[tid/pid]`). */
export function classify(task: string, pooler: string): SchedClass {
  const comm = task.replace(/\[[^\]]*\]$/, "");
  if (comm === "<idle>") return "idle";
  if (comm === pooler) return "pooler";
  if (comm === "postgres") return "postgres";
  if (comm === "pgbench") return "pgbench";
  return "other";
}

/**
 * Parses `perf sched timehist` output into each CPU's intervals (in time order). A line reads:
 * time, `[cpu]`, task name, wait time, scheduling delay, run time (the last three in ms); the
 * interval is the run time that ends at the line's time.
 */
export function parseTimehist(text: string, pooler: string): Map<number, SchedInterval[]> {
  const cpus = new Map<number, SchedInterval[]>();
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || !/^\[\d+\]$/.test(f[1]!)) continue;
    const end = Number(f[0]);
    const run = Number(f[f.length - 1]) / 1000;
    if (!Number.isFinite(end) || !Number.isFinite(run)) continue;
    const cpu = Number(f[1]!.slice(1, -1));
    const task = f.slice(2, f.length - 3).join(" ");
    let list = cpus.get(cpu);
    if (list === undefined) cpus.set(cpu, list = []);
    list.push({ start: end - run, end, what: classify(task, pooler) });
  }
  for (const list of cpus.values()) list.sort((a, b) => a.end - b.end);
  return cpus;
}

/** Shares of the time of each combination of what the CPUs ran, and of each CPU's idle time. */
export interface Overlap {
  /** Combination (classes sorted, joined with " + ") to its share of the time, 0..1. */
  combos: Map<string, number>;
  /** Share of all CPUs' time spent idle, 0..1. */
  idle: number;
  /** Share of time in which the pooler ran and every other CPU was idle, 0..1. */
  poolerAlone: number;
  /** Share of one CPU's time the pooler ran, 0..1. */
  poolerRuns: number;
  /** Seconds covered (the span all CPUs have intervals for). */
  seconds: number;
}

/**
 * Samples what every CPU ran every `stepS` seconds, over the span that all CPUs cover (time a CPU
 * has no interval for counts as idle: perf records idle as `<idle>` intervals, so a gap is short).
 */
export function overlap(cpus: Map<number, SchedInterval[]>, stepS = 5e-6): Overlap {
  const lists = [...cpus.values()].filter((l) => l.length > 0);
  if (lists.length === 0) throw new Error("no scheduling intervals in the input");
  const from = Math.max(...lists.map((l) => l[0]!.start));
  const to = Math.min(...lists.map((l) => l[l.length - 1]!.end));
  if (!(to > from)) throw new Error("the CPUs' intervals do not overlap in time");
  const at = lists.map(() => 0);
  const combos = new Map<string, number>();
  let samples = 0;
  let idle = 0;
  let alone = 0;
  let pooler = 0;
  const now: SchedClass[] = [];
  for (let t = from; t < to; t += stepS) {
    now.length = 0;
    for (let c = 0; c < lists.length; c++) {
      const l = lists[c]!;
      let i = at[c]!;
      while (i < l.length && l[i]!.end < t) i++;
      at[c] = i;
      now.push(i < l.length && l[i]!.start <= t ? l[i]!.what : "idle");
    }
    samples++;
    const idles = now.filter((w) => w === "idle").length;
    const poolers = now.filter((w) => w === "pooler").length;
    idle += idles;
    pooler += poolers;
    if (poolers > 0 && poolers + idles === now.length && idles > 0) alone++;
    const key = [...now].sort().join(" + ");
    combos.set(key, (combos.get(key) ?? 0) + 1);
  }
  for (const [k, v] of combos) combos.set(k, v / samples);
  return {
    combos,
    idle: idle / (samples * lists.length),
    poolerAlone: alone / samples,
    poolerRuns: pooler / samples,
    seconds: to - from,
  };
}

/** The report printed by the command line. */
export function formatOverlap(o: Overlap): string {
  const pct = (x: number) => `${(100 * x).toFixed(1).padStart(5)} %`;
  const lines = [...o.combos].sort((a, b) => b[1] - a[1]).filter(([, v]) => v >= 0.001)
    .map(([k, v]) => `${pct(v)}  ${k}`);
  lines.push(
    "",
    `over ${o.seconds.toFixed(2)} s: CPUs idle ${pct(o.idle).trim()}, pooler running ` +
      `${pct(o.poolerRuns).trim()} of one CPU, pooler running with every other CPU idle ` +
      `${pct(o.poolerAlone).trim()} of the time`,
  );
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { pooler: { type: "string" }, file: { type: "string" } },
  });
  if (values.pooler === undefined) {
    console.error("usage: perf sched timehist -i FILE | sched_timeline.ts --pooler COMM");
    Deno.exit(2);
  }
  const text = values.file !== undefined
    ? await Deno.readTextFile(values.file)
    : await new Response(Deno.stdin.readable).text();
  try {
    console.log(formatOverlap(overlap(parseTimehist(text, values.pooler))));
  } catch (err) {
    console.error(`sched_timeline: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
