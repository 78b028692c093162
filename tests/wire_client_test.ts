/**
 * PgClient and the SCRAM code against a real Postgres, started for this test in a temporary
 * directory on port 12500 (Unix socket in the same directory) and stopped at the end.
 */

import { TesseraError } from "../shared/errors/mod.ts";
import { findPgBindir } from "../shared/pgbin/mod.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "../shared/testing/assert.ts";
import {
  Backend,
  createScramVerifier,
  MessageReader,
  MessageWriter,
  parseScramVerifier,
  PgClient,
  type PgClientOptions,
  ScramClient,
  ScramServer,
  writeAll,
} from "../shared/wire/mod.ts";

const PORT = 12500;
const SUPERUSER_PASSWORD = "super secret";

interface OsUser {
  uid: number;
  gid: number;
}

/** uid/gid of the `postgres` OS user: Postgres refuses to run as root. */
async function postgresOsUser(): Promise<OsUser> {
  const passwd = await Deno.readTextFile("/etc/passwd");
  const line = passwd.split("\n").find((l) => l.startsWith("postgres:"));
  if (line === undefined) {
    throw new Error("running as root needs a 'postgres' OS user to run Postgres");
  }
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}

/** A throwaway Postgres cluster: initdb, pg_ctl start, pg_ctl stop. */
class TestPostgres {
  readonly base: string;
  readonly dataDir: string;
  readonly socketDir: string;
  readonly logFile: string;
  readonly port: number;
  #bindir: string;
  #asUser: OsUser | undefined;
  #started = false;

  private constructor(base: string, port: number, bindir: string, asUser: OsUser | undefined) {
    this.base = base;
    this.dataDir = `${base}/data`;
    this.socketDir = `${base}/sock`;
    this.logFile = `${base}/postgres.log`;
    this.port = port;
    this.#bindir = bindir;
    this.#asUser = asUser;
  }

  static async start(port: number): Promise<TestPostgres> {
    const bindir = findPgBindir();
    const asUser = Deno.uid() === 0 ? await postgresOsUser() : undefined;
    const base = await Deno.makeTempDir({ prefix: "tessera-wire-" });
    const pg = new TestPostgres(base, port, bindir, asUser);
    try {
      await pg.#init();
      await pg.#run("pg_ctl", [
        "-D",
        pg.dataDir,
        "-l",
        pg.logFile,
        "-w",
        "-t",
        "60",
        "-o",
        `-p ${port} -k ${pg.socketDir} -c listen_addresses=127.0.0.1 -c fsync=off -c log_connections=on -c log_min_messages=debug1`,
        "start",
      ]);
      pg.#started = true;
      return pg;
    } catch (err) {
      await pg.stop();
      throw err;
    }
  }

  async #init(): Promise<void> {
    await Deno.mkdir(this.socketDir);
    const pwfile = `${this.base}/pwfile`;
    await Deno.writeTextFile(pwfile, SUPERUSER_PASSWORD + "\n");
    if (this.#asUser !== undefined) {
      const { uid, gid } = this.#asUser;
      // The postgres user must be able to reach the temp dir through its parent.
      const parent = this.base.slice(0, this.base.lastIndexOf("/")) || "/";
      const mode = (await Deno.stat(parent)).mode ?? 0;
      if ((mode & 0o001) === 0) await Deno.chmod(parent, (mode & 0o7777) | 0o001);
      for (const path of [this.base, this.socketDir, pwfile]) await Deno.chown(path, uid, gid);
    }
    await this.#run("initdb", [
      "-D",
      this.dataDir,
      "-U",
      "postgres",
      `--pwfile=${pwfile}`,
      "-A",
      "scram-sha-256",
      "--auth-local=trust",
      "-E",
      "UTF8",
      "--locale=C",
      "--no-sync",
    ]);
    // One rule per password method, so each client path is exercised for real.
    await Deno.writeTextFile(
      `${this.dataDir}/pg_hba.conf`,
      [
        "local all all trust",
        "host all md5_user 127.0.0.1/32 md5",
        "host all clear_user 127.0.0.1/32 password",
        "host all all 127.0.0.1/32 scram-sha-256",
        "",
      ].join("\n"),
    );
  }

  async #run(program: string, args: string[]): Promise<void> {
    const options: Deno.CommandOptions = { args, stdin: "null", stdout: "piped", stderr: "piped" };
    if (this.#asUser !== undefined) {
      options.uid = this.#asUser.uid;
      options.gid = this.#asUser.gid;
    }
    const out = await new Deno.Command(`${this.#bindir}/${program}`, options).output();
    if (!out.success) {
      const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
      throw new Error(`${program} failed (exit ${out.code}): ${text}`);
    }
  }

  /** The server log so far. */
  async log(): Promise<string> {
    try {
      return await Deno.readTextFile(this.logFile);
    } catch {
      return "";
    }
  }

  /** Stops Postgres (if started) and removes the directory. */
  async stop(): Promise<void> {
    try {
      if (this.#started) {
        this.#started = false;
        await this.#run("pg_ctl", ["-D", this.dataDir, "-m", "immediate", "-w", "stop"]);
      }
    } finally {
      await Deno.remove(this.base, { recursive: true });
    }
  }
}

Deno.test("PgClient against a real Postgres", async (t) => {
  const pg = await TestPostgres.start(PORT);
  const socket: PgClientOptions = {
    socketDir: pg.socketDir,
    port: PORT,
    user: "postgres",
    database: "postgres",
  };
  const tcp = (user: string, password?: string): PgClientOptions => ({
    host: "127.0.0.1",
    port: PORT,
    user,
    database: "postgres",
    ...(password === undefined ? {} : { password }),
  });
  const clients: PgClient[] = [];
  const connect = async (options: PgClientOptions) => {
    const c = await PgClient.connect(options);
    clients.push(c);
    return c;
  };
  try {
    const admin = await connect({ ...socket, applicationName: "wire-test-admin" });

    await t.step("trust over the Unix socket; startup parameters and key data", async () => {
      const [r] = await admin.query(
        "select pg_is_in_recovery(), version(), current_setting('application_name')",
      );
      assertEquals(r!.fields, ["pg_is_in_recovery", "version", "current_setting"]);
      assertEquals(r!.rows[0]![0], "f");
      assertMatch(r!.rows[0]![1]!, /^PostgreSQL \d+/);
      assertEquals(r!.rows[0]![2], "wire-test-admin");
      assertEquals(r!.command, "SELECT 1");
      assertEquals(admin.parameters.get("client_encoding"), "UTF8");
      assertMatch(admin.parameters.get("server_version") ?? "", /^\d+/);
      const [pid] = await admin.query("select pg_backend_pid()");
      assertEquals(pid!.rows[0]![0], String(admin.processId));
    });

    await admin.query(`
      set password_encryption = 'md5';
      create role md5_user login password 'md5 pw';
      reset password_encryption;
      create role clear_user login password 'clear pw';
    `);

    await t.step("SCRAM-SHA-256 over TCP with the right password", async () => {
      const c = await connect(tcp("postgres", SUPERUSER_PASSWORD));
      const [r] = await c.query("select current_user, inet_server_port()");
      assertEquals(r!.rows, [["postgres", String(PORT)]]);
      await c.close();
      assertStringIncludes(await pg.log(), 'identity="postgres" method=scram-sha-256');
    });

    await t.step("wrong password → TesseraError 28P01", async () => {
      const err = await assertRejects(
        () => PgClient.connect(tcp("postgres", "not the password")),
        TesseraError,
        "password authentication failed",
      );
      assertEquals(err.code, "28P01");
      assertEquals(err.severity, "FATAL");
      const none = await assertRejects(() => PgClient.connect(tcp("postgres")), TesseraError);
      assertEquals(none.code, "28P01");
    });

    await t.step("MD5 and cleartext password methods", async () => {
      const md5 = await connect(tcp("md5_user", "md5 pw"));
      assertEquals((await md5.query("select current_user"))[0]!.rows, [["md5_user"]]);
      const clear = await connect(tcp("clear_user", "clear pw"));
      assertEquals((await clear.query("select current_user"))[0]!.rows, [["clear_user"]]);
      const log = await pg.log();
      assertStringIncludes(log, 'identity="md5_user" method=md5');
      assertStringIncludes(log, 'identity="clear_user" method=password');
      const bad = await assertRejects(
        () => PgClient.connect(tcp("md5_user", "nope")),
        TesseraError,
      );
      assertEquals(bad.code, "28P01");
    });

    await t.step("an unknown database is the server's 3D000", async () => {
      const err = await assertRejects(
        () => PgClient.connect({ ...socket, database: "no_such_db" }),
        TesseraError,
        "no_such_db",
      );
      assertEquals(err.code, "3D000");
    });

    await t.step("a syntax error → 42601, and the connection still works", async () => {
      const err = await assertRejects(() => admin.query("selec 1"), TesseraError, "syntax error");
      assertEquals(err.code, "42601");
      assertEquals(admin.closed, false);
      assertEquals((await admin.query("select 41 + 1 as answer"))[0]!.rows, [["42"]]);
    });

    await t.step("server errors keep their detail and hint", async () => {
      await admin.query("create temp table uniq (id int primary key); insert into uniq values (1)");
      const dup = await assertRejects(
        () => admin.query("insert into uniq values (1)"),
        TesseraError,
      );
      assertEquals(dup.code, "23505");
      assertEquals(dup.detail, "Key (id)=(1) already exists.");
      const fn = await assertRejects(() => admin.query("select no_such_fn(1)"), TesseraError);
      assertEquals(fn.code, "42883");
      assertStringIncludes(fn.hint ?? "", "No function matches");
    });

    await t.step("multiple statements give one result each, in order", async () => {
      const results = await admin.query(
        "create temp table multi (a int, b text); insert into multi values (1, 'x'), (2, null);" +
          "select a, b from multi order by a; select 'é' as e; update multi set b = 'y' where a = 2",
      );
      assertEquals(results.map((r) => r.command), [
        "CREATE TABLE",
        "INSERT 0 2",
        "SELECT 2",
        "SELECT 1",
        "UPDATE 1",
      ]);
      assertEquals(results[0], { rows: [], fields: [], command: "CREATE TABLE" });
      assertEquals(results[2]!.fields, ["a", "b"]);
      assertEquals(results[2]!.rows, [["1", "x"], ["2", null]]);
      assertEquals(results[3]!.rows, [["é"]]);
      assertEquals(await admin.query(""), []);
      assertEquals(await admin.query(";"), []);
    });

    await t.step("NULLs, empty strings and many rows", async () => {
      const [r] = await admin.query("select null::text as n, '' as e, 'null' as s");
      assertEquals(r!.rows, [[null, "", "null"]]);
      const [many] = await admin.query("select g, repeat('x', g) from generate_series(1, 3000) g");
      assertEquals(many!.rows.length, 3000);
      assertEquals(many!.rows[2999], ["3000", "x".repeat(3000)]);
    });

    await t.step("an error part way through a multi-statement query", async () => {
      const err = await assertRejects(
        () => admin.query("select 1; select no_such_column; select 3"),
        TesseraError,
        "no_such_column",
      );
      assertEquals(err.code, "42703");
      assertEquals(admin.transactionStatus, "I");
      assertEquals((await admin.query("select 4"))[0]!.rows, [["4"]]);
    });

    await t.step("transaction status follows BEGIN, a failure and ROLLBACK", async () => {
      await admin.query("begin");
      assertEquals(admin.transactionStatus, "T");
      await assertRejects(() => admin.query("select 1/0"), TesseraError, "division by zero");
      assertEquals(admin.transactionStatus, "E");
      const blocked = await assertRejects(() => admin.query("select 1"), TesseraError);
      assertEquals(blocked.code, "25P02");
      await admin.query("rollback");
      assertEquals(admin.transactionStatus, "I");
    });

    await t.step("notices reach onNotice; concurrent calls are queued", async () => {
      const notices: TesseraError[] = [];
      const c = await connect({ ...socket, onNotice: (n) => notices.push(n) });
      await c.query("do $$ begin raise notice 'hello %', 42; end $$");
      assertEquals(notices.map((n) => [n.severity, n.code, n.message]), [[
        "NOTICE",
        "00000",
        "hello 42",
      ]]);
      const [a, b] = await Promise.all([c.query("select 'a'"), c.query("select 'b'")]);
      assertEquals([a[0]!.rows, b[0]!.rows], [[["a"]], [["b"]]]);
    });

    await t.step("cancel() stops select pg_sleep(10) with 57014", async () => {
      const c = await connect(socket);
      const started = Date.now();
      const running = c.query("select pg_sleep(10)");
      await new Promise((r) => setTimeout(r, 300));
      await c.cancel();
      const err = await assertRejects(() => running, TesseraError, "canceling statement");
      assertEquals(err.code, "57014");
      assert(Date.now() - started < 8000, "the query ended long before its 10 seconds");
      assertEquals((await c.query("select 'still usable'"))[0]!.rows, [["still usable"]]);
      // Cancel over TCP as well.
      const t2 = await connect(tcp("postgres", SUPERUSER_PASSWORD));
      const running2 = t2.query("select pg_sleep(10)");
      await new Promise((r) => setTimeout(r, 300));
      await t2.cancel();
      assertEquals((await assertRejects(() => running2, TesseraError)).code, "57014");
    });

    await t.step("a FATAL error closes the client", async () => {
      const c = await connect(socket);
      const err = await assertRejects(
        () => c.query("select pg_terminate_backend(pg_backend_pid())"),
        TesseraError,
      );
      assertEquals(err.code, "57P01");
      assertEquals(c.closed, true);
      assertEquals((await assertRejects(() => c.query("select 1"), TesseraError)).code, "08006");
    });

    await t.step("verifiers interoperate with Postgres both ways", async () => {
      // Ours, stored by Postgres as is, lets the user log in.
      const verifier = await createScramVerifier("tess pw");
      await admin.query(`create role tess_user login password '${verifier}'`);
      const [stored] = await admin.query(
        "select rolpassword from pg_authid where rolname = 'tess_user'",
      );
      assertEquals(stored!.rows[0]![0], verifier);
      const c = await connect(tcp("tess_user", "tess pw"));
      assertEquals((await c.query("select current_user"))[0]!.rows, [["tess_user"]]);
      // Postgres's, read from pg_authid, verifies our client in our server.
      const [pgv] = await admin.query(
        "select rolpassword from pg_authid where rolname = 'postgres'",
      );
      const server = new ScramServer(parseScramVerifier(pgv!.rows[0]![0]!), {
        username: "postgres",
      });
      const client = new ScramClient(SUPERUSER_PASSWORD);
      const first = await server.serverFirstMessage(client.clientFirstMessage());
      client.verifyServerFinal(
        await server.serverFinalMessage(await client.clientFinalMessage(first)),
      );
      assert(client.verified && server.verified);
    });

    await t.step("close() sends Terminate: the server sees no abrupt disconnects", async () => {
      for (const c of clients.splice(0)) await c.close();
      const eofs = (log: string) => log.split("unexpected EOF on client connection").length - 1;
      assertEquals(eofs(await pg.log()), 0);
      // Control: a session that just drops its socket is reported (at debug1) by the server.
      const conn = await Deno.connect({
        transport: "unix",
        path: `${pg.socketDir}/.s.PGSQL.${PORT}`,
      });
      await writeAll(conn, new MessageWriter().startupMessage({ user: "postgres" }).take());
      const reader = new MessageReader(conn);
      for (let m = await reader.next(); m !== null && m.type !== Backend.readyForQuery;) {
        m = await reader.next();
      }
      conn.close();
      const deadline = Date.now() + 5000;
      while (eofs(await pg.log()) === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assertEquals(eofs(await pg.log()), 1);
    });
  } finally {
    for (const c of clients) await c.close();
    await pg.stop();
  }
});
