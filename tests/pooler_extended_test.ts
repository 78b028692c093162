/**
 * End to end: the extended query protocol through the pooler answers exactly as Postgres does.
 * The same pipelines (named statements created, reused, duplicated, closed, errors in the
 * middle of a pipeline, failed transactions, COPY-free but Flush-using) are sent to Postgres
 * directly and through the pooler while other clients churn its two backends, and the two
 * transcripts must be equal message for message.
 */
import pg from "pg";
import { type PoolerServer, startPooler } from "../pooler/mod.ts";
import {
  Backend,
  decodeCommandComplete,
  decodeDataRowText,
  decodeErrorFields,
  MessageReader,
  MessageWriter,
  writeAll,
} from "../shared/wire/mod.ts";
import { assertEquals } from "../shared/testing/assert.ts";
import { startTestPostgres } from "./support/postgres.ts";
import { fastIo } from "./support/fast_io.ts";

const PG_PORT = 12740;
const POOLER_PORT = 12741;

type Step = (w: MessageWriter) => void;

/** The pipelines: each is written at once, then read up to its ReadyForQuery count. */
const SCRIPT: { name: string; send: Step; readies: number }[] = [
  {
    name: "parse, bind, execute a named statement",
    send: (w) => w.parse("a", "select $1::int * 2 as v").bind("", "a", ["21"]).execute().sync(),
    readies: 1,
  },
  {
    name: "a failed parse skips the rest of the pipeline",
    send: (w) => w.parse("b", "selec 1").bind("", "a", ["1"]).execute().sync(),
    readies: 1,
  },
  {
    name: "the failed statement does not exist, the good one does",
    send: (w) => w.bind("", "b", []).execute().sync().bind("", "a", ["5"]).execute().sync(),
    readies: 2,
  },
  {
    name: "a second statement of the same name is refused",
    send: (w) => w.parse("a", "select 1").sync(),
    readies: 1,
  },
  {
    name: "describe a portal, execute, close the statement in one pipeline",
    send: (w) => w.bind("", "a", ["7"]).describe("P").execute().close("S", "a").sync(),
    readies: 1,
  },
  {
    name: "a closed statement is gone, closing it again is fine",
    send: (w) => w.bind("", "a", ["1"]).execute().sync().close("S", "a").sync(),
    readies: 2,
  },
  {
    name: "describe a statement",
    send: (w) => w.parse("c", "select $1::text as t, 2 as n", [25]).describe("S", "c").sync(),
    readies: 1,
  },
  {
    name: "an error at execute skips a close and a parse queued behind it",
    send: (w) =>
      w.parse("d", "select 1/$1::int as x").bind("", "d", ["0"]).execute().close("S", "c")
        .parse("e", "select 3").sync(),
    readies: 1,
  },
  {
    name: "so the closed statement still exists and the parsed one does not",
    send: (w) =>
      w.bind("", "c", ["still here"]).execute().sync().bind("", "e", []).execute().sync(),
    readies: 2,
  },
  {
    name: "the same text under two names; closing one keeps the other",
    send: (w) =>
      w.parse("f", "select $1::int * 2 as v").parse("g", "select $1::int * 2 as v").close("S", "f")
        .bind("", "g", ["4"]).execute().sync(),
    readies: 1,
  },
  {
    name: "a parse in a failed transaction is refused",
    send: (w) =>
      w.query("begin").query("select 1/0").parse("h", "select 1").sync().query("rollback"),
    readies: 4,
  },
  {
    name: "after the failed transaction the statement does not exist",
    send: (w) => w.bind("", "h", []).execute().sync(),
    readies: 1,
  },
  {
    name: "flush delivers the responses before sync",
    send: (w) => w.parse("i", "select 42 as answer").bind("", "i", []).execute().flush(),
    readies: 0,
  },
  {
    name: "then sync ends the implicit transaction",
    send: (w) => w.sync(),
    readies: 1,
  },
  {
    name: "a named statement inside a transaction block, reused after it",
    send: (w) =>
      w.query("begin").parse("j", "select $1::int + 1 as v").bind("", "j", ["1"]).execute().sync()
        .query("commit").bind("", "j", ["2"]).execute().sync(),
    readies: 4,
  },
  {
    name: "unnamed statements pass through",
    send: (w) => w.parse("", "select $1::int as u").bind("", "", ["9"]).execute().sync(),
    readies: 1,
  },
];

/** Runs the script on a fresh connection; returns one line per message received. */
async function transcript(connect: () => Promise<Deno.Conn>): Promise<string[]> {
  const conn = await connect();
  const reader = new MessageReader(conn);
  const lines: string[] = [];
  const readReady = async (count: number, flushExpected = 0) => {
    let seen = 0;
    let got = 0;
    while (seen < count || got < flushExpected) {
      const m = await reader.next();
      if (m === null) throw new Error("connection closed");
      got++;
      switch (m.type) {
        case Backend.errorResponse: {
          const e = decodeErrorFields(m.payload);
          lines.push(`E ${e.code} ${e.code === "42P05" || e.code === "26000" ? e.message : ""}`);
          break;
        }
        case Backend.commandComplete:
          lines.push(`C ${decodeCommandComplete(m.payload)}`);
          break;
        case Backend.dataRow:
          lines.push(`D ${JSON.stringify(decodeDataRowText(m.payload))}`);
          break;
        case Backend.readyForQuery:
          seen++;
          lines.push(`Z ${String.fromCharCode(m.payload[0]!)}`);
          break;
        case Backend.parameterStatus:
        case Backend.noticeResponse:
          break;
        default:
          lines.push(m.typeChar);
      }
    }
  };
  try {
    await writeAll(
      conn,
      new MessageWriter().startupMessage({ user: "postgres", database: "postgres" }).view(),
    );
    await readReady(1);
    lines.length = 0;
    for (const step of SCRIPT) {
      lines.push(`-- ${step.name}`);
      const w = new MessageWriter();
      step.send(w);
      await writeAll(conn, w.view());
      // A pipeline ending in Flush has no ReadyForQuery: read its four responses.
      await readReady(step.readies, step.readies === 0 ? 4 : 0);
    }
    await writeAll(conn, new MessageWriter().terminate().view());
  } finally {
    conn.close();
  }
  return lines;
}

Deno.test({
  name: "pooler: the extended protocol answers as Postgres does, across backends",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const db = await startTestPostgres({ port: PG_PORT });
    let pooler: PoolerServer | undefined;
    let stop = false;
    const churn: Promise<void>[] = [];
    try {
      pooler = await startPooler({
        ...fastIo(),
        listen: [`127.0.0.1:${POOLER_PORT}`],
        postgres: { socketDir: db.socketDir, port: PG_PORT },
        poolSize: 2,
        preparedStatementCacheSize: 3,
      });
      const expected = await transcript(() =>
        Deno.connect({ transport: "unix", path: `${db.socketDir}/.s.PGSQL.${PG_PORT}` })
      );
      for (let i = 0; i < 4; i++) {
        churn.push((async () => {
          const c = new pg.Client({
            host: "127.0.0.1",
            port: POOLER_PORT,
            user: "postgres",
            database: "postgres",
          });
          await c.connect();
          for (let k = 0; !stop; k++) {
            await c.query({
              name: `churn${k % 5}`,
              text: `select ${k % 5} + $1::int as v`,
              values: [k],
            });
          }
          await c.end();
        })());
      }
      for (let round = 0; round < 5; round++) {
        const got = await transcript(() =>
          Deno.connect({ hostname: "127.0.0.1", port: POOLER_PORT })
        );
        assertEquals(got, expected, `round ${round}`);
      }
      const stats = pooler.stats();
      assertEquals(stats.preparedStatements.evictions > 0, true, JSON.stringify(stats));
    } finally {
      stop = true;
      await Promise.allSettled(churn);
      await pooler?.shutdown();
      await db.cleanup();
    }
  },
});
