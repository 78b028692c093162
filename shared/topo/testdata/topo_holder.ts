/**
 * Test fixture run as a separate process: connects to topo and either registers a pooler record
 * under a lease or takes a shard lock, prints `ready <lease id or holder>` on stdout, then waits to
 * be killed.
 *
 * Usage: deno run -A topo_holder.ts <endpoint> register <alias> <ttlSeconds>
 *        deno run -A topo_holder.ts <endpoint> lock <keyspace> <range> <ttlSeconds>
 *
 * @module
 */

import { Logger } from "../../log/mod.ts";
import { TopoClient } from "../mod.ts";

const [endpoint, mode, ...rest] = Deno.args;
if (endpoint === undefined || (mode !== "register" && mode !== "lock")) {
  throw new Error(
    `usage: topo_holder.ts <endpoint> register|lock ...: received '${Deno.args.join(" ")}'`,
  );
}
const logger = new Logger({ component: "topo-holder", level: "warn" });
const topo = await TopoClient.connect({ endpoints: endpoint, logger });
const encoder = new TextEncoder();

if (mode === "register") {
  const [alias = "", ttl = "2"] = rest;
  const zone1 = await topo.cell("zone1");
  const record = await zone1.poolers.registerUnderLease({
    alias,
    cell: "zone1",
    keyspace: "app",
    shard: "-80",
    type: "replica",
    tags: [],
    pgAddress: "127.0.0.1:25432",
    rpcAddress: "127.0.0.1:16100",
  }, { ttlSeconds: Number(ttl) });
  await Deno.stdout.write(encoder.encode(`ready ${record.leaseId}\n`));
} else {
  const [keyspace = "", range = "", ttl = "2"] = rest;
  const lock = await topo.lockShard(keyspace, range, {
    holder: `pid ${Deno.pid}`,
    ttlSeconds: Number(ttl),
    timeoutMs: 10_000,
  });
  await Deno.stdout.write(encoder.encode(`ready ${lock.holder}\n`));
}
// Keep running (with the lease kept alive) until killed.
setInterval(() => {}, 60_000);
