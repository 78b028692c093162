import { assert, assertEquals, assertMatch } from "../../shared/testing/assert.ts";
import { parseConninfo } from "./conninfo.ts";
import {
  checkpointError,
  rewindChangedTarget,
  rewindError,
  rewindNotNeeded,
  rewindSourceConninfo,
} from "./rewind.ts";

const SOURCE = { host: "10.0.0.5", port: 5433, applicationName: "r1" };

Deno.test("rewindSourceConninfo is a normal login to database postgres with the passfile", () => {
  const params = parseConninfo(rewindSourceConninfo(SOURCE, "tessera_repl", "/run/p q.pgpass"));
  assertEquals(params.host, "10.0.0.5");
  assertEquals(params.port, "5433");
  assertEquals(params.user, "tessera_repl");
  assertEquals(params.dbname, "postgres");
  assertEquals(params.passfile, "/run/p q.pgpass");
  assertEquals(params.replication, undefined);
  assertEquals(parseConninfo(rewindSourceConninfo(SOURCE, "u", undefined)).passfile, undefined);
});

Deno.test("rewindError tells unreachable sources and untouched data directories apart", () => {
  const unreachable = rewindError(SOURCE, {
    code: 1,
    timedOut: false,
    stderr: 'pg_rewind: error: connection to server at "10.0.0.5", port 5433 failed: ' +
      "Connection refused\n",
  });
  assertEquals(unreachable.code, "08006");
  assertMatch(unreachable.hint ?? "", /left as it was/);

  const walGone = rewindError(SOURCE, {
    code: 1,
    timedOut: false,
    stderr: "pg_rewind: connected to server\n" +
      "pg_rewind: servers diverged at WAL location 0/30042B8 on timeline 1\n" +
      'pg_rewind: error: could not open file "/d/pg_wal/000000010000000000000002": ' +
      "No such file or directory\n",
  });
  assertEquals(walGone.code, "58000");
  assertMatch(walGone.detail ?? "", /could not open file/);
  assertMatch(walGone.hint ?? "", /left as it was/);

  const halfway = rewindError(SOURCE, {
    code: 1,
    timedOut: false,
    stderr: "pg_rewind: need to copy 51 MB (total source directory size is 70 MB)\n" +
      "     0/51 MB (0%) copied\r    20/51 MB (39%) copied\n" +
      "pg_rewind: error: could not read file: Input/output error\n",
  });
  assertEquals(halfway.code, "58000");
  assertMatch(halfway.hint ?? "", /cannot be used any more/);
  assertMatch(halfway.detail ?? "", /^ {4}20\/51 MB \(39%\) copied$/m);
  assert(!(halfway.detail ?? "").includes("\r"), "progress redraws are collapsed");
});

Deno.test("rewindChangedTarget and rewindNotNeeded read pg_rewind's progress output", () => {
  assertEquals(rewindChangedTarget("pg_rewind: reading target file list\n"), false);
  assertEquals(rewindChangedTarget("pg_rewind: creating backup label and updating control"), true);
  assertEquals(rewindNotNeeded("pg_rewind: no rewind required\n"), true);
  assertEquals(rewindNotNeeded("pg_rewind: Done!\n"), false);
});

Deno.test("checkpointError names the missing pg_checkpoint grant", () => {
  const err = checkpointError(SOURCE, "tessera_repl", {
    code: 1,
    timedOut: false,
    stderr: "psql:<stdin>:1: ERROR:  must be superuser or have privileges of pg_checkpoint to do " +
      "CHECKPOINT\n",
  });
  assertEquals(err.code, "42501");
  assertMatch(err.hint ?? "", /GRANT pg_checkpoint TO "tessera_repl"/);
});
