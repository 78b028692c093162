/**
 * `deno task cluster`: a whole local Tessera cluster in one command.
 *
 * ```sh
 * deno task cluster [up] [--dir DIR] [--replicas N] [--cells N] [--base-port B]
 *                   [--config FILE | --shards N --vschema FILE]
 * deno task cluster status [--dir DIR] [--json]
 * deno task cluster down [--dir DIR] [--clean]
 * ```
 *
 * See docs/cluster.md.
 *
 * @module
 */

import { isAbsolute, resolve } from "node:path";
import { parseArgs } from "node:util";
import { down, status, up } from "./cli.ts";
import { ClusterConfigError } from "./config.ts";
import { LayoutError } from "./layout.ts";
import { REPO_ROOT } from "./commands.ts";
import { runSupervisor } from "./supervisor.ts";

const USAGE = `usage: deno task cluster [command] [flags]

commands:
  up (default)   start a local cluster and wait until the gateway answers
  status         show every process of the cluster
  down           stop the cluster (its data stays in DIR unless --clean)

flags:
  --dir DIR        cluster folder (default ./.tessera)
  --replicas N     replicas per shard besides the primary (default 2)
  --cells N        cells zone1..zoneN (default 1)
  --base-port B    move every port by B-15000 (default 15000)
  --config FILE    cluster file: databases, keyspaces, users (see docs/cluster.md)
  --shards N       shard the default keyspace app over N even key ranges (needs --vschema)
  --vschema FILE   vschema (JSON) of the default keyspace app
  --no-wait        up: return once every process is started, before the gateway answers
  --json           status: one JSON object
  --clean          down: remove DIR afterwards
  --help           this text`;

function intFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value)) {
    throw new LayoutError(`'--${name}' must be an integer: received '${value}'`);
  }
  return Number(value);
}

/** Where relative paths given by the user start: the shell's directory, not deno.json's. */
function userPath(path: string): string {
  if (isAbsolute(path)) return path;
  return resolve(Deno.env.get("INIT_CWD") ?? Deno.cwd(), path);
}

async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        dir: { type: "string" },
        replicas: { type: "string" },
        cells: { type: "string" },
        "base-port": { type: "string" },
        config: { type: "string" },
        shards: { type: "string" },
        vschema: { type: "string" },
        json: { type: "boolean" },
        clean: { type: "boolean" },
        "no-wait": { type: "boolean" },
        help: { type: "boolean" },
      },
    });
  } catch (err) {
    console.error(`cluster: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length > 1) {
    console.error(`cluster: one command at a time: received ${positionals.join(" ")}\n\n${USAGE}`);
    return 2;
  }
  const command = positionals[0] ?? "up";
  const dir = values.dir !== undefined ? userPath(values.dir) : `${REPO_ROOT}/.tessera`;
  try {
    const input = {
      replicas: intFlag("replicas", values.replicas),
      cells: intFlag("cells", values.cells),
      basePort: intFlag("base-port", values["base-port"]),
      config: values.config !== undefined ? userPath(values.config) : undefined,
      shards: intFlag("shards", values.shards),
      vschema: values.vschema !== undefined ? userPath(values.vschema) : undefined,
    };
    switch (command) {
      case "up":
        return await up({ dir, ...input, noWait: values["no-wait"] ?? false });
      case "status":
        return await status({ dir, json: values.json ?? false });
      case "down":
        return await down({ dir, clean: values.clean ?? false });
      case "supervise":
        return await runSupervisor(dir, input);
      default:
        console.error(`cluster: unknown command '${command}'\n\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof LayoutError || err instanceof ClusterConfigError) {
      console.error(`cluster: ${err.message}`);
      return 2;
    }
    throw err;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
