import { assertEquals } from "../../shared/testing/assert.ts";
import {
  formatStandbyNames,
  type InstanceView,
  NO_REPLICA_NAME,
  parseStandbyNames,
  planShard,
  primaryLooksUp,
  type ShardInput,
} from "./plan.ts";

function instance(alias: string, over: Partial<InstanceView> = {}): InstanceView {
  return {
    alias,
    cell: "zone1",
    reachable: true,
    managed: true,
    pgctldKnown: true,
    initialized: false,
    running: false,
    standby: false,
    source: "",
    postgresAddress: "",
    role: "unknown",
    lsn: "",
    walReceiver: "",
    standbys: [],
    synchronousStandbyNames: "",
    notStreamingMs: 0,
    receiveLsn: "",
    rewindFailed: false,
    databases: [],
    error: "",
    ...over,
  };
}

const primaryUp = (alias: string, over: Partial<InstanceView> = {}) =>
  instance(alias, {
    initialized: true,
    running: true,
    role: "primary",
    postgresAddress: `127.0.0.1:1${alias.at(-1)}`,
    ...over,
  });

const replicaUp = (alias: string, source: string, over: Partial<InstanceView> = {}) =>
  instance(alias, {
    initialized: true,
    running: true,
    standby: true,
    role: "replica",
    source,
    walReceiver: "streaming",
    ...over,
  });

function input(over: Partial<ShardInput> & { instances: InstanceView[] }): ShardInput {
  return {
    record: { keyspace: "app", range: "0", term: 0 },
    policy: "at_least_1",
    rebuildAfterMs: 30_000,
    ...over,
  };
}

const withPrimary = (alias: string, term = 1) => ({
  record: { keyspace: "app", range: "0", primaryAlias: alias, term },
});

interface Case {
  name: string;
  input: ShardInput;
  actions: string[];
  health: string;
}

const kinds = (p: ReturnType<typeof planShard>) =>
  p.actions.map((a) =>
    a.kind === "initReplica"
      ? `${a.kind} ${a.alias} ${a.primaryAddress}${a.replaceExisting ? " replace" : ""}`
      : a.kind === "repoint" || a.kind === "rewind"
      ? `${a.kind} ${a.alias} ${a.primaryAddress}`
      : a.kind === "setDurability"
      ? `${a.kind} ${a.alias} ${a.names}`
      : `${a.kind} ${a.alias}`
  );

const CASES: Case[] = [
  {
    name: "no pooler yet: wait",
    input: input({ instances: [] }),
    actions: [],
    health: "bootstrapping",
  },
  {
    name: "unmanaged poolers only: wait",
    input: input({ instances: [instance("a", { managed: false })] }),
    actions: [],
    health: "bootstrapping",
  },
  {
    name: "all empty: the first alias becomes primary, then is recorded",
    input: input({ instances: [instance("b"), instance("a"), instance("c")] }),
    actions: ["initPrimary a", "recordPrimary a"],
    health: "bootstrapping",
  },
  {
    name: "unreachable poolers are never chosen",
    input: input({ instances: [instance("a", { reachable: false }), instance("b")] }),
    actions: ["initPrimary b", "recordPrimary b"],
    health: "bootstrapping",
  },
  {
    name: "one non-standby instance with data and no record: adopt it",
    input: input({ instances: [primaryUp("a"), instance("b")] }),
    actions: ["recordPrimary a"],
    health: "bootstrapping",
  },
  {
    name: "one stopped instance with data and no record: start and adopt",
    input: input({ instances: [instance("a", { initialized: true }), instance("b")] }),
    actions: ["startPostgres a", "recordPrimary a"],
    health: "bootstrapping",
  },
  {
    name: "several instances with data and no record: stalled, nothing done",
    input: input({ instances: [primaryUp("a"), primaryUp("b")] }),
    actions: [],
    health: "stalled",
  },
  {
    name: "a standby with data and no record: stalled",
    input: input({ instances: [replicaUp("a", "x:1")] }),
    actions: [],
    health: "stalled",
  },
  {
    name: "recorded primary stopped: start it",
    input: input({ ...withPrimary("a"), instances: [instance("a", { initialized: true })] }),
    actions: ["startPostgres a"],
    health: "degraded",
  },
  {
    name: "recorded primary without data: stalled",
    input: input({ ...withPrimary("a"), instances: [instance("a")] }),
    actions: [],
    health: "stalled",
  },
  {
    name: "primary up, empty instances: base backups, then durability with both names",
    input: input({
      ...withPrimary("a"),
      instances: [primaryUp("a"), instance("b"), instance("c")],
    }),
    actions: [
      'setDurability a ANY 1 ("b", "c")',
      "initReplica b 127.0.0.1:1a",
      "initReplica c 127.0.0.1:1a",
    ],
    health: "blocked",
  },
  {
    name: "replicas wait while the primary is down",
    input: input({
      ...withPrimary("a"),
      instances: [instance("a", { reachable: false }), instance("b")],
    }),
    actions: [],
    health: "degraded",
  },
  {
    name: "stopped replica is started",
    input: input({
      ...withPrimary("a"),
      policy: "none",
      instances: [primaryUp("a"), instance("b", { initialized: true, standby: true })],
    }),
    actions: ["startPostgres b"],
    health: "degraded",
  },
  {
    name: "replica streaming from elsewhere is repointed",
    input: input({
      ...withPrimary("a"),
      policy: "none",
      instances: [primaryUp("a"), replicaUp("b", "127.0.0.1:9")],
    }),
    actions: ["repoint b 127.0.0.1:1a"],
    health: "degraded",
  },
  {
    name: "replica not streaming for a short while: reported only",
    input: input({
      ...withPrimary("a"),
      policy: "none",
      instances: [
        primaryUp("a"),
        replicaUp("b", "127.0.0.1:1a", { walReceiver: "", notStreamingMs: 5000 }),
      ],
    }),
    actions: [],
    health: "degraded",
  },
  {
    name: "replica not streaming past the limit: rebuilt",
    input: input({
      ...withPrimary("a"),
      policy: "none",
      instances: [
        primaryUp("a"),
        replicaUp("b", "127.0.0.1:1a", { walReceiver: "", notStreamingMs: 31_000 }),
      ],
    }),
    actions: ["initReplica b 127.0.0.1:1a replace"],
    health: "degraded",
  },
  {
    name: "a former primary is rewound onto the primary, never started as a primary",
    input: input({
      ...withPrimary("a"),
      policy: "none",
      instances: [primaryUp("a"), instance("b", { initialized: true })],
    }),
    actions: ["rewind b 127.0.0.1:1a"],
    health: "degraded",
  },
  {
    name: "a former primary still running as a primary is rewound too (rewind stops it)",
    input: input({
      ...withPrimary("a", 2),
      policy: "none",
      instances: [primaryUp("a"), primaryUp("b")],
    }),
    actions: ["rewind b 127.0.0.1:1a"],
    health: "degraded",
  },
  {
    name: "a former primary whose rewind failed is rebuilt",
    input: input({
      ...withPrimary("a"),
      policy: "none",
      instances: [primaryUp("a"), instance("b", { initialized: true, rewindFailed: true })],
    }),
    actions: ["initReplica b 127.0.0.1:1a replace"],
    health: "degraded",
  },
  {
    name: "a former primary waits while the primary is down",
    input: input({
      ...withPrimary("a"),
      policy: "none",
      instances: [instance("a", { reachable: false }), instance("b", { initialized: true })],
    }),
    actions: [],
    health: "degraded",
  },
  {
    name: "primary down briefly: no failover yet (one lost heartbeat is not a failure)",
    input: input({
      ...withPrimary("a"),
      primaryDownMs: 600,
      failoverAfterMs: 1500,
      instances: [
        instance("a", { reachable: false }),
        replicaUp("b", "127.0.0.1:1a", { walReceiver: "" }),
        replicaUp("c", "127.0.0.1:1a", { walReceiver: "" }),
      ],
    }),
    actions: [],
    health: "degraded",
  },
  {
    name: "primary down past the limit: the replica with the highest received LSN is promoted",
    input: input({
      ...withPrimary("a"),
      primaryDownMs: 2000,
      failoverAfterMs: 1500,
      instances: [
        instance("a", { reachable: false }),
        replicaUp("b", "127.0.0.1:1a", { walReceiver: "", receiveLsn: "0/3000100" }),
        replicaUp("c", "127.0.0.1:1a", { walReceiver: "", receiveLsn: "0/30000F0" }),
      ],
    }),
    actions: ["failover b"],
    health: "degraded",
  },
  {
    name: "LSNs compare as numbers, not as text",
    input: input({
      ...withPrimary("a"),
      primaryDownMs: 2000,
      failoverAfterMs: 1500,
      instances: [
        instance("a", { reachable: false }),
        replicaUp("b", "127.0.0.1:1a", { walReceiver: "", receiveLsn: "0/9000000" }),
        replicaUp("c", "127.0.0.1:1a", { walReceiver: "", receiveLsn: "1/10000" }),
      ],
    }),
    actions: ["failover c"],
    health: "degraded",
  },
  {
    name: "a reachable primary whose Postgres died is fenced before the failover",
    input: input({
      ...withPrimary("a"),
      primaryDownMs: 2000,
      failoverAfterMs: 1500,
      instances: [
        instance("a", { initialized: true, running: true, role: "unknown" }),
        replicaUp("b", "127.0.0.1:1a", { walReceiver: "", receiveLsn: "0/3000100" }),
        replicaUp("c", "127.0.0.1:1a", { walReceiver: "", receiveLsn: "0/3000100" }),
      ],
    }),
    actions: ["stopPostgres a", "failover b"],
    health: "degraded",
  },
  {
    name: "at_least_1 with 2 replicas and only 1 answering: no failover (could lose a commit)",
    input: input({
      ...withPrimary("a"),
      primaryDownMs: 5000,
      failoverAfterMs: 1500,
      instances: [
        instance("a", { reachable: false }),
        replicaUp("b", "127.0.0.1:1a", { walReceiver: "" }),
        instance("c", { reachable: false }),
      ],
    }),
    actions: [],
    health: "stalled",
  },
  {
    name: "cluster restart: primary stopped and no replica running: start the primary",
    input: input({
      ...withPrimary("a"),
      primaryDownMs: 5000,
      failoverAfterMs: 1500,
      instances: [
        instance("a", { initialized: true }),
        instance("b", { initialized: true, standby: true }),
      ],
    }),
    actions: ["startPostgres a", "startPostgres b"],
    health: "degraded",
  },
  {
    name: "a failover interrupted before promotion is finished: promote the recorded primary",
    input: input({
      ...withPrimary("b", 2),
      policy: "none",
      instances: [replicaUp("b", "127.0.0.1:1a", { walReceiver: "" })],
    }),
    actions: ["promote b"],
    health: "degraded",
  },
  {
    name: "healthy shard with policy met: nothing to do",
    input: input({
      ...withPrimary("a"),
      instances: [
        primaryUp("a", {
          synchronousStandbyNames: 'ANY 1 ("b")',
          standbys: [{ name: "b", state: "streaming", syncState: "quorum" }],
        }),
        replicaUp("b", "127.0.0.1:1a"),
      ],
    }),
    actions: [],
    health: "ok",
  },
  {
    name: "a replica gone from topo stays in the list: the policy is never met by shrinking",
    input: input({
      ...withPrimary("a"),
      instances: [primaryUp("a", { synchronousStandbyNames: 'ANY 1 ("b", "c")' })],
    }),
    actions: [],
    health: "blocked",
  },
  {
    name: "primary alone under at_least_1: placeholder keeps commits waiting",
    input: input({ ...withPrimary("a"), instances: [primaryUp("a")] }),
    actions: [`setDurability a ANY 1 ("${NO_REPLICA_NAME}")`],
    health: "blocked",
  },
  {
    name: "policy none clears the setting",
    input: input({
      ...withPrimary("a"),
      policy: "none",
      instances: [primaryUp("a", { synchronousStandbyNames: 'ANY 1 ("b")' })],
    }),
    actions: ["setDurability a "],
    health: "degraded",
  },
  {
    name: "at_least_2 needs two acknowledging standbys",
    input: input({
      ...withPrimary("a"),
      policy: "at_least_2",
      instances: [
        primaryUp("a", {
          synchronousStandbyNames: 'ANY 2 ("b", "c")',
          standbys: [
            { name: "b", state: "streaming", syncState: "quorum" },
            { name: "c", state: "catchup", syncState: "quorum" },
          ],
        }),
        replicaUp("b", "127.0.0.1:1a"),
        replicaUp("c", "127.0.0.1:1a"),
      ],
    }),
    actions: [],
    health: "blocked",
  },
];

for (const c of CASES) {
  Deno.test(`planShard: ${c.name}`, () => {
    const plan = planShard(c.input);
    assertEquals(kinds(plan), c.actions);
    assertEquals(plan.health, c.health, plan.reasons.join("; "));
  });
}

Deno.test("standby names: format and parse round trip, quotes kept", () => {
  assertEquals(formatStandbyNames(0, ["a"]), "");
  assertEquals(formatStandbyNames(1, ["a-1", 'we"ird']), 'ANY 1 ("a-1", "we""ird")');
  assertEquals(parseStandbyNames('ANY 1 ("a-1", "we""ird")'), ["a-1", 'we"ird']);
  assertEquals(parseStandbyNames("FIRST 2 (s1, s2, s3)"), ["s1", "s2", "s3"]);
  assertEquals(parseStandbyNames("s1, s2"), ["s1", "s2"]);
  assertEquals(parseStandbyNames(""), []);
});

Deno.test("primaryLooksUp: a partition between orch and a healthy primary is not a failure", () => {
  // orch cannot reach the primary's pooler, but a replica still streams from it.
  assertEquals(
    primaryLooksUp("a", [
      instance("a", { reachable: false }),
      replicaUp("b", "127.0.0.1:1a", { walReceiver: "streaming" }),
    ]),
    true,
  );
  // Its pooler says Postgres runs as a primary.
  assertEquals(primaryLooksUp("a", [primaryUp("a")]), true);
  // Nothing says it is up: only then may the direct probe and time decide.
  assertEquals(
    primaryLooksUp("a", [
      instance("a", { reachable: false }),
      replicaUp("b", "127.0.0.1:1a", { walReceiver: "" }),
    ]),
    false,
  );
  assertEquals(
    primaryLooksUp("a", [instance("a", { initialized: true, running: false })]),
    false,
  );
});
