/**
 * From the command's options to the cluster's plan: the cluster file (or the default one), the
 * cell names and the port layout. `up` builds it to validate before starting anything; the
 * supervisor builds it again from the same options.
 *
 * @module
 */

import {
  ClusterConfigError,
  type ClusterFile,
  flagsClusterFile,
  loadClusterFile,
} from "./config.ts";
import { type ClusterLayout, defaultCellNames, planLayout } from "./layout.ts";
import type { ClusterOptions } from "./state.ts";

/** The cluster to run. */
export interface ClusterPlan {
  /** Options it was built from (with `cells` the number of cells). */
  options: ClusterOptions;
  /** The cluster file (or the default one). */
  file: ClusterFile;
  /** Cell names. */
  cells: string[];
  /** Ports and instances. */
  layout: ClusterLayout;
  /** Gateway authentication: SCRAM when the file has users, trust otherwise. */
  auth: "trust" | "scram-sha-256";
}

/** Options as given on the command line: any of them may be absent. */
export interface PlanInput {
  /** `--replicas`. */
  replicas?: number | undefined;
  /** `--cells`. */
  cells?: number | undefined;
  /** `--base-port`. */
  basePort?: number | undefined;
  /** `--config` (absolute path). */
  config?: string | undefined;
  /** `--shards`: shards of the default keyspace `app` (not with `--config`). */
  shards?: number | undefined;
  /** `--vschema` (absolute path): the vschema of the default keyspace `app`. */
  vschema?: string | undefined;
}

/** Defaults of the options. */
export const DEFAULT_OPTIONS = { replicas: 2, cells: 1, basePort: 15000 } as const;

/**
 * Builds the plan. Throws `ClusterConfigError` or `LayoutError` (exit 2) for a bad file, bad
 * counts, or a base port out of range.
 */
export async function buildPlan(input: PlanInput): Promise<ClusterPlan> {
  const replicas = input.replicas ?? DEFAULT_OPTIONS.replicas;
  const basePort = input.basePort ?? DEFAULT_OPTIONS.basePort;
  if (input.config !== undefined && input.shards !== undefined) {
    throw new ClusterConfigError(
      `--shards ${input.shards} contradicts --config: the cluster file lists each keyspace's ` +
        `shards (leave --shards out)`,
    );
  }
  if (input.config !== undefined && input.vschema !== undefined) {
    throw new ClusterConfigError(
      `--vschema contradicts --config: the cluster file names each keyspace's vschema ` +
        `(leave --vschema out)`,
    );
  }
  const file = input.config !== undefined
    ? await loadClusterFile(input.config, replicas)
    : flagsClusterFile(replicas, input.shards, input.vschema);
  let cells: string[];
  if (file.cells !== undefined) {
    if (input.cells !== undefined && input.cells !== file.cells.length) {
      throw new ClusterConfigError(
        `--cells ${input.cells} contradicts the cluster file, which names ${file.cells.length} ` +
          `cell(s): ${file.cells.join(", ")} (leave --cells out)`,
      );
    }
    cells = file.cells;
  } else {
    cells = defaultCellNames(input.cells ?? DEFAULT_OPTIONS.cells);
  }
  const layout = planLayout({
    replicas,
    cells,
    basePort,
    keyspaces: file.keyspaces.map((k) => ({ name: k.name, shards: k.shards })),
  });
  return {
    options: {
      replicas,
      cells: cells.length,
      basePort,
      ...(input.config !== undefined ? { config: input.config } : {}),
      ...(input.shards !== undefined ? { shards: input.shards } : {}),
      ...(input.vschema !== undefined ? { vschema: input.vschema } : {}),
    },
    file,
    cells,
    layout,
    auth: file.users.length > 0 ? "scram-sha-256" : "trust",
  };
}
