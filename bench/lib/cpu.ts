/**
 * How much of the machine's CPU went to processes other than the benchmark's own during a run,
 * from `/proc`. On a shared 2-core machine this is what tells a clean figure from a noisy one.
 *
 * The benchmark's own CPU is that of every process in the trees under some root pids (the
 * driver, which parents pgbench and the poolers, and the postmaster, which parents the
 * backends), counting both live processes and the children they already reaped.
 *
 * @module
 */

/** CPU ticks of the whole machine, from the first line of `/proc/stat`. */
export interface SystemTicks {
  /** Ticks spent running anything (user, nice, system, irq, softirq, steal). */
  busy: number;
  /** All ticks, idle and iowait included. */
  total: number;
}

/** Parses the aggregate `cpu` line of `/proc/stat`. */
export function parseSystemTicks(procStat: string): SystemTicks {
  const line = procStat.split("\n").find((l) => l.startsWith("cpu "));
  if (line === undefined) throw new Error("no aggregate 'cpu' line in /proc/stat");
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] =
    line.trim().split(/\s+/).slice(1).map(Number);
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idle + iowait };
}

/** CPU ticks of one process, from `/proc/<pid>/stat`. */
export interface ProcessTicks {
  /** Parent pid. */
  ppid: number;
  /** utime + stime of the process (all its threads). */
  self: number;
  /** cutime + cstime: its children that it has waited for. */
  children: number;
}

/**
 * Field `n` (from 1, as in proc(5)) of a `/proc/<pid>/stat` line, as a number (NaN when absent);
 * the command name may hold spaces and parentheses.
 */
function statFields(stat: string): (field: number) => number {
  const close = stat.lastIndexOf(")");
  if (close < 0) throw new Error("malformed /proc/<pid>/stat: no ')' after the command name");
  // Field 3 (state) is the first after the name; field n is at index n - 3.
  const f = stat.slice(close + 2).trim().split(" ").map(Number);
  return (field: number) => f[field - 3] ?? Number.NaN;
}

/** Parses `/proc/<pid>/stat` into the ticks of the process and of its waited-for children. */
export function parseProcessTicks(stat: string): ProcessTicks {
  const at = statFields(stat);
  const ticks = { ppid: at(4), self: at(14) + at(15), children: at(16) + at(17) };
  if (Object.values(ticks).some(Number.isNaN)) throw new Error("malformed /proc/<pid>/stat");
  return ticks;
}

function readAllProcesses(): Map<number, ProcessTicks> {
  const out = new Map<number, ProcessTicks>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      out.set(
        Number(entry.name),
        parseProcessTicks(Deno.readTextFileSync(`/proc/${entry.name}/stat`)),
      );
    } catch {
      // exited while we looked
    }
  }
  return out;
}

/**
 * Sums the ticks of the processes under `roots` (each root and its descendants, live ones plus
 * the reaped children they account for) within the snapshot `processes`.
 */
export function treeTicks(processes: ReadonlyMap<number, ProcessTicks>, roots: number[]): number {
  const children = new Map<number, number[]>();
  for (const [pid, p] of processes) {
    const list = children.get(p.ppid) ?? [];
    list.push(pid);
    children.set(p.ppid, list);
  }
  const seen = new Set<number>();
  const queue = roots.filter((pid) => processes.has(pid));
  let sum = 0;
  while (queue.length > 0) {
    const pid = queue.pop()!;
    if (seen.has(pid)) continue;
    seen.add(pid);
    const p = processes.get(pid)!;
    sum += p.self + p.children;
    queue.push(...(children.get(pid) ?? []));
  }
  return sum;
}

/** CPU accounting of one interval. */
export interface CpuShare {
  /** Share of all CPUs used by the benchmark's processes, percent. */
  oursPct: number;
  /** Share of all CPUs used by everything else, percent. */
  othersPct: number;
  /**
   * Share of all CPUs left idle (idle and iowait ticks; stolen time counts as busy), percent. With
   * a pooler in the path, CPUs that idle while clients wait show time spent waiting on the pooler.
   */
  idlePct: number;
}

/** Computes the shares from two snapshots of system and tree ticks. */
export function cpuShare(
  before: { system: SystemTicks; ours: number },
  after: { system: SystemTicks; ours: number },
): CpuShare {
  const total = after.system.total - before.system.total;
  if (total <= 0) return { oursPct: Number.NaN, othersPct: Number.NaN, idlePct: Number.NaN };
  const busy = after.system.busy - before.system.busy;
  const ours = Math.max(0, after.ours - before.ours);
  return {
    oursPct: (100 * Math.min(ours, busy)) / total,
    othersPct: (100 * Math.max(0, busy - ours)) / total,
    idlePct: (100 * Math.max(0, total - busy)) / total,
  };
}

/** Measures, over an interval, the CPU share of the trees under `roots()` and of the rest. */
export class CpuMeter {
  #roots: () => number[];
  #before: { system: SystemTicks; ours: number } | undefined;

  /** `roots` is called at both ends of the interval (pids may appear meanwhile). */
  constructor(roots: () => number[]) {
    this.#roots = roots;
  }

  #snapshot(): { system: SystemTicks; ours: number } {
    const processes = readAllProcesses();
    return {
      system: parseSystemTicks(Deno.readTextFileSync("/proc/stat")),
      ours: treeTicks(processes, this.#roots()),
    };
  }

  /** Starts the interval. */
  start(): void {
    this.#before = this.#snapshot();
  }

  /** Ends the interval and returns the shares. */
  stop(): CpuShare {
    if (this.#before === undefined) throw new Error("CpuMeter.stop() called before start()");
    const share = cpuShare(this.#before, this.#snapshot());
    this.#before = undefined;
    return share;
  }
}

/** CPU time and context switches of one process, all its threads together. */
export interface ProcessUsage {
  /** utime, in clock ticks. */
  userTicks: number;
  /** stime, in clock ticks. */
  systemTicks: number;
  /** Times a thread gave up the CPU to wait (for a socket, a lock, a timer). */
  voluntary: number;
  /** Times a thread was preempted while it could still run. */
  involuntary: number;
}

/** Adds the `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` of one thread's status. */
export function parseContextSwitches(status: string): { voluntary: number; involuntary: number } {
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s*(\\d+)\\s*$`, "m").exec(status);
    if (m === null) throw new Error(`no ${name} line in /proc/<pid>/status`);
    return Number(m[1]);
  };
  return {
    voluntary: field("voluntary_ctxt_switches"),
    involuntary: field("nonvoluntary_ctxt_switches"),
  };
}

/**
 * Reads `pid`'s usage: CPU from `/proc/<pid>/stat` (every thread), context switches summed over
 * `/proc/<pid>/task/<tid>/status` (the process's own status counts its main thread only).
 */
export function readProcessUsage(pid: number): ProcessUsage {
  const at = statFields(Deno.readTextFileSync(`/proc/${pid}/stat`));
  const usage = { userTicks: at(14), systemTicks: at(15), voluntary: 0, involuntary: 0 };
  if (Number.isNaN(usage.userTicks) || Number.isNaN(usage.systemTicks)) {
    throw new Error("malformed /proc/<pid>/stat");
  }
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const s = parseContextSwitches(
        Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/status`),
      );
      usage.voluntary += s.voluntary;
      usage.involuntary += s.involuntary;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err; // a thread that ended meanwhile
    }
  }
  return usage;
}

/**
 * {@linkcode readProcessUsage} of `pid` and of its child processes together (a pooler that runs
 * worker processes). A child that ends between two readings makes their difference wrong: read
 * the same set twice.
 */
export function readTreeUsage(pid: number, children: readonly number[]): ProcessUsage {
  const total = readProcessUsage(pid);
  for (const c of children) {
    try {
      const u = readProcessUsage(c);
      total.userTicks += u.userTicks;
      total.systemTicks += u.systemTicks;
      total.voluntary += u.voluntary;
      total.involuntary += u.involuntary;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  return total;
}

/** A process's usage over an interval, per transaction. */
export interface UsagePerTransaction {
  /** User CPU, microseconds. */
  userUs: number;
  /** Kernel CPU, microseconds. */
  systemUs: number;
  /** Voluntary context switches. */
  voluntary: number;
  /** Involuntary context switches (preemptions). */
  involuntary: number;
}

/**
 * The usage between two readings divided by `transactions` (NaN everywhere when there were
 * none). `ticksPerSecond` is the kernel's USER_HZ, 100 on Linux.
 */
export function usagePerTransaction(
  before: ProcessUsage,
  after: ProcessUsage,
  transactions: number,
  ticksPerSecond = 100,
): UsagePerTransaction {
  const n = transactions > 0 ? transactions : Number.NaN;
  const us = 1e6 / ticksPerSecond;
  return {
    userUs: ((after.userTicks - before.userTicks) * us) / n,
    systemUs: ((after.systemTicks - before.systemTicks) * us) / n,
    voluntary: (after.voluntary - before.voluntary) / n,
    involuntary: (after.involuntary - before.involuntary) / n,
  };
}

/** The 1, 5 and 15 minute load averages from `/proc/loadavg`, or `unknown`. */
export function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "unknown";
  }
}
