/**
 * Stopping a local cluster in order: gateways, orchs, poolers, then Postgres through each
 * pgctld's `Stop` RPC (mode fast), then pgctld, then etcd. Postgres outlives pgctld by design, so
 * it is stopped through pgctld; when pgctld cannot be reached, `pg_ctl stop -m fast` runs as the
 * Postgres OS user instead. Works from pids, so the supervisor and `down` (when the supervisor is
 * gone) share it.
 *
 * @module
 */

import { findPgBindir } from "../../shared/pgbin/mod.ts";
import type { Logger } from "../../shared/log/mod.ts";
import { pidAlive, type ProcessInfo, type ProcessKind, signalPid, waitPidGone } from "./state.ts";

/** How long a process gets after SIGTERM before SIGKILL. */
export const STOP_GRACE_MS = 15_000;

/** The order processes stop in; Postgres stops between poolers and pgctld. */
export const STOP_ORDER: readonly ProcessKind[] = ["gateway", "orch", "pooler", "pgctld", "etcd"];

/** Stops `processes` of one kind: SIGTERM to all, then SIGKILL to those left after the grace. */
export async function stopGroup(
  processes: readonly ProcessInfo[],
  log: Logger,
  graceMs = STOP_GRACE_MS,
): Promise<void> {
  await Promise.all(processes.map(async (p) => {
    if (p.pid === null || !pidAlive(p.pid, p.marker)) return;
    signalPid(p.pid, "SIGTERM");
    if (await waitPidGone(p.pid, graceMs, p.marker)) return;
    log.warn("process did not stop after SIGTERM; killing it", { process: p.name, pid: p.pid });
    signalPid(p.pid, "SIGKILL");
    await waitPidGone(p.pid, 5_000, p.marker);
  }));
}

/** The pid in `<dataDir>/postmaster.pid` when that Postgres is running. */
export function postmasterPid(dataDir: string): number | undefined {
  try {
    const first = Deno.readTextFileSync(`${dataDir}/postmaster.pid`).split("\n")[0] ?? "";
    const pid = Number(first.trim());
    return Number.isInteger(pid) && pidAlive(pid, "postgres") ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Asks pgctld at `port` to stop its Postgres (mode fast); throws when pgctld cannot be reached. */
export async function stopThroughPgctld(port: number): Promise<{ ok: boolean; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}/tessera.pgctld.v1.PgctldService/Stop`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ mode: "STOP_MODE_FAST", waitSeconds: 60 }),
    signal: AbortSignal.timeout(70_000),
  });
  return { ok: res.ok, text: await res.text() };
}

function lookupUser(name: string): { uid: number; gid: number } | undefined {
  try {
    for (const line of Deno.readTextFileSync("/etc/passwd").split("\n")) {
      const parts = line.split(":");
      if (parts[0] === name && parts.length >= 7) {
        return { uid: Number(parts[2]), gid: Number(parts[3]) };
      }
    }
  } catch {
    // no passwd file: run as ourselves
  }
  return undefined;
}

/**
 * Runs `pg_ctl stop -m fast -D dataDir`, as OS user `osUser` when this process is root (Postgres
 * refuses root, and pg_ctl must run as the data directory's owner).
 */
export async function pgCtlStop(dataDir: string, osUser = "postgres"): Promise<string> {
  const user = Deno.uid() === 0 ? lookupUser(osUser) : undefined;
  const out = await new Deno.Command(`${findPgBindir()}/pg_ctl`, {
    args: ["stop", "-m", "fast", "-w", "-t", "60", "-D", dataDir],
    stdout: "piped",
    stderr: "piped",
    cwd: "/",
    ...(user !== undefined ? { uid: user.uid, gid: user.gid } : {}),
  }).output();
  const dec = new TextDecoder();
  return `${dec.decode(out.stdout)}${dec.decode(out.stderr)}`.trim();
}

/** Stops the Postgres of each pgctld in `pgctlds`, through pgctld or with the fallback. */
export async function stopPostgres(pgctlds: readonly ProcessInfo[], log: Logger): Promise<void> {
  await Promise.all(pgctlds.map(async (p) => {
    if (p.dataDir === undefined) return;
    const pid = postmasterPid(p.dataDir);
    if (pid === undefined) return;
    const port = p.ports.http;
    if (port !== undefined && p.pid !== null && pidAlive(p.pid, p.marker)) {
      try {
        const res = await stopThroughPgctld(port);
        log.info("postgres stop through pgctld", { process: p.name, ok: res.ok });
        if (await waitPidGone(pid, 10_000)) return;
      } catch (err) {
        log.warn("pgctld did not answer Stop; using pg_ctl", { process: p.name, error: err });
      }
    }
    if (postmasterPid(p.dataDir) === undefined) return;
    try {
      const out = await pgCtlStop(p.dataDir);
      log.info("postgres stopped with pg_ctl", { process: p.name, output: out });
    } catch (err) {
      log.error("could not stop postgres", { process: p.name, dataDir: p.dataDir, error: err });
    }
  }));
}

/** Stops every process in `processes` in the cluster's order (see the module notes). */
export async function stopAll(processes: readonly ProcessInfo[], log: Logger): Promise<void> {
  const of = (kind: ProcessKind) => processes.filter((p) => p.kind === kind);
  for (const kind of STOP_ORDER) {
    if (kind === "pgctld") await stopPostgres(of("pgctld"), log);
    const group = of(kind);
    if (group.length > 0) log.info("stopping", { kind, processes: group.map((p) => p.name) });
    await stopGroup(group, log);
  }
}
