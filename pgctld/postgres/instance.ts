/**
 * One Postgres instance owned by pgctld: init, start, stop, restart, reload and status, through
 * Postgres's own `initdb`, `pg_ctl` and `pg_controldata`. When pgctld runs as root, every one of
 * them runs as an unprivileged OS user, who owns the instance's directories.
 *
 * @module
 */

import { dirname } from "node:path";
import { SqlState, TesseraError } from "../../shared/errors/mod.ts";
import type { Logger } from "../../shared/log/mod.ts";
import { pgVersion } from "../../shared/pgbin/mod.ts";
import { createScramVerifier } from "../../shared/wire/mod.ts";
import { basebackupArgs, basebackupError } from "./basebackup.ts";
import {
  checkpointError,
  INSTANCE_CONFIG_FILES,
  rewindArgs,
  rewindChangedTarget,
  rewindError,
  rewindNotNeeded,
  rewindSourceConninfo,
} from "./rewind.ts";
import {
  ensureIncludeLine,
  readConf,
  removeSettingLines,
  RESERVED_SETTINGS,
  validateSettingName,
  writeConf,
} from "./conf.ts";
import {
  primaryConninfo,
  renderPgpass,
  type ReplicationSource,
  sourceFromConninfo,
} from "./conninfo.ts";
import { assertTraversable, makeOwnedDir, type OsUser } from "./os_user.ts";
import {
  checkSetting,
  loadSettingsCatalog,
  needsRestart,
  type SettingsCatalog,
} from "./settings_catalog.ts";

/** How clients authenticate to a new cluster. */
export type AuthMethod = "trust" | "scram-sha-256" | "local-trust-tcp-scram";

/** pg_ctl's shutdown modes. */
export type StopMode = "smart" | "fast" | "immediate";

/** Where and how the instance lives. */
export interface InstanceOptions {
  /** Folder of the Postgres binaries. */
  bindir: string;
  /** Data directory (PGDATA). */
  dataDir: string;
  /** Folder of Postgres's Unix socket (its run directory). */
  socketDir: string;
  /** File that Postgres's server log is written to. */
  logFile: string;
  /** Port of the Unix socket and, when listening on TCP, of the TCP listener. */
  port: number;
  /** TCP addresses (Postgres's `listen_addresses`); empty for the Unix socket only. */
  listenAddress: string;
  /** OS user that runs Postgres; required when pgctld runs as root. */
  osUser?: OsUser | undefined;
  /** Role that replicas stream as; `tessera_repl` when not given. */
  replicationUser?: string | undefined;
  /**
   * The replication role's password. When given, InitDataDir creates the role and replicas
   * authenticate with it; when not, no role is created and replicas connect without a password.
   */
  replicationPassword?: string | undefined;
  /** Logger for lifecycle events. */
  logger: Logger;
}

/** The state of the instance, as reported by Status. */
export interface InstanceStatus {
  /** Whether the data directory holds a cluster. */
  initialized: boolean;
  /** Whether the postmaster is running. */
  running: boolean;
  /** Postmaster pid; 0 when not running. */
  pid: number;
  /** Port of the instance. */
  port: number;
  /** Folder of the Unix socket. */
  socketDir: string;
  /** Data directory. */
  dataDir: string;
  /** Version of the server binaries, e.g. `15.18`. */
  serverVersion: string;
  /**
   * Running: whether the server is a standby (control file state "in archive recovery").
   * Stopped: whether it will start as one (a standby.signal or recovery.signal file exists).
   */
  inRecovery: boolean;
  /** TCP listen addresses; empty when Unix socket only. */
  listenAddress: string;
  /** Whether standby.signal exists: the instance is, or will start as, a streaming replica. */
  standby: boolean;
  /** Host of the primary in the managed `primary_conninfo`; empty when none. */
  primaryHost: string;
  /** Port of the primary in the managed `primary_conninfo`; 0 when none. */
  primaryPort: number;
  /** `application_name` in the managed `primary_conninfo`; empty when none. */
  applicationName: string;
  /**
   * pg_controldata's "Latest checkpoint's TimeLineID"; 0 when not initialised. A just-promoted
   * server reports its new timeline only after its first checkpoint.
   */
  timeline: number;
  /** Whether the control file says "shut down" or "shut down in recovery". */
  cleanShutdown: boolean;
}

/** Options of {@linkcode PostgresInstance.initReplica}. */
export interface InitReplicaOptions {
  /** The primary to copy and stream from. */
  source: ReplicationSource;
  /** Stop a running Postgres and remove the data directory's content first. */
  replaceExisting?: boolean | undefined;
  /** Seconds to wait for the base backup; 3600 when 0 or not given. */
  waitSeconds?: number | undefined;
}

/** Options of {@linkcode PostgresInstance.rewind}. */
export interface RewindOptions {
  /** The new primary to rewind to and stream from. */
  source: ReplicationSource;
  /** Seconds to wait for pg_rewind; 3600 when 0 or not given. */
  waitSeconds?: number | undefined;
}

/** Options of {@linkcode PostgresInstance.init}. */
export interface InitOptions {
  /** Authentication method; `local-trust-tcp-scram` when not given. */
  auth?: AuthMethod | undefined;
  /** Superuser name; `postgres` when not given. */
  superuser?: string | undefined;
  /** Superuser password; required when auth is `scram-sha-256`. */
  password?: string | undefined;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

interface RunOptions {
  /** Text written to the child's stdin, which is then closed. */
  stdin?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Kill the child after this many milliseconds. */
  timeoutMs?: number;
}

const DEFAULT_WAIT_SECONDS = 60;
const DEFAULT_BASEBACKUP_WAIT_SECONDS = 3600;
const DEFAULT_REPLICATION_USER = "tessera_repl";
const STANDBY_SIGNAL = "standby.signal";
const RECOVERY_SIGNAL = "recovery.signal";
/** Largest `wal_keep_size` Postgres accepts, in MB: keeps every WAL segment. */
const MAX_WAL_KEEP_SIZE_MB = 2147483647;
/** The functions pg_rewind runs on its source (Postgres 15 documentation, pg_rewind, Notes). */
const REWIND_FUNCTIONS = [
  "pg_catalog.pg_ls_dir(text, boolean, boolean)",
  "pg_catalog.pg_stat_file(text, boolean)",
  "pg_catalog.pg_read_binary_file(text)",
  "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
];
const decoder = new TextDecoder();

/** Manages one Postgres instance. Operations are serialised: one runs at a time. */
export class PostgresInstance {
  #opts: InstanceOptions;
  #log: Logger;
  #queue: Promise<unknown> = Promise.resolve();
  #version: string | undefined;
  #catalog: SettingsCatalog | undefined;

  /** Creates the manager; nothing is touched on disk until a method is called. */
  constructor(options: InstanceOptions) {
    this.#opts = options;
    this.#log = options.logger.child({ dataDir: options.dataDir, port: options.port });
  }

  /** The options the instance was created with. */
  get options(): Readonly<InstanceOptions> {
    return this.#opts;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async #run(binary: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
    const user = this.#opts.osUser;
    const env: Record<string, string> = {
      PATH: `${this.#opts.bindir}:/usr/bin:/bin`,
      LC_ALL: "C",
      LANG: "C",
      HOME: user?.home ?? Deno.env.get("HOME") ?? "/",
      ...options.env,
    };
    const timeout = options.timeoutMs !== undefined
      ? AbortSignal.timeout(options.timeoutMs)
      : undefined;
    const command = new Deno.Command(`${this.#opts.bindir}/${binary}`, {
      args,
      cwd: "/",
      clearEnv: true,
      env,
      stdin: options.stdin !== undefined ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
      ...(timeout !== undefined ? { signal: timeout } : {}),
      ...(user !== undefined ? { uid: user.uid, gid: user.gid } : {}),
    });
    const child = command.spawn();
    if (options.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(options.stdin)).catch(() => undefined);
      await writer.close().catch(() => undefined);
    }
    const out = await child.output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
      timedOut: timeout?.aborted ?? false,
    };
  }

  get #replicationUser(): string {
    return this.#opts.replicationUser || DEFAULT_REPLICATION_USER;
  }

  /** Path of the password file for replication connections: beside the socket, not in PGDATA. */
  get #pgpassPath(): string {
    return `${this.#opts.socketDir}/.tessera-repl-${this.#opts.port}.pgpass`;
  }

  /**
   * Writes the replication password file (mode 0600, owned by the OS user) when a password is
   * configured; returns its path, or undefined when there is no password.
   */
  async #writePgpass(): Promise<string | undefined> {
    const o = this.#opts;
    if (o.replicationPassword === undefined) return undefined;
    makeOwnedDir(o.socketDir, 0o755, o.osUser);
    const path = this.#pgpassPath;
    const tmp = `${path}.tmp`;
    await Deno.writeTextFile(tmp, renderPgpass(this.#replicationUser, o.replicationPassword), {
      mode: 0o600,
    });
    await Deno.chmod(tmp, 0o600);
    if (o.osUser !== undefined) await Deno.chown(tmp, o.osUser.uid, o.osUser.gid);
    await Deno.rename(tmp, path);
    return path;
  }

  async #emptyDataDir(): Promise<void> {
    for (const entry of Deno.readDirSync(this.#opts.dataDir)) {
      await Deno.remove(`${this.#opts.dataDir}/${entry.name}`, { recursive: true });
    }
  }

  async #isInRecovery(): Promise<boolean> {
    return (await this.#controlData())["Database cluster state"] === "in archive recovery";
  }

  async #logTail(lines = 15): Promise<string> {
    try {
      const text = await Deno.readTextFile(this.#opts.logFile);
      return text.trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  }

  /** Whether the data directory holds a cluster (has PG_VERSION). */
  async isInitialized(): Promise<boolean> {
    try {
      await Deno.stat(`${this.#opts.dataDir}/PG_VERSION`);
      return true;
    } catch {
      return false;
    }
  }

  async #pid(): Promise<number> {
    if (!(await this.isInitialized())) return 0;
    const res = await this.#run("pg_ctl", ["status", "-D", this.#opts.dataDir]);
    if (res.code !== 0) return 0;
    const match = /PID:\s*(\d+)/.exec(res.stdout);
    return match ? Number(match[1]) : 0;
  }

  /** Version of the server binaries. */
  async version(): Promise<string> {
    this.#version ??= await pgVersion(this.#opts.bindir);
    return this.#version;
  }

  async #settingsCatalog(): Promise<SettingsCatalog> {
    this.#catalog ??= await loadSettingsCatalog(this.#opts.bindir);
    return this.#catalog;
  }

  /** pg_controldata's fields by name; empty when it fails. */
  async #controlData(): Promise<Record<string, string>> {
    const res = await this.#run("pg_controldata", ["-D", this.#opts.dataDir]);
    const out: Record<string, string> = {};
    for (const line of res.stdout.split("\n")) {
      const colon = line.indexOf(":");
      if (colon > 0) out[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
    }
    return out;
  }

  async #exists(path: string): Promise<boolean> {
    try {
      await Deno.stat(path);
      return true;
    } catch {
      return false;
    }
  }

  /** The current state of the instance. */
  status(): Promise<InstanceStatus> {
    return this.#serial(() => this.#status());
  }

  async #status(): Promise<InstanceStatus> {
    const o = this.#opts;
    const initialized = await this.isInitialized();
    const pid = initialized ? await this.#pid() : 0;
    const control = initialized ? await this.#controlData() : {};
    const state = control["Database cluster state"];
    let inRecovery = false;
    if (pid !== 0) {
      inRecovery = state === "in archive recovery";
    } else if (initialized) {
      inRecovery = (await this.#exists(`${o.dataDir}/${STANDBY_SIGNAL}`)) ||
        (await this.#exists(`${o.dataDir}/${RECOVERY_SIGNAL}`));
    }
    const standby = initialized && (await this.#exists(`${o.dataDir}/${STANDBY_SIGNAL}`));
    const source = initialized
      ? sourceFromConninfo((await readConf(o.dataDir)).primary_conninfo)
      : undefined;
    return {
      initialized,
      running: pid !== 0,
      pid,
      port: o.port,
      socketDir: o.socketDir,
      dataDir: o.dataDir,
      serverVersion: await this.version(),
      inRecovery,
      listenAddress: o.listenAddress,
      standby,
      primaryHost: source?.host ?? "",
      primaryPort: source?.port ?? 0,
      applicationName: source?.applicationName ?? "",
      timeline: Number(control["Latest checkpoint's TimeLineID"] ?? 0) || 0,
      cleanShutdown: pid === 0 && (state === "shut down" || state === "shut down in recovery"),
    };
  }

  /** Runs initdb into the data directory, which must not exist or be empty. */
  init(options: InitOptions = {}): Promise<{ dataDir: string; serverVersion: string }> {
    return this.#serial(() => this.#init(options));
  }

  async #init(options: InitOptions): Promise<{ dataDir: string; serverVersion: string }> {
    const o = this.#opts;
    const auth = options.auth ?? "local-trust-tcp-scram";
    const superuser = options.superuser || "postgres";
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(superuser)) {
      throw new TesseraError(
        SqlState.invalidParameterValue,
        `invalid superuser name '${superuser}'`,
      );
    }
    if (auth === "scram-sha-256" && !options.password) {
      throw new TesseraError(
        SqlState.invalidParameterValue,
        "a superuser password is required when authentication is scram-sha-256",
      );
    }
    if (await this.isInitialized()) {
      throw new TesseraError(
        SqlState.duplicateFile,
        `data directory '${o.dataDir}' is already initialized`,
        { hint: "remove it first to create a new cluster" },
      );
    }
    try {
      const entries = [...Deno.readDirSync(o.dataDir)];
      if (entries.length > 0) {
        throw new TesseraError(
          SqlState.objectNotInPrerequisiteState,
          `data directory '${o.dataDir}' is not empty`,
          { detail: `it holds ${entries.slice(0, 5).map((e) => `'${e.name}'`).join(", ")}` },
        );
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    if (o.osUser !== undefined) {
      assertTraversable(o.dataDir, o.osUser);
      assertTraversable(o.socketDir, o.osUser);
      assertTraversable(o.logFile, o.osUser);
    }
    makeOwnedDir(o.dataDir, 0o700, o.osUser);
    makeOwnedDir(o.socketDir, 0o755, o.osUser);
    makeOwnedDir(dirname(o.logFile), 0o755, o.osUser);

    const localAuth = auth === "scram-sha-256" ? "scram-sha-256" : "trust";
    const hostAuth = auth === "trust" ? "trust" : "scram-sha-256";
    const args = [
      "-D",
      o.dataDir,
      "-U",
      superuser,
      `--auth-local=${localAuth}`,
      `--auth-host=${hostAuth}`,
      "--locale=C",
      "--encoding=UTF8",
      "--data-checksums",
    ];
    let pwfile: string | undefined;
    if (options.password) {
      pwfile = `${o.socketDir}/.pgctld-pwfile-${crypto.randomUUID()}`;
      await Deno.writeTextFile(pwfile, options.password + "\n", { mode: 0o600 });
      if (o.osUser !== undefined) await Deno.chown(pwfile, o.osUser.uid, o.osUser.gid);
      args.push(`--pwfile=${pwfile}`);
    }
    let res: RunResult;
    try {
      res = await this.#run("initdb", args);
    } finally {
      if (pwfile !== undefined) await Deno.remove(pwfile).catch(() => undefined);
    }
    if (res.code !== 0) {
      // Leave the directory as we found it: empty, so a corrected retry can run.
      await this.#emptyDataDir();
      throw new TesseraError(SqlState.systemError, "initdb failed", {
        detail: (res.stderr || res.stdout).trim(),
      });
    }
    await ensureIncludeLine(o.dataDir);
    await writeConf(o.dataDir, this.#managedSettings({}), o.osUser);
    if (o.replicationPassword !== undefined) {
      try {
        await this.#createReplicationRole(o.replicationPassword);
      } catch (err) {
        await this.#emptyDataDir();
        throw err;
      }
    }
    this.#log.info("data directory initialized", {
      auth,
      superuser,
      replicationUser: o.replicationPassword !== undefined ? this.#replicationUser : undefined,
    });
    return { dataDir: o.dataDir, serverVersion: await this.version() };
  }

  /**
   * Creates the replication role in the stopped, new cluster through a single-user backend, with
   * the password given as a SCRAM verifier so the plain text reaches neither Postgres nor a log;
   * then lets replicas on any host stream as that role over SCRAM.
   */
  async #createReplicationRole(password: string): Promise<void> {
    const o = this.#opts;
    const user = this.#replicationUser;
    const verifier = await createScramVerifier(password);
    // Besides streaming, the role is pg_rewind's source login: the functions below, by relative
    // path inside the data directory only (no pg_read_server_files), and CHECKPOINT, which a
    // just-promoted source needs before a rewind (pg_checkpoint is new in Postgres 15).
    const major = Number((await this.version()).split(".")[0]);
    const sql = [
      `CREATE ROLE "${user}" WITH LOGIN REPLICATION PASSWORD '${verifier}';`,
      ...REWIND_FUNCTIONS.map((fn) => `GRANT EXECUTE ON FUNCTION ${fn} TO "${user}";`),
      ...(major >= 15 ? [`GRANT pg_checkpoint TO "${user}";`] : []),
    ].join("\n") + "\n";
    const res = await this.#run("postgres", [
      "--single",
      "-D",
      o.dataDir,
      "-c",
      "password_encryption=scram-sha-256",
      "-c",
      "log_statement=none",
      "postgres",
    ], { stdin: sql });
    const errorLine = /\b(ERROR|FATAL|PANIC): .*$/m.exec(res.stderr + "\n" + res.stdout);
    if (res.code !== 0 || errorLine !== null) {
      throw new TesseraError(
        SqlState.systemError,
        `could not create the replication role '${user}'`,
        { detail: (errorLine?.[0] ?? res.stderr).replaceAll(verifier, "<verifier>").trim() },
      );
    }
    const hba = `${o.dataDir}/pg_hba.conf`;
    const text = await Deno.readTextFile(hba);
    await Deno.writeTextFile(
      hba,
      `${
        text.endsWith("\n") ? "" : "\n"
      }\n# Added by Tessera pgctld: replicas on any host stream ` +
        `as the replication role,\n# and pg_rewind on a former primary reads this one's files as it.\n` +
        `host    replication     ${user}    0.0.0.0/0    scram-sha-256\n` +
        `host    replication     ${user}    ::/0         scram-sha-256\n` +
        `host    postgres        ${user}    0.0.0.0/0    scram-sha-256\n` +
        `host    postgres        ${user}    ::/0         scram-sha-256\n`,
      { append: true },
    );
  }

  #managedSettings(settings: Record<string, string>): Record<string, string> {
    const o = this.#opts;
    return {
      ...settings,
      port: String(o.port),
      unix_socket_directories: o.socketDir,
      listen_addresses: o.listenAddress,
      password_encryption: "scram-sha-256",
    };
  }

  async #mergeSettings(changes: Record<string, string>): Promise<{
    before: Record<string, string>;
    after: Record<string, string>;
  }> {
    const catalog = await this.#settingsCatalog();
    for (const [name, value] of Object.entries(changes)) {
      validateSettingName(name);
      checkSetting(catalog, name.toLowerCase(), value);
    }
    const before = await readConf(this.#opts.dataDir);
    const after = { ...before };
    for (const [name, value] of Object.entries(changes)) {
      if (value === "") delete after[name.toLowerCase()];
      else after[name.toLowerCase()] = value;
    }
    return { before, after: this.#managedSettings(after) };
  }

  async #assertInitialized(): Promise<void> {
    if (!(await this.isInitialized())) {
      throw new TesseraError(
        SqlState.objectNotInPrerequisiteState,
        `data directory '${this.#opts.dataDir}' is not initialized`,
        { hint: "call InitDataDir first" },
      );
    }
  }

  async #assertPortFree(): Promise<void> {
    const o = this.#opts;
    const lockFile = `${o.socketDir}/.s.PGSQL.${o.port}.lock`;
    try {
      const pid = Number((await Deno.readTextFile(lockFile)).split("\n")[0]);
      if (pid > 0 && (await this.#exists(`/proc/${pid}`))) {
        throw new TesseraError(
          SqlState.objectInUse,
          `port ${o.port} is already in use by another Postgres (pid ${pid}) in '${o.socketDir}'`,
          { hint: "choose another --pg-port or --socket-dir" },
        );
      }
    } catch (err) {
      if (err instanceof TesseraError) throw err;
    }
    for (const raw of o.listenAddress.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
      const hostname = raw === "*" ? "0.0.0.0" : raw;
      try {
        const listener = Deno.listen({ hostname, port: o.port });
        listener.close();
      } catch (err) {
        if (err instanceof Deno.errors.AddrInUse) {
          throw new TesseraError(
            SqlState.objectInUse,
            `port ${o.port} is already in use on ${hostname}`,
            { hint: "choose another --pg-port" },
          );
        }
        throw new TesseraError(
          SqlState.invalidParameterValue,
          `cannot listen on ${hostname}:${o.port}: ${(err as Error).message}`,
        );
      }
    }
  }

  /** Starts Postgres with `settings` merged into the include file. */
  start(settings: Record<string, string> = {}, waitSeconds = 0): Promise<InstanceStatus> {
    return this.#serial(async () => {
      await this.#assertInitialized();
      const pid = await this.#pid();
      if (pid !== 0) {
        throw new TesseraError(
          SqlState.objectNotInPrerequisiteState,
          `postgres is already running (pid ${pid})`,
        );
      }
      const { before, after } = await this.#mergeSettings(settings);
      await this.#assertPortFree();
      await this.#start(before, after, waitSeconds);
      return this.#status();
    });
  }

  async #start(
    before: Record<string, string>,
    after: Record<string, string>,
    waitSeconds: number,
  ): Promise<void> {
    const o = this.#opts;
    makeOwnedDir(o.socketDir, 0o755, o.osUser);
    // The run folder may have been emptied (a tmpfs after a reboot): the walreceiver needs it.
    if (after.primary_conninfo !== undefined) await this.#writePgpass();
    await writeConf(o.dataDir, after, o.osUser);
    const res = await this.#run("pg_ctl", [
      "start",
      "-D",
      o.dataDir,
      "-l",
      o.logFile,
      "-w",
      "-t",
      String(waitSeconds || DEFAULT_WAIT_SECONDS),
      "-s",
    ]);
    if (res.code !== 0) {
      const logTail = await this.#logTail();
      // A start that failed leaves the configuration as it was before the request.
      await writeConf(o.dataDir, this.#managedSettings(before), o.osUser);
      if ((await this.#pid()) !== 0) {
        await this.#run("pg_ctl", ["stop", "-D", o.dataDir, "-m", "immediate", "-w", "-s"]);
      }
      throw new TesseraError(SqlState.systemError, "postgres failed to start", {
        detail: [res.stderr.trim(), logTail].filter((s) => s !== "").join("\n"),
      });
    }
    this.#log.info("postgres started", { pid: await this.#pid() });
  }

  /** Stops Postgres with `mode`. */
  stop(mode: StopMode = "fast", waitSeconds = 0): Promise<InstanceStatus> {
    return this.#serial(async () => {
      await this.#assertInitialized();
      const pid = await this.#pid();
      if (pid === 0) {
        throw new TesseraError(SqlState.objectNotInPrerequisiteState, "postgres is not running");
      }
      await this.#stop(mode, waitSeconds);
      return this.#status();
    });
  }

  async #stop(mode: StopMode, waitSeconds: number): Promise<void> {
    const res = await this.#run("pg_ctl", [
      "stop",
      "-D",
      this.#opts.dataDir,
      "-m",
      mode,
      "-w",
      "-t",
      String(waitSeconds || DEFAULT_WAIT_SECONDS),
      "-s",
    ]);
    if (res.code !== 0) {
      throw new TesseraError(SqlState.systemError, `postgres did not stop (mode ${mode})`, {
        detail: (res.stderr || res.stdout).trim(),
        hint: mode === "smart" ? "clients are still connected: use mode fast" : undefined,
      });
    }
    this.#log.info("postgres stopped", { mode });
  }

  /** Stops Postgres when it runs, then starts it with `settings` merged into the include file. */
  restart(
    mode: StopMode = "fast",
    settings: Record<string, string> = {},
    waitSeconds = 0,
  ): Promise<InstanceStatus> {
    return this.#serial(async () => {
      await this.#assertInitialized();
      const { before, after } = await this.#mergeSettings(settings);
      if ((await this.#pid()) !== 0) await this.#stop(mode, waitSeconds);
      await this.#assertPortFree();
      await this.#start(before, after, waitSeconds);
      return this.#status();
    });
  }

  /**
   * Merges `settings` into the include file (an empty value removes one) and, when Postgres runs,
   * signals it to reload. Returns the changed settings that take effect only after a restart.
   */
  reload(settings: Record<string, string> = {}): Promise<{ pendingRestart: string[] }> {
    return this.#serial(async () => {
      await this.#assertInitialized();
      const { before, after } = await this.#mergeSettings(settings);
      await writeConf(this.#opts.dataDir, after, this.#opts.osUser);
      const catalog = await this.#settingsCatalog();
      const pendingRestart = Object.keys(settings).map((n) => n.toLowerCase()).filter((name) =>
        before[name] !== after[name] && needsRestart(catalog, name)
      ).sort();
      if ((await this.#pid()) !== 0) await this.#signalReload();
      this.#log.info("configuration reloaded", { changed: Object.keys(settings), pendingRestart });
      return { pendingRestart };
    });
  }

  async #signalReload(): Promise<void> {
    const res = await this.#run("pg_ctl", ["reload", "-D", this.#opts.dataDir, "-s"]);
    if (res.code !== 0) {
      throw new TesseraError(SqlState.systemError, "postgres did not reload", {
        detail: (res.stderr || res.stdout).trim(),
      });
    }
  }

  async #writeStandbySignal(): Promise<void> {
    const o = this.#opts;
    const path = `${o.dataDir}/${STANDBY_SIGNAL}`;
    await Deno.writeTextFile(path, "", { mode: 0o600 });
    if (o.osUser !== undefined) await Deno.chown(path, o.osUser.uid, o.osUser.gid);
  }

  /** Writes `primary_conninfo` for `source` into the include file, keeping the other settings. */
  async #writeSource(source: ReplicationSource, base?: Record<string, string>): Promise<void> {
    const o = this.#opts;
    const passfile = await this.#writePgpass();
    const settings = { ...(base ?? await readConf(o.dataDir)) };
    settings.primary_conninfo = primaryConninfo(source, this.#replicationUser, passfile);
    await writeConf(o.dataDir, this.#managedSettings(settings), o.osUser);
  }

  /**
   * Makes this instance a streaming replica of `source` from a base backup (`pg_basebackup`),
   * with standby.signal and `primary_conninfo` in place. Postgres is left stopped.
   */
  initReplica(options: InitReplicaOptions): Promise<InstanceStatus> {
    return this.#serial(() => this.#initReplica(options));
  }

  async #initReplica(options: InitReplicaOptions): Promise<InstanceStatus> {
    const o = this.#opts;
    const { source } = options;
    const replace = options.replaceExisting ?? false;
    const pid = await this.#pid();
    if (pid !== 0) {
      if (!replace) {
        throw new TesseraError(
          SqlState.objectNotInPrerequisiteState,
          `postgres is running (pid ${pid})`,
          { hint: "stop it first, or set replace_existing to stop it and replace its data" },
        );
      }
      await this.#stop("fast", 0);
    }
    if (!replace && (await this.isInitialized())) {
      throw new TesseraError(
        SqlState.duplicateFile,
        `data directory '${o.dataDir}' is already initialized`,
        { hint: "set replace_existing to replace it with a base backup" },
      );
    }
    let entries: string[] = [];
    try {
      entries = [...Deno.readDirSync(o.dataDir)].map((e) => e.name);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    if (entries.length > 0 && !replace) {
      throw new TesseraError(
        SqlState.objectNotInPrerequisiteState,
        `data directory '${o.dataDir}' is not empty`,
        { detail: `it holds ${entries.slice(0, 5).map((e) => `'${e}'`).join(", ")}` },
      );
    }
    if (o.osUser !== undefined) {
      assertTraversable(o.dataDir, o.osUser);
      assertTraversable(o.socketDir, o.osUser);
      assertTraversable(o.logFile, o.osUser);
    }
    makeOwnedDir(o.dataDir, 0o700, o.osUser);
    makeOwnedDir(o.socketDir, 0o755, o.osUser);
    makeOwnedDir(dirname(o.logFile), 0o755, o.osUser);
    if (entries.length > 0) {
      await this.#emptyDataDir();
      this.#log.warn("data directory content removed for a base backup", { removed: entries });
    }

    const passfile = await this.#writePgpass();
    const waitSeconds = options.waitSeconds || DEFAULT_BASEBACKUP_WAIT_SECONDS;
    this.#log.info("base backup starting", { primary: `${source.host}:${source.port}` });
    const res = await this.#run(
      "pg_basebackup",
      basebackupArgs(source, this.#replicationUser, o.dataDir),
      {
        env: {
          PGCONNECT_TIMEOUT: "10",
          ...(passfile !== undefined ? { PGPASSFILE: passfile } : {}),
        },
        timeoutMs: waitSeconds * 1000,
      },
    );
    if (res.code !== 0 || res.timedOut) {
      await this.#emptyDataDir();
      throw basebackupError(source, res);
    }

    // The backup holds the primary's tessera.conf: keep its tuning (a hot standby needs
    // max_connections and friends at least as high as the primary's) but not what pgctld
    // manages per instance, which is rewritten for this one.
    const inherited = await readConf(o.dataDir);
    for (const name of RESERVED_SETTINGS) delete inherited[name];
    await ensureIncludeLine(o.dataDir);
    await this.#writeSource(source, inherited);
    // postgresql.auto.conf is read after tessera.conf: nothing in it may override a managed setting.
    const removed = await removeSettingLines(
      `${o.dataDir}/postgresql.auto.conf`,
      RESERVED_SETTINGS,
    );
    await this.#writeStandbySignal();
    this.#log.info("replica initialized", {
      primary: `${source.host}:${source.port}`,
      applicationName: source.applicationName,
      ...(removed.length > 0 ? { removedFromAutoConf: removed } : {}),
    });
    return this.#status();
  }

  /**
   * Points this replica at `source`: writes `primary_conninfo`, ensures standby.signal and, when
   * Postgres runs, reloads it. A running primary is refused: repointing it needs a rewind.
   */
  setReplicationSource(source: ReplicationSource): Promise<InstanceStatus> {
    return this.#serial(async () => {
      await this.#assertInitialized();
      const pid = await this.#pid();
      if (pid !== 0 && !(await this.#isInRecovery())) {
        throw new TesseraError(
          SqlState.objectNotInPrerequisiteState,
          "postgres is running as a primary (not in recovery): it cannot be repointed",
          { hint: "a former primary must be rewound or re-created with InitReplica" },
        );
      }
      await this.#writeSource(source);
      await this.#writeStandbySignal();
      if (pid !== 0) await this.#signalReload();
      this.#log.info("replication source set", {
        primary: `${source.host}:${source.port}`,
        applicationName: source.applicationName,
      });
      return this.#status();
    });
  }

  /** Promotes the running replica (`pg_ctl promote -w`) and drops its `primary_conninfo`. */
  promote(waitSeconds = 0): Promise<InstanceStatus> {
    return this.#serial(async () => {
      await this.#assertInitialized();
      if ((await this.#pid()) === 0) {
        throw new TesseraError(SqlState.objectNotInPrerequisiteState, "postgres is not running");
      }
      if (!(await this.#isInRecovery())) {
        throw new TesseraError(
          SqlState.objectNotInPrerequisiteState,
          "postgres is not in recovery: it is already a primary",
        );
      }
      const o = this.#opts;
      const res = await this.#run("pg_ctl", [
        "promote",
        "-D",
        o.dataDir,
        "-w",
        "-t",
        String(waitSeconds || DEFAULT_WAIT_SECONDS),
        "-s",
      ]);
      if (res.code !== 0) {
        throw new TesseraError(SqlState.systemError, "postgres did not promote", {
          detail: [(res.stderr || res.stdout).trim(), await this.#logTail()].filter((s) => s !== "")
            .join("\n"),
        });
      }
      const settings = await readConf(o.dataDir);
      delete settings.primary_conninfo;
      await writeConf(o.dataDir, this.#managedSettings(settings), o.osUser);
      await this.#signalReload();
      this.#log.info("postgres promoted");
      return this.#status();
    });
  }

  /**
   * Makes this stopped instance, typically a former primary, a streaming replica of `source`
   * with `pg_rewind`: the blocks it wrote after the timelines forked are replaced by the source's,
   * then standby.signal and `primary_conninfo` are put in place as by InitReplica. The instance's
   * own configuration files stay its own. Postgres is left stopped.
   */
  rewind(options: RewindOptions): Promise<InstanceStatus> {
    return this.#serial(() => this.#rewind(options));
  }

  async #rewind(options: RewindOptions): Promise<InstanceStatus> {
    const o = this.#opts;
    const { source } = options;
    await this.#assertInitialized();
    const pid = await this.#pid();
    if (pid !== 0) {
      throw new TesseraError(
        SqlState.objectNotInPrerequisiteState,
        `postgres is running (pid ${pid}): pg_rewind needs it stopped`,
        { hint: "call Stop first" },
      );
    }
    const waitMs = (options.waitSeconds || DEFAULT_BASEBACKUP_WAIT_SECONDS) * 1000;
    const passfile = await this.#writePgpass();
    const conninfo = rewindSourceConninfo(source, this.#replicationUser, passfile);
    const env = { PGCONNECT_TIMEOUT: "10", ...(passfile ? { PGPASSFILE: passfile } : {}) };

    // A just-promoted source shows its new timeline in its control file only after a
    // checkpoint; without one pg_rewind would wrongly find "no rewind required".
    const checkpoint = await this.#run(
      "psql",
      ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", "CHECKPOINT"],
      { env, timeoutMs: waitMs },
    );
    if (checkpoint.code !== 0 || checkpoint.timedOut) {
      throw checkpointError(source, this.#replicationUser, checkpoint);
    }

    // pg_rewind copies the source's configuration files; these are the instance's own.
    const saved = new Map<string, string>();
    for (const name of INSTANCE_CONFIG_FILES) {
      const text = await Deno.readTextFile(`${o.dataDir}/${name}`).catch(() => undefined);
      if (text !== undefined) saved.set(name, text);
    }
    const settings = await readConf(o.dataDir);
    // The single-user crash recovery pg_rewind runs on an unclean target refuses standby mode.
    const signals: string[] = [];
    for (const name of [STANDBY_SIGNAL, RECOVERY_SIGNAL]) {
      if (await this.#exists(`${o.dataDir}/${name}`)) {
        await Deno.remove(`${o.dataDir}/${name}`);
        signals.push(name);
      }
    }

    try {
      await this.#ensureCleanShutdown();
    } catch (err) {
      for (const name of signals) await this.#writeOwnedFile(name, "");
      throw err;
    }

    this.#log.info("pg_rewind starting", { primary: `${source.host}:${source.port}` });
    const res = await this.#run("pg_rewind", rewindArgs(o.dataDir, conninfo), {
      env,
      timeoutMs: waitMs,
    });
    for (const [name, text] of saved) await this.#writeOwnedFile(name, text);
    if (res.code !== 0 || res.timedOut) {
      const error = rewindError(source, res);
      if (!rewindChangedTarget(res.stderr)) {
        for (const name of signals) await this.#writeOwnedFile(name, "");
      }
      this.#log.warn("pg_rewind failed", { code: error.code, message: error.message });
      throw error;
    }

    await ensureIncludeLine(o.dataDir);
    await this.#writeSource(source, settings);
    const removed = await removeSettingLines(
      `${o.dataDir}/postgresql.auto.conf`,
      RESERVED_SETTINGS,
    );
    await this.#writeStandbySignal();
    this.#log.info("instance rewound to a replica", {
      primary: `${source.host}:${source.port}`,
      applicationName: source.applicationName,
      rewound: !rewindNotNeeded(res.stderr),
      ...(removed.length > 0 ? { removedFromAutoConf: removed } : {}),
    });
    return this.#status();
  }

  /**
   * Brings a cluster that was not shut down cleanly (a crash, an immediate stop) to a clean
   * shutdown through crash recovery in a single-user backend, as pg_rewind needs. pg_rewind would
   * do this itself, but its end-of-recovery checkpoint may remove the very WAL it must read back
   * to the last checkpoint before the timelines forked; here every WAL segment is kept.
   */
  async #ensureCleanShutdown(): Promise<void> {
    const o = this.#opts;
    const state = (await this.#controlData())["Database cluster state"];
    if (state === "shut down" || state === "shut down in recovery") return;
    this.#log.info("crash recovery before pg_rewind", { state });
    const res = await this.#run("postgres", [
      "--single",
      "-F",
      "-D",
      o.dataDir,
      "-c",
      `wal_keep_size=${MAX_WAL_KEEP_SIZE_MB}`,
      "-c",
      "log_min_messages=warning",
      "template1",
    ], { stdin: "" });
    const after = (await this.#controlData())["Database cluster state"];
    if (res.code !== 0 || (after !== "shut down" && after !== "shut down in recovery")) {
      throw new TesseraError(
        SqlState.systemError,
        "crash recovery before pg_rewind did not shut the cluster down cleanly",
        {
          detail: (res.stderr + res.stdout).trim().split("\n").slice(-15).join("\n"),
          hint: "rebuild the instance with InitReplica and replace_existing",
        },
      );
    }
  }

  /** Writes `text` to `name` in the data directory, mode 0600 and owned by the OS user. */
  async #writeOwnedFile(name: string, text: string): Promise<void> {
    const o = this.#opts;
    const path = `${o.dataDir}/${name}`;
    await Deno.writeTextFile(path, text, { mode: 0o600 });
    if (o.osUser !== undefined) await Deno.chown(path, o.osUser.uid, o.osUser.gid);
  }
}
