import { assertEquals, assertStringIncludes, assertThrows } from "../../shared/testing/assert.ts";
import { renderPgbouncerConfig } from "./pgbouncer.ts";

const config = {
  listenAddr: "127.0.0.1",
  listenPort: 12901,
  pgSocketDir: "/tmp/pg/run",
  pgPort: 12900,
  poolSize: 20,
  maxClientConn: 10100,
  dir: "/tmp/bouncer",
};

function settings(ini: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of ini.split("\n")) {
    const match = /^([^=\s[]+)\s*=\s*(.*)$/.exec(line);
    if (match) out[match[1]!] = match[2]!;
  }
  return out;
}

Deno.test("renderPgbouncerConfig pools every database in transaction mode over the socket", () => {
  const { ini, userlist } = renderPgbouncerConfig(config);
  const s = settings(ini);
  assertEquals(s["*"], "host=/tmp/pg/run port=12900");
  assertEquals(s.pool_mode, "transaction");
  assertEquals(s.default_pool_size, "20");
  assertEquals(s.max_client_conn, "10100");
  assertEquals(s.listen_addr, "127.0.0.1");
  assertEquals(s.listen_port, "12901");
  assertEquals(s.auth_type, "trust");
  assertEquals(s.auth_file, "/tmp/bouncer/userlist.txt");
  assertEquals(s.logfile, "/tmp/bouncer/pgbouncer.log");
  assertEquals(s.pidfile, "/tmp/bouncer/pgbouncer.pid");
  assertEquals(s.unix_socket_dir, "");
  assertEquals(s.reserve_pool_size, "0");
  assertEquals(userlist, '"postgres" ""\n');
  assertStringIncludes(ini, "[databases]\n");
  assertStringIncludes(ini, "[pgbouncer]\n");
});

Deno.test("renderPgbouncerConfig honours user and pool mode and rejects a bad pool size", () => {
  const { ini, userlist } = renderPgbouncerConfig({ ...config, user: "app", poolMode: "session" });
  assertEquals(settings(ini).pool_mode, "session");
  assertEquals(settings(ini).admin_users, "app");
  assertEquals(userlist, '"app" ""\n');
  assertThrows(
    () => renderPgbouncerConfig({ ...config, poolSize: 0 }),
    RangeError,
    "'poolSize' must be a positive integer: received 0",
  );
});
