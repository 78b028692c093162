/**
 * The local cluster's shape: which processes run, their names, cells and ports. Pure functions,
 * no I/O, so that the layout can be tested and printed before anything starts.
 *
 * Every port moves by `d = basePort - 15000`:
 *
 * | what                         | port              |
 * | ---------------------------- | ----------------- |
 * | etcd client / peer           | 12379+d / 12380+d |
 * | orch of cell c (0-based)     | 15000+d+c         |
 * | gateway of cell c: PG / HTTP | 15432+d+c / 15100+d+c |
 * | instance i: pooler PG / HTTP | 16000+d+i / 16100+d+i |
 * | instance i: pgctld           | 17100+d+i         |
 * | instance i: Postgres         | 25432+d+i         |
 *
 * @module
 */

import { NAME_PATTERN } from "../../shared/topo/mod.ts";

/** The base port of the default cluster; ports move by `basePort - DEFAULT_BASE_PORT`. */
export const DEFAULT_BASE_PORT = 15000;
/** Lowest port a layout may use (below it needs root and clashes with system services). */
export const MIN_PORT = 1024;
/** Ports from here on are Linux's ephemeral range: outgoing connections would take them. */
export const EPHEMERAL_PORT_START = 32768;
/** Instances per cluster: pooler PG ports (16000+i) must stay below pooler HTTP ports (16100). */
export const MAX_INSTANCES = 100;
/** Cells per cluster: orch ports (15000+c) must stay below gateway HTTP ports (15100). */
export const MAX_CELLS = 100;

/** Raised for a layout that cannot be built; the CLI exits 2 with its message. */
export class LayoutError extends Error {
  /** Creates a layout error. */
  constructor(message: string) {
    super(message);
    this.name = "LayoutError";
  }
}

/** One Postgres instance with its pgctld and pooler. */
export interface InstancePlan {
  /** Global index over all shards and cells, from 0. */
  index: number;
  /** Topo alias of the pooler, also the instance folder name, e.g. `app-0-0`. */
  alias: string;
  /** Cell the instance lives in. */
  cell: string;
  /** Keyspace served. */
  keyspace: string;
  /** Shard range served, e.g. `0`. */
  shard: string;
  /** Position of the instance in its shard: 0 to the replica count. */
  member: number;
  /** Pooler Postgres-wire port. */
  poolerPort: number;
  /** Pooler HTTP (Connect + status) port. */
  poolerHttpPort: number;
  /** pgctld HTTP (Connect + status) port. */
  pgctldPort: number;
  /** Postgres port (TCP on 127.0.0.1 and the Unix socket name). */
  pgPort: number;
}

/** One cell with its orch and gateway. */
export interface CellPlan {
  /** Index of the cell, from 0. */
  index: number;
  /** Cell name, e.g. `zone1`. */
  name: string;
  /** orch HTTP port (Connect + status). */
  orchPort: number;
  /** Gateway Postgres-wire port. */
  gatewayPort: number;
  /** Gateway HTTP port. */
  gatewayHttpPort: number;
}

/** A keyspace and its shards, as the layout needs them. */
export interface KeyspaceShards {
  /** Keyspace name. */
  name: string;
  /** Shard ranges. */
  shards: readonly string[];
}

/** Input of {@linkcode planLayout}. */
export interface LayoutInput {
  /** Replicas per shard (besides the primary). */
  replicas: number;
  /** Cell names, in order. */
  cells: readonly string[];
  /** Base port (15000 for the default cluster). */
  basePort: number;
  /** Keyspaces with their shards. */
  keyspaces: readonly KeyspaceShards[];
}

/** The whole layout. */
export interface ClusterLayout {
  /** Base port it was built from. */
  basePort: number;
  /** etcd client port. */
  etcdClientPort: number;
  /** etcd peer port. */
  etcdPeerPort: number;
  /** Cells with their orch and gateway. */
  cells: CellPlan[];
  /** Instances, by global index. */
  instances: InstancePlan[];
}

/** Cell names `zone1`..`zoneN`. */
export function defaultCellNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `zone${i + 1}`);
}

/** The alias of member `member` of shard `shard` of `keyspace`, made a valid topo name. */
export function instanceAlias(keyspace: string, shard: string, member: number): string {
  const alias = `${keyspace}-${shard}-${member}`.replace(/[^A-Za-z0-9_.-]/g, "_");
  if (!NAME_PATTERN.test(alias)) {
    throw new LayoutError(`cannot build a valid topo alias for ${keyspace}/${shard}: '${alias}'`);
  }
  return alias;
}

function checkCount(what: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new LayoutError(`'${what}' must be an integer from ${min} to ${max}: received ${value}`);
  }
}

/**
 * Builds the layout: instances are numbered over keyspaces, shards and members in that order, and
 * a shard's members are spread round robin over the cells. Throws {@linkcode LayoutError} for
 * counts out of range and for a base port that puts any port below 1024 or at 32768 or above.
 */
export function planLayout(input: LayoutInput): ClusterLayout {
  checkCount("--replicas", input.replicas, 0, MAX_INSTANCES - 1);
  checkCount("--cells", input.cells.length, 1, MAX_CELLS);
  if (!Number.isInteger(input.basePort)) {
    throw new LayoutError(`'--base-port' must be an integer: received ${input.basePort}`);
  }
  const d = input.basePort - DEFAULT_BASE_PORT;
  const cells: CellPlan[] = input.cells.map((name, c) => ({
    index: c,
    name,
    orchPort: 15000 + d + c,
    gatewayPort: 15432 + d + c,
    gatewayHttpPort: 15100 + d + c,
  }));
  const instances: InstancePlan[] = [];
  for (const keyspace of input.keyspaces) {
    for (const shard of keyspace.shards) {
      for (let member = 0; member <= input.replicas; member++) {
        const i = instances.length;
        instances.push({
          index: i,
          alias: instanceAlias(keyspace.name, shard, member),
          cell: input.cells[member % input.cells.length]!,
          keyspace: keyspace.name,
          shard,
          member,
          poolerPort: 16000 + d + i,
          poolerHttpPort: 16100 + d + i,
          pgctldPort: 17100 + d + i,
          pgPort: 25432 + d + i,
        });
      }
    }
  }
  if (instances.length > MAX_INSTANCES) {
    throw new LayoutError(
      `the cluster would have ${instances.length} instances; at most ${MAX_INSTANCES} fit the port layout`,
    );
  }
  const layout: ClusterLayout = {
    basePort: input.basePort,
    etcdClientPort: 12379 + d,
    etcdPeerPort: 12380 + d,
    cells,
    instances,
  };
  const ports = allPorts(layout);
  const low = Math.min(...ports.map((p) => p.port));
  const high = Math.max(...ports.map((p) => p.port));
  if (low < MIN_PORT || high >= EPHEMERAL_PORT_START) {
    const lowest = DEFAULT_BASE_PORT + (MIN_PORT - (low - d));
    const highest = DEFAULT_BASE_PORT + (EPHEMERAL_PORT_START - 1 - (high - d));
    throw new LayoutError(
      `'--base-port' ${input.basePort} puts ports at ${low}..${high}; every port must be from ` +
        `${MIN_PORT} to ${EPHEMERAL_PORT_START - 1} (below the ephemeral range): ` +
        `choose a base port from ${lowest} to ${highest} for this cluster`,
    );
  }
  const seen = new Map<number, string>();
  for (const { port, what } of ports) {
    const other = seen.get(port);
    if (other !== undefined) {
      throw new LayoutError(`port ${port} would serve both ${other} and ${what}`);
    }
    seen.set(port, what);
  }
  return layout;
}

/** Every port of the layout with what it serves. */
export function allPorts(layout: ClusterLayout): { port: number; what: string }[] {
  const out = [
    { port: layout.etcdClientPort, what: "etcd client" },
    { port: layout.etcdPeerPort, what: "etcd peer" },
  ];
  for (const c of layout.cells) {
    out.push(
      { port: c.orchPort, what: `orch ${c.name}` },
      { port: c.gatewayPort, what: `gateway ${c.name}` },
      { port: c.gatewayHttpPort, what: `gateway ${c.name} http` },
    );
  }
  for (const i of layout.instances) {
    out.push(
      { port: i.poolerPort, what: `pooler ${i.alias}` },
      { port: i.poolerHttpPort, what: `pooler ${i.alias} http` },
      { port: i.pgctldPort, what: `pgctld ${i.alias}` },
      { port: i.pgPort, what: `postgres ${i.alias}` },
    );
  }
  return out;
}
