/**
 * The cheapest possible extra hop written in Deno with the gateway's permissions (network only,
 * no FFI): a byte relay from each client connection to one upstream address. It parses nothing,
 * pools nothing and routes nothing; each direction is a `read` into one reused 16 KiB buffer and
 * a `write` of what was read. bench/gateway puts it in front of PgBouncer to measure the floor
 * that any gateway written this way pays for its hop (see bench/gateway/README.md).
 *
 * `deno task bench-relay --listen HOST:PORT --upstream HOST:PORT`
 *
 * @module
 */

import { parseArgs } from "node:util";

function hostPort(name: string, raw: string | undefined): { hostname: string; port: number } {
  const at = raw?.lastIndexOf(":") ?? -1;
  const port = Number(raw?.slice(at + 1));
  if (raw === undefined || at <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new RangeError(`'--${name}' must be HOST:PORT: received '${raw ?? ""}'`);
  }
  return { hostname: raw.slice(0, at), port };
}

async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      let off = 0;
      while (off < n) off += await to.write(buf.subarray(off, n));
    }
  } catch {
    // either side went away: close both below
  } finally {
    try {
      to.close();
    } catch {
      // already closed
    }
    try {
      from.close();
    } catch {
      // already closed
    }
  }
}

async function relay(client: Deno.TcpConn, upstream: { hostname: string; port: number }) {
  let server: Deno.TcpConn;
  try {
    server = await Deno.connect(upstream);
  } catch (err) {
    console.error(`relay: connecting to upstream failed: ${(err as Error).message}`);
    client.close();
    return;
  }
  client.setNoDelay(true);
  server.setNoDelay(true);
  await Promise.all([pump(client, server), pump(server, client)]);
}

if (import.meta.main) {
  try {
    const { values } = parseArgs({
      args: Deno.args,
      options: { listen: { type: "string" }, upstream: { type: "string" } },
    });
    const listen = hostPort("listen", values.listen);
    const upstream = hostPort("upstream", values.upstream);
    const listener = Deno.listen({ ...listen, transport: "tcp" });
    console.log(`relay listening on ${values.listen}, upstream ${values.upstream}`);
    for await (const conn of listener) relay(conn, upstream);
  } catch (err) {
    console.error(`relay: ${(err as Error).message}`);
    Deno.exit(2);
  }
}
