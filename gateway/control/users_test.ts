import { Logger } from "../../shared/log/mod.ts";
import { startEtcd } from "../../shared/proc/mod.ts";
import { assertEquals, assertRejects } from "../../shared/testing/assert.ts";
import { TopoClient } from "../../shared/topo/mod.ts";
import { createScramVerifier } from "../../shared/wire/mod.ts";
import { gatewayAuth } from "./users.ts";

const quiet = () => new Logger({ component: "test", level: "error" });

Deno.test("gatewayAuth: trust, SCRAM verifiers from topo, last verifier kept while etcd is down", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tessera-gw-users-" });
  const etcd = await startEtcd({
    dataDir: dir,
    clientPort: 13103,
    peerPort: 13104,
    logger: quiet(),
  });
  let topo: TopoClient | undefined;
  try {
    topo = await TopoClient.connect({
      endpoints: etcd.endpoint,
      root: "/gwusers",
      logger: quiet(),
    });
    const verifier = await createScramVerifier("secret");
    await topo.global.users.put(["alice"], { name: "alice", scramVerifier: verifier });

    assertEquals(await gatewayAuth("trust", topo).lookup("anyone", "app", "tcp"), {
      method: "trust",
    });
    const auth = gatewayAuth("scram-sha-256", topo, quiet());
    assertEquals(await auth.lookup("alice", "app", "tcp"), { method: "scram-sha-256", verifier });
    assertEquals(await auth.lookup("bob", "app", "tcp"), undefined);

    await etcd.kill(); // SIGKILL: a graceful stop intermittently segfaults Deno's HTTP/2 client
    try {
      assertEquals(await auth.lookup("alice", "app", "tcp"), {
        method: "scram-sha-256",
        verifier,
      });
      await assertRejects(() => Promise.resolve(auth.lookup("carol", "app", "tcp")));
    } finally {
      await etcd.restart();
    }
  } finally {
    await topo?.close();
    await etcd.kill().catch(() => undefined);
    await Deno.remove(dir, { recursive: true });
  }
});
