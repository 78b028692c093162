import { assertEquals, assertThrows } from "../../shared/testing/assert.ts";
import { parsePgbenchOutput, pgbenchArgs } from "./pgbench.ts";

// Captured from pgbench 15.20.
const PG15_OK = `pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 1
query mode: simple
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 2 s
number of transactions actually processed: 68959
number of failed transactions: 0 (0.000%)
latency average = 0.115 ms
initial connection time = 15.013 ms
tps = 34657.291907 (without initial connection time)
`;

// pgbench 13 and older print two tps lines.
const PG13_OK = `transaction type: <builtin: TPC-B (sort of)>
scaling factor: 10
query mode: prepared
number of clients: 50
number of threads: 2
duration: 30 s
number of transactions actually processed: 123456
latency average = 12.150 ms
tps = 4110.123456 (including connections establishing)
tps = 4115.654321 (excluding connections establishing)
`;

// Captured from pgbench 15.20 against a table whose column was renamed.
const PG15_ABORTED_STDOUT = `pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 1
query mode: prepared
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 2 s
number of transactions actually processed: 0
number of failed transactions: 0 (NaN%)
`;
const PG15_ABORTED_STDERR = `pgbench: error: ERROR:  column "abalance" does not exist
LINE 1: SELECT abalance FROM pgbench_accounts WHERE aid = $1;
               ^
pgbench: error: client 2 script 0 aborted in command 1 query 0: ERROR:  prepared statement "P_0" does not exist
pgbench: error: client 3 script 0 aborted in command 1 query 0: ERROR:  prepared statement "P_0" does not exist
pgbench: error: client 1 script 0 aborted in command 1 query 0: ERROR:  prepared statement "P_0" does not exist
pgbench: error: client 0 script 0 aborted in command 1 query 0: ERROR:  prepared statement "P_0" does not exist
pgbench: error: Run was aborted; the above results are incomplete.
`;

Deno.test("parsePgbenchOutput reads pgbench 15's summary", () => {
  const r = parsePgbenchOutput(PG15_OK);
  assertEquals(r.tps, 34657.291907);
  assertEquals(r.processed, 68959);
  assertEquals(r.failed, 0);
  assertEquals(r.latencyAverageMs, 0.115);
  assertEquals(r.initialConnectionMs, 15.013);
  assertEquals(r.abortedClients, 0);
  assertEquals(r.runAborted, false);
  assertEquals(r.errors, []);
});

Deno.test("parsePgbenchOutput takes the tps excluding connection time from older pgbench", () => {
  const r = parsePgbenchOutput(PG13_OK);
  assertEquals(r.tps, 4115.654321);
  assertEquals(r.processed, 123456);
  assertEquals(r.failed, 0);
  assertEquals(Number.isNaN(r.initialConnectionMs), true);
});

Deno.test("parsePgbenchOutput counts failed transactions", () => {
  const r = parsePgbenchOutput(
    PG15_OK.replace(
      "number of failed transactions: 0 (0.000%)",
      "number of failed " +
        "transactions: 17 (0.025%)",
    ),
  );
  assertEquals(r.failed, 17);
});

Deno.test("parsePgbenchOutput counts aborted clients and keeps distinct errors", () => {
  const r = parsePgbenchOutput(PG15_ABORTED_STDOUT, PG15_ABORTED_STDERR);
  assertEquals(Number.isNaN(r.tps), true);
  assertEquals(r.processed, 0);
  assertEquals(r.abortedClients, 4);
  assertEquals(r.runAborted, true);
  assertEquals(r.errors, [
    'error: ERROR:  column "abalance" does not exist',
    'error: client # script # aborted in command # query #: ERROR:  prepared statement "P_#" ' +
    "does not exist",
    "error: Run was aborted; the above results are incomplete.",
  ]);
});

Deno.test("parsePgbenchOutput keeps a connection failure's address", () => {
  const r = parsePgbenchOutput(
    "",
    'pgbench: error: connection to server at "127.0.0.1", port 12902 failed: Connection ' +
      "refused\npgbench: error: could not create connection for setup\n",
  );
  assertEquals(r.errors, [
    'error: connection to server at "127.0.0.1", port 12902 failed: Connection refused',
    "error: could not create connection for setup",
  ]);
});

Deno.test("parsePgbenchOutput counts clients aborted in the pgbench 14 wording once each", () => {
  const r = parsePgbenchOutput(
    "",
    "client 5 aborted in command 4 (SQL) of script 0; ERROR:  x\n" +
      "client 5 aborted in command 4 (SQL) of script 0; ERROR:  x\n" +
      "client 6 aborted in command 4 (SQL) of script 0; ERROR:  x\n",
  );
  assertEquals(r.abortedClients, 2);
});

Deno.test("pgbenchArgs builds the command line for each workload and mode", () => {
  const base = {
    host: "127.0.0.1",
    port: 12901,
    user: "postgres",
    database: "postgres",
    clients: 50,
    threads: 2,
    durationS: 30,
    logDir: "/tmp/x",
  };
  assertEquals(pgbenchArgs({ ...base, workload: "select-only", protocol: "simple" }), [
    "-S",
    "-n",
    "-c",
    "50",
    "-j",
    "2",
    "-T",
    "30",
    "-M",
    "simple",
    "--log",
    "--log-prefix=/tmp/x/pgbench_log",
    "-h",
    "127.0.0.1",
    "-p",
    "12901",
    "-U",
    "postgres",
    "postgres",
  ]);
  const tpcb = pgbenchArgs({ ...base, workload: "tpcb-like", protocol: "prepared", clients: 1 });
  assertEquals(tpcb.slice(0, 4), ["-b", "tpcb-like", "-n", "-c"]);
  assertEquals(tpcb[tpcb.indexOf("-j") + 1], "1"); // never more threads than clients
  assertEquals(tpcb[tpcb.indexOf("-M") + 1], "prepared");
  assertThrows(
    () => pgbenchArgs({ ...base, workload: "select-only", protocol: "simple", clients: 0 }),
    RangeError,
    "'clients' must be a positive integer: received 0",
  );
});
