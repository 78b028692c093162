import { assertEquals } from "../../shared/testing/assert.ts";
import { basebackupError, basebackupFailureCode } from "./basebackup.ts";

Deno.test("basebackupFailureCode tells auth failures from unreachable primaries", () => {
  const cases: [string, string][] = [
    [
      'pg_basebackup: error: connection to server at "10.0.0.5", port 5432 failed: FATAL:  ' +
      'password authentication failed for user "tessera_repl"',
      "28P01",
    ],
    [
      'pg_basebackup: error: connection to server at "10.0.0.5", port 5432 failed: FATAL:  ' +
      'no pg_hba.conf entry for replication connection from host "10.0.0.9"',
      "28000",
    ],
    [
      'pg_basebackup: error: connection to server at "127.0.0.1", port 1 failed: ' +
      "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
      "08006",
    ],
    ['pg_basebackup: error: could not translate host name "nope" to address', "08006"],
    ['pg_basebackup: error: could not create directory "/x": Permission denied', "58000"],
  ];
  for (const [stderr, code] of cases) assertEquals(basebackupFailureCode(stderr), code, stderr);
});

Deno.test("basebackupError keeps the tail of stderr and names a timeout", () => {
  const source = { host: "db1", port: 5432, applicationName: "" };
  const lines = Array.from({ length: 30 }, (_, i) => `line ${i}`).join("\n");
  const err = basebackupError(source, { code: 1, stderr: lines, timedOut: false });
  assertEquals(err.code, "58000");
  assertEquals(err.detail?.split("\n").length, 15);
  assertEquals(err.detail?.endsWith("line 29"), true);
  const slow = basebackupError(source, { code: 143, stderr: "", timedOut: true });
  assertEquals(slow.message, "base backup from db1:5432 did not finish in time");
});
