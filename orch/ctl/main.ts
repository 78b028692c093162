/**
 * `deno task ctl`: the operator's command line for orch.
 *
 *     deno task ctl status [--orch URL] [--json]
 *     deno task ctl switchover KEYSPACE/SHARD [--to ALIAS] [--drain-seconds N] [--orch URL]
 *     deno task ctl vschema show KEYSPACE [--orch URL]
 *     deno task ctl vschema apply KEYSPACE --file FILE [--orch URL]
 *
 * `--orch` defaults to `ORCH_URL` or `http://127.0.0.1:15000` (the local cluster's orch).
 *
 * @module
 */

import { isAbsolute, resolve } from "node:path";
import { parseArgs } from "node:util";
import { OrchService } from "../../proto/gen/tessera/orch/v1/orch_pb.ts";
import { TesseraError } from "../../shared/errors/mod.ts";
import { createRpcClient } from "../../shared/rpc/mod.ts";

const USAGE = `usage:
  deno task ctl status [--orch URL] [--json]
  deno task ctl switchover KEYSPACE/SHARD [--to ALIAS] [--drain-seconds N] [--orch URL]
  deno task ctl vschema show KEYSPACE [--orch URL]
  deno task ctl vschema apply KEYSPACE --file FILE (or -f FILE) [--orch URL]

--orch defaults to $ORCH_URL or http://127.0.0.1:15000`;

/** Runs the command line `args`; resolves with the exit code. */
export async function ctlMain(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        orch: { type: "string" },
        to: { type: "string" },
        "drain-seconds": { type: "string" },
        file: { type: "string", short: "f" },
        json: { type: "boolean" },
        help: { type: "boolean" },
      },
    });
  } catch (err) {
    console.error(`ctl: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help || positionals.length === 0) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  const url = values.orch ?? Deno.env.get("ORCH_URL") ?? "http://127.0.0.1:15000";
  const orch = createRpcClient(OrchService, url, { timeoutMs: 180_000 });
  try {
    switch (positionals[0]) {
      case "status": {
        const res = await orch.status({});
        if (values.json) {
          console.log(JSON.stringify(res, (_k, v) => typeof v === "bigint" ? Number(v) : v, 2));
          return 0;
        }
        for (const s of res.shards) {
          console.log(
            `${s.keyspace}/${s.shard}  primary ${s.primaryAlias || "-"}  term ${s.term}  ` +
              `${s.health}${s.reason ? `: ${s.reason}` : ""}`,
          );
          for (const i of s.instances) {
            console.log(
              `  ${i.alias.padEnd(20)} ${i.role.padEnd(8)} ${i.running ? "running" : "stopped"} ` +
                `${i.lsn} ${i.replication}`,
            );
          }
        }
        return 0;
      }
      case "switchover": {
        const target = positionals[1] ?? "";
        const slash = target.indexOf("/");
        if (slash <= 0 || slash === target.length - 1) {
          console.error(`ctl: switchover needs KEYSPACE/SHARD, e.g. app/0\n${USAGE}`);
          return 2;
        }
        const drain = values["drain-seconds"] !== undefined ? Number(values["drain-seconds"]) : 5;
        if (!Number.isInteger(drain) || drain < 0) {
          console.error("ctl: --drain-seconds must be a non-negative integer");
          return 2;
        }
        const res = await orch.switchover({
          keyspace: target.slice(0, slash),
          shard: target.slice(slash + 1),
          to: values.to ?? "",
          drainSeconds: drain,
        });
        console.log(
          `switched ${target} from ${res.from} to ${res.to} (term ${res.term}); ` +
            `writes held ${res.pausedMs} ms`,
        );
        return 0;
      }
      case "vschema":
        return await vschemaCommand(url, positionals.slice(1), values.file);
      default:
        console.error(`ctl: unknown command '${positionals[0]}'\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    const e = TesseraError.from(err);
    console.error(
      `ctl: ${e.message} (SQLSTATE ${e.code})${e.detail ? `\n  detail: ${e.detail}` : ""}${
        e.hint ? `\n  hint: ${e.hint}` : ""
      }`,
    );
    return 1;
  }
}

/** Where relative paths given by the user start: the shell's folder, not deno.json's. */
function userPath(path: string): string {
  if (isAbsolute(path)) return path;
  return resolve(Deno.env.get("INIT_CWD") ?? Deno.cwd(), path);
}

async function readBody(res: Response): Promise<unknown> {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    return { error: text.trim() || `HTTP ${res.status}` };
  }
}

function errorOf(body: unknown, status: number): string {
  const e = (body as { error?: unknown } | null)?.error;
  if (typeof e === "string") return e;
  if (
    e !== null && typeof e === "object" && typeof (e as { message?: unknown }).message === "string"
  ) {
    return (e as { message: string }).message;
  }
  return `orch answered HTTP ${status}`;
}

/** `vschema show KS` and `vschema apply KS --file F`, over orch's admin API. */
async function vschemaCommand(
  orchUrl: string,
  args: string[],
  file: string | undefined,
): Promise<number> {
  const [sub, keyspace, ...rest] = args;
  if ((sub !== "show" && sub !== "apply") || keyspace === undefined || rest.length > 0) {
    console.error(`ctl: vschema needs 'show KEYSPACE' or 'apply KEYSPACE --file FILE'\n${USAGE}`);
    return 2;
  }
  const url = `${orchUrl.replace(/\/+$/, "")}/api/v1/keyspaces/${
    encodeURIComponent(keyspace)
  }/vschema`;
  if (sub === "show") {
    if (file !== undefined) {
      console.error("ctl: vschema show takes no --file");
      return 2;
    }
    const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
    const body = await readBody(res);
    if (!res.ok) {
      console.error(`ctl: ${errorOf(body, res.status)}`);
      return 1;
    }
    console.log(JSON.stringify(body, null, 2));
    return 0;
  }
  if (file === undefined) {
    console.error(`ctl: vschema apply needs --file FILE\n${USAGE}`);
    return 2;
  }
  const path = userPath(file);
  let vschema: unknown;
  try {
    vschema = JSON.parse(await Deno.readTextFile(path));
  } catch (err) {
    console.error(
      `ctl: cannot read the vschema in '${path}': ${err instanceof Error ? err.message : err}`,
    );
    return 1;
  }
  const res = await fetch(url, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(vschema),
    signal: AbortSignal.timeout(30_000),
  });
  const body = await readBody(res);
  if (!res.ok) {
    console.error(`ctl: ${errorOf(body, res.status)}`);
    const issues = (body as { issues?: unknown } | null)?.issues;
    if (Array.isArray(issues)) {
      for (const i of issues as { path?: unknown; reason?: unknown }[]) {
        console.error(`  ${String(i.path)}: ${String(i.reason)}`);
      }
    }
    return 1;
  }
  const tables = Object.keys((body as { tables?: object }).tables ?? {}).length;
  console.log(`applied the vschema of keyspace '${keyspace}' from ${path} (${tables} table(s))`);
  return 0;
}

if (import.meta.main) Deno.exit(await ctlMain(Deno.args));
