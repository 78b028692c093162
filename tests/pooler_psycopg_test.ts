/**
 * End to end: psycopg2 (Python's libpq driver) through the pooler, with 3 backends shared by the
 * script's connections and 12 more that keep borrowing them: named (server-side) cursors, a WITH
 * HOLD cursor, executemany and execute_values, COPY both ways, isolation level and read-only
 * sessions, settings under autocommit and SET LOCAL, savepoints, LISTEN/NOTIFY, two-phase commit
 * (tpc_begin / tpc_prepare, then COMMIT PREPARED from another connection, and a rollback), a
 * temporary table and settings made inside a DO block and a procedure, errors, notices,
 * pg_backend_pid() and cancel, a large result, SQL PREPARE, advisory locks, large objects and an
 * asynchronous connection. The cases are in `tests/testdata/psycopg2_pooler.py`. Ports
 * 12712-12713.
 */
import { type PoolerServer, startPooler } from "../pooler/mod.ts";
import { assertEquals } from "../shared/testing/assert.ts";
import { startTestPostgres } from "./support/postgres.ts";
import { fastIo } from "./support/fast_io.ts";

const PG_PORT = 12712;
const POOLER_PORT = 12713;
const PYTHON = "/usr/bin/python3";
const SCRIPT = new URL("./testdata/psycopg2_pooler.py", import.meta.url).pathname;

/** The script's cases, in the order it runs them. */
const CASES = [
  "named_cursor",
  "hold_cursor",
  "executemany_and_batch",
  "copy_expert",
  "isolation_and_readonly",
  "autocommit_toggle_settings",
  "savepoints",
  "notify",
  "two_phase",
  "do_block_state",
  "call_procedure",
  "errors_keep_session",
  "notices",
  "backend_pid_cancel",
  "large_result",
  "prepare_sql",
  "advisory_lock",
  "lobject",
  "async_conn",
];

async function hasPsycopg2(): Promise<boolean> {
  try {
    const probe = await new Deno.Command(PYTHON, {
      args: ["-c", "import psycopg2"],
      stdout: "null",
      stderr: "null",
    }).output();
    return probe.success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "pooler with psycopg2: cursors, COPY, two-phase commit, settings, LISTEN, cancel, " +
    "large objects",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    if (!(await hasPsycopg2())) {
      // CI installs it (python3-psycopg2); a developer machine may not have it.
      console.warn("psycopg2 is not installed: case skipped");
      return;
    }
    const db = await startTestPostgres({
      port: PG_PORT,
      settings: { max_prepared_transactions: "4" },
    });
    let pooler: PoolerServer | undefined;
    try {
      pooler = await startPooler({
        ...fastIo(),
        listen: [`127.0.0.1:${POOLER_PORT}`],
        postgres: { socketDir: db.socketDir, port: PG_PORT },
        poolSize: 3,
        queueTimeoutMs: 60_000,
      });
      const out = await new Deno.Command(PYTHON, {
        args: [SCRIPT, String(POOLER_PORT)],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      const stderr = new TextDecoder().decode(out.stderr);
      assertEquals(out.code, 0, stderr);
      const lines = stdout.trim().split("\n").map((l) => l.trim());
      // Every case ran and passed; a failure shows its error in the diff.
      assertEquals(lines, CASES.map((c) => `${c} ok`), stderr);
      assertEquals(stderr, "");
      assertEquals(pooler.stats().pinnedClients, 0);
    } finally {
      await pooler?.shutdown();
      await db.cleanup();
    }
  },
});
