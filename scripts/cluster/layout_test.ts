import { assertEquals, assertStringIncludes, assertThrows } from "../../shared/testing/assert.ts";
import { allPorts, instanceAlias, LayoutError, planLayout } from "./layout.ts";

const app = [{ name: "app", shards: ["0"] }];

Deno.test("the default layout uses the documented ports", () => {
  const l = planLayout({ replicas: 2, cells: ["zone1"], basePort: 15000, keyspaces: app });
  assertEquals([l.etcdClientPort, l.etcdPeerPort], [12379, 12380]);
  assertEquals(l.cells, [{
    index: 0,
    name: "zone1",
    orchPort: 15000,
    gatewayPort: 15432,
    gatewayHttpPort: 15100,
  }]);
  assertEquals(l.instances.map((i) => i.alias), ["app-0-0", "app-0-1", "app-0-2"]);
  assertEquals(l.instances[2], {
    index: 2,
    alias: "app-0-2",
    cell: "zone1",
    keyspace: "app",
    shard: "0",
    member: 2,
    poolerPort: 16002,
    poolerHttpPort: 16102,
    pgctldPort: 17102,
    pgPort: 25434,
  });
});

Deno.test("every port moves with the base port", () => {
  const l = planLayout({ replicas: 1, cells: ["zone1", "zone2"], basePort: 19000, keyspaces: app });
  assertEquals([l.etcdClientPort, l.etcdPeerPort], [16379, 16380]);
  assertEquals(l.cells.map((c) => [c.orchPort, c.gatewayPort, c.gatewayHttpPort]), [
    [19000, 19432, 19100],
    [19001, 19433, 19101],
  ]);
  assertEquals(l.instances.map((i) => [i.cell, i.poolerPort, i.pgctldPort, i.pgPort]), [
    ["zone1", 20000, 21100, 29432],
    ["zone2", 20001, 21101, 29433],
  ]);
});

Deno.test("a shard's members go round robin over the cells", () => {
  const l = planLayout({
    replicas: 3,
    cells: ["a", "b"],
    basePort: 15000,
    keyspaces: [{ name: "app", shards: ["0"] }, { name: "logs", shards: ["0"] }],
  });
  assertEquals(l.instances.map((i) => `${i.alias}@${i.cell}#${i.index}`), [
    "app-0-0@a#0",
    "app-0-1@b#1",
    "app-0-2@a#2",
    "app-0-3@b#3",
    "logs-0-0@a#4",
    "logs-0-1@b#5",
    "logs-0-2@a#6",
    "logs-0-3@b#7",
  ]);
  const ports = allPorts(l).map((p) => p.port);
  assertEquals(new Set(ports).size, ports.length);
});

Deno.test("base ports that leave 1024..32767 are refused with the usable range", () => {
  const high = assertThrows(
    () => planLayout({ replicas: 2, cells: ["zone1"], basePort: 23000, keyspaces: app }),
    LayoutError,
  );
  assertStringIncludes(high.message, "'--base-port' 23000");
  assertStringIncludes(high.message, "32767");
  // 25432 + d + 2 must stay below 32768: d <= 7333, base port <= 22333.
  assertStringIncludes(high.message, "from 3645 to 22333");
  planLayout({ replicas: 2, cells: ["zone1"], basePort: 22333, keyspaces: app });
  assertThrows(
    () => planLayout({ replicas: 2, cells: ["zone1"], basePort: 22334, keyspaces: app }),
    LayoutError,
  );
  const low = assertThrows(
    () => planLayout({ replicas: 2, cells: ["zone1"], basePort: 3644, keyspaces: app }),
    LayoutError,
  );
  assertStringIncludes(low.message, "1024");
  planLayout({ replicas: 2, cells: ["zone1"], basePort: 3645, keyspaces: app });
});

Deno.test("counts out of range are refused", () => {
  const e = assertThrows(
    () => planLayout({ replicas: -1, cells: ["zone1"], basePort: 15000, keyspaces: app }),
    LayoutError,
  );
  assertStringIncludes(e.message, "'--replicas' must be an integer from 0 to 99: received -1");
  assertThrows(
    () => planLayout({ replicas: 1, cells: [], basePort: 15000, keyspaces: app }),
    LayoutError,
    "'--cells'",
  );
  const many = Array.from({ length: 51 }, (_, i) => ({ name: `ks${i}`, shards: ["0"] }));
  assertThrows(
    () => planLayout({ replicas: 1, cells: ["zone1"], basePort: 5000, keyspaces: many }),
    LayoutError,
    "102 instances",
  );
});

Deno.test("instance aliases are valid topo names", () => {
  assertEquals(instanceAlias("app", "0", 0), "app-0-0");
  assertEquals(instanceAlias("app", "-80", 1), "app--80-1");
});
