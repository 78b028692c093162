/**
 * Starts and stops a real local etcd process: for tests, and for the local cluster launcher.
 *
 * etcd listens on 127.0.0.1 only. Its output goes to `etcd.log` in the launcher's directory, never
 * to this process's stdout.
 *
 * @module
 */

import { SqlState, TesseraError } from "../errors/mod.ts";
import { Logger } from "../log/mod.ts";
import { findEtcd } from "../pgbin/mod.ts";

/** Options of {@linkcode startEtcd}. */
export interface EtcdOptions {
  /**
   * Directory the launcher owns: etcd keeps its data in `<dataDir>/data` and its output goes to
   * `<dataDir>/etcd.log`. Created when missing; reused (with its data) on restart.
   */
  dataDir: string;
  /** Client port on 127.0.0.1, e.g. 12379. */
  clientPort: number;
  /** Peer port on 127.0.0.1, e.g. 12380. */
  peerPort: number;
  /** Member name; `tessera-etcd` when not given. */
  name?: string;
  /** Logger for start and stop lines; a `proc` logger on standard error when not given. */
  logger?: Logger;
  /** The etcd binary; found with `findEtcd()` (ETCD_BIN, PATH, /usr/bin) when not given. */
  etcdBin?: string;
  /** How long to wait for etcd to answer `/health` after starting; 20000 ms when not given. */
  startTimeoutMs?: number;
  /** How long `stop()` waits after SIGTERM before sending SIGKILL; 10000 ms when not given. */
  stopTimeoutMs?: number;
  /** Extra command-line flags passed to etcd as is. */
  extraArgs?: readonly string[];
}

const DEFAULT_START_TIMEOUT_MS = 20_000;
const DEFAULT_STOP_TIMEOUT_MS = 10_000;
const TAIL_BYTES = 4096;

function checkPort(what: string, port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`'${what}' must be an integer from 1 to 65535: received ${port}`);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Fails with a clear error when something already listens on `port`, before etcd is started. */
function assertPortFree(port: number, what: string): void {
  let listener: Deno.Listener | undefined;
  try {
    listener = Deno.listen({ hostname: "127.0.0.1", port });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      throw new TesseraError(
        SqlState.objectInUse,
        `etcd ${what} port ${port} on 127.0.0.1 is already in use`,
        { hint: "stop whatever listens there, or choose another port", cause: err },
      );
    }
    throw err;
  } finally {
    listener?.close();
  }
}

async function readTail(path: string): Promise<string> {
  try {
    const file = await Deno.open(path, { read: true });
    try {
      const size = (await file.stat()).size;
      const start = Math.max(0, size - TAIL_BYTES);
      await file.seek(start, Deno.SeekMode.Start);
      const buf = new Uint8Array(size - start);
      let read = 0;
      while (read < buf.length) {
        const n = await file.read(buf.subarray(read));
        if (n === null) break;
        read += n;
      }
      return new TextDecoder().decode(buf.subarray(0, read)).trim();
    } finally {
      file.close();
    }
  } catch {
    return "";
  }
}

async function copyTo(stream: ReadableStream<Uint8Array>, file: Deno.FsFile): Promise<void> {
  for await (const chunk of stream) {
    let written = 0;
    while (written < chunk.length) written += await file.write(chunk.subarray(written));
  }
}

/** Answers whether etcd at `endpoint` reports itself healthy (it has a leader and no alarm). */
async function isHealthy(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
    const body = await res.text();
    if (!res.ok) return false;
    const parsed = JSON.parse(body) as { health?: unknown };
    return parsed.health === "true" || parsed.health === true;
  } catch {
    return false;
  }
}

interface Running {
  child: Deno.ChildProcess;
  pump: Promise<void>;
  status: Promise<Deno.CommandStatus>;
  exited: boolean;
}

/**
 * A local etcd process started by {@linkcode startEtcd}. It can be stopped, killed and started
 * again on the same data directory and ports.
 */
export class EtcdProcess {
  /** Client endpoint, e.g. `http://127.0.0.1:12379`. */
  readonly endpoint: string;
  /** Directory owned by the launcher (see {@linkcode EtcdOptions.dataDir}). */
  readonly dataDir: string;
  /** File that receives etcd's stdout and stderr. */
  readonly logFile: string;
  #options: EtcdOptions;
  #bin: string;
  #log: Logger;
  #running: Running | undefined;

  /** Use {@linkcode startEtcd}; the constructor does not start anything. */
  constructor(options: EtcdOptions) {
    checkPort("clientPort", options.clientPort);
    checkPort("peerPort", options.peerPort);
    if (options.clientPort === options.peerPort) {
      throw new RangeError(
        `'clientPort' and 'peerPort' must differ: received ${options.clientPort} for both`,
      );
    }
    this.#options = options;
    this.#bin = options.etcdBin ?? findEtcd();
    this.endpoint = `http://127.0.0.1:${options.clientPort}`;
    this.dataDir = options.dataDir;
    this.logFile = `${options.dataDir}/etcd.log`;
    this.#log = (options.logger ?? new Logger({ component: "proc" })).child({
      etcd: options.name ?? "tessera-etcd",
      endpoint: this.endpoint,
    });
  }

  /** Process id of the running etcd; throws when it is not running (never started, or stopped). */
  get pid(): number {
    if (this.#running === undefined) {
      throw new TesseraError(SqlState.objectNotInPrerequisiteState, "etcd is not running", {
        detail: `endpoint ${this.endpoint}`,
      });
    }
    return this.#running.child.pid;
  }

  /** Whether this etcd process was started and has not exited. */
  get running(): boolean {
    return this.#running !== undefined && !this.#running.exited;
  }

  #args(): string[] {
    const name = this.#options.name ?? "tessera-etcd";
    const client = `http://127.0.0.1:${this.#options.clientPort}`;
    const peer = `http://127.0.0.1:${this.#options.peerPort}`;
    return [
      `--name=${name}`,
      `--data-dir=${this.dataDir}/data`,
      `--listen-client-urls=${client}`,
      `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=${name}=${peer}`,
      `--initial-cluster-state=new`,
      `--initial-cluster-token=tessera-${name}-${this.#options.clientPort}`,
      "--logger=zap",
      "--log-outputs=stderr",
      ...(this.#options.extraArgs ?? []),
    ];
  }

  /** Starts etcd and waits until it answers `/health`. Called by {@linkcode startEtcd}. */
  async start(): Promise<void> {
    if (this.running) {
      throw new TesseraError(SqlState.objectNotInPrerequisiteState, "etcd is already running", {
        detail: `pid ${this.#running?.child.pid} at ${this.endpoint}`,
      });
    }
    assertPortFree(this.#options.clientPort, "client");
    assertPortFree(this.#options.peerPort, "peer");
    await Deno.mkdir(this.dataDir, { recursive: true });

    // etcd reads ETCD_* variables as flags; keep the caller's environment from changing it.
    const env = Object.fromEntries(
      Object.entries(Deno.env.toObject()).filter(([k]) => !k.startsWith("ETCD_")),
    );
    const file = await Deno.open(this.logFile, { write: true, create: true, append: true });
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(this.#bin, {
        args: this.#args(),
        clearEnv: true,
        env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      file.close();
      throw new TesseraError(SqlState.systemError, `could not start etcd '${this.#bin}'`, {
        cause: err,
      });
    }
    const pump = Promise.all([copyTo(child.stdout, file), copyTo(child.stderr, file)])
      .then(() => undefined, () => undefined)
      .finally(() => file.close());
    const running: Running = { child, pump, status: child.status, exited: false };
    running.status.then(() => running.exited = true);
    this.#running = running;
    this.#log.info("etcd starting", { pid: child.pid, dataDir: this.dataDir });

    const timeoutMs = this.#options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    while (true) {
      if (running.exited) {
        const status = await running.status;
        await pump;
        this.#running = undefined;
        throw await this.#startFailure(`etcd exited during start with code ${status.code}`);
      }
      if (await isHealthy(this.endpoint)) break;
      if (Date.now() > deadline) {
        await this.#terminate("SIGKILL");
        throw await this.#startFailure(`etcd did not become healthy within ${timeoutMs} ms`);
      }
      await sleep(100);
    }
    this.#log.info("etcd ready", { pid: child.pid });
  }

  async #startFailure(message: string): Promise<TesseraError> {
    const tail = await readTail(this.logFile);
    this.#log.error(message, { logFile: this.logFile });
    return new TesseraError(SqlState.connectionFailure, message, {
      detail: tail === "" ? `no output in ${this.logFile}` : `last output of etcd:\n${tail}`,
      hint: `see ${this.logFile}`,
    });
  }

  async #terminate(signal: Deno.Signal): Promise<Deno.CommandStatus | undefined> {
    const running = this.#running;
    if (running === undefined) return undefined;
    if (!running.exited) {
      try {
        running.child.kill(signal);
      } catch {
        // exited between the check and the signal
      }
    }
    let status: Deno.CommandStatus;
    if (signal === "SIGKILL") {
      status = await running.status;
    } else {
      const timeoutMs = this.#options.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), timeoutMs);
      });
      const first = await Promise.race([running.status, timedOut]);
      clearTimeout(timer);
      if (first === "timeout") {
        this.#log.warn("etcd did not stop after SIGTERM; sending SIGKILL", { timeoutMs });
        try {
          running.child.kill("SIGKILL");
        } catch {
          // exited meanwhile
        }
        status = await running.status;
      } else {
        status = first;
      }
    }
    await running.pump;
    if (this.#running === running) this.#running = undefined;
    return status;
  }

  /** Stops etcd with SIGTERM and waits for it to exit (SIGKILL after `stopTimeoutMs`). */
  async stop(): Promise<void> {
    const status = await this.#terminate("SIGTERM");
    if (status !== undefined) this.#log.info("etcd stopped", { code: status.code });
  }

  /** Kills etcd with SIGKILL and waits for it to exit. */
  async kill(): Promise<void> {
    const status = await this.#terminate("SIGKILL");
    if (status !== undefined) this.#log.info("etcd killed", { signal: status.signal });
  }

  /** Starts etcd again on the same data directory and ports, stopping it first if running. */
  async restart(): Promise<void> {
    if (this.running) await this.stop();
    await this.start();
  }

  /** Stops etcd; lets `await using` clean up. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * Starts etcd on 127.0.0.1 with its data and log under `options.dataDir`, and resolves once it
 * answers `/health`. On failure it throws a TesseraError (`08006`) holding the tail of etcd's
 * output.
 *
 * @example
 * ```ts
 * const etcd = await startEtcd({ dataDir: "/tmp/etcd1", clientPort: 12379, peerPort: 12380 });
 * try {
 *   // use etcd.endpoint
 * } finally {
 *   await etcd.stop();
 * }
 * ```
 */
export async function startEtcd(options: EtcdOptions): Promise<EtcdProcess> {
  const etcd = new EtcdProcess(options);
  await etcd.start();
  return etcd;
}
