/**
 * The `up`, `status` and `down` commands of `deno task cluster`.
 *
 * @module
 */

import { Logger } from "../../shared/log/mod.ts";
import { PgClient } from "../../shared/wire/mod.ts";
import { TopoClient } from "../../shared/topo/mod.ts";
import { clusterPaths, REPO_ROOT } from "./commands.ts";
import { ensurePrerequisites, traversalProblem } from "./prereq.ts";
import { buildPlan, type ClusterPlan, type PlanInput } from "./plan.ts";
import {
  type ClusterState,
  pidAlive,
  type ProcessInfo,
  readOptions,
  readState,
  signalPid,
  statePath,
  waitPidGone,
} from "./state.ts";
import { stopAll } from "./stop.ts";

/** Text in the supervisor's command line, to tell it from a process that reused its pid. */
export const SUPERVISOR_MARKER = "scripts/cluster/main.ts supervise";
/** How long `up` waits for the gateway to answer. */
export const UP_TIMEOUT_MS = 120_000;
/** How long `down` waits for the supervisor to stop everything. */
export const DOWN_TIMEOUT_MS = 60_000;

const MAIN = `${REPO_ROOT}/scripts/cluster/main.ts`;

/** Where a command writes: lines for the user, and problems. */
export interface Output {
  /** A line on standard output. */
  out(line: string): void;
  /** A line on standard error. */
  err(line: string): void;
}

/** The console. */
export const consoleOutput: Output = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
};

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function quietLogger(): Logger {
  return new Logger({ component: "cluster", level: "error", sink: () => {} });
}

/** Whether the supervisor recorded in `state` is alive. */
export function supervisorAlive(state: ClusterState | undefined): boolean {
  return state !== undefined && pidAlive(state.supervisor.pid, SUPERVISOR_MARKER);
}

/** Keyspace, user and password `up` uses to check the gateway with `SELECT 1`. */
function probeTarget(plan: ClusterPlan): { database: string; user: string; password?: string } {
  const database = plan.file.keyspaces[0]?.name ?? "app";
  const user = plan.file.users[0];
  return user === undefined
    ? { database, user: "postgres" }
    : { database, user: user.name, password: user.password };
}

/** Connection strings of a cluster, one pair per gateway. */
export function connectionInfo(state: ClusterState, database: string, user: string): string[] {
  const lines: string[] = [];
  for (const gw of state.gateways) {
    const base = `postgres://${encodeURIComponent(user)}@127.0.0.1:${gw.pgPort}`;
    const suffix = state.gateways.length > 1 ? ` (gateway of cell ${gw.cell})` : "";
    lines.push(`  primary:  ${base}/${database}${suffix}`);
    lines.push(`  replicas: ${base}/${database}@replica${suffix}`);
  }
  return lines;
}

function printInfo(state: ClusterState, plan: ClusterPlan, o: Output): void {
  const target = probeTarget(plan);
  const instances = state.processes.filter((p) => p.kind === "pooler").length;
  o.out(
    `Tessera cluster in ${state.dir}: ${instances} Postgres instance(s) in ${state.gateways.length} cell(s)`,
  );
  for (const line of connectionInfo(state, target.database, target.user)) o.out(line);
  for (const ks of plan.file.keyspaces) {
    if (ks.sharded) o.out(`  sharded:  keyspace ${ks.name} over ${ks.shards.join(", ")}`);
  }
  if (state.auth === "scram-sha-256") {
    o.out(`  (SCRAM authentication: the users and passwords of the cluster file)`);
  }
  o.out(`  logs:     ${clusterPaths(state.dir).logs}`);
  const dirFlag = state.dir === `${REPO_ROOT}/.tessera` ? "" : ` --dir ${state.dir}`;
  o.out(`  status:   deno task cluster status${dirFlag}`);
  o.out(`  stop:     deno task cluster down${dirFlag}`);
  for (const w of state.warnings) o.out(`  warning:  ${w}`);
}

async function selectOne(
  port: number,
  target: { database: string; user: string; password?: string },
): Promise<string | undefined> {
  let client: PgClient | undefined;
  const timeout = new Promise<string>((resolve) =>
    setTimeout(() => resolve("no answer within 15 s"), 15_000)
  );
  const attempt = (async () => {
    client = await PgClient.connect({
      host: "127.0.0.1",
      port,
      user: target.user,
      database: target.database,
      ...(target.password !== undefined ? { password: target.password } : {}),
      connectTimeoutMs: 3000,
    });
    const res = await client.query("SELECT 1");
    return res[0]?.rows[0]?.[0] === "1" ? undefined : "unexpected answer to SELECT 1";
  })().catch((err) => (err instanceof Error ? err.message : String(err)));
  try {
    return await Promise.race([attempt, timeout]);
  } finally {
    void client?.close().catch(() => undefined);
  }
}

async function httpReady(port: number, path: string): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, {
      signal: AbortSignal.timeout(1500),
    });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

/** Why the gateways do not answer `SELECT 1` on the probe keyspace; empty when they all do. */
async function gatewaysNotAnswering(
  state: ClusterState,
  target: { database: string; user: string; password?: string },
): Promise<string[]> {
  const problems: string[] = [];
  for (const gw of state.gateways) {
    const problem = await selectOne(gw.pgPort, target);
    if (problem !== undefined) problems.push(`gateway ${gw.cell} (port ${gw.pgPort}): ${problem}`);
  }
  return problems;
}

/**
 * Readiness when the first keyspace is sharded: every gateway's `/ready` answers 200, every shard
 * of every keyspace has a primary recorded in topo whose pooler registered as `primary`, and each
 * such primary answers `SELECT 1` in the keyspace's database through its pooler (orch has created
 * it). Empty when ready.
 */
async function shardedNotReady(
  state: ClusterState,
  plan: ClusterPlan,
  target: { database: string; user: string; password?: string },
): Promise<string[]> {
  const problems: string[] = [];
  for (const gw of state.gateways) {
    if (!await httpReady(gw.httpPort, "/ready")) {
      problems.push(`gateway ${gw.cell} (port ${gw.httpPort}): /ready does not answer 200`);
    }
  }
  let topo: TopoClient | undefined;
  try {
    topo = await TopoClient.connect({
      endpoints: state.etcdEndpoint,
      logger: quietLogger(),
      callTimeoutMs: 2000,
    });
    const types = new Map<string, string>();
    for (const cell of plan.cells) {
      try {
        for (const item of await (await topo.cell(cell)).poolers.list()) {
          if (item.type === "record") types.set(item.value.alias, item.value.type);
        }
      } catch {
        // cell not registered yet
      }
    }
    for (const ks of plan.file.keyspaces) {
      for (const range of ks.shards) {
        const primary = (await topo.global.shards.get(ks.name, range))?.value.primaryAlias;
        if (primary === undefined) {
          problems.push(`shard ${ks.name}/${range} has no primary yet`);
        } else if (types.get(primary) !== "primary") {
          problems.push(`shard ${ks.name}/${range}: primary ${primary} is not serving yet`);
        } else {
          const inst = plan.layout.instances.find((i) => i.alias === primary);
          const problem = inst === undefined
            ? undefined
            : await selectOne(inst.poolerPort, { ...target, database: ks.name });
          if (problem !== undefined) {
            problems.push(`shard ${ks.name}/${range}: primary ${primary}: ${problem}`);
          }
        }
      }
    }
  } catch (err) {
    problems.push(`topo: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    await topo?.close().catch(() => undefined);
  }
  return problems;
}

/** Why each process is not up yet (not running, or its HTTP `/ready` does not answer 200). */
async function notUp(state: ClusterState): Promise<string[]> {
  const out: string[] = [];
  for (const p of state.processes) {
    if (p.state !== "running" || !pidAlive(p.pid, p.marker)) {
      const exit = p.lastExit ? `, last exit code ${p.lastExit.code}` : "";
      out.push(`${p.name}: ${p.state} (restarts ${p.restarts}${exit}; log ${p.logFile})`);
      continue;
    }
    const port = p.kind === "etcd" ? p.ports.client : p.ports.http;
    const path = p.kind === "etcd" ? "/health" : "/ready";
    if (port !== undefined && !await httpReady(port, path)) {
      out.push(
        `${p.name}: running (pid ${p.pid}) but ${path} does not answer 200; log ${p.logFile}`,
      );
    }
  }
  return out;
}

async function tail(path: string, lines = 20): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no output)";
  }
}

/** Flags of `up`. */
export interface UpFlags extends PlanInput {
  /** Cluster folder (absolute). */
  dir: string;
  /** Return once every process is started, without waiting for the gateway to answer. */
  noWait?: boolean;
}

/** `deno task cluster up`: resolves to the exit code. */
export async function up(flags: UpFlags, o: Output = consoleOutput): Promise<number> {
  const { dir } = flags;
  const saved = await readOptions(dir);
  // Flags given now replace the saved ones they would contradict: a cluster file replaces
  // saved --shards/--vschema, and --shards/--vschema replace a saved cluster file.
  const flagsLayout = flags.shards !== undefined || flags.vschema !== undefined;
  const input: PlanInput = {
    replicas: flags.replicas ?? saved?.replicas,
    cells: flags.cells ?? (flags.config === undefined ? saved?.cells : undefined),
    basePort: flags.basePort ?? saved?.basePort,
    config: flags.config ?? (flagsLayout ? undefined : saved?.config),
    shards: flags.shards ?? (flags.config === undefined ? saved?.shards : undefined),
    vschema: flags.vschema ?? (flags.config === undefined ? saved?.vschema : undefined),
  };
  const plan = await buildPlan(input); // throws ClusterConfigError / LayoutError: exit 2

  let existing: ClusterState | undefined;
  try {
    existing = await readState(dir);
  } catch (err) {
    o.err(`ignoring ${statePath(dir)}: ${(err as Error).message}`);
  }
  if (existing !== undefined && supervisorAlive(existing)) {
    if (existing.supervisor.state === "stopping") {
      o.err(`the cluster in ${dir} is stopping; run up again once 'down' has finished`);
      return 1;
    }
    o.out(`A cluster is already running in ${dir} (supervisor pid ${existing.supervisor.pid}).`);
    printInfo(existing, plan, o);
    return 0;
  }
  if (existing !== undefined) {
    const leftovers = existing.processes.filter((p) => pidAlive(p.pid, p.marker));
    if (leftovers.length > 0) {
      o.err(
        `the previous supervisor of ${dir} is gone but ${leftovers.length} of its processes ` +
          `still run; stopping them first`,
      );
      await stopAll(existing.processes, quietLogger());
    }
  }

  if (!await ensurePrerequisites(o.err)) return 1;
  const problem = traversalProblem(dir);
  if (problem !== undefined) {
    o.err(problem);
    return 2;
  }

  const paths = clusterPaths(dir);
  await Deno.mkdir(paths.logs, { recursive: true });
  await Deno.chmod(dir, 0o755);
  await Deno.remove(statePath(dir)).catch(() => undefined);
  const args = [
    "run",
    "--allow-all",
    "--no-check", // `deno task cluster` has just type-checked the same code
    MAIN,
    "supervise",
    "--dir",
    dir,
    "--replicas",
    String(plan.options.replicas),
    "--base-port",
    String(plan.options.basePort),
    ...(plan.options.config !== undefined
      ? ["--config", plan.options.config]
      : ["--cells", String(plan.options.cells)]),
    ...(plan.options.shards !== undefined ? ["--shards", String(plan.options.shards)] : []),
    ...(plan.options.vschema !== undefined ? ["--vschema", plan.options.vschema] : []),
  ];
  const supervisor = new Deno.Command("/bin/sh", {
    args: ["-c", 'exec "$@" >>"$0" 2>&1', paths.supervisorLog, Deno.execPath(), ...args],
    cwd: REPO_ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  supervisor.unref();
  o.err(`starting the cluster in ${dir} (supervisor pid ${supervisor.pid}, logs in ${paths.logs})`);

  const target = probeTarget(plan);
  const deadline = Date.now() + UP_TIMEOUT_MS;
  let state: ClusterState | undefined;
  let lastProblem = "the supervisor has not written cluster.json yet";
  while (Date.now() < deadline) {
    await sleep(500);
    try {
      state = await readState(dir);
    } catch {
      continue; // being replaced
    }
    if (!pidAlive(supervisor.pid, SUPERVISOR_MARKER)) {
      o.err(`the supervisor exited; the end of ${paths.supervisorLog}:`);
      o.err(await tail(paths.supervisorLog));
      return 1;
    }
    if (state === undefined || state.supervisor.state !== "running") continue;
    if (flags.noWait) {
      printInfo(state, plan, o);
      return 0;
    }
    const problems = plan.file.keyspaces[0]?.sharded
      ? await shardedNotReady(state, plan, target)
      : await gatewaysNotAnswering(state, target);
    if (problems.length === 0) {
      printInfo(state, plan, o);
      return 0;
    }
    lastProblem = problems.join("; ");
  }
  o.err(
    plan.file.keyspaces[0]?.sharded
      ? `the cluster was not ready within ${UP_TIMEOUT_MS / 1000} s: ${lastProblem}`
      : `the cluster did not answer SELECT 1 within ${UP_TIMEOUT_MS / 1000} s: ${lastProblem}`,
  );
  if (state !== undefined) {
    const down = await notUp(state);
    if (down.length > 0) {
      o.err("processes not up:");
      for (const line of down) o.err(`  ${line}`);
    }
    for (const w of state.warnings) o.err(`warning: ${w}`);
  }
  o.err(`logs: ${paths.logs}; it keeps running: use 'status' and 'down' with --dir ${dir}`);
  return 1;
}

/** A process as `status` reports it. */
export interface ProcessStatus {
  /** Name, e.g. `pooler-app-0-0`. */
  name: string;
  /** Kind. */
  kind: ProcessInfo["kind"];
  /** Cell (not for etcd). */
  cell: string | null;
  /** Pid while running. */
  pid: number | null;
  /** running, restarting, stopped or crashed. */
  state: ProcessInfo["state"];
  /** Named ports. */
  ports: Record<string, number>;
  /** Restarts so far. */
  restarts: number;
  /** Poolers: the type of its topo record (`primary`, `replica`, ...), null when unregistered. */
  role?: string | null;
  /** Poolers: whether the shard record names it as primary. */
  shardPrimary?: boolean;
  /** Log file. */
  logFile: string;
}

async function poolerRoles(
  state: ClusterState,
): Promise<Map<string, { role: string | null; shardPrimary: boolean }> | undefined> {
  let topo: TopoClient | undefined;
  try {
    topo = await TopoClient.connect({
      endpoints: state.etcdEndpoint,
      logger: quietLogger(),
      callTimeoutMs: 2000,
    });
    const types = new Map<string, string>();
    const cells = [...new Set(state.processes.flatMap((p) => p.cell ? [p.cell] : []))];
    for (const cell of cells) {
      try {
        const ct = await topo.cell(cell);
        for (const item of await ct.poolers.list()) {
          if (item.type === "record") types.set(item.value.alias, item.value.type);
        }
      } catch {
        // cell not registered yet
      }
    }
    const primaries = new Set<string>();
    for (const item of await topo.global.shards.list()) {
      if (item.type === "record" && item.value.primaryAlias !== undefined) {
        primaries.add(item.value.primaryAlias);
      }
    }
    const out = new Map<string, { role: string | null; shardPrimary: boolean }>();
    for (const p of state.processes) {
      if (p.kind !== "pooler" || p.alias === undefined) continue;
      out.set(p.alias, {
        role: types.get(p.alias) ?? null,
        shardPrimary: primaries.has(p.alias),
      });
    }
    return out;
  } catch {
    return undefined;
  } finally {
    await topo?.close().catch(() => undefined);
  }
}

/** The status of a cluster, as `status --json` prints it. */
export interface ClusterStatus {
  /** Cluster folder. */
  dir: string;
  /** The supervisor. */
  supervisor: { pid: number; state: string; alive: boolean };
  /** etcd endpoint. */
  etcdEndpoint: string;
  /** Whether roles could be read from topo. */
  topoReachable: boolean;
  /** Connection strings. */
  connections: { cell: string; primary: string; replica: string }[];
  /** Every process. */
  processes: ProcessStatus[];
  /** Processes not started, with why. */
  skipped: { name: string; reason: string }[];
  /** Warnings. */
  warnings: string[];
}

/** Reads the status of the cluster in `dir`; undefined when there is none. */
export async function clusterStatus(dir: string): Promise<ClusterStatus | undefined> {
  const state = await readState(dir);
  if (state === undefined) return undefined;
  const alive = supervisorAlive(state);
  const roles = await poolerRoles(state);
  const database = (await buildPlan({ ...state.options }).catch(() => undefined))?.file
    .keyspaces[0]?.name ?? "app";
  return {
    dir,
    supervisor: {
      pid: state.supervisor.pid,
      state: alive ? state.supervisor.state : "stopped",
      alive,
    },
    etcdEndpoint: state.etcdEndpoint,
    topoReachable: roles !== undefined,
    connections: state.gateways.map((gw) => ({
      cell: gw.cell,
      primary: `postgres://postgres@127.0.0.1:${gw.pgPort}/${database}`,
      replica: `postgres://postgres@127.0.0.1:${gw.pgPort}/${database}@replica`,
    })),
    processes: state.processes.map((p) => {
      const running = pidAlive(p.pid, p.marker);
      // Without a supervisor nothing is restarted: a dead process is simply stopped.
      const st = running ? "running" : alive ? (p.state === "running" ? "restarting" : p.state) : (
        p.state === "crashed" ? "crashed" : "stopped"
      );
      const status: ProcessStatus = {
        name: p.name,
        kind: p.kind,
        cell: p.cell ?? null,
        pid: running ? p.pid : null,
        state: st,
        ports: p.ports,
        restarts: p.restarts,
        logFile: p.logFile,
      };
      if (p.kind === "pooler" && p.alias !== undefined) {
        const r = roles?.get(p.alias);
        status.role = r?.role ?? null;
        status.shardPrimary = r?.shardPrimary ?? false;
      }
      return status;
    }),
    skipped: state.skipped,
    warnings: state.warnings,
  };
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
}

/** `deno task cluster status`: resolves to the exit code. */
export async function status(
  flags: { dir: string; json: boolean },
  o: Output = consoleOutput,
): Promise<number> {
  const st = await clusterStatus(flags.dir);
  if (st === undefined) {
    if (flags.json) {
      o.out(JSON.stringify({ dir: flags.dir, supervisor: null, processes: [] }, null, 2));
    } else {
      o.err(`no cluster in ${flags.dir} (start one with: deno task cluster up --dir ${flags.dir})`);
    }
    return 1;
  }
  if (flags.json) {
    o.out(JSON.stringify(st, null, 2));
    return 0;
  }
  o.out(
    `cluster ${st.dir}: supervisor ${st.supervisor.state} (pid ${st.supervisor.pid}), etcd ${st.etcdEndpoint}`,
  );
  const rows = [["NAME", "KIND", "CELL", "PID", "STATE", "RESTARTS", "PORTS", "ROLE"]];
  for (const p of st.processes) {
    const role = p.kind !== "pooler"
      ? ""
      : `${p.role ?? (st.topoReachable ? "unregistered" : "?")}${
        p.shardPrimary ? " (shard primary)" : ""
      }`;
    rows.push([
      p.name,
      p.kind,
      p.cell ?? "",
      p.pid === null ? "-" : String(p.pid),
      p.state,
      String(p.restarts),
      Object.entries(p.ports).map(([k, v]) => `${k}=${v}`).join(","),
      role,
    ]);
  }
  for (const line of table(rows)) o.out(line);
  for (const c of st.connections) {
    o.out(`connect (${c.cell}): ${c.primary}  replicas: ${c.replica}`);
  }
  for (const w of st.warnings) o.out(`warning: ${w}`);
  return 0;
}

function looksLikeClusterDir(dir: string): boolean {
  for (const name of ["cluster.json", "options.json", "logs"]) {
    try {
      Deno.statSync(`${dir}/${name}`);
      return true;
    } catch {
      // look further
    }
  }
  return false;
}

/** `deno task cluster down`: resolves to the exit code. */
export async function down(
  flags: { dir: string; clean: boolean },
  o: Output = consoleOutput,
): Promise<number> {
  const { dir } = flags;
  let state: ClusterState | undefined;
  try {
    state = await readState(dir);
  } catch (err) {
    o.err(`cannot read ${statePath(dir)}: ${(err as Error).message}`);
  }
  const log = new Logger({ component: "cluster", level: "warn" });
  if (state === undefined) {
    o.err(`no cluster state in ${dir}: nothing to stop`);
  } else {
    if (supervisorAlive(state)) {
      o.err(`stopping the cluster in ${dir} (supervisor pid ${state.supervisor.pid})`);
      signalPid(state.supervisor.pid, "SIGTERM");
      if (!await waitPidGone(state.supervisor.pid, DOWN_TIMEOUT_MS, SUPERVISOR_MARKER)) {
        o.err(`the supervisor did not stop within ${DOWN_TIMEOUT_MS / 1000} s; killing it`);
        signalPid(state.supervisor.pid, "SIGKILL");
        await waitPidGone(state.supervisor.pid, 5_000, SUPERVISOR_MARKER);
      }
      state = await readState(dir).catch(() => state) ?? state;
    }
    const left = state.processes.filter((p) => pidAlive(p.pid, p.marker));
    if (left.length > 0) {
      o.err(`stopping leftover processes: ${left.map((p) => p.name).join(", ")}`);
    }
    // Also stops a Postgres whose pgctld is gone (pg_ctl stop as the Postgres OS user).
    await stopAll(state.processes, log);
    const still = state.processes.filter((p) => pidAlive(p.pid, p.marker));
    for (const p of still) signalPid(p.pid!, "SIGKILL");
    o.err(`cluster in ${dir} stopped`);
  }
  const exists = await Deno.stat(dir).then(() => true, () => false);
  if (flags.clean && exists) {
    if (!looksLikeClusterDir(dir)) {
      o.err(`not removing ${dir}: it does not look like a cluster folder`);
      return state === undefined ? 0 : 1;
    }
    await Deno.remove(dir, { recursive: true });
    o.err(`removed ${dir}`);
  }
  return 0;
}
