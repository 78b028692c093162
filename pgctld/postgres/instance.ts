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
import { ensureIncludeLine, readConf, validateSettingName, writeConf } from "./conf.ts";
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
}

const DEFAULT_WAIT_SECONDS = 60;
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

  async #run(binary: string, args: string[]): Promise<RunResult> {
    const user = this.#opts.osUser;
    const env: Record<string, string> = {
      PATH: `${this.#opts.bindir}:/usr/bin:/bin`,
      LC_ALL: "C",
      LANG: "C",
      HOME: user?.home ?? Deno.env.get("HOME") ?? "/",
    };
    const command = new Deno.Command(`${this.#opts.bindir}/${binary}`, {
      args,
      cwd: "/",
      clearEnv: true,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      ...(user !== undefined ? { uid: user.uid, gid: user.gid } : {}),
    });
    const out = await command.output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
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

  async #controlState(): Promise<string> {
    const res = await this.#run("pg_controldata", ["-D", this.#opts.dataDir]);
    const match = /^Database cluster state:\s*(.+)$/m.exec(res.stdout);
    return match ? match[1]!.trim() : "unknown";
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
    let inRecovery = false;
    if (pid !== 0) {
      inRecovery = (await this.#controlState()) === "in archive recovery";
    } else if (initialized) {
      inRecovery = (await this.#exists(`${o.dataDir}/standby.signal`)) ||
        (await this.#exists(`${o.dataDir}/recovery.signal`));
    }
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
      for (const entry of Deno.readDirSync(o.dataDir)) {
        Deno.removeSync(`${o.dataDir}/${entry.name}`, { recursive: true });
      }
      throw new TesseraError(SqlState.systemError, "initdb failed", {
        detail: (res.stderr || res.stdout).trim(),
      });
    }
    await ensureIncludeLine(o.dataDir);
    await writeConf(o.dataDir, this.#managedSettings({}), o.osUser);
    this.#log.info("data directory initialized", { auth, superuser });
    return { dataDir: o.dataDir, serverVersion: await this.version() };
  }

  #managedSettings(settings: Record<string, string>): Record<string, string> {
    const o = this.#opts;
    return {
      ...settings,
      port: String(o.port),
      unix_socket_directories: o.socketDir,
      listen_addresses: o.listenAddress,
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
      if ((await this.#pid()) !== 0) {
        const res = await this.#run("pg_ctl", ["reload", "-D", this.#opts.dataDir, "-s"]);
        if (res.code !== 0) {
          throw new TesseraError(SqlState.systemError, "postgres did not reload", {
            detail: (res.stderr || res.stdout).trim(),
          });
        }
      }
      this.#log.info("configuration reloaded", { changed: Object.keys(settings), pendingRestart });
      return { pendingRestart };
    });
  }
}
