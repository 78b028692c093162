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
 * perf sched timehist -i /tmp/s.data --state | deno run bench/lib/sched_timeline.ts --pooler deno
 * ```
 *
 * `--pooler NAME` is the pooler's thread name (`pgbouncer`, or `deno` for Tessera's main thread;
 * its other threads have names of their own). Prints, for every combination of what the CPUs ran
 * (pooler, postgres, pgbench, idle, other), its share of the time, and each CPU's idle share.
 * With `--state` (the state each task switched out in), it also tells when the pooler was
 * runnable but not running (preempted, or woken and not yet on a CPU) while another CPU sat idle:
 * time the kernel left the pooler waiting on one CPU instead of running it on the other.
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

/** One line of `perf sched timehist`: a task's stretch on a CPU, ending at `end` (seconds). */
interface TimehistLine {
  end: number;
  cpu: number;
  task: string;
  /** Seconds since the task last left a CPU (asleep or runnable). */
  wait: number;
  /** Seconds from its wake-up to getting the CPU. */
  delay: number;
  run: number;
  /** The state it left the CPU in (`R`: preempted, still runnable), with `--state`. */
  state: string | undefined;
}

function parseLine(line: string): TimehistLine | undefined {
  const f = line.trim().split(/\s+/);
  if (f.length < 6 || !/^\[\d+\]$/.test(f[1]!)) return undefined;
  // With --state, a state letter (R, S, D, I, ...) follows the run time.
  const state = /^[A-Za-z+]+$/.test(f[f.length - 1]!) ? f[f.length - 1] : undefined;
  const last = state === undefined ? f.length - 1 : f.length - 2;
  const end = Number(f[0]);
  const wait = Number(f[last - 2]) / 1000;
  const delay = Number(f[last - 1]) / 1000;
  const run = Number(f[last]) / 1000;
  if (![end, wait, delay, run].every(Number.isFinite)) return undefined;
  return {
    end,
    cpu: Number(f[1]!.slice(1, -1)),
    task: f.slice(2, last - 2).join(" "),
    wait,
    delay,
    run,
    state,
  };
}

/**
 * Parses `perf sched timehist` output into each CPU's intervals (in time order). A line reads:
 * time, `[cpu]`, task name, wait time, scheduling delay, run time (the last three in ms), and with
 * `--state` the task's state when it left the CPU; the interval is the run time that ends at the
 * line's time.
 */
export function parseTimehist(text: string, pooler: string): Map<number, SchedInterval[]> {
  const cpus = new Map<number, SchedInterval[]>();
  for (const line of text.split("\n")) {
    const l = parseLine(line);
    if (l === undefined) continue;
    let list = cpus.get(l.cpu);
    if (list === undefined) cpus.set(l.cpu, list = []);
    list.push({ start: l.end - l.run, end: l.end, what: classify(l.task, pooler) });
  }
  for (const list of cpus.values()) list.sort((a, b) => a.end - b.end);
  return cpus;
}

/**
 * The stretches in which the pooler's thread was runnable but not running, from
 * `perf sched timehist --state` (empty without the state column): after leaving a CPU in state
 * `R` (preempted), all the time until it ran again; after sleeping, the scheduling delay between
 * its wake-up and its next run.
 */
export function poolerWaits(text: string, pooler: string): PoolerWait[] {
  const lines: TimehistLine[] = [];
  for (const line of text.split("\n")) {
    const l = parseLine(line);
    if (l !== undefined && l.state !== undefined && classify(l.task, pooler) === "pooler") {
      lines.push(l);
    }
  }
  lines.sort((a, b) => a.end - b.end);
  const waits: PoolerWait[] = [];
  for (let i = 1; i < lines.length; i++) {
    const on = lines[i]!.end - lines[i]!.run;
    const waited = lines[i - 1]!.state === "R" ? lines[i]!.wait : lines[i]!.delay;
    if (waited > 0) waits.push({ start: on - waited, end: on, cpu: lines[i]!.cpu });
  }
  return waits;
}

/** A stretch in which the pooler was runnable, and the CPU it then ran on. */
export interface PoolerWait {
  start: number;
  end: number;
  cpu: number;
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
  /**
   * Share of time in which the pooler was runnable but not running while another CPU than the one
   * it then ran on was idle, 0..1 (undefined without the pooler's waits, see
   * {@linkcode poolerWaits}).
   */
  poolerWaitingCpuIdle: number | undefined;
  /** Seconds covered (the span all CPUs have intervals for). */
  seconds: number;
}

/**
 * Samples what every CPU ran every `stepS` seconds, over the span that all CPUs cover (time a CPU
 * has no interval for counts as idle: perf records idle as `<idle>` intervals, so a gap is short).
 */
export function overlap(
  cpus: Map<number, SchedInterval[]>,
  stepS = 5e-6,
  waits: PoolerWait[] = [],
): Overlap {
  const entries = [...cpus.entries()].filter(([, l]) => l.length > 0);
  const lists = entries.map(([, l]) => l);
  const cpuOf = entries.map(([cpu]) => cpu);
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
  let waitingIdle = 0;
  let w = 0;
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
    while (w < waits.length && waits[w]!.end < t) w++;
    if (idles > 0 && w < waits.length && waits[w]!.start <= t) {
      const on = waits[w]!.cpu;
      if (now.some((what, c) => what === "idle" && cpuOf[c] !== on)) waitingIdle++;
    }
    const key = [...now].sort().join(" + ");
    combos.set(key, (combos.get(key) ?? 0) + 1);
  }
  for (const [k, v] of combos) combos.set(k, v / samples);
  return {
    combos,
    idle: idle / (samples * lists.length),
    poolerAlone: alone / samples,
    poolerRuns: pooler / samples,
    poolerWaitingCpuIdle: waits.length > 0 ? waitingIdle / samples : undefined,
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
      `${pct(o.poolerAlone).trim()} of the time` +
      (o.poolerWaitingCpuIdle === undefined
        ? " (add --state to timehist for the pooler's waits)"
        : `, pooler runnable but waiting while another CPU was idle ` +
          `${pct(o.poolerWaitingCpuIdle).trim()} of the time`),
  );
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { pooler: { type: "string" }, file: { type: "string" } },
  });
  if (values.pooler === undefined) {
    console.error("usage: perf sched timehist -i FILE --state | sched_timeline.ts --pooler COMM");
    Deno.exit(2);
  }
  const text = values.file !== undefined
    ? await Deno.readTextFile(values.file)
    : await new Response(Deno.stdin.readable).text();
  try {
    const waits = poolerWaits(text, values.pooler);
    console.log(formatOverlap(overlap(parseTimehist(text, values.pooler), 5e-6, waits)));
  } catch (err) {
    console.error(`sched_timeline: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
