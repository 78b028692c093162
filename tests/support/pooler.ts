/**
 * An in-process pooler in front of a fresh test Postgres, for end-to-end pooler tests.
 *
 * @module
 */

import { type PoolerOptions, type PoolerServer, startPooler } from "../../pooler/mod.ts";
import { startTestPostgres, type TestPostgres } from "./postgres.ts";
import { fastIo } from "./fast_io.ts";

/** Ports of {@linkcode withPooler}. */
export interface PoolerPorts {
  /** Postgres's port (its Unix socket is what the pooler uses). */
  postgres: number;
  /** The pooler's TCP port on 127.0.0.1. */
  pooler: number;
}

/**
 * Starts Postgres and a pooler (with the fast network path) with `options`, runs `fn`, then shuts
 * both down, whatever `fn` did.
 */
export async function withPooler(
  ports: PoolerPorts,
  options: Omit<PoolerOptions, "postgres" | "listen">,
  fn: (pooler: PoolerServer, db: TestPostgres) => Promise<void>,
): Promise<void> {
  const db = await startTestPostgres({ port: ports.postgres });
  let pooler: PoolerServer | undefined;
  try {
    pooler = await startPooler({
      ...fastIo(),
      listen: [`127.0.0.1:${ports.pooler}`],
      postgres: { socketDir: db.socketDir, port: ports.postgres },
      ...options,
    });
    await fn(pooler, db);
  } finally {
    await pooler?.shutdown();
    await db.cleanup();
  }
}
