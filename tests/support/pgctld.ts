/**
 * pgctld processes for end-to-end tests: started as users start them (`deno task pgctld`) with a
 * replication password file, driven over Connect, and stopped so that no Postgres outlives a test.
 *
 * @module
 */

import type { Client } from "@connectrpc/connect";
import pg from "pg";
import { PgctldService, StopMode } from "../../proto/gen/tessera/pgctld/v1/pgctld_pb.ts";
import { TesseraError } from "../../shared/errors/mod.ts";
import { findPgBindir } from "../../shared/pgbin/mod.ts";
import { assertEquals, assertRejects } from "../../shared/testing/assert.ts";
import { createRpcClient } from "../../shared/rpc/mod.ts";
import { startTask, type TestProcess, waitFor } from "./process.ts";

/** A pgctld Connect client. */
export type Pgctld = Client<typeof PgctldService>;

/** One pgctld process and its instance. */
export interface Node {
  /** Alias, also the folder under the test's base. */
  name: string;
  /** Connect client. */
  rpc: Pgctld;
  /** The process. */
  proc: TestProcess;
  /** Data directory. */
  dataDir: string;
  /** Unix socket folder. */
  socketDir: string;
  /** Postgres port. */
  pgPort: number;
  /** pgctld's log. */
  logFile: string;
}

/** Starts pgctld `name` under `base` and waits until it answers. */
export async function startNode(
  base: string,
  name: string,
  rpcPort: number,
  pgPort: number,
  passwordFile: string,
): Promise<Node> {
  const dataDir = `${base}/${name}/data`;
  const logFile = `${base}/${name}-pgctld.log`;
  const proc = await startTask("pgctld", [
    "--data-dir",
    dataDir,
    "--port",
    String(rpcPort),
    "--pg-port",
    String(pgPort),
    "--pg-listen-address",
    "127.0.0.1",
    "--replication-password-file",
    passwordFile,
    "--alias",
    name,
  ], logFile);
  const rpc = createRpcClient(PgctldService, `http://127.0.0.1:${rpcPort}`, { timeoutMs: 120_000 });
  await waitFor(`pgctld ${name}`, async () => (await rpc.status({})).status);
  return { name, rpc, proc, dataDir, socketDir: `${base}/${name}/run`, pgPort, logFile };
}

/** Stops `node`'s Postgres and pgctld; whatever happened before, no Postgres is left running. */
export async function stopNode(node: Node | undefined): Promise<void> {
  if (node === undefined) return;
  const s = await node.rpc.status({}).then((r) => r.status).catch(() => undefined);
  if (s?.running) await node.rpc.stop({ mode: StopMode.IMMEDIATE }).catch(() => undefined);
  await node.proc.stop();
  const pgCtl = `${findPgBindir()}/pg_ctl`;
  const args = ["stop", "-D", node.dataDir, "-m", "immediate", "-s"];
  const cmd = Deno.uid() === 0
    ? ["runuser", "-u", "postgres", "--", pgCtl, ...args]
    : [pgCtl, ...args];
  await new Deno.Command(cmd[0]!, { args: cmd.slice(1), stdout: "null", stderr: "null" })
    .output().catch(() => undefined);
}

/** node-postgres settings for `node`'s Postgres over its Unix socket as `postgres`. */
export function connect(node: Node): pg.ClientConfig {
  return { host: node.socketDir, port: node.pgPort, user: "postgres", database: "postgres" };
}

/** Runs `sql` on `node`'s Postgres in a fresh connection and returns its rows. */
export async function query(node: Node, sql: string): Promise<Record<string, unknown>[]> {
  const client = new pg.Client(connect(node));
  await client.connect();
  try {
    return (await client.query(sql)).rows;
  } finally {
    await client.end();
  }
}

/** The ids in table `t` on `node`, in order. */
export async function ids(node: Node): Promise<number[]> {
  return (await query(node, "select id from t order by id")).map((r) => Number(r.id));
}

/** Asserts that `promise` rejects with a TesseraError of SQLSTATE `sqlstate`, and returns it. */
export async function expectCode(
  promise: Promise<unknown>,
  sqlstate: string,
): Promise<TesseraError> {
  const err = await assertRejects(() => promise, TesseraError);
  assertEquals(err.code, sqlstate, err.message);
  return err;
}
