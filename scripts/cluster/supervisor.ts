/**
 * The supervisor: the detached process that `deno task cluster up` leaves behind. It starts etcd,
 * writes the metadata into topo, starts each instance's pgctld and pooler and each cell's orch and
 * gateway, restarts any of them that exits unexpectedly, keeps `DIR/cluster.json` up to date, and
 * on SIGTERM or SIGINT stops everything in order and exits.
 *
 * Each child runs as `sh -c 'exec "$@" >>LOG 2>&1'`: after the `exec` the child is the component
 * itself (its pid is the one recorded), and its output goes straight to its log file, so that it
 * neither costs the supervisor CPU nor depends on the supervisor staying alive.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { Logger } from "../../shared/log/mod.ts";
import { findEtcd } from "../../shared/pgbin/mod.ts";
import { TopoClient } from "../../shared/topo/mod.ts";
import { clusterPaths, type ProcessSpec, processSpecs, REPO_ROOT } from "./commands.ts";
import { writeMetadata } from "./metadata.ts";
import { buildPlan, type ClusterPlan, type PlanInput } from "./plan.ts";
import { type ClusterState, type ProcessInfo, writeOptions, writeState } from "./state.ts";
import { stopAll } from "./stop.ts";

/** First restart delay; doubled after each quick failure. */
export const BACKOFF_START_MS = 500;
/** Longest restart delay. */
export const BACKOFF_MAX_MS = 5_000;
/** A child up this long has its backoff reset. */
export const BACKOFF_RESET_AFTER_MS = 30_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The next restart delay after `current`. */
export function nextBackoff(current: number, uptimeMs: number): { delay: number; next: number } {
  const delay = uptimeMs >= BACKOFF_RESET_AFTER_MS ? BACKOFF_START_MS : current;
  return { delay, next: Math.min(delay * 2, BACKOFF_MAX_MS) };
}

/** One supervised child process. */
class Child {
  readonly info: ProcessInfo;
  readonly spec: ProcessSpec;
  #log: Logger;
  #changed: () => void;
  #proc: Deno.ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #backoff = BACKOFF_START_MS;
  #startedAtMs = 0;
  stopping = false;

  constructor(spec: ProcessSpec, logFile: string, log: Logger, changed: () => void) {
    this.spec = spec;
    this.#log = log;
    this.#changed = changed;
    this.info = {
      name: spec.name,
      kind: spec.kind,
      ...(spec.cell !== undefined ? { cell: spec.cell } : {}),
      ...(spec.alias !== undefined ? { alias: spec.alias } : {}),
      pid: null,
      state: "stopped",
      restarts: 0,
      ports: spec.ports,
      command: spec.command,
      marker: spec.marker,
      logFile,
      startedAt: null,
      lastExit: null,
      ...(spec.dataDir !== undefined ? { dataDir: spec.dataDir } : {}),
      ...(spec.keyspace !== undefined ? { keyspace: spec.keyspace } : {}),
      ...(spec.shard !== undefined ? { shard: spec.shard } : {}),
    };
  }

  /** Starts the process now. */
  start(): void {
    if (this.stopping) return;
    const env = Deno.env.toObject();
    for (const key of Object.keys(env)) {
      if (this.spec.dropEnvPrefix !== undefined && key.startsWith(this.spec.dropEnvPrefix)) {
        delete env[key];
      }
    }
    env.NO_COLOR = "1";
    let proc: Deno.ChildProcess;
    try {
      proc = new Deno.Command("/bin/sh", {
        args: ["-c", 'exec "$@" >>"$0" 2>&1', this.info.logFile, ...this.spec.command],
        cwd: REPO_ROOT,
        clearEnv: true,
        env,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
    } catch (err) {
      this.#log.error("could not start process", { process: this.info.name, error: err });
      this.#exitedWith({ code: 127, signal: null, success: false });
      return;
    }
    this.#proc = proc;
    this.#startedAtMs = Date.now();
    this.info.pid = proc.pid;
    this.info.state = "running";
    this.info.startedAt = new Date().toISOString();
    this.#log.info("process started", { process: this.info.name, pid: proc.pid });
    this.#changed();
    this.#exited = proc.status.then((status) => {
      if (this.#proc === proc) this.#exitedWith(status);
    });
  }

  #exitedWith(status: Deno.CommandStatus): void {
    this.#proc = undefined;
    this.info.pid = null;
    this.info.lastExit = {
      code: status.code,
      signal: status.signal ?? null,
      at: new Date().toISOString(),
    };
    if (this.stopping) {
      this.info.state = "stopped";
      this.#log.info("process stopped", { process: this.info.name, code: status.code });
      this.#changed();
      return;
    }
    if (status.code === 2 && status.signal === null) {
      this.info.state = "crashed";
      this.#log.error("process exited with an invalid configuration; not restarting it", {
        process: this.info.name,
        code: status.code,
        logFile: this.info.logFile,
      });
      this.#changed();
      return;
    }
    const { delay, next } = nextBackoff(this.#backoff, Date.now() - this.#startedAtMs);
    this.#backoff = next;
    this.info.restarts += 1;
    this.info.state = "restarting";
    this.#log.warn("process exited unexpectedly; restarting it", {
      process: this.info.name,
      code: status.code,
      signal: status.signal ?? null,
      restarts: this.info.restarts,
      delayMs: delay,
    });
    this.#changed();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.start();
    }, delay);
  }

  /** Stops restarting it; the process itself is stopped by `stopAll`. */
  beginStop(): void {
    this.stopping = true;
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.info.state = "stopped";
    }
  }

  /** Kills it (when `stopAll` failed to) and waits for the exit to be recorded. */
  async finish(): Promise<void> {
    if (this.#proc !== undefined) {
      try {
        this.#proc.kill("SIGKILL");
      } catch {
        // gone
      }
    }
    await this.#exited;
  }
}

async function etcdHealthy(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
    const body = await res.json() as { health?: unknown };
    return res.ok && (body.health === "true" || body.health === true);
  } catch {
    return false;
  }
}

/** Makes `path` a folder with `mode` (also when it exists). */
async function ensureDir(path: string, mode: number): Promise<void> {
  await Deno.mkdir(path, { recursive: true, mode });
  await Deno.chmod(path, mode);
}

/**
 * Prepares `dir`: the folder (0755, so that the Postgres OS user can traverse it), `logs/`,
 * `secrets/` with the replication password (32 random bytes, base64url, 0600, made once), and each
 * instance's folder (0755; pgctld gives `data/` and `run/` to the Postgres OS user).
 */
export async function prepareDir(dir: string, plan: ClusterPlan): Promise<void> {
  const paths = clusterPaths(dir);
  await ensureDir(dir, 0o755);
  await ensureDir(paths.logs, 0o755);
  await ensureDir(paths.secrets, 0o700);
  try {
    await Deno.lstat(paths.replicationSecret);
  } catch {
    const secret = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
    await Deno.writeTextFile(paths.replicationSecret, secret + "\n", { mode: 0o600 });
  }
  await Deno.chmod(paths.replicationSecret, 0o600);
  for (const inst of plan.layout.instances) {
    await ensureDir(paths.instance(inst.alias).root, 0o755);
  }
}

/** Runs the supervisor until SIGTERM or SIGINT; resolves to the exit code. */
export async function runSupervisor(dir: string, input: PlanInput): Promise<number> {
  const log = new Logger({ component: "cluster-supervisor", fields: { dir } });
  const plan = await buildPlan(input);
  await prepareDir(dir, plan);
  await writeOptions(dir, plan.options);
  const paths = clusterPaths(dir);
  const endpoint = `http://127.0.0.1:${plan.layout.etcdClientPort}`;
  const { specs, skipped } = processSpecs({
    dir,
    layout: plan.layout,
    auth: plan.auth,
    etcdBin: findEtcd(),
  });
  for (const s of skipped) log.warn("process skipped", s);

  const state: ClusterState = {
    version: 1,
    dir,
    supervisor: {
      pid: Deno.pid,
      state: "starting",
      startedAt: new Date().toISOString(),
      command: [Deno.execPath(), ...Deno.args],
    },
    options: plan.options,
    etcdEndpoint: endpoint,
    gateways: plan.layout.cells.map((c) => ({
      cell: c.name,
      pgPort: c.gatewayPort,
      httpPort: c.gatewayHttpPort,
    })),
    auth: plan.auth,
    processes: [],
    skipped,
    warnings: skipped.map((s) => `${s.name} not started: ${s.reason}`),
    updatedAt: new Date().toISOString(),
  };

  // Writes are serialised, and coalesced when changes come in bursts.
  let writing: Promise<void> = Promise.resolve();
  let pending = false;
  const save = (): Promise<void> => {
    if (pending) return writing;
    pending = true;
    writing = writing.then(async () => {
      await sleep(20);
      pending = false;
      state.updatedAt = new Date().toISOString();
      try {
        await writeState(dir, state);
      } catch (err) {
        log.error("could not write cluster.json", { error: err });
      }
    });
    return writing;
  };

  const children = specs.map((spec) =>
    new Child(spec, `${paths.logs}/${spec.name}.log`, log, () => void save())
  );
  state.processes = children.map((c) => c.info);
  await save();

  const stop = Promise.withResolvers<void>();
  let stopping = false;
  const onSignal = () => {
    if (!stopping) log.info("stop requested");
    stopping = true;
    stop.resolve();
  };
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) Deno.addSignalListener(sig, onSignal);

  const startUp = async () => {
    const etcd = children.find((c) => c.info.kind === "etcd")!;
    etcd.start();
    const deadline = Date.now() + 60_000;
    while (!stopping && !(await etcdHealthy(endpoint))) {
      if (Date.now() > deadline) {
        log.error("etcd is not healthy after 60 s; still waiting", { logFile: etcd.info.logFile });
      }
      await sleep(200);
    }
    // Metadata first, so that poolers, orchs and gateways find their cells at once.
    while (!stopping) {
      let topo: TopoClient | undefined;
      try {
        topo = await TopoClient.connect({ endpoints: endpoint, logger: log, callTimeoutMs: 5000 });
        const report = await writeMetadata(topo, plan.file, plan.cells);
        log.info("metadata written", { ...report });
        break;
      } catch (err) {
        log.error("could not write metadata; retrying", { error: err });
        await sleep(1000);
      } finally {
        await topo?.close().catch(() => undefined);
      }
    }
    for (const child of children) {
      if (stopping) break;
      if (child.info.kind !== "etcd") child.start();
    }
    if (!stopping) {
      state.supervisor.state = "running";
      await save();
      log.info("cluster started", { processes: children.length });
    }
  };
  const started = startUp().catch((err) => {
    log.error("start-up failed", { error: err });
    state.supervisor.error = err instanceof Error ? err.message : String(err);
    void save();
  });

  await stop.promise;
  state.supervisor.state = "stopping";
  await save();
  for (const child of children) child.beginStop();
  await started;
  for (const child of children) child.beginStop();
  await stopAll(children.map((c) => c.info), log);
  await Promise.all(children.map((c) => c.finish()));
  state.supervisor.state = "stopped";
  await save();
  await writing;
  log.info("cluster stopped");
  return 0;
}
