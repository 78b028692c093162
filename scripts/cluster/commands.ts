/**
 * The command lines of the processes a local cluster runs. Components run exactly as their
 * `deno task` says (the task line from deno.json, with `deno` replaced by this Deno's path), so
 * that each one is a direct child of the supervisor with its own pid and the permissions its task
 * names.
 *
 * @module
 */

import type { ClusterLayout } from "./layout.ts";
import type { ProcessKind } from "./state.ts";

/** The repository root (where deno.json is). */
export const REPO_ROOT: string = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/** What the supervisor needs to run one process. */
export interface ProcessSpec {
  /** Unique name, e.g. `pooler-app-0-0`; the log is `logs/<name>.log`. */
  name: string;
  /** Kind of process. */
  kind: ProcessKind;
  /** Cell, for everything but etcd. */
  cell?: string;
  /** Topo alias (or, for pgctld, its instance's alias). */
  alias?: string;
  /** Program and arguments. */
  command: string[];
  /** Text unique to the command line (see `pidAlive`). */
  marker: string;
  /** Named ports, e.g. `{ pg: 16000, http: 16100 }`. */
  ports: Record<string, number>;
  /** Environment variables removed before starting it (etcd reads `ETCD_*` as flags). */
  dropEnvPrefix?: string;
  /** Postgres data directory (pgctld). */
  dataDir?: string;
  /** Keyspace served (pgctld, pooler). */
  keyspace?: string;
  /** Shard served (pgctld, pooler). */
  shard?: string;
}

/** Paths of the cluster's folders and files under `dir`. */
export function clusterPaths(dir: string) {
  return {
    dir,
    logs: `${dir}/logs`,
    etcd: `${dir}/etcd`,
    secrets: `${dir}/secrets`,
    replicationSecret: `${dir}/secrets/replication`,
    supervisorLog: `${dir}/logs/supervisor.log`,
    instance: (alias: string) => ({
      root: `${dir}/${alias}`,
      data: `${dir}/${alias}/data`,
      run: `${dir}/${alias}/run`,
    }),
  };
}

/**
 * The command line of `deno task <task>` from `deno.json` in `root`, with `deno` replaced by this
 * Deno's path; undefined when the task does not exist.
 */
export function taskCommand(task: string, root: string = REPO_ROOT): string[] | undefined {
  const config = JSON.parse(Deno.readTextFileSync(`${root}/deno.json`));
  const line: unknown = config.tasks?.[task];
  if (typeof line !== "string") return undefined;
  const words = line.split(/\s+/).filter((w) => w !== "");
  if (words[0] !== "deno") {
    throw new Error(`deno task '${task}' does not start with deno: '${line}'`);
  }
  return [Deno.execPath(), ...words.slice(1)];
}

/** Options of {@linkcode processSpecs}. */
export interface SpecOptions {
  /** Cluster folder (absolute). */
  dir: string;
  /** The layout. */
  layout: ClusterLayout;
  /** Gateway client authentication: `scram-sha-256` when the cluster file has users. */
  auth: "trust" | "scram-sha-256";
  /** The etcd binary (found with shared/pgbin's `findEtcd`). */
  etcdBin: string;
  /** Where deno.json is; the repository root when not given. */
  root?: string;
}

/** The result of {@linkcode processSpecs}. */
export interface Specs {
  /** Processes in start order: etcd, per instance pgctld then pooler, per cell orch then gateway. */
  specs: ProcessSpec[];
  /** Processes that cannot run, with why. */
  skipped: { name: string; reason: string }[];
}

/** Builds every process's command line for the cluster. */
export function processSpecs(options: SpecOptions): Specs {
  const { dir, layout } = options;
  const paths = clusterPaths(dir);
  const endpoint = `http://127.0.0.1:${layout.etcdClientPort}`;
  const specs: ProcessSpec[] = [];
  const skipped: { name: string; reason: string }[] = [];
  const peer = `http://127.0.0.1:${layout.etcdPeerPort}`;
  specs.push({
    name: "etcd",
    kind: "etcd",
    command: [
      options.etcdBin,
      "--name=tessera",
      `--data-dir=${paths.etcd}`,
      `--listen-client-urls=${endpoint}`,
      `--advertise-client-urls=${endpoint}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=tessera=${peer}`,
      "--initial-cluster-state=new",
      `--initial-cluster-token=tessera-${layout.etcdClientPort}`,
      "--logger=zap",
      "--log-outputs=stderr",
    ],
    marker: `--data-dir=${paths.etcd}`,
    ports: { client: layout.etcdClientPort, peer: layout.etcdPeerPort },
    dropEnvPrefix: "ETCD_",
  });

  const task = (name: string, process: string) => {
    const cmd = taskCommand(name, options.root);
    if (cmd === undefined) {
      skipped.push({
        name: process,
        reason: `deno.json has no '${name}' task yet, so the cluster runs without it`,
      });
    }
    return cmd;
  };

  const pgctld = task("pgctld", "pgctld");
  const pooler = task("pooler", "pooler");
  for (const inst of layout.instances) {
    const p = paths.instance(inst.alias);
    const common = {
      cell: inst.cell,
      alias: inst.alias,
      keyspace: inst.keyspace,
      shard: inst.shard,
    };
    if (pgctld !== undefined) {
      specs.push({
        name: `pgctld-${inst.alias}`,
        kind: "pgctld",
        ...common,
        command: [
          ...pgctld,
          "--alias",
          inst.alias,
          "--port",
          String(inst.pgctldPort),
          "--data-dir",
          p.data,
          "--socket-dir",
          p.run,
          "--pg-port",
          String(inst.pgPort),
          "--pg-listen-address",
          "127.0.0.1",
          "--replication-password-file",
          paths.replicationSecret,
        ],
        marker: `--data-dir ${p.data}`,
        ports: { http: inst.pgctldPort, postgres: inst.pgPort },
        dataDir: p.data,
      });
    }
    if (pooler !== undefined) {
      specs.push({
        name: `pooler-${inst.alias}`,
        kind: "pooler",
        ...common,
        command: [
          ...pooler,
          "--alias",
          inst.alias,
          "--cell",
          inst.cell,
          "--keyspace",
          inst.keyspace,
          // `=`: a range such as `-80` would otherwise read as a flag.
          `--shard=${inst.shard}`,
          "--listen",
          `127.0.0.1:${inst.poolerPort}`,
          "--http-listen",
          `127.0.0.1:${inst.poolerHttpPort}`,
          "--postgres-socket-dir",
          p.run,
          "--postgres-port",
          String(inst.pgPort),
          "--topo-endpoint",
          endpoint,
          "--pgctld-address",
          `127.0.0.1:${inst.pgctldPort}`,
        ],
        marker: `--postgres-socket-dir ${p.run}`,
        ports: { pg: inst.poolerPort, http: inst.poolerHttpPort },
      });
    }
  }

  const orch = task("orch", "orch");
  const gateway = task("gateway", "gateway");
  for (const cell of layout.cells) {
    if (orch !== undefined) {
      specs.push({
        name: `orch-${cell.name}`,
        kind: "orch",
        cell: cell.name,
        alias: `orch-${cell.name}`,
        command: [
          ...orch,
          "--alias",
          `orch-${cell.name}`,
          "--cell",
          cell.name,
          "--http-listen",
          `127.0.0.1:${cell.orchPort}`,
          "--topo-endpoint",
          endpoint,
        ],
        marker: `--http-listen 127.0.0.1:${cell.orchPort}`,
        ports: { http: cell.orchPort },
      });
    }
    if (gateway !== undefined) {
      specs.push({
        name: `gateway-${cell.name}`,
        kind: "gateway",
        cell: cell.name,
        alias: `gw-${cell.name}`,
        command: [
          ...gateway,
          "--alias",
          `gw-${cell.name}`,
          "--cell",
          cell.name,
          "--listen",
          `127.0.0.1:${cell.gatewayPort}`,
          "--http-listen",
          `127.0.0.1:${cell.gatewayHttpPort}`,
          "--topo-endpoint",
          endpoint,
          "--auth",
          options.auth,
        ],
        marker: `--http-listen 127.0.0.1:${cell.gatewayHttpPort}`,
        ports: { pg: cell.gatewayPort, http: cell.gatewayHttpPort },
      });
    }
  }
  return { specs, skipped };
}
